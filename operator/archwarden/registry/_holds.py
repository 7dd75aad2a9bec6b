"""Registries that asked to be left alone: a 429 holds its host for every lookup, at once.

A ``429 Too Many Requests`` holds the host that was asked for its ``Retry-After`` (or
:data:`DEFAULT_HOLD_SECONDS` without one, never more than :data:`MAX_HOLD_SECONDS`). Until the
hold ends nothing is sent to that host: a request to it fails at once with
:class:`~archwarden.registry._exceptions.RegistryHeld`, costing neither a request nor a wait,
and a resolver asked for stale answers gives them. Without this, a registry that asked for a
day made every further lookup on it wait out the whole lookup deadline in turn (the background
audit: 30 s an image, 32 minutes for a workload of 64 images).

Two exceptions, both waits the client would have made anyway:

- the lookup that got the 429 still waits out a short ``Retry-After`` (up to the client's
  ``max_retry_after``), or backs off without one, and then retries, ending the hold it caused;
- paced work (the audit, which has time) waits out a hold no longer than ``max_retry_after``
  rather than failing every workload on a registry that asked for a second; admissions never
  wait.

The key is the host the transport was asked to talk to (a mirror, or a registry's API host),
even when the 429 came from a redirect's target or a token realm. So a registry can hold only
itself: a hostile registry redirecting us to another host that answers 429 holds the hostile
registry, never the other host.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable

import cachetools

from archwarden.registry import _exceptions as exc

__all__ = ["DEFAULT_HOLD_SECONDS", "MAX_HOLD_SECONDS", "MAX_HOSTS", "Hold", "Holds"]

DEFAULT_HOLD_SECONDS = 30.0
"""How long a 429 without ``Retry-After`` holds its host."""
MAX_HOLD_SECONDS = 3600.0
"""A longer ``Retry-After`` is not believed beyond this: a hostile (or broken) registry asking
for ``1000000000`` seconds is asked again after an hour, not never. Every hold is one host's own,
so the cap only decides how soon a registry that asked for longer is tried again."""
MAX_HOSTS = 1024
"""Holds kept (least recently used first out): a bound on the hosts pod specs can name."""


@dataclasses.dataclass(frozen=True)
class Hold:
    until: float
    """When the hold ends, by the holds' clock."""
    wall_until: float
    """The same moment as Unix time, for messages."""
    asked: float | None
    """The ``Retry-After`` the registry sent, in seconds (None: it sent none)."""


class Holds:
    """Holds by host, shared by every lookup of one client (admissions and the audit)."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._clock = clock
        self._wall = wall
        self._sleep = sleep
        self._holds: cachetools.LRUCache[str, Hold] = cachetools.LRUCache(MAX_HOSTS)

    def hold(self, host: str, retry_after: float | None) -> None:
        """``host`` answered 429: nothing is sent to it for ``retry_after`` seconds (capped)."""
        delay = DEFAULT_HOLD_SECONDS if retry_after is None else retry_after
        delay = min(max(delay, 0.0), MAX_HOLD_SECONDS)
        if delay <= 0:
            return
        now = self._clock()
        hold = Hold(now + delay, self._wall() + delay, retry_after)
        current = self.held(host)
        if current is not None and current.until > hold.until:
            hold = dataclasses.replace(current)  # an earlier 429 asked for longer
        # A new object even then: the lookup waiting out an earlier hold must not end this one.
        self._holds[host] = hold

    def held(self, host: str) -> Hold | None:
        """The hold on ``host`` still running, if any."""
        hold = self._holds.get(host)
        if hold is not None and hold.until <= self._clock():
            del self._holds[host]
            return None
        return hold

    def release(self, host: str, hold: Hold) -> None:
        """End ``hold``: the lookup that caused it waited what was asked and tries again. A
        hold another 429 replaced since is kept."""
        if self._holds.get(host) is hold:
            del self._holds[host]

    async def admit(self, host: str, patience: float = 0.0) -> None:
        """Return when a request may be sent to ``host``: at once when it is not held, after
        the hold when it ends within ``patience`` seconds; else fail at once."""
        while (hold := self.held(host)) is not None:
            remaining = hold.until - self._clock()
            if remaining > patience:
                raise exc.RegistryHeld(host, host, hold.asked, hold.wall_until, remaining)
            await self._sleep(remaining)
