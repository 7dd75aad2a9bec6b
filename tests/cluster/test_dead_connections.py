"""Connections to the real API server that die silently (issue 20).

archwarden reaches the API server through :class:`~tests.support.tcp_proxy.FaultyProxy` (a copy
of the kubeconfig points at it; TLS passes through). The proxy blackholes open connections
while new ones work (a load balancer's failover, a NAT timeout), resets them, or refuses new
ones. The watches here are short (``watch_seconds`` 4, idle deadline 6 s) to keep each test
within seconds; the defaults (20 s and 25 s) have the same shape. Cluster changes are made
directly (kubectl), never through the proxy, and off the event loop so that no timer is held up.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import socket
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from archwarden import handlers, kube, metrics, serving, settings
from tests.cluster.cluster import LocalCluster
from tests.support.tcp_proxy import FaultyProxy

pytestmark = pytest.mark.cluster

WATCH_SECONDS = 4
IDLE_SECONDS = 6.0


class Seen:
    def __init__(self) -> None:
        self.objects: dict[str, Any] = {}

    def on_object(self, body: Any) -> None:
        self.objects[body["metadata"]["name"]] = body

    def on_deleted(self, body: Any) -> None:
        self.objects.pop(body["metadata"]["name"], None)

    def on_listed(self, names: set[str]) -> None:
        for name in [n.rsplit("/", 1)[-1] for n in names]:
            assert name in self.objects


async def until(check: Callable[[], bool], what: str, timeout: float) -> float:
    """Seconds it took ``check`` to hold; fails past ``timeout``."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(0.05)
    return time.monotonic() - start


@contextlib.asynccontextmanager
async def running(watch: kube.Watch) -> AsyncIterator[None]:
    task = asyncio.create_task(watch.run())
    try:
        await asyncio.wait_for(watch.synced.wait(), 30)
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def proxied_kubeconfig(cluster: LocalCluster, port: int, directory: Path) -> str:
    config = yaml.safe_load(cluster.kubeconfig.read_text())
    for entry in config["clusters"]:
        entry["cluster"]["server"] = f"https://127.0.0.1:{port}"
    path = directory / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return str(path)


@contextlib.asynccontextmanager
async def proxied(cluster: LocalCluster, directory: Path) -> AsyncIterator[tuple[FaultyProxy, str]]:
    async with FaultyProxy(cluster.ports()["API_PORT"]) as proxy:
        yield proxy, proxied_kubeconfig(cluster, proxy.port, directory)


def watch_of(kubeconfig: str, path: str, seen: Seen, **options: Any) -> kube.Watch:
    connection = kube.Connection.from_api_client(
        kube.load_api_client(kubeconfig), watch_seconds=WATCH_SECONDS, idle_seconds=IDLE_SECONDS
    )
    return kube.Watch(
        connection,
        path,
        on_object=seen.on_object,
        on_deleted=seen.on_deleted,
        on_listed=seen.on_listed,
        **options,
    )


async def kubectl(cluster: LocalCluster, *args: str, input: str | None = None) -> None:
    await asyncio.to_thread(cluster.kubectl, *args, input=input)


async def test_the_node_watch_notices_a_blackholed_connection_and_catches_up(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    name = f"deadconn-{secrets.token_hex(3)}"
    seen = Seen()
    try:
        async with proxied(cluster, tmp_path) as (proxy, kubeconfig):
            watch = watch_of(kubeconfig, "/api/v1/nodes", seen)
            async with running(watch):
                # Quiet but healthy: the server's bookmarks and ends keep the deadline away.
                await asyncio.sleep(2.5 * WATCH_SECONDS)
                assert watch.restarts == {}
                assert watch.stale_seconds() == 0

                proxy.blackhole()
                blackholed = time.monotonic()
                await asyncio.to_thread(cluster.add_node, name, "s390x", wait_ready=False)
                await until(
                    lambda: name in seen.objects, "the node added meanwhile", IDLE_SECONDS + 10
                )
                took = time.monotonic() - blackholed
                print(f"node seen {took:.1f}s after the blackhole (idle deadline {IDLE_SECONDS}s)")
                assert took < IDLE_SECONDS + 3
                assert watch.restarts == {"idle": 1}
                assert watch.lists == 1  # resumed from its resourceVersion, not listed again
                assert watch.stale_seconds() == 0
    finally:
        await asyncio.to_thread(cluster.delete_node, name, wait=False)


async def test_a_reset_connection_resumes_at_once(cluster: LocalCluster, tmp_path: Path) -> None:
    token = secrets.token_hex(3)
    name = f"deadconn-rst-{token}"
    seen = Seen()
    try:
        async with proxied(cluster, tmp_path) as (proxy, kubeconfig):
            watch = watch_of(
                kubeconfig,
                "/api/v1/namespaces",
                seen,
                selector={"labelSelector": f"archwarden-deadconn={token}"},
            )
            async with running(watch):
                await asyncio.sleep(1)
                proxy.reset()
                body = {
                    "apiVersion": "v1",
                    "kind": "Namespace",
                    "metadata": {"name": name, "labels": {"archwarden-deadconn": token}},
                }
                await kubectl(cluster, "create", "-f", "-", input=json.dumps(body))
                took = await until(lambda: name in seen.objects, "the new namespace", 10)
                print(f"namespace seen {took:.1f}s after the reset")
                assert took < 3
                assert watch.restarts == {"connection": 1}
                assert watch.lists == 1
    finally:
        await asyncio.to_thread(cluster.delete_namespace, name)


def compact_etcd(cluster: LocalCluster) -> int:
    """Compacts etcd at its current revision (the v3 HTTP gateway); returns the revision."""
    base = f"http://127.0.0.1:{cluster.ports()['ETCD_PORT']}/v3"
    # A range over a key that does not exist still reports the store's revision.
    answer = httpx.post(f"{base}/kv/range", json={"key": "AA=="}, timeout=10).json()
    revision = int(answer["header"]["revision"])
    httpx.post(
        f"{base}/kv/compaction", json={"revision": revision, "physical": True}, timeout=10
    ).raise_for_status()
    return revision


def event(namespace: str, name: str) -> str:
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": namespace},
            "involvedObject": {"kind": "Pod", "name": "none", "namespace": namespace},
            "reason": "DeadConnectionTest",
            "message": "written while archwarden's watch was disconnected",
            "type": "Normal",
        }
    )


