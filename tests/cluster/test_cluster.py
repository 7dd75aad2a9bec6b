"""Proof that the local cluster is a real one: real apiserver, scheduler, controllers, webhooks."""

from __future__ import annotations

import base64
import json
import ssl
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.cluster import ClusterError, LocalCluster, kube_version
from tests.support.pki import make_ca, write_tls_files

pytestmark = pytest.mark.cluster

PAUSE = "registry.k8s.io/pause:3.10"


def deployment(name: str, replicas: int, node_selector: dict[str, str] | None = None) -> str:
    spec: dict[str, Any] = {"containers": [{"name": "pause", "image": PAUSE}]}
    if node_selector:
        spec["nodeSelector"] = node_selector
    return json.dumps(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": name}},
                "template": {"metadata": {"labels": {"app": name}}, "spec": spec},
            },
        }
    )


def test_version_is_real(cluster: LocalCluster) -> None:
    version = json.loads(cluster.kubectl("get", "--raw", "/version").stdout)
    assert version["gitVersion"] == kube_version()
    assert version["major"] == "1"
    client = json.loads(cluster.kubectl("version", "--client", "-o", "json").stdout)
    assert client["clientVersion"]["gitVersion"] == kube_version()


def test_default_nodes(cluster: LocalCluster) -> None:
    nodes = {n["metadata"]["name"]: n for n in cluster.nodes()}
    platforms = sorted(
        (n["metadata"]["labels"]["kubernetes.io/os"], n["metadata"]["labels"]["kubernetes.io/arch"])
        for n in nodes.values()
        if n["metadata"]["labels"].get("type") == "kwok"
        and n["metadata"]["name"].startswith(("linux-", "windows-"))
    )
    assert platforms == [
        ("linux", "amd64"),
        ("linux", "amd64"),
        ("linux", "arm64"),
        ("linux", "arm64"),
        ("linux", "ppc64le"),
        ("windows", "amd64"),
    ]
    windows = nodes["windows-amd64-1"]
    assert windows["metadata"]["labels"]["node.kubernetes.io/windows-build"] == "10.0.20348"
    assert windows["status"]["nodeInfo"]["operatingSystem"] == "windows"
    assert nodes["linux-arm64-1"]["status"]["nodeInfo"]["architecture"] == "arm64"
    for name in nodes:
        if name.startswith(("linux-", "windows-")):
            assert cluster.node_ready(name), f"{name} not Ready/schedulable"


def test_deployment_pods_are_scheduled_and_running(cluster: LocalCluster, namespace: str) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=deployment("web", 3))
    pods = cluster.wait_pods_running(namespace, 3, "app=web")
    node_names = {n["metadata"]["name"] for n in cluster.nodes()}
    for pod in pods:
        assert pod["spec"]["nodeName"] in node_names
        scheduled = [c for c in pod["status"]["conditions"] if c["type"] == "PodScheduled"]
        assert scheduled and scheduled[0]["status"] == "True"
        assert pod["status"]["podIP"]
    # Bound by the real scheduler: it records a Scheduled event per pod.
    events = cluster.get_json("events", "-n", namespace, "--field-selector", "reason=Scheduled")
    sources = {e.get("reportingComponent") or e["source"].get("component") for e in events["items"]}
    assert "default-scheduler" in sources, events
    # ...and the Deployment controller sees them available (kube-controller-manager is real).
    cluster.wait_for(
        lambda: (
            cluster.get_json("deployment", "web", "-n", namespace)["status"].get(
                "availableReplicas"
            )
            == 3
        ),
        message="deployment web available",
    )


def test_arch_node_selector_lands_on_arm64_only(cluster: LocalCluster, namespace: str) -> None:
    arm64 = set(cluster.nodes_with({"kubernetes.io/arch": "arm64"}))
    assert len(arm64) >= 2
    selector = {"kubernetes.io/arch": "arm64"}
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=deployment("arm", 6, selector))
    pods = cluster.wait_pods_running(namespace, 6, "app=arm")
    assert {p["spec"]["nodeName"] for p in pods} <= arm64


def test_unsatisfiable_selector_stays_pending(cluster: LocalCluster, namespace: str) -> None:
    selector = {"kubernetes.io/arch": "s390x"}
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=deployment("nowhere", 1, selector))

    def failed_scheduling() -> bool:
        events = cluster.get_json(
            "events", "-n", namespace, "--field-selector", "reason=FailedScheduling"
        )
        return bool(events["items"])

    cluster.wait_for(failed_scheduling, message="a FailedScheduling event")
    (pod,) = cluster.pods(namespace, "app=nowhere")
    assert pod["status"]["phase"] == "Pending"
    assert not pod["spec"].get("nodeName")


