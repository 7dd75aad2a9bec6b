"""Platforms (os/architecture/variant, plus os.version for Windows) with containerd semantics.

Normalisation follows containerd/platforms ``Normalize``; matching follows its ``Only``
matcher, which is what a node's container runtime uses to pick an image from an index.
A platform's canonical string is ``os/arch[/variant]``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "ALL_FALLBACKS",
    "DEFAULT_FALLBACKS",
    "Fallbacks",
    "InvalidPlatform",
    "Platform",
    "format_all",
    "node_can_run",
    "normalize",
    "normalize_node",
    "parse",
    "parse_node",
]

# The first Windows build whose hosts run images from older builds (Windows Server 2022).
# Older hosts need an exact build match (process isolation); see containerd/platforms.
WINDOWS_LTSC2022_BUILD = 20348


class InvalidPlatform(ValueError):
    """A platform specifier that cannot be parsed."""


@dataclasses.dataclass(frozen=True, order=True)
class Fallbacks:
    """Which of containerd's cross-architecture fallbacks a node's CPU can really execute.

    containerd pulls arm/v8..v5 images on arm64 and 386 on amd64, but whether they run is the
    CPU's affair: AArch32 is optional in ARMv8 and absent from Graviton4, Google Axion, Azure
    Cobalt and AmpereOne, so arm64 running 32-bit arm is off unless configured. Every amd64
    CPU still executes 386 code, so that one is on.
    """

    arm32_on_arm64: bool = False
    i386_on_amd64: bool = True


DEFAULT_FALLBACKS = Fallbacks()
ALL_FALLBACKS = Fallbacks(arm32_on_arm64=True, i386_on_amd64=True)
"""containerd's matcher, unrestricted."""


@dataclasses.dataclass(frozen=True, order=True)
class Platform:
    """One normalised platform. Build instances with :func:`normalize` or :func:`parse`."""

    os: str
    architecture: str
    variant: str = ""
    os_version: str = ""
    """Windows only: e.g. ``10.0.20348.1129``; ignored when comparing Linux platforms."""
    os_features: tuple[str, ...] = ()
    """e.g. ``("win32k",)``; a candidate's features must be a subset of the wanted ones."""

    def __str__(self) -> str:
        return self.canonical

    @property
    def canonical(self) -> str:
        """``os/arch[/variant]``: the form used in messages, annotations and ``--json``."""
        parts = [self.os, self.architecture]
        if self.variant:
            parts.append(self.variant)
        return "/".join(parts)

    @property
    def detailed(self) -> str:
        """The canonical form plus os.version and os.features, for display."""
        extras = []
        if self.os_version:
            extras.append(f"os.version={self.os_version}")
        if self.os_features:
            extras.append("os.features=" + ",".join(self.os_features))
        return self.canonical + (f" [{' '.join(extras)}]" if extras else "")

    @property
    def is_unknown(self) -> bool:
        return self.os == "unknown" or self.architecture == "unknown"

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"os": self.os, "architecture": self.architecture}
        if self.variant:
            data["variant"] = self.variant
        if self.os_version:
            data["os.version"] = self.os_version
        if self.os_features:
            data["os.features"] = list(self.os_features)
        return data


def _normalize_arch(arch: str, variant: str) -> tuple[str, str]:
    arch, variant = arch.lower(), variant.lower()
    if arch == "i386":
        return "386", ""
    if arch in ("x86_64", "x86-64", "amd64"):
        return "amd64", "" if variant == "v1" else variant
    if arch in ("aarch64", "arm64"):
        if variant in ("8", "v8", "v8.0"):
            return "arm64", ""
        if variant in ("9", "9.0", "v9.0"):
            return "arm64", "v9"
        return "arm64", variant
    if arch == "armhf":
        return "arm", "v7"
    if arch == "armel":
        return "arm", "v6"
    if arch == "arm":
        if variant in ("", "7"):
            return "arm", "v7"
        if variant in ("5", "6", "8"):
            return "arm", "v" + variant
        return "arm", variant
    return arch, variant


def _normalize_os(os_name: str) -> str:
    os_name = os_name.lower()
    return "darwin" if os_name == "macos" else os_name


def normalize(
    os: str,
    architecture: str,
    variant: str = "",
    os_version: str = "",
    os_features: Iterable[str] = (),
) -> Platform:
    """Build a :class:`Platform` applying containerd's normalisation."""
    arch, var = _normalize_arch(architecture or "", variant or "")
    return Platform(
        os=_normalize_os(os or ""),
        architecture=arch,
        variant=var,
        os_version=os_version or "",
        os_features=tuple(sorted(set(os_features or ()))),
    )


def normalize_node(os: str, architecture: str, variant: str = "", os_version: str = "") -> Platform:
    """A node's platform: :func:`normalize`, except that an explicit arm64 v8 stays ``v8``.

    containerd normalises arm64/v8 to arm64 with no variant and matches that as v8. A node's
    empty variant means something else here: node labels carry no variant, so it is unknown
    and accepts any (see :func:`node_can_run`). A node written as arm64/v8 must keep meaning
    v8, or it would accept arm64/v9 images.
    """
    platform = normalize(os, architecture, variant, os_version)
    if platform.architecture == "arm64" and not platform.variant and variant:
        return dataclasses.replace(platform, variant="v8")
    return platform


