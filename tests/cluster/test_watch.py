"""kube.Watch against the real API server: paged lists, resumed watches, no event lost."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from archwarden import kube
from tests.cluster.cluster import LocalCluster

pytestmark = pytest.mark.cluster


class Seen:
    def __init__(self) -> None:
        self.objects: dict[str, dict[str, str]] = {}  # name -> labels, as last seen
        self.deleted: list[str] = []
        self.listed: list[set[str]] = []

    def on_object(self, body: Any) -> None:
        self.objects[body["metadata"]["name"]] = dict(body["metadata"].get("labels") or {})

    def on_deleted(self, body: Any) -> None:
        self.deleted.append(body["metadata"]["name"])
        self.objects.pop(body["metadata"]["name"], None)

    def on_listed(self, names: set[str]) -> None:
        self.listed.append(names)


async def until(check: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def running(watch: kube.Watch) -> AsyncIterator[None]:
    task = asyncio.create_task(watch.run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def namespace(cluster: LocalCluster, name: str, token: str) -> None:
    body = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": {"archwarden-watch-test": token}},
    }
    cluster.kubectl("create", "-f", "-", input=json.dumps(body))


async def test_lists_in_pages_then_follows_changes_across_resumed_watches(
    cluster: LocalCluster,
) -> None:
    token = secrets.token_hex(4)
    names = [f"watch-{token}-{i}" for i in range(3)]
    for name in names[:2]:
        namespace(cluster, name, token)
    seen = Seen()
    watch = kube.Watch(
        kube.Connection.from_api_client(kube.load_api_client(str(cluster.kubeconfig))),
        "/api/v1/namespaces",
        on_object=seen.on_object,
        on_deleted=seen.on_deleted,
        on_listed=seen.on_listed,
        page_size=1,  # two pages, and the continue token between them
        watch_seconds=1,  # the server ends each watch after a second: resumes, never relists
        selector={"labelSelector": f"archwarden-watch-test={token}"},
    )
    try:
        async with running(watch):
            await asyncio.wait_for(watch.synced.wait(), 30)
            assert seen.listed == [set(names[:2])]
            assert set(seen.objects) == set(names[:2])

            await asyncio.sleep(2.5)  # at least two watches ended and resumed
            cluster.kubectl("label", "namespace", names[0], "colour=blue")
            await until(lambda: seen.objects[names[0]].get("colour") == "blue", "the label")
            namespace(cluster, names[2], token)
            await until(lambda: names[2] in seen.objects, "the new namespace")
            cluster.kubectl("delete", "namespace", names[1], "--wait=false")
            await until(lambda: names[1] in seen.deleted, "the deletion")
            assert watch.lists == 1  # every resume continued from its resourceVersion
    finally:
        for name in names:
            cluster.kubectl("delete", "namespace", name, "--ignore-not-found", "--wait=false")
