"""The chart's PrometheusRule and ServiceMonitor applied to the real local API server, validated
against the Prometheus Operator's own CRDs (third_party/prometheus-operator, copied unchanged
from its Go module by hack/prometheus-operator/fetch-crds.sh).

``kubectl apply --server-side`` sends ``fieldValidation=Strict``: the API server rejects a field
the CRD's schema does not declare instead of pruning it, and checks every pattern, enum and
required field of the schema. No Prometheus Operator runs; the objects are only stored.
"""

from __future__ import annotations

import copy
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.chart.helm import REPO_ROOT, render
from tests.cluster.cluster import LocalCluster

pytestmark = pytest.mark.cluster

CRDS = REPO_ROOT / "third_party" / "prometheus-operator" / "crds"
NAMES = ("prometheusrules.monitoring.coreos.com", "servicemonitors.monitoring.coreos.com")
KINDS = ("PrometheusRule", "ServiceMonitor")
# The option sets of tests/chart/test_observability.py, so every rendered variant is applied.
OPTIONS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "options": {
        "prometheusRule.alertLabels.team": "platform",
        "prometheusRule.selector": 'job="archwarden"',
        "prometheusRule.for": "10m",
        "prometheusRule.labels.release": "kube-prometheus-stack",
        "serviceMonitor.labels.release": "kube-prometheus-stack",
        "serviceMonitor.interval": "1m",
        "serviceMonitor.scrapeTimeout": "20s",
        "webhook.timeoutSeconds": 10,
    },
}


@pytest.fixture(scope="module")
def crds(cluster: LocalCluster) -> Iterator[None]:
    cluster.kubectl("apply", "--server-side", "-f", str(CRDS))
    cluster.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s", *(f"crd/{n}" for n in NAMES)
    )
    try:
        yield
    finally:
        cluster.kubectl("delete", "crd", *NAMES, "--ignore-not-found", "--wait=true", timeout=120)


def monitoring_objects(namespace: str, values: dict[str, Any]) -> dict[str, dict[str, Any]]:
    rendered = render(
        {"prometheusRule.enabled": True, "serviceMonitor.enabled": True, **values},
        namespace=namespace,
    )
    objects = {obj["kind"]: obj for obj in rendered if obj["kind"] in KINDS}
    assert set(objects) == set(KINDS)
    return objects


def server_apply(
    cluster: LocalCluster, obj: dict[str, Any], *, dry_run: bool = False
) -> subprocess.CompletedProcess[str]:
    args = ["apply", "--server-side", "--field-manager=chart-test", "-f", "-"]
    if dry_run:
        args.append("--dry-run=server")
    return cluster.kubectl(*args, input=yaml.safe_dump(obj), check=False)


def test_the_crds_are_the_modules() -> None:
    # Byte for byte what the pinned module ships (go.sum hash checked by the script).
    result = subprocess.run(
        [str(REPO_ROOT / "hack" / "prometheus-operator" / "fetch-crds.sh"), "--check"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("values", OPTIONS.values(), ids=OPTIONS.keys())
def test_the_api_server_accepts_the_rendered_objects(
    cluster: LocalCluster, crds: None, namespace: str, values: dict[str, Any]
) -> None:
    for kind, obj in monitoring_objects(namespace, values).items():
        result = server_apply(cluster, obj)
        assert result.returncode == 0, f"{kind}: {result.stderr}"
        stored = cluster.get_json(kind.lower(), "-n", namespace, obj["metadata"]["name"])
        # Stored as rendered: the schema neither pruned nor rewrote a field the chart writes.
        assert stored["spec"] == obj["spec"], kind
        assert stored["metadata"]["labels"] == obj["metadata"]["labels"], kind


def test_the_whole_release_with_monitoring_is_accepted(
    cluster: LocalCluster, crds: None, namespace: str
) -> None:
    # Every object of a release with all three monitoring options on, in one server dry run
    # (nothing is stored, so the webhook configurations gate nothing).
    values = {
        "prometheusRule.enabled": True,
        "serviceMonitor.enabled": True,
        "grafanaDashboard.enabled": True,
    }
    objects = render(values, namespace=namespace)
    assert {"PrometheusRule", "ServiceMonitor"} <= {o["kind"] for o in objects}
    result = cluster.kubectl(
        "apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump_all(objects), check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("(server dry run)") == len(objects)


def broken(obj: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    """A copy of ``obj`` with the field at ``path`` set to ``value``."""
    copied = copy.deepcopy(obj)
    target = copied
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return copied


@pytest.mark.parametrize(
    ("kind", "path", "value", "error"),
    [
        # Not a Prometheus duration (the CRD's pattern).
        (
            "PrometheusRule",
            ("spec", "groups", 0, "rules", 0, "for"),
            "5 minutes",
            'spec.groups[0].rules[0].for: Invalid value: "5 minutes"',
        ),
        # A label written beside the rule instead of under labels: unknown to the schema.
        (
            "PrometheusRule",
            ("spec", "groups", 0, "rules", 0, "severity"),
            "critical",
            "rules[0].severity: field not declared in schema",
        ),
        # Annotations are a map of strings.
        (
            "PrometheusRule",
            ("spec", "groups", 0, "rules", 0, "annotations"),
            ["summary"],
            "rules[0].annotations: expected map",
        ),
        # The scrape scheme is an enum (http, https).
        (
            "ServiceMonitor",
            ("spec", "endpoints", 0, "scheme"),
            "tcp",
            'spec.endpoints[0].scheme: Unsupported value: "tcp"',
        ),
    ],
    ids=["rule-for", "rule-unknown-field", "rule-annotations-type", "monitor-scheme"],
)
def test_a_broken_field_is_rejected(
    cluster: LocalCluster,
    crds: None,
    namespace: str,
    kind: str,
    path: tuple[Any, ...],
    value: Any,
    error: str,
) -> None:
    # The same object is accepted as rendered (above); changed in one field, the API server
    # refuses it and names the field. Dry run: nothing is stored even if it were accepted.
    obj = monitoring_objects(namespace, {})[kind]
    assert server_apply(cluster, obj, dry_run=True).returncode == 0
    result = server_apply(cluster, broken(obj, path, value), dry_run=True)
    assert result.returncode != 0, f"{kind} with {path}={value!r} was accepted"
    assert error in result.stderr, result.stderr
