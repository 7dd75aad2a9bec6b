"""The readiness report, computed: pure code over workloads, nodes and image answers.

Per workload: the platforms each image supports, the platforms that run every image, the
cluster's node platforms that could run it (ignoring its own pins) and where its own
scheduling constraints let it run (the policy engine's decision, in audit mode). Then the
summary: how many workloads could move to arm64 (every image has a linux/arm64 variant a node
of that platform runs), and which images block the others, grouped by registry and owner.

Weighted: each workload carries its requests (:mod:`._weights`, read by the caller from the
object), so the summary also says how much CPU, memory and how many replicas could move, are
blocked or unknown, per namespace and overall, and blockers rank by the requests they hold back.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from archwarden import platforms, policy, reference
from archwarden.readiness import _weights

__all__ = [
    "ARM64",
    "REPORTED_KINDS",
    "BlockerGroup",
    "BlockingImage",
    "ImageRow",
    "Readiness",
    "Report",
    "Totals",
    "WorkloadRow",
    "build",
    "top_level",
]

ARM64 = platforms.Platform("linux", "arm64")
ANY = "any (artifact)"
"""The platforms of an OCI artifact mounted as an image volume: it names none, mounts anywhere."""
NOT_RUNNABLE = "an OCI artifact, not an image: it names no platform and has nothing to run"

# What the report lists: workloads as users write them. ReplicaSets and Jobs owned by a
# Deployment or CronJob, and pods owned by any controller, are reported through their owner.
REPORTED_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob", "Pod")


class Readiness(enum.StrEnum):
    READY = "ready"
    """Every image has a platform an arm64 node runs."""
    BLOCKED = "blocked"
    """At least one image has none."""
    UNKNOWN = "unknown"
    """No image is known to block, but some could not be inspected."""


def _controlled(obj: Mapping[str, Any]) -> bool:
    meta = obj.get("metadata")
    owners = meta.get("ownerReferences") if isinstance(meta, Mapping) else None
    return isinstance(owners, list) and any(
        isinstance(o, Mapping) and o.get("controller") for o in owners
    )


def top_level(objects: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The objects of :data:`REPORTED_KINDS` that no controller owns (a Deployment's
    ReplicaSets, a CronJob's Jobs and every controller's Pods are left out)."""
    return [o for o in objects if o.get("kind") in REPORTED_KINDS and not _controlled(o)]


def _owner(image: str) -> tuple[str, str]:
    """(registry, owner) of an image: the naming domain and the first path component
    (``library`` for Docker Hub's official images; '' for a one-component path)."""
    try:
        ref = reference.parse(image)
    except reference.InvalidReference:
        return "", ""
    owner, slash, _ = ref.path.partition("/")
    return ref.domain, owner if slash else ""


@dataclasses.dataclass(frozen=True)
class ImageRow:
    image: str
    registry: str
    owner: str
    platforms: tuple[str, ...] = ()
    """Canonical, sorted; () when the image could not be inspected."""
    error: str = ""
    arm64: bool | None = None
    """Whether an arm64 node runs it; None when unknown."""

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "image": self.image,
            "registry": self.registry,
            "owner": self.owner,
            "arm64": self.arm64,
        }
        if self.error:
            data["error"] = self.error
        else:
            data["platforms"] = list(self.platforms)
        return data


@dataclasses.dataclass(frozen=True)
class WorkloadRow:
    kind: str
    namespace: str
    name: str
    images: tuple[ImageRow, ...]
    common_platforms: tuple[str, ...]
    """Platforms that run every image; () when none does or an image is unknown."""
    runs_on: tuple[str, ...]
    """The cluster's node platforms that run every image, whatever the workload's pins."""
    schedulable_on: tuple[str, ...]
    """Node platforms its own selectors, affinity and tolerations allow that run it."""
    verdict: str
    """The engine's reason (Compatible, ArchitectureMismatch, ...)."""
    message: str
    readiness: Readiness
    weight: _weights.Weight = _weights.NOTHING
    """Its requests and replicas; none when the caller gave none."""

    @property
    def key(self) -> str:
        return "/".join(p for p in (self.namespace, self.kind, self.name) if p)

    @property
    def blocking_images(self) -> tuple[str, ...]:
        return tuple(i.image for i in self.images if i.arm64 is False)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "namespace": self.namespace,
            "name": self.name,
            "images": [i.to_json() for i in self.images],
            "platforms": list(self.common_platforms),
            "runsOn": list(self.runs_on),
            "schedulableOn": list(self.schedulable_on),
            "verdict": self.verdict,
            "message": self.message,
            "arm64": str(self.readiness),
            "blockingImages": list(self.blocking_images),
            "weight": _weight_json(self.weight),
        }


def _cores(millis: int) -> float:
    """Millicores as cores for JSON (``250`` is ``0.25``: a thousandth is exact enough)."""
    return millis / 1000


