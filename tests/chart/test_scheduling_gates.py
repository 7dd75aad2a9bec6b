"""The scheduling gate archwarden.io/platforms, rendered offline: which mode
``schedulingGates.mode`` resolves to (``auto`` asks ``.Capabilities`` whether the API server
serves MutatingAdmissionPolicy), the policy and binding that gate pods inside the API server, the
RBAC that lets archwarden release them, and the uninstall hook that releases them when archwarden
goes.

tests/chart/test_chart_cluster.py has the local API server (v1.37) run the policy on real pods.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.chart.helm import (
    MUTATING_POLICY_API,
    NAMESPACE,
    RELEASE,
    HelmError,
    find_helm,
    render,
)
from tests.chart.test_chart import (
    READ,
    UNINSTALL_DELETE_RULE,
    UNINSTALL_UNGATE_RULES,
    _granted,
    _webhooks,
    by_kind,
    one,
)

pytestmark = pytest.mark.skipif(
    find_helm() is None, reason="helm not found (make cluster-build builds it)"
)

FULLNAME = f"{RELEASE}-archwarden"
GATE = "archwarden.io/platforms"
POLICY_KINDS = ("MutatingAdmissionPolicy", "MutatingAdmissionPolicyBinding")
NOT_BOUND = {
    "name": "not-bound-to-a-node",
    "expression": "!has(object.spec.nodeName) || object.spec.nodeName == ''",
}
SKIP_REQUESTED = (
    "has(object.metadata.annotations) && 'archwarden.io/skip' in object.metadata.annotations"
    " && object.metadata.annotations['archwarden.io/skip'] == 'true'"
)
GATE_APPLY = (
    'Object{spec: Object.spec{schedulingGates: [Object.spec.schedulingGates{name: "'
    + GATE
    + '"}]}}'
)


def served(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Rendered for a cluster that serves MutatingAdmissionPolicy (Kubernetes >= 1.36)."""
    return render(values, api_versions=[MUTATING_POLICY_API])


