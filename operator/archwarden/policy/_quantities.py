"""Kubernetes resource quantities (``500m``, ``64Gi``, ``1e3``), parsed exactly.

The grammar of k8s.io/apimachinery's ``resource.Quantity``::

    <quantity>     ::= <sign><number><suffix>
    <number>       ::= <digits> | <digits>.<digits> | <digits>. | .<digits>
    <suffix>       ::= <binarySI> | <decimalSI> | <exponent>
    <binarySI>     ::= Ki | Mi | Gi | Ti | Pi | Ei
    <decimalSI>    ::= n | u | m | "" | k | M | G | T | P | E
    <exponent>     ::= e<sign><digits> | E<sign><digits>

Values are :class:`fractions.Fraction`, so ``0.1`` stays a tenth and ``1Ei`` stays 2**60:
no float, no decimal context rounds them. :func:`milli` and :func:`whole` round up, as
``Quantity.MilliValue`` and ``Quantity.Value`` do (the scheduler counts CPU in millicores
and memory in bytes that way).
"""

from __future__ import annotations

import fractions
import math
import re

__all__ = ["MAX_QUANTITY_CHARS", "milli", "quantity", "whole"]

MAX_QUANTITY_CHARS = 64
"""Longer text is not a quantity: a tenant's object cannot make us build huge numbers."""
MAX_EXPONENT_DIGITS = 3
"""``1e999`` at most: 10**999 is a small integer, 10**(10**60) would not be."""

_SUFFIXES: dict[str, fractions.Fraction] = {
    "n": fractions.Fraction(1, 10**9),
    "u": fractions.Fraction(1, 10**6),
    "m": fractions.Fraction(1, 10**3),
    "": fractions.Fraction(1),
    "k": fractions.Fraction(10**3),
    "M": fractions.Fraction(10**6),
    "G": fractions.Fraction(10**9),
    "T": fractions.Fraction(10**12),
    "P": fractions.Fraction(10**15),
    "E": fractions.Fraction(10**18),
    "Ki": fractions.Fraction(2**10),
    "Mi": fractions.Fraction(2**20),
    "Gi": fractions.Fraction(2**30),
    "Ti": fractions.Fraction(2**40),
    "Pi": fractions.Fraction(2**50),
    "Ei": fractions.Fraction(2**60),
}
_QUANTITY = re.compile(
    r"([+-]?)([0-9]+\.?[0-9]*|\.[0-9]+)"
    rf"(?:[eE]([+-]?[0-9]{{1,{MAX_EXPONENT_DIGITS}}})|(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]?))"
)


def quantity(text: str) -> fractions.Fraction | None:
    """The exact value of a quantity; None when ``text`` is not one (or is too long)."""
    if len(text) > MAX_QUANTITY_CHARS:
        return None
    match = _QUANTITY.fullmatch(text)
    if match is None:
        return None
    sign, number, exponent, suffix = match.groups()
    # Fraction reads "1.", ".5" and "12.50" exactly; it takes no exponent here.
    value = fractions.Fraction(number + "0" if number.endswith(".") else number)
    if exponent is not None:
        value *= fractions.Fraction(10) ** int(exponent)
    else:
        value *= _SUFFIXES[suffix]
    return -value if sign == "-" else value


def milli(value: fractions.Fraction) -> int:
    """Thousandths, rounded up (``Quantity.MilliValue``): 0.0001 CPU is 1m."""
    return math.ceil(value * 1000)


def whole(value: fractions.Fraction) -> int:
    """Units, rounded up (``Quantity.Value``): 0.5 bytes is 1."""
    return math.ceil(value)
