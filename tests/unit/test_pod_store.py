"""The pod store keeps a small projection, reports changes only, and is bounded."""

from __future__ import annotations

from typing import Any

from archwarden import pod_store


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
