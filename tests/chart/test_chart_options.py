"""Chart options rendered offline: where archwarden's own pods may run, which calls the API server
makes at all (reinvocation, matchConditions), host networking, Chart.yaml metadata and the
Kubernetes version helm assumes, value formats in the schema, duplicate YAML keys, and the README
values table from helm-docs.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.helm import (
    CHART,
    NAMESPACE,
    RELEASE,
    HelmError,
    find_helm,
    find_tool,
    helm,
    render,
)
from tests.chart.test_chart import MODE_API_VERSIONS, MODES, _webhooks, one

pytestmark = pytest.mark.skipif(
    find_helm() is None, reason="helm not found (make cluster-build builds it)"
)

IMAGE_ARCHITECTURES = ["amd64", "arm64", "ppc64le", "s390x"]
LINUX = {"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]}


def pod_spec(values: dict[str, Any] | None = None) -> dict[str, Any]:
    return dict(one(render(values), "Deployment")["spec"]["template"]["spec"])


def required_terms(spec: dict[str, Any]) -> list[dict[str, Any]]:
    node = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    return list(node["nodeSelectorTerms"])


# --- archwarden's own pods: platform --------------------------------------------------------


def test_pods_require_linux_on_the_image_architectures() -> None:
    spec = pod_spec()
    (term,) = required_terms(spec)
    assert term["matchExpressions"] == [
        LINUX,
        {"key": "kubernetes.io/arch", "operator": "In", "values": IMAGE_ARCHITECTURES},
    ]
    # nodeSelector is the user's: empty by default, set verbatim, ANDed with the affinity.
    assert "nodeSelector" not in spec
    chosen = pod_spec({"nodeSelector.pool": "system", "image.architectures": ["arm64"]})
    assert chosen["nodeSelector"] == {"pool": "system"}
    (term,) = required_terms(chosen)
    assert term["matchExpressions"][1]["values"] == ["arm64"]
    # No architecture list: no arch constraint, Linux still required.
    (term,) = required_terms(pod_spec({"image.architectures": []}))
    assert term["matchExpressions"] == [LINUX]


def test_uninstall_hook_pod_has_the_same_platform_constraint() -> None:
    (job,) = [o for o in render({"image.architectures": ["arm64"]}) if o["kind"] == "Job"]
    spec = job["spec"]["template"]["spec"]
    (term,) = required_terms(spec)
    assert term["matchExpressions"] == [
        LINUX,
        {"key": "kubernetes.io/arch", "operator": "In", "values": ["arm64"]},
    ]
    assert job["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"] == (
        "uninstall"
    )


def test_platform_terms_are_anded_into_every_user_term() -> None:
    # nodeSelectorTerms are ORed: the platform must be part of each term, or one term without it
    # would let the pod onto a node the image cannot run on.
    values = {
        "podAntiAffinity": "none",
        "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
        ".nodeSelectorTerms[0].matchExpressions[0].key": "pool",
        "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
        ".nodeSelectorTerms[0].matchExpressions[0].operator": "In",
        "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
        ".nodeSelectorTerms[0].matchExpressions[0].values[0]": "a",
        "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
        ".nodeSelectorTerms[1].matchFields[0].key": "metadata.name",
        "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
        ".nodeSelectorTerms[1].matchFields[0].operator": "In",
        "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
        ".nodeSelectorTerms[1].matchFields[0].values[0]": "node-1",
        "affinity.podAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].weight": 1,
        "affinity.podAffinity.preferredDuringSchedulingIgnoredDuringExecution[0]"
        ".podAffinityTerm.topologyKey": "zone",
    }
    spec = pod_spec(values)
    first, second = required_terms(spec)
    arch = {"key": "kubernetes.io/arch", "operator": "In", "values": IMAGE_ARCHITECTURES}
    assert first["matchExpressions"] == [
        {"key": "pool", "operator": "In", "values": ["a"]},
        LINUX,
        arch,
    ]
    assert second["matchFields"][0]["values"] == ["node-1"]
    assert second["matchExpressions"] == [LINUX, arch]
    assert spec["affinity"]["podAffinity"]  # the rest of the user's affinity is kept
    assert "podAntiAffinity" not in spec["affinity"]


def test_pod_anti_affinity_presets_keep_the_platform_terms() -> None:
    for preset in ("soft", "hard"):
        spec = pod_spec({"podAntiAffinity": preset})
        assert spec["affinity"]["podAntiAffinity"]
        (term,) = required_terms(spec)
        assert term["matchExpressions"][0] == LINUX


# --- which calls the API server makes -------------------------------------------------------


def test_mutating_webhook_is_reinvoked_if_needed() -> None:
    (hook,) = _webhooks(render(), "MutatingWebhookConfiguration").values()
    assert hook["reinvocationPolicy"] == "IfNeeded"
    (hook,) = _webhooks(
        render({"webhook.mutating.reinvocationPolicy": "Never"}), "MutatingWebhookConfiguration"
    ).values()
    assert hook["reinvocationPolicy"] == "Never"


TEMPLATE_FIELDS = {
    "deployments": "spec.template",
    "statefulsets": "spec.template",
    "daemonsets": "spec.template",
    "replicasets": "spec.template",
    "jobs": "spec.template",
    "cronjobs": "spec.jobTemplate.spec.template",
    "pods": "spec",
}


def test_updates_reach_archwarden_only_when_the_pod_template_changes() -> None:
    objects = render({"config.mutateWorkloadTemplates": True})
    checked = 0
    for kind in ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"):
        for handler_id, hook in _webhooks(objects, kind).items():
            (rule,) = hook["rules"]
            (resource,) = rule["resources"]
            if "UPDATE" not in rule["operations"] or resource == "pods/ephemeralcontainers":
                # CREATE-only (mutate-pods) and the ephemeral-containers subresource, whose
                # every UPDATE is a change: always called.
                assert "matchConditions" not in hook, handler_id
                continue
            field = TEMPLATE_FIELDS[resource]
            assert hook["matchConditions"] == [
                {
                    "name": "pod-template-changed",
                    "expression": f"request.operation != 'UPDATE' || object.{field} != "
                    f"oldObject.{field}",
                }
            ], handler_id
            checked += 1
    assert checked == 13  # 7 validating + 6 workload-template mutating webhooks
    off = render({"webhook.matchConditions": False})
    for hook in _webhooks(off, "ValidatingWebhookConfiguration").values():
        assert "matchConditions" not in hook


# --- networking -----------------------------------------------------------------------------


def test_host_network_and_webhook_port() -> None:
    default = pod_spec()
    assert "hostNetwork" not in default and "dnsPolicy" not in default
    objects = render({"hostNetwork": True, "webhook.port": 9445, "metrics.port": 9446})
    spec = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert spec["hostNetwork"] is True
    assert spec["dnsPolicy"] == "ClusterFirstWithHostNet"
    ports = {p["name"]: p["containerPort"] for p in spec["containers"][0]["ports"]}
    assert ports == {"webhook": 9445, "metrics": 9446}
    config = yaml.safe_load(one(objects, "ConfigMap")["data"]["config.yaml"])
    assert config["webhook"]["port"] == 9445 and config["metrics"]["port"] == 9446
    # The API server still calls the Service port, which targets the named container port.
    service = one(objects, "Service")
    https = next(p for p in service["spec"]["ports"] if p["name"] == "https")
    assert https == {**https, "port": 443, "targetPort": "webhook"}
    # GKE private clusters: pod networking on 10250, which the control-plane firewall opens.
    gke = render({"webhook.port": 10250})
    ports = one(gke, "Deployment")["spec"]["template"]["spec"]["containers"][0]["ports"]
    assert {p["name"]: p["containerPort"] for p in ports}["webhook"] == 10250
    policy = render(
        {
            "webhook.port": 10250,
            "networkPolicy.enabled": True,
            "networkPolicy.webhookFrom[0].ipBlock.cidr": "10.0.0.0/28",
        }
    )
    ingress = one(policy, "NetworkPolicy")["spec"]["ingress"]
    assert ingress[0]["ports"] == [{"protocol": "TCP", "port": 10250}]


# --- Chart.yaml and the Kubernetes version helm knows ---------------------------------------


def test_chart_metadata() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["kubeVersion"] == ">=1.30.0-0"
    assert chart["home"].startswith("https://")
    assert chart["sources"] and all(s.startswith("https://") for s in chart["sources"])
    annotations = chart["annotations"]
    assert annotations["artifacthub.io/license"] == "Apache-2.0"
    (image,) = yaml.safe_load(annotations["artifacthub.io/images"])
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert image["image"] == f"{values['image']['repository']}:{chart['appVersion']}"
    assert image["platforms"] == [f"linux/{arch}" for arch in values["image"]["architectures"]]


CAPABILITIES_PROBE = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: capabilities-probe
data:
  kubeVersion: {{ .Capabilities.KubeVersion.Version | quote }}
"""


