from __future__ import annotations

import copy
import importlib.util
from typing import Any

import pytest

from archwarden.policy import (
    ANNOTATION_PLATFORMS,
    Decision,
    InvalidWorkload,
    Node,
    decide,
    extract,
    node_from_object,
    nodes_from_platforms,
    pod_patch,
    template_patch,
)
from tests.policy import objects
from tests.policy.objects import API, apply_patch, plats

REQUIRED = "requiredDuringSchedulingIgnoredDuringExecution"
PREFERRED = "preferredDuringSchedulingIgnoredDuringExecution"
MIXED = [
    node_from_object(objects.node("amd-1", "amd64")),
    node_from_object(objects.node("arm-1", "arm64", labels={"disk": "ssd"})),
    node_from_object(objects.node("ppc-1", "ppc64le", labels={"disk": "ssd"})),
]
MULTI = {API: plats("linux/amd64", "linux/arm64")}
ARCH_IN = {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64", "arm64"]}


def _mutate(
    raw: dict[str, Any],
    nodes: list[Node] = MIXED,
    answers: Any = MULTI,
    **kw: Any,
) -> tuple[dict[str, Any], list[Any]]:
    decision = decide(extract(raw), nodes, answers)
    ops = pod_patch(raw, decision, **kw)
    patched = apply_patch(raw, list(ops))
    if importlib.util.find_spec("jsonpatch") is not None:
        # Cross-check the tiny applier against a full RFC 6902 implementation (kopf's).
        import jsonpatch

        assert jsonpatch.apply_patch(raw, list(ops)) == patched
    return patched, list(ops)


def _node_affinity(pod: dict[str, Any]) -> Any:
    return pod["spec"]["affinity"]["nodeAffinity"]


def test_pod_without_affinity_or_annotations() -> None:
    patched, ops = _mutate(objects.pod(API))
    assert [op["path"] for op in ops] == ["/spec/affinity", "/metadata/annotations"]
    assert patched["spec"]["affinity"] == {
        "nodeAffinity": {REQUIRED: {"nodeSelectorTerms": [{"matchExpressions": [ARCH_IN]}]}}
    }
    assert patched["metadata"]["annotations"] == {ANNOTATION_PLATFORMS: "linux/amd64,linux/arm64"}


def test_each_ored_term_gets_the_expression_and_no_term_is_added() -> None:
    zone = {"key": "zone", "operator": "In", "values": ["a"]}
    ssd = {"key": "disk", "operator": "In", "values": ["ssd"]}
    preferred = [{"weight": 10, "preference": {"matchExpressions": [zone]}}]
    raw = objects.pod(
        API,
        annotations={"team": "web"},
        affinity={
            "nodeAffinity": {
                REQUIRED: {
                    "nodeSelectorTerms": [
                        {"matchExpressions": [ssd]},
                        {"matchExpressions": [{"key": "disk", "operator": "DoesNotExist"}]},
                    ]
                },
                PREFERRED: copy.deepcopy(preferred),
            },
            "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []},
        },
    )
    patched, ops = _mutate(raw, preferences={"amd64": 50, "ppc64le": 30})
    assert all(op["op"] == "add" for op in ops)
    terms = _node_affinity(patched)[REQUIRED]["nodeSelectorTerms"]
    assert terms == [
        {"matchExpressions": [ssd, ARCH_IN]},
        {"matchExpressions": [{"key": "disk", "operator": "DoesNotExist"}, ARCH_IN]},
    ]
    # The user's preference stays; ours only for arches that can run the pod (not ppc64le).
    assert _node_affinity(patched)[PREFERRED] == [
        *preferred,
        {
            "weight": 50,
            "preference": {
                "matchExpressions": [
                    {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]}
                ]
            },
        },
    ]
    assert (
        patched["spec"]["affinity"]["podAntiAffinity"] == raw["spec"]["affinity"]["podAntiAffinity"]
    )
    assert patched["metadata"]["annotations"] == {
        "team": "web",
        ANNOTATION_PLATFORMS: "linux/amd64,linux/arm64",
    }
    assert {
        "op": "add",
        "path": "/metadata/annotations/archwarden.io~1platforms",
        "value": "linux/amd64,linux/arm64",
    } in ops


def test_existing_arch_in_expression_still_gets_ours_anded() -> None:
    user = {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64", "arm64", "ppc64le"]}
    raw = objects.pod(API, affinity=objects.arch_affinity([user]))
    patched, _ = _mutate(raw)
    assert _node_affinity(patched)[REQUIRED]["nodeSelectorTerms"] == [
        {"matchExpressions": [user, ARCH_IN]}
    ]


def test_affinity_without_node_affinity() -> None:
    pod_affinity: dict[str, Any] = {
        "podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": []}
    }
    patched, ops = _mutate(objects.pod(API, affinity=copy.deepcopy(pod_affinity)))
    assert ops[0]["path"] == "/spec/affinity/nodeAffinity"
    assert patched["spec"]["affinity"]["podAffinity"] == pod_affinity["podAffinity"]
    assert _node_affinity(patched)[REQUIRED] == {
        "nodeSelectorTerms": [{"matchExpressions": [ARCH_IN]}]
    }


def test_node_affinity_with_only_preferred_terms() -> None:
    preferred = [
        {"weight": 1, "preference": {"matchExpressions": [{"key": "z", "operator": "Exists"}]}}
    ]
    patched, ops = _mutate(objects.pod(API, affinity={"nodeAffinity": {PREFERRED: preferred}}))
    assert ops[0]["path"] == f"/spec/affinity/nodeAffinity/{REQUIRED}"
    assert _node_affinity(patched) == {
        PREFERRED: preferred,
        REQUIRED: {"nodeSelectorTerms": [{"matchExpressions": [ARCH_IN]}]},
    }


