"""Node events in the handlers: heartbeats cost nothing, changes adjust metrics incrementally."""

from __future__ import annotations

from typing import Any

from archwarden import handlers, metrics, policy, settings
from tests.policy import objects


def _gauge(rt: handlers.Runtime) -> dict[tuple[str, str], float]:
    samples = rt.metrics.nodes.collect()[0].samples
    return {(s.labels["os"], s.labels["arch"]): s.value for s in samples}


async def _event(rt: handlers.Runtime, index: dict[str, Any], name: str) -> None:
    await handlers.node_changed(name=name, memo={"runtime": rt}, node_index=index)


async def test_heartbeats_change_nothing_and_real_changes_adjust_counts() -> None:
    rt = handlers.Runtime(settings.Settings(), metrics=metrics.Metrics())
    index: dict[str, Any] = {}
    for name, arch in (("a", "amd64"), ("b", "arm64"), ("c", "arm64")):
        index[name] = [policy.node_from_object(objects.node(name, arch))]
        await _event(rt, index, name)
    assert _gauge(rt) == {("linux", "amd64"): 1, ("linux", "arm64"): 2}
    assert rt.platform_set == {"linux/amd64", "linux/arm64"}
    assert rt.reevaluation is not None
    rt.reevaluation.cancel()
    rt.reevaluation = None
    snapshot = rt.nodes.nodes()

    # A heartbeat: the same projection parsed again. No re-evaluation, same snapshot.
    index["b"] = [policy.node_from_object(objects.node("b", "arm64"))]
    await _event(rt, index, "b")
    assert rt.reevaluation is None and rt.nodes.nodes() is snapshot

    # The only amd64 node goes: its series disappears, the platform set shrinks.
    del index["a"]
    await _event(rt, index, "a")
    assert _gauge(rt) == {("linux", "arm64"): 2}
    assert rt.platform_set == {"linux/arm64"}
    assert sorted(n.name for n in rt.nodes.nodes()) == ["b", "c"]
    assert rt.reevaluation is not None
    rt.reevaluation.cancel()


def test_catch_up_takes_what_the_index_holds() -> None:
    rt = handlers.Runtime(settings.Settings(), metrics=metrics.Metrics())
    rt.node_index = {"a": [policy.node_from_object(objects.node("a", "arm64"))], "b": []}
    rt.catch_up()
    assert [n.name for n in rt.nodes.nodes()] == ["a"]
    assert _gauge(rt) == {("linux", "arm64"): 1}