def _weight_json(weight: _weights.Weight) -> dict[str, Any]:
    data: dict[str, Any] = {
        "replicas": weight.replicas,
        "podRequests": {"cpu": _cores(weight.cpu_millis), "memory": weight.memory_bytes},
        "requests": {
            "cpu": _cores(weight.total_cpu_millis),
            "memory": weight.total_memory_bytes,
        },
    }
    if weight.notes:
        data["notes"] = list(weight.notes)
    return data


@dataclasses.dataclass(frozen=True)
class Totals:
    """What a set of workloads holds: their count, replicas and requests."""

    workloads: int = 0
    replicas: int = 0
    cpu_millis: int = 0
    memory_bytes: int = 0

    @classmethod
    def of(cls, weights: Iterable[_weights.Weight]) -> Totals:
        listed = list(weights)
        cpu, memory, replicas = _weights.sum_of(listed)
        return cls(len(listed), replicas, cpu, memory)

    def to_json(self) -> dict[str, Any]:
        return {
            "workloads": self.workloads,
            "replicas": self.replicas,
            "cpu": _cores(self.cpu_millis),
            "memory": self.memory_bytes,
        }

    @property
    def rank(self) -> tuple[int, int, int, int]:
        """Sorts most held first: CPU, then memory, then replicas, then workloads."""
        return (-self.cpu_millis, -self.memory_bytes, -self.replicas, -self.workloads)


@dataclasses.dataclass(frozen=True)
class BlockingImage:
    image: str
    platforms: tuple[str, ...]
    workloads: tuple[str, ...]
    """Keys (``namespace/Kind/name``) of the workloads it keeps off arm64, sorted."""
    held: Totals = Totals()
    """What those workloads hold: the requests this image keeps off arm64."""


@dataclasses.dataclass(frozen=True)
class BlockerGroup:
    registry: str
    owner: str
    images: tuple[BlockingImage, ...]
    """Most held back first."""
    held: Totals = Totals()
    """What the workloads its images block hold (each workload once)."""

    @property
    def workloads(self) -> tuple[str, ...]:
        return tuple(sorted({w for i in self.images for w in i.workloads}))

    def to_json(self) -> dict[str, Any]:
        return {
            "registry": self.registry,
            "owner": self.owner,
            "workloads": len(self.workloads),
            "images": [
                {
                    "image": i.image,
                    "platforms": list(i.platforms),
                    "workloads": list(i.workloads),
                    "heldBack": i.held.to_json(),
                }
                for i in self.images
            ],
            "heldBack": self.held.to_json(),
        }


@dataclasses.dataclass(frozen=True)
class Report:
    node_platforms: tuple[tuple[str, int], ...]
    """(canonical platform, node count), sorted by platform."""
    workloads: tuple[WorkloadRow, ...]
    blockers: tuple[BlockerGroup, ...]
    """Most held back first (CPU, memory, replicas, workloads), then by registry and owner."""

    def count(self, readiness: Readiness) -> int:
        return sum(1 for w in self.workloads if w.readiness is readiness)

    @property
    def namespaces(self) -> tuple[str, ...]:
        return tuple(sorted({w.namespace for w in self.workloads}))

    def totals(self, readiness: Readiness, namespace: str | None = None) -> Totals:
        """What the workloads in ``readiness`` hold, in ``namespace`` or overall."""
        return Totals.of(
            w.weight
            for w in self.workloads
            if w.readiness is readiness and (namespace is None or w.namespace == namespace)
        )

    def _weights_json(self) -> dict[str, Any]:
        def by_state(namespace: str | None) -> dict[str, Any]:
            return {str(s): self.totals(s, namespace).to_json() for s in Readiness}

        return {
            "overall": by_state(None),
            "namespaces": [{"namespace": n, **by_state(n)} for n in self.namespaces],
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "nodePlatforms": [{"platform": p, "nodes": n} for p, n in self.node_platforms],
            "summary": {
                "workloads": len(self.workloads),
                "arm64Ready": self.count(Readiness.READY),
                "arm64Blocked": self.count(Readiness.BLOCKED),
                "arm64Unknown": self.count(Readiness.UNKNOWN),
            },
            "workloads": [w.to_json() for w in self.workloads],
            "blockers": [g.to_json() for g in self.blockers],
            "weights": self._weights_json(),
        }


def _runs(
    node: platforms.Platform,
    fallbacks: platforms.Fallbacks,
    image_platforms: Sequence[platforms.Platform],
) -> bool:
    return any(platforms.node_can_run(node, p, fallbacks) for p in image_platforms)


