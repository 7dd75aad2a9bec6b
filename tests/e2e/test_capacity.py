"""Capacity autoscalers can add, end to end: NodePools and Cluster API node groups on the API
server (CRDs from the projects' Go modules), and real Karpenter provisioning kwok nodes."""

from __future__ import annotations

import json
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.cluster import LocalCluster
from tests.e2e.conftest import CAPI_NAMESPACE, Images
from tests.e2e.test_admission import apply, deployment, events
from tests.support.archwarden import ARCHWARDEN, ArchwardenProcess
from tests.support.capacity import KarpenterProcess, kwok_nodepool

pytestmark = pytest.mark.e2e

ARM64_NODES = ["linux-arm64-1", "linux-arm64-2"]
CAPI_MIN = "cluster.x-k8s.io/cluster-api-autoscaler-node-group-min-size"
CAPI_MAX = "cluster.x-k8s.io/cluster-api-autoscaler-node-group-max-size"
CAPI_LABELS = "capacity.cluster-autoscaler.kubernetes.io/labels"


def dry_run(cluster: LocalCluster, namespace: str, obj: dict[str, Any]) -> tuple[int, str]:
    """A server-side dry run: every webhook judges it, nothing is stored, no Events."""
    proc = cluster.kubectl(
        "create", "--dry-run=server", "-n", namespace, "-f", "-", input=json.dumps(obj), check=False
    )
    return proc.returncode, proc.stderr


def until(
    cluster: LocalCluster,
    namespace: str,
    obj: dict[str, Any],
    *,
    allowed: bool,
    text: str,
    archwarden: ArchwardenProcess,
) -> str:
    """Wait until archwarden's answer for ``obj`` reflects a capacity change (watch latency)."""

    def answered() -> str | None:
        code, stderr = dry_run(cluster, namespace, obj)
        return stderr if (code == 0) == allowed and text in stderr else None

    return cluster.wait_for(
        answered,
        timeout=30,
        interval=0.5,
        message=lambda: f"archwarden answering {text!r}\n{archwarden.log_tail()}",
    )


def delete_nodepool(cluster: LocalCluster, name: str) -> None:
    cluster.kubectl("delete", "nodepool", name, "--ignore-not-found", "--wait=false", check=False)


def required_arches(pod: dict[str, Any]) -> list[list[str]]:
    affinity = pod["spec"].get("affinity", {}).get("nodeAffinity", {})
    terms = affinity.get("requiredDuringSchedulingIgnoredDuringExecution", {})
    return [
        e["values"]
        for t in terms.get("nodeSelectorTerms", [])
        for e in t.get("matchExpressions", [])
        if e["key"] == "kubernetes.io/arch"
    ]


def check_from_cluster(
    cluster: LocalCluster, images: Images, obj: dict[str, Any], tmp_path: Path, *flags: str
) -> subprocess.CompletedProcess[str]:
    manifest = tmp_path / "app.yaml"
    manifest.write_text(json.dumps(obj))
    command = [str(ARCHWARDEN), "check", "-f", str(manifest), "--from-cluster", *flags]
    command += ["--kubeconfig", str(cluster.kubeconfig), "--insecure-registry", images.host]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def test_nodepools_for_ppc64le_and_s390x_decide_admission(
    cluster: LocalCluster,
    namespace: str,
    images: Images,
    archwarden: ArchwardenProcess,
    tmp_path: Path,
) -> None:
    suffix = secrets.token_hex(3)
    power, mainframe = f"aw-power-{suffix}", f"aw-s390x-{suffix}"
    workload = deployment("mainframe", images.s390x_only)
    try:
        # No s390x node exists; a ppc64le pool cannot help either, and the denial says so.
        cluster.apply(kwok_nodepool(power, ["ppc64le"]))
        until(
            cluster,
            namespace,
            workload,
            allowed=False,
            text=f"NodePool {power} can provision linux/ppc64le",
            archwarden=archwarden,
        )
        cluster.apply(kwok_nodepool(mainframe, ["s390x"]))
        until(
            cluster,
            namespace,
            workload,
            allowed=True,
            text=f"no node can run it now; NodePool {mainframe} can provision linux/s390x",
            archwarden=archwarden,
        )
        code, _, stderr = apply(cluster, namespace, workload)
        assert code == 0, stderr
        assert f"NodePool {mainframe} can provision linux/s390x" in stderr
        noted = cluster.wait_for(
            lambda: events(cluster, namespace, "ProvisionableCapacity"),
            timeout=30,
            message="a ProvisionableCapacity Event",
        )
        assert noted[0]["type"] == "Normal"
        assert noted[0]["involvedObject"]["name"] == "mainframe"
        # The pods wait for an s390x node, pinned to s390x so no other pool's node takes them.
        pods = cluster.wait_for(lambda: cluster.pods(namespace), timeout=30, message="a pod")
        assert required_arches(pods[0]) == [["s390x"]]
        # The offline check reads the same capacity from the cluster.
        result = check_from_cluster(cluster, images, workload, tmp_path)
        assert (result.returncode, result.stderr) == (0, "")
        assert result.stdout.strip() == (
            "OK    Deployment/mainframe: no node can run it now; "
            f"NodePool {mainframe} can provision linux/s390x"
        )
        assert (
            archwarden.metric(
                "archwarden_capacity_classes", source="NodePool", os="linux", arch="s390x"
            )
            >= 1
        )
        # The pool narrowed to ppc64le strands the workload.
        cluster.apply(kwok_nodepool(mainframe, ["ppc64le"]))
        unavailable = cluster.wait_for(
            lambda: events(cluster, namespace, "ArchitectureUnavailable"),
            timeout=30,
            message=lambda: "an ArchitectureUnavailable Event\n" + archwarden.log_tail(),
        )
        assert unavailable[0]["involvedObject"]["name"] == "mainframe"
        assert unavailable[0]["message"].startswith(
            "no node left, nor capacity an autoscaler can add, can run this workload: "
        )
    finally:
        delete_nodepool(cluster, power)
        delete_nodepool(cluster, mainframe)