def test_empty_terms_stay_empty_and_field_only_terms_get_expressions() -> None:
    by_name = {"key": "metadata.name", "operator": "In", "values": ["amd-1", "arm-1", "ppc-1"]}
    raw = objects.pod(
        API,
        affinity={
            "nodeAffinity": {
                REQUIRED: {
                    "nodeSelectorTerms": [{}, {"matchExpressions": [], "matchFields": [by_name]}]
                }
            }
        },
    )
    patched, _ = _mutate(raw)
    assert _node_affinity(patched)[REQUIRED]["nodeSelectorTerms"] == [
        {},  # matched nothing before; must still match nothing
        {"matchExpressions": [ARCH_IN], "matchFields": [by_name]},
    ]


def test_mutation_is_idempotent() -> None:
    raw = objects.pod(API, annotations={})
    once, _ = _mutate(raw, preferences={"arm64": 20})
    again = decide(extract(once), MIXED, MULTI)
    assert again.placement is not None and again.placement.required == ()
    assert pod_patch(once, again, preferences={"arm64": 20}) == []


def test_no_restriction_when_every_candidate_can_run_the_pod() -> None:
    raw = objects.pod(API, nodeSelector={"kubernetes.io/arch": "arm64"})
    patched, ops = _mutate(raw, preferences={"arm64": 5})
    assert REQUIRED not in _node_affinity(patched)
    assert _node_affinity(patched)[PREFERRED][0]["weight"] == 5
    assert [op["path"] for op in ops] == ["/spec/affinity", "/metadata/annotations"]


def test_preference_already_present_is_not_duplicated() -> None:
    mine = {
        "weight": 90,
        "preference": {
            "matchExpressions": [
                {"key": "kubernetes.io/arch", "operator": "In", "values": ["arm64"]}
            ]
        },
    }
    raw = objects.pod(API, affinity={"nodeAffinity": {PREFERRED: [mine]}})
    patched, _ = _mutate(raw, preferences={"arm64": 50, "amd64": 10})
    entries = _node_affinity(patched)[PREFERRED]
    assert [e["weight"] for e in entries] == [90, 10]


def test_os_expression_when_candidates_span_operating_systems() -> None:
    nodes = [
        *nodes_from_platforms(["linux/amd64", "linux/arm64"]),
        node_from_object(objects.node("win", "amd64", "windows")),
    ]
    patched, _ = _mutate(objects.pod(API), nodes)
    assert _node_affinity(patched)[REQUIRED]["nodeSelectorTerms"] == [
        {
            "matchExpressions": [
                ARCH_IN,
                {"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]},
            ]
        }
    ]


def test_denied_or_unknown_decisions_do_not_mutate() -> None:
    raw = objects.pod(API)
    denied = decide(extract(raw), MIXED, {API: plats("linux/s390x")})
    assert not denied.allowed and pod_patch(raw, denied) == []
    assert pod_patch(raw, Decision(allowed=True, reason=denied.reason)) == []


def test_bad_preference_weight() -> None:
    raw = objects.pod(API)
    decision = decide(extract(raw), MIXED, MULTI)
    with pytest.raises(ValueError, match="1-100"):
        pod_patch(raw, decision, preferences={"arm64": 0})


def test_malformed_affinity_while_patching() -> None:
    raw = objects.pod(API)
    decision = decide(extract(raw), MIXED, MULTI)
    raw["spec"]["affinity"] = {
        "nodeAffinity": {REQUIRED: {"nodeSelectorTerms": [{"matchExpressions": "x"}]}}
    }
    with pytest.raises(
        InvalidWorkload, match=r"nodeSelectorTerms\.0\.matchExpressions: expected a list"
    ):
        pod_patch(raw, decision)


@pytest.mark.parametrize(
    ("kind", "spec_pointer", "metadata_pointer"),
    [
        ("Deployment", "/spec/template/spec", "/spec/template/metadata"),
        (
            "CronJob",
            "/spec/jobTemplate/spec/template/spec",
            "/spec/jobTemplate/spec/template/metadata",
        ),
    ],
)
def test_template_patch(kind: str, spec_pointer: str, metadata_pointer: str) -> None:
    raw = objects.workload(kind, objects.pod_spec(API), "batch/v1")
    decision = decide(extract(raw), MIXED, MULTI)
    ops = template_patch(raw, decision)
    assert [op["path"] for op in ops] == [
        f"{spec_pointer}/affinity",
        f"{metadata_pointer}/annotations",
    ]
    patched = apply_patch(raw, list(ops))
    assert extract(patched).template.required_terms is not None
    assert template_patch(raw, decision, annotate=False)[-1]["path"] == f"{spec_pointer}/affinity"
    # A template without metadata gets it created.
    del raw["spec"]["template" if kind != "CronJob" else "jobTemplate"]
    bare = objects.workload(kind, objects.pod_spec(API))
    template = (
        bare["spec"]["template"]
        if kind != "CronJob"
        else bare["spec"]["jobTemplate"]["spec"]["template"]
    )
    del template["metadata"]
    ops = template_patch(bare, decision)
    assert ops[-1] == {
        "op": "add",
        "path": metadata_pointer,
        "value": {"annotations": {ANNOTATION_PLATFORMS: "linux/amd64,linux/arm64"}},
    }
    assert apply_patch(bare, list(ops))
