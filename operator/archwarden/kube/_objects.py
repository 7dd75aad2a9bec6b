"""Does an object exist? Asked before an Event is posted about it for an unauthenticated review.

Anyone who reaches the webhook port without client authentication can send a review about a
made-up object; an Event about it would be a forged record in the cluster. A lookup costs one
GET (a thread of the default executor), so lookups are bounded: a few at a time, each within
a timeout, answers cached briefly (missing ones for less, since an object just admitted is
stored a moment later).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import cachetools

from archwarden.kube import _api

__all__ = ["ObjectChecker"]

logger = logging.getLogger("archwarden.events")

FOUND_TTL = 30.0
"""Seconds an object seen to exist is trusted: a burst of Events about it costs one GET."""
MISSING_TTL = 1.0
"""Seconds a missing object is remembered: short, an allowed CREATE is stored right after."""
LOOKUP_TIMEOUT = 3.0
"""Seconds one lookup may take, waiting for a slot included; past it the Event is dropped."""
LOOKUPS_AT_ONCE = 4
"""GETs in flight: forged reviews about many made-up objects must not take every thread."""


class ObjectChecker:
    def __init__(
        self,
        reader: _api.ApiReader,
        *,
        timeout: float = LOOKUP_TIMEOUT,
        concurrency: int = LOOKUPS_AT_ONCE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._reader = reader
        self._timeout = timeout
        self._slots = asyncio.Semaphore(concurrency)
        self._found: cachetools.TTLCache[tuple[str, ...], str] = cachetools.TTLCache(
            4096, FOUND_TTL, timer=clock
        )
        self._missing: cachetools.TTLCache[tuple[str, ...], bool] = cachetools.TTLCache(
            4096, MISSING_TTL, timer=clock
        )

    async def exists(self, target: Mapping[str, Any]) -> bool:
        """Whether ``target`` (apiVersion, kind, metadata.namespace/name/uid) is in the cluster.

        False too when it cannot be told: a kind archwarden does not read, an API error or a
        timeout. A uid in ``target`` must match, so a review naming a real object with a
        made-up uid is not taken for it.
        """
        meta = target.get("metadata") or {}
        kind = str(target.get("kind") or "")
        namespace = str(meta.get("namespace") or "")
        name = str(meta.get("name") or "")
        uid = str(meta.get("uid") or "")
        if not (name and namespace and self._reader.readable(kind)):
            return False
        key = (kind, namespace, name)
        found_uid = self._found.get(key)
        if found_uid is None:
            if key in self._missing:
                return False
            try:
                async with asyncio.timeout(self._timeout):
                    async with self._slots:
                        body = await self._reader.read(kind, namespace, name)
            except _api.NotFound:
                self._missing[key] = True
                return False
            except (_api.ApiUnavailable, TimeoutError) as exc:
                logger.debug("cannot tell whether %s %s/%s exists: %s", kind, namespace, name, exc)
                return False
            found_uid = str((body.get("metadata") or {}).get("uid") or "")
            self._found[key] = found_uid
        return not uid or uid == found_uid