def machine_deployment(name: str, namespace: str, annotations: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "cluster.x-k8s.io/v1beta2",
        "kind": "MachineDeployment",
        "metadata": {"name": name, "namespace": namespace, "annotations": annotations},
        "spec": {
            "clusterName": "workload",
            "replicas": 0,
            "selector": {"matchLabels": {"pool": name}},
            "template": {
                "metadata": {"labels": {"pool": name}},
                "spec": {
                    "clusterName": "workload",
                    "bootstrap": {"dataSecretName": "none"},
                    "infrastructureRef": {
                        "apiGroup": "infrastructure.cluster.x-k8s.io",
                        "kind": "DockerMachineTemplate",
                        "name": name,
                    },
                },
            },
        },
    }


@pytest.fixture
def capi_namespace(cluster: LocalCluster) -> Iterator[str]:
    """The namespace archwarden counts node groups from (capacity.clusterAPI.namespaces)."""
    cluster.create_namespace(CAPI_NAMESPACE)
    try:
        yield CAPI_NAMESPACE
    finally:
        cluster.delete_namespace(CAPI_NAMESPACE)


def test_cluster_api_node_groups_that_scale_from_zero(
    cluster: LocalCluster,
    namespace: str,
    capi_namespace: str,
    images: Images,
    archwarden: ArchwardenProcess,
    tmp_path: Path,
) -> None:
    workload = deployment("mainframe", images.s390x_only)
    sizes = {CAPI_MIN: "0", CAPI_MAX: "3"}
    labelled = {**sizes, CAPI_LABELS: "kubernetes.io/arch=s390x,team=x"}
    # A tenant's s390x node group in its own namespace, which capacity.clusterAPI.namespaces
    # does not name: it never turns the denial below into an admit.
    cluster.apply(machine_deployment("md-tenant", namespace, labelled))
    group = machine_deployment("md-s390x", capi_namespace, {**sizes, CAPI_LABELS: "team=x"})
    cluster.apply(group)
    # Without an arch label, cluster-autoscaler's template node is amd64: no help.
    denial = until(
        cluster,
        namespace,
        workload,
        allowed=False,
        text=f"MachineDeployment {capi_namespace}/md-s390x can provision linux/amd64",
        archwarden=archwarden,
    )
    assert f"MachineDeployment {namespace}/md-tenant" not in denial
    assert (
        archwarden.metric(
            "archwarden_capacity_classes", source="MachineDeployment", os="linux", arch="s390x"
        )
        == 0
    )
    cluster.apply(machine_deployment("md-s390x", capi_namespace, labelled))
    # The template node carries team=x: a pod must select it to land there ...
    selected = deployment("mainframe", images.s390x_only, pod_spec={"nodeSelector": {"team": "x"}})
    admitted = until(
        cluster,
        namespace,
        selected,
        allowed=True,
        text=f"MachineDeployment {capi_namespace}/md-s390x can provision linux/s390x",
        archwarden=archwarden,
    )
    assert "md-tenant" not in admitted
    # The offline check counts the same node group when told the same namespace, and none (the
    # tenant's neither) by default.
    counted = check_from_cluster(
        cluster, images, workload, tmp_path, "--cluster-api-namespace", capi_namespace
    )
    assert (counted.returncode, counted.stderr) == (0, "")
    assert counted.stdout.strip() == (
        "OK    Deployment/mainframe: no node can run it now; "
        f"MachineDeployment {capi_namespace}/md-s390x can provision linux/s390x"
    )
    uncounted = check_from_cluster(cluster, images, workload, tmp_path)
    assert uncounted.returncode == 1, uncounted.stdout
    assert "supports linux/s390x only" in uncounted.stdout
    assert "MachineDeployment" not in uncounted.stdout
    # ... and a label it does not carry keeps the pod off it.
    other = deployment("mainframe", images.s390x_only, pod_spec={"nodeSelector": {"team": "y"}})
    code, stderr = dry_run(cluster, namespace, other)
    assert code == 0 and "MachineDeployment" not in stderr  # NoCandidateNodes: not ours to judge
    # Without the size annotations it is no node group: denied again, although the tenant's
    # s390x node group is still there.
    cluster.apply(
        machine_deployment("md-s390x", capi_namespace, {CAPI_LABELS: labelled[CAPI_LABELS]})
    )
    until(
        cluster,
        namespace,
        workload,
        allowed=False,
        text="supports linux/s390x only",
        archwarden=archwarden,
    )


