"""What a workload holds on its nodes: its pods' CPU and memory requests, times its pods.

A pod's requests are counted as the scheduler counts them, after Kubernetes'
``PodRequests`` (staging/src/k8s.io/component-helpers/resource/helpers.go): per resource,
the sum over ``containers`` and sidecars (init containers with ``restartPolicy: Always``),
or more if an init container needs more while it runs (its own requests plus the sidecars
started before it); pod-level ``spec.resources.requests`` replace the containers' CPU or
memory; ``spec.overhead`` is added. Status (in-place resize) is not read: the spec is what
a move to new nodes would ask for.

Pods per workload: ``spec.replicas`` (default 1) of a Deployment, StatefulSet or ReplicaSet,
``spec.parallelism`` (default 1) of a Job or of a CronJob's job template, 1 for a Pod, and for
a DaemonSet ``status.desiredNumberScheduled`` (the nodes its controller would run it on), once
its controller has observed it (``status.observedGeneration``: a new DaemonSet reads 0 until
then); before that, one pod per node of the cluster, noted. Rather than judge each node
against its selector and tolerations ourselves, we take the controller's count.
"""

from __future__ import annotations

import dataclasses
import fractions
from collections.abc import Iterable, Mapping
from typing import Any

from archwarden import policy

__all__ = ["NOTHING", "RESOURCES", "Weight", "pod_requests", "sum_of", "weigh"]

RESOURCES = ("cpu", "memory")
"""CPU in millicores, memory in bytes: each rounded up, as the scheduler reads them."""
MAX_NOTES = 8
"""Notes per workload: a template with 500 malformed quantities says so in a few lines."""

Requests = dict[str, fractions.Fraction]


@dataclasses.dataclass(frozen=True)
class Weight:
    cpu_millis: int = 0
    """Per pod, in millicores."""
    memory_bytes: int = 0
    """Per pod."""
    replicas: int = 0
    notes: tuple[str, ...] = ()
    """What could not be read (a malformed quantity counts as 0) or was assumed."""

    @property
    def total_cpu_millis(self) -> int:
        return self.cpu_millis * self.replicas

    @property
    def total_memory_bytes(self) -> int:
        return self.memory_bytes * self.replicas


NOTHING = Weight()
"""The weight of a workload the caller did not weigh: no requests, no replicas."""


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _read(raw: object, path: str, notes: list[str]) -> Requests:
    """The CPU and memory of a resource list; a malformed quantity is noted and counts 0."""
    found: Requests = {}
    for resource, text in _mapping(raw).items():
        if resource not in RESOURCES:
            continue
        # Quantities arrive as strings, or as numbers when written without quotes.
        if isinstance(text, bool) or not isinstance(text, str | int | float):
            value = None
        else:
            value = policy.quantity(str(text))
        if value is None or value < 0:
            notes.append(f"{path}.{resource}: not a quantity {str(text)[:40]!r}, counted as 0")
            continue
        found[resource] = value
    return found


def _add(into: Requests, more: Requests) -> None:
    for resource, value in more.items():
        into[resource] = into.get(resource, fractions.Fraction(0)) + value


def _at_least(into: Requests, other: Requests) -> None:
    for resource, value in other.items():
        into[resource] = max(into.get(resource, fractions.Fraction(0)), value)


def pod_requests(spec: Mapping[str, Any], notes: list[str]) -> Requests:
    """A pod spec's requests as the scheduler counts them (see the module docstring)."""
    result: Requests = {}
    for i, container in enumerate(_list(spec.get("containers"))):
        resources = _mapping(_mapping(container).get("resources"))
        _add(result, _read(resources.get("requests"), f"containers[{i}].requests", notes))
    sidecars: Requests = {}
    init: Requests = {}
    for i, container in enumerate(_list(spec.get("initContainers"))):
        body = _mapping(container)
        own = _read(
            _mapping(body.get("resources")).get("requests"),
            f"initContainers[{i}].requests",
            notes,
        )
        if body.get("restartPolicy") == "Always":
            _add(result, own)
            _add(sidecars, own)
            running = dict(sidecars)
        else:
            running = dict(own)
            _add(running, sidecars)
        _at_least(init, running)
    _at_least(result, init)
    result.update(_read(_mapping(spec.get("resources")).get("requests"), "resources", notes))
    _add(result, _read(spec.get("overhead"), "overhead", notes))
    return result


def _count(value: object, path: str, notes: list[str], default: int = 1) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        notes.append(f"{path}: not a count {str(value)[:40]!r}, counted as {default}")
        return default
    return value


def _pod_spec(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    spec = _mapping(obj.get("spec"))
    kind = obj.get("kind")
    if kind == "Pod":
        return spec
    if kind == "CronJob":
        spec = _mapping(_mapping(spec.get("jobTemplate")).get("spec"))
    return _mapping(_mapping(spec.get("template")).get("spec"))


def _replicas(obj: Mapping[str, Any], nodes: int, notes: list[str]) -> int:
    spec = _mapping(obj.get("spec"))
    kind = obj.get("kind")
    if kind in ("Deployment", "StatefulSet", "ReplicaSet"):
        return _count(spec.get("replicas"), "spec.replicas", notes)
    if kind == "Job":
        return _count(spec.get("parallelism"), "spec.parallelism", notes)
    if kind == "CronJob":
        job = _mapping(_mapping(spec.get("jobTemplate")).get("spec"))
        return _count(job.get("parallelism"), "spec.jobTemplate.spec.parallelism", notes)
    if kind == "DaemonSet":
        status = _mapping(obj.get("status"))
        if status.get("observedGeneration") is None:
            notes.append(f"not yet counted by its controller: one pod per node ({nodes})")
            return nodes
        return _count(
            status.get("desiredNumberScheduled"), "status.desiredNumberScheduled", notes, nodes
        )
    return 1


def weigh(obj: Mapping[str, Any], *, nodes: int) -> Weight:
    """The requests of one workload object (``nodes``: the cluster's, for a DaemonSet)."""
    notes: list[str] = []
    requests = pod_requests(_pod_spec(obj), notes)
    replicas = _replicas(obj, nodes, notes)
    zero = fractions.Fraction(0)
    kept = notes[:MAX_NOTES]
    if len(notes) > MAX_NOTES:
        kept.append(f"and {len(notes) - MAX_NOTES} more")
    return Weight(
        cpu_millis=policy.milli(requests.get("cpu", zero)),
        memory_bytes=policy.whole(requests.get("memory", zero)),
        replicas=replicas,
        notes=tuple(kept),
    )


def sum_of(weights: Iterable[Weight]) -> tuple[int, int, int]:
    """(millicores, bytes, replicas) over ``weights``, each times its replicas."""
    cpu = memory = replicas = 0
    for weight in weights:
        cpu += weight.total_cpu_millis
        memory += weight.total_memory_bytes
        replicas += weight.replicas
    return cpu, memory, replicas
