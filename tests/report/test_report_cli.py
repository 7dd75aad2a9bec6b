"""``archwarden report`` against the live local cluster: table, JSON and the HTML in Chromium."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from archwarden import readiness
from tests.cluster.cluster import REPO_ROOT, LocalCluster
from tests.support import browser, dom
from tests.support.images import Seeder
from tests.support.proxy import CountingProxy
from tests.support.registry import RegistryServer

pytestmark = pytest.mark.e2e

ARCHWARDEN = shutil.which("archwarden") or str(REPO_ROOT / ".venv/bin/archwarden")
SCREENSHOT = REPO_ROOT / "docs" / "report.png"


MI = 2**20


def pod_spec(
    *images: str, requests: tuple[tuple[str, str], ...] = (), **extra: Any
) -> dict[str, Any]:
    """Containers of ``images``; ``requests`` gives each its (cpu, memory) requests, in order."""
    containers: list[dict[str, Any]] = [
        {"name": f"c{i}", "image": image} for i, image in enumerate(images)
    ]
    for container, (cpu, memory) in zip(containers, requests, strict=False):
        container["resources"] = {"requests": {"cpu": cpu, "memory": memory}}
    return {"containers": containers, **extra}


def init(name: str, image: str, cpu: str, memory: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "image": image,
        "resources": {"requests": {"cpu": cpu, "memory": memory}},
        **extra,
    }


def controller(
    kind: str, name: str, spec: dict[str, Any], replicas: int | None = None
) -> dict[str, Any]:
    template = {"metadata": {"labels": {"app": name}}, "spec": spec}
    body: dict[str, Any] = {"selector": {"matchLabels": {"app": name}}, "template": template}
    if replicas is not None:
        body["replicas"] = replicas
    if kind == "StatefulSet":
        body["serviceName"] = name
    return {
        "apiVersion": "apps/v1",
        "kind": kind,
        "metadata": {"name": name},
        "spec": body,
    }


def run_report(
    cluster: LocalCluster, host: str, namespace: str, *args: str
) -> tuple[int, str, str]:
    proc = subprocess.run(
        [
            ARCHWARDEN,
            "report",
            "--kubeconfig",
            str(cluster.kubeconfig),
            "--insecure-registry",
            host,
            "-n",
            namespace,
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return proc.returncode, proc.stdout, proc.stderr


@pytest.fixture
def workloads(
    cluster: LocalCluster,
    namespace: str,
    report_registry: RegistryServer,
    report_proxy: CountingProxy,
) -> dict[str, str]:
    """Every reported kind, created straight in the cluster (no archwarden running); the
    images are named by the counting proxy's address. Small requests (the cluster is shared),
    with replicas, an init container, a sidecar and a CronJob's parallelism; the test reads
    what they add up to."""
    with Seeder(report_registry) as seeder:
        seeder.push_multiarch("team-a/web", "1", ["linux/amd64", "linux/arm64"])
        seeder.push_image("team-a/legacy", "2", "linux/amd64")
        seeder.push_image("team-b/edge", "1", "linux/arm64")
        seeder.push_image("team-b/mainframe", "1", "linux/s390x")
        seeder.push_multiarch("tools/tool", "1", ["linux/amd64", "linux/arm64", "linux/ppc64le"])
    host = report_proxy.host
    images = {
        "web": f"{host}/team-a/web:1",
        "legacy": f"{host}/team-a/legacy:2",
        "edge": f"{host}/team-b/edge:1",
        "mainframe": f"{host}/team-b/mainframe:1",
        "tool": f"{host}/tools/tool:1",
        "missing": f"{host}/team-a/missing:1",
    }
    linux = {"nodeSelector": {"kubernetes.io/os": "linux"}}
    cron = {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": "nightly"},
        "spec": {
            "schedule": "0 0 1 1 *",
            "jobTemplate": {
                "spec": {
                    "parallelism": 2,
                    "template": {
                        "spec": pod_spec(
                            images["mainframe"],
                            requests=(("200m", "256Mi"),),
                            restartPolicy="Never",
                        )
                    },
                }
            },
        },
    }
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "once"},
        "spec": {
            "template": {
                "spec": pod_spec(images["web"], requests=(("10m", "8Mi"),), restartPolicy="Never")
            }
        },
    }
    bare = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "tool"}}
    lost = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "lost"}}
    cluster.apply(
        [
            controller(
                "Deployment",
                "web",
                pod_spec(
                    images["web"],
                    images["tool"],
                    requests=(("40m", "64Mi"), ("10m", "32Mi")),
                    **linux,
                ),
                replicas=2,
            ),
            controller(
                "Deployment",
                "legacy",
                pod_spec(
                    images["legacy"],
                    requests=(("20m", "32Mi"),),
                    # Needs more CPU than the container while it runs: the pod counts 100m.
                    initContainers=[init("setup", images["legacy"], "100m", "8Mi")],
                ),
                replicas=3,
            ),
            controller(
                "StatefulSet",
                "db",
                pod_spec(
                    images["web"],
                    images["legacy"],
                    requests=(("25m", "16Mi"), ("25m", "16Mi")),
                    # A sidecar: counted with the containers.
                    initContainers=[
                        init("proxy", images["tool"], "10m", "16Mi", restartPolicy="Always")
                    ],
                ),
            ),
            controller(
                "DaemonSet", "agent", pod_spec(images["edge"], requests=(("5m", "8Mi"),), **linux)
            ),
            cron,
            job,
            # 0.015 cores: the API server keeps it as 15m.
            {**bare, "spec": pod_spec(images["tool"], requests=(("0.015", "16Mi"),))},
            {**lost, "spec": pod_spec(images["missing"], requests=(("30m", "48Mi"),))},
        ],
        namespace,
    )
    # The controllers' own objects exist before the report runs: it must leave them out.
    cluster.wait_for(
        lambda: (
            len(cluster.get_json("replicasets", "-n", namespace)["items"]) == 2
            and len(cluster.pods(namespace, "app=web")) == 2
            and len(cluster.pods(namespace, "job-name=once")) == 1
            and "observedGeneration" in agent_status(cluster, namespace)
        ),
        timeout=60,
        message="the Deployments' ReplicaSets and pods, the Job's pod, the DaemonSet counted",
    )
    return images


def mebi(count: int) -> str:
    return readiness.memory(count * MI)


def agent_status(cluster: LocalCluster, namespace: str) -> dict[str, Any]:
    status: dict[str, Any] = cluster.get_json("daemonset", "agent", "-n", namespace).get(
        "status", {}
    )
    return status


def test_report_lists_the_cluster(
    cluster: LocalCluster,
    namespace: str,
    report_proxy: CountingProxy,
    workloads: dict[str, str],
    tmp_path: Path,
) -> None:
    host = report_proxy.host
    report_proxy.reset()
    code, stdout, stderr = run_report(cluster, host, namespace, "--format", "json")
    # Shared images (web:1 in three workloads, tool:1 in two) are asked for once: the engine's
    # cache serves the rest. An index naming its platforms is one GET; a single image adds
    # its config blob (legacy, edge, mainframe).
    counts = report_proxy.counter()
    assert set(counts.values()) == {1}
    assert {method for method, _ in counts} == {"GET"}
    assert sorted(path for _, path in counts if "/manifests/" in path) == [
        f"/v2/{image}"
        for image in (
            "team-a/legacy/manifests/2",
            "team-a/missing/manifests/1",
            "team-a/web/manifests/1",
            "team-b/edge/manifests/1",
            "team-b/mainframe/manifests/1",
            "tools/tool/manifests/1",
        )
    ]
    assert sorted(path.split("/blobs/")[0] for _, path in counts if "/blobs/" in path) == [
        "/v2/team-a/legacy",
        "/v2/team-b/edge",
        "/v2/team-b/mainframe",
    ]
    # The missing image is one line on stderr; the report is complete otherwise.
    assert code == 1, stderr
    assert stderr.splitlines() == [
        f"archwarden: error: registry {host}: manifest unknown: team-a/missing:1"
    ]
    data = json.loads(stdout)
    rows = {f"{w['kind']}/{w['name']}": w for w in data["workloads"]}
    assert sorted(rows) == [
        "CronJob/nightly",
        "DaemonSet/agent",
        "Deployment/legacy",
        "Deployment/web",
        "Job/once",
        "Pod/lost",
        "Pod/tool",
        "StatefulSet/db",
    ]
    assert {k: w["arm64"] for k, w in rows.items()} == {
        "CronJob/nightly": "blocked",
        "DaemonSet/agent": "ready",
        "Deployment/legacy": "blocked",
        "Deployment/web": "ready",
        "Job/once": "ready",
        "Pod/lost": "unknown",
        "Pod/tool": "ready",
        "StatefulSet/db": "blocked",
    }
    nodes = {n["platform"] for n in data["nodePlatforms"]}
    assert {"linux/amd64", "linux/arm64", "linux/ppc64le", "windows/amd64"} <= nodes
    assert rows["Deployment/web"]["runsOn"] == ["linux/amd64", "linux/arm64"]
    assert rows["Deployment/web"]["platforms"] == ["linux/amd64", "linux/arm64"]
    assert [i["platforms"] for i in rows["Deployment/web"]["images"]] == [
        ["linux/amd64", "linux/arm64"],
        ["linux/amd64", "linux/arm64", "linux/ppc64le"],
    ]
    assert rows["DaemonSet/agent"]["runsOn"] == ["linux/arm64"]
    assert rows["DaemonSet/agent"]["verdict"] == "PartialArchitectureMismatch"
    assert rows["Deployment/legacy"]["blockingImages"] == [workloads["legacy"]]
    assert rows["CronJob/nightly"]["runsOn"] == []
    assert rows["CronJob/nightly"]["verdict"] == "ArchitectureMismatch"
    assert rows["Pod/lost"]["images"][0]["error"].endswith("manifest unknown: team-a/missing:1")
    assert data["summary"] == {
        "workloads": 8,
        "arm64Ready": 4,
        "arm64Blocked": 3,
        "arm64Unknown": 1,
    }
    # Ranked by the requests they hold back: team-b's one CronJob (2 x 200m) before
    # team-a's two workloads (3 x 100m + 60m).
    assert [(g["registry"], g["owner"], g["workloads"]) for g in data["blockers"]] == [
        (host, "team-b", 1),
        (host, "team-a", 2),
    ]
    team_a = {"workloads": 2, "replicas": 4, "cpu": 0.36, "memory": 144 * MI}
    assert data["blockers"][1]["images"] == [
        {
            "image": workloads["legacy"],
            "platforms": ["linux/amd64"],
            "workloads": [f"{namespace}/Deployment/legacy", f"{namespace}/StatefulSet/db"],
            "heldBack": team_a,
        }
    ]
    assert data["blockers"][1]["heldBack"] == team_a
    assert data["blockers"][0]["heldBack"] == {
        "workloads": 1,
        "replicas": 2,
        "cpu": 0.4,
        "memory": 512 * MI,
    }
    # Requests as the scheduler counts a pod, times its replicas.
    weights = {
        k: (w["weight"]["replicas"], w["weight"]["podRequests"], w["weight"].get("notes"))
        for k, w in rows.items()
    }
    agents = agent_status(cluster, namespace)["desiredNumberScheduled"]
    assert agents >= 1
    assert weights == {
        "CronJob/nightly": (2, {"cpu": 0.2, "memory": 256 * MI}, None),
        "DaemonSet/agent": (agents, {"cpu": 0.005, "memory": 8 * MI}, None),
        "Deployment/legacy": (3, {"cpu": 0.1, "memory": 32 * MI}, None),
        "Deployment/web": (2, {"cpu": 0.05, "memory": 96 * MI}, None),
        "Job/once": (1, {"cpu": 0.01, "memory": 8 * MI}, None),
        "Pod/lost": (1, {"cpu": 0.03, "memory": 48 * MI}, None),
        "Pod/tool": (1, {"cpu": 0.015, "memory": 16 * MI}, None),
        "StatefulSet/db": (1, {"cpu": 0.06, "memory": 48 * MI}, None),
    }
    overall = {
        "ready": {
            "workloads": 4,
            "replicas": 4 + agents,
            "cpu": (125 + 5 * agents) / 1000,
            "memory": (216 + 8 * agents) * MI,
        },
        "blocked": {"workloads": 3, "replicas": 6, "cpu": 0.76, "memory": 656 * MI},
        "unknown": {"workloads": 1, "replicas": 1, "cpu": 0.03, "memory": 48 * MI},
    }
    assert data["weights"] == {
        "overall": overall,
        "namespaces": [{"namespace": namespace, **overall}],
    }

    code, stdout, _ = run_report(cluster, host, namespace)
    lines = stdout.splitlines()
    assert code == 1
    assert lines[0].split()[:6] == ["WORKLOAD", "ARM64", "REPLICAS", "CPU", "MEMORY", "VERDICT"]
    legacy = next(line for line in lines if line.startswith(f"{namespace}/Deployment/legacy "))
    assert legacy.split() == [
        f"{namespace}/Deployment/legacy",
        "blocked",
        "3",
        "0.3",
        "96Mi",
        "Compatible",
        "linux/amd64",
        "linux/amd64",
    ]
    assert (
        "arm64: 4 of 8 workloads could move (every image has linux/arm64); "
        "3 blocked, 1 unknown (an image could not be inspected)"
    ) in lines
    assert f"  {host} team-a: 2 workloads, 4 replicas, 0.36 CPU, 144Mi memory" in lines
    start = lines.index(
        "Requests by arm64 readiness (CPU in cores; replicas times each pod's requests):"
    )
    assert [line.split() for line in lines[start + 2 : start + 5]] == [
        [
            "(all)",
            "ready",
            "4",
            str(4 + agents),
            readiness.cpu(125 + 5 * agents),
            mebi(216 + 8 * agents),
        ],
        ["(all)", "blocked", "3", "6", "0.76", "656Mi"],
        ["(all)", "unknown", "1", "1", "0.03", "48Mi"],
    ]

    page = tmp_path / "report.html"
    code, stdout, _ = run_report(cluster, host, namespace, "--format", "html", "-o", str(page))
    assert code == 1 and stdout == ""
    rendered = browser.render(page)
    found = dom.elements(rendered.dom)
    shown = {
        e.attrs["data-workload"]: sorted(e.classes - {"workload"})[0]
        for e in found
        if e.tag == "tr" and "workload" in e.classes
    }
    assert shown == {
        f"{namespace}/{k.split('/')[0]}/{k.split('/')[1]}": v["arm64"] for k, v in rows.items()
    }
    segments = {
        next(iter(e.classes - {"segment"})): e.attrs["data-count"]
        for e in found
        if e.tag == "rect" and "segment" in e.classes
    }
    assert segments == {"ready": "4", "blocked": "3", "unknown": "1"}
    assert [e.attrs["data-group"] for e in found if "blocker-bar" in e.classes] == [
        f"{host}/team-b",
        f"{host}/team-a",
    ]
    cpu = {
        next(iter(e.classes - {"request", "cpu"})): int(e.attrs["data-value"])
        for e in found
        if e.tag == "rect" and {"request", "cpu"} <= e.classes
    }
    assert cpu == {"ready": 125 + 5 * agents, "blocked": 760, "unknown": 30}
    assert browser.network_use(rendered.netlog) == []
    shot = browser.screenshot(page, tmp_path / "report.png", width=1280, height=1100)
    assert (tmp_path / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert browser.network_use(shot.netlog) == []
    if os.environ.get("ARCHWARDEN_UPDATE_DOCS") == "1":
        shutil.copyfile(tmp_path / "report.png", SCREENSHOT)


def test_report_without_a_cluster_is_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "no-kubeconfig"
    proc = subprocess.run(
        [ARCHWARDEN, "report", "--kubeconfig", str(missing)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert len(proc.stderr.splitlines()) == 1
    assert proc.stderr.startswith("archwarden: error: cannot read the cluster: ")
    assert "Traceback" not in proc.stderr
