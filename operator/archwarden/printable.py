"""Text safe to print to a terminal or a CI log: control characters escaped.

Image strings, workload names and registry error texts come from people and registries
archwarden does not trust. Printed raw, an escape sequence recolours or clears the admin's
terminal and a newline forges a row of a table. Every text output (``inspect``, ``check``,
``report``'s table, and their error lines) passes each value through :func:`printable`; the
JSON and HTML outputs escape by their own rules.
"""

from __future__ import annotations

__all__ = ["printable"]

# C0 controls (newline and tab included: a value is one cell of one line), DEL and C1 controls.
_ESCAPES = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F, *range(0x80, 0xA0))}


def printable(text: str) -> str:
    """``text`` with every control character written as ``\\xNN``."""
    return text.translate(_ESCAPES)
