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
