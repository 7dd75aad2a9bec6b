"""The injected affinity admits exactly the nodes the decision judged able to run the pod.

Property test over random clusters and pods: nodes of every platform archwarden judges (Linux
arches, 32-bit arm and 386 images on 64-bit nodes with and without the per-node
``archwarden.io/runs-arm32`` / ``runs-386`` overrides, Windows builds), taints, cordons and
readiness, and architecture taints (``kubernetes.io/arch=<own arch>`` with each effect, and one
with another arch's value); pods with arch/os pins, affinity terms and tolerations. After the
pod's patch (affinity and the platform-taint tolerations it adds) is
applied, the nodes the scheduler may use are the compatible ones: not a superset (a pod on a node
that cannot run it), not a subset (capacity lost).
"""

from __future__ import annotations

from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from archwarden import platforms
from archwarden.policy import (
    ImageAnswer,
    Inventory,
    Mode,
    Node,
    Taint,
    candidate_nodes,
    decide,
    extract,
    pod_patch,
)
from archwarden.policy._nodes import LABEL_AMD64_LEVEL, LABEL_RUNS_386, LABEL_RUNS_ARM32
from archwarden.policy._placement import placement
from archwarden.policy._workloads import Requirement
from tests.policy import objects

ARCH = "kubernetes.io/arch"
OS = "kubernetes.io/os"
BUILD = "node.kubernetes.io/windows-build"
ZONE = "topology.kubernetes.io/zone"
# (os, arch, Windows build): what a node can be. Node labels never carry a variant.
KINDS = [
    ("linux", "amd64", ""),
    ("linux", "arm64", ""),
    ("linux", "arm", ""),
    ("linux", "ppc64le", ""),
    ("linux", "s390x", ""),
    ("windows", "amd64", "10.0.20348"),
    ("windows", "amd64", "10.0.17763"),
]
OVERRIDES = [None, "true", "false", "False", "maybe"]
LEVELS = [None, "v2", "v3", "v4", "V3", "bogus"]
TAINTS = [
    Taint("gpu", "true", "NoSchedule"),
    Taint("spot", "", "NoExecute"),
    # Another arch's value: never tolerated, whatever the node.
    Taint(ARCH, "s390x", "NoSchedule"),
]
ARCH_EFFECTS = [None, "NoSchedule", "PreferNoSchedule", "NoExecute"]
IMAGES = ["registry.local/a:1", "registry.local/b:1"]
IMAGE_PLATFORMS = [
    "linux/amd64",
    "linux/amd64/v3",
    "linux/arm64",
    "linux/arm/v6",
    "linux/arm/v7",
    "linux/386",
    "linux/s390x",
    "linux/ppc64le",
    "windows/amd64:10.0.20348.2527",
    "windows/amd64:10.0.17763.5329",
]


def _platform(spec: str) -> platforms.Platform:
    base, _, build = spec.partition(":")
    os, arch = base.split("/")[:2]
    if build:
        return platforms.normalize(os, arch, os_version=build)
    return platforms.parse(base)


def _arch_taint(arch: str, effect: str | None) -> tuple[Taint, ...]:
    """GKE's taint on its Arm nodes, on any arch (NoExecute is not a platform taint by default)."""
    return () if effect is None else (Taint(ARCH, arch, effect),)


@st.composite
def clusters(draw: st.DrawFn) -> list[Node]:
    out = []
    for i in range(draw(st.integers(1, 10))):
        os, arch, build = draw(st.sampled_from(KINDS))
        labels = {OS: os, ARCH: arch, "kubernetes.io/hostname": f"n{i}"}
        if build:
            labels[BUILD] = build
        if draw(st.booleans()):
            labels[ZONE] = draw(st.sampled_from(["a", "b"]))
        for key in (LABEL_RUNS_ARM32, LABEL_RUNS_386):
            value = draw(st.sampled_from(OVERRIDES))
            if value is not None:
                labels[key] = value
        level = draw(st.sampled_from(LEVELS))
        if level is not None:
            labels[LABEL_AMD64_LEVEL] = level
        out.append(
            Node(
                name=f"n{i}",
                os=os,
                arch=arch,
                windows_build=build,
                labels=tuple(labels.items()),
                taints=(
                    *draw(st.lists(st.sampled_from(TAINTS), max_size=1)),
                    *_arch_taint(arch, draw(st.sampled_from(ARCH_EFFECTS))),
                ),
                ready=draw(st.integers(0, 6)) > 0,
                unschedulable=draw(st.integers(0, 6)) == 0,
            )
        )
    return out


