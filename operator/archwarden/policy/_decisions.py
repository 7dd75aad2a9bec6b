"""Can a workload's pods run on the nodes they may be scheduled to? Decide, per mode.

The work splits in two: :func:`_assess` finds the facts (candidate nodes, which of them can
run every image, the message that explains a mismatch), independent of configuration;
:func:`decide` applies the mode and failure policy to them.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import TypeAlias, TypeVar

from archwarden import platforms, reasons
from archwarden.policy import (
    _capacity,
    _inventory,
    _messages,
    _nodes,
    _pins,
    _placement,
    _scheduling,
    _workloads,
)

__all__ = [
    "Decision",
    "FailurePolicy",
    "ImageAnswer",
    "ImageFailure",
    "Mode",
    "Nodes",
    "Placement",
    "Reason",
    "decide",
    "settled",
    "stranded",
]

K = TypeVar("K", bound=Hashable)


class Mode(enum.StrEnum):
    ENFORCE = "enforce"
    """Deny workloads no candidate node can run."""
    WARN = "warn"
    """Allow them, with the explanation as kubectl warnings."""
    AUDIT = "audit"
    """Allow them silently; the decision still records the mismatch (for Events and metrics)."""


class FailurePolicy(enum.StrEnum):
    """What to do, in enforce mode, when an image could not be inspected."""

    OPEN = "open"
    CLOSED = "closed"


class Reason(enum.StrEnum):
    COMPATIBLE = "Compatible"
    ARCHITECTURE_MISMATCH = reasons.ARCHITECTURE_MISMATCH
    """No candidate node can run every image."""
    ARCHITECTURE_PIN_MISMATCH = "ArchitecturePinMismatch"
    """As above, and the user's own arch pin (nodeSelector or affinity) is what contradicts."""
    PARTIAL_ARCHITECTURE_MISMATCH = "PartialArchitectureMismatch"
    """A DaemonSet whose images some, not all, of its nodes cannot run."""
    NO_CANDIDATE_NODES = "NoCandidateNodes"
    PROVISIONABLE = reasons.PROVISIONABLE_CAPACITY
    """No existing node can run every image, but capacity an autoscaler can add can."""
    IMAGE_INSPECTION_FAILED = reasons.IMAGE_INSPECTION_FAILED
    SKIPPED = "Skipped"

    @property
    def is_mismatch(self) -> bool:
        """Whether this is in the ArchitectureMismatch family (for Events and metrics)."""
        return self in _MISMATCH_FAMILY


_MISMATCH_FAMILY = frozenset(
    {
        Reason.ARCHITECTURE_MISMATCH,
        Reason.ARCHITECTURE_PIN_MISMATCH,
        Reason.PARTIAL_ARCHITECTURE_MISMATCH,
    }
)


@dataclasses.dataclass(frozen=True)
class ImageFailure:
    """An image whose platforms could not be found out."""

    error: str
    """The registry's error, shown to the user."""


ImageAnswer: TypeAlias = Sequence[platforms.Platform] | ImageFailure
"""Per image: its platforms (``ImagePlatforms.platforms``) or why they are unknown."""


Placement = _placement.Placement


