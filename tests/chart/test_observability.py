"""The chart's PrometheusRule and Grafana dashboard: rendered by helm, checked by promtool and
Grafana's schema.

promtool is built from the Go module github.com/prometheus/prometheus (``make tools-build``,
``hack/cluster/build.sh``) and found at ``$ARCHWARDEN_PROMTOOL`` or in the binary cache. Every
PromQL expression, of the alert rules and of the dashboard panels, must parse and must read only
series that exist: archwarden's own (collected from ``archwarden.metrics.Metrics``), the API
server's admission metrics, kube-state-metrics' Deployment availability and ``up``.

No Grafana runs here (Debian has no package; Grafana's Go module is AGPL and needs its front end
built). The dashboard is validated instead against Grafana's published dashboard model: JSON
Schema generated from the npm package @grafana/schema by hack/grafana/schema.sh into
third_party/grafana/ (the dashboard, and the options of each panel plugin the chart uses).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from archwarden import metrics
from tests.chart.helm import CHART, NAMESPACE, RELEASE, REPO_ROOT, find_helm, find_tool, render

pytestmark = pytest.mark.skipif(
    find_helm() is None, reason="helm not found (make cluster-build builds it)"
)

HERE = Path(__file__).resolve().parent
GRAFANA = REPO_ROOT / "third_party" / "grafana"
FULLNAME = f"{RELEASE}-archwarden"
# Series the chart reads that archwarden does not export. The API server's come from
# k8s.io/apiserver/pkg/admission/metrics/metrics.go (namespace apiserver, subsystem admission).
FOREIGN = {
    "up",
    "kube_deployment_status_replicas_available",
    "apiserver_admission_webhook_fail_open_count",
    "apiserver_admission_webhook_rejection_count",
    "apiserver_admission_webhook_admission_duration_seconds_bucket",
    "apiserver_admission_match_condition_exclusions_total",
    "apiserver_admission_match_condition_evaluation_errors_total",
}
# A metric name followed by its selector: every reference in the chart has one.
SERIES = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{")


def promtool() -> Path:
    binary = find_tool("promtool", "ARCHWARDEN_PROMTOOL")
    if binary is None:
        pytest.fail("promtool not found: run make tools-build (or set ARCHWARDEN_PROMTOOL)")
    return binary


def exported() -> set[str]:
    """Every series name archwarden's /metrics can carry."""
    names = set()
    for family in metrics.Metrics().registry.collect():
        suffixes = {
            "counter": ("_total", "_created"),
            "histogram": ("_bucket", "_sum", "_count", "_created"),
            "gauge": ("",),
        }[family.type]
        names |= {family.name + suffix for suffix in suffixes}
    return names


def series_names(expr: str) -> set[str]:
    return set(SERIES.findall(expr))


def rule_spec(values: dict[str, Any] | None = None) -> dict[str, Any]:
    rendered = render({"prometheusRule.enabled": True, **(values or {})})
    (rule,) = [obj for obj in rendered if obj["kind"] == "PrometheusRule"]
    return dict(rule["spec"])


def run_promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(promtool()), *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


# --- PrometheusRule --------------------------------------------------------------------------


