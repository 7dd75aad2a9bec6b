"""What the client keeps is bounded: tokens, token locks, challenges, metric labels, and the
registry's own words quoted in messages (item 5 of "hostile registries")."""

from __future__ import annotations

import json

import httpx
import pytest

from archwarden.registry import (
    AuthenticationFailed,
    ClientSettings,
    InvalidManifest,
    RegistryClient,
    RegistryError,
    RegistrySettings,
    _auth,
)

from .fakes import HOST, FakeRegistry, fixture, make_client
from .test_client import bearer

INDEX = fixture("regclient_oci_index_arm_v6_v7.json")


def test_token_cache_forgets_the_least_recently_used() -> None:
    cache = _auth.TokenCache(max_entries=2)
    cache.put("r", "s", ["a"], "ta", 300)
    cache.put("r", "s", ["b"], "tb", 300)
    assert cache.get("r", "s", ["a"]) == "ta"  # a is now the most recently used
    cache.put("r", "s", ["c"], "tc", 300)
    assert len(cache) == 2
    assert cache.get("r", "s", ["b"]) is None
    assert cache.get("r", "s", ["a"]) == "ta" and cache.get("r", "s", ["c"]) == "tc"


@pytest.mark.parametrize(
    ("size", "problem"),
    [(20_000, "a token over 16384 bytes"), (1024 * 1024, "more than 65536 bytes")],
)
async def test_oversize_tokens_are_refused_and_not_kept(size: int, problem: str) -> None:
    registry = FakeRegistry()
    registry.put_manifest("team/a", INDEX, tags=("1",))
    bearer(registry, httpx.Response(200, json={"token": "x" * size}))
    async with make_client(registry) as client:
        with pytest.raises(AuthenticationFailed, match=problem):
            await client.resolve(f"{HOST}/team/a:1")
        assert len(client._auth.tokens) == 0


async def test_token_locks_do_not_outlive_their_fetch() -> None:
    registry = FakeRegistry()
    for i in range(30):
        registry.put_manifest(f"team/r{i}", INDEX, tags=("1",))
    bearer(registry)
    async with make_client(registry) as client:
        for i in range(30):
            await client.resolve(f"{HOST}/team/r{i}:1")
        assert client._auth.locks == {}
        assert len(client._auth.tokens) == 30


async def test_challenges_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_auth, "MAX_CHALLENGES", 3)

    def unauthorized(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="r"'})

    async with RegistryClient(transport=httpx.MockTransport(unauthorized)) as client:
        for i in range(10):
            with pytest.raises(AuthenticationFailed):
                await client.resolve(f"host{i}.test/team/a:1")
        assert len(client._auth.challenges) == 3


def test_metric_label_is_a_configured_registry_or_other() -> None:
    settings = ClientSettings(
        registries={
            "registry.local:5000": RegistrySettings(mirrors=("https://mirror.local:5000",)),
            "docker.io": RegistrySettings(),
        }
    )
    assert settings.metric_label("registry.local:5000") == "registry.local:5000"
    assert settings.metric_label("mirror.local:5000") == "mirror.local:5000"
    assert settings.metric_label("registry-1.docker.io") == "registry-1.docker.io"
    assert settings.metric_label("attacker-42.example") == "other"
    assert settings.metric_label("registry.local:5001") == "other"
    assert ClientSettings().metric_label("registry.local:5000") == "other"


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        ({"Content-Type": "application/json"}, {"mediaType": "m" * 10_000}),
        (
            {"Content-Type": "application/vnd.oci.image.index.v1+json"},
            {"mediaType": "application/vnd.docker.distribution.manifest.list.v2+json" + "x" * 9000},
        ),
        (
            {"Content-Type": "application/vnd.oci.image.index.v1+json" + "y" * 9000},
            {"mediaType": "z" * 9000, "schemaVersion": 2},
        ),
        ({"Docker-Content-Digest": "sha256:" + "g" * 9000}, {"manifests": []}),
        ({}, {"manifests": [{"digest": "sha256:" + "q" * 9000, "mediaType": "x"}]}),
        ({}, {"manifests": [{"digest": "x" * 9000 + ":" + "a" * 64, "mediaType": "x"}]}),
    ],
)
async def test_registry_values_are_quoted_short(
    headers: dict[str, str], body: dict[str, object]
) -> None:
    registry = FakeRegistry()

    def hostile(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers=headers, content=json.dumps(body).encode())

    registry.intercept = hostile
    async with make_client(registry) as client:
        with pytest.raises(RegistryError) as caught:
            await client.resolve(f"{HOST}/team/a:1")
    assert isinstance(caught.value, InvalidManifest)
    assert len(str(caught.value)) < 400, str(caught.value)[:500]
