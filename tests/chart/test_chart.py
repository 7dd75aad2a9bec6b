"""The Helm chart: lint, render offline with the real helm, and check what the cluster would get.

Grouped by concern: chart hygiene (lint, labels, names, generated files), admission webhooks and
their certificate, the pod's security, RBAC, values validation (schema and ``fail``), NOTES,
and the files generated from the chart (deploy/, values.schema.json, README) or consistent with
it (Dockerfile).
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import ssl
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from archwarden import settings
from tests.chart.helm import (
    CHART,
    MUTATING_POLICY_API,
    NAMESPACE,
    RELEASE,
    REPO_ROOT,
    HelmError,
    find_helm,
    helm,
    render,
    set_args,
)

pytestmark = pytest.mark.skipif(
    find_helm() is None,
    reason="helm not found: set ARCHWARDEN_HELM, or build it with hack/cluster/build.sh "
    "(~/.cache/archwarden/bin/helm-*/helm); make test builds it first",
)

FULLNAME = f"{RELEASE}-archwarden"
# What the chart tells archwarden to listen on inside the pod.
ALL_INTERFACES = "0.0.0.0"  # noqa: S104
CREATE_UPDATE = ["CREATE", "UPDATE"]
# handler id (= URL path) -> API group, version, resources, operations.
VALIDATING = {
    "validate-deployments": ("apps", "v1", ["deployments"], CREATE_UPDATE),
    "validate-statefulsets": ("apps", "v1", ["statefulsets"], CREATE_UPDATE),
    "validate-daemonsets": ("apps", "v1", ["daemonsets"], CREATE_UPDATE),
    "validate-replicasets": ("apps", "v1", ["replicasets"], CREATE_UPDATE),
    "validate-jobs": ("batch", "v1", ["jobs"], CREATE_UPDATE),
    "validate-cronjobs": ("batch", "v1", ["cronjobs"], CREATE_UPDATE),
    "validate-pods": ("", "v1", ["pods"], CREATE_UPDATE),
    "validate-ephemeralcontainers": ("", "v1", ["pods/ephemeralcontainers"], ["UPDATE"]),
}
MUTATING = {"mutate-pods": ("", "v1", ["pods"], ["CREATE"])}
REQUIRED_LABELS = (
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/managed-by",
)
# Value sets that together render every template and every branch of the certificate logic.
MODES: dict[str, dict[str, Any]] = {
    "defaults": {},
    "cert-manager": {"certManager.enabled": True},
    "cert-manager-issuer": {
        "certManager.enabled": True,
        "certManager.issuerRef.name": "corp-ca",
        "certManager.issuerRef.kind": "ClusterIssuer",
    },
    "everything": {
        "tls.existingSecret": "corp-tls",
        "tls.caBundle": base64.b64encode(b"-----BEGIN CERTIFICATE-----").decode(),
        "podDisruptionBudget.enabled": True,
        "serviceMonitor.enabled": True,
        "rbac.pullSecrets.scope": "namespaces",
        "rbac.pullSecrets.namespaces": ["team-a", "team-b"],
        "config.globalPullSecret": "infra/regcred",
        "config.capacity.clusterAPI.namespaces": ["capi-system"],
        "config.excludedNamespaces": ["monitoring"],
        "config.mutate": False,
        "podAntiAffinity": "hard",
        "commonLabels.team": "platform",
    },
    # Client authentication of the API server and a NetworkPolicy (issue item 14).
    "locked-down": {
        "webhook.clientAuth.enabled": True,
        "webhook.clientAuth.caBundle": base64.b64encode(
            b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
        ).decode(),
        "webhook.clientAuth.names": ["kube-apiserver", "aw-archwarden.archwarden-system.svc"],
        "networkPolicy.enabled": True,
        "networkPolicy.webhookFrom[0].ipBlock.cidr": "10.0.0.10/32",
        "commonLabels.team": "platform",
    },
    # A cluster that serves MutatingAdmissionPolicy (MODE_API_VERSIONS): the scheduling-gate
    # policy and its binding, with the skip rule that reads the namespace's labels.
    "policy-gates": {
        "schedulingGates.mode": "policy",
        "config.skip.allowed": "labelledNamespaces",
        "prometheusRule.enabled": True,
        "commonLabels.team": "platform",
    },
}
# What helm is told the cluster serves (--api-versions), for the modes that need more than the
# built-in group versions.
MODE_API_VERSIONS: dict[str, tuple[str, ...]] = {"policy-gates": (MUTATING_POLICY_API,)}


def render_mode(mode: str, **kwargs: Any) -> list[dict[str, Any]]:
    return render(MODES[mode], api_versions=MODE_API_VERSIONS.get(mode, ()), **kwargs)


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [obj for obj in objects if obj["kind"] == kind]


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = by_kind(objects, kind)
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def selector_matches(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """Kubernetes label-selector semantics (matchLabels AND every matchExpression)."""
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions", []):
        key, operator, values = expression["key"], expression["operator"], expression.get("values")
        present = key in labels
        matched = {
            "In": present and labels.get(key) in (values or []),
            "NotIn": not present or labels.get(key) not in (values or []),
            "Exists": present,
            "DoesNotExist": not present,
        }[operator]
        if not matched:
            return False
    return True


@pytest.fixture(scope="module")
def objects() -> list[dict[str, Any]]:
    return render()


@pytest.fixture(scope="module")
def deployment(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return one(objects, "Deployment")


# --- chart hygiene ---------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["defaults", "cert-manager", "everything", "locked-down"])
def test_lint_strict(mode: str) -> None:
    args = ["lint", "--strict", str(CHART), "--namespace", NAMESPACE]
    for key, value in MODES[mode].items():
        if isinstance(value, list):
            value = "{" + ",".join(value) + "}"
        args += ["--set", f"{key}={str(value).lower() if isinstance(value, bool) else value}"]
    output = helm(*args)
    assert "0 chart(s) failed" in output


@pytest.mark.parametrize("mode", list(MODES))
def test_every_object_has_the_standard_labels(mode: str) -> None:
    rendered = render_mode(mode)
    assert rendered
    for obj in rendered:
        labels = obj["metadata"].get("labels", {})
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        for label in REQUIRED_LABELS:
            assert label in labels, f"{where} lacks {label}"
        assert labels["app.kubernetes.io/name"] == "archwarden"
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert all(len(str(value)) <= 63 for value in labels.values()), where
        if "commonLabels.team" in MODES[mode]:
            assert labels["team"] == "platform"
    pod_labels = one(rendered, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert all(label in pod_labels for label in REQUIRED_LABELS)


@pytest.mark.parametrize("mode", list(MODES))
def test_namespaced_objects_carry_the_release_namespace(mode: str) -> None:
    cluster_scoped = {
        "ClusterRole",
        "ClusterRoleBinding",
        "ValidatingWebhookConfiguration",
        "MutatingWebhookConfiguration",
        "MutatingAdmissionPolicy",
        "MutatingAdmissionPolicyBinding",
    }
    for obj in render_mode(mode):
        namespace = obj["metadata"].get("namespace")
        if obj["kind"] in cluster_scoped:
            assert namespace is None
        elif obj["kind"] == "RoleBinding" and not obj["metadata"]["name"].endswith("-leader"):
            # Pull secrets and Cluster API node groups, read in the namespaces named; the
            # leader Lease's binding is in the release namespace.
            assert namespace in {"team-a", "team-b", "infra", "capi-system"}
        else:
            assert namespace == NAMESPACE, f"{obj['kind']}/{obj['metadata']['name']}"


def test_selector_labels_select_the_pods_and_nothing_more(deployment: dict[str, Any]) -> None:
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector == {
        "app.kubernetes.io/name": "archwarden",
        "app.kubernetes.io/instance": RELEASE,
    }
    assert selector_matches(
        {"matchLabels": selector}, deployment["spec"]["template"]["metadata"]["labels"]
    )


def test_long_release_names_are_truncated_keeping_suffixes() -> None:
    release = "r" * 53  # helm caps release names at 53 characters
    for mode in ("defaults", "cert-manager", "policy-gates"):
        rendered = render_mode(mode, release=release)
        names = {obj["kind"] + "/" + obj["metadata"]["name"] for obj in rendered}
        for obj in rendered:
            name = obj["metadata"]["name"]
            assert len(name) <= 63 and not name.endswith("-"), name
        assert any(name.startswith("Secret/") and name.endswith("-tls") for name in names) or (
            mode == "cert-manager"
        )
        if mode == "cert-manager":
            assert any(n.startswith("Certificate/") and n.endswith("-serving") for n in names)
            assert any(n.startswith("Certificate/") and n.endswith("-ca") for n in names)


@pytest.mark.parametrize("mode", list(MODES))
def test_no_unresolved_template_values(mode: str) -> None:
    text = yaml.safe_dump_all(render_mode(mode))
    assert "<no value>" not in text
    assert "%!" not in text  # printf verb errors


# --- admission webhooks ----------------------------------------------------------------------


def _webhooks(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    configuration = one(objects, kind)
    hooks = configuration["webhooks"]
    result = {hook["clientConfig"]["service"]["path"].lstrip("/"): hook for hook in hooks}
    assert len(result) == len(hooks), "two webhooks share a path"
    return result


def test_webhook_paths_are_exactly_the_handler_ids(objects: list[dict[str, Any]]) -> None:
    assert set(_webhooks(objects, "ValidatingWebhookConfiguration")) == set(VALIDATING)
    assert set(_webhooks(objects, "MutatingWebhookConfiguration")) == set(MUTATING)


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("ValidatingWebhookConfiguration", VALIDATING),
        ("MutatingWebhookConfiguration", MUTATING),
    ],
)
def test_webhooks_point_at_the_service_with_safe_settings(
    objects: list[dict[str, Any]],
    kind: str,
    expected: dict[str, tuple[str, str, list[str], list[str]]],
) -> None:
    service = one(objects, "Service")
    https = next(port for port in service["spec"]["ports"] if port["name"] == "https")
    container = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    webhook_port = next(p for p in container["ports"] if p["name"] == "webhook")["containerPort"]
    assert https["port"] == 443 and https["targetPort"] == "webhook" and webhook_port == 9443
    names = set()
    for handler_id, hook in _webhooks(objects, kind).items():
        group, version, resources, operations = expected[handler_id]
        assert hook["clientConfig"]["service"] == {
            "name": service["metadata"]["name"],
            "namespace": NAMESPACE,
            "path": f"/{handler_id}",
            "port": 443,
        }
        assert "url" not in hook["clientConfig"]
        assert hook["rules"] == [
            {
                "apiGroups": [group],
                "apiVersions": [version],
                "resources": resources,
                "operations": operations,
                "scope": "Namespaced",
            }
        ]
        # The handlers post Events (kopf side_effects=True), never on dry runs.
        assert hook["sideEffects"] == "NoneOnDryRun"
        assert hook["matchPolicy"] == "Equivalent"
        assert hook["admissionReviewVersions"] == ["v1"]
        assert hook["timeoutSeconds"] == 5
        assert hook["failurePolicy"] == "Ignore"
        # The API server wants at least three DNS labels in a webhook name.
        assert hook["name"].startswith(f"{handler_id}.") and hook["name"].count(".") >= 2
        names.add(hook["name"])
    assert len(names) == len(expected)


def test_webhooks_match_the_kopf_handlers() -> None:
    # The chart and archwarden.handlers must agree: a webhook without a handler (or a handler
    # whose subresource differs) is answered "allowed" by kopf without any check. Rendered with
    # every optional webhook on (workload template mutation), so each handler has its webhook.
    objects = render({"config.mutateWorkloadTemplates": True})
    kopf = pytest.importorskip("kopf")
    pytest.importorskip("archwarden.handlers")
    registered = {}
    for handler in kopf.get_default_registry()._webhooks.get_all_handlers():
        selector = handler.selector
        plural = selector.any_name + (f"/{handler.subresource}" if handler.subresource else "")
        registered[handler.id] = (
            handler.reason.value,
            (selector.group or "", selector.version, [plural], list(handler.operations)),
        )
    rendered = {}
    for kind, reason in (
        ("ValidatingWebhookConfiguration", "validating"),
        ("MutatingWebhookConfiguration", "mutating"),
    ):
        for handler_id, hook in _webhooks(objects, kind).items():
            (rule,) = hook["rules"]
            rendered[handler_id] = (
                reason,
                (
                    rule["apiGroups"][0],
                    rule["apiVersions"][0],
                    rule["resources"],
                    rule["operations"],
                ),
            )
    assert rendered == registered


def test_webhooks_skip_system_release_and_listed_namespaces() -> None:
    rendered = render({"config.excludedNamespaces": ["monitoring", "kube-system"]})
    config = yaml.safe_load(one(rendered, "ConfigMap")["data"]["config.yaml"])
    assert config["excludedNamespaces"] == ["kube-system", NAMESPACE, "monitoring"]
    for kind in ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"):
        for hook in _webhooks(rendered, kind).values():
            selector = hook["namespaceSelector"]
            assert selector["matchExpressions"][0] == {
                "key": "kubernetes.io/metadata.name",
                "operator": "NotIn",
                "values": ["kube-system", NAMESPACE, "monitoring"],
            }
            for name in ("kube-system", NAMESPACE, "monitoring"):
                assert not selector_matches(selector, {"kubernetes.io/metadata.name": name})
            assert selector_matches(selector, {"kubernetes.io/metadata.name": "default"})


def test_extra_namespace_expressions_are_anded() -> None:
    rendered = render(
        {
            "webhook.matchExpressions[0].key": "archwarden/skip",
            "webhook.matchExpressions[0].operator": "DoesNotExist",
        }
    )
    for hook in _webhooks(rendered, "ValidatingWebhookConfiguration").values():
        selector = hook["namespaceSelector"]
        assert selector_matches(selector, {"kubernetes.io/metadata.name": "apps"})
        labels = {"kubernetes.io/metadata.name": "apps", "archwarden/skip": "true"}
        assert not selector_matches(selector, labels)


def test_no_object_selector_lets_a_label_bypass_the_webhooks(
    objects: list[dict[str, Any]],
) -> None:
    # A label is the workload author's to set: an objectSelector on archwarden's name label let
    # any pod skip every check. archwarden's own pods are kept out by the namespaceSelector,
    # since they live in the release namespace.
    deployment = one(objects, "Deployment")
    assert deployment["metadata"]["namespace"] == NAMESPACE
    for kind in ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"):
        for hook in _webhooks(objects, kind).values():
            assert "objectSelector" not in hook
            assert not selector_matches(
                hook["namespaceSelector"], {"kubernetes.io/metadata.name": NAMESPACE}
            )


def test_failure_and_reinvocation_policies_are_configurable() -> None:
    rendered = render(
        {
            "webhook.validating.failurePolicy": "Fail",
            "webhook.mutating.reinvocationPolicy": "IfNeeded",
            "webhook.timeoutSeconds": 10,
            "webhook.budgetSeconds": 8,
        }
    )
    for hook in _webhooks(rendered, "ValidatingWebhookConfiguration").values():
        assert hook["failurePolicy"] == "Fail" and hook["timeoutSeconds"] == 10
    (mutating,) = _webhooks(rendered, "MutatingWebhookConfiguration").values()
    assert mutating["failurePolicy"] == "Ignore"
    assert mutating["reinvocationPolicy"] == "IfNeeded"
    config = yaml.safe_load(one(rendered, "ConfigMap")["data"]["config.yaml"])
    assert config["webhook"]["timeoutSeconds"] == 10 and config["webhook"]["budgetSeconds"] == 8


def test_no_mutating_webhook_when_mutation_and_gates_are_off() -> None:
    off = {"config.mutate": False, "schedulingGates.mode": "off"}
    assert not by_kind(render(off), "MutatingWebhookConfiguration")
    # With gates, the pod webhook stays: it removes the gate of a pod it has decided.
    (gated,) = by_kind(render({"config.mutate": False}), "MutatingWebhookConfiguration")
    assert [w["name"].split(".")[0] for w in gated["webhooks"]] == ["mutate-pods"]


# --- the serving certificate: one owner for caBundle ------------------------------------------


def _ca_bundles(objects: list[dict[str, Any]]) -> set[str | None]:
    bundles: set[str | None] = set()
    for kind in ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"):
        for configuration in by_kind(objects, kind):
            for hook in configuration["webhooks"]:
                bundles.add(hook["clientConfig"].get("caBundle"))
    return bundles


def _mounted_secret(deployment: dict[str, Any]) -> str:
    volume = next(
        v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "config"
    )
    (secret,) = [s["secret"] for s in volume["projected"]["sources"] if "secret" in s]
    assert {item["key"] for item in secret["items"]} == {"tls.crt", "tls.key"}
    return str(secret["name"])


def test_generated_ca_signs_the_served_certificate(
    objects: list[dict[str, Any]], tmp_path: Path
) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    secret = one(objects, "Secret")
    assert secret["type"] == "kubernetes.io/tls"
    assert _mounted_secret(one(objects, "Deployment")) == secret["metadata"]["name"]
    (bundle,) = _ca_bundles(objects)
    assert bundle == secret["data"]["ca.crt"]

    ca = x509.load_pem_x509_certificate(base64.b64decode(bundle))
    leaf = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))
    key = serialization.load_pem_private_key(base64.b64decode(secret["data"]["tls.key"]), None)
    assert leaf.issuer == ca.subject
    assert leaf.signature_hash_algorithm is not None
    ca_key = ca.public_key()
    assert isinstance(ca_key, ec.EllipticCurvePublicKey)
    ca_key.verify(
        leaf.signature, leaf.tbs_certificate_bytes, ec.ECDSA(leaf.signature_hash_algorithm)
    )
    assert key.public_key() == leaf.public_key()
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert f"{FULLNAME}.{NAMESPACE}.svc" in names.get_values_for_type(x509.DNSName)
    # The consumer is Python's ssl (kopf's aiohttp server): it must load the pair as mounted.
    for name in ("tls.crt", "tls.key"):
        (tmp_path / name).write_bytes(base64.b64decode(secret["data"][name]))
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(tmp_path / "tls.crt", tmp_path / "tls.key")


def test_cert_manager_owns_the_certificate_and_the_ca_bundle() -> None:
    rendered = render(MODES["cert-manager"])
    assert not by_kind(rendered, "Secret"), "the chart must not write the Secret cert-manager owns"
    assert _ca_bundles(rendered) == {None}, "the chart must not write caBundle next to cainjector"
    certificates = {c["metadata"]["name"]: c for c in by_kind(rendered, "Certificate")}
    serving = certificates[f"{FULLNAME}-serving"]
    assert serving["spec"]["secretName"] == _mounted_secret(one(rendered, "Deployment"))
    assert f"{FULLNAME}.{NAMESPACE}.svc" in serving["spec"]["dnsNames"]
    for kind in ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"):
        annotations = one(rendered, kind)["metadata"]["annotations"]
        assert annotations["cert-manager.io/inject-ca-from"] == f"{NAMESPACE}/{FULLNAME}-serving"
    # The chart's own CA chain: self-signed root -> CA Issuer -> serving certificate.
    issuers = {i["metadata"]["name"]: i for i in by_kind(rendered, "Issuer")}
    assert serving["spec"]["issuerRef"]["name"] in issuers
    assert certificates[f"{FULLNAME}-ca"]["spec"]["isCA"] is True


def test_cert_manager_with_an_existing_issuer_creates_no_issuers() -> None:
    rendered = render(MODES["cert-manager-issuer"])
    assert not by_kind(rendered, "Issuer")
    (serving,) = by_kind(rendered, "Certificate")
    assert serving["spec"]["issuerRef"] == {
        "name": "corp-ca",
        "kind": "ClusterIssuer",
        "group": "cert-manager.io",
    }


def test_existing_secret_is_served_with_the_given_ca_bundle() -> None:
    rendered = render(MODES["everything"])
    assert not by_kind(rendered, "Secret") and not by_kind(rendered, "Certificate")
    assert _ca_bundles(rendered) == {MODES["everything"]["tls.caBundle"]}
    assert _mounted_secret(one(rendered, "Deployment")) == "corp-tls"


# --- the pod ---------------------------------------------------------------------------------


def test_pod_security_defaults(deployment: dict[str, Any]) -> None:
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 65532,
        "runAsGroup": 65532,
        "fsGroup": 65532,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    (container,) = pod["containers"]
    context = container["securityContext"]
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert context["runAsNonRoot"] is True and context["runAsUser"] == 65532
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    assert "privileged" not in context
    assert pod["automountServiceAccountToken"] is True
    assert pod["serviceAccountName"] == FULLNAME
    assert not pod.get("hostNetwork") and not pod.get("hostPID")


def test_pod_resources_probes_and_volumes(deployment: dict[str, Any]) -> None:
    assert deployment["spec"]["replicas"] == 2
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert set(container["resources"]) == {"requests", "limits"}
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    assert "memory" in container["resources"]["limits"]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"webhook": 9443, "metrics": 8080}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert container["args"] == ["run", "--config", "/etc/archwarden/config.yaml"]

    mounts = {mount["mountPath"]: mount for mount in container["volumeMounts"]}
    assert set(mounts) == {"/etc/archwarden", "/tmp"}
    assert all("subPath" not in mount for mount in mounts.values()), "subPath never updates"
    assert mounts["/etc/archwarden"]["readOnly"] is True
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]]
    sources = volumes["config"]["projected"]["sources"]
    paths = {item["path"] for source in sources for item in next(iter(source.values()))["items"]}
    assert paths == {"config.yaml", "tls/tls.crt", "tls/tls.key"}


def test_config_file_matches_mounts_and_ports(objects: list[dict[str, Any]]) -> None:
    config = yaml.safe_load(one(objects, "ConfigMap")["data"]["config.yaml"])
    assert config["mode"] == "enforce" and config["failurePolicy"] == "open"
    assert config["webhook"] == {
        "port": 9443,
        "address": ALL_INTERFACES,
        "certFile": "/etc/archwarden/tls/tls.crt",
        "keyFile": "/etc/archwarden/tls/tls.key",
        "timeoutSeconds": 5,
        "budgetSeconds": 3,
    }
    assert config["metrics"] == {"port": 8080, "address": ALL_INTERFACES}


def test_config_file_is_accepted_by_archwardens_loader(tmp_path: Path) -> None:
    settings = pytest.importorskip("archwarden.settings")
    rendered = render(
        {
            "config.mode": "warn",
            "config.preferredArchitectures.arm64": 50,
            "config.registries.registry\\.local:5000.insecure": True,
            "config.registries.registry\\.local:5000.mirrors": ["mirror.local"],
            "config.globalPullSecret": "infra/regcred",
        }
    )
    path = tmp_path / "config.yaml"
    path.write_text(one(rendered, "ConfigMap")["data"]["config.yaml"])
    loaded = settings.load(path)
    assert loaded.kube == settings.KubeSettings()  # the chart's defaults are archwarden's
    assert loaded.mode == "warn"
    assert loaded.webhook.port == 9443 and loaded.metrics.port == 8080
    assert loaded.webhook.cert_file == "/etc/archwarden/tls/tls.crt"
    assert loaded.global_pull_secret == "infra/regcred"
    assert NAMESPACE in loaded.excluded_namespaces


def test_config_change_rolls_the_pods(deployment: dict[str, Any]) -> None:
    before = deployment["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
    changed = one(render({"config.mode": "audit"}), "Deployment")
    assert changed["spec"]["template"]["metadata"]["annotations"]["checksum/config"] != before


def test_anti_affinity_and_topology_spread() -> None:
    soft = one(render(), "Deployment")["spec"]["template"]["spec"]["affinity"]
    assert "preferredDuringSchedulingIgnoredDuringExecution" in soft["podAntiAffinity"]
    hard = one(render({"podAntiAffinity": "hard"}), "Deployment")["spec"]["template"]["spec"]
    (term,) = hard["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    # none: no pod anti-affinity; the platform node affinity is always there.
    none = one(render({"podAntiAffinity": "none"}), "Deployment")["spec"]["template"]["spec"]
    assert set(none["affinity"]) == {"nodeAffinity"}
    spread = one(
        render(
            {
                "topologySpreadConstraints[0].maxSkew": 1,
                "topologySpreadConstraints[0].topologyKey": "topology.kubernetes.io/zone",
                "topologySpreadConstraints[0].whenUnsatisfiable": "ScheduleAnyway",
            }
        ),
        "Deployment",
    )["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert spread[0]["labelSelector"]["matchLabels"]["app.kubernetes.io/instance"] == RELEASE


def test_toggles_are_off_by_default(objects: list[dict[str, Any]]) -> None:
    kinds = {obj["kind"] for obj in objects}
    assert not kinds & {"ServiceMonitor", "Certificate", "Issuer"}
    rendered = render(MODES["everything"])
    pdb = one(rendered, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    assert (
        pdb["spec"]["selector"]["matchLabels"]
        == one(rendered, "Deployment")["spec"]["selector"]["matchLabels"]
    )
    monitor = one(rendered, "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"


def test_client_auth_and_network_policy_are_absent_by_default(
    objects: list[dict[str, Any]], deployment: dict[str, Any]
) -> None:
    assert not by_kind(objects, "NetworkPolicy")
    config = yaml.safe_load(one(objects, "ConfigMap")["data"]["config.yaml"])
    assert "clientCAFile" not in config["webhook"] and "clientNames" not in config["webhook"]
    sources = deployment["spec"]["template"]["spec"]["volumes"][0]["projected"]["sources"]
    assert [source for source in sources if "configMap" in source] == [
        {
            "configMap": {
                "name": FULLNAME,
                "items": [{"key": "config.yaml", "path": "config.yaml"}],
            }
        }
    ]


def _config_maps(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {obj["metadata"]["name"]: obj for obj in by_kind(objects, "ConfigMap")}


def _client_ca_source(deployment: dict[str, Any]) -> dict[str, Any]:
    volumes = {
        volume["name"]: volume for volume in deployment["spec"]["template"]["spec"]["volumes"]
    }
    (source,) = [
        source["configMap"]
        for source in volumes["config"]["projected"]["sources"]
        if "configMap" in source and source["configMap"]["name"] != FULLNAME
    ]
    return source


def test_client_auth_mounts_the_ca_and_configures_archwarden(tmp_path: Path) -> None:
    settings = pytest.importorskip("archwarden.settings")
    from tests.support.pki import make_ca

    pem = make_ca("api server client CA").pem
    values = {
        **MODES["locked-down"],
        "webhook.clientAuth.caBundle": base64.b64encode(pem).decode(),
    }
    rendered = render(values)
    maps = _config_maps(rendered)
    ca_map = maps[f"{FULLNAME}-client-ca"]
    assert ca_map["data"]["ca.crt"].strip() == pem.decode().strip()
    source = _client_ca_source(one(rendered, "Deployment"))
    assert source == {
        "name": f"{FULLNAME}-client-ca",
        "items": [{"key": "ca.crt", "path": "client-ca/ca.crt"}],
    }
    # The mount path of the projected volume plus the item path is what archwarden reads.
    path = tmp_path / "config.yaml"
    path.write_text(maps[FULLNAME]["data"]["config.yaml"])
    loaded = settings.load(path)
    assert loaded.webhook.client_ca_file == "/etc/archwarden/client-ca/ca.crt"
    assert loaded.webhook.client_names == (
        "kube-apiserver",
        "aw-archwarden.archwarden-system.svc",
    )


def test_client_auth_can_use_an_existing_config_map() -> None:
    rendered = render(
        {"webhook.clientAuth.enabled": True, "webhook.clientAuth.existingConfigMap": "api-ca"}
    )
    assert set(_config_maps(rendered)) == {FULLNAME}  # no CA ConfigMap of the chart's own
    source = _client_ca_source(one(rendered, "Deployment"))
    assert source["name"] == "api-ca"
    assert source["items"] == [{"key": "ca.crt", "path": "client-ca/ca.crt"}]
    config = yaml.safe_load(_config_maps(rendered)[FULLNAME]["data"]["config.yaml"])
    assert config["webhook"]["clientCAFile"] == "/etc/archwarden/client-ca/ca.crt"
    assert config["webhook"]["clientNames"] == []


def test_network_policy_admits_only_the_listed_peers() -> None:
    rendered = render(MODES["locked-down"])
    policy = one(rendered, "NetworkPolicy")
    deployment = one(rendered, "Deployment")
    assert policy["metadata"]["namespace"] == NAMESPACE
    assert policy["spec"]["podSelector"] == deployment["spec"]["selector"]
    assert policy["spec"]["policyTypes"] == ["Ingress"]  # egress left open
    assert "egress" not in policy["spec"]
    webhook, metrics = policy["spec"]["ingress"]
    assert webhook == {
        "ports": [{"protocol": "TCP", "port": 9443}],
        "from": [{"ipBlock": {"cidr": "10.0.0.10/32"}}],
    }
    assert metrics == {
        "ports": [{"protocol": "TCP", "port": 8080}],
        "from": [{"namespaceSelector": {"matchLabels": {"archwarden.io/metrics": "allowed"}}}],
    }


def test_network_policy_egress_and_closed_metrics_port() -> None:
    rendered = render(
        {
            **MODES["locked-down"],
            "webhook.port": 10443,
            "networkPolicy.metricsFrom": None,  # --set cannot give an empty list
            "networkPolicy.egress[0].ports[0].port": 53,
            "networkPolicy.egress[0].ports[0].protocol": "UDP",
        }
    )
    spec = one(rendered, "NetworkPolicy")["spec"]
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    assert spec["egress"] == [{"ports": [{"port": 53, "protocol": "UDP"}]}]
    (webhook,) = spec["ingress"]  # an empty metricsFrom: no pod may reach the metrics port
    assert webhook["ports"] == [{"protocol": "TCP", "port": 10443}]


def test_two_replicas_get_a_disruption_budget_one_does_not(objects: list[dict[str, Any]]) -> None:
    pdb = one(objects, "PodDisruptionBudget")
    assert pdb["spec"] == {
        "selector": one(objects, "Deployment")["spec"]["selector"],
        "minAvailable": 1,
    }
    # A budget of one pod would block every node drain.
    assert not by_kind(render({"replicaCount": 1}), "PodDisruptionBudget")


def test_a_stopping_replica_keeps_serving_for_the_shutdown_delay(
    deployment: dict[str, Any],
) -> None:
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    # The kubelet's own sleep: the image has no shell.
    assert container["lifecycle"] == {"preStop": {"sleep": {"seconds": 5}}}
    assert pod["terminationGracePeriodSeconds"] > 5
    strategy = deployment["spec"]["strategy"]["rollingUpdate"]
    assert strategy == {"maxSurge": 1, "maxUnavailable": 0}
    off = one(render({"shutdownDelaySeconds": 0}), "Deployment")
    assert "lifecycle" not in off["spec"]["template"]["spec"]["containers"][0]


def test_uninstall_removes_the_webhook_configurations_first(objects: list[dict[str, Any]]) -> None:
    hooks = [o for o in objects if "helm.sh/hook" in (o["metadata"].get("annotations") or {})]
    assert sorted(o["kind"] for o in hooks) == [
        "ClusterRole",
        "ClusterRoleBinding",
        "Job",
        "ServiceAccount",
    ]
    for hook in hooks:
        annotations = hook["metadata"]["annotations"]
        assert annotations["helm.sh/hook"] == "pre-delete"
        assert annotations["helm.sh/hook-delete-policy"] == "before-hook-creation,hook-succeeded"
    weights = {o["kind"]: int(o["metadata"]["annotations"]["helm.sh/hook-weight"]) for o in hooks}
    assert weights["Job"] > weights["ClusterRoleBinding"]  # RBAC exists before the Job runs
    role = next(o for o in hooks if o["kind"] == "ClusterRole")
    # The hook may delete these configurations, the policy and its binding, and (scheduling
    # gates on: schedulingGates.mode auto is webhook offline) release gated pods; nothing else.
    assert role["rules"] == [UNINSTALL_DELETE_RULE, *UNINSTALL_UNGATE_RULES]
    assert one(objects, "ValidatingWebhookConfiguration")["metadata"]["name"] == FULLNAME
    assert one(objects, "MutatingWebhookConfiguration")["metadata"]["name"] == FULLNAME
    job = next(o for o in hooks if o["kind"] == "Job")
    pod = job["spec"]["template"]["spec"]
    assert pod["containers"][0]["args"] == ["remove-webhooks", FULLNAME, "--ungate"]
    assert pod["serviceAccountName"] == role["metadata"]["name"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
    assert not [o for o in render({"webhook.removeOnUninstall": False}) if o["kind"] == "Job"]


UNINSTALL_DELETE_RULE = {
    "apiGroups": ["admissionregistration.k8s.io"],
    "resources": [
        "validatingwebhookconfigurations",
        "mutatingwebhookconfigurations",
        "mutatingadmissionpolicies",
        "mutatingadmissionpolicybindings",
    ],
    "resourceNames": [FULLNAME],
    "verbs": ["delete"],
}
# `remove-webhooks NAME --ungate`: every pod still gated, released with an Event on it.
UNINSTALL_UNGATE_RULES = [
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "patch"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
]


# --- RBAC ------------------------------------------------------------------------------------

READ = {"get", "list", "watch"}
REPORTS = {"get", "list", "create", "update", "delete"}
ALLOWED_RULES = {
    ("", "nodes"): READ,
    ("", "namespaces"): READ,
    # Workloads and pods are kept by list-and-watch streams (workload_store, pod_store).
    ("apps", "deployments"): READ,
    ("apps", "statefulsets"): READ,
    ("apps", "daemonsets"): READ,
    ("apps", "replicasets"): READ,
    ("batch", "jobs"): READ,
    ("batch", "cronjobs"): READ,
    ("", "serviceaccounts"): {"get"},
    # patch: releasing the pods archwarden's scheduling gate holds (schedulingGates.mode not off;
    # auto is webhook offline).
    ("", "pods"): READ | {"patch"},
    ("", "secrets"): {"get"},
    ("", "events"): {"create"},
    ("apiextensions.k8s.io", "customresourcedefinitions"): {"list", "watch"},
    # Provisionable capacity (config.capacity.karpenter, on by default). Cluster API node
    # groups are read only in config.capacity.clusterAPI.namespaces, none by default.
    ("karpenter.sh", "nodepools"): READ,
    # Policy reports after each audit (config.reports.enabled, on by default).
    ("openreports.io", "reports"): REPORTS,
    ("openreports.io", "clusterreports"): REPORTS,
}


def without_hooks(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What the release keeps while installed (hooks exist only around helm uninstall)."""
    return [o for o in objects if "helm.sh/hook" not in (o["metadata"].get("annotations") or {})]


