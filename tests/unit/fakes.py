"""An in-memory registry behind ``httpx.MockTransport`` for unit tests (no network)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import Callable
from typing import Any

import httpx

from archwarden.registry import ClientSettings, CredentialStore, RegistryClient, RegistrySettings
from tests import fixtures

__all__ = [
    "FIXTURES",
    "HOST",
    "FakeRegistry",
    "digest_of",
    "error_body",
    "fixture",
    "make_client",
]

FIXTURES = fixtures.MANIFESTS
HOST = "registry.test"

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"

_MANIFEST_PATH = re.compile(r"/v2/(?P<repo>.+)/manifests/(?P<ref>[^/]+)")
_BLOB_PATH = re.compile(r"/v2/(?P<repo>.+)/blobs/(?P<digest>[^/]+)")

Interceptor = Callable[[httpx.Request], httpx.Response | None]


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def fixture(name: str) -> bytes:
    return fixtures.manifest(name)


def error_body(code: str, message: str, detail: Any = None) -> bytes:
    return json.dumps({"errors": [{"code": code, "message": message, "detail": detail}]}).encode()


class FakeRegistry:
    """Serves manifests and blobs for one host and records every request it sees."""

    def __init__(self, host: str = HOST) -> None:
        self.host = host
        self.manifests: dict[tuple[str, str], tuple[bytes, str, str]] = {}
        self.blobs: dict[tuple[str, str], bytes] = {}
        self.requests: list[httpx.Request] = []
        self.intercept: Interceptor | None = None
        """Sees each request first; a non-None answer is returned instead of the normal one."""
        self.gate: asyncio.Event | None = None
        """When set, every request waits for this event before it is answered."""

    # -- content ------------------------------------------------------------------------------

    def put_manifest(
        self,
        repo: str,
        body: bytes,
        *,
        tags: tuple[str, ...] = (),
        content_type: str | None = None,
        digest: str | None = None,
    ) -> str:
        """Store ``body``; it is served by its digest and by each tag. Returns the digest."""
        if content_type is None:
            content_type = json.loads(body)["mediaType"]
        digest = digest or digest_of(body)
        for ref in (digest, *tags):
            self.manifests[(repo, ref)] = (body, content_type, digest)
        return digest

    def put_blob(self, repo: str, body: bytes) -> str:
        digest = digest_of(body)
        self.blobs[(repo, digest)] = body
        return digest

    # -- requests -----------------------------------------------------------------------------

    def count(self, method: str | None = None, kind: str | None = None) -> int:
        """Requests seen, optionally only one method and one kind (manifests, blobs, token)."""
        return sum(
            1
            for r in self.requests
            if (method is None or r.method == method) and (kind is None or kind in r.url.path)
        )

    async def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.gate is not None:
            await self.gate.wait()
        if self.intercept is not None:
            answer = self.intercept(request)
            if answer is not None:
                return answer
        return self.serve(request)

    def serve(self, request: httpx.Request) -> httpx.Response:
        if request.url.host != self.host:
            return httpx.Response(404, text="404 page not found")
        path = request.url.path
        if match := _MANIFEST_PATH.fullmatch(path):
            key = (match["repo"], match["ref"])
            if key not in self.manifests:
                return self._error(
                    request, 404, "MANIFEST_UNKNOWN", "manifest unknown", {"Tag": key[1]}
                )
            body, content_type, digest = self.manifests[key]
            headers = {
                "Content-Type": content_type,
                "Docker-Content-Digest": digest,
                "Content-Length": str(len(body)),
            }
            if request.method == "HEAD":
                return httpx.Response(200, headers=headers)
            return httpx.Response(200, headers=headers, content=body)
        if match := _BLOB_PATH.fullmatch(path):
            key = (match["repo"], match["digest"])
            if key not in self.blobs:
                return self._error(request, 404, "BLOB_UNKNOWN", "blob unknown", key[1])
            body = self.blobs[key]
            return httpx.Response(
                200,
                headers={
                    "Content-Type": "application/octet-stream",
                    "Docker-Content-Digest": key[1],
                },
                content=body,
            )
        return httpx.Response(404, text="404 page not found")

    @staticmethod
    def _error(
        request: httpx.Request, status: int, code: str, message: str, detail: Any
    ) -> httpx.Response:
        if request.method == "HEAD":
            return httpx.Response(status)
        return httpx.Response(
            status,
            headers={"Content-Type": "application/json"},
            content=error_body(code, message, detail),
        )

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handler)


def make_client(
    registry: FakeRegistry,
    credentials: CredentialStore | None = None,
    *,
    registry_settings: RegistrySettings | None = None,
    extra_registries: dict[str, RegistrySettings] | None = None,
    **settings: Any,
) -> RegistryClient:
    """A client whose only network is ``registry``'s handler; backoff is tiny by default."""
    settings.setdefault("backoff", 0.001)
    registries = {registry.host: registry_settings or RegistrySettings()}
    registries.update(extra_registries or {})
    return RegistryClient(
        ClientSettings(registries=registries, **settings),
        credentials,
        transport=registry.transport(),
    )