@dataclasses.dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: Reason
    message: str = ""
    """The full explanation; '' when compatible."""
    warnings: tuple[str, ...] = ()
    """kubectl warnings, each at most ~120 characters where possible."""
    mismatch: bool = False
    """An incompatibility was found, even if allowed (warn, audit, DaemonSet partial)."""
    compatible_classes: tuple[_inventory.NodeClass, ...] = dataclasses.field(
        default=(), compare=False, repr=False
    )
    """Candidate nodes, by class, that can run every (inspected) image."""
    incompatible_classes: tuple[_inventory.NodeClass, ...] = dataclasses.field(
        default=(), compare=False, repr=False
    )
    """Candidate nodes, by class, that cannot."""
    pod_platforms: tuple[str, ...] = ()
    """Canonical platforms that can run every image (``archwarden.io/platforms``); () unknown."""
    node_platforms: tuple[str, ...] = ()
    """Canonical platforms of the candidate nodes that can run the pod."""
    placement: Placement | None = None
    """``None`` when no candidate node is known to run the pod."""
    inspection_errors: tuple[tuple[str, str], ...] = ()
    """``(image, error)`` for images that could not be inspected."""
    provisionable_platforms: tuple[str, ...] = ()
    """Canonical platforms that provisionable capacity the pod can use can add and that can
    run the pod (``node_platforms`` are the existing nodes')."""
    provisionable_sources: tuple[str, ...] = ()
    """The sources of that capacity (``NodePool arm64-spot``), sorted."""
    tolerations: tuple[_workloads.Toleration, ...] = ()
    """Tolerations of platform taints (``kubernetes.io/arch=arm64:NoSchedule``) the pod needs
    for the nodes judged able to run it; mutation adds them. The candidates above are the
    nodes the pod may use with them."""

    # Names are listed only when asked for: with thousands of candidate nodes, sorting their
    # names would cost more than the decision itself, and admission never reads them.
    @functools.cached_property
    def compatible_nodes(self) -> tuple[str, ...]:
        """Names of the candidate nodes that can run every (inspected) image, sorted."""
        return tuple(_names(self.compatible_classes))

    @functools.cached_property
    def incompatible_nodes(self) -> tuple[str, ...]:
        """Names of the candidate nodes that cannot, sorted."""
        return tuple(_names(self.incompatible_classes))


Nodes: TypeAlias = Iterable[_nodes.Node] | _inventory.Inventory
"""What decisions run over: nodes, or an inventory (judged by class where that is exact)."""

Provisionable: TypeAlias = Sequence[_capacity.ProvisionableClass]
"""Capacity autoscalers can add, judged beside the existing nodes."""

_Class: TypeAlias = _inventory.NodeClass

PlatformTaints: TypeAlias = Sequence[_scheduling.PlatformTaint]
"""Taints that keep pods off a platform's nodes unless they opt in (see :func:`_opt_ins`)."""


def _classes(workload: _workloads.Workload, nodes: Nodes) -> list[_Class]:
    """Classes to judge: the inventory's, unless the pod's constraints name single nodes;
    then one class per node, which is the node-by-node decision."""
    if isinstance(nodes, _inventory.Inventory):
        if not _scheduling.names_nodes(workload.template):
            return list(nodes.classes())
        # Only the members of classes that may hold an admitted node are judged one by one:
        # a pod pinned to one host name among 5,000 nodes looks at its own class, not all.
        inventory = nodes
        template = workload.template
        pinned = [(k, v) for k, v in template.node_selector if k in _nodes.PER_NODE_LABELS]
        if template.node_name:
            # Bound by name: no other node is a candidate.
            names: Iterable[str] = [template.node_name]
        elif pinned:
            # Selected by host name: only the nodes carrying that label value can be.
            names = inventory.labelled(*pinned[0])
        else:
            relaxed = _scheduling.may_admit_some(workload)
            names = [name for c in inventory.classes() if relaxed(c.node) for name in c.names]
        members = [node for name in names if (node := inventory.get(name)) is not None]
        return [_inventory.NodeClass(node, (node.name,)) for node in members]
    return [_inventory.NodeClass(node, (node.name,)) for node in nodes]


def _size(classes: Iterable[_Class]) -> int:
    return sum(len(c.names) for c in classes)


def _names(classes: Iterable[_Class]) -> list[str]:
    return sorted(name for c in classes for name in c.names)


def _summary(classes: Iterable[_Class]) -> str:
    return _messages.platform_summary((c.node.platform, len(c.names)) for c in classes)


