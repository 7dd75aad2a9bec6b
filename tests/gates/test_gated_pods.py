"""Pods wait for their check: gated inside the API server by the chart's policy while no
archwarden answers, placed (affinity added, gate removed) once it is back, kept gated where no
node can run them, released by ``archwarden ungate``."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.chart import helm
from tests.cluster.cluster import LocalCluster
from tests.e2e.conftest import Images
from tests.support.archwarden import ARCHWARDEN, ArchwardenProcess

pytestmark = pytest.mark.e2e

GATE = "archwarden.io/platforms"


def pod(name: str, image: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "app", "image": image}], **spec},
    }


def gated(body: dict[str, Any]) -> bool:
    return any(g.get("name") == GATE for g in body["spec"].get("schedulingGates") or ())


def gate_policy(cluster: LocalCluster, namespace: str) -> list[dict[str, Any]]:
    """The chart's policy and binding, as `helm install` would create them on this cluster,
    scoped to one namespace through webhook.matchExpressions (other tests' pods stay ungated)."""
    return helm.render(
        {
            "schedulingGates.mode": "auto",
            "webhook.matchExpressions[0].key": "kubernetes.io/metadata.name",
            "webhook.matchExpressions[0].operator": "In",
            "webhook.matchExpressions[0].values[0]": namespace,
        },
        release=f"g{namespace[-6:]}",
        show_only=["templates/scheduling-gate-policy.yaml"],
        api_versions=[helm.MUTATING_POLICY_API],
    )


@pytest.fixture
def policy(cluster: LocalCluster, namespace: str) -> Iterator[list[dict[str, Any]]]:
    objects = gate_policy(cluster, namespace)
    assert [o["kind"] for o in objects] == [
        "MutatingAdmissionPolicy",
        "MutatingAdmissionPolicyBinding",
    ]
    cluster.kubectl("apply", "-f", "-", input="\n---\n".join(json.dumps(o) for o in objects))
    probe = pod("probe", "registry.invalid/probe:1")

    def gates_pods() -> bool:
        proc = cluster.kubectl(
            "create", "--dry-run=server", "-n", namespace, "-o", "json", "-f", "-",
            input=json.dumps(probe), check=False,
        )  # fmt: skip
        return proc.returncode == 0 and gated(json.loads(proc.stdout))

    cluster.wait_for(gates_pods, timeout=30, interval=0.5, message="the policy gating pods")
    try:
        yield objects
    finally:
        for obj in reversed(objects):
            cluster.kubectl("delete", obj["kind"], obj["metadata"]["name"], check=False)


def gates_archwarden(
    cluster: LocalCluster, images: Images, workdir: Path, mode: str = "policy"
) -> ArchwardenProcess:
    return ArchwardenProcess(
        workdir,
        cluster.kubeconfig,
        {
            "mode": "enforce",
            "registries": {images.host: {"insecure": True}},
            "cache": {"failureTTL": 1},
            "schedulingGates": {"mode": mode, "retrySeconds": 1},
            "audit": {"enabled": False},
            "webhook": {
                "clientCAFile": str(cluster.ca_file),
                "clientNames": [LocalCluster.WEBHOOK_CLIENT_NAME],
            },
        },
        dev_name="archwarden-gates.io",
    )


ARCH_OF = {
    "linux-amd64-1": "amd64",
    "linux-amd64-2": "amd64",
    "linux-arm64-1": "arm64",
    "linux-arm64-2": "arm64",
}


def test_pods_wait_while_archwarden_is_away_and_are_placed_when_it_returns(
    cluster: LocalCluster,
    namespace: str,
    images: Images,
    policy: list[dict[str, Any]],
    tmp_path: Path,
) -> None:
    runnable = {"web": images.multi, "legacy": images.amd64_only, "edge": images.arm64_only}
    for name, image in runnable.items():
        cluster.kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(pod(name, image)))
    cluster.kubectl(
        "create", "-n", namespace, "-f", "-", input=json.dumps(pod("mainframe", images.s390x_only))
    )
    # No archwarden answers: every pod waits, none is bound.
    time.sleep(3)
    pods = {p["metadata"]["name"]: p for p in cluster.pods(namespace)}
    assert set(pods) == {*runnable, "mainframe"}
    for body in pods.values():
        assert gated(body), body["metadata"]["name"]
        assert not body["spec"].get("nodeName")
        scheduled = [c for c in body["status"].get("conditions", []) if c["type"] == "PodScheduled"]
        assert scheduled and scheduled[0]["reason"] == "SchedulingGated"

    archwarden = gates_archwarden(cluster, images, tmp_path / "aw")
    started = time.monotonic()
    archwarden.start()
    try:

        def placed() -> dict[str, str] | None:
            now = {p["metadata"]["name"]: p for p in cluster.pods(namespace)}
            nodes = {n: now[n]["spec"].get("nodeName") for n in runnable}
            return nodes if all(nodes.values()) else None

        nodes = cluster.wait_for(
            placed, timeout=60, interval=0.5, message=lambda: archwarden.log_tail()
        )
        decided = time.monotonic() - started
        print(f"gated pods decided and bound {decided:.1f}s after archwarden started")
        # Each on a node of an architecture its image has (web: amd64 or arm64).
        assert ARCH_OF.get(nodes["legacy"]) == "amd64", nodes
        assert ARCH_OF.get(nodes["edge"]) == "arm64", nodes
        assert ARCH_OF.get(nodes["web"]) in ("amd64", "arm64"), nodes
        now = {p["metadata"]["name"]: p for p in cluster.pods(namespace)}
        for name in runnable:
            assert not gated(now[name])
            assert now[name]["spec"]["affinity"]["nodeAffinity"]
        # No node runs s390x: it keeps the gate, with an Event that says why.
        assert gated(now["mainframe"]) and not now["mainframe"]["spec"].get("nodeName")
        cluster.wait_for(
            lambda: [
                e
                for e in cluster.get_json("events", "-n", namespace)["items"]
                if e["reason"] == "ArchitectureMismatch"
                and e["involvedObject"]["name"] == "mainframe"
                and "stays gated" in e["message"]
            ],
            timeout=30,
            message="the ArchitectureMismatch Event on the held pod",
        )
        cluster.wait_for(
            lambda: archwarden.metric("archwarden_pods_gated", reason="ArchitectureMismatch") == 1,
            timeout=10,
            message=lambda: archwarden.metrics(),
        )
        assert archwarden.metric("archwarden_gated_pod_oldest_seconds") > 0

        # With archwarden up, the webhook decides at creation: the pod is created ungated,
        # with its affinity, in one patch.
        created = cluster.kubectl(
            "create", "-n", namespace, "-o", "json", "-f", "-",
            input=json.dumps(pod("fresh", images.amd64_only)),
        )  # fmt: skip
        fresh = json.loads(created.stdout)
        assert not gated(fresh)
        assert fresh["spec"]["affinity"]["nodeAffinity"]
    finally:
        archwarden.stop()

    # An emergency release, recorded on the pod.
    released = subprocess.run(
        [str(ARCHWARDEN), "ungate", "-n", namespace, "--kubeconfig", str(cluster.kubeconfig)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert released.returncode == 0, released.stderr
    assert f"{namespace}/mainframe" in released.stdout
    mainframe = cluster.get_json("pod", "mainframe", "-n", namespace)
    assert not gated(mainframe)
    events = cluster.get_json("events", "-n", namespace)["items"]
    assert any(
        e["reason"] == "SchedulingGateReleased" and e["involvedObject"]["name"] == "mainframe"
        for e in events
    )


def test_a_gated_pod_gets_the_arch_toleration_when_released(
    cluster: LocalCluster,
    namespace: str,
    images: Images,
    policy: list[dict[str, Any]],
    tmp_path: Path,
) -> None:
    # A pod that exists already (gated while archwarden was away) gets the toleration for a
    # GKE-style Arm pool in the patch that releases it: the API server accepts tolerations
    # added to a pod, and the scheduler then binds it to the tainted node.
    pool = {"gates-pool": namespace}
    arm = f"{namespace}-arm"
    taint = {"key": "kubernetes.io/arch", "value": "arm64", "effect": "NoSchedule"}
    cluster.add_node(arm, "arm64", labels=pool, taints=[taint])
    try:
        spec = {
            "nodeSelector": {**pool, "kubernetes.io/arch": "arm64"},
            "tolerations": [{"key": "example.com/own", "operator": "Exists"}],
        }
        cluster.kubectl(
            "create",
            "-n",
            namespace,
            "-f",
            "-",
            input=json.dumps(pod("edge", images.multi, **spec)),
        )
        assert gated(cluster.get_json("pod", "edge", "-n", namespace))
        archwarden = gates_archwarden(cluster, images, tmp_path / "aw")
        archwarden.start()
        try:
            bound = cluster.wait_for(
                lambda: cluster.get_json("pod", "edge", "-n", namespace)["spec"].get("nodeName"),
                timeout=60,
                interval=0.5,
                message=lambda: archwarden.log_tail(),
            )
        finally:
            archwarden.stop()
        assert bound == arm
        released = cluster.get_json("pod", "edge", "-n", namespace)
        assert not gated(released)
        # The user's own toleration kept, the platform one appended once.
        assert released["spec"]["tolerations"][0] == {
            "key": "example.com/own",
            "operator": "Exists",
        }
        assert [t for t in released["spec"]["tolerations"] if t.get("key") == taint["key"]] == [
            {**taint, "operator": "Equal"}
        ]
        assert any(
            e["reason"] == "TolerationInjected" and e["involvedObject"]["name"] == "edge"
            for e in cluster.get_json("events", "-n", namespace)["items"]
        )
    finally:
        cluster.delete_node(arm, wait=False)


def test_the_uninstall_command_deletes_the_policy_and_releases_every_gate(
    cluster: LocalCluster, namespace: str, images: Images, policy: list[dict[str, Any]]
) -> None:
    # What the chart's pre-delete hook runs: with the policy left behind, every pod in its
    # scope would wait for an archwarden that is gone (archwarden's own too, in a reinstall).
    cluster.kubectl(
        "create", "-n", namespace, "-f", "-", input=json.dumps(pod("held", images.multi))
    )
    assert gated(cluster.get_json("pod", "held", "-n", namespace))
    name = policy[0]["metadata"]["name"]
    removed = subprocess.run(
        [str(ARCHWARDEN), "remove-webhooks", name, "--ungate",
         "--kubeconfig", str(cluster.kubeconfig)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert removed.returncode == 0, removed.stderr
    assert f"MutatingAdmissionPolicyBinding/{name}" in removed.stdout
    assert f"MutatingAdmissionPolicy/{name}" in removed.stdout
    for kind in ("mutatingadmissionpolicy", "mutatingadmissionpolicybinding"):
        assert cluster.kubectl("get", kind, name, check=False).returncode != 0
    assert f"{namespace}/held" in removed.stdout
    assert not gated(cluster.get_json("pod", "held", "-n", namespace))
    # No gate any more for new pods.
    cluster.wait_for(
        lambda: not gated(
            json.loads(
                cluster.kubectl(
                    "create", "--dry-run=server", "-n", namespace, "-o", "json", "-f", "-",
                    input=json.dumps(pod("after", images.multi)),
                ).stdout
            )
        ),
        timeout=30,
        message="new pods created ungated",
    )  # fmt: skip
