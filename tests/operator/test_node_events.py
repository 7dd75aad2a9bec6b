"""Node events in the handlers: heartbeats cost nothing, changes adjust metrics incrementally."""

from __future__ import annotations

from archwarden import handlers, metrics, settings
from tests.policy import objects


def _gauge(rt: handlers.Runtime) -> dict[tuple[str, str], float]:
    samples = rt.metrics.nodes.collect()[0].samples
    return {(s.labels["os"], s.labels["arch"]): s.value for s in samples}


async def test_heartbeats_change_nothing_and_real_changes_adjust_counts() -> None:
    rt = handlers.Runtime(settings.Settings(), metrics=metrics.Metrics(), leading=True)
    rt.ready.set()  # re-evaluation follows changes once the first lists are complete
    for name, arch in (("a", "amd64"), ("b", "arm64"), ("c", "arm64")):
        rt.on_node(objects.node(name, arch))
    assert _gauge(rt) == {("linux", "amd64"): 1, ("linux", "arm64"): 2}
    assert rt.platform_set == {"linux/amd64", "linux/arm64"}
    assert rt.reevaluation is not None
    rt.reevaluation.cancel()
    rt.reevaluation = None
    snapshot = rt.nodes.nodes()

    changes = rt.metrics.registry.get_sample_value("archwarden_node_changes_total")
    assert changes == 3

    # A heartbeat: the same projection parsed again. No re-evaluation, same snapshot.
    rt.on_node(objects.node("b", "arm64"))
    assert rt.reevaluation is None and rt.nodes.nodes() is snapshot
    assert rt.metrics.registry.get_sample_value("archwarden_node_changes_total") == 3

    # The only amd64 node goes: its series disappears, the platform set shrinks.
    rt.on_node_deleted(objects.node("a", "amd64"))
    assert _gauge(rt) == {("linux", "arm64"): 2}
    assert rt.platform_set == {"linux/arm64"}
    assert sorted(n.name for n in rt.nodes.nodes()) == ["b", "c"]
    assert rt.metrics.registry.get_sample_value("archwarden_node_changes_total") == 4
    assert rt.reevaluation is not None
    rt.reevaluation.cancel()


def test_a_complete_list_drops_nodes_deleted_while_the_stream_was_down() -> None:
    rt = handlers.Runtime(settings.Settings(), metrics=metrics.Metrics())
    for name in ("a", "b"):
        rt.on_node(objects.node(name, "arm64"))
    rt.on_nodes_listed({"a"})
    assert [n.name for n in rt.nodes.nodes()] == ["a"]
    assert _gauge(rt) == {("linux", "arm64"): 1}
    assert rt.reevaluation is None  # not ready yet: the first lists are still arriving


def test_an_invalid_node_is_not_kept() -> None:
    rt = handlers.Runtime(settings.Settings(), metrics=metrics.Metrics())
    rt.on_node(objects.node("a", "arm64"))
    broken = objects.node("a", "arm64")
    broken["metadata"]["labels"] = ["not", "a", "map"]
    rt.on_node(broken)
    assert rt.nodes.nodes() == ()