def build(
    workloads: Sequence[policy.Workload],
    nodes: Sequence[policy.Node],
    answers: Mapping[str, policy.ImageAnswer],
    *,
    fallbacks: platforms.Fallbacks = platforms.DEFAULT_FALLBACKS,
    platform_taints: Sequence[policy.PlatformTaint] = policy.DEFAULT_PLATFORM_TAINTS,
    weights: Mapping[tuple[str, str, str], _weights.Weight] | None = None,
) -> Report:
    """The report over ``workloads``; ``answers`` holds every image they use.

    ``weights`` holds each workload's requests by (namespace, kind, name) (:func:`weigh`
    of its object); a workload without one weighs nothing.

    ``platform_taints`` (``platforms.taints``) decides, as in admission, which architecture
    taints a pod is judged to tolerate: where it is schedulable today reads them.
    """
    counts: dict[platforms.Platform, int] = {}
    kinds: dict[tuple[platforms.Platform, platforms.Fallbacks], None] = {}
    for node in nodes:
        counts[node.platform] = counts.get(node.platform, 0) + 1
        kinds[(node.platform, node.fallbacks(fallbacks))] = None
    arm64_fallbacks = fallbacks  # a synthetic arm64 node: the cluster-wide setting
    # Judged by node class, as the webhook does: node by node, 2,000 workloads on 5,000 nodes
    # took minutes.
    inventory = policy.Inventory()
    for node in nodes:
        inventory.apply(node.name, node)
    rows: list[WorkloadRow] = []
    blocking: dict[str, set[str]] = {}
    for workload in workloads:
        images: list[ImageRow] = []
        known: list[tuple[platforms.Platform, ...]] = []
        for image in workload.template.images:
            registry_host, owner = _owner(image)
            answer = answers.get(image, policy.ImageFailure("not inspected"))
            if isinstance(answer, policy.ImageFailure):
                images.append(ImageRow(image, registry_host, owner, error=answer.error))
                continue
            found = tuple(answer)
            if not found and image in workload.template.volume_only_images:
                # An artifact mounted as an image volume: any node mounts it.
                images.append(ImageRow(image, registry_host, owner, platforms=(ANY,), arm64=True))
                continue
            if not found:
                images.append(ImageRow(image, registry_host, owner, error=NOT_RUNNABLE))
                continue
            known.append(found)
            images.append(
                ImageRow(
                    image,
                    registry_host,
                    owner,
                    platforms=tuple(platforms.format_all(found)),
                    arm64=_runs(ARM64, arm64_fallbacks, found),
                )
            )
        complete = not any(i.error for i in images)
        runs_on = sorted(
            {
                node.canonical
                for node, node_fallbacks in kinds
                if complete and all(_runs(node, node_fallbacks, f) for f in known)
            }
        )
        decision = policy.decide(
            workload,
            inventory,
            answers,
            mode=policy.Mode.AUDIT,
            failure_policy=policy.FailurePolicy.OPEN,
            fallbacks=fallbacks,
            platform_taints=tuple(platform_taints),
        )
        if any(i.arm64 is False for i in images):
            readiness = Readiness.BLOCKED
        elif complete:
            readiness = Readiness.READY
        else:
            readiness = Readiness.UNKNOWN
        row = WorkloadRow(
            kind=workload.kind,
            namespace=workload.namespace,
            name=workload.name,
            images=tuple(images),
            common_platforms=decision.pod_platforms if complete else (),
            runs_on=tuple(runs_on),
            # With an image unknown the engine (failing open) would name nodes it cannot vouch for.
            schedulable_on=decision.node_platforms if complete else (),
            verdict=str(decision.reason),
            message=decision.message,
            readiness=readiness,
            weight=(weights or {}).get(
                (workload.namespace, workload.kind, workload.name), _weights.NOTHING
            ),
        )
        rows.append(row)
        for image in row.blocking_images:
            blocking.setdefault(image, set()).add(row.key)
    rows.sort(key=lambda r: (r.namespace, r.kind, r.name))
    return Report(
        node_platforms=tuple(sorted((p.canonical, n) for p, n in counts.items())),
        workloads=tuple(rows),
        blockers=_group(blocking, answers, {r.key: r.weight for r in rows}),
    )


def _group(
    blocking: Mapping[str, set[str]],
    answers: Mapping[str, policy.ImageAnswer],
    weights: Mapping[str, _weights.Weight],
) -> tuple[BlockerGroup, ...]:
    groups: dict[tuple[str, str], list[BlockingImage]] = {}
    for image, keys in blocking.items():
        answer = answers.get(image)
        found = () if answer is None or isinstance(answer, policy.ImageFailure) else answer
        groups.setdefault(_owner(image), []).append(
            BlockingImage(
                image,
                tuple(platforms.format_all(found)),
                tuple(sorted(keys)),
                Totals.of(weights[k] for k in keys),
            )
        )
    result = []
    for (registry, owner), images in groups.items():
        images.sort(key=lambda i: (i.held.rank, i.image))
        keys = {k for i in images for k in i.workloads}
        result.append(
            BlockerGroup(registry, owner, tuple(images), Totals.of(weights[k] for k in keys))
        )
    result.sort(key=lambda g: (g.held.rank, g.registry, g.owner))
    return tuple(result)
