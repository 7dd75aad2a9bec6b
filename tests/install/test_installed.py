"""The installed product on the real node: denials, placement, Events and metrics through the
chart's Service; rolling upgrades and a killed replica under steady admission load with
failurePolicy Fail (every request must be answered by archwarden itself); uninstall leaves no
webhook behind. The tests run in file order on one release; the last one uninstalls it."""

from __future__ import annotations

import json
import ssl
import time
from typing import Any

import httpx
import pytest

from tests.cluster.cluster import LocalCluster
from tests.install.conftest import (
    Images,
    ProcessSampler,
    Release,
    apiserver_webhook_counts,
    wait_replaced,
)
from tests.support.admission_load import AdmissionLoad, LoadReport

pytestmark = pytest.mark.install

KWOK_ARCH = {"linux-amd64-1": "amd64", "linux-amd64-2": "amd64", "linux-arm64-1": "arm64",
             "linux-arm64-2": "arm64"}  # fmt: skip


def deployment(name: str, image: str, replicas: int, **pod_spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": image}], **pod_spec},
            },
        },
    }


def wait_event(
    cluster: LocalCluster, namespace: str, reason: str, kind: str, name: str
) -> list[dict[str, Any]]:
    def found() -> list[dict[str, Any]]:
        return [
            e
            for e in cluster.get_json("events", "-n", namespace)["items"]
            if e.get("reason") == reason
            and e["involvedObject"]["kind"] == kind
            and e["involvedObject"]["name"] == name
        ]

    events: list[dict[str, Any]] = cluster.wait_for(
        found, timeout=30, message=f"a {reason} Event on {kind}/{name}"
    )
    return events


def say(capsys: pytest.CaptureFixture[str], text: str) -> None:
    with capsys.disabled():
        print(f"\n[install] {text}", flush=True)


def test_the_replicas_run_on_the_real_node_as_the_chart_says(
    cluster: LocalCluster, release: Release
) -> None:
    pods = release.pods()
    assert len(release.ready_pods()) == 2, release.describe()
    for pod in pods:
        spec = pod["spec"]
        assert spec["nodeName"] == LocalCluster.REAL_NODE
        assert spec["serviceAccountName"] == release.fullname
        container = spec["containers"][0]
        assert container["image"] == release.image
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert spec["securityContext"]["runAsUser"] == 65532
        status = pod["status"]["containerStatuses"][0]
        # The image as UID 65532 without a passwd entry crashed at start-up before.
        assert status["restartCount"] == 0, release.describe()
    sa = f"system:serviceaccount:{release.namespace}:{release.fullname}"
    # The chart's least-privilege role, not cluster-admin.
    for verb, resource, expected in (
        ("watch", "nodes", "yes"),
        ("create", "events", "yes"),
        ("create", "pods", "no"),
        ("delete", "validatingwebhookconfigurations", "no"),
        ("list", "secrets", "no"),
    ):
        answer = cluster.kubectl("auth", "can-i", verb, resource, "--as", sa, check=False)
        assert answer.stdout.strip() == expected, (verb, resource, answer.stdout)


def test_only_the_api_server_gets_past_the_webhooks_handshake(
    cluster: LocalCluster, release: Release
) -> None:
    # A forged review sent straight to a replica (from the host, on the pod bridge).
    pod_ip = release.pods()[0]["status"]["podIP"]
    url = f"https://{pod_ip}:9443/validate-pods"
    review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {}}
    anonymous = ssl.create_default_context()
    anonymous.check_hostname = False
    anonymous.verify_mode = ssl.CERT_NONE
    with pytest.raises(httpx.TransportError):
        httpx.post(url, json=review, verify=anonymous, timeout=5)
    # Signed by the right CA, but not the API server's name.
    admin = ssl.create_default_context()
    admin.check_hostname = False
    admin.verify_mode = ssl.CERT_NONE
    pki = cluster.state_dir / "pki"
    admin.load_cert_chain(pki / "admin.crt", pki / "admin.key")
    assert httpx.post(url, json=review, verify=admin, timeout=5).status_code == 403


