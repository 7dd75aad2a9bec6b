"""The HTML report in a real headless Chromium (Debian's), kept off the network."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from archwarden import platforms, policy, readiness
from tests.readiness.test_report import ANSWERS, ARM32, GONE, LEGACY, NODES, TOOL, WEB, workload
from tests.support import browser, dom

EXTERNAL = ("src", "href", "xlink:href", "srcset", "action", "formaction", "poster", "data")


def build() -> readiness.Report:
    return readiness.build(
        [
            workload("Deployment", "web", WEB, TOOL),
            workload("Deployment", "legacy", LEGACY),
            workload("StatefulSet", "db", LEGACY, TOOL),
            workload("DaemonSet", "agent", ARM32, namespace="edge"),
            workload("Job", "gone", WEB, GONE),
            workload("Pod", "tool", TOOL, namespace="ops"),
        ],
        NODES,
        ANSWERS,
    )


def cells(found: list[dom.Element], row: dom.Element) -> list[str]:
    """The texts of a table row's cells, in order."""
    after = found[found.index(row) + 1 :]
    end = next((i for i, e in enumerate(after) if e.tag == "tr"), len(after))
    return [e.text for e in after[:end] if e.tag == "td"]


def open_in_chromium(
    tmp_path: Path, report: readiness.Report, *, offline: bool = True
) -> tuple[list[dom.Element], browser.Rendered]:
    page = tmp_path / "report.html"
    page.write_text(readiness.html(report), encoding="utf-8")
    rendered = browser.render(page, offline=offline)
    return dom.elements(rendered.dom), rendered


def test_rows_chart_and_blockers_render_in_chromium(tmp_path: Path) -> None:
    report = build()
    found, rendered = open_in_chromium(tmp_path, report)
    rows = {e.attrs["data-workload"]: e for e in found if e.tag == "tr" and "workload" in e.classes}
    assert {key: sorted(e.classes - {"workload"}) for key, e in rows.items()} == {
        "edge/DaemonSet/agent": ["blocked"],
        "ops/Pod/tool": ["ready"],
        "shop/Deployment/legacy": ["blocked"],
        "shop/Deployment/web": ["ready"],
        "shop/Job/gone": ["unknown"],
        "shop/StatefulSet/db": ["blocked"],
    }
    assert "linux/amd64, linux/arm64, linux/ppc64le" in rows["ops/Pod/tool"].text
    assert "error: registry registry.example: manifest unknown" in rows["shop/Job/gone"].text
    # The chart: one stacked segment per state, sized by its count, and one bar per owner.
    chart = [e for e in found if "svg" in e.parents or e.tag == "svg"]
    assert [e.attrs["id"] for e in chart if e.tag == "svg"] == ["readiness-chart"]
    segments = {
        next(iter(e.classes - {"segment"})): int(e.attrs["data-count"])
        for e in chart
        if e.tag == "rect" and "segment" in e.classes
    }
    assert segments == {"ready": 2, "blocked": 3, "unknown": 1}
    widths = {
        next(iter(e.classes - {"segment"})): float(e.attrs["width"])
        for e in chart
        if e.tag == "rect" and "segment" in e.classes
    }
    assert widths["blocked"] == pytest.approx(3 * widths["unknown"], rel=0.01)
    bars = [
        (e.attrs["data-group"], e.attrs["data-count"])
        for e in chart
        if e.tag == "g" and "blocker-bar" in e.classes
    ]
    assert bars == [("registry.example/shop", "2"), ("quay.example/iot", "1")]
    summary = next(e for e in found if e.attrs.get("id") == "summary")
    assert " ".join(summary.text.split()) == (
        "2 of 6 workloads could move to arm64 (every image has linux/arm64)."
    )
    blockers = [e.attrs["data-image"] for e in found if e.tag == "tr" and "blocker" in e.classes]
    assert blockers == [LEGACY, ARM32]
    assert not [e for e in found if set(e.attrs) & set(EXTERNAL)]
    assert browser.network_use(rendered.netlog) == []


@pytest.fixture
def loopback_server() -> Iterator[tuple[str, list[str]]]:
    """An HTTP server on 127.0.0.1 recording every path asked for."""
    asked: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.path)
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", asked
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_the_network_check_sees_a_page_that_loads_something(
    tmp_path: Path, loopback_server: tuple[str, list[str]]
) -> None:
    # Proof that network_use can fail: a page loading from 127.0.0.1, with 127.0.0.1 allowed.
    url, asked = loopback_server
    page = tmp_path / "leaky.html"
    page.write_text(f'<!DOCTYPE html><img src="{url}/pixel.png"><p>leaky</p>')
    rendered = browser.render(page, offline=False)
    assert asked == ["/pixel.png"]
    assert any("TCP_CONNECT" in line for line in browser.network_use(rendered.netlog))


