"""The cluster's pods, kept as they change: only what run-time findings read.

One ``kube.Watch`` stream on ``/api/v1/pods``. Of each pod only a small projection is kept
(:class:`Pod`): where it runs, which images its containers use, what its controller is, and the
few status texts archwarden explains (a container's waiting/terminated reason and message, the
scheduler's PodScheduled=False message). Repeated strings (namespaces, node names, images) are
interned, so 10,000 pods of a few hundred Deployments share them (bench/watch_memory.py).

Every string kept is bounded: status texts by ``TEXT_MAX``, names and reasons by ``NAME_MAX``,
an image past ``reference.REFERENCE_MAX`` (invalid anyway) by a short prefix and a marker, so a
pod costs at most about ``MAX_CONTAINERS`` times a few hundred bytes, whatever its spec says.

The store is bounded like ``workload_store``: beyond ``limit`` pods new ones are counted, not
kept. Consumers are told of every kept pod that changed (``on_changed``), with its previous
projection, so they can react to transitions (a container starting to fail) and not to every
status heartbeat.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from archwarden import kube, policy, reference

__all__ = ["MAX_PODS", "ContainerProblem", "Key", "Pod", "PodStore", "project"]

logger = logging.getLogger("archwarden")

MAX_PODS = 100_000
"""Far above the 10,000 pods archwarden is measured with (bench/watch_memory.py)."""
TEXT_MAX = 512
"""Characters kept of a status message: enough for the runtime's error, never a log."""
MAX_CONTAINERS = 64
"""Containers kept per pod (init and regular): the admission's image bound is of this order."""
NAME_MAX = 253
"""Characters kept of a name or reason: a Kubernetes name is at most this long (a DNS
subdomain), so only what the API server does not validate (owner references, status written
by the kubelet) is ever cut."""
IMAGE_KEPT = 128
"""Characters kept of an image longer than ``reference.REFERENCE_MAX``: enough to say which."""
CUT = "…"
"""Ends a cut name: no Kubernetes name contains it, so a cut owner never matches a workload."""
MAX_PINNED = 32
"""Architectures kept of a pod's arch pin: more than every GOARCH anyone builds images for."""

Key = tuple[str, str]
"""``(namespace, name)``."""


@dataclasses.dataclass(frozen=True, slots=True)
class ContainerProblem:
    """A container's waiting or terminated state with a message (a failure to start)."""

    container: str
    image: str
    state: str
    """waiting | terminated"""
    reason: str
    message: str


@dataclasses.dataclass(frozen=True, slots=True)
class Pod:
    namespace: str
    name: str
    uid: str
    owner_kind: str
    """The controller's kind ('' when the pod has none)."""
    owner_name: str
    node: str
    phase: str
    images: tuple[tuple[str, str], ...]
    """(container name, image) of init and regular containers."""
    problems: tuple[ContainerProblem, ...] = ()
    unschedulable: str = ""
    """The PodScheduled=False condition's message when its reason is Unschedulable."""
    pinned_arches: tuple[str, ...] = ()
    """Architectures the pod's ``kubernetes.io/arch`` node selector or required affinity allows
    (() when it does not pin one)."""
    gated: bool = False
    """The pod carries archwarden's scheduling gate (it waits for archwarden's decision)."""
    created: str = ""
    """``metadata.creationTimestamp`` as written (RFC 3339), for how long a gated pod waited."""

    @property
    def ref(self) -> dict[str, Any]:
        """Enough to post an Event about the pod."""
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": self.name, "namespace": self.namespace, "uid": self.uid},
        }

    @property
    def body(self) -> dict[str, Any]:
        """The metadata an owner lookup reads (``handlers._event_target``)."""
        meta: dict[str, Any] = {"name": self.name, "namespace": self.namespace, "uid": self.uid}
        if self.owner_kind:
            api_version = "apps/v1" if self.owner_kind != "Job" else "batch/v1"
            meta["ownerReferences"] = [
                {
                    "apiVersion": api_version,
                    "kind": self.owner_kind,
                    "name": self.owner_name,
                    "controller": True,
                }
            ]
        return {"apiVersion": "v1", "kind": "Pod", "metadata": meta}


def _text(value: Any) -> str:
    return str(value or "")[:TEXT_MAX]


def _name(value: Any, limit: int = NAME_MAX) -> str:
    text = str(value or "")
    if len(text) > limit:
        text = text[:limit] + CUT
    return sys.intern(text)


def _image(value: Any) -> str:
    """The image as written, or when longer than any valid reference, its start and a marker:
    the marker's space and parentheses make it no reference, so nothing resolves a cut image."""
    text = str(value or "")
    if len(text) > reference.REFERENCE_MAX:
        text = f"{text[:IMAGE_KEPT]}{CUT}(cut, {len(text)} characters)"
    return sys.intern(text)


