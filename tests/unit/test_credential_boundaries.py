"""Credentials stay with their origin (items 8-11 of "hostile registries"): redirects of token
requests, challenges from redirect targets, realms on another port, echoed secrets."""

from __future__ import annotations

import base64
import json

import httpx
import pytest

from archwarden.registry import (
    AuthenticationFailed,
    Credential,
    CredentialStore,
    RegistryError,
    RegistrySettings,
)

from .fakes import HOST, FakeRegistry, fixture, make_client

INDEX = fixture("regclient_oci_index_arm_v6_v7.json")
REF = f"{HOST}/team/a:1"


@pytest.fixture
def registry() -> FakeRegistry:
    registry = FakeRegistry()
    registry.put_manifest("team/a", INDEX, tags=("1",))
    return registry


def carrying(request: httpx.Request, secret: str) -> bool:
    text = str(request.url) + request.content.decode("utf-8", "replace")
    text += " ".join(request.headers.values())
    basic = base64.b64encode(f"u:{secret}".encode()).decode()
    return secret in text or basic in text


async def test_token_post_redirected_to_another_origin_keeps_the_refresh_token(
    registry: FakeRegistry,
) -> None:
    elsewhere: list[httpx.Request] = []

    def intercept(request: httpx.Request) -> httpx.Response | None:
        if request.url.host == "auth.test":
            return httpx.Response(307, headers={"Location": "https://collector.test/grab"})
        if request.url.host == "collector.test":
            elsewhere.append(request)
            return httpx.Response(200, json={"token": "stolen"})
        if request.headers.get("authorization") != "Bearer good":
            challenge = f'Bearer realm="https://auth.test/token",service="{HOST}"'
            return httpx.Response(401, headers={"WWW-Authenticate": challenge})
        return None

    registry.intercept = intercept
    credentials = CredentialStore({HOST: Credential(identity_token="refresh-secret-1")})
    async with make_client(registry, credentials) as client:
        with pytest.raises(RegistryError):
            await client.resolve(REF)
    assert not any(carrying(r, "refresh-secret-1") for r in elsewhere)


async def test_a_redirect_targets_challenge_gets_none_of_the_registrys_credentials(
    registry: FakeRegistry,
) -> None:
    other: list[httpx.Request] = []

    def intercept(request: httpx.Request) -> httpx.Response | None:
        if request.url.host == "other.test":
            other.append(request)
            if request.url.path == "/token":
                return httpx.Response(200, json={"token": "t"})
            challenge = 'Bearer realm="https://other.test/token",service="other"'
            return httpx.Response(401, headers={"WWW-Authenticate": challenge})
        if request.headers.get("authorization") is None:
            return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="r"'})
        return httpx.Response(307, headers={"Location": "https://other.test/v2/x"})

    registry.intercept = intercept
    credentials = CredentialStore({HOST: Credential(username="u", password="basic-secret-2")})
    async with make_client(registry, credentials) as client:
        with pytest.raises(AuthenticationFailed, match="redirect target"):
            await client.resolve(REF)
    assert other, "the redirect target was contacted"
    assert not any(carrying(r, "basic-secret-2") for r in other)
    assert all(r.headers.get("authorization") is None for r in other)


async def test_a_realm_on_another_port_gets_no_credentials_over_plain_http(
    registry: FakeRegistry,
) -> None:
    realm_requests: list[httpx.Request] = []

    def intercept(request: httpx.Request) -> httpx.Response | None:
        if request.url.port == 8080:
            realm_requests.append(request)
            return httpx.Response(200, json={"token": "good"})
        if request.headers.get("authorization") != "Bearer good":
            challenge = f'Bearer realm="http://{HOST}:8080/token",service="{HOST}"'
            return httpx.Response(401, headers={"WWW-Authenticate": challenge})
        return None

    registry.intercept = intercept
    credentials = CredentialStore({HOST: Credential(username="u", password="basic-secret-3")})
    async with make_client(
        registry, credentials, registry_settings=RegistrySettings(insecure=True)
    ) as client:
        await client.resolve(REF)
    assert len(realm_requests) == 1
    assert realm_requests[0].headers.get("authorization") is None


