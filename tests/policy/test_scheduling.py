from __future__ import annotations

from typing import Any

import pytest

from archwarden.policy import (
    Node,
    Requirement,
    SelectorTerm,
    Taint,
    Toleration,
    candidate_nodes,
    extract,
    node_from_object,
)
from archwarden.policy import _scheduling as scheduling
from tests.policy import objects

LABELS = {"zone": "a", "gen": "5", "kubernetes.io/arch": "arm64"}


@pytest.mark.parametrize(
    ("key", "operator", "values", "expected"),
    [
        ("zone", "In", ("a", "b"), True),
        ("zone", "In", ("b",), False),
        ("missing", "In", ("a",), False),
        ("zone", "NotIn", ("b",), True),
        ("zone", "NotIn", ("a",), False),
        ("missing", "NotIn", ("a",), True),
        ("zone", "Exists", (), True),
        ("missing", "Exists", (), False),
        ("zone", "DoesNotExist", (), False),
        ("missing", "DoesNotExist", (), True),
        ("gen", "Gt", ("4",), True),
        ("gen", "Gt", ("5",), False),
        ("gen", "Lt", ("6",), True),
        ("gen", "Lt", ("5",), False),
        ("zone", "Gt", ("1",), False),  # a non-integer label never compares
        ("missing", "Lt", ("9",), False),
    ],
)
def test_requirement_operators(
    key: str, operator: str, values: tuple[str, ...], expected: bool
) -> None:
    assert scheduling.matches_requirement(Requirement(key, operator, values), LABELS) is expected


ARM = Node("arm-1", "linux", "arm64", labels=tuple(LABELS.items()))
IN_A = Requirement("zone", "In", ("a",))
IN_B = Requirement("zone", "In", ("b",))
NAME_ARM = Requirement("metadata.name", "In", ("arm-1",))
NAME_OTHER = Requirement("metadata.name", "NotIn", ("arm-1",))


@pytest.mark.parametrize(
    ("terms", "expected"),
    [
        (None, True),  # no required affinity: every node
        ((), False),  # required affinity with no terms: no node
        ((SelectorTerm(),), False),  # an empty term matches nothing
        ((SelectorTerm((IN_A,)),), True),
        ((SelectorTerm((IN_A, IN_B)),), False),  # expressions in a term are ANDed
        ((SelectorTerm((IN_B,)), SelectorTerm((IN_A,))), True),  # terms are ORed
        ((SelectorTerm(), SelectorTerm((IN_A,))), True),
        ((SelectorTerm(match_fields=(NAME_ARM,)),), True),
        ((SelectorTerm(match_fields=(NAME_OTHER,)),), False),
        ((SelectorTerm((IN_A,), (NAME_OTHER,)),), False),  # fields ANDed with expressions
    ],
)
def test_affinity_terms(terms: Any, expected: bool) -> None:
    assert scheduling.matches_affinity(terms, ARM) is expected


NO_SCHEDULE = Taint("dedicated", "gpu", "NoSchedule")


@pytest.mark.parametrize(
    ("toleration", "taint", "expected"),
    [
        (Toleration("dedicated", "Equal", "gpu", "NoSchedule"), NO_SCHEDULE, True),
        (Toleration("dedicated", "Equal", "cpu", "NoSchedule"), NO_SCHEDULE, False),
        (Toleration("dedicated", "Equal", "gpu", ""), NO_SCHEDULE, True),  # empty effect: all
        (Toleration("dedicated", "Equal", "gpu", "NoExecute"), NO_SCHEDULE, False),
        (Toleration("dedicated", "Exists", "", "NoSchedule"), NO_SCHEDULE, True),
        (Toleration("other", "Exists", "", ""), NO_SCHEDULE, False),
        (Toleration("", "Exists", "", ""), NO_SCHEDULE, True),  # tolerates everything
        (Toleration("", "Exists", "", "NoExecute"), NO_SCHEDULE, False),
        (Toleration("dedicated", "Equal", "", ""), Taint("dedicated", "", "NoSchedule"), True),
        (Toleration("dedicated", "Bogus", "gpu", ""), NO_SCHEDULE, False),
    ],
)
def test_toleration_semantics(toleration: Toleration, taint: Taint, expected: bool) -> None:
    assert scheduling.tolerates(toleration, taint) is expected


