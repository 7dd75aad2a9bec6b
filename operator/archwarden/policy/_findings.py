"""What archwarden says about workloads after admission: pure functions over values.

- tag drift: a mutable tag's new digest no longer supports a platform a workload needs;
- pending pods: the scheduler found no node, and the images' platforms explain why;
- exec format errors: a container's runtime could not execute its binary on the node.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from archwarden import platforms
from archwarden.policy import _messages

__all__ = [
    "arch_unschedulable",
    "drift_message",
    "exec_format_error",
    "exec_format_message",
    "lost_platforms",
    "pending_message",
]

_EXEC_FORMAT = re.compile(r"exec format error", re.IGNORECASE)
# The scheduler's FailedScheduling text names the filters that refused nodes, e.g.
# "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector."
_AFFINITY = re.compile(r"node affinity|node selector|affinity/selector", re.IGNORECASE)


def _shown(items: Iterable[platforms.Platform]) -> list[str]:
    return sorted({_messages.show(p) for p in items})


def lost_platforms(
    old: Sequence[platforms.Platform],
    new: Sequence[platforms.Platform],
    needed: Iterable[platforms.Platform],
    fallbacks: platforms.Fallbacks = platforms.DEFAULT_FALLBACKS,
) -> tuple[str, ...]:
    """Node platforms in ``needed`` the old image ran on and the new one does not."""
    lost = {
        node
        for node in needed
        if any(platforms.node_can_run(node, p, fallbacks) for p in old)
        and not any(platforms.node_can_run(node, p, fallbacks) for p in new)
    }
    return tuple(_shown(lost))


def drift_message(
    image: str,
    old: Sequence[platforms.Platform],
    new: Sequence[platforms.Platform],
    lost: Sequence[str],
) -> str:
    before = _messages.join_and(_shown(old))
    gone = _messages.join_and(list(lost))
    return (
        f"image {image} now {_messages.supports(new)} (it supported {before}): its new digest "
        f"lost {gone}, which this workload runs on; the next rollout would be denied"
    )


def exec_format_error(message: str) -> bool:
    """Whether a container state's message is the kernel refusing the binary's format."""
    return bool(_EXEC_FORMAT.search(message))


def exec_format_message(
    container: str,
    image: str,
    image_platforms: Sequence[platforms.Platform] | None,
    node: str,
    node_platform: platforms.Platform | None,
    unknown_because: str | None = None,
) -> str:
    """``unknown_because``: when the image's platforms are unknown, the registry's error."""
    where = f"node {node} ({_messages.show(node_platform)})" if node_platform else f"node {node}"
    if image_platforms is None:
        said = "its platforms are not known to archwarden"
        if unknown_because:
            said = f"its platforms could not be read: {unknown_because}"
    else:
        said = f"the image says it {_messages.supports(image_platforms)}"
        if node_platform is not None and any(
            platforms.node_can_run(node_platform, p) for p in image_platforms
        ):
            said += ", so its binary does not match what the image says"
    return f"container {container} (image {image}) failed with exec format error on {where}: {said}"


def arch_unschedulable(message: str) -> bool:
    """Whether the scheduler's Unschedulable message blames node affinity or selectors."""
    return bool(_AFFINITY.search(message))


def pending_message(
    images: Sequence[tuple[str, Sequence[platforms.Platform]]],
    node_platforms: Iterable[platforms.Platform],
    pinned_arches: Sequence[str] = (),
) -> str | None:
    """Why no node matches, from the images' platforms, the pod's architecture pin (its
    ``kubernetes.io/arch`` selector or required affinity) and the nodes' platforms; None when
    some node platform satisfies both (the pod waits for another reason)."""
    nodes = sorted(set(node_platforms))
    usable = [
        node
        for node in nodes
        if (not pinned_arches or node.architecture in pinned_arches)
        and all(any(platforms.node_can_run(node, p) for p in found) for _image, found in images)
    ]
    if usable:
        return None
    parts = [f"image {image} {_messages.supports(found)}" for image, found in images]
    if pinned_arches:
        parts.append(f"the pod asks for {_messages.join_and(sorted(pinned_arches))}")
    shown = _messages.join_and(_shown(nodes)) or "none"
    return f"no node matches this pod's architecture: {'; '.join(parts)}; the nodes are {shown}"