def test_helm_knows_the_kubernetes_version_it_was_built_for(tmp_path: Path) -> None:
    # hack/cluster/build.sh stamps client-go's version (v0.37 -> 1.37) as helm's Makefile does;
    # without it helm assumes v1.20 offline and refuses the chart's kubeVersion.
    chart = tmp_path / "archwarden"
    shutil.copytree(CHART, chart, ignore=shutil.ignore_patterns("hack"))
    (chart / "templates" / "zz-capabilities.yaml").write_text(CAPABILITIES_PROBE)
    (probe,) = render(chart=chart, show_only=["templates/zz-capabilities.yaml"])
    module = (CHART.parents[1] / "hack" / "cluster" / "helm" / "go.mod").read_text()
    (client_go,) = [line.split()[1] for line in module.splitlines() if "k8s.io/client-go " in line]
    minor = client_go.split(".")[1]
    assert probe["data"]["kubeVersion"] == f"v1.{minor}.0"
    assert int(minor) >= 30


def test_kube_version_constraint_is_enforced() -> None:
    with pytest.raises(HelmError) as caught:
        helm("template", RELEASE, str(CHART), "--kube-version", "1.29.9")
    assert "incompatible with Kubernetes v1.29.9" in caught.value.stderr
    assert helm("template", RELEASE, str(CHART), "--kube-version", "1.30.1-eks-1234")


