"""OpenReports bodies (pure: ``kube._reports.report_body``)."""

from __future__ import annotations

from archwarden.kube import _reports
from archwarden.kube._reports import PolicyResult, Result


def result(name: str, outcome: Result, message: str = "", namespace: str = "shop") -> PolicyResult:
    return PolicyResult("apps/v1", "Deployment", name, outcome, message, namespace=namespace)


def test_a_namespace_report_counts_and_orders_its_results() -> None:
    body = _reports.report_body(
        "shop",
        [
            result("web", Result.PASS, "compatible"),
            result("legacy", Result.FAIL, "image x supports linux/amd64 only"),
            result("gone", Result.ERROR, "registry r: manifest unknown: gone:1"),
        ],
        None,
        now=1_700_000_000.7,
    )
    assert body["apiVersion"] == "openreports.io/v1alpha1"
    assert body["kind"] == "Report"
    assert body["metadata"] == {
        "name": "archwarden-architecture",
        "namespace": "shop",
        "labels": {"app.kubernetes.io/managed-by": "archwarden"},
    }
    assert body["summary"] == {"pass": 1, "fail": 1, "warn": 0, "error": 1, "skip": 0}
    assert [r["resources"][0]["name"] for r in body["results"]] == ["gone", "legacy", "web"]
    assert body["results"][1] == {
        "source": "archwarden",
        "policy": "archwarden-architecture",
        "result": "fail",
        "message": "image x supports linux/amd64 only",
        "resources": [
            {"apiVersion": "apps/v1", "kind": "Deployment", "name": "legacy", "namespace": "shop"}
        ],
        "timestamp": {"seconds": 1_700_000_000, "nanos": 0},
    }


def test_cluster_scoped_results_make_a_cluster_report() -> None:
    body = _reports.report_body(
        "", [PolicyResult("v1", "Node", "n1", Result.WARN, "m")], None, now=5
    )
    assert body["kind"] == "ClusterReport"
    assert "namespace" not in body["metadata"]
    assert body["results"][0]["resources"] == [{"apiVersion": "v1", "kind": "Node", "name": "n1"}]


def test_unchanged_results_keep_their_timestamp() -> None:
    first = _reports.report_body(
        "shop", [result("a", Result.PASS, "ok"), result("b", Result.PASS, "ok")], None, now=100
    )
    second = _reports.report_body(
        "shop", [result("a", Result.PASS, "ok"), result("b", Result.FAIL, "now broken")], first, 200
    )
    assert [r["timestamp"]["seconds"] for r in second["results"]] == [100, 200]


def test_the_cap_keeps_failures_and_records_what_it_left_out() -> None:
    many = [result(f"ok-{i:04}", Result.PASS, "ok") for i in range(_reports.MAX_RESULTS)]
    bad = result("zz-broken", Result.FAIL, "x" * (_reports.MESSAGE_MAX + 50))
    body = _reports.report_body("shop", [*many, bad], None, now=1)
    assert len(body["results"]) == _reports.MAX_RESULTS
    assert body["metadata"]["annotations"] == {"archwarden.io/results-dropped": "1"}
    assert body["results"][-1]["resources"][0]["name"] == "zz-broken"
    assert len(body["results"][-1]["message"]) == _reports.MESSAGE_MAX
    assert body["summary"]["pass"] == _reports.MAX_RESULTS - 1


def test_a_report_is_bounded_by_its_stored_size_not_by_count() -> None:
    # 1,000 registry errors of 1 KiB of "<": under the count cap, but Go stores each "<" as
    # \u003c, six bytes: 6 MB, which etcd refuses. The bound keeps failures first.
    errors = [result(f"gone{i:04d}", Result.ERROR, "<" * 2000) for i in range(990)]
    failures = [
        result(f"legacy{i}", Result.FAIL, "image x supports linux/amd64 only") for i in range(10)
    ]
    body = _reports.report_body("shop", [*errors, *failures], None, now=0)
    assert _reports._stored_size(body["results"]) <= _reports.MAX_REPORT_BYTES
    kept = [r["resources"][0]["name"] for r in body["results"]]
    assert all(f"legacy{i}" in kept for i in range(10))
    assert 100 < len(kept) < 200
    assert body["metadata"]["annotations"] == {
        "archwarden.io/results-dropped": str(1000 - len(kept))
    }
    assert body["summary"]["fail"] == 10 and body["summary"]["error"] == len(kept) - 10


async def test_one_namespace_that_cannot_be_written_does_not_stop_the_others() -> None:
    written: list[str] = []

    class Writer(_reports.ReportWriter):
        def __init__(self) -> None:
            pass

        async def _write(self, namespace: str, results: object) -> str:
            if namespace == "b-terminating":
                raise _reports.ReportWriteError("write reports b-terminating: HTTP 403", "HTTP 403")
            written.append(namespace)
            return "created"

    summary = await Writer().sync(
        [result("x", Result.PASS, namespace=ns) for ns in ("a", "b-terminating", "c", "d")],
        prune=False,
    )
    assert written == ["a", "c", "d"]
    assert summary.created == 3
    assert summary.failed == {"HTTP 403": 1}
    assert summary.errors == ["write reports b-terminating: HTTP 403"]
