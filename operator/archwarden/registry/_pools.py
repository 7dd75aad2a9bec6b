"""Connection pools, one per registry endpoint, so one registry cannot starve the others.

A single pool shared by every registry fills up with connections to whichever registry is
slowest (a hostile one trickling a byte a second), and then lookups to healthy registries
wait for a free connection and time out. Each endpoint (``host[:port]`` and CA bundle) gets its
own bounded pool; the number of pools kept is bounded too, since hosts are named by whoever
writes a pod spec. Pools in use are never closed; idle ones go least recently used first.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable

import httpx

__all__ = ["MAX_POOLS", "Pools"]

# Idle pools kept at most; more registries than this in use at once simply get more.
MAX_POOLS = 64

Factory = Callable[[str, str | None], httpx.AsyncClient]
"""Builds the client for (endpoint host, CA bundle path)."""


@dataclasses.dataclass
class _Pool:
    client: httpx.AsyncClient
    users: int = 0


class Pools:
    def __init__(self, factory: Factory, max_pools: int = MAX_POOLS) -> None:
        self._factory = factory
        self._max_pools = max_pools
        self._pools: dict[tuple[str, str | None], _Pool] = {}  # oldest use first

    def __len__(self) -> int:
        return len(self._pools)

    @contextlib.asynccontextmanager
    async def use(self, host: str, ca_file: str | None) -> AsyncIterator[httpx.AsyncClient]:
        key = (host, ca_file)
        pool = self._pools.pop(key, None)
        if pool is None:
            await self._trim(self._max_pools - 1)
            pool = _Pool(self._factory(host, ca_file))
        self._pools[key] = pool  # re-inserted: most recently used last
        pool.users += 1
        try:
            yield pool.client
        finally:
            pool.users -= 1

    async def _trim(self, keep: int) -> None:
        for key, pool in list(self._pools.items()):
            if len(self._pools) <= keep:
                return
            if pool.users == 0:
                del self._pools[key]
                await pool.client.aclose()

    async def aclose(self) -> None:
        pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            await pool.client.aclose()