def test_prometheus_rule_is_optional_and_labelled() -> None:
    assert not [o for o in render() if o["kind"] == "PrometheusRule"]
    rendered = render(
        {
            "prometheusRule.enabled": True,
            "prometheusRule.namespace": "monitoring",
            "prometheusRule.labels.release": "kube-prometheus-stack",
        }
    )
    (rule,) = [o for o in rendered if o["kind"] == "PrometheusRule"]
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["namespace"] == "monitoring"
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert rule["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE


@pytest.mark.parametrize(
    "values",
    [
        {},
        {
            "prometheusRule.alertLabels.team": "platform",
            "prometheusRule.selector": 'job="archwarden"',
            "prometheusRule.for": "10m",
            "webhook.timeoutSeconds": 10,
            "schedulingGates.alertAfterSeconds": 600,
        },
    ],
    ids=["defaults", "options"],
)
def test_promtool_checks_the_rendered_rules(values: dict[str, Any], tmp_path: Path) -> None:
    spec = rule_spec(values)
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(spec))
    result = run_promtool("check", "rules", "rules.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 6 rules found" in result.stdout
    alerts = {rule["alert"]: rule for rule in spec["groups"][0]["rules"]}
    assert set(alerts) == {
        "ArchwardenNoReadyReplica",
        "ArchwardenWebhookFailingOpen",
        "ArchwardenAdmissionLatencyHigh",
        "ArchwardenRegistryFailures",
        "ArchwardenUnschedulableWorkloads",
        "ArchwardenPodGatedTooLong",
    }
    known = exported() | FOREIGN
    for name, rule in alerts.items():
        assert series_names(rule["expr"]) <= known, name
        assert rule["labels"]["severity"] in {"critical", "warning"}
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        if values:
            assert rule["labels"]["team"] == "platform"
            assert 'job="archwarden"' in rule["expr"] or "apiserver_" in rule["expr"]
    gated = alerts["ArchwardenPodGatedTooLong"]
    assert gated["for"] == "1m" and gated["labels"]["severity"] == "warning"
    if values:
        # 0.8 of the 10 s timeout
        assert alerts["ArchwardenAdmissionLatencyHigh"]["expr"].endswith("> 8")
        assert alerts["ArchwardenNoReadyReplica"]["for"] == "10m"
        assert gated["expr"].endswith("> 600")
    else:
        assert gated["expr"].endswith("> 300")


def test_promtool_unit_tests_of_the_alerts(tmp_path: Path) -> None:
    # tests/chart/alerts.test.yaml: input series -> the alerts expected to fire, and not fire.
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rule_spec()))
    shutil.copy(HERE / "alerts.test.yaml", tmp_path / "alerts.test.yaml")
    result = run_promtool("test", "rules", "alerts.test.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_unit_tests_can_fail(tmp_path: Path) -> None:
    # The same tests against rules whose latency threshold is the whole timeout: the p99 of
    # 4.975 s no longer fires, so promtool must report a failure.
    (tmp_path / "rules.yaml").write_text(
        yaml.safe_dump(rule_spec({"prometheusRule.latencyRatio": 1}))
    )
    shutil.copy(HERE / "alerts.test.yaml", tmp_path / "alerts.test.yaml")
    result = run_promtool("test", "rules", "alerts.test.yaml", cwd=tmp_path)
    assert result.returncode != 0
    assert "ArchwardenAdmissionLatencyHigh" in result.stdout + result.stderr


def test_fail_open_alert_selects_only_this_releases_webhooks() -> None:
    spec = rule_spec()
    (rule,) = [
        r for r in spec["groups"][0]["rules"] if r["alert"] == "ArchwardenWebhookFailingOpen"
    ]
    (pattern,) = re.findall(r'name=~"([^"]+)"', rule["expr"])
    regex = re.compile(pattern.replace("\\\\", "\\"))
    hooks = [
        hook["name"]
        for obj in render()
        if obj["kind"].endswith("WebhookConfiguration")
        for hook in obj["webhooks"]
    ]
    assert hooks and all(regex.fullmatch(name) for name in hooks)
    assert not regex.fullmatch(f"validate-pods.{FULLNAME}.elsewhere.svc")
    assert not regex.fullmatch(f"validate-pods.x{FULLNAME}.{NAMESPACE}.svc")


# --- Grafana dashboard -----------------------------------------------------------------------


def dashboard_configmap(values: dict[str, Any] | None = None) -> dict[str, Any]:
    rendered = render({"grafanaDashboard.enabled": True, **(values or {})})
    maps = [o for o in rendered if o["kind"] == "ConfigMap" and "archwarden.json" in o["data"]]
    assert len(maps) == 1
    return maps[0]


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in dashboard["panels"] if p["type"] != "row"]


