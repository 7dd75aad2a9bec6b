"""``_transport.Metered``: error bodies are cut before httpx (or anyone) reads them, and the
observer hears about every exchange once."""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator

import httpx
import pytest

from archwarden.registry import Credential, _auth, _config, _redirects, _transport

CAP = _config.ERROR_BODY_MAX_BYTES


class Trickle(httpx.AsyncByteStream):
    """A body of ``chunks`` pieces of 4 KiB that counts how much was pulled from it."""

    def __init__(self, chunks: int) -> None:
        self.chunks = chunks
        self.pulled = 0
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for _ in range(self.chunks):
            self.pulled += 4096
            yield b"x" * 4096

    async def aclose(self) -> None:
        self.closed = True


def metered(
    handler: _transport.Observer | None = None, answer: httpx.Response | None = None
) -> tuple[httpx.AsyncClient, list[tuple[str, str]]]:
    seen: list[tuple[str, str]] = []

    def observe(host: str, code: str, seconds: float) -> None:
        assert seconds >= 0
        seen.append((host, code))

    inner = httpx.MockTransport(lambda request: answer or httpx.Response(200))
    transport = _transport.Metered(inner, "registry.test", observe)
    return httpx.AsyncClient(transport=transport), seen


async def test_an_error_body_is_cut_at_the_cap() -> None:
    body = Trickle(1000)  # 4 MB
    client, _ = metered(answer=httpx.Response(500, stream=body))
    async with client:
        response = await client.get("https://registry.test/v2/")
        content = await response.aread()
    assert len(content) <= CAP
    assert body.pulled <= CAP + 4096 and body.closed


async def test_an_encoded_error_body_is_not_read() -> None:
    bomb = gzip.compress(b"\0" * 10_000_000)
    answer = httpx.Response(401, content=bomb, headers={"Content-Encoding": "gzip"})
    client, _ = metered(answer=answer)
    async with client:
        response = await client.get("https://registry.test/v2/")
        assert await response.aread() == b""


async def test_a_success_body_passes_whole() -> None:
    client, _ = metered(answer=httpx.Response(200, content=b"y" * (CAP * 3)))
    async with client:
        response = await client.get("https://registry.test/v2/")
        assert len(await response.aread()) == CAP * 3


async def test_the_observer_hears_each_exchange_once_when_it_is_over() -> None:
    client, seen = metered(answer=httpx.Response(404, content=b"{}"))
    async with client:
        async with client.stream("GET", "https://registry.test/v2/") as response:
            assert seen == []  # not before the body is read and closed
            await response.aread()
        await response.aclose()
    assert seen == [("registry.test", "404")]


@pytest.mark.parametrize(
    ("error", "kind"), [(httpx.ReadTimeout("slow"), "timeout"), (httpx.ConnectError("no"), "error")]
)
async def test_the_observer_hears_failures(error: Exception, kind: str) -> None:
    def fail(request: httpx.Request) -> httpx.Response:
        raise error

    seen: list[tuple[str, str]] = []
    transport = _transport.Metered(
        httpx.MockTransport(fail), "registry.test", lambda h, c, s: seen.append((h, c))
    )
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(type(error)):
            await client.get("https://registry.test/v2/")
    assert seen == [("registry.test", kind)]


async def test_a_401_answered_by_the_auth_flow_is_read_no_further_than_the_cap() -> None:
    # httpx reads a response in full (Response.aread) when an auth flow yields its next
    # request; below Metered that would buffer whatever the registry sends with its 401.
    bodies: list[Trickle] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.headers.get("authorization"):
            return httpx.Response(200)
        bodies.append(Trickle(1000))
        challenge = {"WWW-Authenticate": 'Basic realm="r"'}
        return httpx.Response(401, headers=challenge, stream=bodies[-1])

    transport = _transport.Metered(httpx.MockTransport(handler), "registry.test")
    async with httpx.AsyncClient(transport=transport) as client:

        def build(hop: _redirects.Hop) -> httpx.Request:
            return client.build_request(hop.method, hop.url, headers=hop.headers)

        async def no_tokens(*args: object) -> tuple[int, bytes]:
            raise AssertionError("no token fetch for Basic")

        first = _redirects.Hop("GET", httpx.URL("https://registry.test/v2/"), {})
        access = _auth.Access("registry.test", "", "s", Credential(username="u", password="p"))
        auth = _auth.RegistryAuth(
            _auth.AuthState(), access, first, build, _config.DEFAULT_SETTINGS, no_tokens
        )
        response = await client.send(build(first), auth=auth)
    assert response.status_code == 200
    [body] = bodies
    assert body.pulled <= CAP + 4096 and body.closed
