"""The Resolver: caches, revalidation, failure caching, stale answers and single flight."""

from __future__ import annotations

import asyncio
import hashlib
import json
import traceback

import httpx
import pytest

from archwarden.reference import parse
from archwarden.registry import (
    CacheSettings,
    ClientSettings,
    ImageNotFound,
    RegistryClient,
    RegistryServerError,
    RegistrySettings,
    Resolver,
)

from .fakes import HOST, FakeRegistry, digest_of, fixture, make_client

REPO = "team/web"
TAG_REF = f"{HOST}/{REPO}:1"
V6_V7 = fixture("regclient_oci_index_arm_v6_v7.json")
BUILDER = fixture("regclient_oci_index_unknown_builder_refs.json")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def registry() -> FakeRegistry:
    registry = FakeRegistry()
    registry.put_manifest(REPO, V6_V7, tags=("1",))
    return registry


@pytest.fixture
def clock() -> Clock:
    return Clock()


def resolver_for(
    registry: FakeRegistry, clock: Clock, notes: list[str] | None = None, **settings: float
) -> Resolver:
    client = make_client(registry, max_retries=0)
    cache = CacheSettings(**settings)  # type: ignore[arg-type]
    observer = notes.append if notes is not None else None
    return Resolver(client, cache, observer=observer, clock=clock)


def summary(registry: FakeRegistry) -> list[str]:
    return [f"{r.method} {r.url.path}" for r in registry.requests]


async def test_warm_lookup_makes_no_requests(registry: FakeRegistry, clock: Clock) -> None:
    notes: list[str] = []
    resolver = resolver_for(registry, clock, notes)
    first = await resolver.resolve(TAG_REF)
    assert summary(registry) == [f"GET /v2/{REPO}/manifests/1"]
    registry.requests.clear()
    second = await resolver.resolve(TAG_REF)
    assert registry.requests == []
    assert second == first
    assert second.canonical == ["linux/amd64", "linux/arm/v6", "linux/arm/v7", "linux/arm64"]
    assert notes == ["miss", "hit"]


async def test_a_warm_lookup_by_the_same_reference_hands_out_the_held_answer(
    registry: FakeRegistry, clock: Clock
) -> None:
    # Admission parses each image once (lru_cache) and asks with that object on every review:
    # the held answer itself comes back, no copy; another spelling of it gets its own copy.
    resolver = resolver_for(registry, clock)
    ref = parse(TAG_REF)
    first = await resolver.resolve(ref)
    assert resolver.fresh(ref) is first and (await resolver.resolve(ref)) is first
    other = parse(TAG_REF)
    again = resolver.fresh(other)
    assert again is not None and again is not first and again.reference is other
    assert again == first


async def test_concurrent_lookups_share_one_set_of_requests(
    registry: FakeRegistry, clock: Clock
) -> None:
    gate = asyncio.Event()
    seen = 0

    async def slow(request: httpx.Request) -> httpx.Response:
        nonlocal seen
        seen += 1
        registry.requests.append(request)
        await gate.wait()
        return registry.serve(request)

    resolver = Resolver(make_client(registry), CacheSettings(), clock=clock)
    resolver.client._transport = httpx.MockTransport(slow)
    tasks = [asyncio.create_task(resolver.resolve(TAG_REF)) for _ in range(200)]
    await asyncio.sleep(0.01)
    gate.set()
    answers = await asyncio.gather(*tasks)
    assert summary(registry) == [f"GET /v2/{REPO}/manifests/1"]
    assert {a.digest for a in answers} == {digest_of(V6_V7)}
    assert all(len(a.platforms) == 4 for a in answers)


async def test_concurrent_lookups_of_a_failure_share_it(
    registry: FakeRegistry, clock: Clock
) -> None:
    resolver = resolver_for(registry, clock)
    results = await asyncio.gather(
        *(resolver.resolve(f"{HOST}/{REPO}:missing") for _ in range(50)), return_exceptions=True
    )
    assert all(isinstance(r, ImageNotFound) for r in results)
    assert len(registry.requests) == 1


async def test_digest_references_hit_the_digest_cache(registry: FakeRegistry, clock: Clock) -> None:
    resolver = resolver_for(registry, clock)
    by_tag = await resolver.resolve(TAG_REF)
    registry.requests.clear()
    digest = digest_of(V6_V7)
    by_digest = await resolver.resolve(f"{HOST}/{REPO}@{digest}")
    assert registry.requests == []
    assert by_digest.platforms == by_tag.platforms
    assert str(by_digest.reference) == f"{HOST}/{REPO}@{digest}"
    # The digest is content: it stays cached long after any tag TTL.
    clock.now += 10_000
    again = await resolver.resolve(f"{HOST}/{REPO}:other@{digest}")
    assert registry.requests == []
    assert again.reference.tag == "other"


