"""The registry auth flow on its own (``_auth.RegistryAuth``), driven by httpx over a
MockTransport: challenge, token, retry; what is remembered per origin; where credentials go."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from archwarden.registry import (
    AccessDenied,
    AuthenticationFailed,
    ClientSettings,
    Credential,
    RegistryServerError,
    RegistrySettings,
    _auth,
    _redirects,
)

HOME = "https://registry.test"
REALM = "https://auth.test/token"
SCOPE = "repository:team/a:pull"
BASIC = "Basic " + base64.b64encode(b"u:pw").decode()
Handler = Callable[[httpx.Request], httpx.Response]


class Harness:
    """One httpx client, one AuthState, and every request the transport saw."""

    def __init__(self, handler: Handler, settings: ClientSettings | None = None) -> None:
        self.seen: list[httpx.Request] = []
        self.state = _auth.AuthState()
        self.settings = settings or ClientSettings()

        def record(request: httpx.Request) -> httpx.Response:
            self.seen.append(request)
            return handler(request)

        self.client = httpx.AsyncClient(transport=httpx.MockTransport(record))

    def build(self, hop: _redirects.Hop) -> httpx.Request:
        return self.client.build_request(hop.method, hop.url, headers=hop.headers, data=hop.data)

    async def exchange(
        self, method: str, url: str, headers: dict[str, str], form: dict[str, str] | None
    ) -> tuple[int, bytes]:
        hop = _redirects.Hop(method, httpx.URL(url), headers, form)
        follow = _redirects.Follow(hop, self.build, self.settings.max_redirects)
        response = await self.client.send(self.build(hop), auth=follow)
        return response.status_code, response.content

    async def get(
        self,
        credential: Credential | None = None,
        *,
        home: str = HOME,
        scope: str = SCOPE,
        path: str = "/v2/team/a/manifests/1",
    ) -> httpx.Response:
        first = _redirects.Hop("GET", httpx.URL(home + path), {"Accept": "application/json"})
        access = _auth.Access("registry.test", "team/a:1", scope, credential)
        auth = _auth.RegistryAuth(
            self.state, access, first, self.build, self.settings, self.exchange
        )
        return await self.client.send(self.build(first), auth=auth)

    def to(self, host: str) -> list[httpx.Request]:
        return [r for r in self.seen if r.url.host == host]


@pytest.fixture
async def harnesses() -> AsyncIterator[list[Harness]]:
    made: list[Harness] = []
    yield made
    for harness in made:
        await harness.client.aclose()


def bearer_registry(
    tokens: list[str] | None = None, realm: str = REALM, accepted: str = "good"
) -> Handler:
    """Registry wants ``Bearer <accepted>``; the realm hands out ``tokens`` in turn."""
    issued = iter(tokens or ["good"] * 100)
    realm_url = httpx.URL(realm)

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.copy_with(query=None) == realm_url:
            return httpx.Response(200, json={"token": next(issued)})
        authorization = request.headers.get("authorization")
        if authorization == f"Bearer {accepted}":
            return httpx.Response(200, json={})
        challenge = f'Bearer realm="{realm}",service="registry.test",scope="{SCOPE}"'
        if authorization is not None:
            challenge += ',error="invalid_token"'
        return httpx.Response(401, headers={"WWW-Authenticate": challenge})

    return handler


async def test_challenge_then_token_then_retry(harnesses: list[Harness]) -> None:
    harnesses.append(h := Harness(bearer_registry()))
    response = await h.get()
    assert response.status_code == 200
    first, token, retry = h.seen
    assert "authorization" not in first.headers
    assert token.url.host == "auth.test"
    assert token.url.params.get_list("scope") == [SCOPE]
    assert token.url.params["service"] == "registry.test"
    assert "authorization" not in token.headers  # anonymous token
    assert retry.url == first.url and retry.headers["authorization"] == "Bearer good"
    assert retry.headers["accept"] == "application/json"


async def test_a_token_is_reused_for_its_scope_and_fetched_up_front_for_another(
    harnesses: list[Harness],
) -> None:
    harnesses.append(h := Harness(bearer_registry()))
    await h.get()
    del h.seen[:]
    assert (await h.get()).status_code == 200
    [again] = h.seen  # the origin's challenge is known and the token cached: one request
    assert again.headers["authorization"] == "Bearer good"
    del h.seen[:]
    await h.get(scope="repository:team/b:pull", path="/v2/team/b/manifests/1")
    token, request = h.seen  # no 401 round trip for a new repository
    assert token.url.params["scope"] == "repository:team/b:pull"
    assert request.headers["authorization"] == "Bearer good"


async def test_tokens_are_kept_per_identity(harnesses: list[Harness]) -> None:
    harnesses.append(h := Harness(bearer_registry()))
    await h.get(Credential(username="u", password="pw"))
    await h.get(Credential(username="v", password="pw"))
    assert len(h.to("auth.test")) == 2
    assert len(h.state.tokens) == 2


async def test_a_second_401_after_a_fresh_token_is_final(harnesses: list[Harness]) -> None:
    def always(request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.test":
            return httpx.Response(200, json={"token": "fresh"})
        challenge = f'Bearer realm="{REALM}",service="registry.test"'
        return httpx.Response(401, headers={"WWW-Authenticate": challenge})

    harnesses.append(h := Harness(always))
    with pytest.raises(AuthenticationFailed) as caught:
        await h.get()
    assert str(caught.value) == (
        "registry registry.test: unauthorized (no credentials for this registry): team/a:1"
    )
    assert len(h.to("registry.test")) == 2 and len(h.to("auth.test")) == 1
    with pytest.raises(AuthenticationFailed, match="rejected the credentials"):
        await h.get(Credential(username="u", password="pw"))


async def test_invalid_token_is_refetched_once(harnesses: list[Harness]) -> None:
    harnesses.append(h := Harness(bearer_registry(["stale", "good"])))
    assert (await h.get()).status_code == 200
    assert [r.headers.get("authorization") for r in h.to("registry.test")] == [
        None,
        "Bearer stale",
        "Bearer good",
    ]
    assert h.state.tokens.tokens() == ["good"]  # the stale one was dropped


async def test_a_second_invalid_token_is_final(harnesses: list[Harness]) -> None:
    harnesses.append(h := Harness(bearer_registry(["stale"] * 10)))
    with pytest.raises(AuthenticationFailed):
        await h.get()
    assert len(h.to("registry.test")) == 3 and len(h.to("auth.test")) == 2


async def test_insufficient_scope_is_access_denied(harnesses: list[Harness]) -> None:
    def denied(request: httpx.Request) -> httpx.Response:
        challenge = f'Bearer realm="{REALM}",error="insufficient_scope"'
        return httpx.Response(401, headers={"WWW-Authenticate": challenge})

    harnesses.append(h := Harness(denied))
    with pytest.raises(AccessDenied, match="insufficient scope"):
        await h.get()
    assert len(h.seen) == 1


def basic_registry(request: httpx.Request) -> httpx.Response:
    if request.headers.get("authorization") == BASIC:
        return httpx.Response(200, json={})
    return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="r"'})


async def test_basic_challenge_is_answered_with_the_credential(harnesses: list[Harness]) -> None:
    harnesses.append(h := Harness(basic_registry))
    assert (await h.get(Credential(username="u", password="pw"))).status_code == 200
    assert [r.headers.get("authorization") for r in h.seen] == [None, BASIC]
    del h.seen[:]
    await h.get(Credential(username="u", password="pw"))
    assert [r.headers.get("authorization") for r in h.seen] == [BASIC]  # up front now


async def test_basic_challenge_without_credentials_fails_at_once(
    harnesses: list[Harness],
) -> None:
    harnesses.append(h := Harness(basic_registry))
    with pytest.raises(AuthenticationFailed, match="unauthorized and no credentials for it"):
        await h.get()
    assert len(h.seen) == 1


async def test_a_registry_token_is_sent_up_front(harnesses: list[Harness]) -> None:
    harnesses.append(h := Harness(bearer_registry(accepted="rt")))
    await h.get(Credential(registry_token="rt"))
    [request] = h.seen
    assert request.headers["authorization"] == "Bearer rt"


async def test_an_identity_token_is_posted_and_falls_back_to_get(
    harnesses: list[Harness],
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.test" and request.method == "POST":
            assert b"refresh_token=refresh-1" in request.content
            return httpx.Response(405)
        return bearer_registry()(request)

    harnesses.append(h := Harness(handler))
    await h.get(Credential(identity_token="refresh-1"))
    assert [r.method for r in h.to("auth.test")] == ["POST", "GET"]


@pytest.mark.parametrize(
    ("home", "realm", "insecure", "sent"),
    [
        (HOME, "https://auth.test/token", (), True),  # another host, over HTTPS
        (HOME, "http://auth.test/token", (), False),  # another host, in the clear
        ("http://registry.test", "http://registry.test/token", (), True),  # its own origin
        ("http://registry.test", "http://registry.test:8080/token", (), False),  # another port
        (
            "http://registry.test",
            "http://registry.test:8080/token",
            ("registry.test:8080",),
            True,  # the operator configured that origin as insecure
        ),
    ],
)
async def test_credentials_reach_a_realm_only_as_the_rules_say(
    harnesses: list[Harness], home: str, realm: str, insecure: tuple[str, ...], sent: bool
) -> None:
    settings = ClientSettings(registries={h: RegistrySettings(insecure=True) for h in insecure})
    harnesses.append(h := Harness(bearer_registry(realm=realm), settings))
    await h.get(Credential(username="u", password="pw"), home=home)
    [token] = [r for r in h.seen if r.url.path == "/token"]
    assert (token.headers.get("authorization") == BASIC) is sent
    if not sent:
        assert "authorization" not in token.headers


async def test_a_realm_that_is_not_http_is_refused(harnesses: list[Harness]) -> None:
    harnesses.append(h := Harness(bearer_registry(realm="file:///etc/passwd")))
    with pytest.raises(AuthenticationFailed, match="is not an HTTP URL"):
        await h.get()
    assert len(h.seen) == 1


async def test_redirects_keep_authorization_within_the_origin(harnesses: list[Harness]) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "blobs.test":
            return httpx.Response(200, json={})
        if request.url.path.startswith("/v2/team/a/manifests"):
            return httpx.Response(307, headers={"Location": "/v2/moved"})
        if request.headers.get("authorization") != BASIC:
            return basic_registry(request)
        return httpx.Response(307, headers={"Location": "https://blobs.test/x"})

    harnesses.append(h := Harness(handler))
    assert (await h.get(Credential(username="u", password="pw"))).status_code == 200
    moved = [r for r in h.seen if r.url.path == "/v2/moved"]
    # The 401 came after a same-origin redirect: it is the registry's, and answered.
    assert [r.headers.get("authorization") for r in moved] == [None, BASIC]
    [blob] = h.to("blobs.test")
    assert "authorization" not in blob.headers


async def test_a_redirect_targets_401_is_final(harnesses: list[Harness]) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "other.test":
            challenge = 'Bearer realm="https://other.test/token"'
            return httpx.Response(401, headers={"WWW-Authenticate": challenge})
        return httpx.Response(307, headers={"Location": "https://other.test/v2/x"})

    harnesses.append(h := Harness(handler))
    with pytest.raises(AuthenticationFailed, match="redirect target"):
        await h.get(Credential(username="u", password="pw"))
    assert [r.url.host for r in h.seen] == ["registry.test", "other.test"]
    assert len(h.state.challenges) == 0


async def test_redirects_are_bounded(harnesses: list[Harness]) -> None:
    def loop(request: httpx.Request) -> httpx.Response:
        return httpx.Response(302, headers={"Location": "/again"})

    harnesses.append(h := Harness(loop, ClientSettings(max_redirects=3)))
    with pytest.raises(_redirects.RedirectRefused, match="more than 3 redirects"):
        await h.get()
    assert len(h.seen) == 4


async def test_a_token_post_is_not_redirected_to_another_origin(
    harnesses: list[Harness],
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.test":
            return httpx.Response(307, headers={"Location": "https://collector.test/grab"})
        return bearer_registry()(request)

    harnesses.append(h := Harness(handler))
    with pytest.raises(_redirects.RedirectRefused, match="body to another origin"):
        await h.get(Credential(identity_token="refresh-2"))
    assert h.to("collector.test") == []


async def test_concurrent_requests_share_one_token_fetch(harnesses: list[Harness]) -> None:
    harnesses.append(h := Harness(bearer_registry()))
    answers = await asyncio.gather(*(h.get() for _ in range(20)))
    assert all(a.status_code == 200 for a in answers)
    assert len(h.to("auth.test")) == 1
    assert h.state.locks == {}


async def test_the_challenges_kept_are_bounded(
    harnesses: list[Harness], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_auth, "MAX_CHALLENGES", 2)
    harnesses.append(h := Harness(basic_registry))
    for i in range(5):
        await h.get(Credential(username="u", password="pw"), home=f"https://r{i}.test")
    assert len(h.state.challenges) == 2


async def test_a_token_server_failure_is_a_registry_error(harnesses: list[Harness]) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.test":
            return httpx.Response(200, json={"token": "has space"})
        return bearer_registry()(request)

    harnesses.append(h := Harness(handler))
    with pytest.raises(AuthenticationFailed, match="unusable token"):
        await h.get()
    assert len(h.state.tokens) == 0


def test_redirect_refusals_are_not_registry_errors_until_the_client_names_them() -> None:
    # The flow raises the pure module's RedirectRefused; the client turns it into a
    # RegistryServerError with the registry's name (tests/unit/test_fixtures.py).
    assert not issubclass(_redirects.RedirectRefused, RegistryServerError)