def _granted(
    objects: list[dict[str, Any]], kind: str = "ClusterRole"
) -> dict[tuple[str, str], set[str]]:
    granted: dict[tuple[str, str], set[str]] = {}
    for role in by_kind(without_hooks(objects), kind):
        for rule in role["rules"]:
            assert "nonResourceURLs" not in rule and "resourceNames" not in rule
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    granted.setdefault((group, resource), set()).update(rule["verbs"])
    return granted


@pytest.mark.parametrize("mode", list(MODES))
def test_rbac_has_no_wildcards(mode: str) -> None:
    for obj in render_mode(mode):
        if obj["kind"] in {"ClusterRole", "Role"}:
            for rule in obj["rules"]:
                for field in ("apiGroups", "resources", "verbs"):
                    assert not any("*" in item for item in rule[field]), (obj["metadata"], rule)


def test_rbac_is_least_privilege(objects: list[dict[str, Any]]) -> None:
    granted = _granted(objects)
    assert granted == ALLOWED_RULES
    installed = without_hooks(objects)
    (binding,) = by_kind(installed, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == one(installed, "ClusterRole")["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": FULLNAME, "namespace": NAMESPACE}
    ]


def test_policy_report_access_follows_reports_enabled() -> None:
    rendered = render({"config.reports.enabled": False})
    granted = _granted(rendered)
    assert ("openreports.io", "reports") not in granted
    assert ("openreports.io", "clusterreports") not in granted
    config = yaml.safe_load(one(rendered, "ConfigMap")["data"]["config.yaml"])
    assert config["reports"] == {"enabled": False}
    assert settings.from_mapping(config).reports.enabled is False


