"""Manifest documents: media types, digest verification and platform extraction. Pure code."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
from collections.abc import Mapping
from typing import Any

from archwarden import platforms, reference
from archwarden.registry import _wire

__all__ = [
    "ACCEPT",
    "Descriptor",
    "Document",
    "compute_digest",
    "schema1_payload",
]

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_SCHEMA2 = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"
DOCKER_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json"

OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
IMAGE_CONFIG_TYPES = frozenset({OCI_CONFIG, DOCKER_CONFIG})
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
IMAGE_TYPES = frozenset({OCI_MANIFEST, DOCKER_SCHEMA2})
SCHEMA1_TYPES = frozenset({DOCKER_SCHEMA1_SIGNED, DOCKER_SCHEMA1})
# Old registries label schema1 (and sometimes everything) with these; the body decides then.
GENERIC_TYPES = frozenset({"", "text/plain", "application/json", "application/octet-stream"})

# One header with every type: distribution 2.8 rewrites answers for narrower ones (a Docker
# list fetched by tag without the list type silently becomes its linux/amd64 child).
ACCEPT = ", ".join(
    [
        OCI_INDEX,
        DOCKER_LIST,
        OCI_MANIFEST,
        DOCKER_SCHEMA2,
        DOCKER_SCHEMA1_SIGNED + ";q=0.5",
        DOCKER_SCHEMA1 + ";q=0.5",
    ]
)

# Index entries with this annotation are attestations, SBOMs or builder metadata, not images.
REFERENCE_TYPE_ANNOTATION = "vnd.docker.reference.type"


class DocumentError(ValueError):
    """A document we cannot use; the client wraps it into InvalidManifest."""


@dataclasses.dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    platform: platforms.Platform | None = None
    variant_given: bool = dataclasses.field(default=False, compare=False)
    """The index entry spelled out a variant: normalisation fills one in for ``arm`` (v7),
    which must not count as a claim when verifying the entry against its config."""


def _loads(data: bytes | str, what: str) -> Any:
    try:
        return _wire.loads(data, what)
    except _wire.WireError as error:
        raise DocumentError(str(error)) from None


def compute_digest(data: bytes, algorithm: str = "sha256") -> str:
    if algorithm not in reference.DIGEST_ALGORITHMS:
        raise DocumentError(f"unsupported digest algorithm {_wire.quote(algorithm)}")
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


def _b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def schema1_payload(raw: bytes, doc: Mapping[str, Any]) -> bytes:
    """The bytes a signed schema1 digest covers: the document with its signatures cut out.

    The first signature's protected header says how many leading bytes to keep
    (``formatLength``) and what closes the document again (``formatTail``).
    """
    signatures = doc.get("signatures")
    if not isinstance(signatures, list) or not signatures:
        return raw
    first = signatures[0]
    protected = first.get("protected") if isinstance(first, Mapping) else None
    if not isinstance(protected, str):
        raise DocumentError("schema1 signature has no protected header")
    try:
        header = _loads(_b64url(protected), "schema1 protected header")
        length = int(_wire.finite(header["formatLength"], "schema1 formatLength"))
        tail = _b64url(str(header["formatTail"]))
    except (ValueError, KeyError, TypeError, binascii.Error):
        # ValueError covers DocumentError and WireError: 1e999 and other non-integers.
        raise DocumentError("schema1 protected header is malformed") from None
    if not 0 < length <= len(raw):
        raise DocumentError("schema1 formatLength is out of range")
    return raw[:length] + tail


@dataclasses.dataclass(frozen=True)
class Document:
    """A parsed manifest of any supported kind."""

    media_type: str
    raw: bytes
    body: Mapping[str, Any]

    @classmethod
    def parse(cls, raw: bytes, content_type: str) -> Document:
        body = _loads(raw, "manifest")
        if not isinstance(body, dict):
            raise DocumentError("manifest is not a JSON object")
        media_type = content_type.split(";", 1)[0].strip().lower()
        declared = body.get("mediaType")
        if media_type in GENERIC_TYPES or media_type not in (
            INDEX_TYPES | IMAGE_TYPES | SCHEMA1_TYPES
        ):
            media_type = cls._sniff(body, declared)
        elif isinstance(declared, str) and declared and declared != media_type:
            # A registry that labels one kind as another is broken or hostile; trusting either
            # side could report the wrong platforms.
            raise DocumentError(
                f"Content-Type {_wire.clip(media_type)} contradicts the document's mediaType "
                f"{_wire.clip(declared)}"
            )
        return cls(media_type, raw, body)

    @staticmethod
    def _sniff(body: Mapping[str, Any], declared: object) -> str:
        if isinstance(declared, str) and declared in INDEX_TYPES | IMAGE_TYPES | SCHEMA1_TYPES:
            return declared
        if body.get("schemaVersion") == 1:
            return DOCKER_SCHEMA1_SIGNED if "signatures" in body else DOCKER_SCHEMA1
        if isinstance(body.get("manifests"), list):
            return OCI_INDEX
        if isinstance(body.get("config"), Mapping):
            return OCI_MANIFEST
        shown = declared if isinstance(declared, str) else "none"
        raise DocumentError(f"unsupported manifest type (mediaType {_wire.clip(shown)})")

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES

    @property
    def is_image(self) -> bool:
        return self.media_type in IMAGE_TYPES

    @property
    def is_schema1(self) -> bool:
        return self.media_type in SCHEMA1_TYPES

    def digest(self, algorithm: str = "sha256") -> str:
        """The content digest, computed over the bytes the registry sent (never re-serialised)."""
        data = schema1_payload(self.raw, self.body) if self.is_schema1 else self.raw
        return compute_digest(data, algorithm)

    def artifact_type(self) -> str:
        """What an image manifest that is plainly an OCI artifact carries, or ''.

        An OCI manifest is an artifact when it declares ``artifactType`` or its config is
        OCI's empty descriptor: it names no platform and no config is read for it. A config
        of another type is read (:func:`config_artifact`): old tools wrote image configs as
        ``application/octet-stream``. Docker manifests are images.
        """
        if self.media_type != OCI_MANIFEST:
            return ""
        declared = self.body.get("artifactType")
        if isinstance(declared, str) and declared:
            return declared
        config_type = self.config_type()
        return config_type if config_type == OCI_EMPTY else ""

    def config_type(self) -> str:
        config = self.body.get("config")
        media_type = config.get("mediaType") if isinstance(config, Mapping) else None
        return media_type if isinstance(media_type, str) else ""

    def children(self) -> list[Descriptor]:
        """An index's entries, without attestations and other non-image entries."""
        entries = self.body.get("manifests")
        if not isinstance(entries, list):
            raise DocumentError("index has no manifests list")
        result: list[Descriptor] = []
        for entry in entries:
            if not isinstance(entry, Mapping):
                raise DocumentError("index entry is not an object")
            annotations = entry.get("annotations")
            if isinstance(annotations, Mapping) and REFERENCE_TYPE_ANNOTATION in annotations:
                continue
            digest, media_type = entry.get("digest"), entry.get("mediaType", "")
            if not isinstance(digest, str) or not isinstance(media_type, str):
                raise DocumentError("index entry has no digest")
            try:
                reference.validate_digest(digest)
            except reference.InvalidReference as exc:
                raise DocumentError(f"index entry digest is invalid: {exc.problem}") from None
            raw_platform = entry.get("platform")
            platform = (
                platforms.from_json(raw_platform) if isinstance(raw_platform, Mapping) else None
            )
            if platform is not None and platform.is_unknown:
                continue
            if platform is not None and not (platform.os and platform.architecture):
                # OCI requires both; an entry without them cannot say where it runs, so the
                # child is fetched and its config read, as for an entry with no platform.
                platform = None
            size = entry.get("size")
            result.append(
                Descriptor(
                    media_type,
                    digest,
                    size if isinstance(size, int) else -1,
                    platform,
                    variant_given=platform is not None and _has_variant(raw_platform),
                )
            )
        return result

    def config(self) -> Descriptor:
        config = self.body.get("config")
        if not isinstance(config, Mapping) or not isinstance(config.get("digest"), str):
            raise DocumentError("image manifest has no config descriptor")
        digest = str(config["digest"])
        try:
            reference.validate_digest(digest)
        except reference.InvalidReference as exc:
            raise DocumentError(f"config digest is invalid: {exc.problem}") from None
        size = config.get("size")
        media_type = config.get("mediaType")
        return Descriptor(
            media_type if isinstance(media_type, str) else "",
            digest,
            size if isinstance(size, int) else -1,
        )

    def schema1_platform(self) -> platforms.Platform:
        """Schema1 names the architecture at the top and the os in the newest history entry.

        Both are read from the bytes the digest covers (the signature-stripped payload): a
        key added after the payload would otherwise change the answer under the same digest.
        """
        payload = schema1_payload(self.raw, self.body)
        verified = self.body if payload is self.raw else _loads(payload, "schema1 payload")
        if not isinstance(verified, Mapping):
            raise DocumentError("schema1 payload is not a JSON object")
        arch = verified.get("architecture")
        os_name = "linux"
        history = verified.get("history")
        if isinstance(history, list) and history and isinstance(history[0], Mapping):
            compat = history[0].get("v1Compatibility")
            if isinstance(compat, str):
                try:
                    info = _loads(compat, "schema1 v1Compatibility")
                except DocumentError:
                    info = {}
                if isinstance(info, Mapping) and isinstance(info.get("os"), str) and info["os"]:
                    os_name = info["os"]
        if not isinstance(arch, str) or not arch:
            raise DocumentError("schema1 manifest has no architecture")
        return platforms.normalize(os_name, arch)


def _has_variant(data: object) -> bool:
    return (
        isinstance(data, Mapping) and isinstance(data.get("variant"), str) and bool(data["variant"])
    )


def config_claim(raw: bytes) -> tuple[platforms.Platform, bool]:
    """An image config's platform, and whether it spelled out a variant."""
    body = _loads(raw, "image config")
    if not isinstance(body, Mapping):
        raise DocumentError("image config is not a JSON object")
    platform = platforms.from_json(body)
    if not platform.os or not platform.architecture:
        raise DocumentError("image config has no os or architecture")
    return platform, _has_variant(body)


def config_platform(raw: bytes) -> platforms.Platform:
    return config_claim(raw)[0]


def config_artifact(media_type: str, raw: bytes) -> bool:
    """Whether a config of ``media_type`` (not an image config type) that names no os and
    architecture makes its manifest an artifact (a Helm chart's, say); one that names them is
    an image's, whatever the type says."""
    if media_type in IMAGE_CONFIG_TYPES or not media_type:
        return False
    try:
        config_claim(raw)
    except DocumentError:
        return True
    return False
