"""Limits per resolution: a byte budget over all documents, children fetched once each, a
bounded number of fetches at once, and siblings cancelled after the first failure."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from archwarden.registry import ImageNotFound, ManifestTooLarge

from .fakes import HOST, FakeRegistry, make_client

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
REPO = "team/a"
REF = f"{HOST}/{REPO}:1"


def child(registry: FakeRegistry, arch: str, padding: int = 0) -> str:
    """A single-arch image whose manifest is padded to ``padding`` bytes; returns its digest."""
    config = registry.put_blob(REPO, json.dumps({"os": "linux", "architecture": arch}).encode())
    body = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/json", "digest": config, "size": 1},
        "layers": [],
        "annotations": {"pad": "x" * padding},
    }
    return registry.put_manifest(REPO, json.dumps(body).encode())


def index(registry: FakeRegistry, digests: list[str]) -> None:
    # No platform on the entries: each child must be fetched to learn it.
    entries = [{"mediaType": OCI_MANIFEST, "digest": d, "size": 1} for d in digests]
    body = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}
    registry.put_manifest(REPO, json.dumps(body).encode(), tags=("1",))


async def test_bytes_are_capped_per_resolution_not_only_per_document() -> None:
    registry = FakeRegistry()
    three_mib = 3 * 1024 * 1024  # each child is under the 4 MiB document cap
    index(registry, [child(registry, f"arch{i}", three_mib) for i in range(8)])
    async with make_client(registry, resolution_max_bytes=10 * 1024 * 1024) as client:
        with pytest.raises(ManifestTooLarge, match="resolution read more than its 10485760-byte"):
            await client.resolve(REF)
    assert registry.count("GET", "manifests") <= 1 + 8


async def test_a_child_listed_many_times_is_fetched_once() -> None:
    registry = FakeRegistry()
    digest = child(registry, "arm64")
    index(registry, [digest] * 200)
    async with make_client(registry) as client:
        answer = await client.resolve(REF)
    assert answer.canonical == ["linux/arm64"]
    assert registry.count("GET", f"manifests/{digest}") == 1
    assert registry.count("GET", "blobs") == 1


async def test_fetches_per_resolution_are_bounded() -> None:
    registry = FakeRegistry()
    index(registry, [child(registry, f"arch{i}") for i in range(40)])
    running = peak = 0
    serve = registry.handler

    async def counting(request: httpx.Request) -> httpx.Response:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        try:
            await asyncio.sleep(0.005)
            return await serve(request)
        finally:
            running -= 1

    registry.handler = counting  # type: ignore[method-assign]
    async with make_client(registry) as client:
        answer = await client.resolve(REF)
    assert len(answer.platforms) == 40
    assert 1 < peak <= 8


async def test_the_first_failure_cancels_the_siblings() -> None:
    registry = FakeRegistry()
    good = [child(registry, f"arch{i}") for i in range(5)]
    missing = "sha256:" + "0" * 64
    index(registry, [*good, missing])
    cancelled = 0
    released = asyncio.Event()
    serve = registry.handler

    async def hanging(request: httpx.Request) -> httpx.Response:
        nonlocal cancelled
        if missing in request.url.path or request.url.path.endswith("/1"):
            return await serve(request)
        try:
            await released.wait()  # the healthy children never answer
        except asyncio.CancelledError:
            cancelled += 1
            raise
        return await serve(request)

    registry.handler = hanging  # type: ignore[method-assign]
    async with make_client(registry) as client:
        with pytest.raises(ImageNotFound):
            await asyncio.wait_for(client.resolve(REF), timeout=2.0)
    assert cancelled == 5