@dataclasses.dataclass(frozen=True)
class _Findings:
    reason: Reason
    message: str = ""
    compatible: tuple[_Class, ...] = ()
    incompatible: tuple[_Class, ...] = ()
    pod_platforms: tuple[platforms.Platform, ...] = ()
    placement: Placement | None = None
    failures: tuple[tuple[str, str], ...] = ()
    offers: tuple[_capacity.Offer, ...] = ()
    """Provisionable offers the pod can use that can run it."""
    tolerations: tuple[_workloads.Toleration, ...] = ()


NodeKind: TypeAlias = tuple[platforms.Platform, platforms.Fallbacks]
"""What decides whether a node runs an image: its platform and the fallbacks its CPU allows."""


def _kind(node: _nodes.Node, defaults: platforms.Fallbacks) -> NodeKind:
    return node.platform, node.fallbacks(defaults)


def _runs(
    node: platforms.Platform,
    image_platforms: Iterable[platforms.Platform],
    fallbacks: platforms.Fallbacks,
) -> bool:
    return any(platforms.node_can_run(node, p, fallbacks) for p in image_platforms)


def _common_platforms(
    answers: Sequence[tuple[platforms.Platform, ...]], fallbacks: platforms.Fallbacks
) -> tuple[platforms.Platform, ...]:
    """Platforms a node could have and run every image: a fallback-aware intersection.

    An image platform counts when a node of exactly that platform runs all images, so
    ``linux/arm64`` survives against an ``linux/arm/v7``-only image (arm64 runs arm/v7).
    """
    pool = {p for answer in answers for p in answer if not p.is_unknown}
    return tuple(sorted(p for p in pool if all(_runs(p, answer, fallbacks) for answer in answers)))


def _provision(offers: Iterable[_capacity.Offer]) -> str:
    """``NodePool a can provision linux/amd64 and linux/arm64 (at its limits now) and ...``"""
    by_class: dict[_capacity.ProvisionableClass, list[str]] = {}
    for offer in offers:
        by_class.setdefault(offer.capacity, []).append(_messages.show(offer.node.platform))
    parts = []
    for capacity, shown in by_class.items():
        text = f"{capacity.source} can provision {_messages.join_and(list(dict.fromkeys(shown)))}"
        parts.append(text + (f" ({capacity.note})" if capacity.note else ""))
    return _messages.join_and(parts)


def _is_daemonset(workload: _workloads.Workload) -> bool:
    return "DaemonSet" in (workload.kind, workload.controller_kind)


def _offers(workload: _workloads.Workload, capacity: Provisionable) -> tuple[_capacity.Offer, ...]:
    """Offers the workload's pods could be scheduled to.

    None for a DaemonSet (or its pods): it never makes an autoscaler add a node, it follows
    the nodes that exist.
    """
    if not capacity or _is_daemonset(workload):
        return ()
    return tuple(
        offer
        for value in capacity
        for offer in value.offers
        if _capacity.offer_admits(workload, offer)
    )


