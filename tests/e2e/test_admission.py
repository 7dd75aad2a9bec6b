"""archwarden on the real local cluster: kubectl sees denials and warnings, the scheduler
places mutated pods, Events and metrics record what happened."""

from __future__ import annotations

import json
import subprocess
import time
from typing import Any

import pytest

from tests.cluster.cluster import LocalCluster
from tests.e2e.conftest import Images
from tests.support.archwarden import ArchwardenProcess

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("archwarden")]

ARM64_POOL = ["linux-arm64-1", "linux-arm64-2"]
NODE_ARCH = {
    "linux-amd64-1": "amd64",
    "linux-amd64-2": "amd64",
    "linux-arm64-1": "arm64",
    "linux-arm64-2": "arm64",
    "linux-ppc64le-1": "ppc64le",
    "windows-amd64-1": "amd64",
}


def deployment(
    name: str, image: str, *, replicas: int = 1, pod_spec: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": image}], **(pod_spec or {})},
            },
        },
    }


def hostname_pool(names: list[str]) -> dict[str, Any]:
    return {
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {
                            "matchExpressions": [
                                {
                                    "key": "kubernetes.io/hostname",
                                    "operator": "In",
                                    "values": names,
                                }
                            ]
                        }
                    ]
                }
            }
        }
    }


def apply(cluster: LocalCluster, namespace: str, obj: dict[str, Any]) -> tuple[int, str, str]:
    proc = cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(obj), check=False)
    return proc.returncode, proc.stdout, proc.stderr


def events(cluster: LocalCluster, namespace: str, reason: str) -> list[dict[str, Any]]:
    items = cluster.get_json("events", "-n", namespace)["items"]
    return [e for e in items if e.get("reason") == reason]


def test_amd64_image_on_an_arm64_pool_is_denied_with_the_reason(
    cluster: LocalCluster, namespace: str, images: Images, archwarden: ArchwardenProcess
) -> None:
    denied_before = archwarden.metric(
        "archwarden_admission_requests_total",
        webhook="validate-deployments",
        decision="denied",
    )
    code, _, stderr = apply(
        cluster,
        namespace,
        deployment("legacy", images.amd64_only, pod_spec=hostname_pool(ARM64_POOL)),
    )
    assert code != 0
    assert (
        f"image {images.amd64_only} supports linux/amd64 only; the nodes this pod can use are "
        "linux/arm64 (2); publish a multi-arch image or select amd64 nodes"
    ) in stderr
    assert 'admission webhook "validate-deployments.archwarden.io" denied the request' in stderr
    assert cluster.kubectl("get", "deployment", "legacy", "-n", namespace, check=False).returncode
    assert (
        archwarden.metric(
            "archwarden_admission_requests_total",
            webhook="validate-deployments",
            decision="denied",
        )
        == denied_before + 1
    )


def image_volume(name: str, reference: str) -> dict[str, Any]:
    return {"name": name, "image": {"reference": reference, "pullPolicy": "IfNotPresent"}}


def test_image_volumes_are_judged_and_placed_like_containers(
    cluster: LocalCluster, namespace: str, images: Images
) -> None:
    # The API server takes image volumes (on by default since 1.35); the kubelet would pull
    # them for the node's platform.
    tools = {"volumes": [image_volume("tools", images.amd64_only)]}
    code, _, stderr = apply(
        cluster,
        namespace,
        deployment("on-arm", images.multi, pod_spec={**hostname_pool(ARM64_POOL), **tools}),
    )
    assert code != 0
    assert (
        f"image {images.amd64_only} (image volume tools) supports linux/amd64 only; the nodes "
        "this pod can use are linux/arm64 (2)"
    ) in stderr

    # Anywhere else it narrows the placement to what the volume's image was built for.
    code, _, stderr = apply(
        cluster, namespace, deployment("tools", images.multi, replicas=3, pod_spec=tools)
    )
    assert code == 0, stderr
    for pod in cluster.wait_pods_running(namespace, 3, selector="app=tools"):
        assert pod["metadata"]["annotations"]["archwarden.io/platforms"] == "linux/amd64"
        assert NODE_ARCH[pod["spec"]["nodeName"]] == "amd64"

    # An artifact names no platform: mounted on any node, the arm64 pool included.
    model = {"volumes": [image_volume("model", images.artifact)]}
    code, _, stderr = apply(
        cluster,
        namespace,
        deployment("model", images.multi, pod_spec={**hostname_pool(ARM64_POOL), **model}),
    )
    assert code == 0, stderr
    (pod,) = cluster.wait_pods_running(namespace, 1, selector="app=model")
    assert pod["spec"]["nodeName"] in ARM64_POOL


