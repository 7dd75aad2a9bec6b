"""``archwarden report`` against the live local cluster: table, JSON and the HTML in Chromium."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.cluster import REPO_ROOT, LocalCluster
from tests.support import browser, dom
from tests.support.images import Seeder
from tests.support.proxy import CountingProxy
from tests.support.registry import RegistryServer

pytestmark = pytest.mark.e2e

ARCHWARDEN = shutil.which("archwarden") or str(REPO_ROOT / ".venv/bin/archwarden")
SCREENSHOT = REPO_ROOT / "docs" / "report.png"


def pod_spec(*images: str, **extra: Any) -> dict[str, Any]:
    return {
        "containers": [{"name": f"c{i}", "image": image} for i, image in enumerate(images)],
        **extra,
    }


def controller(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    template = {"metadata": {"labels": {"app": name}}, "spec": spec}
    body: dict[str, Any] = {"selector": {"matchLabels": {"app": name}}, "template": template}
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
    images are named by the counting proxy's address."""
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
                "spec": {"template": {"spec": pod_spec(images["mainframe"], restartPolicy="Never")}}
            },
        },
    }
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "once"},
        "spec": {"template": {"spec": pod_spec(images["web"], restartPolicy="Never")}},
    }
    bare = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "tool"}}
    lost = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "lost"}}
    cluster.apply(
        [
            controller("Deployment", "web", pod_spec(images["web"], images["tool"], **linux)),
            controller("Deployment", "legacy", pod_spec(images["legacy"])),
            controller("StatefulSet", "db", pod_spec(images["web"], images["legacy"])),
            controller("DaemonSet", "agent", pod_spec(images["edge"], **linux)),
            cron,
            job,
            {**bare, "spec": pod_spec(images["tool"])},
            {**lost, "spec": pod_spec(images["missing"])},
        ],
        namespace,
    )
    # The controllers' own objects exist before the report runs: it must leave them out.
    cluster.wait_for(
        lambda: (
            len(cluster.get_json("replicasets", "-n", namespace)["items"]) == 2
            and len(cluster.pods(namespace, "app=web")) == 1
            and len(cluster.pods(namespace, "job-name=once")) == 1
        ),
        timeout=60,
        message="the Deployments' ReplicaSets and pods, the Job's pod",
    )
    return images


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
    assert [(g["registry"], g["owner"], g["workloads"]) for g in data["blockers"]] == [
        (host, "team-a", 2),
        (host, "team-b", 1),
    ]
    assert data["blockers"][0]["images"] == [
        {
            "image": workloads["legacy"],
            "platforms": ["linux/amd64"],
            "workloads": [f"{namespace}/Deployment/legacy", f"{namespace}/StatefulSet/db"],
        }
    ]

    code, stdout, _ = run_report(cluster, host, namespace)
    lines = stdout.splitlines()
    assert code == 1
    assert lines[0].split()[:3] == ["WORKLOAD", "ARM64", "VERDICT"]
    legacy = next(line for line in lines if line.startswith(f"{namespace}/Deployment/legacy "))
    assert legacy.split() == [
        f"{namespace}/Deployment/legacy",
        "blocked",
        "Compatible",
        "linux/amd64",
        "linux/amd64",
    ]
    assert (
        "arm64: 4 of 8 workloads could move (every image has linux/arm64); "
        "3 blocked, 1 unknown (an image could not be inspected)"
    ) in lines
    assert f"  {host} team-a: 2 workloads" in lines

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
        f"{host}/team-a",
        f"{host}/team-b",
    ]
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