def _opt_ins(
    workload: _workloads.Workload,
    nodes: Nodes,
    capacity: Provisionable,
    resolved: Mapping[str, tuple[platforms.Platform, ...]],
    defaults: platforms.Fallbacks,
    platform_taints: PlatformTaints,
) -> tuple[_workloads.Toleration, ...]:
    """The platform-taint tolerations to add: for each node (or offer) tainted with its own
    arch that the pod may use once it tolerates that taint, and that can run every image.

    Nothing else is tolerated: another key, or an arch some image does not run on, keeps its
    taint's meaning. A DaemonSet's tolerations choose the nodes it runs on (tolerating more
    would add pods, not place them), so it gets none.
    """
    if not platform_taints or _is_daemonset(workload):
        return ()
    own = workload.template.tolerations
    # Classes as a pod tolerating every platform taint would see them: a superset, each
    # member then judged with the tolerations of its own arch only.
    everything = _scheduling.with_tolerations(
        workload,
        (
            _workloads.Toleration(key=p.key, operator="Exists", effect=effect)
            for p in platform_taints
            for effect in sorted(p.effects)
        ),
    )
    judged = [c.node for c in _classes(everything, nodes)]
    offers = [o for value in capacity for o in value.offers]
    wanted: dict[_workloads.Toleration, None] = {}
    for node, offer in [*((n, None) for n in judged), *((o.node, o) for o in offers)]:
        need = _scheduling.platform_tolerations(node, own, platform_taints)
        if not need or not node.known or set(need) <= wanted.keys():
            continue
        relaxed = _scheduling.with_tolerations(workload, need)
        admitted = (
            _capacity.offer_admits(relaxed, offer)
            if offer is not None
            else _scheduling.admits(relaxed)(node)
        )
        kind = _kind(node, defaults)
        if admitted and all(_runs(kind[0], p, kind[1]) for p in resolved.values()):
            wanted.update(dict.fromkeys(need))
    return tuple(sorted(wanted, key=lambda t: (t.key, t.value, t.effect)))


def _mismatch(
    template: _workloads.PodTemplate,
    candidates: Sequence[_Class],
    resolved: Mapping[str, tuple[platforms.Platform, ...]],
    defaults: platforms.Fallbacks,
    offers: Sequence[_capacity.Offer] = (),
) -> tuple[Reason, str]:
    # With candidate nodes to name, only an arch pin is blamed: the nodes say the rest.
    pinned = tuple(pin for pin in _pins.pins(template) if pin.key == _nodes.LABEL_ARCH)
    against = _pins.contradicted(pinned, resolved, defaults)
    if against:
        return Reason.ARCHITECTURE_PIN_MISMATCH, _pins.message(pinned, against)
    kinds = sorted(
        {_kind(c.node, defaults) for c in candidates} | {_kind(o.node, defaults) for o in offers}
    )
    unrunnable = [
        image
        for image, found in resolved.items()
        if not any(_runs(node, found, fallbacks) for node, fallbacks in kinds)
    ]
    lead = "" if unrunnable else "no node can run all images: "
    named = unrunnable or list(resolved)
    clauses = [
        f"{_named(template, image)} {_messages.supports(resolved[image])}" for image in named
    ]
    where = (
        "the node this pod can use is"
        if _size(candidates) == 1
        else "the nodes this pod can use are"
    )
    fix = "publish a multi-arch image" if len(named) == 1 else "publish multi-arch images"
    refused = [
        hint
        for node, fallbacks in kinds
        for image in named
        for found in resolved[image]
        if (hint := _messages.refused_fallback(node, found, fallbacks)) is not None
    ]
    common = _common_platforms(list(resolved.values()), defaults)
    targets = sorted(
        {p.architecture if p.os == "linux" else f"{p.os}/{p.architecture}" for p in common}
    )
    if targets:
        fix += f" or select {' or '.join(targets)} nodes"
    existing = [f"{where} {_summary(candidates)}"] if candidates else ["no existing node matches"]
    if offers:
        existing.append(_provision(offers))
    parts = [*clauses, *existing, *dict.fromkeys(refused), fix]
    return Reason.ARCHITECTURE_MISMATCH, lead + "; ".join(parts)


def _named(template: _workloads.PodTemplate, image: str) -> str:
    """``image X``, naming the volumes when only image volumes use it (users look for it
    among their containers otherwise)."""
    if image not in template.volume_only_images:
        return f"image {image}"
    names = ", ".join(c.name for c in template.containers if c.image == image)
    return f"image {image} (image volume {names})"


