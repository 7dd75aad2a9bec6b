"""EventPoster's Event bodies (a fake CoreV1Api records them; the e2e suite posts real ones)."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from archwarden import kube

POD = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web-0", "namespace": "team"}}


class FakeCore:
    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []

    def create_namespaced_event(self, namespace: str, body: dict[str, Any], **_: Any) -> None:
        self.bodies.append(body)


async def posted(poster: kube.EventPoster) -> list[dict[str, Any]]:
    core = FakeCore()
    poster._core = core  # type: ignore[assignment]
    poster.post(POD, "Warning", "ArchitectureMismatch", "image supports linux/amd64 only")
    await asyncio.gather(*poster._tasks)
    return core.bodies


async def test_each_replica_reports_its_own_instance() -> None:
    (first,) = await posted(kube.EventPoster(None, instance="archwarden-6f7c9-abcde"))
    (second,) = await posted(kube.EventPoster(None, instance="archwarden-6f7c9-fghij"))
    assert first["reportingComponent"] == second["reportingComponent"] == "archwarden"
    assert first["reportingInstance"] == "archwarden-6f7c9-abcde"
    assert second["reportingInstance"] == "archwarden-6f7c9-fghij"


async def test_the_instance_is_the_pod_name_else_the_host_name_and_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("POD_NAME", "archwarden-6f7c9-klmno")  # set by the chart's Deployment
    (body,) = await posted(kube.EventPoster(None))
    assert body["reportingInstance"] == "archwarden-6f7c9-klmno"
    monkeypatch.delenv("POD_NAME")
    (body,) = await posted(kube.EventPoster(None))
    assert body["reportingInstance"] == socket.gethostname()[:128]
    (long,) = await posted(kube.EventPoster(None, instance="x" * 300))
    assert long["reportingInstance"] == "x" * 128


async def test_every_replica_names_one_decision_alike_and_two_decisions_apart() -> None:
    (first,) = await posted(kube.EventPoster(None, instance="archwarden-6f7c9-abcde"))
    (second,) = await posted(kube.EventPoster(None, instance="archwarden-6f7c9-fghij"))
    assert first["metadata"]["name"] == second["metadata"]["name"]
    assert first["metadata"]["name"].startswith("web-0.")
    assert "generateName" not in first["metadata"]
    other = kube.event_body(POD, "Warning", "ArchitectureMismatch", "another message", "a")
    assert other["metadata"]["name"] != first["metadata"]["name"]
