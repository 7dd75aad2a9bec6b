"""Decisions by node class are exactly the node-by-node decisions (property test).

The node-by-node path is ``decide`` over a plain list of nodes (one class per node); the class
path is ``decide`` over an :class:`Inventory`. Random clusters mix hostname pools, zones,
taints, arches (with variants and Windows builds), readiness and cordons; random pods pin
hostnames, zones and arches, tolerate taints, or name a node outright.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from archwarden import platforms
from archwarden.policy import (
    ImageAnswer,
    ImageFailure,
    Inventory,
    Mode,
    Node,
    Taint,
    concerned,
    decide,
    extract,
    pod_patch,
    template_patch,
)
from archwarden.policy._inventory import class_of
from tests.policy import objects

HOSTS = [f"node-{i}" for i in range(8)]
HOSTNAME = "kubernetes.io/hostname"
ZONE = "topology.kubernetes.io/zone"
# (os, arch, variant, Windows build): what a node can be.
KINDS = [
    ("linux", "amd64", "", ""),
    ("linux", "arm64", "", ""),
    ("linux", "arm", "v7", ""),
    ("linux", "ppc64le", "", ""),
    ("windows", "amd64", "", "10.0.20348"),
    ("windows", "amd64", "", "10.0.17763"),
]
TAINTS = [Taint("gpu", "true", "NoSchedule"), Taint("spot", "", "NoExecute"), Taint("x", "", "")]
IMAGES = ["registry.local/a:1", "registry.local/b:1"]
IMAGE_PLATFORMS = ["linux/amd64", "linux/arm64", "linux/arm/v7", "linux/386", "windows/amd64"]


@st.composite
def nodes(draw: st.DrawFn) -> Node:
    name = draw(st.sampled_from(HOSTS))
    os, arch, variant, build = draw(st.sampled_from(KINDS))
    labels = {"kubernetes.io/os": os, "kubernetes.io/arch": arch, HOSTNAME: name}
    if build:
        labels["node.kubernetes.io/windows-build"] = build
    if draw(st.booleans()):
        labels[ZONE] = draw(st.sampled_from(["a", "b", "c"]))
    if draw(st.integers(0, 4)) == 0:
        labels["archwarden.io/runs-arm32"] = draw(st.sampled_from(["true", "false"]))
    return Node(
        name=name,
        os=os,
        arch=arch,
        variant=variant,
        windows_build=build,
        labels=tuple(labels.items()),
        taints=(
            *draw(st.lists(st.sampled_from(TAINTS), max_size=2, unique=True)),
            # GKE's arch taint on the node's own arch: decisions may opt pods in to it.
            *(
                (Taint("kubernetes.io/arch", arch, "NoSchedule"),)
                if draw(st.integers(0, 3)) == 0
                else ()
            ),
        ),
        ready=draw(st.integers(0, 5)) > 0,
        unschedulable=draw(st.integers(0, 5)) == 0,
    )


def _expression(draw: st.DrawFn) -> dict[str, Any]:
    key = draw(st.sampled_from([HOSTNAME, ZONE, "kubernetes.io/arch"]))
    operator = draw(st.sampled_from(["In", "NotIn", "Exists", "DoesNotExist"]))
    pool = {HOSTNAME: HOSTS, ZONE: ["a", "b", "c"], "kubernetes.io/arch": ["amd64", "arm64"]}
    expression: dict[str, Any] = {"key": key, "operator": operator}
    if operator in ("In", "NotIn"):
        expression["values"] = draw(st.lists(st.sampled_from(pool[key]), min_size=1, max_size=3))
    return expression


@st.composite
def pods(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any]]:
    images = draw(st.lists(st.sampled_from(IMAGES), min_size=1, max_size=2, unique=True))
    extra: dict[str, Any] = {}
    selector = {}
    if draw(st.booleans()):
        selector[HOSTNAME] = draw(st.sampled_from(HOSTS))
    if draw(st.booleans()):
        selector[ZONE] = draw(st.sampled_from(["a", "b"]))
    if draw(st.integers(0, 3)) == 0:
        selector["kubernetes.io/arch"] = draw(st.sampled_from(["amd64", "arm64"]))
    if selector:
        extra["nodeSelector"] = selector
    if draw(st.booleans()):
        terms = []
        for _ in range(draw(st.integers(1, 2))):
            term: dict[str, Any] = {
                "matchExpressions": [_expression(draw) for _ in range(draw(st.integers(0, 2)))]
            }
            if draw(st.integers(0, 4)) == 0:
                term["matchFields"] = [
                    {
                        "key": "metadata.name",
                        "operator": "In",
                        "values": [draw(st.sampled_from(HOSTS))],
                    }
                ]
            terms.append(term)
        extra["affinity"] = {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}
            }
        }
    tolerations = draw(
        st.lists(
            st.sampled_from(
                [
                    {"key": "gpu", "operator": "Exists"},
                    {"key": "spot", "operator": "Exists", "effect": "NoExecute"},
                    {"operator": "Exists"},
                    {"key": "node.kubernetes.io/unschedulable", "operator": "Exists"},
                ]
            ),
            max_size=2,
        )
    )
    if tolerations:
        extra["tolerations"] = tolerations
    if draw(st.integers(0, 5)) == 0:
        extra["nodeName"] = draw(st.sampled_from(HOSTS))
    spec = objects.pod_spec(*images, **extra)
    kind = draw(st.sampled_from(["Pod", "Deployment", "DaemonSet"]))
    pod = objects.pod(*images, **extra)
    return pod, (pod if kind == "Pod" else objects.workload(kind, spec))


answers = st.fixed_dictionaries(
    {
        image: st.one_of(
            st.lists(st.sampled_from(IMAGE_PLATFORMS), min_size=1, max_size=3, unique=True).map(
                lambda specs: tuple(platforms.parse(s) for s in specs)
            ),
            st.just(ImageFailure("401 Unauthorized")),
        )
        for image in IMAGES
    }
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(nodes(), max_size=12),
    pods(),
    answers,
    st.sampled_from(list(Mode)),
    st.booleans(),
)
def test_class_decisions_are_the_node_by_node_decisions(
    cluster: list[Node],
    raw: tuple[dict[str, Any], dict[str, Any]],
    found: dict[str, ImageAnswer],
    mode: Mode,
    arm32: bool,
) -> None:
    by_name = {node.name: node for node in cluster}  # a name is one node
    inventory = Inventory()
    for name, node in by_name.items():
        inventory.apply(name, node)
    pod, obj = raw
    workload = extract(obj)
    fallbacks = platforms.Fallbacks(arm32_on_arm64=arm32, i386_on_amd64=not arm32)
    one_by_one = decide(workload, list(by_name.values()), found, mode=mode, fallbacks=fallbacks)
    by_class = decide(workload, inventory, found, mode=mode, fallbacks=fallbacks)
    assert by_class == one_by_one  # allowed, reason, message, warnings, platforms, placement
    # The node names are not compared by ==: they are listed from the classes on demand.
    assert by_class.compatible_nodes == one_by_one.compatible_nodes
    assert by_class.incompatible_nodes == one_by_one.incompatible_nodes
    assert pod_patch(pod, by_class) == pod_patch(pod, one_by_one)
    if obj is not pod:
        assert template_patch(obj, by_class) == template_patch(obj, one_by_one)


def test_nodes_that_differ_only_by_hostname_are_one_class() -> None:
    inventory = Inventory()
    for name in ("a", "b", "c"):
        node = Node(name, "linux", "arm64", labels=((HOSTNAME, name), (ZONE, "a")))
        inventory.apply(name, node)
    inventory.apply("d", Node("d", "linux", "arm64", labels=((HOSTNAME, "d"), (ZONE, "b"))))
    classes = sorted(inventory.classes(), key=lambda c: c.names)
    assert [c.names for c in classes] == [("a", "b", "c"), ("d",)]
    assert classes[0].node == class_of(inventory.nodes()[0])
    inventory.apply("b", None)
    inventory.apply("d", Node("d", "linux", "arm64", labels=((HOSTNAME, "d"), (ZONE, "a"))))
    assert [c.names for c in inventory.classes()] == [("a", "c", "d")]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(nodes(), max_size=10),
    nodes(),
    st.one_of(st.none(), nodes()),
    pods(),
    answers,
)
def test_a_change_that_does_not_concern_a_workload_leaves_its_decision_alone(
    cluster: list[Node],
    changing: Node,
    after: Node | None,
    raw: tuple[dict[str, Any], dict[str, Any]],
    found: dict[str, ImageAnswer],
) -> None:
    """Re-evaluation skips workloads that no changed class concerns: prove that is safe."""
    inventory = Inventory()
    for node in cluster:
        inventory.apply(node.name, node)
    inventory.apply(changing.name, changing)  # the node as it was
    workload = extract(raw[1])
    decided = decide(workload, inventory, found)
    new = None if after is None else dataclasses.replace(after, name=changing.name)
    inventory.apply(changing.name, new)
    changed = [class_of(v) for v in (changing, new) if v is not None]
    if not concerned(workload, changed):
        again = decide(workload, inventory, found)
        assert again == decided
        assert again.compatible_nodes == decided.compatible_nodes
        assert again.incompatible_nodes == decided.incompatible_nodes


def test_host_names_are_indexed_through_relabels_and_removals() -> None:
    inventory = Inventory()
    node = Node(name="a", os="linux", arch="amd64", labels=((HOSTNAME, "h1"),))
    inventory.apply("a", node)
    assert inventory.labelled(HOSTNAME, "h1") == ["a"]
    inventory.apply("a", dataclasses.replace(node, labels=((HOSTNAME, "h2"),)))
    assert inventory.labelled(HOSTNAME, "h1") == [] and inventory.labelled(HOSTNAME, "h2") == ["a"]
    inventory.apply("a", None)
    assert inventory.labelled(HOSTNAME, "h2") == []