def test_hostile_text_is_escaped_and_the_page_loads_nothing(
    tmp_path: Path, loopback_server: tuple[str, list[str]]
) -> None:
    # Registry errors and image names end up in the page; one crafted to load a resource
    # must stay text, even where the network is reachable.
    url, asked = loopback_server
    hostile = f'</td></table><img src="{url}/leak.png"><style>@import "{url}/x.css";</style>'
    evil = "registry.example/shop/evil:1"
    report = readiness.build(
        [workload("Deployment", "evil", evil, WEB)],
        NODES,
        {**ANSWERS, evil: policy.ImageFailure(hostile)},
    )
    found, rendered = open_in_chromium(tmp_path, report, offline=False)
    assert asked == []
    assert not [e for e in found if e.tag == "img" or set(e.attrs) & set(EXTERNAL)]
    (row,) = [e for e in found if e.tag == "tr" and "workload" in e.classes]
    assert hostile in row.text
    assert browser.network_use(rendered.netlog) == []


def test_an_empty_cluster_renders(tmp_path: Path) -> None:
    report = readiness.build([], policy.nodes_from_platforms(["linux/amd64"]), {})
    found, rendered = open_in_chromium(tmp_path, report)
    assert [e.text for e in found if e.attrs.get("id") == "blockers"] == [
        "No image blocks a move to arm64."
    ]
    assert [e for e in found if e.attrs.get("id") == "readiness-chart"]
    assert browser.network_use(rendered.netlog) == []


def test_the_file_references_nothing_outside_itself() -> None:
    text = readiness.html(build())
    assert "http://" not in text and "https://" not in text and "url(" not in text
    assert "<script" not in text
    assert "Content-Security-Policy" in text and "default-src 'none'" in text
    assert platforms.parse("linux/arm64").canonical in text


def test_requests_by_readiness_render_as_a_chart_and_tables(tmp_path: Path) -> None:
    from tests.readiness.test_weights import MI, weighted

    found, rendered = open_in_chromium(tmp_path, weighted())
    # One svg still: the CPU and memory bars join the workload bar, segment per state.
    assert [e.attrs["id"] for e in found if e.tag == "svg"] == ["readiness-chart"]
    requests = [e for e in found if e.tag == "rect" and "request" in e.classes]
    values = {
        (resource, state): int(e.attrs["data-value"])
        for e in requests
        for resource in ("cpu", "memory")
        for state in ("ready", "blocked", "unknown")
        if {resource, state} <= e.classes
    }
    assert values == {
        ("cpu", "ready"): 1500,
        ("cpu", "blocked"): 5500,
        ("cpu", "unknown"): 250,
        ("memory", "ready"): 768 * MI,
        ("memory", "blocked"): 480 * MI,
    }
    widths = {
        (r, s): float(e.attrs["width"])
        for e in requests
        for r in ("cpu", "memory")
        for s in ("ready", "blocked")
        if {r, s} <= e.classes
    }
    assert widths[("cpu", "blocked")] == pytest.approx(widths[("cpu", "ready")] * 5.5 / 1.5, 0.01)
    assert widths[("memory", "ready")] == pytest.approx(widths[("memory", "blocked")] * 1.6, 0.01)
    chart = next(e for e in found if e.tag == "svg")
    assert "CPU requested (cores): 7.25" in chart.text
    assert "Memory requested: 1.2Gi" in chart.text
    bars = [e.attrs["data-group"] for e in found if "blocker-bar" in e.classes]
    assert bars == ["quay.example/iot", "registry.example/shop"]

    weights = [
        (e.attrs["data-namespace"], *cells(found, e))
        for e in found
        if e.tag == "tr" and "weight" in e.classes
    ]
    assert weights == [
        ("", "all namespaces", "ready", "2", "3", "1.5", "768Mi"),
        ("", "all namespaces", "blocked", "3", "8", "5.5", "480Mi"),
        ("", "all namespaces", "unknown", "1", "1", "0.25", "0"),
        ("edge", "edge", "blocked", "1", "5", "5", "160Mi"),
        ("ops", "ops", "ready", "1", "0", "0", "0"),
        ("shop", "shop", "ready", "1", "3", "1.5", "768Mi"),
        ("shop", "shop", "blocked", "2", "3", "0.5", "320Mi"),
        ("shop", "shop", "unknown", "1", "1", "0.25", "0"),
    ]
    cards = {e.attrs["id"]: " ".join(e.text.split()) for e in found if "card" in e.classes}
    assert cards["count-blocked"] == "3blocked by an image5.5 CPU, 480Mi memory, 8 replicas"
    held = [
        (e.attrs["data-cpu"], e.attrs["data-memory"], e.text)
        for e in found
        if e.tag == "td" and "held" in e.classes
    ]
    assert held == [
        ("5000", str(160 * MI), "5 CPU, 160Mi memory, 5 replicas"),
        ("500", str(320 * MI), "0.5 CPU, 320Mi memory, 3 replicas"),
    ]
    two = next(e for e in found if e.attrs.get("data-workload") == "shop/Deployment/two")
    assert cells(found, two)[6:9] == ["2", "0.4", "256Mi"]
    assert browser.network_use(rendered.netlog) == []


def test_nothing_requested_still_draws_the_bars(tmp_path: Path) -> None:
    found, rendered = open_in_chromium(tmp_path, build())
    chart = next(e for e in found if e.tag == "svg")
    assert chart.text.count("none requested") == 2
    assert not [e for e in found if e.tag == "rect" and "request" in e.classes]
    assert browser.network_use(rendered.netlog) == []
