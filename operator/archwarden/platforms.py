"""Platforms (os/architecture/variant, plus os.version for Windows) with containerd semantics.

Normalisation follows containerd/platforms ``Normalize``, parsing its ``Parse``, and matching
its ``Only`` matcher, which is what a node's container runtime uses to pick an image from an
index (read at github.com/containerd/platforms v1.0.0-rc.4; tests/unit/test_platforms.py ports
its tables).
A platform's canonical string is ``os/arch[/variant]``.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import urllib.parse
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "ALL_FALLBACKS",
    "DEFAULT_FALLBACKS",
    "Fallbacks",
    "InvalidPlatform",
    "Platform",
    "candidates",
    "format_all",
    "node_can_run",
    "normalize",
    "parse",
]

# Windows LTSC builds with a stable container ABI (containerd/platforms
# platform_windows_compat.go, compatLTSCReleases): a host older than LTSC 2022 runs only its own
# build; a newer host runs builds from the latest of these strictly older than it (or LTSC 2022
# itself) up to its own (Server 2025 runs 20348..26100, a host above 26100 runs 26100..itself).
WINDOWS_LTSC2019_BUILD = 17763
WINDOWS_LTSC2022_BUILD = 20348
WINDOWS_LTSC2025_BUILD = 26100
_WINDOWS_COMPAT_LTSC = (WINDOWS_LTSC2022_BUILD, WINDOWS_LTSC2025_BUILD)

# containerd's Parse: the os component (with optional "(version+feature...)") and the others.
_OS_RE = re.compile(r"([A-Za-z0-9_-]+)(?:\(([A-Za-z0-9_.%-]*)((?:\+[A-Za-z0-9_.%-]+)*)\))?")
_COMPONENT_RE = re.compile(r"[A-Za-z0-9_.-]+")
# Go's strconv.Atoi syntax, which containerd uses to read amd64 and arm levels ("v3" -> 3).
_ATOI_RE = re.compile(r"[+-]?[0-9]+")

# containerd/platforms database.go isKnownOS / isKnownArch: a one-word specifier is an OS if it
# names one, else an architecture if it names one, else an error.
_KNOWN_OSES = frozenset(
    [
        "aix",
        "android",
        "darwin",
        "dragonfly",
        "freebsd",
        "hurd",
        "illumos",
        "ios",
        "js",
        "linux",
        "nacl",
        "netbsd",
        "openbsd",
        "plan9",
        "solaris",
        "windows",
        "zos",
    ]
)
_KNOWN_ARCHES = frozenset(
    [
        "386",
        "amd64",
        "amd64p32",
        "arm",
        "armbe",
        "arm64",
        "arm64be",
        "ppc64",
        "ppc64le",
        "loong64",
        "mips",
        "mipsle",
        "mips64",
        "mips64le",
        "mips64p32",
        "mips64p32le",
        "ppc",
        "riscv",
        "riscv64",
        "s390",
        "s390x",
        "sparc",
        "sparc64",
        "wasm",
    ]
)

# The only os.feature containerd ignores when matching Windows images (windowsStripFeaturesMatcher
# in platforms.go, v1.0.0-rc.4; earlier versions ignored every feature).
_WINDOWS_IGNORED_FEATURE = "win32k"


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


def _refuse(spec: str, reason: str) -> InvalidPlatform:
    return InvalidPlatform(f"invalid platform {spec!r}: {reason}; expected os/arch[/variant]")


def _decode_option(spec: str, value: str) -> str:
    """containerd's decodeOSOption: ``%XX`` escapes (url.PathUnescape), refusing broken ones."""
    if "%" in value and re.search(r"%(?![0-9A-Fa-f]{2})", value):
        raise _refuse(spec, f"bad escape in {value!r}")
    return urllib.parse.unquote(value)


def parse(spec: str) -> Platform:
    """containerd's ``Parse``, normalised: ``os[(version[+feature...])]/arch[/variant]``, or a
    bare architecture (meaning linux).

    Each component must be what containerd accepts (letters, digits, ``_ . -``; the os may
    carry ``(10.0.20348+win32k)``). A bare OS (``linux``) is refused: containerd would supply
    the architecture of the machine parsing it, which says nothing about a node.
    """
    text = spec.strip()
    if not text:
        raise _refuse(spec, "empty")
    if "*" in text:
        raise _refuse(spec, "wildcards are not supported")
    parts = text.split("/", 3)
    if len(parts) > 3:
        raise _refuse(spec, "too many components")
    head = _OS_RE.fullmatch(parts[0])
    if head is None:
        raise _refuse(spec, f"{parts[0]!r} is not an os")
    for part in parts[1:]:
        if not _COMPONENT_RE.fullmatch(part):
            raise _refuse(spec, f"{part!r} is not an architecture or variant")
    os_name, options, features = head.group(1), head.group(2) or "", head.group(3) or ""
    if len(parts) == 1:
        if _normalize_os(os_name) in _KNOWN_OSES:
            raise _refuse(spec, "an os without an architecture")
        arch, variant = _normalize_arch(text, "")
        if arch not in _KNOWN_ARCHES:
            raise _refuse(spec, "unknown os or architecture")
        # containerd takes the parsing machine's os here; archwarden's nodes are linux.
        return normalize("linux", arch, variant)
    return normalize(
        os_name,
        parts[1],
        parts[2] if len(parts) == 3 else "",
        _decode_option(spec, options),
        [_decode_option(spec, f) for f in features.split("+") if f],
    )


_MAX_LEVEL = 64
"""Levels a vector spells out below a node's amd64 or arm level: containerd has no bound, but
no CPU level comes near it, and a label or flag saying v999999999 must not build a huge list."""