def test_arch_pin_that_contradicts_the_image(
    cluster: LocalCluster, namespace: str, images: Images
) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "pinned"},
        "spec": {
            "containers": [{"name": "app", "image": images.arm64_only}],
            "nodeSelector": {"kubernetes.io/arch": "amd64"},
        },
    }
    code, _, stderr = apply(cluster, namespace, pod)
    assert code != 0
    assert f"nodeSelector kubernetes.io/arch=amd64 contradicts image {images.arm64_only}" in stderr


def test_multi_arch_pods_get_affinity_and_land_on_compatible_nodes(
    cluster: LocalCluster, namespace: str, images: Images
) -> None:
    code, _, stderr = apply(cluster, namespace, deployment("web", images.multi, replicas=4))
    assert code == 0, stderr
    pods = cluster.wait_pods_running(namespace, 4, selector="app=web")
    for pod in pods:
        assert pod["metadata"]["annotations"]["archwarden.io/platforms"] == (
            "linux/amd64,linux/arm64"
        )
        terms = pod["spec"]["affinity"]["nodeAffinity"][
            "requiredDuringSchedulingIgnoredDuringExecution"
        ]["nodeSelectorTerms"]
        assert len(terms) == 1
        expressions = {e["key"]: e for e in terms[0]["matchExpressions"]}
        assert expressions["kubernetes.io/arch"]["values"] == ["amd64", "arm64"]
        # The windows/amd64 node is amd64 too: the OS must be pinned as well.
        assert expressions["kubernetes.io/os"]["values"] == ["linux"]
        node = pod["spec"]["nodeName"]
        assert NODE_ARCH[node] in ("amd64", "arm64") and not node.startswith("windows"), node
    injected = cluster.wait_for(
        lambda: events(cluster, namespace, "NodeAffinityInjected"),
        timeout=30,
        message="a NodeAffinityInjected Event",
    )
    # Reported on the Deployment the user wrote, not on its ReplicaSet or pods; once.
    assert [(e["involvedObject"]["kind"], e["involvedObject"]["name"]) for e in injected] == [
        ("Deployment", "web")
    ]


