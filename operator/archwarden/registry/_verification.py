"""Images that lie: does each index entry's platform match the config of the image it names?

An index is written by whoever pushed it; the config is written by the build that produced the
binaries. When a tool mislabels an entry (an amd64 build listed as linux/arm64), the runtime
picks that entry on an arm64 node and the container fails with ``exec format error``, while
resolution (which trusts the index, as containerd does) reports the image as arm64-ready.

Verification reads what resolution skips: every platform-claiming entry's manifest and config.
It runs under the same limits as a resolution (byte budget, per-document caps, children per
index, nesting depth, concurrent fetches, deadline), through the same client, so every failure
is a ``RegistryError``. Entries sharing a digest are fetched once.
"""

from __future__ import annotations

import asyncio

from archwarden import platforms, reference
from archwarden.registry import _config, _manifests, _models, _resolution
from archwarden.registry import _exceptions as exc

__all__ = ["Check", "agree"]


def agree(
    declared: platforms.Platform,
    declared_variant: bool,
    actual: platforms.Platform,
    actual_variant: bool,
) -> bool:
    """Same os and architecture; variants compared only when both sides spell one out.

    Normalisation turns a bare ``arm`` into ``arm/v7``; a config that names no variant does not
    contradict an index entry for arm/v6 (old builders left it out).
    """
    if (declared.os, declared.architecture) != (actual.os, actual.architecture):
        return False
    return not (declared_variant and actual_variant) or declared.variant == actual.variant


class Check:
    """One verification of ``ref``; :meth:`entries` walks from its top document."""

    def __init__(
        self,
        ref: reference.Reference,
        settings: _config.ClientSettings,
        fetch_manifest: _resolution.FetchManifest,
        fetch_blob: _resolution.FetchBlob,
    ) -> None:
        self.ref = ref
        self.settings = settings
        self._fetch_manifest = fetch_manifest
        self._fetch_blob = fetch_blob
        self._slots = asyncio.Semaphore(_resolution.MAX_CONCURRENT_FETCHES)

    def _invalid(self, problem: str, digest: str) -> exc.InvalidManifest:
        return exc.InvalidManifest(self.ref.domain, problem, f"{self.ref.path}@{digest}")

    async def entries(
        self, document: _manifests.Document, digest: str, *, depth: int, seen: frozenset[str]
    ) -> list[_models.EntryCheck]:
        if not document.is_index:
            return []  # a single image claims nothing beyond its own config
        try:
            children = document.children()
        except _manifests.DocumentError as error:
            raise self._invalid(str(error), digest) from None
        if len(children) > _config.MAX_INDEX_CHILDREN:
            raise self._invalid(
                f"index lists more than {_config.MAX_INDEX_CHILDREN} entries", digest
            )
        groups: dict[str, list[_manifests.Descriptor]] = {}
        for child in children:
            # An image entry without a platform claims nothing; resolution reads its config.
            if child.platform is None and child.media_type in _manifests.IMAGE_TYPES:
                continue
            groups.setdefault(child.digest, []).append(child)
        for child_digest in groups:
            if child_digest in seen:
                raise self._invalid(f"index cycle through {child_digest}", digest)

        async def one(claims: list[_manifests.Descriptor]) -> list[_models.EntryCheck]:
            target = claims[0].digest
            async with self._slots:
                child_doc, child_digest = await self._fetch_manifest(self.ref, target)
            if child_doc.is_index:
                if depth + 1 > self.settings.max_index_depth:
                    raise self._invalid(
                        f"indexes nested deeper than {self.settings.max_index_depth} levels",
                        digest,
                    )
                return await self.entries(
                    child_doc, child_digest, depth=depth + 1, seen=seen | {child_digest}
                )
            claimed = [c for c in claims if c.platform is not None]
            if not claimed:
                return []
            actual, actual_variant = await self._platform_of(child_doc, child_digest)
            checks = []
            for claim in claimed:
                assert claim.platform is not None
                checks.append(
                    _models.EntryCheck(
                        digest=child_digest,
                        declared=claim.platform,
                        actual=actual,
                        agrees=agree(claim.platform, claim.variant_given, actual, actual_variant),
                    )
                )
            return checks

        found: list[_models.EntryCheck] = []
        for result in await _resolution.all_or_nothing(one(g) for g in groups.values()):
            found.extend(result)
        return found

    async def _platform_of(
        self, document: _manifests.Document, digest: str
    ) -> tuple[platforms.Platform, bool]:
        try:
            if document.is_schema1:
                return document.schema1_platform(), False
            config = document.config()
            async with self._slots:
                raw = await self._fetch_blob(
                    self.ref, config.digest, self.settings.config_max_bytes
                )
            return _manifests.config_claim(raw)
        except _manifests.DocumentError as error:
            raise self._invalid(str(error), digest) from None
