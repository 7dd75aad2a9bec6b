"""The background audit end to end: workloads created while archwarden was stopped, a real
registry behind the counting proxy, kwok nodes (amd64 and arm64), the OpenReports CRDs.

One archwarden of its own (``--dev-name audit-e2e.archwarden.io``), started after the workloads
exist; the namespace is in audit mode, so an archwarden already running for other tests admits
them too (and records, never denies).
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.cluster import REPO_ROOT, LocalCluster
from tests.e2e.test_admission import apply, deployment, events
from tests.support.archwarden import ArchwardenProcess
from tests.support.images import Seeder
from tests.support.proxy import CountingProxy
from tests.support.registry import RegistryServer, start_registry

pytestmark = pytest.mark.e2e

PERIOD = 45
RATE = 2.0
BURST = 2
TAG_TTL = 3
CRDS = REPO_ROOT / "third_party" / "openreports" / "crds"
CRD_NAMES = ("reports.openreports.io", "clusterreports.openreports.io")
BUDGET_IMAGES = 6


@dataclass
class Audited:
    cluster: LocalCluster
    namespace: str
    other: str
    archwarden: ArchwardenProcess
    registry: RegistryServer
    proxy: CountingProxy
    started: float
    """time.monotonic() just before archwarden started."""
    image: dict[str, str]


def pinned(arch: str) -> dict[str, Any]:
    return {"nodeSelector": {"kubernetes.io/arch": arch}}


@pytest.fixture(scope="module")
def audited(cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Audited]:
    registry = start_registry(tmp_path_factory.mktemp("audit-registry"), "plain")
    proxy = CountingProxy(registry)
    proxy.__enter__()
    namespace = f"t-audit-{int(time.time()) % 100000}"
    other = namespace + "-enforced"
    process: ArchwardenProcess | None = None
    try:
        with Seeder(registry) as seeder:
            seeder.push_image("audit/legacy", "1", "linux/amd64")
            seeder.push_multiarch("audit/drift", "1", ["linux/amd64", "linux/arm64"])
            seeder.push_multiarch("audit/web", "1", ["linux/amd64", "linux/arm64"])
            # An amd64 build listed as arm64 too (audit.verifyImages finds it).
            seeder.push_mislabelled(
                "audit/mislabelled",
                "1",
                [("linux/amd64", "linux/amd64"), ("linux/arm64", "linux/amd64")],
            )
            for i in range(BUDGET_IMAGES):
                seeder.push_image(f"audit/budget{i}", "1", "linux/amd64")
        host = proxy.host
        image = {
            "legacy": f"{host}/audit/legacy:1",
            "drift": f"{host}/audit/drift:1",
            "web": f"{host}/audit/web:1",
            "mislabelled": f"{host}/audit/mislabelled:1",
            **{f"budget{i}": f"{host}/audit/budget{i}:1" for i in range(BUDGET_IMAGES)},
        }
        cluster.kubectl("apply", "-f", str(CRDS))
        cluster.kubectl(
            "wait", "--for=condition=Established", "--timeout=60s", *(f"crd/{n}" for n in CRD_NAMES)
        )
        cluster.create_namespace(namespace)
        cluster.kubectl("label", "namespace", namespace, "archwarden.io/mode=audit")
        cluster.create_namespace(other)
        # Created while this archwarden is stopped.
        workloads = [
            deployment("legacy", image["legacy"], pod_spec=pinned("arm64")),
            deployment("drift", image["drift"], pod_spec=pinned("arm64")),
            deployment("pending", image["web"], pod_spec=pinned("s390x")),
            deployment("mislabelled", image["mislabelled"]),
            *(deployment(f"budget{i}", image[f"budget{i}"]) for i in range(BUDGET_IMAGES)),
        ]
        for obj in workloads:
            code, _, stderr = apply(cluster, namespace, obj)
            assert code == 0, stderr
        # The drift workload runs on arm64 (kwok) nodes before archwarden starts.
        cluster.wait_for(
            lambda: any(
                p["spec"].get("nodeName", "").startswith("linux-arm64")
                for p in cluster.get_json("pods", "-n", namespace, "-l", "app=drift")["items"]
            ),
            timeout=60,
            interval=0.5,
            message="the drift deployment's pod scheduled on an arm64 node",
        )
        workdir: Path = tmp_path_factory.mktemp("audit-archwarden")
        process = ArchwardenProcess(
            workdir,
            cluster.kubeconfig,
            {
                "mode": "enforce",
                "registries": {host: {"insecure": True}, cluster.registry: {"insecure": True}},
                "cache": {"tagTTL": TAG_TTL, "failureTTL": 1},
                "audit": {
                    "periodSeconds": PERIOD,
                    "requestsPerSecond": RATE,
                    "burst": BURST,
                    "verifyImages": True,
                },
                "webhook": {
                    "clientCAFile": str(cluster.ca_file),
                    "clientNames": [LocalCluster.WEBHOOK_CLIENT_NAME],
                },
            },
            dev_name="audit-e2e.archwarden.io",
        )
        before = len(proxy.records)
        assert before == 0 or all(r.path.startswith("/v2/") for r in proxy.records)
        proxy.records.clear()  # only archwarden's requests are counted from here
        started = time.monotonic()
        process.start()
        yield Audited(cluster, namespace, other, process, registry, proxy, started, image)
    finally:
        if process is not None:
            process.stop()
        cluster.delete_namespace(namespace)
        cluster.delete_namespace(other)
        cluster.kubectl("delete", "crd", *CRD_NAMES, "--ignore-not-found", "--wait=true")
        proxy.__exit__(None, None, None)
        registry.stop()


def wait_event(a: Audited, reason: str, name_prefix: str, timeout: float) -> dict[str, Any]:
    def found() -> dict[str, Any] | None:
        for event in events(a.cluster, a.namespace, reason):
            if event["involvedObject"]["name"].startswith(name_prefix):
                return event
        return None

    return a.cluster.wait_for(
        found,
        timeout=timeout,
        interval=0.5,
        message=lambda: f"a {reason} Event on {name_prefix}\n{a.archwarden.log_tail()}",
    )


def test_workloads_created_while_stopped_are_reported_within_one_period(audited: Audited) -> None:
    a = audited
    a.cluster.wait_for(
        lambda: a.archwarden.metric("archwarden_audit_last_completed_timestamp_seconds") > 0,
        timeout=PERIOD,
        interval=0.5,
        message=lambda: "the first audit to complete\n" + a.archwarden.log_tail(),
    )
    assert time.monotonic() - a.started < PERIOD  # within one period after it started
    event = wait_event(a, "ArchitectureMismatch", "legacy", timeout=5)
    assert event["involvedObject"]["kind"] == "Deployment"
    assert event["type"] == "Warning" and event["message"].startswith("audit: ")
    assert a.archwarden.metric("archwarden_audit_workloads_total") >= 4 + BUDGET_IMAGES
    # legacy (an amd64 image pinned to arm64) is incompatible, and so is pending: no node
    # matches its s390x pin, and its image (amd64, arm64) could not run on one that did (its
    # pods are also explained, below).
    assert a.archwarden.metric("archwarden_workloads_incompatible", kind="Deployment") == 2

    # The same message as admission gives for the same object where it is enforced.
    legacy = deployment("legacy", a.image["legacy"], pod_spec=pinned("arm64"))
    proc = a.cluster.kubectl(
        "create",
        "--dry-run=server",
        "-n",
        a.other,
        "-f",
        "-",
        input=json.dumps(legacy),
        check=False,
    )
    assert proc.returncode != 0
    message = event["message"].removeprefix("audit: ")
    assert message in proc.stderr

    report = a.cluster.get_json(
        "reports.openreports.io", "archwarden-architecture", "-n", a.namespace
    )
    results = {r["resources"][0]["name"]: r for r in report["results"]}
    assert results["legacy"]["result"] == "fail"
    assert results["legacy"]["message"] == message
    assert results["budget0"]["result"] == "pass"
    assert results["pending"]["result"] == "fail"
    assert results["pending"]["message"].startswith(
        "nodeSelector kubernetes.io/arch=s390x contradicts"
    )
    assert set(results) == {
        "legacy",
        "drift",
        "pending",
        "mislabelled",
        *(f"budget{i}" for i in range(BUDGET_IMAGES)),
    }


def test_a_pod_pending_on_an_arch_pin_is_explained(audited: Audited) -> None:
    event = wait_event(audited, "NoNodeForArchitecture", "pending-", timeout=PERIOD + 5)
    assert event["involvedObject"]["kind"] == "Pod"
    message = event["message"]
    assert f"image {audited.image['web']} supports linux/amd64 and linux/arm64 only" in message
    assert "the pod asks for s390x" in message
    nodes = message.split("; the nodes are ")[1]
    assert "linux/amd64" in nodes and "linux/arm64" in nodes and "s390x" not in nodes


def test_an_index_that_lies_is_reported_when_images_are_verified(audited: Audited) -> None:
    event = wait_event(audited, "ImagePlatformsMislabelled", "mislabelled", timeout=PERIOD + 5)
    assert event["involvedObject"]["kind"] == "Deployment"
    message = event["message"]
    assert message.startswith(f"image {audited.image['mislabelled']} is mislabelled: index entry")
    assert "says linux/arm64 but its config says linux/amd64" in message
    assert audited.archwarden.metric("archwarden_images_mislabelled_total") >= 1


def test_a_tag_repushed_without_arm64_warns_the_arm64_placed_workload(audited: Audited) -> None:
    a = audited
    # The first audit has resolved the tag (amd64 + arm64).
    wait_event(a, "ArchitectureMismatch", "legacy", timeout=PERIOD + 5)
    with Seeder(a.registry) as seeder:
        seeder.push_image("audit/drift", "1", "linux/amd64")
    event = wait_event(a, "ImagePlatformsChanged", "drift", timeout=TAG_TTL * 4 + 10)
    assert event["involvedObject"]["kind"] == "Deployment"
    message = event["message"]
    assert f"image {a.image['drift']} now supports linux/amd64 only" in message
    assert "lost linux/arm64" in message and "the next rollout would be denied" in message
    assert a.archwarden.metric("archwarden_image_platforms_changed_total") >= 1


def test_the_audit_never_exceeds_its_registry_budget(audited: Audited) -> None:
    a = audited
    wait_event(a, "ArchitectureMismatch", "legacy", timeout=PERIOD + 5)
    time.sleep(2)
    sent = len(a.proxy.records)
    elapsed = time.monotonic() - a.started
    # Every request archwarden sent since it started was the audit's (no pod was created
    # since): at most the burst plus the rate over the time it ran.
    print(f"audit budget: {sent} requests in {elapsed:.1f}s, bound {BURST + RATE * elapsed:.1f}")
    assert sent > BUDGET_IMAGES
    assert sent <= BURST + RATE * elapsed, (sent, elapsed)
    # And the audit really was held to it: its first run alone needed more than the burst.
    completed = a.archwarden.metric("archwarden_audit_duration_seconds")
    assert completed >= (BUDGET_IMAGES + 3 - BURST) / RATE * 0.9


def arm64_elf() -> bytes:
    """A complete static linux/arm64 executable: ``exit(0)`` in three instructions.

    Written here rather than cross-compiled: the kernel of an amd64 node refuses it for its
    ELF machine field (EM_AARCH64) alone, which is what a binary built for arm64 is to it."""
    code = struct.pack("<3I", 0xD2800000, 0xD2800BA8, 0xD4000001)  # mov x0,#0; mov x8,#93; svc #0
    base, entry = 0x400000, 64 + 56
    size = entry + len(code)
    header = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)
    header += struct.pack("<HHIQQQIHHHHHH", 2, 183, 1, base + entry, 64, 0, 0, 64, 56, 1, 0, 0, 0)
    program = struct.pack("<IIQQQQQQ", 1, 5, 0, base, base, size, size, 0x1000)
    return header + program + code


def test_an_image_that_lies_fails_with_exec_format_error_and_is_reported(
    audited: Audited, tmp_path: Path
) -> None:
    a = audited
    if not any(
        n["metadata"]["name"] == LocalCluster.REAL_NODE
        for n in a.cluster.get_json("nodes")["items"]
    ):
        pytest.skip("the cluster has no real node (ARCHWARDEN_REAL_NODE=0)")
    binary = tmp_path / "catatonit"
    binary.write_bytes(arm64_elf())
    image = f"{a.cluster.registry}/archwarden-e2e/liar:1"
    # The pause image's recipe: one layer with the binary as /catatonit, a config that says
    # linux/<this machine> (amd64): an image whose config lies about its binary.
    subprocess.run(
        [sys.executable, str(REPO_ROOT / "hack/cluster/pause_image.py"), a.cluster.registry,
         "archwarden-e2e/liar:1", str(binary)],
        check=True,
        timeout=60,
    )  # fmt: skip
    liar = deployment(
        "liar",
        image,
        pod_spec={
            "nodeSelector": {LocalCluster.REAL_NODE_TAINT: "true"},
            "tolerations": [{"key": LocalCluster.REAL_NODE_TAINT, "operator": "Exists"}],
            "terminationGracePeriodSeconds": 1,
        },
    )
    # runc reports a failed execve on the container's stderr; the kubelet copies it into the
    # terminated state's message when the container asks for it.
    liar["spec"]["template"]["spec"]["containers"][0]["terminationMessagePolicy"] = (
        "FallbackToLogsOnError"
    )
    code, _, stderr = apply(a.cluster, a.namespace, liar)
    assert code == 0, stderr

    def failed() -> str | None:
        for pod in a.cluster.get_json("pods", "-n", a.namespace, "-l", "app=liar")["items"]:
            for status in pod["status"].get("containerStatuses") or []:
                for state in (status.get("state") or {}, status.get("lastState") or {}):
                    for detail in state.values():
                        if "exec format error" in str(detail.get("message", "")):
                            return str(detail["message"])
        return None

    message = a.cluster.wait_for(
        failed,
        timeout=90,
        interval=1,
        message=lambda: (
            a.cluster.kubectl("describe", "pods", "-n", a.namespace, "-l", "app=liar").stdout
        ),
    )
    assert "exec format error" in message  # the binary really failed
    event = wait_event(a, "ExecFormatError", "liar", timeout=30)
    assert event["involvedObject"]["kind"] == "Deployment"
    text = event["message"]
    # runc's line reaches the kubelet only through the container's log: the Event says so.
    assert (
        f"(image {image}) on node {LocalCluster.REAL_NODE} (linux/amd64) ended with a log line "
        "saying exec format error for its entrypoint"
    ) in text
    assert "as runc writes" in text and "the evidence is only this log line" in text
    assert (
        "supports linux/amd64 only, so if the line is runc's, its binary does not match what "
        "the image says"
    ) in text
    assert a.archwarden.metric("archwarden_exec_format_errors_total", evidence="log") >= 1
    a.cluster.kubectl("delete", "deployment", "liar", "-n", a.namespace, "--wait=false")