def test_pull_secret_access_can_be_restricted() -> None:
    rendered = without_hooks(render(MODES["everything"]))
    roles = {role["metadata"]["name"]: role for role in by_kind(rendered, "ClusterRole")}
    main = _granted([roles.pop(FULLNAME)])
    assert ("", "secrets") not in main
    secrets_role = roles[f"{FULLNAME}-pull-secrets"]
    assert _granted([secrets_role]) == {("", "secrets"): {"get"}}
    bindings = [
        b
        for b in by_kind(rendered, "RoleBinding")
        if b["roleRef"]["name"] == secrets_role["metadata"]["name"]
    ]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["infra", "team-a", "team-b"]
    assert {b["roleRef"]["name"] for b in bindings} == {secrets_role["metadata"]["name"]}

    nothing = render({"rbac.pullSecrets.scope": "none", "rbac.crdDiscovery": False})
    granted = _granted(nothing)
    assert ("", "secrets") not in granted
    assert ("apiextensions.k8s.io", "customresourcedefinitions") not in granted
    assert not namespace_grants(nothing)


def namespace_grants(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """RoleBindings of a ClusterRole in other namespaces (pull secrets, Cluster API node
    groups); the leader Lease's Role and binding, in the release namespace, are apart."""
    return [b for b in by_kind(objects, "RoleBinding") if b["roleRef"]["kind"] == "ClusterRole"]


CAPI_READ = {
    ("cluster.x-k8s.io", "machinedeployments"): READ,
    ("cluster.x-k8s.io", "machinesets"): READ,
    ("cluster.x-k8s.io", "machinepools"): READ,
}


def _capi(granted: Mapping[tuple[str, str], set[str]]) -> dict[tuple[str, str], set[str]]:
    return {key: verbs for key, verbs in granted.items() if key[0] == "cluster.x-k8s.io"}


def test_capacity_sources_switch_their_rbac_and_config() -> None:
    granted = _granted(render({"config.capacity.karpenter.enabled": False}))
    assert ("karpenter.sh", "nodepools") not in granted
    named = {"config.capacity.clusterAPI.namespaces": ["capi"]}
    rendered = render({**named, "config.capacity.clusterAPI.enabled": False})
    granted = _granted(rendered)
    assert ("karpenter.sh", "nodepools") in granted
    assert not _capi(granted)
    assert not namespace_grants(rendered)
    config = yaml.safe_load(one(rendered, "ConfigMap")["data"]["config.yaml"])
    assert config["capacity"]["clusterAPI"]["enabled"] is False
    assert config["capacity"]["karpenter"]["defaultArchitectures"] == ["amd64", "arm64"]


def test_cluster_api_access_follows_the_counted_namespaces() -> None:
    # The default names none: archwarden reads no node group, and may read none.
    default = without_hooks(render())
    assert not _capi(_granted(default))
    assert not namespace_grants(default)
    # Named namespaces: a RoleBinding in each (once, however often named), nothing wider.
    rendered = without_hooks(
        render({"config.capacity.clusterAPI.namespaces": ["infra", "capi", "infra"]})
    )
    roles = {role["metadata"]["name"]: role for role in by_kind(rendered, "ClusterRole")}
    assert not _capi(_granted([roles.pop(FULLNAME)]))
    capi_role = roles.pop(f"{FULLNAME}-cluster-api")
    assert _granted([capi_role]) == CAPI_READ
    bindings = namespace_grants(rendered)
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["capi", "infra"]
    for binding in bindings:
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": capi_role["metadata"]["name"],
        }
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": FULLNAME, "namespace": NAMESPACE}
        ]
    assert not _granted(list(roles.values()))  # no other role reads them
    config = yaml.safe_load(one(rendered, "ConfigMap")["data"]["config.yaml"])
    loaded = settings.from_mapping(config).capacity.cluster_api
    assert loaded.namespaces == ("infra", "capi", "infra")
    # "*": every namespace counts, so the cluster-wide role reads them.
    everywhere = without_hooks(render({"config.capacity.clusterAPI.namespaces": ["*"]}))
    assert _capi(_granted([r for r in by_kind(everywhere, "ClusterRole")])) == CAPI_READ
    assert f"{FULLNAME}-cluster-api" not in {
        r["metadata"]["name"] for r in by_kind(everywhere, "ClusterRole")
    }
    assert not namespace_grants(everywhere)


