from __future__ import annotations

import copy
from typing import Any

import pytest

from archwarden.policy import (
    Container,
    ContainerKind,
    InvalidWorkload,
    Requirement,
    SelectorTerm,
    Toleration,
    extract,
    scheduling_changed,
)
from tests.policy import objects

FULL_SPEC: dict[str, Any] = objects.pod_spec(
    "nginx:1.27",
    "registry.local/team/api:1.4",
    initContainers=[{"name": "migrate", "image": "registry.local/team/migrate@sha256:" + "a" * 64}],
    ephemeralContainers=[{"name": "debug", "image": "busybox", "targetContainerName": "c0"}],
    nodeSelector={"disktype": "ssd"},
    affinity={
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {
                        "matchExpressions": [
                            {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]},
                            {"key": "gen", "operator": "Gt", "values": ["3"]},
                        ]
                    },
                    {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]},
                ]
            },
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 1,
                    "preference": {"matchExpressions": [{"key": "z", "operator": "Exists"}]},
                }
            ],
        },
        "podAntiAffinity": {},
    },
    tolerations=[
        {"key": "dedicated", "operator": "Equal", "value": "web", "effect": "NoSchedule"},
        {"operator": "Exists"},
        {"key": "node.kubernetes.io/not-ready", "effect": "NoExecute", "tolerationSeconds": 300},
    ],
    imagePullSecrets=[{"name": "regcred"}, {"name": "other"}],
    serviceAccountName="builder",
)

KINDS = [
    ("Deployment", "apps/v1"),
    ("StatefulSet", "apps/v1"),
    ("DaemonSet", "apps/v1"),
    ("ReplicaSet", "apps/v1"),
    ("Job", "batch/v1"),
    ("CronJob", "batch/v1"),
]


def _check_full(template: Any) -> None:
    assert template.containers == (
        Container("c0", ContainerKind.CONTAINER, "nginx:1.27"),
        Container("c1", ContainerKind.CONTAINER, "registry.local/team/api:1.4"),
        Container("migrate", ContainerKind.INIT, "registry.local/team/migrate@sha256:" + "a" * 64),
        Container("debug", ContainerKind.EPHEMERAL, "busybox"),
    )
    assert template.images[-1] == "busybox" and len(template.images) == 4
    assert template.node_selector == (("disktype", "ssd"),)
    assert template.required_terms == (
        SelectorTerm(
            match_expressions=(
                Requirement("kubernetes.io/arch", "In", ("amd64",)),
                Requirement("gen", "Gt", ("3",)),
            )
        ),
        SelectorTerm(match_fields=(Requirement("metadata.name", "In", ("n1",)),)),
    )
    assert template.tolerations == (
        Toleration("dedicated", "Equal", "web", "NoSchedule"),
        Toleration("", "Exists", "", ""),
        Toleration("node.kubernetes.io/not-ready", "Equal", "", "NoExecute"),
    )
    assert template.image_pull_secrets == ("regcred", "other")
    assert template.service_account == "builder"


def test_pod_extraction() -> None:
    raw = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "ns"}}
    raw["spec"] = copy.deepcopy(FULL_SPEC)
    workload = extract(raw)
    assert (workload.kind, workload.name, workload.namespace) == ("Pod", "p", "ns")
    assert workload.spec_path == ("spec",)
    _check_full(workload.template)


@pytest.mark.parametrize(("kind", "api_version"), KINDS)
def test_every_workload_kind(kind: str, api_version: str) -> None:
    workload = extract(objects.workload(kind, copy.deepcopy(FULL_SPEC), api_version))
    assert (workload.kind, workload.name, workload.namespace) == (kind, "web", "team")
    _check_full(workload.template)


def test_cronjob_template_path() -> None:
    workload = extract(objects.workload("CronJob", objects.pod_spec("a")))
    assert workload.spec_path == ("spec", "jobTemplate", "spec", "template", "spec")


def test_defaults_and_lenient_parts() -> None:
    raw = objects.pod("nginx", nodeSelector=None, affinity=None, tolerations=None)
    raw["spec"]["containers"].append({"name": "no-image"})
    raw["spec"]["serviceAccount"] = ""
    template = extract(raw).template
    assert template.images == ("nginx",)
    assert template.node_selector == () and template.tolerations == ()
    assert template.required_terms is None
    assert template.service_account == "default"
    # The deprecated field still counts when the new one is absent.
    assert extract(objects.pod("x", serviceAccount="legacy")).template.service_account == "legacy"


def test_kind_override_generate_name_and_controller() -> None:
    raw = objects.pod("nginx")
    del raw["kind"]
    raw["metadata"] = {
        "generateName": "ds-",
        "ownerReferences": [
            {"kind": "Node", "name": "x", "controller": False},
            {"kind": "DaemonSet", "name": "ds", "controller": True},
        ],
    }
    workload = extract(raw, kind="Pod")
    assert workload.name == "ds-"
    assert workload.controller_kind == "DaemonSet"


