"""The incrementally kept inventory against a rebuild from scratch, under random node churn."""

from __future__ import annotations

import collections

from hypothesis import given, settings
from hypothesis import strategies as st

from archwarden.policy import Inventory, Node, Taint, metric_key

NAMES = [f"node-{i}" for i in range(6)]

nodes = st.builds(
    Node,
    name=st.just(""),  # replaced by the event's name
    os=st.sampled_from(["linux", "windows", ""]),
    arch=st.sampled_from(["amd64", "arm64", "ppc64le", ""]),
    labels=st.lists(
        st.tuples(st.sampled_from(["zone", "pool"]), st.sampled_from(["a", "b"])),
        max_size=2,
        unique_by=lambda kv: kv[0],
    ).map(tuple),
    taints=st.lists(st.builds(Taint, key=st.sampled_from(["gpu", "spot"])), max_size=1).map(tuple),
    ready=st.booleans(),
    unschedulable=st.booleans(),
)
events = st.lists(st.tuples(st.sampled_from(NAMES), st.none() | nodes), max_size=40)


def _named(name: str, node: Node | None) -> Node | None:
    if node is None:
        return None
    return Node(
        name=name,
        os=node.os,
        arch=node.arch,
        labels=node.labels,
        taints=node.taints,
        ready=node.ready,
        unschedulable=node.unschedulable,
    )


@settings(max_examples=150, deadline=None)
@given(events)
def test_incremental_inventory_matches_a_rebuild(churn: list[tuple[str, Node | None]]) -> None:
    inventory = Inventory()
    truth: dict[str, Node] = {}
    for name, raw in churn:
        node = _named(name, raw)
        before = truth.get(name)
        change = inventory.apply(name, node)
        assert (change is None) == (before == node)
        if change is not None:
            assert change == (before, node)
        if node is None:
            truth.pop(name, None)
        else:
            truth[name] = node
        assert sorted(inventory.nodes(), key=lambda n: n.name) == sorted(
            truth.values(), key=lambda n: n.name
        )
        assert inventory.counts() == dict(collections.Counter(map(metric_key, truth.values())))
        assert inventory.ready_platforms() == frozenset(
            n.platform.canonical for n in truth.values() if n.known and n.ready
        )
        assert len(inventory) == len(truth)


def test_an_unchanged_node_is_no_change_and_keeps_the_snapshot() -> None:
    inventory = Inventory()
    node = Node("a", "linux", "arm64", labels=(("zone", "a"),))
    assert inventory.apply("a", node) == (None, node)
    snapshot = inventory.nodes()
    # A heartbeat: an equal value parsed afresh from the next event.
    assert inventory.apply("a", Node("a", "linux", "arm64", labels=(("zone", "a"),))) is None
    assert inventory.nodes() is snapshot
    assert inventory.apply("gone", None) is None


def test_a_node_platform_is_normalised_once() -> None:
    node = Node("a", "Linux", "aarch64")
    assert node.platform is node.platform
    assert node.platform.canonical == "linux/arm64"
