"""Provisionable classes read from NodePools, Cluster API node groups and configured groups."""

from __future__ import annotations

import decimal
from typing import Any

import pytest

from archwarden.policy import (
    InvalidCapacity,
    LabelOptions,
    Source,
    Taint,
    node_group,
    node_group_from_object,
    nodepool_from_object,
)
from archwarden.policy._sources import (
    CAPI_LABELS,
    CAPI_MAX_SIZE,
    CAPI_MIN_SIZE,
    CAPI_TAINTS,
    parse_capi_taints,
    quantity,
)
from tests.policy.test_capacity import arch, nodepool


def _platforms(value: Any) -> list[str]:
    return [p.canonical for p in value.platforms]


def test_nodepool_requirements_labels_taints_and_name() -> None:
    obj = nodepool(
        "arm64-spot",
        arch("arm64"),
        {"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["spot"]},
        {"key": "topology.kubernetes.io/zone", "operator": "NotIn", "values": ["z3"]},
        {"key": "karpenter.k8s.aws/instance-cpu", "operator": "Gt", "values": ["4"]},
        labels={"team": "edge"},
        taints=[{"key": "spot", "value": "true", "effect": "NoSchedule"}],
    )
    value = nodepool_from_object(obj)
    assert value.source == Source("NodePool", "arm64-spot")
    assert _platforms(value) == ["linux/arm64"]
    assert value.options("karpenter.sh/nodepool") == LabelOptions.exactly("arm64-spot")
    assert value.options("team") == LabelOptions.exactly("edge")
    assert value.options("topology.kubernetes.io/zone") == LabelOptions(
        complement=True, values=frozenset({"z3"}), absent=True
    )
    assert value.options("karpenter.k8s.aws/instance-cpu") == LabelOptions(complement=True)
    assert value.taints == (Taint("spot", "true", "NoSchedule"),)
    assert value.every_taint and value.note == ""


def test_nodepool_platform_defaults_and_narrowing() -> None:
    assert _platforms(nodepool_from_object(nodepool("any"))) == ["linux/amd64", "linux/arm64"]
    only = nodepool_from_object(nodepool("any"), default_archs=["amd64"])
    assert _platforms(only) == ["linux/amd64"]
    # A key required twice is both at once: In [amd64, arm64] and NotIn [amd64].
    both = nodepool("p", arch("amd64", "arm64"), arch("amd64", operator="NotIn"))
    assert _platforms(nodepool_from_object(both)) == ["linux/arm64"]
    # Exists: every default; DoesNotExist: nothing to provision.
    assert _platforms(nodepool_from_object(nodepool("p", arch(operator="Exists")))) == [
        "linux/amd64",
        "linux/arm64",
    ]
    assert nodepool_from_object(nodepool("p", arch(operator="DoesNotExist"))).offers == ()
    power = nodepool("p", arch("ppc64le", "s390x"))
    assert _platforms(nodepool_from_object(power)) == ["linux/ppc64le", "linux/s390x"]
    # The template label fixes the arch too.
    labelled = nodepool("p", labels={"kubernetes.io/arch": "arm64"})
    assert _platforms(nodepool_from_object(labelled)) == ["linux/arm64"]


def test_nodepool_limits_and_readiness_become_notes() -> None:
    full = nodepool("p", limits={"cpu": 16, "memory": "64Gi"}, used={"cpu": "16", "memory": "1Gi"})
    assert nodepool_from_object(full).note == "at its cpu limit now"
    both = nodepool(
        "p", limits={"cpu": "16", "memory": "64Gi"}, used={"cpu": "17", "memory": "64Gi"}
    )
    assert nodepool_from_object(both).note == "at its cpu and memory limits now"
    obj = nodepool("p")
    obj["status"] = {"conditions": [{"type": "Ready", "status": "False"}]}
    assert nodepool_from_object(obj).note == "not Ready now"


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda o: o["spec"]["template"]["spec"].update(requirements="x"), "requirements"),
        (
            lambda o: o["spec"]["template"]["spec"].update(
                requirements=[{"key": "a", "operator": "Near"}]
            ),
            "requirements[0].operator",
        ),
        (
            lambda o: o["spec"]["template"]["spec"].update(taints=[{"key": "a", "effect": "Soon"}]),
            "taints[0].effect",
        ),
        (
            lambda o: o["spec"]["template"]["spec"].update(
                requirements=[arch(*[f"a{i}" for i in range(300)])]
            ),
            "requirements[0].values",
        ),
    ],
)
def test_malformed_nodepools_name_the_field(mutate: Any, field: str) -> None:
    obj = nodepool("p")
    mutate(obj)
    with pytest.raises(InvalidCapacity) as caught:
        nodepool_from_object(obj)
    assert field in caught.value.field