def test_an_incompatible_deployment_is_denied_on_apply(
    cluster: LocalCluster, release: Release, images: Images, namespace: str
) -> None:
    # The arm64 pool, chosen by host name as people do: the pod can use linux/arm64 nodes only.
    arm64 = [name for name, arch in KWOK_ARCH.items() if arch == "arm64"]
    pool = {"key": "kubernetes.io/hostname", "operator": "In", "values": arm64}
    affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [pool]}]
            }
        }
    }
    obj = deployment("legacy", images.amd64_only, 2, affinity=affinity)
    proc = cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(obj), check=False)
    assert proc.returncode != 0
    assert f'admission webhook "validate-deployments.{release.fullname}.' in proc.stderr
    assert "denied the request" in proc.stderr
    assert f"image {images.amd64_only} supports linux/amd64 only" in proc.stderr
    assert "linux/arm64 (2)" in proc.stderr
    assert cluster.kubectl("get", "deploy", "legacy", "-n", namespace, check=False).returncode != 0
    # The Deployment was never stored, so only a review from the authenticated API server may
    # leave an Event about it.
    wait_event(cluster, namespace, "ArchitectureMismatch", "Deployment", "legacy")


def test_a_multi_arch_deployment_is_placed_and_reported(
    cluster: LocalCluster, release: Release, images: Images, namespace: str
) -> None:
    proc = cluster.kubectl(
        "apply", "-n", namespace, "-f", "-", input=json.dumps(deployment("web", images.multi, 3))
    )
    assert proc.returncode == 0
    pods = cluster.wait_pods_running(namespace, 3, "app=web")
    for pod in pods:
        terms = pod["spec"]["affinity"]["nodeAffinity"][
            "requiredDuringSchedulingIgnoredDuringExecution"
        ]["nodeSelectorTerms"]
        assert {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64", "arm64"]} in (
            terms[0]["matchExpressions"]
        )
        assert pod["metadata"]["annotations"]["archwarden.io/platforms"]
        # Placed by the scheduler on a kwok node that can run it (never the tainted real node).
        assert pod["spec"]["nodeName"] in KWOK_ARCH
    events = wait_event(cluster, namespace, "NodeAffinityInjected", "Deployment", "web")
    # Each Event names the replica that posted it (POD_NAME, set by the chart).
    replicas = {pod["metadata"]["name"] for pod in release.pods()}
    assert {e["reportingInstance"] for e in events} <= replicas, replicas
    assert all(e["reportingComponent"] == "archwarden" for e in events)


def test_metrics_through_the_service_show_the_decisions(release: Release) -> None:
    # Each replica counts its own requests; the Service picks one per scrape, so scrape until
    # both decisions were seen (the replica that denied need not be the one that admitted).
    seen: set[str] = set()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and seen != {"denied", "allowed"}:
        for line in release.metrics().splitlines():
            if line.startswith("archwarden_admission_requests_total{") and not line.endswith(
                " 0.0"
            ):
                for decision in ("denied", "allowed"):
                    if f'decision="{decision}"' in line:
                        seen.add(decision)
        time.sleep(0.5)
    assert seen == {"denied", "allowed"}


def run_load(
    cluster: LocalCluster,
    release: Release,
    images: Images,
    namespace: str,
    action: Any,
    *,
    settle: float = 3.0,
) -> tuple[LoadReport, dict[str, float]]:
    before = apiserver_webhook_counts(cluster, release)
    with (
        ProcessSampler() as sampler,
        AdmissionLoad(
            cluster.kubeconfig,
            namespace,
            deny_image=images.amd64_only,
            admit_image=images.multi,
            rate=10,
        ) as load,
    ):
        time.sleep(settle)
        began = time.monotonic()
        action()
        load.report.action = (began - load.started, time.monotonic() - load.started)
        time.sleep(settle)
    load.report.processes = sampler.lines
    after = apiserver_webhook_counts(cluster, release)
    return load.report, {k: after[k] - before[k] for k in before}


