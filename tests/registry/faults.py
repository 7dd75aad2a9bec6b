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
