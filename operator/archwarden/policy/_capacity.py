"""Capacity an autoscaler can add: node classes that may not exist yet.

A Karpenter NodePool, a Cluster API node group that scales from zero, or a node group the
configuration describes, each offers nodes whose labels are not single values but *sets of
possible values* (``kubernetes.io/arch In [amd64, arm64]``, ``zone NotIn [c]``). A pod can use
such a class when some node it could provision satisfies the pod's nodeSelector and one of its
required affinity terms, and the pod tolerates the class's taints: per label key, some possible
value (or the label's absence, where the class allows it) satisfies every pod expression on
that key. That is how Karpenter's own compatibility check reads a NodePool
(``scheduling.Requirements.Compatible`` with well-known labels allowed undefined); a
cluster-autoscaler template node is the special case where every label is one value and no
label is allowed undefined.

Decisions judge one :class:`Offer` per platform a class can provision (its os/arch options,
and Windows builds), so a pool allowing ``[amd64, arm64]`` is two offers, each judged like a
node of that platform.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterable, Mapping, Sequence

from archwarden import platforms
from archwarden.policy import _nodes, _scheduling, _workloads

__all__ = [
    "KARPENTER_WELL_KNOWN_LABELS",
    "NORMALIZED_LABELS",
    "Capacity",
    "LabelOptions",
    "Offer",
    "ProvisionableClass",
    "Source",
    "matches_options",
    "narrow",
    "offer_admits",
    "options_from_requirement",
]

# Labels a Karpenter NodePool need not define for a pod to constrain them: the provider fills
# them in (sigs.k8s.io/karpenter pkg/apis/v1 WellKnownLabels). Providers add their own (AWS:
# karpenter.k8s.aws/*); settings can extend this set.
KARPENTER_WELL_KNOWN_LABELS = frozenset(
    {
        "karpenter.sh/nodepool",
        "topology.kubernetes.io/zone",
        "topology.kubernetes.io/region",
        "node.kubernetes.io/instance-type",
        _nodes.LABEL_ARCH,
        _nodes.LABEL_OS,
        "karpenter.sh/capacity-type",
        _nodes.LABEL_WINDOWS_BUILD,
    }
)

# Deprecated aliases a pod may still use; a provisioned node carries both, so a pod's
# expression on the alias reads the stable key (Karpenter's NormalizedLabels).
NORMALIZED_LABELS: Mapping[str, str] = {
    "failure-domain.beta.kubernetes.io/zone": "topology.kubernetes.io/zone",
    "failure-domain.beta.kubernetes.io/region": "topology.kubernetes.io/region",
    "beta.kubernetes.io/arch": _nodes.LABEL_ARCH,
    "beta.kubernetes.io/os": _nodes.LABEL_OS,
    "beta.kubernetes.io/instance-type": "node.kubernetes.io/instance-type",
}

# A value no pod expression names: stands for "any other value" of an open-ended set.
_FRESH = "\x00archwarden-any-other-value"


@dataclasses.dataclass(frozen=True, order=True)
class Source:
    """Where provisionable capacity comes from, as messages and metrics name it."""

    kind: str
    """``NodePool``, ``MachineDeployment``, ``MachineSet``, ``MachinePool`` or ``nodeGroup``
    (a static entry of the configuration's ``capacity.nodeGroups``)."""
    name: str
    """The object's name (``namespace/name`` for namespaced objects)."""

    def __str__(self) -> str:
        return f"{self.kind} {self.name}"


@dataclasses.dataclass(frozen=True)
class LabelOptions:
    """The values one label may take on a node a class provisions.

    ``values`` when ``complement`` is false; every value except ``values`` when it is true.
    ``absent``: a node may lack the label.
    """

    complement: bool
    values: frozenset[str] = frozenset()
    absent: bool = False

    def allows(self, value: str | None) -> bool:
        if value is None:
            return self.absent
        return (value in self.values) != self.complement

    @classmethod
    def exactly(cls, value: str) -> LabelOptions:
        return cls(complement=False, values=frozenset({value}))

    @property
    def single(self) -> str | None:
        """The one value every provisioned node carries, if there is one."""
        if self.complement or self.absent or len(self.values) != 1:
            return None
        return next(iter(self.values))


ANY_VALUE = LabelOptions(complement=True, absent=True)
"""A label a class does not define but the provider may set (well-known labels)."""
NO_LABEL = LabelOptions(complement=False, absent=True)
"""A label a class does not define and never sets."""


def options_from_requirement(requirement: _workloads.Requirement) -> LabelOptions:
    """A class's own requirement (a NodePool's ``requirements`` item) as label options.

    As Karpenter reads them: ``NotIn`` and ``DoesNotExist`` leave room for a node without the
    label, ``In`` and ``Exists`` do not. ``Gt``/``Lt`` (and Karpenter's ``Gte``/``Lte``) bound
    integer labels such as instance sizes, never the platform: they count as ``Exists``.
    """
    values = frozenset(requirement.values)
    operator = requirement.operator
    if operator == "In":
        return LabelOptions(complement=False, values=values)
    if operator == "NotIn":
        return LabelOptions(complement=True, values=values, absent=True)
    if operator == "DoesNotExist":
        return LabelOptions(complement=False, absent=True)
    return LabelOptions(complement=True)  # Exists, Gt, Lt, Gte, Lte


def narrow(options: LabelOptions, other: LabelOptions) -> LabelOptions:
    """Both at once (a key required twice, or a template label on a required key)."""
    if options.complement and other.complement:
        values, complement = options.values | other.values, True
    elif options.complement:
        values, complement = other.values - options.values, False
    elif other.complement:
        values, complement = options.values - other.values, False
    else:
        values, complement = options.values & other.values, False
    return LabelOptions(complement, values, options.absent and other.absent)


def _candidates(
    options: LabelOptions, expressions: Sequence[_workloads.Requirement]
) -> Iterable[str | None]:
    """Values that stand for every value ``options`` allows, as far as ``expressions`` can
    tell them apart: the values named anywhere, a value none names, absence; and for integer
    bounds (``Gt``/``Lt``), enough consecutive integers that one escapes every exclusion."""
    if not options.complement:
        yield from sorted(options.values)
        yield None
        return
    named = {v for r in expressions for v in r.values} | options.values
    yield from sorted(named)
    lows: list[int] = []
    highs: list[int] = []
    for r in expressions:
        if r.operator in ("Gt", "Lt") and len(r.values) == 1:
            try:
                bound = int(r.values[0])
            except ValueError:
                continue
            (lows if r.operator == "Gt" else highs).append(bound)
    # Among len(named) + 1 consecutive integers at least one is excluded by no set.
    if lows:
        start = max(lows) + 1
        yield from (str(start + i) for i in range(len(named) + 1))
    elif highs:
        start = min(highs) - 1
        yield from (str(start - i) for i in range(len(named) + 1))
    yield _FRESH
    yield None


def matches_options(
    options: LabelOptions, key: str, expressions: Sequence[_workloads.Requirement]
) -> bool:
    """Whether some value ``options`` allows (or absence) satisfies every expression."""
    for value in _candidates(options, expressions):
        if not options.allows(value):
            continue
        labels = {} if value is None else {key: value}
        if all(_scheduling.matches_requirement(r, labels) for r in expressions):
            return True
    return False


@dataclasses.dataclass(frozen=True)
class ProvisionableClass:
    """Nodes a source can add: platforms, label options, taints."""

    source: Source
    platforms: tuple[platforms.Platform, ...]
    """The os/arch/variant options; Windows builds are label options of
    ``node.kubernetes.io/windows-build``."""
    labels: tuple[tuple[str, LabelOptions], ...] = ()
    """Label options by key (sorted), other than ``kubernetes.io/arch`` and ``kubernetes.io/os``
    (which :attr:`platforms` decide)."""
    taints: tuple[_nodes.Taint, ...] = ()
    undefined: frozenset[str] = frozenset()
    """Keys a pod may constrain although the class does not define them (the provider sets
    them): Karpenter's well-known labels. Others are absent on a provisioned node."""
    note: str = ""
    """Said after the source in messages, e.g. ``at its cpu limit now``: such capacity still
    counts (limits move, nodes go), but the user should know."""
    every_taint: bool = False
    """Every taint must be tolerated, PreferNoSchedule too (Karpenter's check); otherwise only
    NoSchedule and NoExecute ones (the scheduler's, for a template node)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", tuple(sorted(self.labels)))

    @functools.cached_property
    def label_options(self) -> Mapping[str, LabelOptions]:
        return dict(self.labels)

    def options(self, key: str) -> LabelOptions:
        found = self.label_options.get(key)
        if found is not None:
            return found
        return ANY_VALUE if key in self.undefined else NO_LABEL

    @functools.cached_property
    def offers(self) -> tuple[Offer, ...]:
        """One offer per platform (and Windows build) this class can provision."""
        result: list[Offer] = []
        builds = self.options(_nodes.LABEL_WINDOWS_BUILD)
        for platform in self.platforms:
            per_build: Sequence[str] = [""]
            if platform.os == "windows" and not builds.complement and builds.values:
                per_build = sorted(builds.values)
            for build in per_build:
                labels = [
                    (_nodes.LABEL_OS, platform.os),
                    (_nodes.LABEL_ARCH, platform.architecture),
                ]
                if build:
                    labels.append((_nodes.LABEL_WINDOWS_BUILD, build))
                node = _nodes.Node(
                    name="",
                    os=platform.os,
                    arch=platform.architecture,
                    variant=platform.variant,
                    windows_build=build,
                    labels=tuple(labels),
                    taints=self.taints,
                )
                result.append(Offer(self, node))
        return tuple(result)


@dataclasses.dataclass(frozen=True)
class Offer:
    """One platform a provisionable class can add, as the node value decisions judge."""

    capacity: ProvisionableClass
    node: _nodes.Node
    """A nameless node of that platform, its arch/os (and Windows build) labels and taints."""

    def options(self, key: str) -> LabelOptions:
        if key in (_nodes.LABEL_ARCH, _nodes.LABEL_OS, _nodes.LABEL_WINDOWS_BUILD):
            value = self.node.label_map.get(key)
            if value is not None:
                return LabelOptions.exactly(value)
        return self.capacity.options(key)


def _term_matches(offer: Offer, expressions: Sequence[_workloads.Requirement]) -> bool:
    by_key: dict[str, list[_workloads.Requirement]] = {}
    for r in expressions:
        key = NORMALIZED_LABELS.get(r.key, r.key)
        by_key.setdefault(key, []).append(dataclasses.replace(r, key=key))
    return all(matches_options(offer.options(key), key, found) for key, found in by_key.items())


def offer_admits(workload: _workloads.Workload, offer: Offer) -> bool:
    """Whether the workload's pods could be scheduled to a node ``offer`` provisions.

    A pod naming a node (``spec.nodeName``, a ``matchFields`` term) never can: a new node's
    name is not known in advance. Taints: every NoSchedule/NoExecute one must be tolerated.
    """
    template = workload.template
    if template.node_name:
        return False
    tolerations = template.tolerations
    if offer.capacity.every_taint:
        # tolerates_taints skips PreferNoSchedule taints; Karpenter does not.
        tolerated = all(
            any(_scheduling.tolerates(t, taint) for t in tolerations) for taint in offer.node.taints
        )
    else:
        tolerated = _scheduling.tolerates_taints(tolerations, offer.node.taints)
    if not tolerated:
        return False
    selector = [_workloads.Requirement(k, "In", (v,)) for k, v in template.node_selector]
    if template.required_terms is None:
        return _term_matches(offer, selector)
    return any(
        not term.empty
        and not term.match_fields
        and _term_matches(offer, [*selector, *term.match_expressions])
        for term in template.required_terms
    )


class Capacity:
    """Provisionable classes by source, as the watched sources last reported them."""

    def __init__(self) -> None:
        self._classes: dict[Source, ProvisionableClass] = {}
        self._snapshot: tuple[ProvisionableClass, ...] | None = None

    def __len__(self) -> int:
        return len(self._classes)

    def apply(self, source: Source, value: ProvisionableClass | None) -> bool:
        """Record what ``source`` can provision (``None``: gone); whether that changed."""
        old = self._classes.get(source)
        if old == value:
            return False
        if value is None:
            del self._classes[source]
        else:
            self._classes[source] = value
        self._snapshot = None
        return True

    def replace(self, kind: str, values: Iterable[ProvisionableClass]) -> bool:
        """Every class of one source kind at once (static entries); whether that changed."""
        changed = False
        fresh = {v.source: v for v in values}
        for source in [s for s in self._classes if s.kind == kind and s not in fresh]:
            changed |= self.apply(source, None)
        for source, value in fresh.items():
            changed |= self.apply(source, value)
        return changed

    def sources(self, kind: str) -> list[Source]:
        """The sources of one kind that can provision something now."""
        return [source for source in self._classes if source.kind == kind]

    def classes(self) -> tuple[ProvisionableClass, ...]:
        """Every class, sorted by source; the same tuple until the next change."""
        if self._snapshot is None:
            self._snapshot = tuple(self._classes[s] for s in sorted(self._classes))
        return self._snapshot

    def counts(self) -> dict[tuple[str, str, str], int]:
        """Classes per ``(source kind, os, arch)`` they offer (``archwarden_capacity_classes``)."""
        counts: dict[tuple[str, str, str], int] = {}
        for value in self.classes():
            for key in {(value.source.kind, p.os, p.architecture) for p in value.platforms}:
                counts[key] = counts.get(key, 0) + 1
        return counts
