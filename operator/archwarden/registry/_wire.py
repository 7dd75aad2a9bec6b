"""Reading what a registry sends: JSON, numbers and quoted text, none of which can raise
anything but :class:`WireError` or reach a message unbounded. Pure code.

Registries are chosen by whoever writes a pod spec, so every byte here may be hostile: JSON
nested deep enough to exhaust the recursion limit, numbers too large for a float, headers in
scripts Python calls digits (``"²".isdigit()`` is true).
"""

from __future__ import annotations

import email.utils
import json
import math
import time
from typing import Any

__all__ = ["QUOTE_MAX", "WireError", "clip", "finite", "loads", "quote", "retry_after"]

# A registry's own words (a mediaType, an error message) are quoted at most this long, so a
# hostile document cannot fill a log line, an Event or an admission message.
QUOTE_MAX = 80


class WireError(ValueError):
    """Something a registry sent that cannot be read; the message never quotes it."""


def loads(data: bytes | str, what: str) -> Any:
    """Parse JSON; ``what`` names the document in the error (``"manifest"``, ``"token"``)."""
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise WireError(f"{what} is not valid JSON") from None
    except RecursionError:
        # json's C scanner recurses once per nesting level.
        raise WireError(f"{what} is not valid JSON (nested too deeply)") from None


def finite(value: object, what: str) -> float:
    """A JSON number as a finite float (``1e999`` and 400-digit integers are refused)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise WireError(f"{what} is not a number")
    try:
        number = float(value)
    except (ValueError, OverflowError):
        raise WireError(f"{what} is not a usable number") from None
    if not math.isfinite(number):
        raise WireError(f"{what} is not a usable number")
    return number


def retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds a ``Retry-After`` header asks for (delta-seconds or an HTTP date), else None."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        # Capped before float(): a 400-digit delay still means "too long to wait".
        return float(value) if len(value) < 16 else math.inf
    try:
        when = email.utils.parsedate_to_datetime(value)
        stamp = when.timestamp()
    except (TypeError, ValueError, OverflowError, IndexError):
        return None
    return max(0.0, stamp - (time.time() if now is None else now))


def clip(value: object, limit: int = QUOTE_MAX) -> str:
    """A registry's value as text, cut to ``limit`` characters with '…'."""
    text = value if isinstance(value, str) else repr(value)
    if len(text) > limit:
        text = text[: limit - 1] + "\u2026"
    return text


def quote(value: object, limit: int = QUOTE_MAX) -> str:
    """``repr``-style quoting of a registry's value, cut to ``limit`` characters with '…'."""
    return repr(clip(value, limit))