def machine_deployment(annotations: dict[str, str], replicas: int = 0) -> dict[str, Any]:
    return {
        "apiVersion": "cluster.x-k8s.io/v1beta2",
        "kind": "MachineDeployment",
        "metadata": {"name": "md-arm", "namespace": "capi", "annotations": annotations},
        "spec": {"replicas": replicas, "clusterName": "c"},
    }


def test_cluster_api_node_groups_from_their_annotations() -> None:
    sizes = {CAPI_MIN_SIZE: "0", CAPI_MAX_SIZE: "5"}
    assert node_group_from_object(machine_deployment({})) is None  # not autoscaled
    plain = node_group_from_object(machine_deployment(sizes))
    assert plain is not None
    assert plain.source == Source("MachineDeployment", "capi/md-arm")
    assert _platforms(plain) == ["linux/amd64"]  # cluster-autoscaler's default
    annotated = {
        **sizes,
        CAPI_LABELS: "kubernetes.io/arch=arm64, team=edge",
        CAPI_TAINTS: "dedicated=edge:NoSchedule,spot:NoExecute",
    }
    group = node_group_from_object(machine_deployment(annotated, replicas=5))
    assert group is not None
    assert _platforms(group) == ["linux/arm64"]
    assert group.options("team") == LabelOptions.exactly("edge")
    # A template node has exactly its labels: nothing is left undefined.
    assert group.options("topology.kubernetes.io/zone").single is None
    assert not group.options("topology.kubernetes.io/zone").allows("z1")
    assert group.taints == (
        Taint("dedicated", "edge", "NoSchedule"),
        Taint("spot", "", "NoExecute"),
    )
    assert group.note == "at its max size (5) now"
    with pytest.raises(InvalidCapacity, match="expected an integer"):
        node_group_from_object(machine_deployment({CAPI_MIN_SIZE: "0", CAPI_MAX_SIZE: "many"}))
    with pytest.raises(InvalidCapacity, match="key=value"):
        node_group_from_object(machine_deployment({**sizes, CAPI_LABELS: "arm64"}))


def test_capacity_taints_syntax() -> None:
    assert parse_capi_taints("a=b:NoSchedule, c:PreferNoSchedule,") == (
        Taint("a", "b", "NoSchedule"),
        Taint("c", "", "PreferNoSchedule"),
    )
    with pytest.raises(InvalidCapacity):
        parse_capi_taints("a=b")


def test_configured_node_groups() -> None:
    group = node_group(
        Source("nodeGroup", "graviton-asg"),
        {"team": "a"},
        [Taint("arm", "", "NoSchedule")],
        platform_specs=["linux/arm64", "linux/arm/v7"],
    )
    assert _platforms(group) == ["linux/arm64", "linux/arm/v7"]
    assert [o.node.platform.canonical for o in group.offers] == ["linux/arm64", "linux/arm/v7"]


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1000", decimal.Decimal(1000)),
        ("500m", decimal.Decimal("0.5")),
        ("64Gi", decimal.Decimal(64 * 2**30)),
        ("1k", decimal.Decimal(1000)),
        ("1e3", decimal.Decimal(1000)),
        ("1.5", decimal.Decimal("1.5")),
        ("12Xi", None),
        ("", None),
        ("9" * 100, None),
    ],
)
def test_quantities(text: str, value: decimal.Decimal | None) -> None:
    assert quantity(text) == value
