"""archwarden's scheduling gate: a pod waits for its check instead of running unchecked.

The gate ``archwarden.io/platforms`` is put on pods at creation (by the chart's
MutatingAdmissionPolicy inside the API server, or by the webhook when it cannot decide in time)
and removed by archwarden once it has decided, in the same patch that adds the node affinity.
While a pod is gated the scheduler leaves it alone (``SchedulingGated``), and the API allows
node affinity to be narrowed, so a late decision still places the pod.

JSON patches here are pure: they read the pod as the caller has it.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any, Literal, TypedDict

from archwarden.policy import _mutation

__all__ = [
    "GATE",
    "GateMode",
    "RemoveOperation",
    "TestOperation",
    "gated",
    "hold_ops",
    "release_ops",
]

GATE = "archwarden.io/platforms"


class GateMode(enum.StrEnum):
    """Where the gate comes from (``schedulingGates.mode``)."""

    OFF = "off"
    """No gate: a pod archwarden cannot decide in time is admitted unchecked (fail open)."""
    WEBHOOK = "webhook"
    """No MutatingAdmissionPolicy (clusters before 1.36): the webhook adds the gate itself
    when it cannot decide within its budget. Pods it never sees (archwarden down) are not
    gated."""
    POLICY = "policy"
    """The chart's MutatingAdmissionPolicy gates every pod in scope inside the API server, so
    pods wait even when no archwarden replica answers."""


class RemoveOperation(TypedDict):
    op: Literal["remove"]
    path: str


class TestOperation(TypedDict):
    op: Literal["test"]
    path: str
    value: Any


def _gates(pod: Mapping[str, Any]) -> list[Any]:
    spec = pod.get("spec")
    gates = spec.get("schedulingGates") if isinstance(spec, Mapping) else None
    return gates if isinstance(gates, list) else []


def _index(pod: Mapping[str, Any]) -> int | None:
    for i, gate in enumerate(_gates(pod)):
        if isinstance(gate, Mapping) and gate.get("name") == GATE:
            return i
    return None


def gated(pod: Mapping[str, Any]) -> bool:
    """Whether the pod carries archwarden's gate."""
    return _index(pod) is not None


def release_ops(pod: Mapping[str, Any]) -> list[RemoveOperation | TestOperation]:
    """Operations removing archwarden's gate (none when absent), other gates left in place.

    A ``test`` first pins the index: applied to a pod whose gates changed since it was read,
    the patch fails instead of removing another controller's gate.
    """
    index = _index(pod)
    if index is None:
        return []
    path = f"/spec/schedulingGates/{index}"
    return [{"op": "test", "path": path, "value": {"name": GATE}}, {"op": "remove", "path": path}]


def hold_ops(pod: Mapping[str, Any]) -> list[_mutation.PatchOperation]:
    """Operations adding archwarden's gate at creation (none when present, or when the pod is
    bound to a node by ``spec.nodeName``: the API refuses gates there, and the scheduler is
    not involved)."""
    spec = pod.get("spec")
    if gated(pod) or not isinstance(spec, Mapping) or spec.get("nodeName"):
        return []
    if isinstance(spec.get("schedulingGates"), list):
        return [{"op": "add", "path": "/spec/schedulingGates/-", "value": {"name": GATE}}]
    return [{"op": "add", "path": "/spec/schedulingGates", "value": [{"name": GATE}]}]
