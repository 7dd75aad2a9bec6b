"""Connection pools per registry endpoint: bounded in number, never closed while in use."""

from __future__ import annotations

import ssl
from typing import Any

import httpx
import pytest

from archwarden import registry
from archwarden.registry import _pools


def factory(made: list[httpx.AsyncClient]) -> _pools.Factory:
    def make(host: str, ca_file: str | None) -> httpx.AsyncClient:
        client = httpx.AsyncClient(transport=httpx.MockTransport(lambda r: httpx.Response(200)))
        made.append(client)
        return client

    return make


async def test_one_pool_per_endpoint_and_idle_ones_are_closed_oldest_first() -> None:
    made: list[httpx.AsyncClient] = []
    pools = _pools.Pools(factory(made), max_pools=2)
    async with pools.use("a:1", None) as a, pools.use("a:1", None) as again:
        assert a is again
    async with pools.use("b:1", None), pools.use("b:1", "ca.pem"):
        pass
    assert len(pools) == 2 and made[0].is_closed and not made[1].is_closed
    await pools.aclose()
    assert all(c.is_closed for c in made)


async def test_pools_in_use_are_not_closed() -> None:
    made: list[httpx.AsyncClient] = []
    pools = _pools.Pools(factory(made), max_pools=1)
    async with pools.use("a:1", None), pools.use("b:1", None), pools.use("c:1", None):
        assert not any(c.is_closed for c in made)
    async with pools.use("d:1", None):
        pass
    assert [c.is_closed for c in made] == [True, True, True, False]
    await pools.aclose()


async def test_a_new_registry_does_not_load_the_ca_store_on_the_event_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Loading the system CA store takes 50-200 ms of CPU: once per registry named in a pod
    # spec, 64 images on 64 hosts blocked the event loop (and /healthz) for seconds.
    made: list[str | None] = []
    real = ssl.create_default_context

    def counting(*args: Any, cafile: str | None = None, **kwargs: Any) -> ssl.SSLContext:
        made.append(cafile)
        return real(*args, cafile=cafile, **kwargs)

    monkeypatch.setattr(ssl, "create_default_context", counting)
    client = registry.RegistryClient()
    assert made == [None]  # built with the client, outside any review
    for i in range(5):
        async with client._pools.use(f"registry-{i}.example:443", None):
            pass
    assert made == [None]
    await client.aclose()
