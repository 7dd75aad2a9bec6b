"""Events from several replicas through the real API server: one Event per decision, counted."""

from __future__ import annotations

import asyncio

import pytest

from archwarden import kube
from tests.cluster.cluster import LocalCluster

pytestmark = pytest.mark.cluster


async def test_three_replicas_post_one_decision_as_one_counted_event(
    cluster: LocalCluster, namespace: str
) -> None:
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": namespace, "uid": "0f0e-web"},
    }
    api = kube.load_api_client(str(cluster.kubeconfig))
    replicas = [kube.EventPoster(api, instance=f"archwarden-7d9c-{i}") for i in "abc"]
    message = "node affinity added: kubernetes.io/arch In [amd64, arm64]"
    for poster in replicas:  # as three replicas admitting the same Deployment would
        poster.post(deployment, "Normal", "NodeAffinityInjected", message)
    replicas[0].post(deployment, "Normal", "NodeAffinityInjected", "another message")
    await asyncio.gather(*(t for poster in replicas for t in poster._tasks))

    events = cluster.get_json("events", "-n", namespace)["items"]
    by_message = {e["message"]: e for e in events}
    assert len(events) == 2, [e["metadata"]["name"] for e in events]
    counted = by_message[message]
    assert counted["count"] == 3
    assert counted["reportingInstance"] in {p.instance for p in replicas}
    assert counted["involvedObject"]["name"] == "web"
    assert counted["metadata"]["name"].startswith("web.")
    assert by_message["another message"]["count"] == 1