# --- schema: formats and label keys ---------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "where"),
    [
        ({"tmpSizeLimit": "64 MB"}, "/tmpSizeLimit"),
        ({"resources.limits.memory": "lots"}, "/resources/limits/memory"),
        ({"resources.requests.cpu": "1.5cores"}, "/resources/requests/cpu"),
        ({"certManager.duration": "90 days"}, "/certManager/duration"),
        ({"certManager.renewBefore": "15d"}, "/certManager/renewBefore"),
        ({"serviceMonitor.interval": "30 seconds"}, "/serviceMonitor/interval"),
        ({"prometheusRule.for": "5"}, "/prometheusRule/for"),
        ({"nameOverride": "Bad_Name"}, "/nameOverride"),
        ({"fullnameOverride": "a" * 64}, "/fullnameOverride"),
        ({"serviceAccount.name": "UPPER"}, "/serviceAccount/name"),
        ({"priorityClassName": "-leading"}, "/priorityClassName"),
        ({"tls.caBundle": "not base64!"}, "/tls/caBundle"),
        ({"tls.caBundle": "abc"}, "/tls/caBundle"),  # not a multiple of four
        ({"config.excludedNamespaces": ["Team_A"]}, "/config/excludedNamespaces/0"),
        ({"rbac.pullSecrets.namespaces": ["a.b"]}, "/rbac/pullSecrets/namespaces/0"),
        # helm reports a wrong location for propertyNames failures, but names the key.
        (
            {"commonLabels.app\\.kubernetes\\.io/name": "other"},
            "invalid propertyName 'app.kubernetes.io/name'",
        ),
        ({"podLabels.helm\\.sh/chart": "x"}, "invalid propertyName 'helm.sh/chart'"),
        (
            {"serviceMonitor.labels.app\\.kubernetes\\.io/instance": "x"},
            "invalid propertyName 'app.kubernetes.io/instance'",
        ),
        ({"commonLabels.bad key": "x"}, "invalid propertyName 'bad key'"),
        ({"commonLabels.team": "no spaces allowed"}, "/commonLabels/team"),
        ({"image.architectures": ["x86"]}, "/image/architectures/0"),
        ({"grafanaDashboard.sidecarLabel": "not a key!"}, "/grafanaDashboard/sidecarLabel"),
        ({"prometheusRule.latencyRatio": 1.5}, "/prometheusRule/latencyRatio"),
    ],
)
def test_schema_rejects_malformed_values(values: dict[str, Any], where: str) -> None:
    with pytest.raises(HelmError) as caught:
        render(values)
    assert "don't meet the specifications of the schema" in caught.value.stderr
    assert where in caught.value.stderr


