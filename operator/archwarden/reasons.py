"""Event reasons: the one home of every reason archwarden posts an Event with.

Users filter on them (``kubectl get events --field-selector reason=...``) and alert on them, so
they are stable; the README lists exactly these (a test checks it). Each constant says when it
is posted and with which Event type.
"""

from __future__ import annotations

import dataclasses

__all__ = [
    "ALL",
    "ARCHITECTURE_CHECK_SKIPPED",
    "ARCHITECTURE_MISMATCH",
    "ARCHITECTURE_UNAVAILABLE",
    "EXEC_FORMAT_ERROR",
    "IMAGE_INSPECTION_FAILED",
    "IMAGE_PLATFORMS_CHANGED",
    "IMAGE_PLATFORMS_MISLABELLED",
    "NODE_AFFINITY_INJECTED",
    "NO_NODE_FOR_ARCHITECTURE",
    "PROVISIONABLE_CAPACITY",
    "SCHEDULING_GATE_RELEASED",
    "TOLERATION_INJECTED",
    "EventReason",
]


@dataclasses.dataclass(frozen=True)
class EventReason:
    reason: str
    type: str
    """``Normal`` or ``Warning``."""
    meaning: str


ARCHITECTURE_MISMATCH = "ArchitectureMismatch"
NODE_AFFINITY_INJECTED = "NodeAffinityInjected"
TOLERATION_INJECTED = "TolerationInjected"
PROVISIONABLE_CAPACITY = "ProvisionableCapacity"
IMAGE_INSPECTION_FAILED = "ImageInspectionFailed"
ARCHITECTURE_UNAVAILABLE = "ArchitectureUnavailable"
ARCHITECTURE_CHECK_SKIPPED = "ArchitectureCheckSkipped"
IMAGE_PLATFORMS_CHANGED = "ImagePlatformsChanged"
IMAGE_PLATFORMS_MISLABELLED = "ImagePlatformsMislabelled"
EXEC_FORMAT_ERROR = "ExecFormatError"
NO_NODE_FOR_ARCHITECTURE = "NoNodeForArchitecture"
SCHEDULING_GATE_RELEASED = "SchedulingGateReleased"

ALL: tuple[EventReason, ...] = (
    EventReason(
        ARCHITECTURE_MISMATCH,
        "Warning",
        "no node (nor capacity an autoscaler can add) runs every image: denied, warned or "
        "audited by mode; a gated pod stays gated",
    ),
    EventReason(NODE_AFFINITY_INJECTED, "Normal", "node affinity added: which platforms, why"),
    EventReason(
        TOLERATION_INJECTED,
        "Normal",
        "tolerations added for architecture taints every image runs under",
    ),
    EventReason(
        PROVISIONABLE_CAPACITY,
        "Normal",
        "admitted because a NodePool or node group can provision a node that runs it",
    ),
    EventReason(
        IMAGE_INSPECTION_FAILED,
        "Warning",
        "an image could not be read (or a review limit was passed): decided by failurePolicy",
    ),
    EventReason(
        ARCHITECTURE_UNAVAILABLE,
        "Warning",
        "a workload admitted earlier has no node left that runs it",
    ),
    EventReason(
        ARCHITECTURE_CHECK_SKIPPED,
        "Normal",
        "archwarden.io/skip honoured where skip.allowed permits it",
    ),
    EventReason(
        IMAGE_PLATFORMS_CHANGED,
        "Warning",
        "the audit found a tag re-pushed without a platform the workload runs on",
    ),
    EventReason(
        IMAGE_PLATFORMS_MISLABELLED,
        "Warning",
        "an index entry claims a platform its image's config contradicts (audit.verifyImages)",
    ),
    EventReason(
        EXEC_FORMAT_ERROR,
        "Warning",
        "a container failed with exec format error: the image's platforms and the node's",
    ),
    EventReason(
        NO_NODE_FOR_ARCHITECTURE,
        "Warning",
        "a pod waits with no node of its images' architecture to be scheduled to",
    ),
    EventReason(
        SCHEDULING_GATE_RELEASED,
        "Warning",
        "archwarden ungate released a pod unchecked",
    ),
)
"""Every reason, in the README's order."""
