"""Resolving an image's platforms: the walk from the top document through indexes to configs.

Limits per resolution, since the documents are the registry's to choose: a byte budget over
every body read (:mod:`_budget`), children de-duplicated by digest (an index may list one
digest many times), at most ``MAX_CONCURRENT_FETCHES`` fetches at once, and the first failure
cancels the siblings still running (their answer could no longer be used).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any, TypeVar

from archwarden import platforms, reference
from archwarden.registry import _config, _manifests
from archwarden.registry import _exceptions as exc

__all__ = ["MAX_CONCURRENT_FETCHES", "Walk"]

# Enough to fetch a typical index's children in two or three rounds.
MAX_CONCURRENT_FETCHES = 8

FetchManifest = Callable[[reference.Reference, str], Awaitable[tuple[_manifests.Document, str]]]
FetchBlob = Callable[[reference.Reference, str, int], Awaitable[bytes]]
T = TypeVar("T")


async def all_or_nothing(coroutines: Iterable[Coroutine[Any, Any, T]]) -> list[T]:
    """Run concurrently; the first failure cancels the rest and is raised as it is."""
    tasks = [asyncio.ensure_future(c) for c in coroutines]
    if not tasks:
        return []
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
        return [task.result() for task in tasks]
    finally:
        for task in tasks:
            task.cancel()
        # Wait for the cancelled ones, so none is left to log an unretrieved exception.
        await asyncio.gather(*tasks, return_exceptions=True)


class Walk:
    """One resolution of ``ref``."""

    def __init__(
        self,
        ref: reference.Reference,
        settings: _config.ClientSettings,
        fetch_manifest: FetchManifest,
        fetch_blob: FetchBlob,
    ) -> None:
        self.ref = ref
        self.settings = settings
        self._fetch_manifest = fetch_manifest
        self._fetch_blob = fetch_blob
        self._slots = asyncio.Semaphore(MAX_CONCURRENT_FETCHES)
        self.artifact_type = ""
        """Set when the top document is an OCI artifact (its type): it names no platform."""

    def _artifact(self, artifact_type: str, depth: int) -> list[platforms.Platform]:
        # A data artifact names no platform; what it may be used for is the caller's
        # judgement (an image volume mounts it anywhere). Inside an index it adds nothing.
        if depth == 0:
            self.artifact_type = artifact_type
        return []

    async def platforms(
        self, document: _manifests.Document, digest: str, *, depth: int, seen: frozenset[str]
    ) -> list[platforms.Platform]:
        ref = self.ref
        subject = f"{ref.path}@{digest}"
        try:
            if document.is_schema1:
                return [document.schema1_platform()]
            if document.is_image:
                if artifact := document.artifact_type():
                    return self._artifact(artifact, depth)
                config = document.config()
                async with self._slots:
                    raw = await self._fetch_blob(ref, config.digest, self.settings.config_max_bytes)
                if _manifests.config_artifact(config.media_type, raw):
                    return self._artifact(config.media_type, depth)
                return [_manifests.config_platform(raw)]
            children = document.children()
        except _manifests.DocumentError as error:
            raise exc.InvalidManifest(ref.domain, str(error), subject) from None
        if len(children) > _config.MAX_INDEX_CHILDREN:
            raise exc.InvalidManifest(
                ref.domain, f"index lists more than {_config.MAX_INDEX_CHILDREN} entries", subject
            )
        found = [
            c.platform
            for c in children
            if c.platform is not None and c.media_type not in _manifests.INDEX_TYPES
        ]
        # One fetch per digest, however often the index lists it.
        nested = list(
            {
                c.digest: c
                for c in children
                if c.platform is None or c.media_type in _manifests.INDEX_TYPES
            }.values()
        )
        if nested and depth + 1 > self.settings.max_index_depth:
            raise exc.InvalidManifest(
                ref.domain,
                f"indexes nested deeper than {self.settings.max_index_depth} levels",
                subject,
            )
        for child in nested:
            if child.digest in seen:
                raise exc.InvalidManifest(
                    ref.domain, f"index cycle through {child.digest}", subject
                )

        async def expand(child: _manifests.Descriptor) -> list[platforms.Platform]:
            async with self._slots:
                child_doc, child_digest = await self._fetch_manifest(ref, child.digest)
            return await self.platforms(
                child_doc, child_digest, depth=depth + 1, seen=seen | {child.digest}
            )

        for result in await all_or_nothing(expand(c) for c in nested):
            found.extend(result)
        return found