def test_node_helpers(cluster: LocalCluster, namespace: str) -> None:
    name = f"extra-arm64-{uuid.uuid4().hex[:6]}"
    cluster.add_node(name, "arm64", labels={"archwarden.test/pool": name})
    try:
        assert cluster.node_ready(name)
        pool = {"archwarden.test/pool": name}
        cluster.kubectl("apply", "-n", namespace, "-f", "-", input=deployment("pool", 2, pool))
        pods = cluster.wait_pods_running(namespace, 2, "app=pool")
        assert {p["spec"]["nodeName"] for p in pods} == {name}

        cluster.taint_node(name, "archwarden.test/blocked", "yes")
        node = cluster.get_json("node", name)
        assert {"key": "archwarden.test/blocked", "value": "yes", "effect": "NoSchedule"} in node[
            "spec"
        ]["taints"]
        cluster.untaint_node(name, "archwarden.test/blocked")

        cluster.cordon_node(name)
        assert cluster.get_json("node", name)["spec"].get("unschedulable") is True
        cluster.kubectl("scale", "-n", namespace, "deployment/pool", "--replicas=3")
        cluster.wait_for(
            lambda: any(
                p["status"].get("phase") == "Pending" and not p["spec"].get("nodeName")
                for p in cluster.pods(namespace, "app=pool")
            ),
            message="a pending pod on the cordoned pool",
        )
        cluster.uncordon_node(name)
        cluster.wait_pods_running(namespace, 3, "app=pool")
    finally:
        cluster.delete_node(name)
    assert name not in {n["metadata"]["name"] for n in cluster.nodes()}


# -- webhooks ---------------------------------------------------------------------------------


class _Webhook:
    """A tiny HTTPS admission webhook on 127.0.0.1 that denies everything it is asked about."""

    def __init__(self, directory: Path) -> None:
        ca = make_ca("archwarden cluster-test webhook CA")
        self.tls = write_tls_files(directory, ca=ca)
        self.ca_pem = self.tls.ca_file.read_bytes()
        self.message = f"archwarden-test-webhook denies this ({uuid.uuid4().hex[:8]})"
        self.reviews: list[dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                review = json.loads(self.rfile.read(length))
                outer.reviews.append(review)
                body = json.dumps(
                    {
                        "apiVersion": "admission.k8s.io/v1",
                        "kind": "AdmissionReview",
                        "response": {
                            "uid": review["request"]["uid"],
                            "allowed": False,
                            "status": {"code": 403, "message": outer.message},
                        },
                    }
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.tls.cert_file, self.tls.key_file)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> _Webhook:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook(tmp_path: Path) -> Iterator[_Webhook]:
    with _Webhook(tmp_path) as server:
        yield server


def test_apiserver_calls_validating_webhook(
    cluster: LocalCluster, namespace: str, webhook: _Webhook
) -> None:
    name = f"archwarden-cluster-test-{namespace}"
    config = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [
            {
                "name": "deny.cluster-test.archwarden.io",
                "clientConfig": {
                    "url": f"https://127.0.0.1:{webhook.port}/validate",
                    "caBundle": base64.b64encode(webhook.ca_pem).decode(),
                },
                "rules": [
                    {
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "operations": ["CREATE"],
                        "resources": ["configmaps"],
                    }
                ],
                # Only this test's namespace: other tests keep working meanwhile.
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
                "failurePolicy": "Fail",
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                "timeoutSeconds": 5,
            }
        ],
    }
    cluster.apply(config)
    try:
        attempts = iter(range(1_000_000))

        def denied() -> str | None:
            # The apiserver picks the configuration up asynchronously; a fresh name per try
            # keeps every attempt a CREATE.
            cm = {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": f"probe-{next(attempts)}"},
            }
            proc = cluster.kubectl(
                "apply", "-n", namespace, "-f", "-", input=json.dumps(cm), check=False
            )
            return proc.stderr if proc.returncode != 0 else None

        stderr = cluster.wait_for(denied, timeout=30, message="the webhook to deny a ConfigMap")
        assert webhook.message in stderr
        assert 'admission webhook "deny.cluster-test.archwarden.io" denied the request' in stderr
        review = webhook.reviews[-1]
        assert review["kind"] == "AdmissionReview"
        assert review["request"]["kind"]["kind"] == "ConfigMap"
        assert review["request"]["namespace"] == namespace
        assert review["request"]["userInfo"]["username"] == "kubernetes-admin"
    finally:
        cluster.kubectl("delete", "validatingwebhookconfiguration", name, "--ignore-not-found")

    with pytest.raises(ClusterError):  # sanity: kubectl errors surface as ClusterError
        cluster.kubectl("get", "configmap", "does-not-exist", "-n", namespace)