def _partial_message(
    candidates: Sequence[_Class],
    incompatible: Sequence[_Class],
    resolved: Mapping[str, tuple[platforms.Platform, ...]],
    defaults: platforms.Fallbacks,
) -> str:
    names = _messages.some_names(_names(incompatible))
    kinds = {_kind(c.node, defaults) for c in incompatible}
    images = [
        f"image {image} {_messages.supports(found)}"
        for image, found in resolved.items()
        if not all(_runs(node, found, fallbacks) for node, fallbacks in kinds)
    ]
    those = "that node is" if _size(incompatible) == 1 else "those nodes are"
    return "; ".join(
        [
            f"{_size(incompatible)} of the {_size(candidates)} nodes this DaemonSet can use "
            f"cannot run its images: {names}",
            *images,
            f"{those} {_summary(incompatible)}",
        ]
    )


def _assess(
    workload: _workloads.Workload,
    nodes: Nodes,
    answers: Mapping[str, ImageAnswer],
    defaults: platforms.Fallbacks,
    capacity: Provisionable = (),
    platform_taints: PlatformTaints = _scheduling.DEFAULT_PLATFORM_TAINTS,
    *,
    partial: bool = False,
) -> _Findings:
    """``partial``: images without an answer are still outstanding, not failed; opting in to
    tainted platforms then reads the answers so far, so a mismatch found is one that no later
    answer can undo (:func:`settled`)."""
    images = workload.template.images
    if not images:
        return _Findings(Reason.SKIPPED, "the pod has no images to check")
    resolved: dict[str, tuple[platforms.Platform, ...]] = {}
    failures: dict[str, str] = {}
    for image in images:
        answer = answers.get(image)
        if answer is None:
            failures[image] = "the image was not inspected"
        elif isinstance(answer, ImageFailure):
            failures[image] = answer.error or "unknown error"
        elif not answer and image in workload.template.volume_only_images:
            # An artifact mounted as an image volume names no platform: the kubelet pulls it
            # whatever the node's, and nothing in it was built for one.
            continue
        elif not answer:
            failures[image] = (
                "it is an OCI artifact, not an image: it names no platform and has nothing "
                "a container can run"
            )
        else:
            resolved[image] = tuple(answer)
    failed = tuple(failures.items())
    if not isinstance(nodes, _inventory.Inventory):
        nodes = tuple(nodes)  # read once for the opt-ins, once for the candidates
    # Opting in to a tainted platform needs every image known to run there; an image that
    # could not be inspected might not.
    opt_ins = (
        _opt_ins(workload, nodes, capacity, resolved, defaults, platform_taints)
        if resolved and (partial or not failures)
        else ()
    )
    # From here on the pod is judged as it will be, with those tolerations: its candidates
    # are then exactly the nodes it may use, and placement keeps it off those that cannot run
    # it (another node tainted with the same arch, say Windows).
    workload = _scheduling.with_tolerations(workload, opt_ins)
    # A node whose platform is unknown (no labels, no nodeInfo) can be judged neither way.
    admits = _scheduling.admits(workload)
    candidates = [c for c in _classes(workload, nodes) if admits(c.node) and c.node.known]
    offers = _offers(workload, capacity)
    if not candidates and not offers:
        # No node to judge against, but the pod's own pins still say what any node it could
        # ever use is. Judged with every fallback a node may be labelled to have: only an image
        # no such node could run is a contradiction.
        pinned = _pins.pins(workload.template)
        against = _pins.contradicted(pinned, resolved, platforms.ALL_FALLBACKS)
        if against:
            return _Findings(
                Reason.ARCHITECTURE_PIN_MISMATCH, _pins.message(pinned, against), failures=failed
            )
        provisionable = ", and no provisionable capacity does" if capacity else ""
        checked = (
            "its images were checked against its own arch, os and build pins only"
            if resolved
            else "image platforms were not checked"
        )
        return _Findings(
            Reason.NO_CANDIDATE_NODES,
            "no ready node matches this pod's nodeSelector, node affinity and tolerations"
            f"{provisionable}; {checked}",
            failures=failed,
        )
    # Judge each distinct kind of node once: clusters have many nodes but few platforms.
    verdicts: dict[NodeKind, bool] = {}
    for node in [*(c.node for c in candidates), *(o.node for o in offers)]:
        kind = _kind(node, defaults)
        if kind not in verdicts:
            verdicts[kind] = all(_runs(kind[0], p, kind[1]) for p in resolved.values())
    compatible = tuple(c for c in candidates if verdicts[_kind(c.node, defaults)])
    incompatible = tuple(c for c in candidates if not verdicts[_kind(c.node, defaults)])
    good = tuple(o for o in offers if verdicts[_kind(o.node, defaults)])
    bad = tuple(o for o in offers if not verdicts[_kind(o.node, defaults)])
    common = (
        _common_platforms(list(resolved.values()), defaults) if resolved and not failures else ()
    )
    findings = _Findings(
        Reason.COMPATIBLE,
        compatible=compatible,
        incompatible=incompatible,
        pod_platforms=common,
        # Placement from the inspected images alone is still safe: a node that cannot run one
        # of them cannot run the pod.
        # Classes keep every label but per-node ones, which placement never uses.
        # Provisionable offers count as nodes: an autoscaler may pick any platform the pod's
        # affinity allows, so the arch pin names each one that can run it, and only those.
        placement=(
            _placement.placement(
                [*(c.node for c in compatible), *(o.node for o in good)],
                [*(c.node for c in incompatible), *(o.node for o in bad)],
            )
            if compatible or good
            else None
        ),
        failures=failed,
        offers=good,
        tolerations=opt_ins if compatible or good else (),
    )
    if resolved and not compatible and not good:
        reason, message = _mismatch(workload.template, candidates, resolved, defaults, offers)
        return dataclasses.replace(findings, reason=reason, message=message)
    if failures:
        message = "; ".join(
            f"could not inspect {_named(workload.template, i)}: {error}" for i, error in failed
        )
        return dataclasses.replace(findings, reason=Reason.IMAGE_INSPECTION_FAILED, message=message)
    if incompatible and workload.kind == "DaemonSet":
        message = _partial_message(candidates, incompatible, resolved, defaults)
        return dataclasses.replace(
            findings, reason=Reason.PARTIAL_ARCHITECTURE_MISMATCH, message=message
        )
    if not compatible and good:
        message = f"no node can run it now; {_provision(good)}"
        return dataclasses.replace(findings, reason=Reason.PROVISIONABLE, message=message)
    return findings


