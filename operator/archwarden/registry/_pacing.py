"""Requests per second per registry, for background work (the audit), never for admissions.

A :class:`Pacer` set in a context (``use``) is consulted by every HTTP request sent inside it,
at the transport (``_transport.Metered``), so redirects, token requests and retries are all
counted as what they are: requests on the wire. Each registry host has its own token bucket of
``rate`` requests per second holding at most ``burst`` tokens. A 429 is not the pacer's: it
holds its host for every lookup, paced or not (``_holds``). Admissions never run inside a
pacer: they neither wait for its tokens nor spend them.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
from collections.abc import Awaitable, Callable, Iterator

import cachetools

__all__ = ["Pacer", "acquire", "current", "paced", "reset", "use"]

MAX_HOSTS = 1024
"""Buckets kept (least recently used first out): a bound on the registries one audit meets."""


class _Bucket:
    __slots__ = ("stamp", "tokens")

    def __init__(self, tokens: float, stamp: float) -> None:
        self.tokens = tokens
        self.stamp = stamp


class Pacer:
    def __init__(
        self,
        rate: float,
        burst: float = 1.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._sleep = sleep
        self._buckets: cachetools.LRUCache[str, _Bucket] = cachetools.LRUCache(MAX_HOSTS)
        self._locks: cachetools.LRUCache[str, asyncio.Lock] = cachetools.LRUCache(MAX_HOSTS)
        self.sent: dict[str, int] = {}
        """Requests let through, per host (bounded by MAX_HOSTS hosts)."""

    def _bucket(self, host: str) -> _Bucket:
        bucket = self._buckets.get(host)
        if bucket is None:
            bucket = self._buckets[host] = _Bucket(self.burst, self._clock())
        return bucket

    async def acquire(self, host: str) -> None:
        """Wait until ``host`` may be sent one more request, and take its token."""
        lock = self._locks.get(host)
        if lock is None:
            lock = self._locks[host] = asyncio.Lock()
        async with lock:  # one waiter per host at a time keeps the order fair
            bucket = self._bucket(host)
            while True:
                now = self._clock()
                bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.stamp) * self.rate)
                bucket.stamp = now
                wait = (1 - bucket.tokens) / self.rate
                if wait <= 0:
                    bucket.tokens -= 1
                    if len(self.sent) < MAX_HOSTS or host in self.sent:
                        self.sent[host] = self.sent.get(host, 0) + 1
                    return
                await self._sleep(wait)


_current: contextvars.ContextVar[Pacer | None] = contextvars.ContextVar(
    "archwarden_registry_pacer", default=None
)


def use(pacer: Pacer | None) -> contextvars.Token[Pacer | None]:
    return _current.set(pacer)


def reset(token: contextvars.Token[Pacer | None]) -> None:
    _current.reset(token)


def current() -> Pacer | None:
    return _current.get()


async def acquire(host: str) -> None:
    pacer = _current.get()
    if pacer is not None:
        await pacer.acquire(host)


@contextlib.contextmanager
def paced(pacer: Pacer | None) -> Iterator[None]:
    """Requests sent inside (and in tasks started inside) are paced by ``pacer``."""
    token = _current.set(pacer)
    try:
        yield
    finally:
        _current.reset(token)