def _expression(draw: st.DrawFn) -> dict[str, Any]:
    key = draw(st.sampled_from([ARCH, OS, ZONE]))
    operator = draw(st.sampled_from(["In", "NotIn", "Exists"]))
    pool = {ARCH: ["amd64", "arm64", "arm", "s390x"], OS: ["linux", "windows"], ZONE: ["a", "b"]}
    expression: dict[str, Any] = {"key": key, "operator": operator}
    if operator != "Exists":
        expression["values"] = draw(st.lists(st.sampled_from(pool[key]), min_size=1, max_size=2))
    return expression


@st.composite
def pods(draw: st.DrawFn) -> dict[str, Any]:
    images = draw(st.lists(st.sampled_from(IMAGES), min_size=1, max_size=2, unique=True))
    extra: dict[str, Any] = {}
    selector = {}
    if draw(st.integers(0, 3)) == 0:
        selector[ARCH] = draw(st.sampled_from(["amd64", "arm64"]))
    if draw(st.integers(0, 3)) == 0:
        selector[OS] = draw(st.sampled_from(["linux", "windows"]))
    if selector:
        extra["nodeSelector"] = selector
    if draw(st.booleans()):
        terms = [
            {"matchExpressions": [_expression(draw) for _ in range(draw(st.integers(1, 2)))]}
            for _ in range(draw(st.integers(1, 2)))
        ]
        extra["affinity"] = {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}
            }
        }
    if draw(st.booleans()):
        extra["tolerations"] = [{"operator": "Exists"}]
    return objects.pod(*images, **extra)


answers = st.fixed_dictionaries(
    {
        image: st.lists(st.sampled_from(IMAGE_PLATFORMS), min_size=1, max_size=3, unique=True).map(
            lambda specs: tuple(_platform(s) for s in specs)
        )
        for image in IMAGES
    }
)

_ARM64_NODES = [
    Node(f"arm-{i}", "linux", "arm64", labels=((OS, "linux"), (ARCH, "arm64"), *extra))
    for i, extra in enumerate([((LABEL_RUNS_ARM32, "true"),), (), ()])
]


@settings(max_examples=600, deadline=None)
@given(clusters(), pods(), answers, st.booleans(), st.booleans())
@example(  # the case: one arm64 node runs 32-bit arm, the others cannot
    cluster=_ARM64_NODES,
    pod=objects.pod(IMAGES[0]),
    found={IMAGES[0]: (platforms.parse("linux/arm/v6"),), IMAGES[1]: ()},
    arm32=False,
    i386=True,
)
def test_the_patched_pod_may_use_exactly_the_nodes_judged_able_to_run_it(
    cluster: list[Node],
    pod: dict[str, Any],
    found: dict[str, ImageAnswer],
    arm32: bool,
    i386: bool,
) -> None:
    fallbacks = platforms.Fallbacks(arm32_on_arm64=arm32, i386_on_amd64=i386)
    workload = extract(pod)
    decision = decide(workload, cluster, found, mode=Mode.WARN, fallbacks=fallbacks)
    inventory = Inventory()
    for node in cluster:
        inventory.apply(node.name, node)
    by_class = decide(workload, inventory, found, mode=Mode.WARN, fallbacks=fallbacks)
    assert by_class.placement == decision.placement
    if decision.placement is None:
        assert decision.compatible_nodes == ()
        return
    assert by_class.tolerations == decision.tolerations
    # Only the arches the pod is placed on are ever tolerated, never another key.
    assert all(t.key == ARCH and t.operator == "Equal" for t in decision.tolerations)
    assert {t.value for t in decision.tolerations} <= set(decision.placement.arches)
    patched = objects.apply_patch(pod, pod_patch(pod, decision))
    after = {node.name for node in candidate_nodes(extract(patched), cluster)}
    assert after == set(decision.compatible_nodes)
    # Judging the patched pod again adds nothing: the tolerations are there once.
    again = decide(extract(patched), cluster, found, mode=Mode.WARN, fallbacks=fallbacks)
    assert again.tolerations == ()
    assert not [op for op in pod_patch(patched, again) if "tolerations" in op["path"]]


