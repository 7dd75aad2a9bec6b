"""The chart against the real local control plane: the API server accepts every object, and the
chart-generated CA survives an upgrade (``lookup``), which ``helm template`` cannot show.

The webhooks are installed with a namespaceSelector that matches no namespace, so the release
never gates other tests' objects (no archwarden process answers in these tests).
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.chart.helm import CHART, helm
from tests.cluster.cluster import LocalCluster

pytestmark = pytest.mark.cluster

INERT = [
    "--set",
    "webhook.matchExpressions[0].key=archwarden.io/chart-test-never",
    "--set",
    "webhook.matchExpressions[0].operator=Exists",
    "--set",
    "replicaCount=1",
]


def _helm(cluster: LocalCluster, *args: str) -> str:
    return helm(*args, "--kubeconfig", str(cluster.kubeconfig))


def _ca_state(cluster: LocalCluster, namespace: str, fullname: str) -> tuple[str, set[str]]:
    secret = cluster.get_json("secret", "-n", namespace, f"{fullname}-tls")
    bundles = set()
    for kind in ("validatingwebhookconfiguration", "mutatingwebhookconfiguration"):
        for hook in cluster.get_json(kind, fullname)["webhooks"]:
            bundles.add(hook["clientConfig"]["caBundle"])
    return secret["data"]["ca.crt"], bundles


def test_install_and_upgrade_keep_one_generated_ca(cluster: LocalCluster, namespace: str) -> None:
    # Cluster-scoped objects (ClusterRole, webhook configurations) are named after the release.
    release = f"c{namespace[-6:]}"
    fullname = f"{release}-archwarden"
    try:
        _helm(cluster, "install", release, str(CHART), "-n", namespace, *INERT)
        ca, bundles = _ca_state(cluster, namespace, fullname)
        assert bundles == {ca}
        _helm(
            cluster,
            "upgrade",
            release,
            str(CHART),
            "-n",
            namespace,
            *INERT,
            "--set",
            "config.mode=warn",
        )
        assert _ca_state(cluster, namespace, fullname) == (ca, {ca}), "upgrade replaced the CA"
        config = cluster.get_json("configmap", "-n", namespace, fullname)["data"]["config.yaml"]
        assert yaml.safe_load(config)["mode"] == "warn"
    finally:
        _helm(cluster, "uninstall", release, "-n", namespace, "--wait", "--timeout", "60s")
    leftovers = cluster.kubectl(
        "get",
        "clusterrole,clusterrolebinding,validatingwebhookconfiguration,"
        "mutatingwebhookconfiguration",
        "-l",
        f"app.kubernetes.io/instance={release}",
        "-o",
        "name",
    ).stdout
    assert leftovers.strip() == ""


@pytest.mark.parametrize(
    "values",
    [
        [],
        [
            "--set",
            "webhook.validating.failurePolicy=Fail",
            "--set",
            "webhook.mutating.reinvocationPolicy=IfNeeded",
            "--set",
            "podDisruptionBudget.enabled=true",
            "--set",
            "rbac.pullSecrets.scope=namespaces",
            "--set",
            "rbac.pullSecrets.namespaces={default}",
            "--set",
            "podAntiAffinity=hard",
            "--set",
            "topologySpreadConstraints[0].maxSkew=1",
            "--set",
            "topologySpreadConstraints[0].topologyKey=topology.kubernetes.io/zone",
            "--set",
            "topologySpreadConstraints[0].whenUnsatisfiable=ScheduleAnyway",
        ],
    ],
    ids=["defaults", "options"],
)
def test_api_server_accepts_every_object(
    cluster: LocalCluster, namespace: str, values: list[str]
) -> None:
    manifests = helm("template", "dry", str(CHART), "-n", namespace, *INERT, *values)
    proc = cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=manifests, check=False)
    assert proc.returncode == 0, proc.stderr
    objects: list[dict[str, Any]] = [d for d in yaml.safe_load_all(manifests) if d]
    assert proc.stdout.count("(server dry run)") == len(objects)