async def test_digest_reference_cold_then_warm(registry: FakeRegistry, clock: Clock) -> None:
    resolver = resolver_for(registry, clock)
    digest = digest_of(V6_V7)
    await resolver.resolve(f"{HOST}/{REPO}@{digest}")
    assert summary(registry) == [f"GET /v2/{REPO}/manifests/{digest}"]
    await resolver.resolve(f"{HOST}/{REPO}@{digest}")
    assert len(registry.requests) == 1


async def test_tag_expiry_revalidates_with_head_only_when_unchanged(
    registry: FakeRegistry, clock: Clock
) -> None:
    notes: list[str] = []
    resolver = resolver_for(registry, clock, notes, tag_ttl=300.0)
    await resolver.resolve(TAG_REF)
    clock.now = 299.0
    await resolver.resolve(TAG_REF)
    assert len(registry.requests) == 1
    clock.now = 301.0
    registry.requests.clear()
    answer = await resolver.resolve(TAG_REF)
    assert summary(registry) == [f"HEAD /v2/{REPO}/manifests/1"]
    assert answer.digest == digest_of(V6_V7)
    # Revalidated: trusted for another TTL.
    registry.requests.clear()
    clock.now = 500.0
    await resolver.resolve(TAG_REF)
    assert registry.requests == []
    assert notes == ["miss", "hit", "revalidated", "hit"]


async def test_tag_expiry_gets_the_new_digest_when_changed(
    registry: FakeRegistry, clock: Clock
) -> None:
    resolver = resolver_for(registry, clock, tag_ttl=300.0)
    await resolver.resolve(TAG_REF)
    registry.put_manifest(REPO, BUILDER, tags=("1",))  # the tag moves
    clock.now = 301.0
    registry.requests.clear()
    answer = await resolver.resolve(TAG_REF)
    assert summary(registry) == [
        f"HEAD /v2/{REPO}/manifests/1",
        f"GET /v2/{REPO}/manifests/1",
    ]
    assert answer.digest == digest_of(BUILDER)
    assert answer.canonical == ["linux/amd64", "linux/arm64"]


async def test_failure_is_cached_then_retried(registry: FakeRegistry, clock: Clock) -> None:
    notes: list[str] = []
    resolver = resolver_for(registry, clock, notes, failure_ttl=10.0)
    ref = f"{HOST}/{REPO}:missing"
    with pytest.raises(ImageNotFound) as first:
        await resolver.resolve(ref)
    assert len(registry.requests) == 1
    clock.now = 9.0
    with pytest.raises(ImageNotFound) as second:
        await resolver.resolve(ref)
    assert len(registry.requests) == 1
    assert str(second.value) == str(first.value)
    assert str(first.value) == f"registry {HOST}: manifest unknown: {REPO}:missing"
    clock.now = 10.5
    registry.put_manifest(REPO, V6_V7, tags=("missing",))  # pushed meanwhile
    answer = await resolver.resolve(ref)
    assert len(registry.requests) == 2
    assert answer.digest == digest_of(V6_V7)
    assert notes == ["miss", "failure_cached", "miss"]


async def test_allow_stale_returns_the_last_good_answer(
    registry: FakeRegistry, clock: Clock
) -> None:
    notes: list[str] = []
    resolver = resolver_for(registry, clock, notes, tag_ttl=300.0)
    good = await resolver.resolve(TAG_REF)
    registry.intercept = lambda r: httpx.Response(500)
    clock.now = 400.0
    stale = await resolver.resolve(TAG_REF, allow_stale=True)
    assert stale.stale is True
    assert stale.platforms == good.platforms
    assert stale.digest == good.digest
    assert stale.to_json()["stale"] is True
    # Without allow_stale the (cached) failure is raised.
    with pytest.raises(RegistryServerError, match="HTTP 500"):
        await resolver.resolve(TAG_REF)
    assert notes == ["miss", "stale", "failure_cached"]


async def test_allow_stale_without_any_answer_raises(registry: FakeRegistry, clock: Clock) -> None:
    registry.intercept = lambda r: httpx.Response(500)
    resolver = resolver_for(registry, clock)
    with pytest.raises(RegistryServerError):
        await resolver.resolve(TAG_REF, allow_stale=True)


