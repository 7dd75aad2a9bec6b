"""The pod store keeps a small projection, reports changes only, and is bounded."""

from __future__ import annotations

from typing import Any

import pytest

from archwarden import pod_store, reference


def pod_body(name: str = "web-1", **status: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": "team",
            "uid": "u-1",
            "resourceVersion": "7",
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "name": "web-5d4",
                    "controller": True,
                }
            ],
        },
        "spec": {
            "nodeName": "node-a",
            "initContainers": [{"name": "init", "image": "reg/init:1"}],
            "containers": [{"name": "app", "image": "reg/app:1"}],
        },
        "status": {"phase": "Running", **status},
    }


def test_projection_keeps_what_findings_read() -> None:
    body = pod_body(
        containerStatuses=[
            {
                "name": "app",
                "image": "reg/app:1",
                "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 10s"}},
                "lastState": {
                    "terminated": {"reason": "StartError", "message": "exec format error"}
                },
            }
        ],
        conditions=[
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "x"}
        ],
    )
    pod = pod_store.project(body)
    assert (pod.namespace, pod.name, pod.uid, pod.node, pod.phase) == (
        "team",
        "web-1",
        "u-1",
        "node-a",
        "Running",
    )
    assert (pod.owner_kind, pod.owner_name) == ("ReplicaSet", "web-5d4")
    assert pod.images == (("init", "reg/init:1"), ("app", "reg/app:1"))
    assert [(p.state, p.reason, p.message) for p in pod.problems] == [
        ("waiting", "CrashLoopBackOff", "back-off 10s"),
        ("terminated", "StartError", "exec format error"),
    ]
    assert all(p.image == "reg/app:1" for p in pod.problems)
    assert pod.unschedulable == "x"
    assert pod.body["metadata"]["ownerReferences"][0]["kind"] == "ReplicaSet"


def test_long_messages_are_cut() -> None:
    body = pod_body(
        containerStatuses=[
            {"name": "app", "state": {"terminated": {"reason": "Error", "message": "m" * 10_000}}}
        ]
    )
    assert len(pod_store.project(body).problems[0].message) == pod_store.TEXT_MAX


def test_heartbeats_are_not_reported_and_changes_are() -> None:
    store = pod_store.PodStore()
    seen: list[tuple[object, object]] = []
    store.on_changed = lambda old, new: seen.append((old, new))
    store.put(pod_body())
    again = pod_body()
    again["metadata"]["resourceVersion"] = "8"  # not projected: no change
    store.put(again)
    assert len(seen) == 1 and seen[0][0] is None
    store.put(pod_body(phase="Failed"))
    assert len(seen) == 2 and seen[1][0] is not None


def test_deleted_and_unlisted_pods_leave() -> None:
    store = pod_store.PodStore()
    store.put(pod_body("a"))
    store.put(pod_body("b"))
    store.delete(pod_body("a"))
    assert store.get("team", "a") is None
    store.keep_only(set())
    assert len(store) == 0


def test_bounded() -> None:
    store = pod_store.PodStore(limit=2)
    for name in "abc":
        store.put(pod_body(name))
    assert len(store) == 2 and store.refused == 1
    store.put(pod_body("a", phase="Succeeded"))  # a kept pod still updates
    pod = store.get("team", "a")
    assert pod is not None and pod.phase == "Succeeded"


def test_an_image_longer_than_any_reference_is_kept_cut_and_never_parses() -> None:
    long = [f"reg.example/{i:02d}/" + "a" * 20 * 1024 for i in range(pod_store.MAX_CONTAINERS)]
    body = pod_body()
    body["spec"]["initContainers"] = []
    body["spec"]["containers"] = [{"name": f"c{i}", "image": im} for i, im in enumerate(long)]
    body["status"]["containerStatuses"] = [
        {"name": "c0", "state": {"waiting": {"reason": "InvalidImageName", "message": "bad"}}},
        {"name": "gone", "image": long[1], "state": {"terminated": {"message": "x"}}},
    ]
    pod = pod_store.project(body)
    kept = [image for _name, image in pod.images] + [p.image for p in pod.problems]
    assert len(kept) == pod_store.MAX_CONTAINERS + 2
    assert sum(len(image) for image in kept) < len(kept) * 200
    assert pod.images[5][1] == long[5][:128] + f"…(cut, {len(long[5])} characters)"
    assert pod.problems[1].image == pod.images[1][1]
    for image in kept:
        with pytest.raises(reference.InvalidReference):
            reference.parse(image)
    # Up to the reference bound an image is kept as written, valid or not.
    body["spec"]["containers"] = [{"name": "c", "image": "r/" + "a" * 1022}]
    assert pod_store.project(body).images[0][1] == "r/" + "a" * 1022


def test_names_reasons_and_arch_pins_are_bounded() -> None:
    huge = "x" * 100_000
    body = pod_body(
        phase=huge,
        containerStatuses=[
            {
                "name": huge,
                "image": "reg/app:1",
                "state": {"waiting": {"reason": huge, "message": "m"}},
            }
        ],
    )
    body["metadata"]["ownerReferences"][0].update(kind=huge, name="web-5d4" + huge)
    body["spec"]["nodeSelector"] = {"kubernetes.io/arch": huge}
    pod = pod_store.project(body)
    assert pod.owner_name == ("web-5d4" + huge)[: pod_store.NAME_MAX] + "…"
    for text in (pod.owner_kind, pod.phase, pod.problems[0].container, pod.problems[0].reason):
        assert text == "x" * pod_store.NAME_MAX + "…"
    assert pod.pinned_arches == ("x" * 63 + "…",)

    # A required term listing more values than there are architectures pins nothing kept.
    values = ["arm64", *(f"arch-{i}" for i in range(35_000))]
    body["spec"]["nodeSelector"] = {}
    body["spec"]["affinity"] = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {
                        "matchExpressions": [
                            {"key": "kubernetes.io/arch", "operator": "In", "values": values}
                        ]
                    }
                ]
            }
        }
    }
    assert pod_store.project(body).pinned_arches == ()
    values[pod_store.MAX_PINNED :] = []
    assert len(pod_store.project(body).pinned_arches) == pod_store.MAX_PINNED
