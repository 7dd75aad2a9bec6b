"""Which nodes may a pod be scheduled to? Kubernetes' own filtering rules, minus resources.

Kept faithful to kube-scheduler's NodeAffinity, TaintToleration and NodeUnschedulable plugins
(component-helpers ``nodeaffinity`` and ``v1.Toleration.ToleratesTaint``): a looser reading
would blame images for nodes the pod could never use, a stricter one would miss mismatches.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping

from archwarden.policy import _nodes, _workloads

__all__ = [
    "DAEMONSET_TOLERATIONS",
    "DEFAULT_PLATFORM_TAINTS",
    "PlatformTaint",
    "admits",
    "candidate_nodes",
    "matches_affinity",
    "matches_node_selector",
    "matches_requirement",
    "matches_term",
    "may_admit_some",
    "names_nodes",
    "platform_tolerations",
    "tolerates",
    "tolerates_taints",
    "with_tolerations",
]

# Effects that keep a pod off a node; PreferNoSchedule only lowers the node's score.
_EXCLUDING_EFFECTS = frozenset({"NoSchedule", "NoExecute"})

_TAINT_UNSCHEDULABLE = _nodes.Taint("node.kubernetes.io/unschedulable", effect="NoSchedule")

# The DaemonSet controller adds these to every pod it creates (pkg/controller/daemon/util), so
# a DaemonSet's pods also land on cordoned nodes and nodes under resource pressure.
DAEMONSET_TOLERATIONS: tuple[_workloads.Toleration, ...] = tuple(
    _workloads.Toleration(key=key, operator="Exists", effect=effect)
    for key, effect in (
        ("node.kubernetes.io/not-ready", "NoExecute"),
        ("node.kubernetes.io/unreachable", "NoExecute"),
        ("node.kubernetes.io/disk-pressure", "NoSchedule"),
        ("node.kubernetes.io/memory-pressure", "NoSchedule"),
        ("node.kubernetes.io/pid-pressure", "NoSchedule"),
        ("node.kubernetes.io/unschedulable", "NoSchedule"),
    )
)


@dataclasses.dataclass(frozen=True)
class PlatformTaint:
    """A taint that keeps pods off nodes of a platform unless they select it (GKE taints every
    Arm node ``kubernetes.io/arch=arm64:NoSchedule``; AKS and Alibaba recommend it).

    Only a taint whose value is the tainted node's own arch counts: that one says "pods must
    opt in to this arch", which archwarden does for a pod all of whose images run there.
    """

    key: str
    effects: frozenset[str]


DEFAULT_PLATFORM_TAINTS: tuple[PlatformTaint, ...] = (
    PlatformTaint(_nodes.LABEL_ARCH, frozenset({"NoSchedule", "PreferNoSchedule"})),
)


def platform_tolerations(
    node: _nodes.Node,
    tolerations: Iterable[_workloads.Toleration],
    platform_taints: Iterable[PlatformTaint],
) -> tuple[_workloads.Toleration, ...]:
    """Tolerations of ``node``'s platform taints (value: its own arch) that ``tolerations`` do
    not tolerate yet, PreferNoSchedule ones included (they lower the node's score)."""
    arch = node.label_map.get(_nodes.LABEL_ARCH)
    if not arch:
        return ()
    tolerations = tuple(tolerations)
    wanted = [
        taint
        for taint in node.taints
        if taint.value == arch
        and any(taint.key == p.key and taint.effect in p.effects for p in platform_taints)
        and not any(tolerates(t, taint) for t in tolerations)
    ]
    return tuple(
        dict.fromkeys(
            _workloads.Toleration(key=t.key, operator="Equal", value=t.value, effect=t.effect)
            for t in wanted
        )
    )


def with_tolerations(
    workload: _workloads.Workload, extra: Iterable[_workloads.Toleration]
) -> _workloads.Workload:
    """``workload`` as it will be once ``extra`` tolerations are added to its pods."""
    extra = tuple(extra)
    if not extra:
        return workload
    template = dataclasses.replace(
        workload.template, tolerations=workload.template.tolerations + extra
    )
    return dataclasses.replace(workload, template=template)


def matches_requirement(requirement: _workloads.Requirement, labels: Mapping[str, str]) -> bool:
    """A ``matchExpressions`` item against node labels (labels.Selector semantics)."""
    value = labels.get(requirement.key)
    operator = requirement.operator
    if operator == "In":
        return value is not None and value in requirement.values
    if operator == "NotIn":
        return value is None or value not in requirement.values
    if operator == "Exists":
        return value is not None
    if operator == "DoesNotExist":
        return value is None
    if operator in ("Gt", "Lt") and value is not None and len(requirement.values) == 1:
        try:
            actual, bound = int(value), int(requirement.values[0])
        except ValueError:
            return False
        return actual > bound if operator == "Gt" else actual < bound
    return False


def matches_term(term: _workloads.SelectorTerm, node: _nodes.Node) -> bool:
    """All of a term's expressions and fields; an empty term matches nothing."""
    if term.empty:
        return False
    fields = {"metadata.name": node.name}
    return all(matches_requirement(r, node.label_map) for r in term.match_expressions) and all(
        matches_requirement(r, fields) for r in term.match_fields
    )


def matches_affinity(terms: tuple[_workloads.SelectorTerm, ...] | None, node: _nodes.Node) -> bool:
    """Required node affinity: terms are ORed; no affinity at all matches every node."""
    if terms is None:
        return True
    return any(matches_term(term, node) for term in terms)


def matches_node_selector(selector: Iterable[tuple[str, str]], node: _nodes.Node) -> bool:
    return all(node.label_map.get(key) == value for key, value in selector)


def tolerates(toleration: _workloads.Toleration, taint: _nodes.Taint) -> bool:
    """``v1.Toleration.ToleratesTaint``: empty effect and empty key are wildcards."""
    if toleration.effect and toleration.effect != taint.effect:
        return False
    if toleration.key and toleration.key != taint.key:
        return False
    if toleration.operator == "Exists":
        return True
    if toleration.operator == "Equal":
        return toleration.value == taint.value
    # Unknown operators tolerate nothing, as in Kubernetes.
    return False


def tolerates_taints(
    tolerations: Iterable[_workloads.Toleration], taints: Iterable[_nodes.Taint]
) -> bool:
    """Whether every NoSchedule/NoExecute taint is tolerated."""
    tolerations = tuple(tolerations)
    return all(
        any(tolerates(t, taint) for t in tolerations)
        for taint in taints
        if taint.effect in _EXCLUDING_EFFECTS
    )


def _tolerations(workload: _workloads.Workload) -> tuple[_workloads.Toleration, ...]:
    tolerations = workload.template.tolerations
    if workload.kind == "DaemonSet":
        tolerations += DAEMONSET_TOLERATIONS
    return tolerations


def _admits(
    template: _workloads.PodTemplate,
    tolerations: tuple[_workloads.Toleration, ...],
    node: _nodes.Node,
) -> bool:
    if not (
        matches_node_selector(template.node_selector, node)
        and matches_affinity(template.required_terms, node)
    ):
        return False
    if template.node_name:
        return node.name == template.node_name
    if not node.ready or not tolerates_taints(tolerations, node.taints):
        return False
    return not node.unschedulable or tolerates_taints(tolerations, (_TAINT_UNSCHEDULABLE,))


def admits(workload: _workloads.Workload) -> Callable[[_nodes.Node], bool]:
    """Whether the workload's pods may be scheduled to a node (see :func:`candidate_nodes`)."""
    template, tolerations = workload.template, _tolerations(workload)
    return lambda node: _admits(template, tolerations, node)


def may_admit_some(workload: _workloads.Workload) -> Callable[[_nodes.Node], bool]:
    """For a node class (a node without name and per-node labels): whether the workload's pods
    may be scheduled to some of its members. Requirements on names and per-node labels are
    left out, so this never says no where a member would be admitted; the members of a class
    it says yes to are then judged one by one."""
    template, tolerations = workload.template, _tolerations(workload)
    selector = tuple(kv for kv in template.node_selector if kv[0] not in _nodes.PER_NODE_LABELS)

    def relaxed_term(term: _workloads.SelectorTerm, node: _nodes.Node) -> bool:
        if term.empty:
            return False  # matches nothing, for every member too
        return all(
            matches_requirement(r, node.label_map)
            for r in term.match_expressions
            if r.key not in _nodes.PER_NODE_LABELS
        )

    def admitted(node: _nodes.Node) -> bool:
        if not matches_node_selector(selector, node):
            return False
        terms = template.required_terms
        if terms is not None and not any(relaxed_term(t, node) for t in terms):
            return False
        if template.node_name:
            return True  # bound to one node by name: readiness and taints are not checked
        if not node.ready or not tolerates_taints(tolerations, node.taints):
            return False
        return not node.unschedulable or tolerates_taints(tolerations, (_TAINT_UNSCHEDULABLE,))

    return admitted


def names_nodes(template: _workloads.PodTemplate) -> bool:
    """Whether the pod's constraints can tell apart nodes that differ only in per-node labels
    or names (``spec.nodeName``, ``matchFields``, a per-node label in a selector or term)."""
    if template.node_name:
        return True
    if any(key in _nodes.PER_NODE_LABELS for key, _ in template.node_selector):
        return True
    return any(
        term.match_fields or any(r.key in _nodes.PER_NODE_LABELS for r in term.match_expressions)
        for term in template.required_terms or ()
    )


def candidate_nodes(
    workload: _workloads.Workload, nodes: Iterable[_nodes.Node]
) -> list[_nodes.Node]:
    """The nodes the workload's pods may be scheduled to, ignoring resources.

    Ready, schedulable (or tolerating cordons), matching nodeSelector and required node
    affinity, and tolerating every NoSchedule/NoExecute taint. A pod with ``spec.nodeName``
    bypasses the scheduler: only that node, and only the selector and affinity (which the
    kubelet re-checks on admission), apply.
    """
    return list(filter(admits(workload), nodes))


def concerned(
    workload: _workloads.Workload,
    changed: Iterable[_nodes.Node],
    platform_taints: Iterable[PlatformTaint] = DEFAULT_PLATFORM_TAINTS,
) -> bool:
    """Whether changes to these nodes (or node classes: before and after each change) can
    change a decision about ``workload``: only when one of them is, or was, a candidate.

    A decision reads nothing but the candidate nodes, so a workload none of whose candidates
    changed keeps its decision; re-evaluation skips it. Pods whose constraints name single
    nodes are always concerned: a class hides the names they select on. A node the pod may
    use once it tolerates the node's platform taints counts too: the decision may opt in to it.
    """
    if names_nodes(workload.template):
        return True
    admitted = admits(workload)
    platform_taints = tuple(platform_taints)
    own = workload.template.tolerations

    def opted_in(node: _nodes.Node) -> bool:
        need = platform_tolerations(node, own, platform_taints)
        return bool(need) and admits(with_tolerations(workload, need))(node)

    return any(node.known and (admitted(node) or opted_in(node)) for node in changed)
