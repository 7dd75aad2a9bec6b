"""The workload store: what re-evaluation judges, kept from the workload streams."""

from __future__ import annotations

from typing import Any

from archwarden import handlers, metrics, policy, settings, workload_store
from tests.policy import objects


def deployment(name: str, image: str = "r.example/app:1", **meta: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "team", "uid": f"uid-{name}", **meta},
        "spec": {"template": {"spec": {"containers": [{"name": "c", "image": image}]}}},
    }


def test_keeps_top_level_workloads_and_drops_owned_invalid_and_vanished_ones() -> None:
    store = workload_store.WorkloadStore(excluded_namespaces={"kube-system"})
    removed: list[workload_store.Key] = []
    store.on_removed = removed.append
    store.put("Deployment", "apps/v1", deployment("web"))
    store.put("Deployment", "apps/v1", deployment("db"))
    owned = deployment("web-5d8f", ownerReferences=[{"kind": "Deployment", "controller": True}])
    store.put("ReplicaSet", "apps/v1", owned)
    store.put(
        "Deployment",
        "apps/v1",
        {**deployment("sys"), "metadata": {"name": "sys", "namespace": "kube-system"}},
    )
    assert sorted(store) == [("Deployment", "team", "db"), ("Deployment", "team", "web")]
    entry = store.get(("Deployment", "team", "web"))
    assert entry is not None and entry.workload.template.images == ("r.example/app:1",)
    assert entry.ref == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "team", "uid": "uid-web"},
    }
    # Broken now: no longer judged.
    store.put("Deployment", "apps/v1", {**deployment("db"), "spec": {"template": {"spec": 7}}})
    assert removed == [("Deployment", "team", "db")]
    # A relist that no longer holds "web" drops it; other kinds are untouched.
    store.put("Job", "batch/v1", deployment("batch"))
    store.keep_only("Deployment", set())
    assert list(store) == [("Job", "team", "batch")]


def test_past_its_limit_new_workloads_are_counted_not_kept() -> None:
    store = workload_store.WorkloadStore(limit=2)
    for name in ("a", "b", "c"):
        store.put("Deployment", "apps/v1", deployment(name))
    assert len(store) == 2 and store.refused == 1
    store.put("Deployment", "apps/v1", deployment("a", image="r.example/app:2"))  # updates fit
    entry = store.get(("Deployment", "team", "a"))
    assert entry is not None and entry.workload.template.images == ("r.example/app:2",)


class Posts:
    def __init__(self) -> None:
        self.posted: list[tuple[str, str]] = []

    def post(self, ref: Any, kind: str, reason: str, message: str) -> None:
        self.posted.append((ref["metadata"]["name"], reason))


class Answers:
    """The engine's cached answers, all re-evaluation reads of it."""

    def __init__(self, held: dict[str, tuple[Any, ...]]) -> None:
        self.held = held

    def held_platforms(self, image: str) -> tuple[Any, ...] | None:
        return self.held.get(image)


async def test_reevaluation_judges_only_workloads_a_changed_class_concerns() -> None:
    from archwarden import platforms

    rt = handlers.Runtime(settings.Settings(), metrics=metrics.Metrics())
    posts = Posts()
    rt.poster = posts  # type: ignore[assignment]
    rt.admission = Answers(  # type: ignore[assignment]
        {
            "r.example/arm:1": (platforms.parse("linux/arm64"),),
            "r.example/multi:1": (platforms.parse("linux/arm64"), platforms.parse("linux/amd64")),
        }
    )
    for name, arch in (("amd-1", "amd64"), ("arm-1", "arm64")):
        rt.note_node(name, policy.node_from_object(objects.node(name, arch)))
    pinned = deployment("amd-only", image="r.example/multi:1")
    pinned["spec"]["template"]["spec"]["nodeSelector"] = {"kubernetes.io/arch": "amd64"}
    rt.workloads.put("Deployment", "apps/v1", pinned)
    rt.workloads.put("Deployment", "apps/v1", deployment("arm", image="r.example/arm:1"))
    rt.workloads.put("Deployment", "apps/v1", deployment("multi", image="r.example/multi:1"))
    await handlers._reevaluate(rt)  # the first run judges everything
    assert rt.stranded == {} and posts.posted == []
    judged = rt.metrics.reevaluated._value.get()
    assert judged == 3

    # The only arm64 node goes: the amd64-pinned workload is not concerned and not judged.
    rt.note_node("arm-1", None)
    await handlers._reevaluate(rt)
    assert rt.metrics.reevaluated._value.get() - judged == 2
    assert posts.posted == [("arm", "ArchitectureUnavailable")]
    assert list(rt.stranded) == [("Deployment", "team", "arm")]
    samples = rt.metrics.workloads_unschedulable.collect()[0].samples
    assert [(s.labels["kind"], s.value) for s in samples] == [("Deployment", 1.0)]

    # Deleted: no longer counted as stranded.
    rt.workloads.remove(("Deployment", "team", "arm"))
    assert rt.stranded == {}
    assert rt.metrics.workloads_unschedulable.collect()[0].samples == []
