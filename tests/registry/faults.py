"""Small aiohttp servers on 127.0.0.1 for faults a real registry cannot be made to produce:
rate limits, server errors, stalls, oversize or lying documents, cross-host redirects."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


@dataclass
class Seen:
    method: str
    path: str
    authorization: str | None
    accept_encoding: str | None = None


@dataclass
class FaultServer:
    host: str
    requests: list[Seen] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    @property
    def accept_encodings(self) -> list[str | None]:
        return [r.accept_encoding for r in self.requests]


@contextlib.asynccontextmanager
async def fault_server(handler: Handler) -> AsyncIterator[FaultServer]:
    server = FaultServer(host="")

    async def recording(request: web.Request) -> web.StreamResponse:
        server.requests.append(
            Seen(
                request.method,
                request.path_qs,
                request.headers.get("Authorization"),
                request.headers.get("Accept-Encoding"),
            )
        )
        return await handler(request)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", recording)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    sockets = site._server.sockets if site._server else []
    server.host = f"127.0.0.1:{sockets[0].getsockname()[1]}"
    try:
        yield server
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def stalled_server() -> AsyncIterator[str]:
    """Accepts connections and never answers: a registry hung past the timeout."""
    writers: list[asyncio.StreamWriter] = []

    async def hold(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    host = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        yield host
    finally:
        for writer in writers:
            writer.close()
        server.close()
        await server.wait_closed()


@contextlib.asynccontextmanager
async def trickle_server(interval: float = 0.1, lasting: float = 10.0) -> AsyncIterator[str]:
    """Answers 200 and then sends its body one byte per ``interval``: every read succeeds
    within any per-read timeout, so only an overall deadline ends a lookup. Each connection
    gives up after ``lasting`` seconds, and all are closed when the block exits."""
    tasks: set[asyncio.Task[None]] = set()

    async def trickle(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: " + OCI_MANIFEST.encode() + b"\r\n"
                b"Content-Length: 100000\r\n\r\n{"
            )
            loop = asyncio.get_running_loop()
            until = loop.time() + lasting
            while loop.time() < until:
                await writer.drain()
                await asyncio.sleep(interval)
                writer.write(b" ")
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
            tasks.discard(task)

    server = await asyncio.start_server(trickle, "127.0.0.1", 0)
    host = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        yield host
    finally:
        server.close()
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def single_image(platform: dict[str, str]) -> tuple[bytes, bytes]:
    """(manifest, config) for a single-arch OCI image; layers are never fetched."""
    config = json.dumps({**platform, "rootfs": {"type": "layers", "diff_ids": []}}).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": digest(config),
                "size": len(config),
            },
            "layers": [],
        }
    ).encode()
    return manifest, config


def manifest_response(body: bytes, media_type: str = OCI_MANIFEST) -> web.Response:
    return web.Response(
        body=body,
        headers={"Content-Type": media_type, "Docker-Content-Digest": digest(body)},
    )