def test_affinity_is_anded_into_every_user_term_never_ored(
    cluster: LocalCluster, namespace: str, images: Images
) -> None:
    terms = [
        {
            "matchExpressions": [
                {
                    "key": "kubernetes.io/hostname",
                    "operator": "In",
                    "values": ["linux-amd64-1", "linux-ppc64le-1"],
                }
            ]
        },
        {"matchExpressions": [{"key": "topology.kubernetes.io/zone", "operator": "Exists"}]},
    ]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "merged"},
        "spec": {
            "containers": [{"name": "app", "image": images.multi}],
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}
                }
            },
        },
    }
    code, _, stderr = apply(cluster, namespace, pod)
    assert code == 0, stderr
    created = cluster.get_json("pod", "merged", "-n", namespace)
    got = created["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]["nodeSelectorTerms"]
    assert len(got) == 2
    for original, merged in zip(terms, got, strict=True):
        assert (
            merged["matchExpressions"][: len(original["matchExpressions"])]
            == original["matchExpressions"]
        )
        added = merged["matchExpressions"][len(original["matchExpressions"]) :]
        assert {
            "key": "kubernetes.io/arch",
            "operator": "In",
            "values": ["amd64", "arm64"],
        } in added
    running = cluster.wait_pods_running(namespace, 1)
    # The second term (any node with a zone) lets the scheduler pick any linux amd64/arm64 node;
    # never the ppc64le node the first term also named, nor Windows.
    assert running[0]["spec"]["nodeName"] in {
        "linux-amd64-1",
        "linux-amd64-2",
        "linux-arm64-1",
        "linux-arm64-2",
    }


def test_warn_mode_namespace_allows_with_kubectl_warning_and_event(
    cluster: LocalCluster, namespace: str, images: Images
) -> None:
    cluster.kubectl("label", "namespace", namespace, "archwarden.io/mode=warn")
    legacy = deployment("legacy", images.amd64_only, pod_spec=hostname_pool(ARM64_POOL))
    # The label reaches archwarden's namespace watch within a moment.
    _, _, stderr = cluster.wait_for(
        lambda: (result := apply(cluster, namespace, legacy))[0] == 0 and result,
        timeout=20,
        message="warn mode taking effect",
    )
    assert "Warning: image" in stderr and "supports linux/amd64 only" in stderr
    mismatch = cluster.wait_for(
        lambda: events(cluster, namespace, "ArchitectureMismatch"),
        timeout=30,
        message="an ArchitectureMismatch Event",
    )
    assert mismatch[0]["type"] == "Warning"
    assert "supports linux/amd64 only" in mismatch[0]["message"]


def test_excluded_namespace_and_opt_out_are_never_checked(
    cluster: LocalCluster, namespace: str, images: Images
) -> None:
    skipped = deployment("skipped", images.amd64_only, pod_spec=hostname_pool(ARM64_POOL))
    skipped["metadata"]["annotations"] = {"archwarden.io/skip": "true"}
    # By default only a namespace labelled to allow it may skip: checked, and denied.
    code, _, stderr = apply(cluster, namespace, skipped)
    assert code != 0 and "archwarden.io/skip is not allowed here" in stderr
    cluster.kubectl("label", "namespace", namespace, "archwarden.io/allow-skip=true")
    cluster.wait_for(
        lambda: apply(cluster, namespace, skipped)[0] == 0,
        timeout=30,
        interval=0.5,
        message="the labelled namespace's skip to be honoured",
    )
    recorded = cluster.wait_for(
        lambda: events(cluster, namespace, "ArchitectureCheckSkipped"),
        timeout=30,
        message="an ArchitectureCheckSkipped Event",
    )
    assert recorded[0]["involvedObject"]["name"] == "skipped"


def test_registry_outage_uses_cache_then_fails_open(
    cluster: LocalCluster, namespace: str, images: Images, e2e_registry: Any
) -> None:
    # Warm the cache for one image, then stop the registry.
    code, _, stderr = apply(cluster, namespace, deployment("cached", images.everywhere))
    assert code == 0, stderr
    e2e_registry.stop()
    try:
        code, _, stderr = apply(
            cluster,
            namespace,
            deployment("cached2", images.everywhere, pod_spec=hostname_pool(ARM64_POOL)),
        )
        assert code == 0 and "Warning" not in stderr, stderr  # cached answer, no registry needed
        code, _, stderr = apply(
            cluster, namespace, deployment("unknown", f"{images.host}/e2e/never:1")
        )
        assert code == 0, stderr  # failurePolicy open
        assert "Warning: could not inspect image" in stderr
        assert "cannot connect (connection refused)" in stderr
        failed = cluster.wait_for(
            lambda: events(cluster, namespace, "ImageInspectionFailed"),
            timeout=30,
            message="an ImageInspectionFailed Event",
        )
        assert failed[0]["involvedObject"]["name"] == "unknown"
    finally:
        e2e_registry.start()


def test_losing_the_last_compatible_node_emits_architecture_unavailable(
    cluster: LocalCluster, namespace: str, images: Images, archwarden: ArchwardenProcess
) -> None:
    pool = {"e2e-pool": namespace}
    cluster.add_node(f"{namespace}-arm", "arm64", labels=pool)
    cluster.add_node(f"{namespace}-amd", "amd64", labels=pool)
    try:
        spec = {"nodeSelector": pool}
        code, _, stderr = apply(
            cluster, namespace, deployment("edge", images.arm64_only, pod_spec=spec)
        )
        assert code == 0, stderr
        cluster.delete_node(f"{namespace}-arm")
        unavailable = cluster.wait_for(
            lambda: events(cluster, namespace, "ArchitectureUnavailable"),
            timeout=30,
            message=lambda: "an ArchitectureUnavailable Event\n" + archwarden.log_tail(),
        )
        assert unavailable[0]["involvedObject"]["kind"] == "Deployment"
        assert unavailable[0]["involvedObject"]["name"] == "edge"
        # The capacity CRDs exist (conftest), so the message also rules out autoscalers.
        assert unavailable[0]["message"].startswith("no node left")
        assert "can run this workload" in unavailable[0]["message"]
        assert archwarden.metric("archwarden_workloads_unschedulable", kind="Deployment") >= 1
    finally:
        cluster.delete_node(f"{namespace}-arm", wait=False)
        cluster.delete_node(f"{namespace}-amd", wait=False)


ARCH_TAINT = {"key": "kubernetes.io/arch", "value": "arm64", "effect": "NoSchedule"}
ARCH_TOLERATION = {
    "key": "kubernetes.io/arch",
    "operator": "Equal",
    "value": "arm64",
    "effect": "NoSchedule",
}


def test_a_gke_style_arm_pool_is_used_by_pods_whose_images_all_run_there(
    cluster: LocalCluster, namespace: str, images: Images
) -> None:
    # GKE's Arm pool: the node is tainted kubernetes.io/arch=arm64:NoSchedule.
    pool = {"e2e-pool": namespace}
    arm = f"{namespace}-arm"
    cluster.add_node(arm, "arm64", labels=pool, taints=[ARCH_TAINT])
    cluster.add_node(f"{namespace}-amd", "amd64", labels=pool)
    try:
        # Only the Arm node is left to it: without the toleration the scheduler keeps it
        # Pending (FailedScheduling, untolerated taint).
        on_arm = {"nodeSelector": {**pool, "kubernetes.io/arch": "arm64"}}
        code, _, stderr = apply(
            cluster, namespace, deployment("edge", images.multi, pod_spec=on_arm)
        )
        assert code == 0, stderr
        (pod,) = cluster.wait_pods_running(namespace, 1, selector="app=edge")
        assert pod["spec"]["nodeName"] == arm
        assert ARCH_TOLERATION in pod["spec"]["tolerations"]
        injected = cluster.wait_for(
            lambda: events(cluster, namespace, "TolerationInjected"),
            timeout=30,
            message="a TolerationInjected Event",
        )
        assert [(e["involvedObject"]["kind"], e["involvedObject"]["name"]) for e in injected] == [
            ("Deployment", "edge")
        ]
        assert "kubernetes.io/arch=arm64:NoSchedule" in injected[0]["message"]

        # An image that does not run on arm64 never gets it: placed on the amd64 node.
        code, _, stderr = apply(
            cluster,
            namespace,
            deployment("legacy", images.amd64_only, pod_spec={"nodeSelector": pool}),
        )
        assert code == 0, stderr
        (legacy,) = cluster.wait_pods_running(namespace, 1, selector="app=legacy")
        assert legacy["spec"]["nodeName"] == f"{namespace}-amd"
        assert ARCH_TOLERATION not in (legacy["spec"].get("tolerations") or [])
    finally:
        cluster.delete_node(arm, wait=False)
        cluster.delete_node(f"{namespace}-amd", wait=False)


def test_metrics_describe_inventory_and_registry_traffic(archwarden: ArchwardenProcess) -> None:
    assert archwarden.metric("archwarden_nodes", os="linux", arch="arm64") >= 2
    assert archwarden.metric("archwarden_nodes", os="windows", arch="amd64") >= 1
    text = archwarden.metrics()
    assert 'archwarden_registry_requests_total{code="200"' in text
    assert "archwarden_admission_duration_seconds_bucket" in text
    assert 'archwarden_image_cache_lookups_total{result="hit"}' in text


def test_closed_failure_policy_denies_with_the_registry_error(
    cluster: LocalCluster,
    namespace: str,
    images: Images,
    tmp_path: Any,
) -> None:
    # A second archwarden, failurePolicy closed, with its own webhook configurations; the API
    # server calls both, and one denial denies. Its registry host does not exist at all.
    from tests.support.registry import free_port

    dead = f"127.0.0.1:{free_port()}"
    closed = ArchwardenProcess(
        tmp_path / "closed",
        cluster.kubeconfig,
        {"failurePolicy": "closed", "registries": {dead: {"insecure": True}}},
        dev_name="closed.archwarden.io",
    ).start()
    try:
        image = f"{dead}/team/api:1"
        body = json.dumps(deployment("down", image))

        def created() -> subprocess.CompletedProcess[str]:
            # A server-side dry run is a CREATE every time: an apply that got in before the
            # webhook configuration took effect would store the Deployment, and every later
            # apply would be an UPDATE with an unchanged template, which archwarden admits.
            return cluster.kubectl(
                "create", "--dry-run=server", "-n", namespace, "-f", "-", input=body, check=False
            )

        stderr = cluster.wait_for(
            lambda: (r := created()).returncode != 0 and r.stderr,
            timeout=30,
            message=lambda: "the closed-policy webhook taking effect\n" + closed.log_tail(),
        )
        assert 'admission webhook "validate-deployments.closed.archwarden.io" denied' in stderr
        assert f"registry {dead}: cannot connect (connection refused): team/api:1" in stderr
    finally:
        closed.stop()


def test_check_from_cluster_uses_the_live_nodes(
    cluster: LocalCluster, images: Images, tmp_path: Any
) -> None:
    import subprocess

    from tests.support.archwarden import ARCHWARDEN

    manifest = tmp_path / "app.yaml"

    def check(obj: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        manifest.write_text(json.dumps(obj))
        command = [str(ARCHWARDEN), "check", "-f", str(manifest), "--from-cluster"]
        command += ["--kubeconfig", str(cluster.kubeconfig), "--insecure-registry", images.host]
        return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)

    result = check(deployment("edge", images.arm64_only))
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.strip() == "OK    Deployment/edge"
    windows_only = {"nodeSelector": {"kubernetes.io/os": "windows"}}
    result = check(deployment("edge", images.arm64_only, pod_spec=windows_only))
    assert result.returncode == 1
    assert (
        f"DENY  Deployment/edge: image {images.arm64_only} supports linux/arm64 only; the node "
        "this pod can use is windows/amd64 [os.version=10.0.20348] (1)"
    ) in result.stdout


def test_ephemeral_container_with_an_incompatible_image_is_denied(
    cluster: LocalCluster, namespace: str, images: Images
) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "target"},
        "spec": {
            "containers": [{"name": "app", "image": images.multi}],
            "nodeSelector": {"kubernetes.io/hostname": "linux-arm64-1"},
        },
    }
    code, _, stderr = apply(cluster, namespace, pod)
    assert code == 0, stderr
    running = cluster.wait_pods_running(namespace, 1)[0]
    # `kubectl debug` writes the pods/ephemeralcontainers subresource; do the same directly.
    running["spec"]["ephemeralContainers"] = [
        {"name": "debug", "image": images.amd64_only, "targetContainerName": "app"}
    ]
    path = f"/api/v1/namespaces/{namespace}/pods/target/ephemeralcontainers"
    proc = cluster.kubectl(
        "replace", "--raw", path, "-f", "-", input=json.dumps(running), check=False
    )
    assert proc.returncode != 0
    assert 'admission webhook "validate-ephemeralcontainers.archwarden.io" denied' in proc.stderr
    assert f"image {images.amd64_only} supports linux/amd64 only" in proc.stderr
    assert "linux/arm64 (1)" in proc.stderr


