"""Nodes reduced to what placement decisions need: platform, labels, taints and readiness."""

from __future__ import annotations

import dataclasses
import functools
import types
from collections.abc import Iterable, Mapping
from typing import Any

from archwarden import platforms
from archwarden.policy import _errors, _fields

__all__ = [
    "FALLBACK_LABELS",
    "JUDGED_LABELS",
    "LABEL_AMD64_LEVEL",
    "LABEL_ARCH",
    "LABEL_BETA_ARCH",
    "LABEL_BETA_OS",
    "LABEL_OS",
    "LABEL_RUNS_386",
    "LABEL_RUNS_ARM32",
    "LABEL_WINDOWS_BUILD",
    "PER_NODE_LABELS",
    "SYNTHETIC_LABELS",
    "Node",
    "Taint",
    "node_from_object",
    "nodes_from_platforms",
]

LABEL_OS = "kubernetes.io/os"
LABEL_ARCH = "kubernetes.io/arch"
# Deprecated since Kubernetes 1.14, yet every kubelet still sets them, and manifests still pin
# with them (flannel's per-arch DaemonSets): synthetic nodes carry them too.
LABEL_BETA_OS = "beta.kubernetes.io/os"
LABEL_BETA_ARCH = "beta.kubernetes.io/arch"
# The labels a synthetic node (nodes_from_platforms) models: its platform, under both names.
# Its host name is made up, and it has none of a real node's other labels (roles, zones,
# disktype), so offline checks cannot judge constraints on those.
SYNTHETIC_LABELS = frozenset({LABEL_OS, LABEL_ARCH, LABEL_BETA_OS, LABEL_BETA_ARCH})
# Set by the kubelet on Windows nodes (e.g. 10.0.20348); Windows images must match the host build.
LABEL_WINDOWS_BUILD = "node.kubernetes.io/windows-build"

# Per node, what its CPU executes beyond its own architecture ("true" or "false"), overriding
# the cluster-wide platforms.arm64RunsArm32 / platforms.amd64Runs386 settings.
LABEL_RUNS_ARM32 = "archwarden.io/runs-arm32"
LABEL_RUNS_386 = "archwarden.io/runs-386"

# The x86-64 microarchitecture level ("v2", "v3", "v4") an amd64 node's runtime pulls for. Without
# it a node is v1, as containerd's default platform is on every amd64 machine (it detects no
# level), so amd64/v2..v4-only images are refused; label nodes whose runtime is set to a level.
LABEL_AMD64_LEVEL = "archwarden.io/amd64-level"
_AMD64_LEVELS = frozenset({"v1", "v2", "v3", "v4"})

# Each per-node override label and the platforms.Fallbacks field it sets. A new override is one
# entry here: Node.fallbacks reads it and placement (policy/_placement.py) pins it.
FALLBACK_LABELS: Mapping[str, str] = types.MappingProxyType(
    {LABEL_RUNS_ARM32: "arm32_on_arm64", LABEL_RUNS_386: "i386_on_amd64"}
)

# Every label a judgement of a node reads, from the most fundamental to the least: nodes equal
# in these are judged alike, and node affinity built over exactly these keeps a pod on the nodes
# judged able to run it (policy/_placement.py).
JUDGED_LABELS: tuple[str, ...] = (
    LABEL_ARCH,
    LABEL_OS,
    LABEL_WINDOWS_BUILD,
    LABEL_AMD64_LEVEL,
    *FALLBACK_LABELS,
)

# Labels whose value is (nearly) unique per node. Nodes differing only in these are one class
# for decisions (see Inventory.classes); a pod naming one is judged node by node.
PER_NODE_LABELS = frozenset({"kubernetes.io/hostname"})

_read = _fields.Reader(_errors.InvalidNode)


def _flag(value: str | None, default: bool) -> bool:
    if value is None:
        return default
    return {"true": True, "false": False}.get(value.strip().lower(), default)


@dataclasses.dataclass(frozen=True)
class Taint:
    key: str
    value: str = ""
    effect: str = ""
    """``NoSchedule``, ``PreferNoSchedule`` or ``NoExecute``."""


