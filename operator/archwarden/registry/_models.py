"""Values the registry client returns."""

from __future__ import annotations

import dataclasses
from typing import Any

from archwarden import platforms
from archwarden import reference as references

__all__ = ["ImagePlatforms", "ManifestHead"]


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
    """Sorted and de-duplicated; never empty."""
    stale: bool = False
    """True when served from cache after the registry failed (callers asked for that)."""

    @property
    def canonical(self) -> list[str]:
        return platforms.format_all(self.platforms)

    def for_reference(self, ref: references.Reference, *, stale: bool = False) -> ImagePlatforms:
        return dataclasses.replace(self, reference=ref, stale=stale)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "image": str(self.reference),
            "digest": self.digest,
            "mediaType": self.media_type,
            "platforms": self.canonical,
        }
        details = [p.to_json() for p in self.platforms if p.os_version or p.os_features]
        if details:
            data["platformDetails"] = details
        if self.stale:
            data["stale"] = True
        return data
