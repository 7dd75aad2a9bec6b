"""The chart against the real local control plane: the API server accepts every object, the
chart-generated CA survives an upgrade (``lookup``), which ``helm template`` cannot show, and the
scheduling-gate policy gates exactly the pods archwarden would check.

The webhooks and the policy are installed with a namespaceSelector that matches no namespace
(or only the test's own), so the release never gates other tests' objects (no archwarden process
answers in these tests).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest
import yaml

from tests.chart.helm import CHART, MUTATING_POLICY_API, helm
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
        # helm asked the API server: it serves MutatingAdmissionPolicy, so auto means policy.
        assert yaml.safe_load(config)["schedulingGates"] == {"mode": "policy"}
        policy = cluster.get_json("mutatingadmissionpolicy", fullname)
        assert (
            policy["spec"]["matchConstraints"]["namespaceSelector"]
            == (
                cluster.get_json("validatingwebhookconfiguration", fullname)["webhooks"][0][
                    "namespaceSelector"
                ]
            )
        )
        binding = cluster.get_json("mutatingadmissionpolicybinding", fullname)
        assert binding["spec"]["policyName"] == fullname
    finally:
        _helm(cluster, "uninstall", release, "-n", namespace, "--wait", "--timeout", "60s")
    leftovers = cluster.kubectl(
        "get",
        "clusterrole,clusterrolebinding,validatingwebhookconfiguration,"
        "mutatingwebhookconfiguration,mutatingadmissionpolicy,mutatingadmissionpolicybinding",
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
        # The scheduling-gate policy and its binding: the API server compiles every CEL
        # expression (matchConditions, variables, the apply configuration) on create.
        [f"--api-versions={MUTATING_POLICY_API}", "--set", "config.skip.allowed=everyone"],
        [
            f"--api-versions={MUTATING_POLICY_API}",
            "--set",
            "config.skip.allowed=labelledNamespaces",
            "--set",
            "schedulingGates.mode=policy",
        ],
    ],
    ids=["defaults", "options", "issue-12-options", "policy-skip-everyone", "policy-skip-labelled"],
)
def test_api_server_accepts_every_object(
    cluster: LocalCluster, namespace: str, values: list[str]
) -> None:
    manifests = helm("template", "dry", str(CHART), "-n", namespace, *INERT, *values)
    proc = cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=manifests, check=False)
    assert proc.returncode == 0, proc.stderr
    objects: list[dict[str, Any]] = [d for d in yaml.safe_load_all(manifests) if d]
    assert proc.stdout.count("(server dry run)") == len(objects)
    gated = any(v.startswith("--api-versions") for v in values)
    assert gated == any(o["kind"] == "MutatingAdmissionPolicy" for o in objects)


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
        "schedulingGates.mode=off",  # no mutating webhook at all: only the validating one
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


GATE = "archwarden.io/platforms"


def _pod(
    annotations: dict[str, str] | None = None,
    node_name: str | None = None,
    gates: Sequence[str] = (),
) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": "app", "image": "registry.invalid/app:1"}]}
    if node_name:
        spec["nodeName"] = node_name
    if gates:
        spec["schedulingGates"] = [{"name": gate} for gate in gates]
    metadata: dict[str, Any] = {"generateName": "gate-probe-"}
    if annotations is not None:
        metadata["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


def _gates_at_creation(cluster: LocalCluster, namespace: str, pod: dict[str, Any]) -> list[str]:
    """The scheduling gates of ``pod`` as the API server would store it (a server dry run goes
    through admission, mutating policies included, and stores nothing)."""
    proc = cluster.kubectl(
        "create",
        "-n",
        namespace,
        "--dry-run=server",
        "-o",
        "json",
        "-f",
        "-",
        input=json.dumps(pod),
    )
    created = json.loads(proc.stdout)
    return [gate["name"] for gate in created["spec"].get("schedulingGates", [])]


@pytest.mark.parametrize("allowed", ["everyone", "labelledNamespaces", "nobody"])
def test_policy_gates_new_pods_unless_skipped_or_bound(
    cluster: LocalCluster, namespace: str, allowed: str
) -> None:
    # The policy as the chart renders it, matching only this test's namespace.
    release = f"g{namespace[-6:]}"
    manifests = helm(
        "template",
        release,
        str(CHART),
        "-n",
        f"{release}-nowhere",
        f"--api-versions={MUTATING_POLICY_API}",
        "--show-only",
        "templates/scheduling-gate-policy.yaml",
        "--set",
        f"config.skip.allowed={allowed}",
        "--set",
        "webhook.matchExpressions[0].key=kubernetes.io/metadata.name",
        "--set",
        "webhook.matchExpressions[0].operator=In",
        "--set",
        f"webhook.matchExpressions[0].values[0]={namespace}",
    )
    cluster.kubectl("apply", "-f", "-", input=manifests)
    skip = {"archwarden.io/skip": "true"}
    try:
        # Policies take effect once the API server's informers saw them.
        cluster.wait_for(
            lambda: _gates_at_creation(cluster, namespace, _pod()) == [GATE],
            timeout=30,
            message="the policy to gate a new pod",
        )
        # Added beside the pod's own gates (a merge, not a replacement).
        assert _gates_at_creation(cluster, namespace, _pod(gates=["example.com/quota"])) == [
            "example.com/quota",
            GATE,
        ]
        # Only the exact value "true" asks for a skip, as in archwarden's webhook.
        assert _gates_at_creation(cluster, namespace, _pod({"archwarden.io/skip": "yes"})) == [GATE]
        # A pod bound to a node by name cannot carry gates: it is left alone (and admitted).
        assert _gates_at_creation(cluster, namespace, _pod(node_name="any-node")) == []
        skipped = _gates_at_creation(cluster, namespace, _pod(skip))
        assert skipped == ([] if allowed == "everyone" else [GATE])
        # The namespace's allow-skip label decides only for labelledNamespaces.
        cluster.kubectl("label", "namespace", namespace, "archwarden.io/allow-skip=true")
        expected = [] if allowed in ("everyone", "labelledNamespaces") else [GATE]
        cluster.wait_for(
            lambda: _gates_at_creation(cluster, namespace, _pod(skip)) == expected,
            timeout=30,
            message=f"a skip in a labelled namespace to give gates {expected}",
        )
        assert _gates_at_creation(cluster, namespace, _pod()) == [GATE]
    finally:
        cluster.kubectl(
            "delete",
            "mutatingadmissionpolicybinding,mutatingadmissionpolicy",
            f"{release}-archwarden",
            "--wait=false",
        )