# compare.go arm64variantToVersion: each arm64 variant and the (major, highest minor) ranges it
# runs, best first. Any other variant (v8.10, v9.8, v10) matches nothing at all in containerd.
_ARM64_VERSIONS: Mapping[str, tuple[tuple[int, int], ...]] = {
    "v8": ((8, 0),),
    **{f"v8.{minor}": ((8, minor),) for minor in range(10)},
    "v9": ((9, 0), (8, 5)),
    **{f"v9.{minor}": ((9, minor), (8, min(minor + 5, 9))) for minor in range(8)},
}


def _level(variant: str) -> int | None:
    """containerd's ``strconv.Atoi(strings.TrimPrefix(variant, "v"))``; None if not a number."""
    number = variant.removeprefix("v")
    return int(number) if _ATOI_RE.fullmatch(number) else None


@functools.lru_cache(maxsize=4096)
def candidates(node: Platform, fallbacks: Fallbacks = ALL_FALLBACKS) -> tuple[Platform, ...]:
    """What a node's runtime pulls, best first: containerd's ``Only`` vector (compare.go
    platformVector) over the node's platform, each entry normalised as its matcher does, less
    the cross-architecture fallbacks ``fallbacks`` says the CPU cannot execute.

    A node without a variant is what containerd's default platform says on that machine:
    amd64 is level v1 (containerd detects no amd64 level), arm64 is v8 (/proc/cpuinfo says 8
    on ARMv9 CPUs too) and arm is v7.
    """

    def entry(arch: str, variant: str) -> Platform:
        return normalize(node.os, arch, variant, node.os_version, node.os_features)

    def lower(arch: str, level: int | None, floor: int) -> list[Platform]:
        if level is None or level <= floor:
            return []
        return [entry(arch, f"v{n}") for n in range(min(level - 1, _MAX_LEVEL), floor - 1, -1)]

    if node.architecture == "amd64":
        vector = [entry("amd64", node.variant), *lower("amd64", _level(node.variant), 1)]
        if fallbacks.i386_on_amd64:
            vector.append(entry("386", ""))
        return tuple(vector)
    if node.architecture == "arm":
        return (entry("arm", node.variant), *lower("arm", _level(node.variant), 5))
    if node.architecture == "arm64":
        versions = _ARM64_VERSIONS.get(node.variant or "v8")
        if versions is None:
            return ()
        vector = [
            entry("arm64", f"v{major}.{minor}" if minor else f"v{major}")
            for major, top in versions
            for minor in range(top, -1, -1)
        ]
        if fallbacks.arm32_on_arm64:
            # containerd: every arm64/v8.x and v9.x runs arm/v8 and below, down to v5.
            vector += [entry("arm", "v8"), *lower("arm", 8, 5)]
        return tuple(vector)
    return (entry(node.architecture, node.variant),)


def _windows_version(text: str) -> tuple[int, int, int]:
    """containerd's getWindowsOSVersion: major.minor.build as uint8.uint8.uint16, else 0.0.0."""
    if text.count(".") < 2:
        return 0, 0, 0
    fields = text.split(".")[:3]
    numbers = [int(f) if f.isascii() and f.isdigit() else -1 for f in fields]
    if any(n < 0 or n >= limit for n, limit in zip(numbers, (256, 256, 65536), strict=True)):
        return 0, 0, 0
    return numbers[0], numbers[1], numbers[2]


def _windows_version_ok(host: str, image: str) -> bool:
    """containerd's windowsVersionMatcher (platform_windows_compat.go): an image without a
    version, or a host whose version is unknown, matches; else see _WINDOWS_COMPAT_LTSC."""
    host_v = _windows_version(host)
    if host_v == (0, 0, 0) or not image:
        return True
    image_v = _windows_version(image)
    if host_v[:2] != image_v[:2]:
        return False
    if host_v[2] < WINDOWS_LTSC2022_BUILD:
        return host_v[2] == image_v[2]
    oldest = next(
        (ltsc for ltsc in reversed(_WINDOWS_COMPAT_LTSC) if host_v[2] > ltsc),
        WINDOWS_LTSC2022_BUILD,
    )
    return oldest <= image_v[2] <= host_v[2]


def _matches(wanted: Platform, image: Platform) -> bool:
    """containerd's NewMatcher(wanted).Match(image), both normalised."""
    if (wanted.os, wanted.architecture, wanted.variant) != (
        image.os,
        image.architecture,
        image.variant,
    ):
        return False
    if wanted.os != "windows":
        # Deliberately not containerd's rule: since v1.0.0-rc.3 its matcher wants a Linux
        # image's os.features on the node too, but no Linux node reports any, runtimes on older
        # versions ignore them, and they are not used on Linux in practice.
        return True
    if not _windows_version_ok(wanted.os_version, image.os_version):
        return False
    return set(image.os_features) - {_WINDOWS_IGNORED_FEATURE} <= set(wanted.os_features)


def node_can_run(node: Platform, image: Platform, fallbacks: Fallbacks = DEFAULT_FALLBACKS) -> bool:
    """Whether a node of platform ``node`` can run an image built for ``image``: whether the
    image matches one of the node's :func:`candidates`, as containerd's ``Only`` matcher
    decides, with only the cross-architecture fallbacks ``fallbacks`` allows (see
    :class:`Fallbacks`).
    """
    return node.os == image.os and any(
        _matches(wanted, image) for wanted in candidates(node, fallbacks)
    )


def format_all(platforms: Iterable[Platform]) -> list[str]:
    """Sorted, de-duplicated canonical strings."""
    return sorted({p.canonical for p in platforms})
