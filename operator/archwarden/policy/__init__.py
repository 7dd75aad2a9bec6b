"""The policy engine: can a workload's pods run on the nodes they may be scheduled to?

Pure functions over frozen values: no kopf, no HTTP, no I/O. The webhook and the offline
``archwarden check`` command call the same code::

    workload = policy.extract(obj)                    # Pod, Deployment, ..., CronJob
    nodes = [policy.node_from_object(n) for n in node_objects]
    # or, offline: nodes = policy.nodes_from_platforms(["linux/amd64", "linux/arm64"])
    # and what such nodes cannot model (disktype, nodeName) assumed: ("nodeName n1", ...)
    workload, assumed = policy.assume_unmodelled(workload)
    answers = {image: resolved.platforms, other: policy.ImageFailure("401 Unauthorized")}
    decision = policy.decide(workload, nodes, answers, mode=policy.Mode.WARN)
    # capacity autoscalers can add, judged beside the nodes:
    pools = [policy.nodepool_from_object(obj) for obj in nodepool_objects]
    decision = policy.decide(workload, nodes, answers, capacity=pools)
    decision.allowed, decision.reason, decision.message, decision.warnings
    ops = policy.pod_patch(pod, decision, preferences={"arm64": 50})   # RFC 6902

Also: :func:`candidate_nodes` (Kubernetes' selector, affinity and taint rules),
:func:`template_patch` (the same merge for a workload template), :func:`settled` (whether
partial answers already decide a denial), :func:`stranded` (which workloads a node inventory
change leaves with no node that can run them) and
:func:`scheduling_changed` (whether an UPDATE needs a new decision).
Provisionable capacity (:class:`ProvisionableClass`: Karpenter NodePools, Cluster API node
groups, configured node groups) is read by :func:`nodepool_from_object`,
:func:`node_group_from_object` and :func:`node_group`, and kept by :class:`Capacity`.
Resource quantities (``500m``, ``64Gi``) are read exactly by :func:`quantity`.
Malformed objects raise :class:`InvalidWorkload` / :class:`InvalidNode` /
:class:`InvalidCapacity` naming the field.
"""

from archwarden.policy._capacity import (
    KARPENTER_WELL_KNOWN_LABELS,
    Capacity,
    LabelOptions,
    Offer,
    ProvisionableClass,
    Source,
    offer_admits,
)
from archwarden.policy._decisions import (
    Decision,
    FailurePolicy,
    ImageAnswer,
    ImageFailure,
    Mode,
    Nodes,
    Placement,
    Provisionable,
    Reason,
    decide,
    settled,
    stranded,
)
from archwarden.policy._errors import InvalidCapacity, InvalidNode, InvalidObject, InvalidWorkload
from archwarden.policy._findings import (
    ExecEvidence,
    ExecFormatFinding,
    arch_unschedulable,
    drift_message,
    exec_format_finding,
    exec_format_message,
    lost_platforms,
    pending_message,
)
from archwarden.policy._gates import (
    GATE,
    GateMode,
    RemoveOperation,
    TestOperation,
    gated,
    hold_ops,
    release_ops,
)
from archwarden.policy._inventory import Inventory, NodeClass, class_of, metric_key
from archwarden.policy._mutation import (
    ANNOTATION_PLATFORMS,
    PatchOperation,
    pod_patch,
    template_patch,
)
from archwarden.policy._nodes import (
    LABEL_ARCH,
    LABEL_BETA_ARCH,
    LABEL_BETA_OS,
    LABEL_OS,
    LABEL_WINDOWS_BUILD,
    SYNTHETIC_LABELS,
    Node,
    Taint,
    node_from_object,
    nodes_from_platforms,
)
from archwarden.policy._offline import assume_unmodelled
from archwarden.policy._quantities import milli, quantity, whole
from archwarden.policy._scheduling import (
    DEFAULT_PLATFORM_TAINTS,
    PlatformTaint,
    candidate_nodes,
    concerned,
)
from archwarden.policy._sources import (
    CAPI_KINDS,
    node_group,
    node_group_from_object,
    nodepool_from_object,
)
from archwarden.policy._workloads import (
    SPEC_PATHS,
    Container,
    ContainerKind,
    PodTemplate,
    Requirement,
    SelectorTerm,
    Toleration,
    Workload,
    extract,
    least_projected_bytes,
    scheduling_changed,
)

__all__ = [
    "ANNOTATION_PLATFORMS",
    "CAPI_KINDS",
    "DEFAULT_PLATFORM_TAINTS",
    "GATE",
    "KARPENTER_WELL_KNOWN_LABELS",
    "LABEL_ARCH",
    "LABEL_BETA_ARCH",
    "LABEL_BETA_OS",
    "LABEL_OS",
    "LABEL_WINDOWS_BUILD",
    "SPEC_PATHS",
    "SYNTHETIC_LABELS",
    "Capacity",
    "Container",
    "ContainerKind",
    "Decision",
    "ExecEvidence",
    "ExecFormatFinding",
    "FailurePolicy",
    "GateMode",
    "ImageAnswer",
    "ImageFailure",
    "InvalidCapacity",
    "InvalidNode",
    "InvalidObject",
    "InvalidWorkload",
    "Inventory",
    "LabelOptions",
    "Mode",
    "Node",
    "NodeClass",
    "Nodes",
    "Offer",
    "PatchOperation",
    "Placement",
    "PlatformTaint",
    "PodTemplate",
    "Provisionable",
    "ProvisionableClass",
    "Reason",
    "RemoveOperation",
    "Requirement",
    "SelectorTerm",
    "Source",
    "Taint",
    "TestOperation",
    "Toleration",
    "Workload",
    "arch_unschedulable",
    "assume_unmodelled",
    "candidate_nodes",
    "class_of",
    "concerned",
    "decide",
    "drift_message",
    "exec_format_finding",
    "exec_format_message",
    "extract",
    "gated",
    "hold_ops",
    "least_projected_bytes",
    "lost_platforms",
    "metric_key",
    "milli",
    "node_from_object",
    "node_group",
    "node_group_from_object",
    "nodepool_from_object",
    "nodes_from_platforms",
    "offer_admits",
    "pending_message",
    "pod_patch",
    "quantity",
    "release_ops",
    "scheduling_changed",
    "settled",
    "stranded",
    "template_patch",
    "whole",
]