@dataclasses.dataclass(frozen=True)
class Node:
    """One node, frozen and hashable so an index (kopf's) can hold it."""

    name: str
    os: str
    """As labelled (``kubernetes.io/os``), else as the kubelet reports it; '' when unknown."""
    arch: str
    """As labelled (``kubernetes.io/arch``), else as the kubelet reports it; '' when unknown."""
    windows_build: str = ""
    variant: str = ""
    """Only synthetic nodes set it: node labels carry no variant (see :attr:`platform`)."""
    labels: tuple[tuple[str, str], ...] = ()
    """Sorted ``(key, value)`` pairs; see :attr:`label_map`."""
    taints: tuple[Taint, ...] = ()
    ready: bool = True
    unschedulable: bool = False

    def __post_init__(self) -> None:
        # Sorted so that equal label sets compare (and hash) equal whatever their source order.
        object.__setattr__(self, "labels", tuple(sorted(self.labels)))

    @functools.cached_property
    def label_map(self) -> Mapping[str, str]:
        return types.MappingProxyType(dict(self.labels))

    @property
    def known(self) -> bool:
        """Whether the node's os and architecture are known; unknown nodes are never judged."""
        return bool(self.os and self.arch)

    def fallbacks(self, defaults: platforms.Fallbacks) -> platforms.Fallbacks:
        """The cluster's fallbacks, as this node's labels override them."""
        labels = self.label_map
        return dataclasses.replace(
            defaults,
            **{
                field: _flag(labels.get(label), getattr(defaults, field))
                for label, field in FALLBACK_LABELS.items()
            },
        )

    @functools.cached_property
    def platform(self) -> platforms.Platform:
        """The node's platform; Windows nodes carry their build as ``os_version``.

        Without a variant, the one containerd assumes (amd64 v1, arm64 v8, arm v7), except that
        an amd64 node labelled :data:`LABEL_AMD64_LEVEL` with a known level has that level (any
        other value is ignored: v1 is the level every amd64 runtime pulls).

        Cached: with thousands of nodes, normalising each on every review dominated warm
        admissions. A node value is frozen, so a change makes a new node (normalised once).
        """
        variant = self.variant
        level = self.label_map.get(LABEL_AMD64_LEVEL, "").strip().lower()
        if not variant and self.arch.lower() == "amd64" and level in _AMD64_LEVELS:
            variant = level
        return platforms.normalize(
            self.os,
            self.arch,
            variant,
            os_version=self.windows_build if self.os.lower() == "windows" else "",
        )


def _taint(raw: object, path: str) -> Taint:
    body = _read.mapping(raw, path)
    return Taint(
        key=_read.string(body.get("key"), f"{path}.key"),
        value=_read.string(body.get("value"), f"{path}.value"),
        effect=_read.string(body.get("effect"), f"{path}.effect"),
    )


def _ready(status: Mapping[str, Any]) -> bool:
    conditions = _read.list(status.get("conditions"), "status.conditions")
    for i, raw in enumerate(conditions):
        condition = _read.mapping(raw, f"status.conditions[{i}]")
        if _read.string(condition.get("type"), f"status.conditions[{i}].type") == "Ready":
            return _read.string(condition.get("status"), f"status.conditions[{i}].status") == "True"
    return False


def node_from_object(obj: Mapping[str, Any]) -> Node:
    """A :class:`Node` from a Kubernetes Node object; raises :class:`InvalidNode`."""
    body = _read.mapping(obj, "node")
    metadata = _read.mapping(body.get("metadata"), "metadata")
    spec = _read.mapping(body.get("spec"), "spec")
    status = _read.mapping(body.get("status"), "status")
    info = _read.mapping(status.get("nodeInfo"), "status.nodeInfo")
    labels = _read.string_map(metadata.get("labels"), "metadata.labels")
    os_name = labels.get(LABEL_OS) or _read.string(
        info.get("operatingSystem"), "status.nodeInfo.operatingSystem"
    )
    build = labels.get(LABEL_WINDOWS_BUILD, "")
    if not build and os_name == "windows":
        # On Windows the kubelet reports the OS build (10.0.20348.2527) as the kernel version.
        build = _read.string(info.get("kernelVersion"), "status.nodeInfo.kernelVersion")
    return Node(
        name=_read.string(metadata.get("name"), "metadata.name"),
        os=os_name,
        arch=labels.get(LABEL_ARCH)
        or _read.string(info.get("architecture"), "status.nodeInfo.architecture"),
        windows_build=build,
        labels=tuple(labels.items()),
        taints=tuple(
            _taint(raw, f"spec.taints[{i}]")
            for i, raw in enumerate(_read.list(spec.get("taints"), "spec.taints"))
        ),
        ready=_ready(status),
        unschedulable=_read.boolean(spec.get("unschedulable"), "spec.unschedulable"),
    )


def nodes_from_platforms(specs: Iterable[str]) -> list[Node]:
    """One ready, untainted synthetic node per ``os[(build)]/arch[/variant]`` (offline checks).

    Repeat a platform to get several nodes of it. Names are ``linux-amd64``, ``linux-amd64-2``...
    Raises :class:`archwarden.platforms.InvalidPlatform` for a malformed specifier.
    """
    nodes: list[Node] = []
    seen: dict[str, int] = {}
    for spec in specs:
        platform = platforms.parse(spec)
        base = platform.canonical.replace("/", "-")
        seen[base] = seen.get(base, 0) + 1
        name = base if seen[base] == 1 else f"{base}-{seen[base]}"
        # The beta labels too: every kubelet still sets them, and manifests still pin by them.
        labels = [
            (LABEL_OS, platform.os),
            (LABEL_ARCH, platform.architecture),
            (LABEL_BETA_OS, platform.os),
            (LABEL_BETA_ARCH, platform.architecture),
            ("kubernetes.io/hostname", name),
        ]
        if platform.os == "windows" and platform.os_version:
            labels.append((LABEL_WINDOWS_BUILD, platform.os_version))
        nodes.append(
            Node(
                name=name,
                os=platform.os,
                arch=platform.architecture,
                variant=platform.variant,
                windows_build=platform.os_version,
                labels=tuple(labels),
            )
        )
    return nodes