def test_rbac_can_be_left_to_the_cluster_admin() -> None:
    rendered = render(
        {"rbac.create": False, "serviceAccount.create": False, "serviceAccount.name": "aw"}
    )
    kinds = {obj["kind"] for obj in rendered}
    assert not kinds & {"ClusterRole", "ClusterRoleBinding", "RoleBinding", "ServiceAccount"}
    assert one(rendered, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "aw"


# --- values validation -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "where"),
    [
        ({"config.mode": "bogus"}, "/config/mode"),
        ({"config.failurePolicy": "maybe"}, "/config/failurePolicy"),
        ({"replicaCount": "two"}, "/replicaCount"),
        ({"replicaCount": 0}, "/replicaCount"),
        ({"replicaCont": 3}, "replicaCont"),
        ({"webhook.timeoutSeconds": 31}, "/webhook/timeoutSeconds"),
        ({"webhook.validating.failurePolicy": "Sometimes"}, "/webhook/validating/failurePolicy"),
        ({"config.preferredArchitectures.arm64": 101}, "/config/preferredArchitectures/arm64"),
        ({"config.globalPullSecret": "no-namespace"}, "/config/globalPullSecret"),
        ({"config.registries.registry\\.local.insecure": "maybe"}, "insecure"),
        ({"config.registries.registry\\.local.tls": True}, "tls"),
        ({"image.digest": "latest"}, "/image/digest"),
        ({"rbac.pullSecrets.scope": "everywhere"}, "/rbac/pullSecrets/scope"),
        ({"webhook.clientAuth.enabled": "yes"}, "/webhook/clientAuth/enabled"),
        ({"webhook.clientAuth.caBundle": "not base64!"}, "/webhook/clientAuth/caBundle"),
        ({"webhook.clientAuth.existingConfigMap": "Bad_Name"}, "/webhook/clientAuth"),
        ({"webhook.clientAuth.names": [""]}, "/webhook/clientAuth/names/0"),
        ({"webhook.clientAuth.ca": "x"}, "ca"),
        ({"networkPolicy.webhookFrom": "10.0.0.0/8"}, "/networkPolicy/webhookFrom"),
        ({"networkPolicy.enabled": "true-ish"}, "/networkPolicy/enabled"),
        ({"schedulingGates.mode": "always"}, "/schedulingGates/mode"),
        ({"schedulingGates.alertAfterSeconds": 0}, "/schedulingGates/alertAfterSeconds"),
        # Each named namespace gets a RoleBinding: a namespace name, or "*" for all.
        (
            {"config.capacity.clusterAPI.namespaces": ["Team_A"]},
            "/config/capacity/clusterAPI/namespaces/0",
        ),
        (
            {"config.capacity.clusterAPI.namespaces": ["team-*"]},
            "/config/capacity/clusterAPI/namespaces/0",
        ),
    ],
)
def test_schema_rejects_bad_values(values: dict[str, Any], where: str) -> None:
    with pytest.raises(HelmError) as caught:
        render(values)
    assert "don't meet the specifications of the schema" in caught.value.stderr
    assert where in caught.value.stderr