def decide(
    workload: _workloads.Workload,
    nodes: Nodes,
    answers: Mapping[str, ImageAnswer],
    *,
    mode: Mode = Mode.ENFORCE,
    failure_policy: FailurePolicy = FailurePolicy.OPEN,
    fallbacks: platforms.Fallbacks = platforms.DEFAULT_FALLBACKS,
    capacity: Provisionable = (),
    platform_taints: PlatformTaints = _scheduling.DEFAULT_PLATFORM_TAINTS,
) -> Decision:
    """Decide whether ``workload`` may be admitted onto ``nodes``, or onto ``capacity`` that
    autoscalers can add.

    ``answers`` maps each image string (as written in the spec) to its platforms or an
    :class:`ImageFailure`; a missing image counts as a failure. Only enforce mode denies:
    when no candidate node can run every inspected image (whatever else failed), or when
    an image could not be inspected and ``failure_policy`` is closed. ``fallbacks`` are the
    cluster's runtime fallbacks (``platforms.*`` settings); node labels override them.
    A pod that only ``capacity`` can run is allowed (:attr:`Reason.PROVISIONABLE`).
    ``platform_taints``: taints the pod is judged (and mutated) to tolerate on nodes of an
    arch every image runs on (:attr:`Decision.tolerations`).
    """
    found = _assess(workload, nodes, answers, fallbacks, capacity, platform_taints)
    reason, message = found.reason, found.message
    mismatch = reason.is_mismatch
    allowed = True
    if reason in (Reason.ARCHITECTURE_MISMATCH, Reason.ARCHITECTURE_PIN_MISMATCH):
        allowed = mode is not Mode.ENFORCE
    elif reason is Reason.IMAGE_INSPECTION_FAILED:
        allowed = not (mode is Mode.ENFORCE and failure_policy is FailurePolicy.CLOSED)
        message += "; admitted without a platform check" if allowed else " (failure policy closed)"
    warnings: tuple[str, ...] = ()
    if allowed and message and mode is not Mode.AUDIT and reason is not Reason.SKIPPED:
        warnings = _messages.warning_lines(message)
    return Decision(
        allowed=allowed,
        reason=reason,
        message=message,
        warnings=warnings,
        mismatch=mismatch,
        compatible_classes=found.compatible,
        incompatible_classes=found.incompatible,
        pod_platforms=tuple(platforms.format_all(found.pod_platforms)),
        node_platforms=tuple(platforms.format_all(c.node.platform for c in found.compatible)),
        placement=found.placement,
        inspection_errors=found.failures,
        provisionable_platforms=tuple(platforms.format_all(o.node.platform for o in found.offers)),
        provisionable_sources=tuple(sorted({str(o.capacity.source) for o in found.offers})),
        tolerations=found.tolerations,
    )