def test_dry_runs_are_judged_but_leave_no_events(
    cluster: LocalCluster, namespace: str, images: Images
) -> None:
    cluster.kubectl("label", "namespace", namespace, "archwarden.io/mode=warn")
    legacy = deployment("dry", images.amd64_only, pod_spec=hostname_pool(ARM64_POOL))
    proc = cluster.wait_for(
        lambda: (
            (
                p := cluster.kubectl(
                    "apply",
                    "--dry-run=server",
                    "-n",
                    namespace,
                    "-f",
                    "-",
                    input=json.dumps(legacy),
                    check=False,
                )
            ).returncode
            == 0
            and "Warning: image" in p.stderr
            and p
        ),
        timeout=20,
        message="a warned server-side dry run",
    )
    assert "supports linux/amd64 only" in proc.stderr
    # Events are posted within milliseconds of a review; give a wrong one ample time to show.
    time.sleep(3)
    assert events(cluster, namespace, "ArchitectureMismatch") == []
    # The same apply for real does post (so the check above could have seen one).
    code, _, stderr = apply(cluster, namespace, legacy)
    assert code == 0, stderr
    posted = cluster.wait_for(
        lambda: events(cluster, namespace, "ArchitectureMismatch"),
        timeout=30,
        message="the ArchitectureMismatch Event of the real apply",
    )
    assert len(posted) == 1 and posted[0].get("count", 1) == 1


