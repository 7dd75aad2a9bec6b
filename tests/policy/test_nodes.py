from __future__ import annotations

import pytest

from archwarden import platforms
from archwarden.policy import InvalidNode, Node, Taint, node_from_object, nodes_from_platforms
from archwarden.policy._nodes import JUDGED_LABELS
from tests.policy import objects


def test_node_keeps_what_decisions_need() -> None:
    raw = objects.node(
        "arm-1",
        "arm64",
        taints=[{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}],
        unschedulable=True,
        labels={"pool": "arm"},
    )
    node = node_from_object(raw)
    assert node.name == "arm-1"
    assert (node.os, node.arch) == ("linux", "arm64")
    assert node.label_map["pool"] == "arm"
    assert node.taints == (Taint("dedicated", "gpu", "NoSchedule"),)
    assert node.ready and node.unschedulable
    assert node.platform == platforms.normalize("linux", "arm64")


def test_node_is_hashable_and_label_order_does_not_matter() -> None:
    a = Node("n", "linux", "amd64", labels=(("b", "2"), ("a", "1")))
    b = Node("n", "linux", "amd64", labels=(("a", "1"), ("b", "2")))
    assert a == b and hash(a) == hash(b)
    assert {a, b} == {a}
    assert a.label_map == {"a": "1", "b": "2"}


def test_node_info_is_the_fallback_for_missing_labels() -> None:
    raw = objects.node("old", "s390x")
    raw["metadata"]["labels"] = {}
    node = node_from_object(raw)
    assert (node.os, node.arch) == ("linux", "s390x")
    assert node.label_map == {}


def test_not_ready_and_missing_conditions() -> None:
    assert not node_from_object(objects.node("n", ready=False)).ready
    raw = objects.node("n")
    del raw["status"]
    assert not node_from_object(raw).ready


def test_windows_node_carries_its_build_as_os_version() -> None:
    node = node_from_object(objects.node("win", "amd64", "windows", build="10.0.20348"))
    assert node.windows_build == "10.0.20348"
    assert node.platform.os_version == "10.0.20348"
    assert node.platform.canonical == "windows/amd64"
    # Without the label the kubelet's kernelVersion (the OS build on Windows) is used.
    raw = objects.node("win", "amd64", "windows")
    raw["status"]["nodeInfo"]["kernelVersion"] = "10.0.17763.5329"
    assert node_from_object(raw).platform.os_version == "10.0.17763.5329"
    # Linux nodes never carry an os_version.
    linux = Node("l", "linux", "amd64", windows_build="10.0.20348")
    assert linux.platform.os_version == ""


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda n: n["metadata"].update(labels=["a"]), "metadata.labels"),
        (lambda n: n["metadata"]["labels"].update(x=1), "metadata.labels['x']"),
        (lambda n: n["spec"].update(taints={"key": "x"}), "spec.taints"),
        (lambda n: n["spec"].update(taints=[{"key": 3}]), "spec.taints[0].key"),
        (lambda n: n["spec"].update(unschedulable="yes"), "spec.unschedulable"),
        (lambda n: n["status"].update(conditions=[None, 5]), "status.conditions[1]"),
    ],
)
def test_malformed_node(mutate, field) -> None:  # type: ignore[no-untyped-def]
    raw = objects.node("n")
    mutate(raw)
    with pytest.raises(InvalidNode) as caught:
        node_from_object(raw)
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: expected")


def test_nodes_from_platforms() -> None:
    nodes = nodes_from_platforms(["linux/amd64", "arm64", "linux/amd64", "linux/arm/v6"])
    names = [n.name for n in nodes]
    assert names == ["linux-amd64", "linux-arm64", "linux-amd64-2", "linux-arm-v6"]
    assert all(n.ready and not n.unschedulable and not n.taints for n in nodes)
    assert nodes[1].label_map["kubernetes.io/arch"] == "arm64"
    assert nodes[3].platform == platforms.parse("linux/arm/v6")
    with pytest.raises(platforms.InvalidPlatform):
        nodes_from_platforms(["linux//"])


@pytest.mark.parametrize(
    ("level", "runs_v3"), [(None, False), ("v3", True), ("V4", True), ("v2", False), ("v9", False)]
)
def test_amd64_level_label_states_the_level_the_runtime_pulls(
    level: str | None, runs_v3: bool
) -> None:
    # containerd detects no amd64 level: an unlabelled node is v1 and pulls no amd64/v3-only
    # image; an unknown label value is ignored (v1).
    labels = {} if level is None else {"archwarden.io/amd64-level": level}
    node = node_from_object(objects.node("n", "amd64", labels=labels))
    v3 = platforms.parse("linux/amd64/v3")
    assert platforms.node_can_run(node.platform, v3) is runs_v3
    assert platforms.node_can_run(node.platform, platforms.parse("linux/amd64"))


def test_amd64_level_is_a_judged_label() -> None:
    assert "archwarden.io/amd64-level" in JUDGED_LABELS
