"""What archwarden says about workloads after admission: pure functions over values.

- tag drift: a mutable tag's new digest no longer supports a platform a workload needs;
- pending pods: the scheduler found no node, and the images' platforms explain why;
- exec format errors: a container's runtime could not execute its binary on the node.
"""

from __future__ import annotations

import dataclasses
import enum
import re
from collections.abc import Iterable, Sequence

from archwarden import platforms
from archwarden.policy import _messages

__all__ = [
    "ExecEvidence",
    "ExecFormatFinding",
    "arch_unschedulable",
    "drift_message",
    "exec_format_finding",
    "exec_format_message",
    "lost_platforms",
    "pending_message",
]

# Where an exec format error can come from, read in the runtimes' sources:
#
# - A runtime that fails the container's *start* with it reports it to the kubelet, which gives
#   the container a reason only it sets: containerd's CRI marks the container exited with
#   "StartError" and the error as message (containerd internal/cri/server/container_start.go,
#   helpers.go errorStartReason), the kubelet's waiting reason is "RunContainerError"
#   (kubernetes pkg/kubelet/container/sync_result.go ErrRunContainer) or
#   "CreateContainerError" (pkg/kubelet/kuberuntime ErrCreateContainer), and dockershim's was
#   "ContainerCannotRun" (kuberuntime_container.go still names it). gVisor fails the start this
#   way: its sentry loads the ELF itself, "failed to load <path>: exec format error" (google/
#   gvisor pkg/sentry/loader/loader.go). The container never ran, so it cannot have written
#   that message. The message must still name the entrypoint in a runtime's words: the
#   runtime's own launches of node binaries (a shim, a hook: Go's "fork/exec <path>: exec
#   format error") fail with the same errno and say nothing about the image.
# - runc and crun do not fail the start: both exec the entrypoint after it (runc's LookPath
#   before the exec fifo checks existence and the execute bit, not the format), so the kernel's
#   refusal is written by the runtime's init on the container's own stderr and the container
#   exits non-zero, reason "Error" (containerd helpers.go errorExitReason, CRI-O
#   server/container_status.go errorReason). runc >= 1.1 writes "exec <path>: exec format
#   error" (opencontainers/runc internal/linux/linux.go Exec: an os.PathError; printed by
#   libcontainer/init_linux.go Init, exit 255, 1 in 1.1), runc 1.0 "standard_init_linux.go:
#   <line>: exec user process caused: exec format error" (before rc92: caused "exec format
#   error"; libcontainer/generic_error.go), crun "exec container process `<path>`: Exec format
#   error", or that as JSON's "msg" (containers/crun src/libcrun/container.c container_init,
#   src/libcrun/error.c). The kubelet copies it into the message only with
#   terminationMessagePolicy FallbackToLogsOnError, from that run's log, so the runtime's line
#   is the whole message. A container can print the same line itself: only a log line.
# Anything else (a shell in the image failing to run one of the image's files, text in the
# termination log) is the container's own output. That file's format is not the image's
# platform, which is what archwarden knows, so archwarden says nothing.
_RUNTIME_REASONS = frozenset(
    {"StartError", "RunContainerError", "CreateContainerError", "ContainerCannotRun"}
)
_LOG_REASON = "Error"
"""A log line's reason: runc and crun exit non-zero when execve fails."""
# A path as runtimes print it: no whitespace, no control character (and in quotes, no quote).
_PATH = r"(?P<path>[^\x00-\x20\x7f]+)"
_QUOTED_PATH = r"(?P<path>[^\x00-\x1f\x7f`\"]+)"
_RUNC = rf"exec {_PATH}: exec format error"
_RUNC_1_0 = r'standard_init_linux\.go:\d+: exec user process caused:? "?exec format error"?'
_CRUN = rf"exec container process `{_QUOTED_PATH}`: Exec format error"
_LOG_LINES = (
    ("runc", re.compile(_RUNC)),
    ("runc", re.compile(_RUNC_1_0)),
    ("crun", re.compile(_CRUN)),
    ("crun", re.compile(rf'\{{"msg":"{_CRUN}"[^\n]*\}}')),
)
# In a start failure, after the runtimes' own wrapping ("...: " or a quote): the same shapes,
# Go's exec.Error form (runc's wording for an entrypoint it cannot run) and gVisor's.
_AFTER_WRAPPING = r'(?:^|(?<=[\s:"]))'
_RUNTIME_SHAPES = tuple(
    re.compile(_AFTER_WRAPPING + shape)
    for shape in (
        _RUNC,
        _RUNC_1_0,
        _CRUN,
        rf'exec: "{_QUOTED_PATH}": exec format error',
        rf"failed to load {_PATH}: exec format error",
    )
)
_PATH_SHOWN = 120  # characters of a log line's entrypoint an Event shows: the container's text
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


