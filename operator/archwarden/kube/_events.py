"""Event de-duplication: one Event per (object, reason, message) per window."""

from __future__ import annotations

import time
from collections.abc import Callable

import cachetools

__all__ = ["EventDeduper"]

# Controllers re-create pods in bursts (a 50-replica rollout); one Event per window is enough.
DEDUP_WINDOW = 600.0


class EventDeduper:
    def __init__(self, window: float = DEDUP_WINDOW, clock: Callable[[], float] = time.monotonic):
        self._seen: cachetools.TTLCache[tuple[str, ...], bool] = cachetools.TTLCache(
            10_000, window, timer=clock
        )

    def first(self, *key: str) -> bool:
        """True the first time ``key`` is seen within the window."""
        if key in self._seen:
            return False
        self._seen[key] = True
        return True