@pytest.fixture
def karpenter(cluster: LocalCluster, tmp_path: Path) -> Iterator[KarpenterProcess]:
    process = KarpenterProcess(cluster, tmp_path / "karpenter").start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def arm64_cordoned(cluster: LocalCluster) -> Iterator[None]:
    """The static arm64 nodes cordoned: pods they could take never reach Karpenter."""
    for node in ARM64_NODES:
        cluster.cordon_node(node)
    try:
        yield
    finally:
        for node in ARM64_NODES:
            cluster.uncordon_node(node)


def _remove_pool_with_its_nodes(cluster: LocalCluster, name: str) -> None:
    # While Karpenter runs: NodeClaims and their nodes carry its termination finalizer.
    delete_nodepool(cluster, name)
    cluster.wait_for(
        lambda: not cluster.nodes_with({"karpenter.sh/nodepool": name}),
        timeout=90,
        interval=1,
        message=f"the nodes of NodePool {name} to go",
    )


def test_karpenter_provisions_an_arm64_node_for_an_arm64_only_deployment(
    cluster: LocalCluster,
    namespace: str,
    images: Images,
    archwarden: ArchwardenProcess,
    karpenter: KarpenterProcess,
    arm64_cordoned: None,
) -> None:
    pool = f"aw-arm-{secrets.token_hex(3)}"
    workload = deployment("edge", images.arm64_only, replicas=2)
    try:
        cluster.apply(kwok_nodepool(pool, ["arm64"]))
        until(
            cluster,
            namespace,
            workload,
            allowed=True,
            text=f"NodePool {pool} can provision linux/arm64",
            archwarden=archwarden,
        )
        code, _, stderr = apply(cluster, namespace, workload)
        assert code == 0, stderr
        running = cluster.wait_pods_running(namespace, 2, "app=edge", timeout=120)
        for pod in running:
            assert required_arches(pod) == [["arm64"]]
        nodes = {pod["spec"]["nodeName"] for pod in running}
        assert not nodes & set(ARM64_NODES)
        for name in nodes:
            node = cluster.get_json("node", name)
            labels = node["metadata"]["labels"]
            assert labels["karpenter.sh/nodepool"] == pool
            assert labels["kubernetes.io/arch"] == "arm64"
        assert archwarden.metric("archwarden_nodes", os="linux", arch="arm64") >= 3
    finally:
        cluster.kubectl(
            "delete", "deployment", "edge", "-n", namespace, "--wait=false", check=False
        )
        _remove_pool_with_its_nodes(cluster, pool)


def test_a_multi_arch_image_may_go_wherever_the_nodepool_can_provision(
    cluster: LocalCluster,
    namespace: str,
    images: Images,
    archwarden: ArchwardenProcess,
    karpenter: KarpenterProcess,
    arm64_cordoned: None,
) -> None:
    pool = f"aw-general-{secrets.token_hex(3)}"
    workload = deployment("web", images.multi)
    try:
        # Only amd64 nodes can take pods now: affinity naming amd64 alone would forbid the
        # autoscaler ever to choose arm64.
        code, _, stderr = apply(cluster, namespace, workload)
        assert code == 0, stderr
        (first,) = cluster.wait_pods_running(namespace, 1, "app=web", timeout=60)
        assert required_arches(first) == [["amd64"]]
        cluster.kubectl("delete", "deployment", "web", "-n", namespace, "--wait=true")
        cluster.apply(kwok_nodepool(pool, ["amd64", "arm64"]))
        cluster.wait_for(
            lambda: (
                archwarden.metric(
                    "archwarden_capacity_classes", source="NodePool", os="linux", arch="arm64"
                )
                >= 1
            ),
            timeout=30,
            message="archwarden counting the pool",
        )
        code, _, stderr = apply(cluster, namespace, workload)
        assert code == 0, stderr
        (pod,) = cluster.wait_pods_running(namespace, 1, "app=web", timeout=60)
        assert required_arches(pod) == [["amd64", "arm64"]]
        injected = cluster.wait_for(
            lambda: [
                e
                for e in events(cluster, namespace, "NodeAffinityInjected")
                if "can provision" in e["message"]
            ],
            timeout=30,
            message="a NodeAffinityInjected Event naming the pool",
        )
        assert (
            f"nodes of linux/amd64, linux/arm64 that NodePool {pool} can provision"
            in (injected[0]["message"])
        )
    finally:
        cluster.kubectl("delete", "deployment", "web", "-n", namespace, "--wait=false", check=False)
        _remove_pool_with_its_nodes(cluster, pool)