async def test_a_realm_on_another_port_configured_insecure_gets_credentials(
    registry: FakeRegistry,
) -> None:
    realm_requests: list[httpx.Request] = []

    def intercept(request: httpx.Request) -> httpx.Response | None:
        if request.url.port == 8080:
            realm_requests.append(request)
            return httpx.Response(200, json={"token": "good"})
        if request.headers.get("authorization") != "Bearer good":
            challenge = f'Bearer realm="http://{HOST}:8080/token",service="{HOST}"'
            return httpx.Response(401, headers={"WWW-Authenticate": challenge})
        return None

    registry.intercept = intercept
    credentials = CredentialStore({HOST: Credential(username="u", password="basic-secret-4")})
    async with make_client(
        registry,
        credentials,
        registry_settings=RegistrySettings(insecure=True),
        extra_registries={f"{HOST}:8080": RegistrySettings(insecure=True)},
    ) as client:
        await client.resolve(REF)
    assert realm_requests[0].headers.get("authorization", "").startswith("Basic ")


@pytest.mark.parametrize(
    "credential",
    [
        Credential(username="u", password="hunter2-secret"),
        Credential(registry_token="registry-token-secret"),
        Credential(identity_token="identity-token-secret"),
    ],
)
async def test_credentials_echoed_by_a_registry_are_redacted(
    registry: FakeRegistry, credential: Credential
) -> None:
    def echo(request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.test":
            # The token server echoes the form it got, the bearer token is issued.
            return httpx.Response(200, json={"token": "issued-token-secret"})
        if request.headers.get("authorization") is None and not credential.registry_token:
            scheme = "Basic" if credential.password else "Bearer"
            realm = 'Basic realm="r"' if scheme == "Basic" else 'Bearer realm="https://auth.test/t"'
            return httpx.Response(401, headers={"WWW-Authenticate": realm})
        seen = f"{request.headers.get('authorization')} {credential.password}"
        seen += f" {credential.identity_token}"
        body = {"errors": [{"code": "DENIED_X", "message": f"you sent {seen}"}]}
        return httpx.Response(500, content=json.dumps(body).encode())

    registry.intercept = echo
    async with make_client(registry, CredentialStore({HOST: credential}), max_retries=0) as c:
        with pytest.raises(RegistryError) as caught:
            await c.resolve(REF)
    message = str(caught.value)
    assert "[redacted]" in message
    for secret in (*credential.secrets, "issued-token-secret"):
        assert secret not in message
    assert caught.value.args == (message,)


@pytest.mark.parametrize(
    ("start", "location", "status", "keeps_auth"),
    [
        ("https://r.test/v2/x", "/v2/y", 307, True),
        ("https://r.test/v2/x", "https://r.test:443/v2/y", 302, True),
        ("http://r.test/v2/x", "https://r.test/v2/y", 301, False),  # httpx would keep it
        ("https://r.test/v2/x", "https://r.test:8443/v2/y", 307, False),
        ("https://r.test/v2/x", "https://blobs.test/y", 307, False),
    ],
)
def test_redirect_rules_keep_authorization_within_one_origin(
    start: str, location: str, status: int, keeps_auth: bool
) -> None:
    from archwarden.registry import _redirects

    first = httpx.URL(start)
    hop = _redirects.Hop("GET", first, {"Authorization": "Basic x"})
    following = _redirects.next_hop(hop, first, status, location)
    assert ("Authorization" in following.headers) is keeps_auth


def test_redirect_rules_refuse_a_body_crossing_origins_and_turn_303_into_get() -> None:
    from archwarden.registry import _redirects

    first = httpx.URL("https://auth.test/token")
    hop = _redirects.Hop("POST", first, {}, {"refresh_token": "r"})
    with pytest.raises(_redirects.RedirectRefused, match="body to another origin"):
        _redirects.next_hop(hop, first, 307, "https://elsewhere.test/")
    assert _redirects.next_hop(hop, first, 307, "/token2").data == {"refresh_token": "r"}
    after_303 = _redirects.next_hop(hop, first, 303, "https://elsewhere.test/")
    assert (after_303.method, after_303.data) == ("GET", None)