def test_default_toleration_operator_is_equal() -> None:
    spec = objects.pod_spec("x", tolerations=[{"key": "dedicated", "value": "gpu"}])
    (toleration,) = extract({"kind": "Pod", "spec": spec}).template.tolerations
    assert toleration.operator == "Equal"
    assert scheduling.tolerates(toleration, NO_SCHEDULE)
    assert not scheduling.tolerates(toleration, Taint("dedicated", "cpu", "NoSchedule"))


CLUSTER = [
    objects.node("plain"),
    objects.node("ssd", labels={"disk": "ssd"}),
    objects.node("gpu", taints=[{"key": "gpu", "value": "yes", "effect": "NoSchedule"}]),
    objects.node("evict", taints=[{"key": "maint", "effect": "NoExecute"}]),
    objects.node("soft", taints=[{"key": "spot", "effect": "PreferNoSchedule"}]),
    objects.node("down", ready=False),
    objects.node(
        "cordoned",
        unschedulable=True,
        taints=[{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}],
    ),
    objects.node(
        "pressure", taints=[{"key": "node.kubernetes.io/memory-pressure", "effect": "NoSchedule"}]
    ),
]
NODES = [node_from_object(n) for n in CLUSTER]


def _names(kind: str, **spec: Any) -> list[str]:
    raw = (
        objects.pod("x", **spec)
        if kind == "Pod"
        else objects.workload(kind, objects.pod_spec("x", **spec))
    )
    return [n.name for n in candidate_nodes(extract(raw), NODES)]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({}, ["plain", "ssd", "soft"]),
        ({"nodeSelector": {"disk": "ssd"}}, ["ssd"]),
        ({"nodeSelector": {"disk": "hdd"}}, []),
        ({"tolerations": [{"key": "gpu", "operator": "Exists"}]}, ["plain", "ssd", "gpu", "soft"]),
        (
            {"tolerations": [{"key": "maint", "operator": "Exists", "effect": "NoExecute"}]},
            ["plain", "ssd", "evict", "soft"],
        ),
        # Tolerating everything admits cordoned and tainted nodes, never NotReady ones.
        (
            {"tolerations": [{"operator": "Exists"}]},
            ["plain", "ssd", "gpu", "evict", "soft", "cordoned", "pressure"],
        ),
        (
            {"affinity": objects.arch_affinity([{"key": "disk", "operator": "DoesNotExist"}])},
            ["plain", "soft"],
        ),
        (
            {
                "affinity": {
                    "nodeAffinity": {
                        "requiredDuringSchedulingIgnoredDuringExecution": {
                            "nodeSelectorTerms": [
                                {
                                    "matchFields": [
                                        {
                                            "key": "metadata.name",
                                            "operator": "In",
                                            "values": ["ssd", "gpu"],
                                        }
                                    ]
                                }
                            ]
                        }
                    }
                }
            },
            ["ssd"],
        ),
    ],
)
def test_candidate_nodes(spec: dict[str, Any], expected: list[str]) -> None:
    assert _names("Deployment", **spec) == expected


def test_daemonsets_tolerate_cordons_and_pressure() -> None:
    assert _names("DaemonSet") == ["plain", "ssd", "soft", "cordoned", "pressure"]


def test_cordoned_node_without_taint_needs_the_toleration() -> None:
    cordoned = node_from_object(objects.node("c", unschedulable=True))
    pod = extract(objects.pod("x"))
    assert candidate_nodes(pod, [cordoned]) == []
    tolerant = extract(
        objects.pod(
            "x", tolerations=[{"key": "node.kubernetes.io/unschedulable", "operator": "Exists"}]
        )
    )
    assert candidate_nodes(tolerant, [cordoned]) == [cordoned]


def test_bound_pod_only_considers_its_node() -> None:
    assert _names("Pod", nodeName="gpu") == ["gpu"]
    assert _names("Pod", nodeName="gpu", nodeSelector={"disk": "ssd"}) == []