def assert_nothing_lost(
    capsys: pytest.CaptureFixture[str],
    what: str,
    report: LoadReport,
    apiserver: dict[str, float],
    release: Release,
) -> None:
    """Every request answered by archwarden itself; the API server saw no miss either."""
    say(capsys, f"{what}: {report.summary()}; API server: {apiserver}")
    if report.failures:
        shown = "\n".join([*report.failures[:3], "...", *report.failures[-2:]])
        pytest.fail(
            f"{len(report.failures)} of {report.sent} requests failed (the action ran from "
            f"+{report.action[0]:.1f}s to +{report.action[1]:.1f}s):\n{shown}\n"
            f"{release.describe()}\n--- archwarden processes each second (pid, state, kernel "
            f"wait, CPU used) ---\n" + "\n".join(report.processes)
        )
    assert report.answered == report.sent > 30
    assert apiserver["fail_open"] == 0
    assert apiserver["rejected_without_answer"] == 0


def test_a_replica_killed_mid_load_loses_no_admission(
    cluster: LocalCluster,
    release: Release,
    images: Images,
    namespace: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    victim = release.ready_pods()[0]

    def kill() -> None:
        cluster.kubectl("delete", "pod", victim, "-n", release.namespace, "--wait=false")
        release.cluster.wait_for(
            lambda: len(release.ready_pods()) == 2 and victim not in release.ready_pods(),
            timeout=120,
            interval=0.5,
            message=lambda: "a replacement replica\n" + release.describe(),
        )

    report, apiserver = run_load(cluster, release, images, namespace, kill)
    assert_nothing_lost(capsys, f"replica {victim} killed under load", report, apiserver, release)


def test_helm_upgrade_rolls_both_replicas_under_load(
    cluster: LocalCluster,
    release: Release,
    images: Images,
    namespace: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    old = set(release.ready_pods())

    def upgrade() -> None:
        # A changed config changes the pod template's checksum: both replicas roll.
        release.install_or_upgrade("upgrade", config={"cache": {"tagTTL": 120}})
        wait_replaced(release, old)

    report, apiserver = run_load(cluster, release, images, namespace, upgrade)
    assert_nothing_lost(capsys, "helm upgrade under load", report, apiserver, release)


def test_uninstall_leaves_no_webhook_behind(
    cluster: LocalCluster, release: Release, images: Images, namespace: str
) -> None:
    # A pod archwarden holds: its image's registry does not answer (failure policy open admits
    # it undecided, and the chart's policy gate stays until archwarden can decide).
    held = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "held"},
        "spec": {"containers": [{"name": "c", "image": "127.0.0.1:9/nowhere/app:1"}]},
    }
    cluster.kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(held))
    body = cluster.get_json("pod", "held", "-n", namespace)
    assert [g["name"] for g in body["spec"]["schedulingGates"]] == ["archwarden.io/platforms"]
    release.helm("uninstall", release.name, "--wait", "--timeout", "120s")
    for kind in (
        "validatingwebhookconfigurations",
        "mutatingwebhookconfigurations",
        "mutatingadmissionpolicies",
        "mutatingadmissionpolicybindings",
    ):
        left = cluster.kubectl("get", kind, release.fullname, check=False)
        assert left.returncode != 0 and "NotFound" in left.stderr, left.stdout
    # The hook released the gate it would otherwise leave behind, and said so on the pod.
    assert not cluster.get_json("pod", "held", "-n", namespace)["spec"].get("schedulingGates")
    wait_event(cluster, namespace, "SchedulingGateReleased", "Pod", "held")
    # With failurePolicy Fail, a configuration left behind would reject this pod.
    other = f"after-{release.name}"
    cluster.create_namespace(other)
    try:
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "free"},
            "spec": {"containers": [{"name": "c", "image": images.amd64_only}]},
        }
        proc = cluster.kubectl(
            "create", "-n", other, "-o", "json", "-f", "-", input=json.dumps(pod), check=False
        )
        assert proc.returncode == 0, proc.stderr
        assert not json.loads(proc.stdout)["spec"].get("schedulingGates")  # no policy left
    finally:
        cluster.delete_namespace(other)