class ExecEvidence(enum.StrEnum):
    """What says a container failed with exec format error (a metric label: two values)."""

    RUNTIME = "runtime"
    """The runtime's start failure, under a reason only the kubelet and runtime set."""
    LOG = "log"
    """Only a log line in the shape a runtime writes: the container could have written it."""


@dataclasses.dataclass(frozen=True, slots=True)
class ExecFormatFinding:
    evidence: ExecEvidence
    source: str
    """RUNTIME: the container's reason (``StartError``...); LOG: whose line it looks like
    (``runc``, ``crun``)."""
    path: str = ""
    """The entrypoint the runtime's words name ('' when they name none: runc before 1.1)."""


def exec_format_finding(reason: str, message: str) -> ExecFormatFinding | None:
    """Whether a container state's reason and message say the kernel refused the format of its
    entrypoint, and on what evidence; None when only the container's own output says so."""
    if reason in _RUNTIME_REASONS:
        for shape in _RUNTIME_SHAPES:
            match = shape.search(message)
            if match is not None:
                return ExecFormatFinding(ExecEvidence.RUNTIME, reason, _path(match))
        return None
    if reason != _LOG_REASON:
        return None
    line = message.strip()
    for runtime, shape in _LOG_LINES:
        match = shape.fullmatch(line)
        if match is not None:
            return ExecFormatFinding(ExecEvidence.LOG, runtime, _path(match))
    return None


def _path(match: re.Match[str]) -> str:
    return match.groupdict().get("path") or ""


def exec_format_message(
    container: str,
    image: str,
    finding: ExecFormatFinding,
    image_platforms: Sequence[platforms.Platform] | None,
    node: str,
    node_platform: platforms.Platform | None,
    unknown_because: str | None = None,
) -> str:
    """``unknown_because``: when the image's platforms are unknown, the registry's error."""
    where = f"node {node} ({_messages.show(node_platform)})" if node_platform else f"node {node}"
    by_runtime = finding.evidence is ExecEvidence.RUNTIME
    if image_platforms is None:
        said = "its platforms are not known to archwarden"
        if unknown_because:
            said = f"its platforms could not be read: {unknown_because}"
    else:
        said = f"the image says it {_messages.supports(image_platforms)}"
        if node_platform is not None and any(
            platforms.node_can_run(node_platform, p) for p in image_platforms
        ):
            # A log line is not proof enough to call what the image says wrong.
            said += ", so" if by_runtime else f", so if the line is {finding.source}'s,"
            said += " its binary does not match what the image says"
    if by_runtime:
        return (
            f"container {container} (image {image}) failed with exec format error on {where}, "
            f"as the container runtime reported ({finding.source}): {said}"
        )
    path = finding.path
    if len(path) > _PATH_SHOWN:
        path = path[: _PATH_SHOWN - 3] + "..."
    entrypoint = f"its entrypoint {path}" if path else "its entrypoint"
    return (
        f"container {container} (image {image}) on {where} ended with a log line saying exec "
        f"format error for {entrypoint}, as {finding.source} writes when the kernel refuses the "
        "entrypoint's binary; the evidence is only this log line, which the container could "
        f"have written itself: {said}"
    )


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
