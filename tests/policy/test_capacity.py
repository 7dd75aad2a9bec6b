"""Provisionable capacity: requirement matching as Karpenter reads it, and decisions over it.

Two oracles back the matching: a brute force over a finite universe of label values (a pool's
label may take any allowed value, a pod matches when one satisfies it), and the node rules of
``_scheduling`` (a class whose every label is one value is a node).
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from archwarden import platforms
from archwarden.policy import (
    Capacity,
    Decision,
    ImageAnswer,
    LabelOptions,
    Mode,
    Node,
    ProvisionableClass,
    Reason,
    Requirement,
    Source,
    Taint,
    _capacity,
    _scheduling,
    decide,
    extract,
    node_from_object,
    node_group,
    nodepool_from_object,
    pod_patch,
    settled,
    stranded,
)
from tests.policy import objects
from tests.policy.objects import API, plats

AMD = [
    node_from_object(objects.node("amd-1", "amd64")),
    node_from_object(objects.node("amd-2", "amd64")),
]
WITH_PPC = [*AMD, node_from_object(objects.node("ppc-1", "ppc64le"))]


def nodepool(
    name: str,
    *requirements: dict[str, Any],
    labels: dict[str, str] | None = None,
    taints: list[dict[str, str]] | None = None,
    limits: dict[str, Any] | None = None,
    used: dict[str, Any] | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "template": {
            "spec": {
                "nodeClassRef": {
                    "group": "karpenter.kwok.sh",
                    "kind": "KWOKNodeClass",
                    "name": "d",
                },
                "requirements": list(requirements),
            }
        }
    }
    if labels:
        spec["template"]["metadata"] = {"labels": labels}
    if taints:
        spec["template"]["spec"]["taints"] = taints
    if limits:
        spec["limits"] = limits
    obj: dict[str, Any] = {
        "apiVersion": "karpenter.sh/v1",
        "kind": "NodePool",
        "metadata": {"name": name},
        "spec": spec,
    }
    if used:
        obj["status"] = {"resources": used}
    return obj


def arch(*values: str, operator: str = "In") -> dict[str, Any]:
    return {"key": "kubernetes.io/arch", "operator": operator, "values": list(values)}


def pool(name: str, *requirements: dict[str, Any], **kw: Any) -> ProvisionableClass:
    return nodepool_from_object(nodepool(name, *requirements, **kw))


def run(
    spec: dict[str, Any],
    nodes: list[Node],
    found: dict[str, ImageAnswer],
    capacity: list[ProvisionableClass],
    **kw: Any,
) -> Decision:
    return decide(extract(objects.pod(*found, **spec)), nodes, found, capacity=capacity, **kw)


# -- matching, unit ----------------------------------------------------------------------------


def req(key: str, operator: str, *values: str) -> Requirement:
    return Requirement(key, operator, values)


@pytest.mark.parametrize(
    ("pool_op", "pool_values", "pod_op", "pod_values", "expected"),
    [
        ("In", ["a", "b"], "In", ["b", "c"], True),  # some value satisfies
        ("In", ["a", "b"], "In", ["c"], False),
        ("In", ["a"], "NotIn", ["a"], False),
        ("In", ["a", "b"], "NotIn", ["a"], True),
        ("In", ["a"], "DoesNotExist", [], False),
        ("In", ["a"], "Exists", [], True),
        ("NotIn", ["a"], "In", ["a"], False),
        ("NotIn", ["a"], "In", ["b"], True),
        ("NotIn", ["a"], "DoesNotExist", [], True),  # Karpenter: NotIn leaves the label out
        ("Exists", [], "DoesNotExist", [], False),  # ... Exists does not
        ("Exists", [], "In", ["x"], True),
        ("DoesNotExist", [], "In", ["x"], False),
        ("DoesNotExist", [], "NotIn", ["x"], True),
        ("DoesNotExist", [], "DoesNotExist", [], True),
        ("Gt", ["4"], "In", ["x"], True),  # Gt/Lt on a pool read as Exists
        ("In", ["2", "8"], "Gt", ["4"], True),
        ("In", ["2", "3"], "Gt", ["4"], False),
        ("NotIn", ["5", "6"], "Gt", ["4"], True),  # 7 is left
    ],
)
def test_pool_requirement_against_one_pod_expression(
    pool_op: str, pool_values: list[str], pod_op: str, pod_values: list[str], expected: bool
) -> None:
    options = _capacity.options_from_requirement(req("k", pool_op, *pool_values))
    assert _capacity.matches_options(options, "k", [req("k", pod_op, *pod_values)]) is expected


def test_expressions_on_one_key_must_hold_for_the_same_value() -> None:
    options = LabelOptions(complement=False, values=frozenset({"a", "b"}))
    assert _capacity.matches_options(options, "k", [req("k", "In", "a"), req("k", "NotIn", "b")])
    assert not _capacity.matches_options(options, "k", [req("k", "In", "a"), req("k", "In", "b")])
    # Gt 4 and Lt 7 leave 5 and 6; the pool excludes both.
    excluded = LabelOptions(complement=True, values=frozenset({"5", "6"}))
    assert not _capacity.matches_options(excluded, "k", [req("k", "Gt", "4"), req("k", "Lt", "7")])
    assert _capacity.matches_options(excluded, "k", [req("k", "Gt", "4"), req("k", "Lt", "8")])


def test_undefined_labels_well_known_or_absent() -> None:
    general = pool("general")
    offer = general.offers[0]
    # Karpenter's well-known labels may be constrained without the pool naming them ...
    assert offer.options("topology.kubernetes.io/zone") == _capacity.ANY_VALUE
    # ... any other label is absent on a node Karpenter provisions.
    assert offer.options("team") == _capacity.NO_LABEL
    assert offer.options("karpenter.sh/nodepool") == LabelOptions.exactly("general")


# -- matching, properties ----------------------------------------------------------------------

KEYS = ["zone", "team"]
VALUES = ["a", "b", "1", "3", "5"]
# Every value the brute force tries: what pools and pods name, other integers, another string.
UNIVERSE = [*VALUES, *(str(i) for i in range(-1, 9)), "zz", None]
OPERATORS = ["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"]


@st.composite
def requirements(draw: st.DrawFn, key: str) -> Requirement:
    operator = draw(st.sampled_from(OPERATORS))
    if operator in ("In", "NotIn"):
        values = tuple(draw(st.lists(st.sampled_from(VALUES), min_size=1, max_size=3)))
    elif operator in ("Gt", "Lt"):
        values = (draw(st.sampled_from(["1", "3", "5"])),)
    else:
        values = ()
    return Requirement(key, operator, values)


def _allowed(pool_requirements: list[Requirement], value: str | None) -> bool:
    """Whether a provisioned node may carry ``value`` (None: no label), by definition."""
    for r in pool_requirements:
        if r.operator in ("Gt", "Lt"):  # read as Exists
            r = Requirement(r.key, "Exists")
        if r.operator in ("In", "Exists"):
            ok = value is not None and (r.operator == "Exists" or value in r.values)
        elif r.operator == "NotIn":
            ok = value is None or value not in r.values
        else:
            ok = value is None
        if not ok:
            return False
    return True


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_matching_is_the_brute_force_over_possible_values(data: st.DataObject) -> None:
    key = "zone"
    pooled = data.draw(st.lists(requirements(key), min_size=1, max_size=2))
    pod = data.draw(st.lists(requirements(key), min_size=1, max_size=3))
    options = _capacity.options_from_requirement(pooled[0])
    for r in pooled[1:]:
        options = _capacity.narrow(options, _capacity.options_from_requirement(r))
    expected = any(
        _allowed(pooled, value)
        and all(
            _scheduling.matches_requirement(r, {} if value is None else {key: value}) for r in pod
        )
        for value in UNIVERSE
    )
    assert _capacity.matches_options(options, key, pod) is expected


@st.composite
def fixed_groups(draw: st.DrawFn) -> tuple[Node, ProvisionableClass]:
    """A node and the node group whose template is exactly that node."""
    labels = {
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": draw(st.sampled_from(["amd64", "arm64"])),
    }
    for key in KEYS:
        if draw(st.booleans()):
            labels[key] = draw(st.sampled_from(VALUES))
    taints = tuple(
        draw(
            st.lists(
                st.sampled_from(
                    [Taint("gpu", "true", "NoSchedule"), Taint("spot", "", "NoExecute")]
                ),
                max_size=2,
                unique=True,
            )
        )
    )
    node = Node("n", "linux", labels["kubernetes.io/arch"], labels=tuple(labels.items()))
    node = Node(node.name, node.os, node.arch, labels=node.labels, taints=taints)
    group = node_group(Source("nodeGroup", "g"), labels, taints)
    return node, group


@st.composite
def pods(draw: st.DrawFn) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    if draw(st.booleans()):
        extra["nodeSelector"] = {
            key: draw(st.sampled_from(VALUES))
            for key in draw(st.lists(st.sampled_from(KEYS), max_size=2, unique=True))
        }
    if draw(st.booleans()):
        terms = []
        for _ in range(draw(st.integers(1, 2))):
            expressions = []
            for _ in range(draw(st.integers(0, 3))):
                r = draw(requirements(draw(st.sampled_from([*KEYS, "kubernetes.io/arch"]))))
                if r.key == "kubernetes.io/arch" and r.operator in ("In", "NotIn"):
                    r = Requirement(r.key, r.operator, ("arm64",))
                expressions.append(r.to_json())
            terms.append({"matchExpressions": expressions})
        extra["affinity"] = {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}
            }
        }
    tolerations = draw(
        st.lists(
            st.sampled_from([{"key": "gpu", "operator": "Exists"}, {"operator": "Exists"}]),
            max_size=1,
        )
    )
    if tolerations:
        extra["tolerations"] = tolerations
    return objects.pod(API, **extra)


@settings(max_examples=300, deadline=None)
@given(fixed_groups(), pods(), st.sampled_from(["linux/amd64", "linux/arm64"]))
def test_a_group_of_one_fixed_template_is_judged_as_that_node(
    pair: tuple[Node, ProvisionableClass], pod: dict[str, Any], image: str
) -> None:
    node, group = pair
    workload = extract(pod)
    (offer,) = group.offers
    assert _capacity.offer_admits(workload, offer) == _scheduling.admits(workload)(node)
    found = {API: plats(image)}
    existing = decide(workload, [node], found)
    provisionable = decide(workload, [], found, capacity=[group])
    assert existing.allowed == provisionable.allowed
    if existing.reason is Reason.COMPATIBLE:
        assert provisionable.reason is Reason.PROVISIONABLE
        assert provisionable.provisionable_platforms == existing.node_platforms
    elif existing.reason is Reason.NO_CANDIDATE_NODES:
        assert provisionable.reason is Reason.NO_CANDIDATE_NODES
    else:
        assert provisionable.reason is existing.reason


# -- decisions ---------------------------------------------------------------------------------


def test_no_node_can_run_it_now_but_a_nodepool_can_provision_one() -> None:
    spot = pool("arm64-spot", arch("arm64"))
    decision = run({}, AMD, {API: plats("linux/arm64")}, [spot])
    assert decision.allowed
    assert decision.reason is Reason.PROVISIONABLE
    assert (
        decision.message == "no node can run it now; NodePool arm64-spot can provision linux/arm64"
    )
    assert decision.compatible_nodes == ()
    assert decision.incompatible_nodes == ("amd-1", "amd-2")
    assert decision.provisionable_platforms == ("linux/arm64",)
    assert decision.provisionable_sources == ("NodePool arm64-spot",)
    assert decision.placement is not None
    assert decision.placement.required == (Requirement("kubernetes.io/arch", "In", ("arm64",)),)
    # Without the pool: denied, exactly as before.
    assert not run({}, AMD, {API: plats("linux/arm64")}, []).allowed


def test_affinity_names_every_arch_existing_or_provisionable_capacity_offers() -> None:
    general = pool("general", arch("amd64", "arm64"))
    found = {API: plats("linux/amd64", "linux/arm64")}
    decision = run({}, WITH_PPC, found, [general])
    assert decision.reason is Reason.COMPATIBLE
    assert decision.placement is not None
    assert decision.placement.arches == ("amd64", "arm64")
    assert decision.placement.required == (
        Requirement("kubernetes.io/arch", "In", ("amd64", "arm64")),
    )
    # Without the pool the pin forbids arm64, which the autoscaler could have chosen.
    without = run({}, WITH_PPC, found, [])
    assert without.placement is not None and without.placement.arches == ("amd64",)


def test_a_pool_that_could_pick_a_wrong_arch_gets_the_pod_pinned() -> None:
    # Only amd64 nodes exist and the image is amd64-only: nothing to exclude among nodes,
    # but the pool could provision arm64 for it.
    general = pool("general")  # no arch requirement: the provider's amd64 and arm64
    decision = run({}, AMD, {API: plats("linux/amd64")}, [general])
    assert decision.reason is Reason.COMPATIBLE and decision.message == ""
    assert decision.placement is not None
    assert decision.placement.required == (Requirement("kubernetes.io/arch", "In", ("amd64",)),)
    assert run({}, AMD, {API: plats("linux/amd64")}, []).placement == decision.placement.__class__(
        arches=("amd64",)
    )


def test_preferred_architectures_apply_to_provisionable_arches() -> None:
    general = pool("general", arch("amd64", "arm64"))
    pod = objects.pod(API)
    decision = decide(
        extract(pod), WITH_PPC, {API: plats("linux/amd64", "linux/arm64")}, capacity=[general]
    )
    ops = pod_patch(pod, decision, preferences={"arm64": 50})
    preferred = ops[0]["value"]["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert preferred == [
        {
            "weight": 50,
            "preference": {
                "matchExpressions": [
                    {"key": "kubernetes.io/arch", "operator": "In", "values": ["arm64"]}
                ]
            },
        }
    ]


def test_pools_at_their_limits_still_count_and_say_so() -> None:
    full = pool("arm", arch("arm64"), limits={"cpu": "100"}, used={"cpu": "100", "memory": "1Gi"})
    decision = run({}, AMD, {API: plats("linux/arm64")}, [full])
    assert decision.allowed
    assert decision.message == (
        "no node can run it now; NodePool arm can provision linux/arm64 (at its cpu limit now)"
    )
    roomy = pool("arm", arch("arm64"), limits={"cpu": "1k"}, used={"cpu": "999500m"})
    assert "limit" not in run({}, AMD, {API: plats("linux/arm64")}, [roomy]).message


def test_a_mismatch_names_the_capacity_that_cannot_run_it_either() -> None:
    power = pool("power", arch("ppc64le"))
    decision = run({}, AMD, {API: plats("linux/s390x")}, [power])
    assert not decision.allowed
    assert decision.reason is Reason.ARCHITECTURE_MISMATCH
    assert decision.message == (
        f"image {API} supports linux/s390x only; the nodes this pod can use are linux/amd64 (2); "
        "NodePool power can provision linux/ppc64le; publish a multi-arch image or select "
        "s390x nodes"
    )
    mainframe = pool("mainframe", arch("s390x"))
    allowed = run({}, AMD, {API: plats("linux/s390x")}, [power, mainframe])
    assert allowed.allowed and allowed.provisionable_sources == ("NodePool mainframe",)


def test_selectors_taints_and_pool_labels_decide_which_pools_a_pod_can_use() -> None:
    found: dict[str, ImageAnswer] = {API: plats("linux/arm64")}
    tainted = pool("gpu", arch("arm64"), taints=[{"key": "gpu", "effect": "NoSchedule"}])
    assert not run({}, AMD, found, [tainted]).allowed
    tolerating = {"tolerations": [{"key": "gpu", "operator": "Exists"}]}
    assert run(tolerating, AMD, found, [tainted]).allowed
    # Karpenter wants PreferNoSchedule taints tolerated too.
    soft = pool("soft", arch("arm64"), taints=[{"key": "x", "effect": "PreferNoSchedule"}])
    assert not run({}, AMD, found, [soft]).allowed
    team = pool("team-a", arch("arm64"), labels={"team": "a"})
    other = pool("other", arch("arm64"))

    def used(spec: dict[str, Any]) -> tuple[str, ...]:
        return run(spec, AMD, found, [team, other]).provisionable_sources

    assert used({"nodeSelector": {"team": "a"}}) == ("NodePool team-a",)
    assert used({"nodeSelector": {"team": "b"}}) == ()
    # A label a pool does not define is absent: In fails, NotIn and DoesNotExist hold.
    not_in = [{"key": "team", "operator": "NotIn", "values": ["a"]}]
    assert used(_required(not_in)) == ("NodePool other",)
    absent = [{"key": "team", "operator": "DoesNotExist"}]
    assert used(_required(absent)) == ("NodePool other",)
    # Well-known labels it leaves open may be constrained; the pool's own name selects it.
    assert used({"nodeSelector": {"topology.kubernetes.io/zone": "z1"}}) == (
        "NodePool other",
        "NodePool team-a",
    )
    assert used({"nodeSelector": {"karpenter.sh/nodepool": "team-a"}}) == ("NodePool team-a",)
    # A pod naming a node never lands on a new one.
    assert used({"nodeName": "new-node"}) == ()
    named = [{"key": "metadata.name", "operator": "In", "values": ["new-node"]}]
    spec = {
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{"matchFields": named}]
                }
            }
        }
    }
    assert used(spec) == ()


def _required(*terms: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{"matchExpressions": t} for t in terms]
                }
            }
        }
    }


def test_second_affinity_term_can_select_the_pool() -> None:
    spec = _required(
        [{"key": "team", "operator": "In", "values": ["x"]}],
        [{"key": "kubernetes.io/arch", "operator": "In", "values": ["arm64"]}],
    )
    decision = run(spec, AMD, {API: plats("linux/arm64")}, [pool("g", arch("amd64", "arm64"))])
    assert decision.reason is Reason.PROVISIONABLE


def test_nodepool_requirements_and_beta_aliases() -> None:
    value = pool("p", arch("arm64", operator="NotIn"))  # provider defaults minus arm64
    assert [p.canonical for p in value.platforms] == ["linux/amd64"]
    beta = {"nodeSelector": {"beta.kubernetes.io/arch": "arm64"}}
    found = {API: plats("linux/arm64", "linux/amd64")}
    assert run(beta, [], found, [pool("g")]).provisionable_platforms == ("linux/arm64",)
    windows = nodepool_from_object(
        nodepool(
            "win",
            {"key": "kubernetes.io/os", "operator": "In", "values": ["windows"]},
            {"key": "node.kubernetes.io/windows-build", "operator": "In", "values": ["10.0.20348"]},
            arch("amd64"),
        )
    )
    (offer,) = windows.offers
    assert offer.node.platform.detailed == "windows/amd64 [os.version=10.0.20348]"


def test_daemonsets_follow_existing_nodes_only() -> None:
    spec = objects.pod_spec(API)
    daemonset = extract(objects.workload("DaemonSet", spec))
    found = {API: plats("linux/arm64")}
    decision = decide(daemonset, AMD, found, capacity=[pool("arm", arch("arm64"))])
    assert not decision.allowed and decision.reason is Reason.ARCHITECTURE_MISMATCH


def test_no_candidates_at_all_says_capacity_was_considered() -> None:
    decision = run(
        {"nodeSelector": {"team": "none"}}, AMD, {API: plats("linux/amd64")}, [pool("g")]
    )
    assert decision.reason is Reason.NO_CANDIDATE_NODES
    assert "no provisionable capacity" in decision.message


def test_settled_and_stranded_count_provisionable_capacity() -> None:
    workload = extract(objects.pod(API))
    found: dict[str, ImageAnswer] = {API: plats("linux/arm64")}
    arm = pool("arm", arch("arm64"))
    assert settled(workload, AMD, found)
    assert not settled(workload, AMD, found, capacity=[arm])
    assert stranded({"w": workload}, AMD, found, capacity=[arm]) == {}
    narrowed = pool("arm", arch("amd64"))
    left = stranded({"w": workload}, AMD, found, capacity=[narrowed])
    assert list(left) == ["w"] and "NodePool arm can provision linux/amd64" in left["w"].message


def test_capacity_keeps_classes_by_source() -> None:
    capacity = Capacity()
    arm = pool("arm", arch("arm64"))
    assert capacity.apply(arm.source, arm)
    assert not capacity.apply(arm.source, pool("arm", arch("arm64")))  # same value
    general = pool("general")
    capacity.apply(general.source, general)
    assert capacity.counts() == {
        ("NodePool", "linux", "arm64"): 2,
        ("NodePool", "linux", "amd64"): 1,
    }
    static = node_group(Source("nodeGroup", "asg"), {}, platform_specs=["linux/s390x"])
    assert capacity.replace("nodeGroup", [static])
    assert [str(c.source) for c in capacity.classes()] == [
        "NodePool arm",
        "NodePool general",
        "nodeGroup asg",
    ]
    assert capacity.replace("nodeGroup", [])
    assert capacity.apply(arm.source, None)
    assert [str(c.source) for c in capacity.classes()] == ["NodePool general"]


def test_provisionable_decisions_in_every_mode_are_allowed() -> None:
    arm = pool("arm", arch("arm64"))
    for mode in Mode:
        decision = run({}, AMD, {API: plats("linux/arm64")}, [arm], mode=mode)
        assert decision.allowed and not decision.mismatch
        assert bool(decision.warnings) == (mode is not Mode.AUDIT)


def test_platform_fallbacks_apply_to_provisionable_arches() -> None:
    arm = pool("arm", arch("arm64"))
    found: dict[str, ImageAnswer] = {API: plats("linux/arm/v7")}
    assert not run({}, AMD, found, [arm]).allowed
    fallbacks = platforms.Fallbacks(arm32_on_arm64=True)
    assert run({}, AMD, found, [arm], fallbacks=fallbacks).allowed
