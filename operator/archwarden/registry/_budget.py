"""Bytes one resolution may read, across every document it fetches.

The per-document caps bound one body; an index can still reference 256 children of 4 MiB
each, so a single lookup could make the webhook buffer a gigabyte. A budget set for the whole
resolution is charged by every body read inside it (tasks started inside inherit it).
"""

from __future__ import annotations

import contextvars

from archwarden.registry import _exceptions as exc

__all__ = ["Budget", "charge", "current", "reset", "use"]


class Budget:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.used = 0


_current: contextvars.ContextVar[Budget | None] = contextvars.ContextVar(
    "archwarden_registry_budget", default=None
)


def use(budget: Budget) -> contextvars.Token[Budget | None]:
    return _current.set(budget)


def reset(token: contextvars.Token[Budget | None]) -> None:
    _current.reset(token)


def current() -> Budget | None:
    return _current.get()


def charge(size: int, registry: str, subject: str) -> None:
    """Count ``size`` bytes read; refuse once the current resolution's budget is spent."""
    budget = _current.get()
    if budget is None:
        return
    budget.used += size
    if budget.used > budget.max_bytes:
        raise exc.ManifestTooLarge(
            registry,
            f"resolution read more than its {budget.max_bytes}-byte budget",
            subject,
        )
