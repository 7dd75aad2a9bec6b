"""The leader Lease in the chart: a Role on one named Lease in the release namespace, the
same name and namespace in archwarden's configuration, and timings that let a leader step down."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.chart.helm import NAMESPACE, HelmError, find_helm, render
from tests.chart.test_chart import by_kind, one

pytestmark = pytest.mark.skipif(
    find_helm() is None, reason="helm not found (make cluster-build builds it)"
)


def config(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return dict(yaml.safe_load(one(objects, "ConfigMap")["data"]["config.yaml"]))


def test_a_role_on_one_named_lease_in_the_release_namespace() -> None:
    objects = render()
    role = one(objects, "Role")
    assert role["metadata"]["namespace"] == NAMESPACE
    name = config(objects)["leaderElection"]["leaseName"]
    assert name.endswith("-leader")
    assert role["rules"] == [
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "resourceNames": [name],
            "verbs": ["get", "update"],
        },
        # create cannot be limited by name: the object does not exist when it is authorized.
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
    ]
    binding = one(objects, "RoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert config(objects)["leaderElection"]["namespace"] == NAMESPACE
    # Nothing on leases cluster-wide.
    for cluster_role in by_kind(objects, "ClusterRole"):
        assert all("leases" not in rule.get("resources", []) for rule in cluster_role["rules"])


def test_the_lease_name_can_be_set_and_election_switched_off() -> None:
    objects = render({"config.leaderElection.leaseName": "aw-lease"})
    assert one(objects, "Role")["rules"][0]["resourceNames"] == ["aw-lease"]
    assert config(objects)["leaderElection"]["leaseName"] == "aw-lease"
    off = render({"config.leaderElection.enabled": False, "replicaCount": 1})
    assert by_kind(off, "Role") == []
    assert config(off)["leaderElection"]["enabled"] is False
    # Several replicas without a leader would each do the leader's work.
    with pytest.raises(HelmError, match=r"leaderElection\.enabled false with replicaCount 2"):
        render({"config.leaderElection.enabled": False})


def test_timings_that_cannot_work_fail_the_render() -> None:
    with pytest.raises(HelmError, match="must be above renewDeadlineSeconds"):
        render({"config.leaderElection.leaseDurationSeconds": 10})
    with pytest.raises(HelmError, match="must be above retryPeriodSeconds"):
        render({"config.leaderElection.retryPeriodSeconds": 10})
