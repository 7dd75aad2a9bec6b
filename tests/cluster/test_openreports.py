"""OpenReports policy reports written to the real API server, with the project's own CRDs."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from archwarden import kube
from archwarden.kube import PolicyResult, Result
from tests.cluster.cluster import REPO_ROOT, LocalCluster

pytestmark = pytest.mark.cluster

CRDS = REPO_ROOT / "third_party" / "openreports" / "crds"
NAMES = ("reports.openreports.io", "clusterreports.openreports.io")


def delete_crds(cluster: LocalCluster) -> None:
    cluster.kubectl("delete", "crd", *NAMES, "--ignore-not-found", "--wait=true", timeout=120)


@pytest.fixture
def crds(cluster: LocalCluster) -> Iterator[None]:
    cluster.kubectl("apply", "-f", str(CRDS))
    cluster.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s", *(f"crd/{n}" for n in NAMES)
    )
    try:
        yield
    finally:
        delete_crds(cluster)


@pytest.fixture
def writer(cluster: LocalCluster) -> kube.ReportWriter:
    return kube.ReportWriter(kube.load_api_client(str(cluster.kubeconfig)))


def read(cluster: LocalCluster, plural: str, *where: str) -> dict[str, Any]:
    return json.loads(
        cluster.kubectl("get", plural, "archwarden-architecture", *where, "-o", "json").stdout
    )


def deployment(namespace: str, name: str, outcome: Result, message: str) -> PolicyResult:
    return PolicyResult("apps/v1", "Deployment", name, outcome, message, namespace=namespace)


async def test_reports_are_created_updated_idempotently_and_pruned(
    cluster: LocalCluster, crds: None, writer: kube.ReportWriter
) -> None:
    a = cluster.create_namespace("t-openreports-a")
    b = cluster.create_namespace("t-openreports-b")
    try:
        assert await writer.available()
        denied = (
            "image 127.0.0.1:5000/team/legacy:2 supports linux/amd64 only; the nodes this pod "
            "can use are linux/arm64 (2); publish a multi-arch image or select amd64 nodes"
        )
        results = [
            deployment(a, "legacy", Result.FAIL, denied),
            deployment(a, "web", Result.PASS, ""),
            deployment(b, "gone", Result.ERROR, "registry r: manifest unknown: gone:1"),
            PolicyResult("v1", "Namespace", b, Result.WARN, "cluster-scoped"),
        ]
        summary = await writer.sync(results)
        assert (summary.created, summary.updated, summary.unchanged) == (3, 0, 0)
        report = read(cluster, "reports.openreports.io", "-n", a)
        # Read back exactly as written: the CRD's schema pruned nothing.
        assert report["summary"] == {"pass": 1, "fail": 1, "warn": 0, "error": 0, "skip": 0}
        assert [
            (r["result"], r["message"], r["resources"][0]["name"]) for r in report["results"]
        ] == [
            ("fail", denied, "legacy"),
            ("pass", "", "web"),
        ]
        assert report["results"][0]["policy"] == "archwarden-architecture"
        assert report["source"] == "archwarden"
        cluster_report = read(cluster, "clusterreports.openreports.io")
        assert cluster_report["results"][0]["resources"] == [
            {"apiVersion": "v1", "kind": "Namespace", "name": b}
        ]
        version = report["metadata"]["resourceVersion"]
        stamp = report["results"][0]["timestamp"]

        # The same results again: nothing is written.
        summary = await writer.sync(results)
        assert (summary.created, summary.updated, summary.unchanged) == (0, 0, 3)
        assert (
            read(cluster, "reports.openreports.io", "-n", a)["metadata"]["resourceVersion"]
            == version
        )

        # One result changes: that report is updated, the unchanged result keeps its time.
        await asyncio.sleep(1.1)
        changed = [
            deployment(a, "legacy", Result.FAIL, denied),
            deployment(a, "web", Result.FAIL, "x"),
        ]
        summary = await writer.sync([*changed, *results[2:]])
        assert (summary.created, summary.updated, summary.unchanged) == (0, 1, 2)
        report = read(cluster, "reports.openreports.io", "-n", a)
        assert report["summary"]["fail"] == 2
        assert report["results"][0]["timestamp"] == stamp
        assert report["results"][1]["timestamp"]["seconds"] > stamp["seconds"]

        # b's workloads and the cluster-scoped result are gone: their reports are deleted.
        summary = await writer.sync(changed)
        assert summary.deleted == 2
        assert cluster.kubectl("get", "reports.openreports.io", "-n", b, "-o", "name").stdout == ""
        assert cluster.kubectl("get", "clusterreports.openreports.io", "-o", "name").stdout == ""
    finally:
        cluster.delete_namespace(a)
        cluster.delete_namespace(b)


async def test_without_the_crds_reports_are_off_and_writes_fail_in_one_line(
    cluster: LocalCluster, writer: kube.ReportWriter
) -> None:
    delete_crds(cluster)
    assert not await writer.available()
    # Each namespace's write fails on its own, counted by reason, in one line...
    summary = await writer.sync([deployment("default", "x", Result.PASS, "")], prune=False)
    assert summary.created == summary.updated == 0
    assert summary.failed == {"HTTP 404": 1}
    (error,) = summary.errors
    assert error.startswith(("get reports", "create reports")) and "\n" not in error
    # ... and the pruning list fails the sync, in one line too.
    with pytest.raises(kube.ReportWriteError, match=r"^list reports") as caught:
        await writer.sync([deployment("default", "x", Result.PASS, "")])
    assert "\n" not in str(caught.value)


def test_the_crds_are_the_modules_own() -> None:
    # Byte for byte what github.com/openreports/reports-api ships in config/crd/ at the pin.
    proc = subprocess.run(
        [str(REPO_ROOT / "hack" / "openreports" / "fetch-crds.sh"), "--check"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in CRDS.iterdir()) == [
        "openreports.io_clusterreports.yaml",
        "openreports.io_reports.yaml",
    ]