def test_dashboard_is_generated() -> None:
    result = subprocess.run(
        [sys.executable, str(CHART / "hack" / "dashboard.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_dashboard_configmap_for_the_sidecar() -> None:
    assert not [
        o for o in render() if o["kind"] == "ConfigMap" and "archwarden.json" in o.get("data", {})
    ]
    default = dashboard_configmap()
    assert default["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert default["metadata"]["labels"]["app.kubernetes.io/name"] == "archwarden"
    custom = dashboard_configmap(
        {
            "grafanaDashboard.sidecarLabel": "example.com/dashboard",
            "grafanaDashboard.sidecarLabelValue": "yes",
            "grafanaDashboard.namespace": "monitoring",
            "grafanaDashboard.annotations.grafana_folder": "Platform",
            "webhook.timeoutSeconds": 12,
            "webhook.budgetSeconds": 10,
        }
    )
    assert custom["metadata"]["labels"]["example.com/dashboard"] == "yes"
    assert "grafana_dashboard" not in custom["metadata"]["labels"]
    assert custom["metadata"]["namespace"] == "monitoring"
    assert custom["metadata"]["annotations"] == {"grafana_folder": "Platform"}
    dashboard = json.loads(custom["data"]["archwarden.json"])
    (timeout,) = [v for v in dashboard["templating"]["list"] if v["name"] == "webhook_timeout"]
    assert timeout == {**timeout, "type": "constant", "query": "12"}
    assert "__ARCHWARDEN" not in custom["data"]["archwarden.json"]


def _leaves(error: jsonschema.ValidationError) -> Iterator[jsonschema.ValidationError]:
    # An anyOf (a panel is a Panel or a RowPanel) fails as a whole; its branches say where.
    if error.context:
        for sub in error.context:
            yield from _leaves(sub)
    else:
        yield error


def _validate(schema: dict[str, Any], instance: Any, prefix: str) -> list[str]:
    validator = jsonschema.Draft7Validator(schema)
    return sorted(
        "/".join([prefix, *(str(p) for p in leaf.absolute_path)]).strip("/") + f": {leaf.message}"
        for error in validator.iter_errors(instance)
        for leaf in _leaves(error)
    )


def grafana_schema_errors(dashboard: dict[str, Any]) -> list[str]:
    """Every violation of Grafana's schemas, as ``json/path: message`` lines (none if valid).

    The dashboard schema leaves each panel's ``options`` and ``fieldConfig.defaults.custom``
    open (they belong to the panel plugin); those are checked against the plugin's own
    ``Options`` and ``FieldConfig`` types.
    """
    errors = _validate(json.loads((GRAFANA / "dashboard.schema.json").read_text()), dashboard, "")
    for index, panel in enumerate(dashboard.get("panels", [])):
        kind = panel.get("type") if isinstance(panel, dict) else None
        if kind == "row" or not isinstance(kind, str):
            continue
        plugin_file = GRAFANA / f"panel-{kind}.schema.json"
        if not plugin_file.exists():
            errors.append(f"panels/{index}/type: no schema for panel plugin {kind!r}")
            continue
        plugin = json.loads(plugin_file.read_text())
        where = f"panels/{index}"
        errors += _validate(
            {**plugin, "$ref": "#/definitions/Options"},
            panel.get("options", {}),
            where + "/options",
        )
        if "FieldConfig" in plugin["definitions"]:
            custom = panel.get("fieldConfig", {}).get("defaults", {}).get("custom", {})
            errors += _validate(
                {**plugin, "$ref": "#/definitions/FieldConfig"},
                custom,
                where + "/fieldConfig/defaults/custom",
            )
    return errors


def test_grafana_schema_is_generated() -> None:
    # third_party/grafana is what hack/grafana/schema.sh generates from the pinned packages.
    result = subprocess.run(
        [str(REPO_ROOT / "hack" / "grafana" / "schema.sh"), "--check"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    "values",
    [{}, {"webhook.timeoutSeconds": 12, "webhook.budgetSeconds": 10}],
    ids=["defaults", "timeout"],
)
def test_dashboard_matches_grafanas_schema(values: dict[str, Any]) -> None:
    dashboard = json.loads(dashboard_configmap(values)["data"]["archwarden.json"])
    assert grafana_schema_errors(dashboard) == []
    # Every panel type the dashboard uses has its plugin's schema here.
    kinds = {p["type"] for p in panels(dashboard)}
    assert kinds and all((GRAFANA / f"panel-{k}.schema.json").exists() for k in kinds)


DELETE = object()


def _first(dashboard: dict[str, Any], kind: str) -> int:
    return next(i for i, p in enumerate(dashboard["panels"]) if p["type"] == kind)


@pytest.mark.parametrize(
    ("path", "value", "error"),
    [
        # gridPos is an object of four numbers, not Grafana's old "x,y,w,h" shorthand.
        (("panels", "timeseries", "gridPos"), "0,1,8,8", "/gridPos: '0,1,8,8' is not of type"),
        (("panels", "timeseries", "gridPos", "w"), DELETE, "/gridPos: 'w' is a required property"),
        (("panels", "timeseries", "gridPos", "h"), "8", "/gridPos/h: '8' is not of type"),
        (
            ("templating", "list", 1, "type"),
            "querry",
            "templating/list/1/type: 'querry' is not one",
        ),
        # What the generator wrote before it was checked against the schema.
        (("templating", "list", 0, "current"), {}, "templating/list/0/current: 'text' is a req"),
        (("templating", "list", 1, "definition"), "x", "'definition' was unexpected"),
        (("timezone",), 0, "timezone: 0 is not of type 'string'"),
        # The panel plugins' schemas: enums and required options.
        (
            ("panels", "timeseries", "options", "legend", "displayMode"),
            "sidebar",
            "/options/legend/displayMode: 'sidebar' is not one of",
        ),
        (("panels", "timeseries", "options", "tooltip"), DELETE, "'tooltip' is a required"),
        (
            ("panels", "bargauge", "options", "displayMode"),
            "fancy",
            "/options/displayMode: 'fancy' is not one of",
        ),
    ],
    ids=[
        "gridPos-string",
        "gridPos-without-w",
        "gridPos-h-string",
        "variable-type",
        "variable-current-empty",
        "variable-definition",
        "timezone-number",
        "timeseries-legend-mode",
        "timeseries-no-tooltip",
        "bargauge-display-mode",
    ],
)
def test_grafanas_schema_rejects_a_broken_dashboard(
    path: tuple[Any, ...], value: Any, error: str
) -> None:
    dashboard = json.loads(dashboard_configmap()["data"]["archwarden.json"])
    assert grafana_schema_errors(dashboard) == []
    target: Any = dashboard
    keys = list(path)
    if keys[0] == "panels":
        # ("panels", <panel type>, ...): the first panel of that type.
        keys[1] = _first(dashboard, keys[1])
    for key in keys[:-1]:
        target = target[key]
    if value is DELETE:
        del target[keys[-1]]
    else:
        target[keys[-1]] = value
    errors = grafana_schema_errors(dashboard)
    assert any(error in line for line in errors), errors


def test_dashboard_structure() -> None:
    # What a schema cannot say: ids unique, panels on the 24-column grid without overlapping,
    # queries on the chart's data source using only defined variables.
    dashboard = json.loads(dashboard_configmap()["data"]["archwarden.json"])
    assert dashboard["uid"] and len(dashboard["uid"]) <= 40
    assert isinstance(dashboard["schemaVersion"], int) and dashboard["schemaVersion"] >= 36
    assert dashboard["title"] == "archwarden"
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["w"] > 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        covered = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not covered & cells, f"{panel['title']} overlaps another panel"
        cells |= covered
        if panel["type"] == "row":
            continue
        assert panel["type"] in {"timeseries", "bargauge", "stat"}
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs))
        assert panel["fieldConfig"]["defaults"]["unit"]
        # Every $variable a query uses is defined (or one of Grafana's own).
        for target in panel["targets"]:
            used = set(re.findall(r"\$(\w+)", target["expr"]))
            assert used <= set(variables) | {"__rate_interval"}, (panel["title"], used)


def test_dashboard_covers_the_documented_signals() -> None:
    dashboard = json.loads(dashboard_configmap()["data"]["archwarden.json"])
    used: dict[str, set[str]] = {}
    for panel in panels(dashboard):
        for target in panel["targets"]:
            for name in series_names(target["expr"]):
                used.setdefault(name, set()).add(target["expr"])
    expected_by = {
        "archwarden_admission_requests_total": "decision",
        "archwarden_admission_denials_total": "reason",
        "archwarden_registry_requests_total": "registry",
        "archwarden_registry_request_duration_seconds_bucket": "registry",
        "archwarden_image_cache_lookups_total": "result",
        "archwarden_nodes": "arch",
        "archwarden_workloads_unschedulable": "kind",
        "apiserver_admission_webhook_fail_open_count": "name",
    }
    for name, label in expected_by.items():
        assert name in used, f"no panel reads {name}"
        assert any(label in expr for expr in used[name]), (name, label)
    latency = [p for p in panels(dashboard) if p["title"] == "Latency against the webhook timeout"]
    (panel,) = latency
    exprs = " ".join(t["expr"] for t in panel["targets"])
    assert "histogram_quantile(0.5," in exprs and "histogram_quantile(0.99," in exprs
    assert "vector($webhook_timeout)" in exprs


def test_every_dashboard_query_parses_and_reads_known_series(tmp_path: Path) -> None:
    dashboard = json.loads(dashboard_configmap()["data"]["archwarden.json"])
    known = exported() | FOREIGN
    rules = []
    for panel in panels(dashboard):
        for target in panel["targets"]:
            expr = target["expr"]
            assert series_names(expr) <= known, (panel["title"], series_names(expr) - known)
            # Grafana's variables, as Grafana substitutes them, so promtool parses real PromQL.
            concrete = (
                expr.replace("$__rate_interval", "5m")
                .replace("$namespace", NAMESPACE)
                .replace("$webhook_timeout", "5")
            )
            rules.append(
                {"record": f"dashboard:panel{panel['id']}:{target['refId']}", "expr": concrete}
            )
    (tmp_path / "panels.yaml").write_text(
        yaml.safe_dump({"groups": [{"name": "panels", "rules": rules}]})
    )
    result = run_promtool("check", "rules", "panels.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout


def test_series_check_catches_an_unknown_metric() -> None:
    # The check above must be able to fail: a misspelt metric is not in the known set.
    known = exported() | FOREIGN
    assert "archwarden_admission_request_total" not in known
    assert series_names('rate(archwarden_admission_request_total{a="b"}[5m])') - known
    assert "archwarden_admission_requests_total" in known
    assert "archwarden_admission_duration_seconds_bucket" in known