# Values that each make the render fail with the message (templates/_helpers.tpl validate).
INCOMPATIBLE: list[tuple[dict[str, Any], str]] = [
    (
        {"certManager.enabled": True, "tls.existingSecret": "mine"},
        "certManager.enabled and tls.existingSecret cannot be combined",
    ),
    ({"tls.existingSecret": "mine"}, "tls.existingSecret needs tls.caBundle"),
    ({"tls.caBundle": "Zm9v"}, "tls.caBundle is only used with tls.existingSecret"),
    ({"webhook.budgetSeconds": 5}, "must be below webhook.timeoutSeconds"),
    ({"metrics.port": 9443}, "webhook.port and metrics.port must differ"),
    (
        {"config.kube.watchSeconds": 30},
        "config.kube.watchIdleSeconds (25) must be above config.kube.watchSeconds (30)",
    ),
    (
        {"podDisruptionBudget.enabled": True, "podDisruptionBudget.maxUnavailable": 1},
        "set minAvailable or maxUnavailable, not both",
    ),
    (
        {"config.globalPullSecret": "infra/regcred", "rbac.pullSecrets.scope": "none"},
        "config.globalPullSecret needs rbac.pullSecrets.scope",
    ),
    (
        {"rbac.pullSecrets.namespaces": ["team-a"]},
        "only used with rbac.pullSecrets.scope=namespaces",
    ),
    ({"podAntiAffinity": "hard", "affinity.nodeAffinity.x": "y"}, "podAntiAffinity=hard"),
    (
        {"shutdownDelaySeconds": 30},
        "shutdownDelaySeconds (30) must be below terminationGracePeriodSeconds (30)",
    ),
    (
        {"webhook.clientAuth.enabled": True},
        "webhook.clientAuth.enabled needs caBundle or existingConfigMap",
    ),
    (
        {
            "webhook.clientAuth.enabled": True,
            "webhook.clientAuth.caBundle": "Zm9v",
            "webhook.clientAuth.existingConfigMap": "api-ca",
        },
        "set caBundle or existingConfigMap, not both",
    ),
    (
        {"webhook.clientAuth.names": ["kube-apiserver"]},
        "only used with webhook.clientAuth.enabled",
    ),
    ({"networkPolicy.enabled": True}, "networkPolicy.enabled needs networkPolicy.webhookFrom"),
    ({"hostNetwork": True, "webhook.port": 10250}, "that node port is the kubelet's"),
    (
        {"schedulingGates.mode": "policy"},
        "schedulingGates.mode=policy needs the API server to serve "
        "admissionregistration.k8s.io/v1/MutatingAdmissionPolicy",
    ),
]


