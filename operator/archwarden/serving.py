"""The plain-HTTP side: /metrics, /healthz and /readyz (aiohttp, which kopf already uses)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiohttp import web

from archwarden import metrics

__all__ = ["HealthServer"]


class HealthServer:
    def __init__(
        self,
        meters: metrics.Metrics,
        ready: asyncio.Event,
        stale: Callable[[], str | None] = lambda: None,
    ) -> None:
        self._metrics = meters
        self._ready = ready
        self._stale = stale
        """Why the node inventory cannot be trusted any more (its watch down too long), or
        None."""
        self._runner: web.AppRunner | None = None

    async def _metrics_handler(self, _request: web.Request) -> web.Response:
        return web.Response(
            body=self._metrics.exposition(),
            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
        )

    async def _healthz(self, _request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, _request: web.Request) -> web.Response:
        # Ready only once the node inventory has synced: before that every decision would be
        # made against an empty cluster.
        if not self._ready.is_set():
            return web.Response(status=503, text="node inventory not synced yet\n")
        # Then ready while the inventory keeps up: nodes may have come and gone unseen while
        # the watch was down.
        stale = self._stale()
        if stale is not None:
            return web.Response(status=503, text=f"node inventory stale: {stale}\n")
        return web.Response(text="ok\n")

    async def start(self, address: str, port: int) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics_handler)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, address, port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