async def test_compaction_while_disconnected_lists_again(
    cluster: LocalCluster, namespace: str, tmp_path: Path
) -> None:
    # Events have no watch cache in kube-apiserver (DefaultWatchCacheSizes: events 0): their
    # watches read etcd itself, so a compacted revision is a 410 at once.
    seen = Seen()
    async with proxied(cluster, tmp_path) as (proxy, kubeconfig):
        watch = watch_of(kubeconfig, f"/api/v1/namespaces/{namespace}/events", seen)
        async with running(watch):
            await kubectl(cluster, "create", "-f", "-", input=event(namespace, "before"))
            await until(lambda: "before" in seen.objects, "the first event", 10)

            proxy.down()
            await kubectl(cluster, "create", "-f", "-", input=event(namespace, "during"))
            await asyncio.to_thread(compact_etcd, cluster)
            await until(lambda: watch.restarts.get("idle", 0) >= 1, "the idle deadline", 15)
            assert "during" not in seen.objects
            proxy.up()

            took = await until(lambda: "during" in seen.objects, "the event written meanwhile", 15)
            print(f"event seen {took:.1f}s after reconnecting; restarts {watch.restarts}")
            assert watch.restarts.get("gone") == 1
            assert watch.lists == 2  # listed again after the 410


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_readyz_says_not_ready_while_the_node_inventory_is_stale(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    config = settings.Settings(
        kube=settings.KubeSettings(
            watch_seconds=WATCH_SECONDS, watch_idle_seconds=IDLE_SECONDS, inventory_stale_seconds=2
        )
    )
    rt = handlers.Runtime(config=config)
    seen = Seen()
    port = free_port()
    async with proxied(cluster, tmp_path) as (proxy, kubeconfig):
        rt.watches = [watch_of(kubeconfig, "/api/v1/nodes", seen)]
        rt.ready.set()
        health = serving.HealthServer(metrics.Metrics(), rt.ready, rt.inventory_stale)
        await health.start("127.0.0.1", port)
        try:
            async with (
                running(rt.watches[0]),
                httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client,
            ):

                async def status() -> int:
                    return (await client.get("/readyz")).status_code

                assert await status() == 200
                proxy.down()
                down = time.monotonic()
                # Noticed at the idle deadline, stale past the bound counted from the last byte.
                while await status() == 200:
                    assert time.monotonic() - down < IDLE_SECONDS + 5, "still ready"
                    await asyncio.sleep(0.2)
                answer = await client.get("/readyz")
                print(f"unready {time.monotonic() - down:.1f}s after going down: {answer.text!r}")
                assert "node inventory stale: node watch down for" in answer.text
                assert "idle" in answer.text

                proxy.up()
                up = time.monotonic()
                while await status() != 200:
                    assert time.monotonic() - up < 15, "still not ready"
                    await asyncio.sleep(0.2)
                print(f"ready again {time.monotonic() - up:.1f}s after coming back")
        finally:
            await health.stop()


async def test_a_read_on_a_dead_pooled_connection_times_out_and_retries_on_a_new_one(
    cluster: LocalCluster, namespace: str, tmp_path: Path
) -> None:
    body = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "pull", "namespace": namespace},
        "type": "kubernetes.io/dockerconfigjson",
        "data": {".dockerconfigjson": "e30="},
    }
    await kubectl(cluster, "create", "-f", "-", input=json.dumps(body))
    async with proxied(cluster, tmp_path) as (proxy, kubeconfig):
        reader = kube.ApiReader(kube.load_api_client(kubeconfig, request_timeout=1))
        # Reads at once: several connections now wait in the pool.
        await asyncio.gather(*(reader.secret(namespace, "pull") for _ in range(6)))
        assert proxy.open_connections >= 2

        proxy.blackhole()
        start = time.monotonic()
        secret = await asyncio.wait_for(reader.secret(namespace, "pull"), 10)
        took = time.monotonic() - start
        print(f"read on a dead pooled connection answered in {took:.2f}s")
        assert secret["metadata"]["name"] == "pull"
        assert 1 <= took < 2.5  # one timeout, then a new connection

        # New connections fail too: the read fails within its timeouts, and the next one
        # after recovery opens a new connection rather than take one of the dead pooled ones.
        proxy.down()
        start = time.monotonic()
        with pytest.raises(kube.ApiUnavailable):
            await asyncio.wait_for(reader.secret(namespace, "pull"), 10)
        took = time.monotonic() - start
        print(f"read with the server unreachable failed in {took:.2f}s")
        assert took < 3
        proxy.up()
        start = time.monotonic()
        await asyncio.wait_for(
            asyncio.gather(*(reader.secret(namespace, "pull") for _ in range(6))), 10
        )
        took = time.monotonic() - start
        print(f"reads at once after recovery answered in {took:.2f}s")
        assert took < 1
