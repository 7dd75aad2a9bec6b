"""The report as one self-contained HTML file: inline CSS and SVG, no script, no resource.

Written with the standard library: a page this small gains nothing from a template engine,
and a dependency would reach the container image. Every value from the cluster (names,
images, registry messages) goes through :func:`html.escape`. The page forbids itself every
load with a Content-Security-Policy (inline styles only), so whoever opens it from a mail or a
CI artifact fetches nothing, whatever an image name contains.
"""

from __future__ import annotations

import html
from collections.abc import Iterable

from archwarden.readiness import _report, _table

__all__ = ["render"]

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
COLOURS = {
    _report.Readiness.READY: "#2e7d32",
    _report.Readiness.BLOCKED: "#c62828",
    _report.Readiness.UNKNOWN: "#9e9e9e",
}
# Blocker groups drawn in the bar chart; the table below the chart lists every one.
CHART_GROUPS = 10
CHART_WIDTH = 640
REQUEST_BAR = 24

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1100px;
       color: #212121; padding: 0 1em; }
h1 { font-size: 1.5em; margin-bottom: .2em; }
h2 { font-size: 1.15em; margin-top: 1.8em; border-bottom: 1px solid #ddd; }
.muted { color: #666; }
.cards { display: flex; gap: 1em; margin: 1em 0; }
.card { border: 1px solid #ddd; border-radius: 6px; padding: .6em 1em; min-width: 8em; }
.card b { display: block; font-size: 1.6em; }
table { border-collapse: collapse; width: 100%; margin-top: .5em; }
th, td { text-align: left; padding: .35em .6em; border-bottom: 1px solid #eee;
         vertical-align: top; }
th { background: #f5f5f5; }
td.images { font-family: ui-monospace, monospace; font-size: .85em; }
.badge { border-radius: 4px; color: #fff; padding: .1em .5em; font-size: .85em; }
.ready .badge { background: #2e7d32; }
.blocked .badge { background: #c62828; }
.unknown .badge { background: #9e9e9e; }
.no-arm64 { color: #c62828; }
.error { color: #9e9e9e; }
.note { color: #9e9e9e; font-style: italic; }
.card .weight { display: block; color: #666; font-size: .85em; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _list(values: Iterable[str]) -> str:
    text = ", ".join(values)
    return _e(text) if text else "&ndash;"


def _cpu(totals: _report.Totals) -> tuple[int, str]:
    return totals.cpu_millis, _table.cpu(totals.cpu_millis)


def _memory(totals: _report.Totals) -> tuple[int, str]:
    return totals.memory_bytes, _table.memory(totals.memory_bytes)


def _requests(report: _report.Report, top: int) -> tuple[str, int]:
    """Two stacked bars, CPU and memory requested by readiness; and where the next part starts."""
    totals = {state: report.totals(state) for state in _report.Readiness}
    everything = _report.Totals.of(row.weight for row in report.workloads)
    parts: list[str] = []
    y = top
    for resource, heading, measure in (
        ("cpu", "CPU requested (cores)", _cpu),
        ("memory", "Memory requested", _memory),
    ):
        whole, shown = measure(everything)
        parts.append(f'<text x="0" y="{y + 14}" font-weight="bold">{heading}: {_e(shown)}</text>')
        y += 22
        x = 0.0
        for state, part in totals.items():
            value, text = measure(part)
            width = CHART_WIDTH * value / whole if whole else 0.0
            if value:
                parts.append(
                    f'<rect class="request {resource} {state}" data-value="{value}" '
                    f'x="{x:.1f}" y="{y}" width="{width:.1f}" height="{REQUEST_BAR}" '
                    f'fill="{COLOURS[state]}"><title>{_e(text)} {state}</title></rect>'
                )
                if width >= 60:
                    parts.append(
                        f'<text x="{x + width / 2:.1f}" y="{y + 17}" text-anchor="middle" '
                        f'fill="#fff">{_e(text)}</text>'
                    )
            x += width
        if not whole:
            parts.append(
                f'<rect x="0" y="{y}" width="{CHART_WIDTH}" height="{REQUEST_BAR}" '
                f'fill="#eee"/><text x="8" y="{y + 17}" fill="#666">none requested</text>'
            )
        y += REQUEST_BAR + 12
    return "".join(parts), y


def _chart(report: _report.Report) -> str:
    """Stacked bars by readiness (workloads, then CPU and memory requested) and a bar per
    blocking registry and owner."""
    total = len(report.workloads)
    bar_y, bar_h = 30, 34
    parts: list[str] = []
    x = 0.0
    for state in _report.Readiness:
        count = report.count(state)
        width = CHART_WIDTH * count / total if total else 0.0
        if count:
            parts.append(
                f'<rect class="segment {state}" data-count="{count}" x="{x:.1f}" y="{bar_y}" '
                f'width="{width:.1f}" height="{bar_h}" fill="{COLOURS[state]}">'
                f"<title>{count} {state}</title></rect>"
            )
            if width >= 28:
                parts.append(
                    f'<text x="{x + width / 2:.1f}" y="{bar_y + 22}" text-anchor="middle" '
                    f'fill="#fff" font-weight="bold">{count}</text>'
                )
        x += width
    legend = "".join(
        f'<rect x="{i * 150}" y="0" width="12" height="12" fill="{COLOURS[s]}"/>'
        f'<text x="{i * 150 + 18}" y="11">{_e(s)} ({report.count(s)})</text>'
        for i, s in enumerate(_report.Readiness)
    )
    requests, after = _requests(report, bar_y + bar_h + 16)
    groups = report.blockers[:CHART_GROUPS]
    top = max((len(g.workloads) for g in groups), default=1)
    label_w, row_h, first = 260, 24, after + 34
    bars = []
    if groups:
        bars.append(
            f'<text x="0" y="{first - 12}" font-weight="bold">'
            "Workloads blocked, by image registry and owner (most requests held back first)"
            "</text>"
        )
    for i, group in enumerate(groups):
        y = first + i * row_h
        count = len(group.workloads)
        width = (CHART_WIDTH - label_w - 150) * count / top  # room for "12 (3.5 CPU, 1.5Gi)"
        name = f"{group.registry}/{group.owner}" if group.owner else group.registry
        bars.append(
            f'<g class="blocker-bar" data-group="{_e(name)}" data-count="{count}">'
            f'<text x="{label_w - 8}" y="{y + 15}" text-anchor="end">{_e(name)}</text>'
            f'<rect x="{label_w}" y="{y + 2}" width="{width:.1f}" height="{row_h - 6}" '
            f'fill="{COLOURS[_report.Readiness.BLOCKED]}"/>'
            f'<text x="{label_w + width + 6:.1f}" y="{y + 15}">{count} '
            f"({_e(_table.cpu(group.held.cpu_millis))} CPU, "
            f"{_e(_table.memory(group.held.memory_bytes))})</text></g>"
        )
    height = first + len(groups) * row_h + 10 if groups else after
    return (
        f'<svg id="readiness-chart" width="{CHART_WIDTH}" '
        f'height="{height}" viewBox="0 0 {CHART_WIDTH} {height}" role="img" '
        f'aria-label="arm64 readiness of {total} workloads" font-size="13">'
        f"<g>{legend}</g>{''.join(parts)}{requests}{''.join(bars)}</svg>"
    )


def _image_cell(row: _report.WorkloadRow) -> str:
    lines = []
    for image in row.images:
        if image.error:
            detail = f'<span class="error">error: {_e(image.error)}</span>'
        else:
            detail = _list(image.platforms)
        css = ' class="no-arm64"' if image.arm64 is False else ""
        lines.append(f"<div{css}>{_e(image.image)} &mdash; {detail}</div>")
    lines.extend(f'<div class="note">note: {_e(note)}</div>' for note in row.weight.notes)
    return "".join(lines)


def _workload_rows(report: _report.Report) -> str:
    rows = []
    for row in report.workloads:
        rows.append(
            f'<tr class="workload {row.readiness}" data-workload="{_e(row.key)}">'
            f"<td>{_e(row.namespace) or '&ndash;'}</td><td>{_e(row.kind)}</td>"
            f"<td>{_e(row.name)}</td>"
            f'<td><span class="badge">{_e(row.readiness)}</span></td>'
            f'<td class="runs-on">{_list(row.runs_on)}</td>'
            f'<td class="schedulable-on" title="{_e(row.message)}">'
            f"{_list(row.schedulable_on)}</td>"
            f'<td class="num replicas">{row.weight.replicas}</td>'
            f'<td class="num cpu" data-value="{row.weight.total_cpu_millis}">'
            f"{_table.cpu(row.weight.total_cpu_millis)}</td>"
            f'<td class="num memory" data-value="{row.weight.total_memory_bytes}">'
            f"{_table.memory(row.weight.total_memory_bytes)}</td>"
            f'<td class="images">{_image_cell(row)}</td></tr>'
        )
    return "".join(rows)


def _held(totals: _report.Totals) -> str:
    return (
        f"{_table.cpu(totals.cpu_millis)} CPU, {_table.memory(totals.memory_bytes)} memory, "
        f"{totals.replicas} replicas"
    )


def _weight_rows(report: _report.Report) -> str:
    rows = []
    for namespace in (None, *report.namespaces):
        for state in _report.Readiness:
            totals = report.totals(state, namespace)
            if namespace is not None and not totals.workloads:
                continue
            name = "all namespaces" if namespace is None else _e(namespace) or "&ndash;"
            rows.append(
                f'<tr class="weight {state}" data-namespace="{_e(namespace or "")}" '
                f'data-cpu="{totals.cpu_millis}" data-memory="{totals.memory_bytes}">'
                f"<td>{name}</td>"
                f'<td><span class="badge">{_e(state)}</span></td>'
                f'<td class="num">{totals.workloads}</td><td class="num">{totals.replicas}</td>'
                f'<td class="num">{_table.cpu(totals.cpu_millis)}</td>'
                f'<td class="num">{_table.memory(totals.memory_bytes)}</td></tr>'
            )
    return "".join(rows)


def _blocker_rows(report: _report.Report) -> str:
    rows = []
    for group in report.blockers:
        for image in group.images:
            rows.append(
                f'<tr class="blocker" data-image="{_e(image.image)}">'
                f"<td>{_e(group.registry)}</td><td>{_e(group.owner) or '&ndash;'}</td>"
                f'<td class="images">{_e(image.image)}</td><td>{_list(image.platforms)}</td>'
                f'<td class="held" data-cpu="{image.held.cpu_millis}" '
                f'data-memory="{image.held.memory_bytes}">{_e(_held(image.held))}</td>'
                f"<td>{_list(image.workloads)}</td></tr>"
            )
    return "".join(rows)


def render(report: _report.Report, *, title: str = "archwarden readiness report") -> str:
    total = len(report.workloads)
    ready = report.count(_report.Readiness.READY)
    nodes = ", ".join(f"{p} ({n})" for p, n in report.node_platforms) or "none"
    cards = "".join(
        f'<div class="card" id="count-{state}"><b>{report.count(state)}</b>{_e(label)}'
        f'<span class="weight">{_e(_held(report.totals(state)))}</span></div>'
        for state, label in (
            (_report.Readiness.READY, "could move to arm64"),
            (_report.Readiness.BLOCKED, "blocked by an image"),
            (_report.Readiness.UNKNOWN, "unknown (image not inspected)"),
        )
    )
    blockers = (
        '<table id="blockers"><thead><tr><th>Registry</th><th>Owner</th><th>Image</th>'
        "<th>Platforms</th><th>Holds back</th><th>Keeps off arm64</th></tr></thead>"
        f"<tbody>{_blocker_rows(report)}</tbody></table>"
        if report.blockers
        else '<p id="blockers">No image blocks a move to arm64.</p>'
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{STYLE}</style></head><body>"
        f"<h1>{_e(title)}</h1>"
        f'<p class="muted">Node platforms: <span id="node-platforms">{_e(nodes)}</span></p>'
        f'<p id="summary"><b>{ready} of {total}</b> workloads could move to arm64 '
        "(every image has linux/arm64).</p>"
        f'<div class="cards">{cards}</div>{_chart(report)}'
        "<h2>Requests by arm64 readiness</h2>"
        '<p class="muted">Each workload&rsquo;s replicas times its pods&rsquo; CPU and memory '
        "requests, as the scheduler counts them.</p>"
        '<table id="weights"><thead><tr><th>Namespace</th><th>arm64</th>'
        '<th class="num">Workloads</th><th class="num">Replicas</th>'
        '<th class="num">CPU (cores)</th><th class="num">Memory</th></tr></thead>'
        f"<tbody>{_weight_rows(report)}</tbody></table>"
        "<h2>Images that block arm64</h2>"
        f"{blockers}"
        "<h2>Workloads</h2>"
        '<table id="workloads"><thead><tr><th>Namespace</th><th>Kind</th><th>Name</th>'
        "<th>arm64</th><th>Runs on (cluster platforms)</th><th>Schedulable on</th>"
        '<th class="num">Replicas</th><th class="num">CPU</th><th class="num">Memory</th>'
        "<th>Images and their platforms</th></tr></thead>"
        f"<tbody>{_workload_rows(report)}</tbody></table>"
        "</body></html>\n"
    )