@pytest.mark.parametrize(("values", "message"), INCOMPATIBLE)
def test_incompatible_values_fail_with_a_message(values: dict[str, Any], message: str) -> None:
    with pytest.raises(HelmError) as caught:
        render(values)
    assert "execution error" in caught.value.stderr
    assert message in caught.value.stderr


@pytest.mark.parametrize(("values", "message"), INCOMPATIBLE)
def test_incompatible_values_fail_helm_lint_strict(values: dict[str, Any], message: str) -> None:
    # helm lint turns `fail` into a log line and goes on rendering; archwarden.fail then writes
    # invalid YAML so the lint fails too, with the message in helm's log.
    args = ["lint", "--strict", str(CHART), "--namespace", NAMESPACE, *set_args(values)]
    with pytest.raises(HelmError) as caught:
        helm(*args)
    assert "1 chart(s) failed" in caught.value.stderr
    assert message in caught.value.stderr


# --- NOTES.txt -------------------------------------------------------------------------------

# helm renders NOTES.txt only on install/upgrade, which need a cluster even with --dry-run=client
# in helm 3. A probe template in a copy of the chart includes NOTES.txt like any named template,
# so `helm template` renders it offline with the same engine and values.
NOTES_PROBE = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: notes-probe
data:
  notes: {{ include (print $.Template.BasePath "/NOTES.txt") . | toJson }}
