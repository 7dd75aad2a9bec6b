"""Which index claims a config contradicts (pure: ``_verification.agree``)."""

from __future__ import annotations

import pytest

from archwarden import platforms
from archwarden.registry import _verification


@pytest.mark.parametrize(
    ("declared", "declared_variant", "actual", "actual_variant", "agrees"),
    [
        ("linux/arm64", False, "linux/arm64", False, True),
        ("linux/arm64", False, "linux/amd64", False, False),
        ("windows/amd64", False, "linux/amd64", False, False),
        ("linux/arm/v6", True, "linux/arm/v7", True, False),
        ("linux/arm/v6", True, "linux/arm", False, True),  # the config names no variant
        ("linux/arm", False, "linux/arm/v6", True, True),  # the index names none
        ("linux/arm64/v8", True, "linux/arm64", False, True),
        ("linux/amd64/v3", True, "linux/amd64/v2", True, False),
    ],
)
def test_agree(
    declared: str, declared_variant: bool, actual: str, actual_variant: bool, agrees: bool
) -> None:
    assert (
        _verification.agree(
            platforms.parse(declared), declared_variant, platforms.parse(actual), actual_variant
        )
        is agrees
    )
