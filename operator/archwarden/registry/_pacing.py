"""Requests per second per registry, for background work (the audit), never for admissions.

A :class:`Pacer` set in a context (``use``) is consulted by every HTTP request sent inside it,
at the transport (``_transport.Metered``), so redirects, token requests and retries are all
counted as what they are: requests on the wire. Each registry host has its own token bucket of
``rate`` requests per second holding at most ``burst`` tokens. A 429 answered to a paced
request holds that registry for its ``Retry-After`` (or ``hold_seconds`` without one), so the
audit backs off exactly as the registry asks. Admissions never run inside a pacer: they neither
wait for its tokens nor spend them.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
from collections.abc import Awaitable, Callable, Iterator

import cachetools

__all__ = ["Pacer", "acquire", "current", "paced", "reset", "throttled", "use"]

MAX_HOSTS = 1024
"""Buckets kept (least recently used first out): a bound on the registries one audit meets."""
DEFAULT_HOLD_SECONDS = 30.0
"""How long a 429 without ``Retry-After`` holds its registry."""
MAX_HOLD_SECONDS = 3600.0
"""A longer ``Retry-After`` is not believed beyond this."""


class _Bucket:
    __slots__ = ("held_until", "stamp", "tokens")

    def __init__(self, tokens: float, stamp: float) -> None:
        self.tokens = tokens
        self.stamp = stamp
        self.held_until = 0.0


class Pacer:
    def __init__(
        self,
        rate: float,
        burst: float = 1.0,
        *,
        hold_seconds: float = DEFAULT_HOLD_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        self.rate = rate
        self.burst = burst
        self.hold_seconds = hold_seconds
        self._clock = clock
        self._sleep = sleep
        self._buckets: cachetools.LRUCache[str, _Bucket] = cachetools.LRUCache(MAX_HOSTS)
        self._locks: cachetools.LRUCache[str, asyncio.Lock] = cachetools.LRUCache(MAX_HOSTS)
        self.sent: dict[str, int] = {}
        """Requests let through, per host (bounded by MAX_HOSTS hosts)."""
        self.throttled = 0
        """429 answers seen."""

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
                wait = max(bucket.held_until - now, (1 - bucket.tokens) / self.rate)
                if wait <= 0:
                    bucket.tokens -= 1
                    if len(self.sent) < MAX_HOSTS or host in self.sent:
                        self.sent[host] = self.sent.get(host, 0) + 1
                    return
                await self._sleep(wait)

    def hold(self, host: str, seconds: float | None) -> None:
        """The registry answered 429: no request to it before ``seconds`` from now."""
        self.throttled += 1
        delay = self.hold_seconds if seconds is None else min(max(seconds, 0.0), MAX_HOLD_SECONDS)
        bucket = self._bucket(host)
        bucket.held_until = max(bucket.held_until, self._clock() + delay)
        bucket.tokens = min(bucket.tokens, 0.0)


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


def throttled(host: str, retry_after: float | None) -> None:
    pacer = _current.get()
    if pacer is not None:
        pacer.hold(host, retry_after)


@contextlib.contextmanager
def paced(pacer: Pacer | None) -> Iterator[None]:
    """Requests sent inside (and in tasks started inside) are paced by ``pacer``."""
    token = _current.set(pacer)
    try:
        yield
    finally:
        _current.reset(token)
