#!/usr/bin/env python3
"""Generate archwarden's Grafana dashboard (charts/archwarden/dashboards/archwarden.json).

    python3 charts/archwarden/hack/dashboard.py           rewrite the JSON
    python3 charts/archwarden/hack/dashboard.py --check   exit 1 when it is stale

The panels are data below (title, unit, PromQL per series), laid out on Grafana's 24-column grid
row by row. The chart ships the JSON in a ConfigMap for Grafana's dashboard sidecar
(templates/grafana-dashboard.yaml), replacing TIMEOUT_PLACEHOLDER with webhook.timeoutSeconds.
tests/chart/test_observability.py checks that every expression parses (promtool) and reads only
metrics archwarden exports (archwarden.metrics) or the API server's admission metrics, and
validates the JSON against Grafana's dashboard and panel schemas (third_party/grafana, generated
from the npm package @grafana/schema by hack/grafana/schema.sh). That schema has no ``current: {}``
for variables (a variable's current option needs text and value; Grafana picks one when it loads)
and no query variable ``definition`` (a display copy of the query that Grafana's editor writes).

Dashboard variables: ``datasource`` (a Prometheus data source), ``namespace`` (where archwarden
runs; its series carry the namespace label a ServiceMonitor scrape adds) and ``webhook_timeout``
(a constant the chart fills in). The API server's series are picked by webhook name: every
webhook of the chart is named ``<id>.<fullname>.<namespace>.svc``.

Standard library only.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

CHART = Path(__file__).resolve().parents[1]
OUTPUT = CHART / "dashboards" / "archwarden.json"
# Replaced by the chart (a JSON string, so the file stays valid JSON on its own).
TIMEOUT_PLACEHOLDER = "__ARCHWARDEN_WEBHOOK_TIMEOUT_SECONDS__"
UID = "archwarden-overview"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}

OWN = 'namespace="$namespace"'
APISERVER = 'name=~".+\\\\.$namespace\\\\.svc"'
RATE = "$__rate_interval"


def _sum(by: str, function: str, metric: str, selector: str = OWN) -> str:
    return f"sum by ({by}) ({function}({metric}{{{selector}}}[{RATE}]))"


def _quantile(q: float, metric: str, by: str, selector: str) -> str:
    return f"histogram_quantile({q}, sum by (le{by}) (rate({metric}_bucket{{{selector}}}[{RATE}])))"


# (title, description, unit, [(legend, expr)], width, kind)
Panel = tuple[str, str, str, list[tuple[str, str]], int, str]

ROWS: list[tuple[str, list[Panel]]] = [
    (
        "Admission",
        [
            (
                "Admissions by decision",
                "Admission reviews answered per second, by archwarden's decision.",
                "reqps",
                [
                    (
                        "{{decision}}",
                        _sum("decision", "rate", "archwarden_admission_requests_total"),
                    )
                ],
                8,
                "timeseries",
            ),
            (
                "Denials by reason",
                "Denied reviews per second by reason: ArchitectureMismatch and its variants, "
                "NoCandidateNodes, ImageInspectionFailed (registry failure with failurePolicy "
                "closed), TooManyImages.",
                "reqps",
                [
                    (
                        "{{reason}}",
                        _sum("reason", "rate", "archwarden_admission_denials_total"),
                    )
                ],
                8,
                "timeseries",
            ),
            (
                "Latency against the webhook timeout",
                "archwarden's p50 and p99 time to answer, the API server's p99 for the same "
                "webhooks (network included), and the timeout past which the API server applies "
                "failurePolicy.",
                "s",
                [
                    ("p50", _quantile(0.5, "archwarden_admission_duration_seconds", "", OWN)),
                    ("p99", _quantile(0.99, "archwarden_admission_duration_seconds", "", OWN)),
                    (
                        "API server p99",
                        _quantile(
                            0.99,
                            "apiserver_admission_webhook_admission_duration_seconds",
                            "",
                            APISERVER,
                        ),
                    ),
                    ("webhook timeout", "vector($webhook_timeout)"),
                ],
                8,
                "timeseries",
            ),
            (
                "API server: failed open",
                "Requests the API server admitted without archwarden's answer "
                "(apiserver_admission_webhook_fail_open_count: failurePolicy Ignore and archwarden "
                "down, slow or unreachable). Should stay at zero.",
                "short",
                [
                    (
                        "{{name}}",
                        _sum(
                            "name",
                            "increase",
                            "apiserver_admission_webhook_fail_open_count",
                            APISERVER,
                        ),
                    )
                ],
                8,
                "timeseries",
            ),
            (
                "API server: rejections by error type",
                "Requests the API server rejected while calling archwarden's webhooks: "
                "calling_webhook_error (failurePolicy Fail and archwarden unreachable) or "
                "admission_error (archwarden denied).",
                "short",
                [
                    (
                        "{{error_type}}",
                        _sum(
                            "error_type",
                            "increase",
                            "apiserver_admission_webhook_rejection_count",
                            APISERVER,
                        ),
                    )
                ],
                8,
                "timeseries",
            ),
            (
                "API server: calls skipped by matchConditions",
                "UPDATEs the API server did not send to archwarden because the pod template was "
                "unchanged (webhook.matchConditions), and errors evaluating those conditions.",
                "ops",
                [
                    (
                        "skipped {{operation}}",
                        _sum(
                            "operation",
                            "rate",
                            "apiserver_admission_match_condition_exclusions_total",
                            APISERVER,
                        ),
                    ),
                    (
                        "errors",
                        _sum(
                            "operation",
                            "rate",
                            "apiserver_admission_match_condition_evaluation_errors_total",
                            APISERVER,
                        ),
                    ),
                ],
                8,
                "timeseries",
            ),
            (
                "Refused before a decision",
                "Requests answered with an HTTP error before any decision (too large, malformed, "
                "unknown webhook); with failurePolicy Ignore the API server admits them.",
                "reqps",
                [
                    (
                        "{{reason}}",
                        _sum("reason", "rate", "archwarden_admission_refused_total"),
                    )
                ],
                8,
                "timeseries",
            ),
        ],
    ),
    (
        "Registries",
        [
            (
                "Registry requests by registry and code",
                "HTTP requests to registries per second, by registry host and status code (or "
                "error kind).",
                "reqps",
                [
                    (
                        "{{registry}} {{code}}",
                        _sum("registry, code", "rate", "archwarden_registry_requests_total"),
                    )
                ],
                8,
                "timeseries",
            ),
            (
                "Registry failures",
                "Registry requests that failed (neither 2xx/3xx nor the 401 of a token "
                "challenge), by registry, and admissions that met a registry failure, by how "
                "config.failurePolicy answered them.",
                "reqps",
                [
                    (
                        "{{registry}} {{code}}",
                        "sum by (registry, code) (rate(archwarden_registry_requests_total"
                        f'{{{OWN},code!~"[23]..|401"}}[{RATE}]))',
                    ),
                    (
                        "admissions {{outcome}}",
                        _sum("outcome", "rate", "archwarden_registry_failures_total"),
                    ),
                ],
                8,
                "timeseries",
            ),
            (
                "Registry latency by registry",
                "p50 and p99 duration of registry requests.",
                "s",
                [
                    (
                        "p50 {{registry}}",
                        _quantile(
                            0.5, "archwarden_registry_request_duration_seconds", ", registry", OWN
                        ),
                    ),
                    (
                        "p99 {{registry}}",
                        _quantile(
                            0.99, "archwarden_registry_request_duration_seconds", ", registry", OWN
                        ),
                    ),
                ],
                8,
                "timeseries",
            ),
            (
                "Image cache hit ratio",
                "Share of image platform lookups answered from the cache without a registry "
                "request.",
                "percentunit",
                [
                    (
                        "hit ratio",
                        f'sum(rate(archwarden_image_cache_lookups_total{{{OWN},result="hit"}}[{RATE}]))'
                        f" / sum(rate(archwarden_image_cache_lookups_total{{{OWN}}}[{RATE}]))",
                    )
                ],
                12,
                "timeseries",
            ),
            (
                "Image cache lookups by result",
                "hit, miss, revalidated (a HEAD confirmed the tag), stale (served past its TTL "
                "while the registry failed), failure_cached.",
                "ops",
                [
                    (
                        "{{result}}",
                        _sum("result", "rate", "archwarden_image_cache_lookups_total"),
                    )
                ],
                12,
                "timeseries",
            ),
        ],
    ),
    (
        "Cluster",
        [
            (
                "Node platforms",
                "Nodes in archwarden's inventory by os and architecture (one replica's view).",
                "short",
                [("{{os}}/{{arch}}", f"max by (os, arch) (archwarden_nodes{{{OWN}}})")],
                8,
                "bargauge",
            ),
            (
                "Unschedulable workloads",
                "Workloads whose images no current node can run, by kind; their Events "
                "(reason ArchitectureMismatch) name them.",
                "short",
                [
                    (
                        "{{kind}}",
                        f"max by (kind) (archwarden_workloads_unschedulable{{{OWN}}})",
                    )
                ],
                8,
                "timeseries",
            ),
            (
                "Skipped workloads",
                'Workloads admitted unchecked through archwarden.io/skip: "true", by kind.',
                "short",
                [
                    (
                        "{{kind}}",
                        _sum("kind", "increase", "archwarden_skipped_total"),
                    )
                ],
                8,
                "timeseries",
            ),
        ],
    ),
]

HEIGHT = 8


def _panel(panel_id: int, panel: Panel, x: int, y: int) -> dict[str, Any]:
    title, description, unit, series, width, kind = panel
    targets = [
        {
            "datasource": DATASOURCE,
            "expr": expr,
            "legendFormat": legend,
            "refId": chr(ord("A") + i),
        }
        for i, (legend, expr) in enumerate(series)
    ]
    result: dict[str, Any] = {
        "id": panel_id,
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "gridPos": {"h": HEIGHT, "w": width, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {
            "legend": {
                "displayMode": "list",
                "placement": "bottom",
                "showLegend": True,
                "calcs": [],
            },
            # Every series at the cursor, largest first (graphTooltip 1 shares the crosshair).
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
        "targets": targets,
    }
    if kind == "bargauge":
        # Grafana's bar gauge defaults written out: its schema requires every option that has
        # a default (Grafana fills them in when it loads a panel, and writes them when it saves).
        result["options"] = {
            "orientation": "horizontal",
            "reduceOptions": {"calcs": ["lastNotNull"]},
            "displayMode": "gradient",
            "valueMode": "color",
            "namePlacement": "auto",
            "showUnfilled": True,
            "sizing": "auto",
            "minVizHeight": 16,
            "maxVizHeight": 300,
            "minVizWidth": 8,
            "legend": {
                "displayMode": "list",
                "placement": "bottom",
                "showLegend": False,
                "calcs": [],
            },
        }
    if any(legend == "webhook timeout" for legend, _ in series):
        # The timeout is a limit, drawn as a dashed red line.
        result["fieldConfig"]["overrides"].append(
            {
                "matcher": {"id": "byName", "options": "webhook timeout"},
                "properties": [
                    {"id": "color", "value": {"mode": "fixed", "fixedColor": "red"}},
                    {"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [10, 10]}},
                ],
            }
        )
    return result


def build() -> dict[str, Any]:
    panels: list[dict[str, Any]] = []
    next_id = 1
    y = 0
    for row_title, row_panels in ROWS:
        panels.append(
            {
                "id": next_id,
                "type": "row",
                "title": row_title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                "panels": [],
            }
        )
        next_id += 1
        y += 1
        x = 0
        for panel in row_panels:
            if x + panel[4] > 24:
                x, y = 0, y + HEIGHT
            panels.append(_panel(next_id, panel, x, y))
            next_id += 1
            x += panel[4]
        y += HEIGHT
    return {
        "uid": UID,
        "title": "archwarden",
        "description": "archwarden: admissions, latency, registries, cache, nodes.",
        "tags": ["archwarden", "admission-webhook"],
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-6h", "to": "now"},
        "timezone": "",
        "annotations": {"list": []},
        "links": [],
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Data source",
                    "type": "datasource",
                    "query": "prometheus",
                    "hide": 0,
                },
                {
                    "name": "namespace",
                    "label": "Namespace",
                    "type": "query",
                    "datasource": DATASOURCE,
                    "query": {"query": "label_values(archwarden_nodes, namespace)", "refId": "ns"},
                    "refresh": 2,
                    "hide": 0,
                },
                {
                    "name": "webhook_timeout",
                    "label": "Webhook timeout (s)",
                    "type": "constant",
                    "query": TIMEOUT_PLACEHOLDER,
                    "hide": 2,
                },
            ]
        },
        "panels": panels,
    }


def render() -> str:
    return json.dumps(build(), indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail when the file is out of date")
    args = parser.parse_args(argv)
    text = render()
    current = OUTPUT.read_text() if OUTPUT.exists() else ""
    if current == text:
        return 0
    if args.check:
        print(
            "dashboard.py: dashboards/archwarden.json is stale; run "
            "python3 charts/archwarden/hack/dashboard.py",
            file=sys.stderr,
        )
        return 1
    OUTPUT.parent.mkdir(exist_ok=True)
    OUTPUT.write_text(text)
    print(f"dashboard.py: wrote {OUTPUT.relative_to(CHART)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