def test_schema_accepts_well_formed_values() -> None:
    render(
        {
            "tmpSizeLimit": "1Gi",
            "resources.requests.cpu": "250m",
            "resources.limits.memory": "1.5Gi",
            "resources.limits.cpu": 2,
            "certManager.enabled": True,
            "certManager.duration": "1h30m",
            "serviceMonitor.interval": "1m30s",
            "nameOverride": "aw",
            "serviceAccount.name": "archwarden.sa",
            "commonLabels.example\\.com/team": "platform",
            "config.excludedNamespaces": ["team-a"],
        }
    )
    render({"tls.existingSecret": "corp-tls", "tls.caBundle": "Zm9vYg=="})


class _UniqueKeyLoader(yaml.SafeLoader):
    """A YAML loader that refuses duplicate mapping keys (PyYAML keeps the last silently)."""


def _unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    keys = [loader.construct_object(key) for key, _ in node.value]
    duplicates = {key for key in keys if keys.count(key) > 1}
    if duplicates:
        raise AssertionError(f"duplicate keys {duplicates} at {node.start_mark}")
    return loader.construct_mapping(node)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _unique_mapping,  # type: ignore[arg-type]
)


@pytest.mark.parametrize("mode", list(MODES))
def test_no_duplicate_yaml_keys(mode: str) -> None:
    from tests.chart.helm import set_args

    values = {
        **MODES[mode],
        "commonLabels.tier": "platform",
        "podLabels.tier": "webhook",
        "serviceMonitor.enabled": True,
        "serviceMonitor.labels.tier": "monitoring",
        "prometheusRule.enabled": True,
        "prometheusRule.labels.tier": "rules",
        "grafanaDashboard.enabled": True,
    }
    args = [f"--api-versions={api}" for api in MODE_API_VERSIONS.get(mode, ())]
    text = helm("template", RELEASE, str(CHART), "--namespace", NAMESPACE, *set_args(values), *args)
    documents = [doc for doc in yaml.load_all(text, Loader=_UniqueKeyLoader) if doc]
    (deployment,) = [d for d in documents if d["kind"] == "Deployment"]
    # podLabels wins over commonLabels on the pods; commonLabels everywhere else.
    assert deployment["spec"]["template"]["metadata"]["labels"]["tier"] == "webhook"
    assert deployment["metadata"]["labels"]["tier"] == "platform"


def test_duplicate_key_loader_can_fail() -> None:
    with pytest.raises(AssertionError, match="duplicate keys"):
        yaml.load("a: 1\na: 2\n", Loader=_UniqueKeyLoader)  # noqa: S506


# --- README values table (helm-docs) ---------------------------------------------------------


def test_readme_values_table_is_helm_docs_output() -> None:
    binary = find_tool("helm-docs", "ARCHWARDEN_HELM_DOCS")
    if binary is None:
        pytest.fail("helm-docs not found: run make tools-build (or set ARCHWARDEN_HELM_DOCS)")
    result = subprocess.run(
        [str(binary), "--chart-search-root", ".", "--sort-values-order", "file", "--dry-run"],
        cwd=CHART,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    readme = (CHART / "README.md").read_text()
    assert result.stdout == readme, "charts/archwarden/README.md is stale: run make chart-docs"
    rows = [line for line in readme.splitlines() if line.startswith("| `")]
    values_rows = [row for row in rows if row.count(" | ") == 3]
    assert len(values_rows) > 100
    for row in values_rows:
        assert not row.rstrip().endswith("|  |"), f"no description: {row}"


def test_top_level_readme_names_the_webhooks_the_chart_renders() -> None:
    # The README shows release "archwarden" in namespace "archwarden".
    rendered = render(release="archwarden", namespace="archwarden")
    names = {
        hook["name"]
        for obj in rendered
        if obj["kind"].endswith("WebhookConfiguration")
        for hook in obj["webhooks"]
    }
    readme = (CHART.parents[1] / "README.md").read_text()
    mentioned = set(re.findall(r"\b((?:validate|mutate)-[a-z]+\.[a-z0-9.-]*[a-z0-9])", readme))
    assert mentioned, "the README names no webhook"
    assert mentioned <= names, mentioned - names
    assert "validate-deployments.archwarden.archwarden.svc" in mentioned
    assert "make image IMAGE=" in readme and "--set image.repository=" in readme
