"""Values the registry client returns."""

from __future__ import annotations

import dataclasses
from typing import Any

from archwarden import platforms
from archwarden import reference as references

__all__ = ["EntryCheck", "ImagePlatforms", "ManifestHead", "Verification"]


@dataclasses.dataclass(frozen=True)
class ManifestHead:
    digest: str
    media_type: str
    size: int


@dataclasses.dataclass(frozen=True)
class ImagePlatforms:
    """The answer to "where can this image run?"."""

    reference: references.Reference
    digest: str
    """The digest of the top-level document (index, list or single manifest)."""
    media_type: str
    platforms: tuple[platforms.Platform, ...]
    """Sorted and de-duplicated; empty only for an artifact."""
    stale: bool = False
    """True when served from cache after the registry failed (callers asked for that)."""
    artifact_type: str = ""
    """For an OCI artifact (a single manifest whose config is not an image config): its
    ``artifactType`` or config media type. It names no platform: as an image volume it mounts
    on any node; as a container's image it is nothing to run."""

    @property
    def canonical(self) -> list[str]:
        return platforms.format_all(self.platforms)

    def for_reference(self, ref: references.Reference, *, stale: bool = False) -> ImagePlatforms:
        if ref is self.reference and stale == self.stale:
            return self  # a warm review asks with the very reference the answer was fetched for
        return dataclasses.replace(self, reference=ref, stale=stale)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "image": str(self.reference),
            "digest": self.digest,
            "mediaType": self.media_type,
            "platforms": self.canonical,
        }
        if self.artifact_type:
            data["artifactType"] = self.artifact_type
        details = [p.to_json() for p in self.platforms if p.os_version or p.os_features]
        if details:
            data["platformDetails"] = details
        if self.stale:
            data["stale"] = True
        return data


@dataclasses.dataclass(frozen=True)
class EntryCheck:
    """One index entry compared with the config of the image it points to."""

    digest: str
    """The entry's manifest digest."""
    declared: platforms.Platform
    """The platform the index claims for the entry."""
    actual: platforms.Platform
    """The platform the image's own config names (what the binaries were built for)."""
    agrees: bool
    """Same os and architecture, and the same variant where both spell one out."""

    def to_json(self) -> dict[str, Any]:
        return {
            "digest": self.digest,
            "index": self.declared.canonical,
            "config": self.actual.canonical,
            "agrees": self.agrees,
        }


@dataclasses.dataclass(frozen=True)
class Verification:
    """Every platform-claiming index entry of an image, checked against its config.

    A single-platform image has no entries: nothing but its config says where it runs, and
    resolution already reads that."""

    reference: references.Reference
    digest: str
    entries: tuple[EntryCheck, ...]

    @property
    def mismatches(self) -> tuple[EntryCheck, ...]:
        return tuple(e for e in self.entries if not e.agrees)

    def to_json(self) -> dict[str, Any]:
        return {
            "image": str(self.reference),
            "digest": self.digest,
            "entries": [e.to_json() for e in self.entries],
            "mismatches": [e.to_json() for e in self.mismatches],
        }