"""


@pytest.fixture(scope="module")
def probe_chart(tmp_path_factory: pytest.TempPathFactory) -> Path:
    chart = tmp_path_factory.mktemp("chart") / "archwarden"
    shutil.copytree(CHART, chart, ignore=shutil.ignore_patterns("hack"))
    (chart / "templates" / "zz-notes-probe.yaml").write_text(NOTES_PROBE)
    return chart


def notes(
    chart: Path, values: dict[str, Any] | None = None, api_versions: tuple[str, ...] = ()
) -> str:
    (probe,) = render(
        values, chart=chart, show_only=["templates/zz-notes-probe.yaml"], api_versions=api_versions
    )
    return str(probe["data"]["notes"])


def test_notes_rendered(probe_chart: Path) -> None:
    text = notes(probe_chart)
    assert f'is installed as "{RELEASE}" in namespace "{NAMESPACE}"' in text
    assert "Mode: enforce (registry failures: open); pod mutation: on." in text
    assert f"kube-system, {NAMESPACE}" in text
    assert f"kubectl -n {NAMESPACE} rollout status deployment/{FULLNAME}" in text
    assert "generated by the chart, kept across upgrades" in text
    assert "webhook.validating.failurePolicy=Fail" in text  # the strict-enforcement hint
    assert "Scheduling gate archwarden.io/platforms: added by the webhook to pods it cannot" in text
    assert "WARNING" not in text
    assert "<no value>" not in text and "%!" not in text


def test_notes_say_where_cluster_api_node_groups_count(probe_chart: Path) -> None:
    assert (
        "Cluster API node groups: not counted until config.capacity.clusterAPI.namespaces "
        "names where they live.\n"
    ) in notes(probe_chart)
    named = notes(probe_chart, {"config.capacity.clusterAPI.namespaces": ["infra", "capi"]})
    assert "Cluster API node groups: counted in namespaces capi, infra alone.\n" in named
    everywhere = notes(probe_chart, {"config.capacity.clusterAPI.namespaces": ["*"]})
    assert "Cluster API node groups: counted in every namespace.\n" in everywhere
    off = notes(probe_chart, {"config.capacity.clusterAPI.enabled": False})
    assert "Cluster API" not in off


def test_notes_name_who_adds_the_scheduling_gate(probe_chart: Path) -> None:
    policy = notes(probe_chart, api_versions=(MUTATING_POLICY_API,))
    assert f"added to every new pod in scope by MutatingAdmissionPolicy {FULLNAME};" in policy
    off = notes(probe_chart, {"schedulingGates.mode": "off"})
    assert "Scheduling gate archwarden.io/platforms: off.\n" in off


def test_notes_warn_about_fail_with_one_replica(probe_chart: Path) -> None:
    text = notes(
        probe_chart,
        {
            "replicaCount": 1,
            "webhook.validating.failurePolicy": "Fail",
            "certManager.enabled": True,
        },
    )
    assert "WARNING: a webhook uses failurePolicy Fail with a single replica" in text
    assert "podDisruptionBudget.enabled" in text
    assert "cert-manager must be installed" in text


# --- generated and dependent files -----------------------------------------------------------


def test_schema_is_generated_from_values() -> None:
    result = subprocess.run(
        [sys.executable, str(CHART / "hack" / "schema.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def _is_group(node: Mapping[str, Any]) -> bool:
    """A group of values (closed object), not a free-form value whose schema has properties."""
    return "properties" in node and node.get("additionalProperties") is False


def _schema_paths(node: Mapping[str, Any], prefix: str = "") -> set[str]:
    paths = set()
    for key, child in node.get("properties", {}).items():
        paths.add(prefix + key)
        if _is_group(child):
            paths |= _schema_paths(child, f"{prefix}{key}.")
    return paths


def _value_paths(
    values: Mapping[str, Any], schema: Mapping[str, Any], prefix: str = ""
) -> set[str]:
    paths = set()
    for key, value in values.items():
        paths.add(prefix + key)
        child = schema.get("properties", {}).get(key, {})
        if isinstance(value, dict) and _is_group(child):
            paths |= _value_paths(value, child, f"{prefix}{key}.")
    return paths


def test_values_and_schema_agree_on_keys() -> None:
    # Independent of hack/schema.py: a hand edit of either file is caught here too.
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert _schema_paths(schema) - {"global"} == _value_paths(values, schema)
    readme = (CHART / "README.md").read_text()
    leaves = {p for p in _value_paths(values, schema) if not _schema_paths(_node(schema, p))}
    for path in sorted(leaves):
        node = _node(schema, path)
        assert node.get("description"), f"{path} has no description"
        assert f"| `{path}` |" in readme, f"{path} is missing from the README values table"


def _node(schema: Mapping[str, Any], path: str) -> Mapping[str, Any]:
    for key in path.split("."):
        schema = schema["properties"][key]
    return schema


def test_deploy_manifests_are_generated_from_the_chart() -> None:
    helm_binary = find_helm()
    assert helm_binary is not None
    result = subprocess.run(
        ["bash", str(REPO_ROOT / "deploy" / "generate.sh"), "--stdout"],
        env={**os.environ, "ARCHWARDEN_HELM": str(helm_binary), "KUBECONFIG": os.devnull},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    committed = (REPO_ROOT / "deploy" / "archwarden.yaml").read_text()
    assert result.stdout == committed, "deploy/archwarden.yaml is stale: run deploy/generate.sh"
    assert committed.startswith("# GENERATED by deploy/generate.sh")
    manifests = [doc for doc in yaml.safe_load_all(committed) if doc]
    assert manifests[0]["kind"] == "Namespace"
    # Deterministic: no key material, caBundle left to cert-manager's cainjector.
    assert not by_kind(manifests, "Secret") and "PRIVATE KEY" not in committed
    assert _ca_bundles(manifests) == {None}
    assert by_kind(manifests, "Certificate")
    # Hooks belong to helm: applied by kubectl, the pre-delete Job would run at once.
    assert not by_kind(manifests, "Job")
    assert "helm.sh/hook" not in committed


def _dockerfile_instructions() -> list[tuple[str, str]]:
    text = (REPO_ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    instructions = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    return instructions


def test_dockerfile_agrees_with_the_chart(deployment: dict[str, Any]) -> None:
    instructions = _dockerfile_instructions()
    final = instructions[max(i for i, (k, _) in enumerate(instructions) if k == "FROM") :]
    last = {keyword: rest for keyword, rest in final}
    assert last["FROM"] == "${BASE_IMAGE}"
    # The default base: upstream Python 3.11, pinned by the digest of its multi-arch index.
    assert any(
        k == "ARG" and re.fullmatch(r"BASE_IMAGE=python:3\.11-slim-bookworm@sha256:[0-9a-f]{64}", r)
        for k, r in instructions
    )
    assert json.loads(last["ENTRYPOINT"]) == ["python3", "-S", "-m", "archwarden"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert json.loads(last["CMD"]) == container["args"][:3]
    security = deployment["spec"]["template"]["spec"]["securityContext"]
    assert last["USER"] == f"{security['runAsUser']}:{security['runAsGroup']}"
    env = " ".join(rest for keyword, rest in final if keyword == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env and "HOME=/tmp" in env
    assert set(last["EXPOSE"].split()) == {str(p["containerPort"]) for p in container["ports"]}
    # The runtime stage only copies (no emulation); the build stage builds archwarden's wheel.
    assert not any(k == "RUN" for k, _ in final)
    assert any(k == "RUN" and re.search(r"pip wheel .* \.(\s|;|$)", r) for k, r in instructions)
    ignored = (REPO_ROOT / ".dockerignore").read_text().splitlines()
    assert ignored[ignored.index("*") :][:5] == [
        "*",
        "!pyproject.toml",
        "!README.md",
        "!operator/",
        "!requirements/",
    ]