def project(body: Mapping[str, Any]) -> Pod:
    """The projection of one Pod object (never raises on odd shapes: fields read as empty)."""
    meta = body.get("metadata") or {}
    spec = body.get("spec") or {}
    status = body.get("status") or {}
    owner = next(
        (
            r
            for r in meta.get("ownerReferences") or ()
            if isinstance(r, Mapping) and r.get("controller")
        ),
        None,
    )
    images: list[tuple[str, str]] = []
    for field in ("initContainers", "containers"):
        for container in spec.get(field) or ():
            if isinstance(container, Mapping) and len(images) < MAX_CONTAINERS:
                images.append((_name(container.get("name")), _image(container.get("image"))))
    by_name = dict(images)
    problems: list[ContainerProblem] = []
    for field in ("initContainerStatuses", "containerStatuses"):
        for cs in status.get(field) or ():
            if not isinstance(cs, Mapping) or len(problems) >= MAX_CONTAINERS:
                continue
            state = cs.get("state") or {}
            for which in ("waiting", "terminated"):
                detail = state.get(which)
                if isinstance(detail, Mapping) and detail.get("message"):
                    name = _name(cs.get("name"))
                    problems.append(
                        ContainerProblem(
                            name,
                            by_name.get(name, _image(cs.get("image"))),
                            which,
                            _name(detail.get("reason")),
                            _text(detail.get("message")),
                        )
                    )
            # The last run's failure stays in lastState while the container waits to restart
            # (CrashLoopBackOff's own message only says "back-off ... restarting").
            last = (cs.get("lastState") or {}).get("terminated")
            if isinstance(last, Mapping) and last.get("message"):
                name = _name(cs.get("name"))
                problems.append(
                    ContainerProblem(
                        name,
                        by_name.get(name, _image(cs.get("image"))),
                        "terminated",
                        _name(last.get("reason")),
                        _text(last.get("message")),
                    )
                )
    unschedulable = ""
    for condition in status.get("conditions") or ():
        if (
            isinstance(condition, Mapping)
            and condition.get("type") == "PodScheduled"
            and condition.get("status") == "False"
            and condition.get("reason") == "Unschedulable"
        ):
            unschedulable = _text(condition.get("message"))
    gates = spec.get("schedulingGates")
    return Pod(
        gated=isinstance(gates, list)
        and any(isinstance(g, Mapping) and g.get("name") == policy.GATE for g in gates),
        created=_name(meta.get("creationTimestamp"), 40) if gates else "",
        pinned_arches=_arch_pin(spec),
        # The API server validates these (a DNS label, a DNS subdomain, its own uid).
        namespace=_name(meta.get("namespace")),
        name=str(meta.get("name") or ""),
        uid=str(meta.get("uid") or ""),
        owner_kind=_name(owner.get("kind")) if owner else "",
        owner_name=_name(owner.get("name")) if owner else "",
        node=_name(spec.get("nodeName")),
        phase=_name(status.get("phase")),
        images=tuple(images),
        problems=tuple(problems),
        unschedulable=unschedulable,
    )


ARCH_LABEL = "kubernetes.io/arch"
LABEL_VALUE_MAX = 63
"""A label value's length: a longer pinned value matches no node's label, cut or not."""


def _arch_pin(spec: Mapping[str, Any]) -> tuple[str, ...]:
    selector = spec.get("nodeSelector") or {}
    if isinstance(selector, Mapping) and selector.get(ARCH_LABEL):
        return (_name(selector[ARCH_LABEL], LABEL_VALUE_MAX),)
    affinity = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    ) or {}
    allowed: set[str] = set()
    for term in affinity.get("nodeSelectorTerms") or () if isinstance(affinity, Mapping) else ():
        pinned = False
        for expression in (term or {}).get("matchExpressions") or ():
            if (
                isinstance(expression, Mapping)
                and expression.get("key") == ARCH_LABEL
                and expression.get("operator") == "In"
            ):
                allowed.update(_name(v, LABEL_VALUE_MAX) for v in expression.get("values") or ())
                pinned = True
        if not pinned or len(allowed) > MAX_PINNED:
            # A term without an arch requirement admits every architecture. So many values are
            # no pin anyone meant: read as none, pending pods are explained by their images
            # alone, rather than by a subset that could leave out the one a node has.
            return ()
    return tuple(sorted(allowed))


class PodStore:
    def __init__(self, limit: int = MAX_PODS) -> None:
        self._limit = limit
        self._pods: dict[Key, Pod] = {}
        self.refused = 0
        """Pods not kept because the store was full."""
        self.on_changed: Callable[[Pod | None, Pod], None] = lambda _old, _new: None
        """Told of every kept pod whose projection changed: (previous or None, current)."""
        self.on_deleted: Callable[[str, str], None] = lambda _namespace, _name: None
        """Told of every kept pod that went away: (namespace, name)."""

    def __len__(self) -> int:
        return len(self._pods)

    def __iter__(self) -> Iterator[Pod]:
        return iter(list(self._pods.values()))

    def get(self, namespace: str, name: str) -> Pod | None:
        return self._pods.get((namespace, name))

    def watch(self, connection: kube.Connection) -> kube.Watch:
        return kube.Watch(
            connection,
            "/api/v1/pods",
            on_object=self.put,
            on_deleted=self.delete,
            on_listed=self.keep_only,
        )

    def put(self, body: Mapping[str, Any]) -> None:
        pod = project(body)
        key = (pod.namespace, pod.name)
        old = self._pods.get(key)
        if old == pod:
            return  # a status heartbeat: nothing kept changed
        if old is None and len(self._pods) >= self._limit:
            if not self.refused:
                logger.warning("more than %d pods: the rest are not watched", self._limit)
            self.refused += 1
            return
        self._pods[key] = pod
        self.on_changed(old, pod)

    def delete(self, body: Mapping[str, Any]) -> None:
        meta = body.get("metadata") or {}
        key = (str(meta.get("namespace") or ""), str(meta.get("name") or ""))
        if self._pods.pop(key, None) is not None:
            self.on_deleted(*key)

    def keep_only(self, names: set[str]) -> None:
        """After a complete list: drop pods deleted while the stream was down."""
        for key in [k for k in self._pods if f"{k[0]}/{k[1]}" not in names]:
            del self._pods[key]
            self.on_deleted(*key)

    def on_node(self, node: str) -> list[Pod]:
        """Pods placed on ``node``."""
        return [p for p in self._pods.values() if p.node == node]