async def test_cancelling_one_waiter_does_not_cancel_the_lookup(
    registry: FakeRegistry, clock: Clock
) -> None:
    registry.gate = gate = asyncio.Event()
    resolver = resolver_for(registry, clock)
    impatient = asyncio.create_task(resolver.resolve(TAG_REF))
    patient = asyncio.create_task(resolver.resolve(TAG_REF))
    await asyncio.sleep(0.01)
    impatient.cancel()
    with pytest.raises(asyncio.CancelledError):
        await impatient
    gate.set()
    answer = await patient
    assert answer.digest == digest_of(V6_V7)
    assert len(registry.requests) == 1
    # The finished lookup filled the cache.
    registry.requests.clear()
    await resolver.resolve(TAG_REF)
    assert registry.requests == []


async def test_cancelling_the_last_waiter_cancels_the_lookup(
    registry: FakeRegistry, clock: Clock
) -> None:
    # An abandoned lookup would hold a connection to a (possibly trickling) registry for an
    # answer nobody reads; once the last caller is gone, it is cancelled.
    registry.gate = asyncio.Event()
    cancelled = asyncio.Event()
    serve = registry.handler

    async def noting_cancellation(request: httpx.Request) -> httpx.Response:
        try:
            return await serve(request)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    client = RegistryClient(
        ClientSettings(registries={HOST: RegistrySettings()}, max_retries=0),
        transport=httpx.MockTransport(noting_cancellation),
    )
    resolver = Resolver(client, CacheSettings(), clock=clock)
    first = asyncio.create_task(resolver.resolve(TAG_REF))
    second = asyncio.create_task(resolver.resolve(TAG_REF))
    await asyncio.sleep(0.01)
    first.cancel()
    second.cancel()
    for task in (first, second):
        with pytest.raises(asyncio.CancelledError):
            await task
    await asyncio.wait_for(cancelled.wait(), timeout=1.0)
    assert len(registry.requests) == 1
    # Nothing was cached and nothing is in flight: the next lookup asks again.
    registry.gate = None
    await resolver.resolve(TAG_REF)
    assert len(registry.requests) == 2


async def test_cached_does_no_io(registry: FakeRegistry, clock: Clock) -> None:
    resolver = resolver_for(registry, clock, tag_ttl=300.0)
    assert resolver.cached(TAG_REF) is None
    await resolver.resolve(TAG_REF)
    clock.now = 1000.0  # expired tags still answer cached()
    registry.requests.clear()
    held = resolver.cached(TAG_REF)
    assert held is not None and held.digest == digest_of(V6_V7)
    assert resolver.cached(f"{HOST}/{REPO}@{digest_of(V6_V7)}") is not None
    assert registry.requests == []


async def test_cached_failures_do_not_accumulate_tracebacks(
    registry: FakeRegistry, clock: Clock
) -> None:
    resolver = resolver_for(registry, clock)
    lengths = []
    for _ in range(5):
        with pytest.raises(ImageNotFound) as caught:
            await resolver.resolve(f"{HOST}/{REPO}:missing")
        lengths.append(len(traceback.extract_tb(caught.value.__traceback__)))
    assert len(registry.requests) == 1
    assert len(set(lengths[1:])) == 1, lengths


async def test_a_failure_without_credentials_does_not_answer_for_a_pod_with_them() -> None:
    import httpx as _httpx

    from archwarden import registry as _registry

    secret = _registry.CredentialStore(
        {"private.test": _registry.Credential(username="u", password="p")}
    )
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": "sha256:" + "1" * 64,
                    "size": 1,
                    "platform": {"os": "linux", "architecture": "arm64"},
                }
            ],
        }
    ).encode()

    def handler(request: _httpx.Request) -> _httpx.Response:
        if "authorization" not in request.headers:
            return _httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="r"'})
        return _httpx.Response(
            200,
            content=index,
            headers={
                "Content-Type": "application/vnd.oci.image.index.v1+json",
                "Docker-Content-Digest": "sha256:" + hashlib.sha256(index).hexdigest(),
            },
        )

    settings = _registry.ClientSettings(registries={"private.test": _registry.RegistrySettings()})
    client = _registry.RegistryClient(settings, transport=_httpx.MockTransport(handler))
    resolver = _registry.Resolver(client)
    with pytest.raises(_registry.AuthenticationFailed):
        await resolver.resolve("private.test/team/app:1")
    token = _registry.RegistryClient.using(secret)
    try:
        answer = await resolver.resolve("private.test/team/app:1")
    finally:
        _registry.RegistryClient.restore(token)
    assert answer.canonical == ["linux/arm64"]
    await client.aclose()