def test_pull_secrets_from_the_pod_and_its_service_account(
    cluster: LocalCluster, namespace: str, private_registry: Any
) -> None:
    image = f"{private_registry.host}/private/app:1"
    # No credentials: inspection fails, failurePolicy open admits with the registry's reason.
    code, _, stderr = apply(cluster, namespace, deployment("anon", image))
    assert code == 0, stderr
    assert "unauthorized and no credentials for it" in stderr
    password = private_registry.password
    cluster.kubectl(
        "create",
        "secret",
        "docker-registry",
        "regcred",
        "-n",
        namespace,
        f"--docker-server={private_registry.host}",
        f"--docker-username={private_registry.username}",
        f"--docker-password={password}",
    )
    # The pod's own imagePullSecrets.
    spec = {"imagePullSecrets": [{"name": "regcred"}]}
    code, _, stderr = apply(cluster, namespace, deployment("own", image, pod_spec=spec))
    assert (code, "Warning" in stderr) == (0, False), stderr
    pods = cluster.wait_pods_running(namespace, 1, selector="app=own")
    assert (
        pods[0]["metadata"]["annotations"]["archwarden.io/platforms"] == "linux/amd64,linux/arm64"
    )
    # The ServiceAccount's imagePullSecrets.
    cluster.kubectl(
        "create",
        "serviceaccount",
        "puller",
        "-n",
        namespace,
    )
    cluster.kubectl(
        "patch",
        "serviceaccount",
        "puller",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        json.dumps({"imagePullSecrets": [{"name": "regcred"}]}),
    )
    spec = {"serviceAccountName": "puller"}
    code, _, stderr = apply(cluster, namespace, deployment("via-sa", image, pod_spec=spec))
    assert (code, "Warning" in stderr) == (0, False), stderr
    # A secret that does not exist is named, and the secret's content never appears anywhere.
    spec = {"imagePullSecrets": [{"name": "missing"}]}
    code, _, stderr = apply(cluster, namespace, deployment("missing", image, pod_spec=spec))
    assert code == 0
    assert f"pull secret {namespace}/missing not found" in stderr
    assert password and password not in stderr
    listed = json.dumps(cluster.get_json("events", "-n", namespace))
    assert password not in listed


def test_daemonset_is_denied_only_when_no_node_can_run_it(
    cluster: LocalCluster, namespace: str, images: Images
) -> None:
    def daemonset(name: str, image: str) -> dict[str, Any]:
        return {
            "apiVersion": "apps/v1",
            "kind": "DaemonSet",
            "metadata": {"name": name},
            "spec": {
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {
                        "containers": [{"name": "agent", "image": image}],
                        "nodeSelector": {"kubernetes.io/os": "linux"},
                    },
                },
            },
        }

    # amd64 + arm64 image; the linux nodes include one ppc64le: allowed, that node named.
    code, _, stderr = apply(cluster, namespace, daemonset("agent", images.multi))
    assert code == 0, stderr
    assert "Warning:" in stderr and "linux-ppc64le-1" in stderr
    # An s390x-only image runs on no linux node at all: denied.
    code, _, stderr = apply(cluster, namespace, daemonset("nowhere", images.s390x_only))
    assert code != 0
    assert f"image {images.s390x_only} supports linux/s390x only" in stderr