def from_json(data: Mapping[str, Any]) -> Platform:
    """A platform from an OCI ``platform`` object or an image config (same key names)."""

    def text(key: str) -> str:
        value = data.get(key)
        return value if isinstance(value, str) else ""

    features = data.get("os.features")
    return normalize(
        text("os"),
        text("architecture"),
        text("variant"),
        text("os.version"),
        [f for f in features if isinstance(f, str)] if isinstance(features, list) else (),
    )


def parse(spec: str) -> Platform:
    """Parse ``os/arch[/variant]`` (or a bare ``arch``, meaning linux) and normalise it."""
    parts = spec.strip().split("/")
    if not spec.strip() or len(parts) > 3 or any(not p for p in parts):
        raise InvalidPlatform(f"invalid platform {spec!r}: expected os/arch[/variant]")
    if len(parts) == 1:
        return normalize("linux", parts[0])
    return normalize(parts[0], parts[1], parts[2] if len(parts) == 3 else "")


def parse_node(spec: str) -> Platform:
    """Parse a node's ``os/arch[/variant]`` (``--platforms``), normalised by
    :func:`normalize_node`."""
    platform = parse(spec)
    parts = spec.strip().split("/")
    if len(parts) == 3:
        return normalize_node(parts[0], parts[1], parts[2])
    return platform


def _amd64_level(variant: str) -> int:
    if variant in ("", "v1"):
        return 1
    if len(variant) == 2 and variant[0] == "v" and variant[1].isdigit():
        return int(variant[1])
    return 99


def _arm_level(variant: str) -> int | None:
    if len(variant) == 2 and variant[0] == "v" and variant[1].isdigit():
        return int(variant[1])
    return None


def _arm64_version(variant: str) -> tuple[int, int] | None:
    """``""`` (normalised v8) -> (8, 0); ``v8.2`` -> (8, 2); ``v9`` -> (9, 0); else None."""
    if not variant:
        return 8, 0
    major, _, minor = variant.removeprefix("v").partition(".")
    if not variant.startswith("v") or not major.isdigit() or not (minor.isdigit() or not minor):
        return None
    return int(major), int(minor or 0)


def _arm64_runs(node_variant: str, image_variant: str) -> bool:
    """containerd's arm64 vector: v8.x runs v8.0..v8.x; v9.x also runs v8.0..v8.min(x+5, 9)."""
    node, image = _arm64_version(node_variant), _arm64_version(image_variant)
    if node is None or image is None or node[0] not in (8, 9):
        return node_variant == image_variant
    if image[0] == node[0]:
        return image[1] <= node[1]
    return node[0] == 9 and image[0] == 8 and image[1] <= min(node[1] + 5, 9)


def _windows_build(version: str) -> tuple[int, int, int] | None:
    parts = version.split(".")
    try:
        major, minor, build = (int(p) for p in parts[:3])
    except ValueError:
        return None
    return major, minor, build


def _windows_version_ok(host: str, image: str) -> bool:
    """Windows images only run on hosts whose build accepts them (process isolation)."""
    if not image or not host:
        return True
    host_v, image_v = _windows_build(host), _windows_build(image)
    if host_v is None or image_v is None:
        return True
    if host_v[:2] != image_v[:2]:
        return False
    if host_v[2] < WINDOWS_LTSC2022_BUILD:
        return host_v[2] == image_v[2]
    return WINDOWS_LTSC2022_BUILD <= image_v[2] <= host_v[2]


def node_can_run(node: Platform, image: Platform, fallbacks: Fallbacks = DEFAULT_FALLBACKS) -> bool:
    """Whether a node of platform ``node`` can run an image built for ``image``.

    A node's labels give os and arch but no variant, so an unknown node variant accepts any
    variant of its own architecture, except on 32-bit arm, where ``kubernetes.io/arch=arm``
    nodes are v7 (Kubernetes publishes arm/v7 binaries). Fallbacks follow containerd's
    ``Only``: amd64 runs 386, arm/vN runs arm/v5..vN, arm64 runs arm/v8..v5, arm64/v8.x runs
    v8.0..v8.x and arm64/v9.x also runs v9.0..v9.x and v8.0..v8.min(x+5, 9). The two
    cross-architecture fallbacks apply only as far as ``fallbacks`` allows (see
    :class:`Fallbacks`).
    """
    if node.os != image.os:
        return False
    if node.os == "windows" and not _windows_version_ok(node.os_version, image.os_version):
        return False
    # Only Windows images carry meaningful os.features (win32k); Linux runtimes ignore them.
    if (
        node.os == "windows"
        and image.os_features
        and not set(image.os_features) <= set(node.os_features)
    ):
        return False
    if node.architecture == image.architecture:
        if node.architecture == "arm":
            node_level = _arm_level(node.variant or "v7")
            image_level = _arm_level(image.variant)
            if node_level is None or image_level is None:
                return node.variant == image.variant
            return image_level <= node_level
        if node.architecture == "amd64" and node.variant:
            return _amd64_level(image.variant) <= _amd64_level(node.variant)
        if node.architecture == "arm64" and node.variant:
            return _arm64_runs(node.variant, image.variant)
        if node.variant:
            return image.variant in ("", node.variant)
        return True
    if node.architecture == "amd64" and image.architecture == "386":
        return fallbacks.i386_on_amd64
    if node.architecture == "arm64" and image.architecture == "arm" and fallbacks.arm32_on_arm64:
        level = _arm_level(image.variant)
        return level is not None and level <= 8
    return False


def format_all(platforms: Iterable[Platform]) -> list[str]:
    """Sorted, de-duplicated canonical strings."""
    return sorted({p.canonical for p in platforms})
