"""Kubernetes resource quantities, parsed exactly: known values and properties."""

from __future__ import annotations

import fractions

import pytest
from hypothesis import given
from hypothesis import strategies as st

from archwarden import policy

F = fractions.Fraction


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("0", F(0)),
        ("1", F(1)),
        ("250m", F(1, 4)),
        ("0.5", F(1, 2)),
        (".5", F(1, 2)),
        ("5.", F(5)),
        ("+1.5", F(3, 2)),
        ("-2", F(-2)),
        ("100n", F(1, 10**7)),
        ("3u", F(3, 10**6)),
        ("1k", F(1000)),
        ("128M", F(128 * 10**6)),
        ("2G", F(2 * 10**9)),
        ("1T", F(10**12)),
        ("1P", F(10**15)),
        ("1E", F(10**18)),
        ("64Ki", F(64 * 2**10)),
        ("256Mi", F(256 * 2**20)),
        ("1.5Gi", F(3 * 2**29)),
        ("1Ti", F(2**40)),
        ("1Pi", F(2**50)),
        ("8Ei", F(8 * 2**60)),
        ("1e3", F(1000)),
        ("1E3", F(1000)),
        ("12e-1", F(6, 5)),
        ("1.25e+2", F(125)),
        ("0.1", F(1, 10)),
        ("123456789012345678901234567890", F(123456789012345678901234567890)),
    ],
)
def test_known_values(text: str, value: fractions.Fraction) -> None:
    assert policy.quantity(text) == value


@pytest.mark.parametrize(
    "text",
    [
        "",
        " 1",
        "1 ",
        ".",
        "+",
        "1.2.3",
        "1KiB",
        "1K",
        "1ki",
        "12Xi",
        "1e",
        "1e1.5",
        "1e1234",
        "1mi",
        "0x10",
        "1_000",
        "\u0661",  # an Arabic-Indic digit: int() takes it, Kubernetes does not
        "9" * 65,
    ],
)
def test_not_quantities(text: str) -> None:
    assert policy.quantity(text) is None


SUFFIXES = {
    "": F(1),
    "n": F(1, 10**9),
    "u": F(1, 10**6),
    "m": F(1, 1000),
    "k": F(10**3),
    "M": F(10**6),
    "G": F(10**9),
    "T": F(10**12),
    "P": F(10**15),
    "E": F(10**18),
    "Ki": F(2**10),
    "Mi": F(2**20),
    "Gi": F(2**30),
    "Ti": F(2**40),
    "Pi": F(2**50),
    "Ei": F(2**60),
}


@given(
    whole=st.integers(min_value=0, max_value=10**12),
    fraction=st.text("0123456789", max_size=9),
    suffix=st.sampled_from(sorted(SUFFIXES)),
    negative=st.booleans(),
)
def test_decimal_and_binary_suffixes_are_exact(
    whole: int, fraction: str, suffix: str, negative: bool
) -> None:
    number = f"{whole}.{fraction}" if fraction else str(whole)
    expected = (whole + (F(int(fraction), 10 ** len(fraction)) if fraction else 0)) * SUFFIXES[
        suffix
    ]
    text = f"{'-' if negative else ''}{number}{suffix}"
    assert policy.quantity(text) == (-expected if negative else expected)


@given(
    mantissa=st.integers(min_value=0, max_value=10**9),
    exponent=st.integers(min_value=-999, max_value=999),
    letter=st.sampled_from("eE"),
)
def test_exponents_are_exact(mantissa: int, exponent: int, letter: str) -> None:
    assert policy.quantity(f"{mantissa}{letter}{exponent}") == mantissa * F(10) ** exponent


@given(st.text(max_size=80))
def test_any_text_is_a_value_or_none(text: str) -> None:
    value = policy.quantity(text)
    assert value is None or isinstance(value, fractions.Fraction)
    if len(text) > policy._quantities.MAX_QUANTITY_CHARS:
        assert value is None


@given(millis=st.integers(min_value=0, max_value=10**9))
def test_millicores_round_trip_and_round_up(millis: int) -> None:
    value = policy.quantity(f"{millis}m")
    assert value is not None and policy.milli(value) == millis
    # Less than a thousandth more is the next millicore, as Quantity.MilliValue rounds.
    assert policy.milli(F(millis, 1000) + F(1, 10**9)) == millis + 1
    assert policy.whole(F(millis) + F(1, 2)) == millis + 1