def test_arm32_images_go_only_to_the_arm64_nodes_that_run_them() -> None:
    found: dict[str, ImageAnswer] = {IMAGES[0]: (platforms.parse("linux/arm/v6"),)}
    decision = decide(extract(objects.pod(IMAGES[0])), _ARM64_NODES, found)
    assert decision.allowed and decision.compatible_nodes == ("arm-0",)
    assert decision.placement is not None
    assert decision.placement.terms == (
        (Requirement(ARCH, "In", ("arm64",)), Requirement(LABEL_RUNS_ARM32, "In", ("true",))),
    )


def test_a_386_image_stays_off_the_amd64_node_labelled_not_to_run_it() -> None:
    cluster = [
        Node("amd-0", "linux", "amd64", labels=((OS, "linux"), (ARCH, "amd64"))),
        Node(
            "amd-1",
            "linux",
            "amd64",
            labels=((OS, "linux"), (ARCH, "amd64"), (LABEL_RUNS_386, "false")),
        ),
    ]
    found: dict[str, ImageAnswer] = {IMAGES[0]: (platforms.parse("linux/386"),)}
    decision = decide(extract(objects.pod(IMAGES[0])), cluster, found)
    assert decision.compatible_nodes == ("amd-0",)
    assert decision.placement is not None
    assert decision.placement.terms == (
        (Requirement(ARCH, "In", ("amd64",)), Requirement(LABEL_RUNS_386, "DoesNotExist")),
    )


def test_terms_are_one_per_requirement_set_not_one_per_node() -> None:
    # Ten amd64 and ten arm64 nodes, two ppc64le: a multi-arch image gets one term.
    cluster = [
        Node(f"{arch}-{i}", "linux", arch, labels=((OS, "linux"), (ARCH, arch)))
        for arch in ("amd64", "arm64", "ppc64le")
        for i in range(10 if arch != "ppc64le" else 2)
    ]
    found = placement(
        [node for node in cluster if node.arch != "ppc64le"],
        [node for node in cluster if node.arch == "ppc64le"],
    )
    assert found.terms == ((Requirement(ARCH, "In", ("amd64", "arm64")),),)


def test_several_alternatives_are_crossed_with_each_user_term() -> None:
    arm32 = Node("arm-0", "linux", "arm64", labels=((ARCH, "arm64"), (LABEL_RUNS_ARM32, "true")))
    other = Node("arm-1", "linux", "arm64", labels=((ARCH, "arm64"),))
    amd = Node("amd-0", "linux", "amd64", labels=((ARCH, "amd64"),))
    s390x = Node("s390x-0", "linux", "s390x", labels=((ARCH, "s390x"),))
    found: dict[str, ImageAnswer] = {
        IMAGES[0]: (platforms.parse("linux/arm/v7"), platforms.parse("linux/amd64"))
    }
    user = {"matchExpressions": [{"key": ZONE, "operator": "In", "values": ["a"]}]}
    pod = objects.pod(
        IMAGES[0],
        affinity={
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [user]}
            }
        },
    )
    cluster = [
        Node(n.name, n.os, n.arch, labels=(*n.labels, (ZONE, "a")))
        for n in (arm32, other, amd, s390x)
    ]
    decision = decide(extract(pod), cluster, found)
    assert decision.compatible_nodes == ("amd-0", "arm-0")
    assert decision.placement is not None and len(decision.placement.terms) == 2
    patched = objects.apply_patch(pod, pod_patch(pod, decision))
    terms = patched["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]["nodeSelectorTerms"]
    assert len(terms) == 2
    assert all(term["matchExpressions"][0] == user["matchExpressions"][0] for term in terms)
    assert {n.name for n in candidate_nodes(extract(patched), cluster)} == {"amd-0", "arm-0"}
