"""RegistryClient details not tied to a fixture: transport errors, token edge cases, observer."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import httpx
import pytest

from archwarden.registry import (
    AuthenticationFailed,
    Credential,
    CredentialStore,
    ImageNotFound,
    ManifestTooLarge,
    RegistryTimeout,
    RegistryUnavailable,
    _client,
)

from .fakes import HOST, FakeRegistry, fixture, make_client

INDEX = fixture("regclient_oci_index_arm_v6_v7.json")
REF = f"{HOST}/team/a:1"


@pytest.fixture
def registry() -> FakeRegistry:
    registry = FakeRegistry()
    registry.put_manifest("team/a", INDEX, tags=("1",))
    return registry


@pytest.fixture(autouse=True)
def no_real_sleep(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    slept: list[float] = []
    real_sleep = asyncio.sleep

    async def fake_sleep(delay: float, result: Any = None) -> Any:
        slept.append(delay)
        return await real_sleep(0, result)

    monkeypatch.setattr(_client.asyncio, "sleep", fake_sleep)
    return slept


def raising(error: Exception) -> Any:
    def handler(request: httpx.Request) -> httpx.Response:
        raise error

    return handler


async def test_timeout_is_retried_once_then_registry_timeout(registry: FakeRegistry) -> None:
    registry.intercept = raising(httpx.ReadTimeout("slow"))
    async with make_client(registry, timeout=3.0) as client:
        with pytest.raises(RegistryTimeout) as caught:
            await client.resolve(REF)
    assert str(caught.value) == f"registry {HOST}: no answer within 3s: team/a:1"
    assert len(registry.requests) == 2
    assert isinstance(caught.value, RegistryUnavailable)


async def test_timeout_then_success(registry: FakeRegistry) -> None:
    answers = iter([httpx.ReadTimeout("slow")])

    def once(request: httpx.Request) -> httpx.Response | None:
        error = next(answers, None)
        if error is not None:
            raise error
        return None

    registry.intercept = once
    async with make_client(registry) as client:
        answer = await client.resolve(REF)
    assert len(answer.platforms) == 4


async def test_connection_refused(registry: FakeRegistry) -> None:
    def refused(request: httpx.Request) -> httpx.Response:
        cause = ConnectionRefusedError(111, "Connection refused")
        raise httpx.ConnectError("[Errno 111] Connection refused") from cause

    registry.intercept = refused
    async with make_client(registry) as client:
        with pytest.raises(RegistryUnavailable) as caught:
            await client.resolve(REF)
    assert str(caught.value) == f"registry {HOST}: cannot connect (connection refused): team/a:1"
    assert not isinstance(caught.value, RegistryTimeout)


async def test_tls_failure_is_named(registry: FakeRegistry) -> None:
    registry.intercept = raising(httpx.ConnectError("[SSL: CERTIFICATE_VERIFY_FAILED] nope"))
    async with make_client(registry) as client:
        with pytest.raises(RegistryUnavailable, match=r"\(TLS certificate not trusted\)"):
            await client.resolve(REF)


async def test_observer_sees_every_exchange(registry: FakeRegistry) -> None:
    seen: list[tuple[str, str]] = []
    client = _client.RegistryClient(
        make_client(registry).settings,
        transport=registry.transport(),
        observer=lambda host, code, seconds: seen.append((host, code)),
    )
    async with client:
        await client.resolve(REF)
        with pytest.raises(ImageNotFound):
            await client.resolve(f"{HOST}/team/a:missing")
    assert seen == [(HOST, "200"), (HOST, "404")]


# -- tokens --------------------------------------------------------------------------------------


def bearer(
    registry: FakeRegistry,
    token_answer: httpx.Response | None = None,
    realm: str = "https://auth.test/token",
) -> list[httpx.Request]:
    """Registry wants ``Bearer good``; the token endpoint answers ``token_answer``."""
    token_requests: list[httpx.Request] = []
    realm_host = httpx.URL(realm).host

    def intercept(request: httpx.Request) -> httpx.Response | None:
        if request.url.host == realm_host:
            token_requests.append(request)
            return token_answer or httpx.Response(200, json={"token": "good"})
        if request.headers.get("authorization") != "Bearer good":
            challenge = f'Bearer realm="{realm}",service="{HOST}"'
            return httpx.Response(401, headers={"WWW-Authenticate": challenge})
        return None

    registry.intercept = intercept
    return token_requests


async def test_concurrent_requests_share_one_token_fetch(registry: FakeRegistry) -> None:
    token_requests = bearer(registry)
    async with make_client(registry) as client:
        answers = await asyncio.gather(*(client.resolve(REF) for _ in range(20)))
    assert all(len(a.platforms) == 4 for a in answers)
    assert len(token_requests) == 1


async def test_access_token_is_preferred_over_token(registry: FakeRegistry) -> None:
    bearer(registry, httpx.Response(200, json={"token": "stale", "access_token": "good"}))
    async with make_client(registry) as client:
        answer = await client.resolve(REF)
    assert len(answer.platforms) == 4


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (httpx.Response(200, json={"expires_in": 60}), "token server answered without a token"),
        (httpx.Response(200, text="not json"), "token server answered without a token"),
        (httpx.Response(200, json=["x"]), "token server answered without a token"),
        (httpx.Response(401), "token server refused the credentials (HTTP 401)"),
        (httpx.Response(403), "token server refused the credentials (HTTP 403)"),
        (httpx.Response(500), "token server answered HTTP 500"),
    ],
)
async def test_token_server_failures(
    registry: FakeRegistry, answer: httpx.Response, message: str
) -> None:
    bearer(registry, answer)
    async with make_client(registry) as client:
        with pytest.raises(AuthenticationFailed) as caught:
            await client.resolve(REF)
    assert str(caught.value) == f"registry {HOST}: {message}: team/a:1"


@pytest.mark.parametrize("realm", ["file:///etc/passwd", "/token", "ftp://auth.test/token"])
async def test_token_realm_must_be_http(registry: FakeRegistry, realm: str) -> None:
    def intercept(request: httpx.Request) -> httpx.Response:
        challenge = f'Bearer realm="{realm}",service="{HOST}"'
        return httpx.Response(401, headers={"WWW-Authenticate": challenge})

    registry.intercept = intercept
    async with make_client(registry) as client:
        with pytest.raises(AuthenticationFailed, match="is not an HTTP URL"):
            await client.resolve(REF)
    assert len(registry.requests) == 1


async def test_no_credentials_over_plain_http_to_another_host(registry: FakeRegistry) -> None:
    token_requests = bearer(registry, realm="http://auth.test/token")
    creds = CredentialStore({HOST: Credential(username="alice", password="pw")})
    async with make_client(registry, creds) as client:
        await client.resolve(REF)
    [token_request] = token_requests
    assert "authorization" not in token_request.headers


async def test_credentials_go_to_an_https_realm(registry: FakeRegistry) -> None:
    token_requests = bearer(registry)
    creds = CredentialStore({HOST: Credential(username="alice", password="pw")})
    async with make_client(registry, creds) as client:
        await client.resolve(REF)
    [token_request] = token_requests
    expected = "Basic " + base64.b64encode(b"alice:pw").decode()
    assert token_request.headers["authorization"] == expected


async def test_identity_token_falls_back_to_get_when_post_is_not_supported(
    registry: FakeRegistry,
) -> None:
    token_requests: list[httpx.Request] = []

    def intercept(request: httpx.Request) -> httpx.Response | None:
        if request.url.host == "auth.test":
            token_requests.append(request)
            if request.method == "POST":
                return httpx.Response(404)
            return httpx.Response(200, json={"token": "good"})
        if request.headers.get("authorization") != "Bearer good":
            challenge = f'Bearer realm="https://auth.test/token",service="{HOST}"'
            return httpx.Response(401, headers={"WWW-Authenticate": challenge})
        return None

    registry.intercept = intercept
    creds = CredentialStore({HOST: Credential(identity_token="refresh")})
    async with make_client(registry, creds) as client:
        await client.resolve(REF)
    assert [r.method for r in token_requests] == ["POST", "GET"]
    assert "authorization" not in token_requests[1].headers


async def test_error_bodies_are_not_quoted_at_length(registry: FakeRegistry) -> None:
    body = json.dumps(
        {"errors": [{"code": "UNKNOWN", "message": "x" * 5000, "detail": "secret-detail"}]}
    )
    registry.intercept = lambda r: httpx.Response(500, text=body)
    async with make_client(registry, max_retries=0) as client:
        with pytest.raises(Exception) as caught:
            await client.resolve(REF)
    text = str(caught.value)
    assert "secret-detail" not in text
    assert "x" * 200 in text and "x" * 201 not in text


async def test_oversize_config_blob_is_refused(registry: FakeRegistry) -> None:
    manifest = fixture("regclient_oci_manifest_arm_v7.json")
    registry.put_manifest("team/a", manifest, tags=("img",))
    registry.put_blob("team/a", fixture("regclient_oci_config_arm_v7.json"))
    async with make_client(registry, config_max_bytes=1000) as client:
        with pytest.raises(ManifestTooLarge, match="exceeds the 1000-byte cap"):
            await client.resolve(f"{HOST}/team/a:img")


@pytest.mark.parametrize(
    ("configured", "connect_host", "trusted"),
    [
        ("registry.internal:5000", "registry.internal", True),
        ("[fe80::1]:5000", "fe80::1", True),
        ("https://mirror.internal:8443/path", "mirror.internal", True),
        ("docker.io", "registry-1.docker.io", True),
        ("registry.internal:5000", "other.internal", False),
    ],
)
def test_ssrf_guard_trusts_exactly_the_configured_hosts(
    configured: str, connect_host: str, trusted: bool
) -> None:
    from archwarden import registry

    settings = registry.ClientSettings(
        registries={"base.internal": registry.RegistrySettings(mirrors=(configured,))}
        if configured.startswith("https://")
        else {configured: registry.RegistrySettings()}
    )
    client = registry.RegistryClient(settings)
    assert client._host_allowed(connect_host) is trusted
