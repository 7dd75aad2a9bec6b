"""Caching in front of the client: digests forever (LRU), tags for a while, failures briefly.

- digest -> platforms: content-addressed, so immutable; an LRU bounds memory.
- tag -> digest: a TTL cache; once it expires the tag is revalidated with a HEAD, and a digest
  we already know costs no GET (Docker Hub counts GETs, not HEADs, toward its pull limit).
- failures: a short TTL, so a broken image does not hammer its registry from every admission.
- single flight: concurrent lookups of one reference share one set of registry requests;
  the shared lookup is cancelled once its last caller stops waiting.
- stale answers: the last good answer for a tag is kept (LRU) for callers that would rather
  use it than fail while the registry is down.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import time
from collections.abc import Awaitable, Callable

import cachetools

from archwarden import reference
from archwarden.registry import _client, _models, _pacing
from archwarden.registry import _exceptions as exc

__all__ = ["CacheSettings", "LookupObserver", "Resolver"]

LookupObserver = Callable[[str], None]
"""Called once per lookup with its result: hit, miss, revalidated, stale, failure_cached."""


@dataclasses.dataclass(frozen=True)
class CacheSettings:
    digest_cache_size: int = 10_000
    """Digests remembered (each entry is a handful of platforms)."""
    tag_cache_size: int = 10_000
    tag_ttl: float = 300.0
    """Seconds a tag -> digest answer is trusted before a HEAD revalidates it."""
    failure_ttl: float = 10.0
    """Seconds a failure is remembered; short, so a fixed registry is seen quickly."""
    stale_cache_size: int = 10_000
    """Last good answers per tag, served stale on request when the registry fails."""


@dataclasses.dataclass
class _Flight:
    """One shared lookup and how many callers still wait for it."""

    task: asyncio.Future[_models.ImagePlatforms]
    waiters: int = 0


class Resolver:
    """Resolve images through a :class:`RegistryClient`, with caches and single flight."""

    def __init__(
        self,
        client: _client.RegistryClient,
        settings: CacheSettings | None = None,
        *,
        observer: LookupObserver | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.settings = settings or CacheSettings()
        self._observer = observer
        s = self.settings
        self._digests: cachetools.LRUCache[str, _models.ImagePlatforms] = cachetools.LRUCache(
            s.digest_cache_size
        )
        self._tags: cachetools.TTLCache[str, str] = cachetools.TTLCache(
            s.tag_cache_size, s.tag_ttl, timer=clock
        )
        self._last_digest: cachetools.LRUCache[str, str] = cachetools.LRUCache(s.stale_cache_size)
        self._failures: cachetools.TTLCache[str, exc.RegistryError] = cachetools.TTLCache(
            s.tag_cache_size, s.failure_ttl, timer=clock
        )
        self._inflight: dict[str, _Flight] = {}

    def _note(self, result: str) -> None:
        if self._observer is not None:
            self._observer(result)

    @staticmethod
    def _key(ref: reference.Reference) -> str:
        return f"{ref.name}@{ref.digest}" if ref.digest else f"{ref.name}:{ref.target}"

    def cached(self, ref: reference.Reference | str) -> _models.ImagePlatforms | None:
        """The freshest answer held for ``ref`` without any I/O (possibly expired), or None."""
        if isinstance(ref, str):
            ref = reference.parse(ref)
        if ref.digest:
            found = self._digests.get(ref.digest)
            return found.for_reference(ref) if found else None
        key = self._key(ref)
        digest = self._tags.get(key) or self._last_digest.get(key)
        found = self._digests.get(digest) if digest else None
        return found.for_reference(ref) if found else None

    def fresh(self, ref: reference.Reference) -> _models.ImagePlatforms | None:
        """The answer :meth:`resolve` would give at once (a digest held, a tag within its
        TTL), counted as a hit; None when it would have to wait for the registry."""
        if ref.digest:
            held = self._digests.get(ref.digest)
        else:
            digest = self._tags.get(self._key(ref))
            held = self._digests.get(digest) if digest is not None else None
        if held is None:
            return None
        self._note("hit")
        return held.for_reference(ref)

    def is_fresh(self, ref: reference.Reference | str) -> bool:
        """Whether ``ref`` would be answered from the cache without any request (a digest
        known, or a tag whose answer is within its TTL)."""
        if isinstance(ref, str):
            ref = reference.parse(ref)
        if ref.digest:
            return ref.digest in self._digests
        digest = self._tags.get(self._key(ref))
        return digest is not None and digest in self._digests

    async def resolve(
        self, ref: reference.Reference | str, *, allow_stale: bool = False
    ) -> _models.ImagePlatforms:
        if isinstance(ref, str):
            ref = reference.parse(ref)
        held = self.fresh(ref)
        if held is not None:
            return held
        key = self._key(ref)
        # Failures and in-flight lookups belong to an identity: "unauthorized" for a pod
        # without a pull secret must not answer for a pod that has one.
        attempt = f"{key}#{self.client.identity(ref)}"
        if _pacing.current() is not None:
            # A paced lookup (the audit) waits for its registry budget: an admission must
            # never join it and wait too, so paced lookups fly apart.
            attempt += "#paced"
        failure = self._failures.get(attempt)
        if failure is not None:
            return self._fail(ref, key, failure, allow_stale, cached=True)
        try:
            return await self._single_flight(attempt, lambda: self._fetch(ref, key, attempt))
        except exc.RegistryError as error:
            return self._fail(ref, key, error, allow_stale, cached=False)

    def _fail(
        self,
        ref: reference.Reference,
        key: str,
        error: exc.RegistryError,
        allow_stale: bool,
        *,
        cached: bool,
    ) -> _models.ImagePlatforms:
        if allow_stale:
            stale = self.cached(ref)
            if stale is not None:
                self._note("stale")
                return stale.for_reference(ref, stale=True)
        if cached:
            self._note("failure_cached")
        # The same object is raised again and again from the failure cache; clearing its
        # traceback keeps it from growing (and holding every earlier caller's frames).
        raise error.with_traceback(None)

    async def _single_flight(
        self, key: str, work: Callable[[], Awaitable[_models.ImagePlatforms]]
    ) -> _models.ImagePlatforms:
        flight = self._inflight.get(key)
        if flight is None:
            flight = _Flight(asyncio.ensure_future(work()))
            self._inflight[key] = flight
            flight.task.add_done_callback(functools.partial(self._landed, key, flight))
        flight.waiters += 1
        try:
            # shield: one caller giving up (its own deadline) must not cancel the others' lookup.
            return await asyncio.shield(flight.task)
        finally:
            flight.waiters -= 1
            if flight.waiters == 0 and not flight.task.done():
                # Nobody waits any more: a lookup kept going would only hold a connection (and
                # a slot in that registry's pool) for an answer no one reads.
                flight.task.cancel()

    def _landed(self, key: str, flight: _Flight, task: asyncio.Future[object]) -> None:
        if self._inflight.get(key) is flight:
            del self._inflight[key]
        if not task.cancelled():
            task.exception()  # retrieved: a failure nobody awaited is not logged as lost

    async def _fetch(
        self, ref: reference.Reference, key: str, attempt: str
    ) -> _models.ImagePlatforms:
        try:
            if not ref.digest:
                known = self._last_digest.get(key)
                if known is not None and known in self._digests:
                    head = await self.client.head_manifest(ref)
                    if head is not None and head.digest in self._digests:
                        self._tags[key] = head.digest
                        self._last_digest[key] = head.digest
                        self._note("revalidated")
                        return self._digests[head.digest].for_reference(ref)
            self._note("miss")
            answer = await self.client.resolve(ref)
        except exc.RegistryError as error:
            if not isinstance(error, exc.RegistryHeld):
                # A held host was not asked: refusing again costs nothing, and a remembered
                # refusal would outlast a hold that ends (or is released) sooner.
                self._failures[attempt] = error
            raise
        self._digests[answer.digest] = answer
        if not ref.digest:
            self._tags[key] = answer.digest
            self._last_digest[key] = answer.digest
        return answer
