"""The workload store: what re-evaluation judges, kept from the workload streams."""

from __future__ import annotations

import tracemalloc
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


def tolerating(name: str, tolerations: list[dict[str, str]]) -> dict[str, Any]:
    body = deployment(name)
    body["spec"]["replicas"] = 0
    body["spec"]["template"]["spec"]["tolerations"] = tolerations
    return body


def test_a_template_past_its_bound_is_counted_and_its_constraints_not_kept() -> None:
    # The issue's cluster: 40 Deployments (replicas 0) of 35,000 distinct tolerations each held
    # archwarden at 720 MiB; a quarter of them, kept whole, retain 37 MiB here (tracing the
    # temporary objects of 40 took most of a minute). One list serves every Deployment (built
    # before tracing), so only what the store makes of them is measured.
    tolerations = [
        {"key": f"example.com/t{i}", "operator": "Equal", "value": f"v{i}", "effect": "NoSchedule"}
        for i in range(35_000)
    ]
    store = workload_store.WorkloadStore()
    tracemalloc.start()
    try:
        for n in range(10):
            store.put("Deployment", "apps/v1", tolerating(f"d{n}", tolerations))
        retained, _peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert retained < 5 * 2**20, f"{retained / 2**20:.1f} MiB retained"
    assert len(store) == 10 and store.oversized == 10
    body = {**tolerating("d0", tolerations), "kind": "Deployment"}
    least = policy.least_projected_bytes(body)  # refused before anything was built
    assert store.template_bytes < least <= policy.extract(body).template.projected_bytes
    entry = store.get(("Deployment", "team", "d0"))
    assert entry is not None and entry.oversized == least
    assert entry.workload.template.containers == () and entry.workload.template.tolerations == ()
    assert entry.ref["metadata"] == {"name": "d0", "namespace": "team", "uid": "uid-d0"}

    # Written small again: kept whole, no longer counted; a removal is uncounted too.
    store.put("Deployment", "apps/v1", deployment("d0"))
    entry = store.get(("Deployment", "team", "d0"))
    assert entry is not None and not entry.oversized and store.oversized == 9
    store.remove(("Deployment", "team", "d1"))
    store.keep_only("Deployment", {"team/d0", "team/d2"})
    assert store.oversized == 1 and len(store) == 2


def test_a_template_within_its_bound_is_kept_as_extracted() -> None:
    body = deployment("web", image="r.example/app:1")
    spec = body["spec"]["template"]["spec"]
    spec["nodeSelector"] = {"kubernetes.io/arch": "arm64"}
    spec["tolerations"] = [{"key": "gpu", "operator": "Exists"}, {"key": "spot", "value": "y"}]
    spec["imagePullSecrets"] = [{"name": "pull"}]
    spec["affinity"] = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}
                ]
            }
        }
    }
    expected = policy.extract({**body, "kind": "Deployment"})
    # The bound is inclusive: a template of exactly limits.templateBytes is kept.
    store = workload_store.WorkloadStore(template_bytes=expected.template.projected_bytes)
    store.put("Deployment", "apps/v1", body)
    entry = store.get(("Deployment", "team", "web"))
    assert entry is not None and entry.workload == expected
    assert entry.oversized == 0 and store.oversized == 0

    smaller = workload_store.WorkloadStore(template_bytes=expected.template.projected_bytes - 1)
    smaller.put("Deployment", "apps/v1", body)
    entry = smaller.get(("Deployment", "team", "web"))
    assert entry is not None and entry.oversized == expected.template.projected_bytes
    assert smaller.oversized == 1


def test_repeated_tolerations_are_kept_once_in_order() -> None:
    gpu = {"key": "gpu", "operator": "Exists"}
    spot = {"key": "spot", "value": "y", "effect": "NoSchedule"}
    store = workload_store.WorkloadStore()
    store.put("Deployment", "apps/v1", tolerating("web", [gpu, spot, gpu] + [spot] * 1000))
    entry = store.get(("Deployment", "team", "web"))
    assert entry is not None
    assert entry.workload.template.tolerations == (
        policy.Toleration(key="gpu", operator="Exists"),
        policy.Toleration(key="spot", value="y", effect="NoSchedule"),
    )


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

    rt = handlers.Runtime(settings.Settings(), metrics=metrics.Metrics(), leading=True)
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


async def test_reevaluation_never_judges_a_workload_kept_without_its_template() -> None:
    from archwarden import platforms

    store = workload_store.WorkloadStore(template_bytes=1024)
    rt = handlers.Runtime(
        settings.Settings(), metrics=metrics.Metrics(), workloads=store, leading=True
    )
    posts = Posts()
    rt.poster = posts  # type: ignore[assignment]
    rt.admission = Answers({"r.example/arm:1": (platforms.parse("linux/arm64"),)})
    rt.note_node("amd-1", policy.node_from_object(objects.node("amd-1", "amd64")))
    rt.workloads.put("Deployment", "apps/v1", deployment("arm", image="r.example/arm:1"))
    await handlers._reevaluate(rt)
    assert posts.posted == [("arm", "ArchitectureUnavailable")]
    assert list(rt.stranded) == [("Deployment", "team", "arm")]

    # Now past limits.templateBytes: the earlier verdict is dropped and nothing is said.
    big = [{"key": f"k{i}", "operator": "Exists"} for i in range(100)]
    body = tolerating("arm", big)
    body["spec"]["template"]["spec"]["containers"][0]["image"] = "r.example/arm:1"
    rt.workloads.put("Deployment", "apps/v1", body)
    judged = rt.metrics.reevaluated._value.get()
    rt.reevaluate_all = True
    await handlers._reevaluate(rt)
    assert posts.posted == [("arm", "ArchitectureUnavailable")]
    assert rt.stranded == {} and rt.metrics.reevaluated._value.get() == judged
    assert rt.metrics.workloads_unschedulable.collect()[0].samples == []
    assert rt.metrics.registry.get_sample_value("archwarden_templates_oversized") == 1