def config(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return dict(yaml.safe_load(one(objects, "ConfigMap")["data"]["config.yaml"]))


def hook(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = [
        o
        for o in by_kind(objects, kind)
        if "helm.sh/hook" in (o["metadata"].get("annotations") or {})
    ]
    return found


# --- which mode ------------------------------------------------------------------------------


def test_auto_picks_the_policy_where_the_api_server_serves_it() -> None:
    objects = served()
    assert config(objects)["schedulingGates"] == {"mode": "policy"}
    policy = one(objects, "MutatingAdmissionPolicy")
    binding = one(objects, "MutatingAdmissionPolicyBinding")
    labels = one(objects, "ConfigMap")["metadata"]["labels"]
    for obj in (policy, binding):
        assert obj["apiVersion"] == "admissionregistration.k8s.io/v1"
        assert obj["metadata"]["name"] == FULLNAME
        assert obj["metadata"]["labels"] == labels  # the chart's common labels
        assert "namespace" not in obj["metadata"]  # cluster-scoped
    # Bound as is: no parameters, no narrower match than the policy's own.
    assert binding["spec"] == {"policyName": FULLNAME}


def test_auto_falls_back_to_the_webhook_without_the_api() -> None:
    objects = render()
    assert config(objects)["schedulingGates"] == {"mode": "webhook"}
    for kind in POLICY_KINDS:
        assert not by_kind(objects, kind)
    # The webhook gates what it cannot decide in time: archwarden still releases pods.
    assert _granted(objects)[("", "pods")] == READ | {"patch"}


@pytest.mark.parametrize("api_served", [True, False], ids=["api", "no-api"])
def test_mode_webhook_never_installs_the_policy(api_served: bool) -> None:
    values = {"schedulingGates.mode": "webhook"}
    objects = served(values) if api_served else render(values)
    assert config(objects)["schedulingGates"] == {"mode": "webhook"}
    assert not any(by_kind(objects, kind) for kind in POLICY_KINDS)
    assert _granted(objects)[("", "pods")] == READ | {"patch"}


def test_mode_policy_installs_the_policy_where_served() -> None:
    objects = served({"schedulingGates.mode": "policy"})
    assert config(objects)["schedulingGates"] == {"mode": "policy"}
    assert all(len(by_kind(objects, kind)) == 1 for kind in POLICY_KINDS)
    assert _granted(objects)[("", "pods")] == READ | {"patch"}


def test_mode_policy_without_the_api_fails_with_a_message() -> None:
    with pytest.raises(HelmError) as caught:
        render({"schedulingGates.mode": "policy"})
    assert "execution error" in caught.value.stderr
    assert (
        "schedulingGates.mode=policy needs the API server to serve "
        "admissionregistration.k8s.io/v1/MutatingAdmissionPolicy" in caught.value.stderr
    )


@pytest.mark.parametrize("api_served", [True, False], ids=["api", "no-api"])
def test_mode_off_gates_nothing_and_patches_no_pod(api_served: bool) -> None:
    values = {"schedulingGates.mode": "off", "prometheusRule.enabled": True}
    objects = served(values) if api_served else render(values)
    assert config(objects)["schedulingGates"] == {"mode": "off"}
    assert not any(by_kind(objects, kind) for kind in POLICY_KINDS)
    assert _granted(objects)[("", "pods")] == READ
    # Nothing to release on uninstall either: the hook only deletes.
    assert hook(objects, "ClusterRole")["rules"] == [UNINSTALL_DELETE_RULE]
    job = hook(objects, "Job")
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == [
        "remove-webhooks",
        FULLNAME,
    ]
    # No gate, no alert about pods waiting on it.
    (rule,) = by_kind(objects, "PrometheusRule")
    alerts = {r["alert"] for r in rule["spec"]["groups"][0]["rules"]}
    assert "ArchwardenPodGatedTooLong" not in alerts


def test_config_mode_is_accepted_by_archwardens_loader() -> None:
    settings = pytest.importorskip("archwarden.settings")
    for objects, mode in ((served(), "policy"), (render(), "webhook")):
        loaded = settings.from_mapping(config(objects))
        assert loaded.scheduling_gates.mode == mode


# --- the policy ------------------------------------------------------------------------------


def test_policy_gates_every_pod_created_in_scope() -> None:
    # With nobody allowed to skip, the plain gate (the default's skip rule: below).
    spec = one(served({"config.skip.allowed": "nobody"}), "MutatingAdmissionPolicy")["spec"]
    # A CEL failure must never block pod creation cluster-wide; the webhooks still check.
    assert spec["failurePolicy"] == "Ignore"
    # IfNeeded would run the policy again after the webhook removed the gate, adding it back.
    assert spec["reinvocationPolicy"] == "Never"
    assert spec["matchConstraints"]["resourceRules"] == [
        {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"]}
    ]
    assert "objectSelector" not in spec["matchConstraints"]
    assert spec["mutations"] == [
        {"patchType": "ApplyConfiguration", "applyConfiguration": {"expression": GATE_APPLY}}
    ]
    assert "paramKind" not in spec


@pytest.mark.parametrize(
    "values",
    [
        {},
        {
            "config.excludedNamespaces": ["monitoring", "kube-system"],
            "webhook.matchExpressions[0].key": "archwarden/skip",
            "webhook.matchExpressions[0].operator": "DoesNotExist",
        },
    ],
    ids=["defaults", "excluded-and-expressions"],
)
def test_policy_sees_exactly_the_namespaces_the_webhooks_see(values: dict[str, Any]) -> None:
    # A pod gated where no webhook looks would never be released.
    objects = served({**values, "config.mutateWorkloadTemplates": True})
    selector = one(objects, "MutatingAdmissionPolicy")["spec"]["matchConstraints"][
        "namespaceSelector"
    ]
    hooks = [
        hook
        for kind in ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration")
        for hook in _webhooks(objects, kind).values()
    ]
    assert hooks and all(hook["namespaceSelector"] == selector for hook in hooks)
    excluded = selector["matchExpressions"][0]
    assert excluded["key"] == "kubernetes.io/metadata.name" and excluded["operator"] == "NotIn"
    assert {"kube-system", NAMESPACE} <= set(excluded["values"])
    if values:
        assert excluded["values"] == ["kube-system", NAMESPACE, "monitoring"]
        assert selector["matchExpressions"][1] == {
            "key": "archwarden/skip",
            "operator": "DoesNotExist",
        }


def test_skip_everyone_leaves_annotated_pods_ungated() -> None:
    spec = one(served({"config.skip.allowed": "everyone"}), "MutatingAdmissionPolicy")["spec"]
    assert spec["matchConditions"] == [
        NOT_BOUND,
        {"name": "skip-not-requested", "expression": f"!({SKIP_REQUESTED})"},
    ]
    assert "variables" not in spec
    assert spec["mutations"][0]["applyConfiguration"]["expression"] == GATE_APPLY


def test_skip_nobody_gates_annotated_pods_too() -> None:
    spec = one(served({"config.skip.allowed": "nobody"}), "MutatingAdmissionPolicy")["spec"]
    assert spec["matchConditions"] == [NOT_BOUND]
    assert "variables" not in spec
    assert spec["mutations"][0]["applyConfiguration"]["expression"] == GATE_APPLY


def test_skip_in_labelled_namespaces_is_decided_by_the_namespace_labels() -> None:
    # matchConditions are evaluated with namespaceObject null: the namespace's labels are read
    # by a variable of the mutation, which an annotated pod in a labelled namespace turns into
    # an empty apply configuration.
    policy = one(served({"config.skip.allowed": "labelledNamespaces"}), "MutatingAdmissionPolicy")
    # The default: a tenant who can annotate a workload does not opt out alone.
    assert one(served(), "MutatingAdmissionPolicy") == policy
    spec = policy["spec"]
    assert spec["matchConditions"] == [NOT_BOUND]
    assert not any("namespaceObject" in c["expression"] for c in spec["matchConditions"])
    (variable,) = spec["variables"]
    assert variable == {
        "name": "skipAllowed",
        "expression": f"{SKIP_REQUESTED} && has(namespaceObject.metadata.labels)"
        " && 'archwarden.io/allow-skip' in namespaceObject.metadata.labels"
        " && namespaceObject.metadata.labels['archwarden.io/allow-skip'] == 'true'",
    }
    assert spec["mutations"] == [
        {
            "patchType": "ApplyConfiguration",
            "applyConfiguration": {
                "expression": f"variables.skipAllowed ? Object{{}} : {GATE_APPLY}"
            },
        }
    ]


# --- uninstall -------------------------------------------------------------------------------


@pytest.mark.parametrize("api_served", [True, False], ids=["policy", "webhook"])
def test_uninstall_hook_deletes_the_policy_and_releases_the_gates(api_served: bool) -> None:
    objects = served() if api_served else render()
    role = hook(objects, "ClusterRole")
    assert role["rules"] == [UNINSTALL_DELETE_RULE, *UNINSTALL_UNGATE_RULES]
    # Deletes only what this release named.
    assert role["rules"][0]["resourceNames"] == [FULLNAME]
    if api_served:
        assert {o["metadata"]["name"] for o in objects if o["kind"] in POLICY_KINDS} == {FULLNAME}
    binding = hook(objects, "ClusterRoleBinding")
    account = hook(objects, "ServiceAccount")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": NAMESPACE}
    ]
    job = hook(objects, "Job")
    pod = job["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == account["metadata"]["name"]
    assert pod["containers"][0]["args"] == ["remove-webhooks", FULLNAME, "--ungate"]