def _pod_with(**spec: Any) -> dict[str, Any]:
    return {"kind": "Pod", "metadata": {"name": "p"}, "spec": spec}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("not an object", "object: expected an object, got a string"),
        ({"kind": "Service", "spec": {}}, "kind: unsupported kind 'Service'"),
        ({"kind": 7}, "kind: expected a string, got a number"),
        ({"kind": "Pod", "metadata": []}, "metadata: expected an object, got a list"),
        ({"kind": "Pod"}, "spec: required"),
        ({"kind": "Deployment", "spec": {"replicas": 1}}, "spec.template: required"),
        (
            {"kind": "Deployment", "spec": {"template": {"spec": []}}},
            "spec.template.spec: expected an object, got a list",
        ),
        (
            {"kind": "CronJob", "spec": {"jobTemplate": {"spec": {}}}},
            "spec.jobTemplate.spec.template: required",
        ),
        (_pod_with(), "spec.containers: required"),
        (_pod_with(containers={"name": "a"}), "spec.containers: expected a list, got an object"),
        (_pod_with(containers=["nginx"]), "spec.containers[0]: expected an object, got a string"),
        (
            _pod_with(containers=[{"name": "a", "image": 5}]),
            "spec.containers[0].image: expected a string, got a number",
        ),
        (
            _pod_with(containers=[], initContainers=[{"image": ["x"]}]),
            "spec.initContainers[0].image: expected a string, got a list",
        ),
        (
            _pod_with(containers=[], nodeSelector=["a"]),
            "spec.nodeSelector: expected an object, got a list",
        ),
        (
            _pod_with(containers=[], nodeSelector={"a": True}),
            "spec.nodeSelector['a']: expected a string, got a boolean",
        ),
        (
            _pod_with(containers=[], tolerations=[{"key": None, "value": 1}]),
            "spec.tolerations[0].value: expected a string, got a number",
        ),
        (
            _pod_with(containers=[], imagePullSecrets=["regcred"]),
            "spec.imagePullSecrets[0]: expected an object, got a string",
        ),
        (
            _pod_with(containers=[], serviceAccountName=3),
            "spec.serviceAccountName: expected a string, got a number",
        ),
        (_pod_with(containers=[], affinity="x"), "spec.affinity: expected an object, got a string"),
        (
            _pod_with(
                containers=[],
                affinity={
                    "nodeAffinity": {
                        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": {}}
                    }
                },
            ),
            "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
            ".nodeSelectorTerms: expected a list, got an object",
        ),
        (
            _pod_with(
                containers=[],
                affinity=objects.arch_affinity([{"key": "a", "operator": "Within", "values": []}]),
            ),
            "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0]"
            ".matchExpressions[0].operator: unsupported operator 'Within': expected one of "
            "DoesNotExist, Exists, Gt, In, Lt, NotIn",
        ),
        (
            _pod_with(
                containers=[],
                affinity=objects.arch_affinity([{"key": "a", "operator": "Gt", "values": ["x"]}]),
            ),
            "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0]"
            ".matchExpressions[0].values: operator Gt needs exactly one integer value",
        ),
        (
            _pod_with(
                containers=[],
                affinity=objects.arch_affinity([{"key": "a", "operator": "In", "values": "amd64"}]),
            ),
            "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0]"
            ".matchExpressions[0].values: expected a list, got a string",
        ),
        (
            _pod_with(
                containers=[],
                affinity={
                    "nodeAffinity": {
                        "requiredDuringSchedulingIgnoredDuringExecution": {
                            "nodeSelectorTerms": [
                                {
                                    "matchFields": [
                                        {"key": "metadata.uid", "operator": "In", "values": ["x"]}
                                    ]
                                }
                            ]
                        }
                    }
                },
            ),
            "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0]"
            ".matchFields[0].key: unsupported field 'metadata.uid': only metadata.name",
        ),
        (
            {
                "kind": "Pod",
                "metadata": {"ownerReferences": [{"controller": "yes"}]},
                "spec": {"containers": []},
            },
            "metadata.ownerReferences[0].controller: expected a boolean, got a string",
        ),
    ],
)
def test_malformed_workloads_name_the_field(raw: Any, message: str) -> None:
    with pytest.raises(InvalidWorkload) as caught:
        extract(raw)
    assert str(caught.value) == message
    assert isinstance(caught.value, ValueError)


def test_scheduling_changed() -> None:
    base = objects.workload("Deployment", objects.pod_spec("a:1", nodeSelector={"x": "y"}))

    def changed(edit: Any) -> bool:
        new = copy.deepcopy(base)
        edit(new["spec"]["template"]["spec"])
        return scheduling_changed(base, new)

    assert not changed(lambda s: None)
    assert not changed(lambda s: s.update(restartPolicy="Never", terminationGracePeriodSeconds=5))
    assert not changed(lambda s: s["containers"][0].update(env=[{"name": "A", "value": "1"}]))
    assert changed(lambda s: s["containers"][0].update(image="a:2"))
    assert changed(lambda s: s.update(initContainers=[{"name": "i", "image": "b"}]))
    assert changed(lambda s: s.update(ephemeralContainers=[{"name": "e", "image": "b"}]))
    assert changed(lambda s: s.update(nodeSelector={"x": "z"}))
    assert changed(
        lambda s: s.update(affinity=objects.arch_affinity([{"key": "a", "operator": "Exists"}]))
    )
    assert changed(lambda s: s.update(tolerations=[{"operator": "Exists"}]))
    assert changed(lambda s: s.update(imagePullSecrets=[{"name": "regcred"}]))
    assert changed(lambda s: s.update(containers="broken"))
    # Only the template matters for workloads: replicas or labels do not.
    scaled = copy.deepcopy(base)
    scaled["spec"]["replicas"] = 7
    scaled["metadata"]["labels"] = {"v": "2"}
    assert not scheduling_changed(base, scaled)