def settled(
    workload: _workloads.Workload,
    nodes: Nodes,
    partial: Mapping[str, ImageAnswer],
    *,
    mode: Mode = Mode.ENFORCE,
    failure_policy: FailurePolicy = FailurePolicy.OPEN,
    fallbacks: platforms.Fallbacks = platforms.DEFAULT_FALLBACKS,
    capacity: Provisionable = (),
    platform_taints: PlatformTaints = _scheduling.DEFAULT_PLATFORM_TAINTS,
) -> bool:
    """Whether the answers so far already decide a denial, whatever the others turn out to be.

    So a review can stop resolving the images still outstanding (and spend nothing more on a
    slow or hostile registry): in enforce mode, an image no candidate node can run, or, with
    the closed failure policy, an image that could not be inspected.
    """
    if mode is not Mode.ENFORCE:
        return False
    if failure_policy is FailurePolicy.CLOSED and any(
        isinstance(answer, ImageFailure) for answer in partial.values()
    ):
        return True
    resolved = {i: a for i, a in partial.items() if not isinstance(a, ImageFailure)}
    if not resolved:
        return False
    found = _assess(workload, nodes, resolved, fallbacks, capacity, platform_taints, partial=True)
    reason = found.reason
    return reason in (Reason.ARCHITECTURE_MISMATCH, Reason.ARCHITECTURE_PIN_MISMATCH)


def stranded(
    workloads: Mapping[K, _workloads.Workload],
    nodes: Nodes,
    answers: Mapping[str, ImageAnswer],
    fallbacks: platforms.Fallbacks = platforms.DEFAULT_FALLBACKS,
    capacity: Provisionable = (),
    platform_taints: PlatformTaints = _scheduling.DEFAULT_PLATFORM_TAINTS,
) -> dict[K, Decision]:
    """The workloads that no candidate node (nor provisionable ``capacity``) can run, with the
    enforce-mode decision for each.

    For node inventory changes: pass the cached image answers; an image missing from them is
    unknown and only counts against a workload when its known images already rule it out.
    """
    if not isinstance(nodes, _inventory.Inventory):
        nodes = tuple(nodes)  # read once per workload
    left: dict[K, Decision] = {}
    for key, workload in workloads.items():
        decision = decide(
            workload,
            nodes,
            answers,
            fallbacks=fallbacks,
            capacity=capacity,
            platform_taints=platform_taints,
        )
        if decision.reason in (Reason.ARCHITECTURE_MISMATCH, Reason.ARCHITECTURE_PIN_MISMATCH):
            left[key] = decision
    return left
