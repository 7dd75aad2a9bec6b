"""The chart against the real local control plane: the API server accepts every object, and the
chart-generated CA survives an upgrade (``lookup``), which ``helm template`` cannot show.

The webhooks are installed with a namespaceSelector that matches no namespace, so the release
never gates other tests' objects (no archwarden process answers in these tests).
"""

from __future__ import annotations

import json
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
        [
            "--set",
            "hostNetwork=true",
            "--set",
            "webhook.port=10443",
            "--set",
            "metrics.port=10444",
            "--set",
            "image.architectures={arm64,s390x}",
            "--set",
            "config.mutateWorkloadTemplates=true",
            "--set",
            "commonLabels.tier=platform",
            "--set",
            "podLabels.tier=webhook",
            "--set",
            "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
            ".nodeSelectorTerms[0].matchExpressions[0].key=pool",
            "--set",
            "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
            ".nodeSelectorTerms[0].matchExpressions[0].operator=Exists",
            "--set",
            "grafanaDashboard.enabled=true",
        ],
    ],
    ids=["defaults", "options", "issue-12-options"],
)
def test_api_server_accepts_every_object(
    cluster: LocalCluster, namespace: str, values: list[str]
) -> None:
    manifests = helm("template", "dry", str(CHART), "-n", namespace, *INERT, *values)
    proc = cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=manifests, check=False)
    assert proc.returncode == 0, proc.stderr
    objects: list[dict[str, Any]] = [d for d in yaml.safe_load_all(manifests) if d]
    assert proc.stdout.count("(server dry run)") == len(objects)


def _patch(
    cluster: LocalCluster, namespace: str, patch: dict[str, Any], kind: str = "merge"
) -> Any:
    return cluster.kubectl(
        "patch",
        "replicaset",
        "probe",
        "-n",
        namespace,
        "--type",
        kind,
        "-p",
        json.dumps(patch),
        check=False,
    )


@pytest.mark.parametrize("conditions", [True, False], ids=["matchConditions", "without"])
def test_match_conditions_keep_unchanged_templates_away_from_archwarden(
    cluster: LocalCluster, namespace: str, conditions: bool
) -> None:
    # The webhooks point at a Service that does not exist, with failurePolicy Fail, and match
    # only this test's namespace: every call the API server makes fails the request. So an
    # update that succeeds is one the API server did not send to archwarden.
    release = f"m{namespace[-6:]}"
    cluster.apply(
        {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {"name": "probe", "labels": {"app": "probe"}},
            "spec": {
                "replicas": 0,
                "selector": {"matchLabels": {"app": "probe"}},
                "template": {
                    "metadata": {"labels": {"app": "probe"}},
                    "spec": {"containers": [{"name": "app", "image": "registry.invalid/app:1"}]},
                },
            },
        },
        namespace=namespace,
    )
    manifests = helm(
        "template",
        release,
        str(CHART),
        "-n",
        f"{release}-nowhere",
        "--show-only",
        "templates/webhooks.yaml",
        "--set",
        "certManager.enabled=true",
        "--set",
        "config.mutate=false",
        "--set",
        "webhook.validating.failurePolicy=Fail",
        "--set",
        "webhook.matchExpressions[0].key=kubernetes.io/metadata.name",
        "--set",
        "webhook.matchExpressions[0].operator=In",
        "--set",
        f"webhook.matchExpressions[0].values[0]={namespace}",
        "--set",
        f"webhook.matchConditions={str(conditions).lower()}",
    )
    cluster.kubectl("apply", "-f", "-", input=manifests)
    try:
        # The ReplicaSet's own validation webhook is in force: a template change is sent.
        changed = _patch(
            cluster,
            namespace,
            [{"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": "x:2"}],
            kind="json",
        )
        assert changed.returncode != 0
        assert "failed calling webhook" in changed.stderr
        assert f"validate-replicasets.{release}-archwarden." in changed.stderr
        # Scaling by spec.replicas (what the Deployment controller does) and a label edit.
        scaled = _patch(cluster, namespace, {"spec": {"replicas": 0, "minReadySeconds": 1}})
        labelled = _patch(cluster, namespace, {"metadata": {"labels": {"team": "a"}}})
        if conditions:
            assert scaled.returncode == 0, scaled.stderr
            assert labelled.returncode == 0, labelled.stderr
        else:
            assert "failed calling webhook" in scaled.stderr
            assert "failed calling webhook" in labelled.stderr
    finally:
        cluster.kubectl(
            "delete", "validatingwebhookconfiguration", f"{release}-archwarden", "--wait=false"
        )
