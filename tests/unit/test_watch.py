"""kube.Watch's answers to faults the real API server produces only at its own moment: an
expired resourceVersion (410, as a status or as an ERROR event), bookmarks, server errors,
garbage and oversized events. A small aiohttp server plays the API server."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import kubernetes
import pytest
from aiohttp import web

from archwarden import kube
from archwarden.kube import _watch


def node(name: str, version: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "resourceVersion": version}}


class FakeApi:
    """Answers from a script: each LIST and WATCH request takes the next answer of its kind
    (a status, a page, raw bytes, or for a list a function giving the body's chunks)."""

    def __init__(self, lists: list[Any], watches: list[Any]) -> None:
        self.lists = lists
        self.watches = watches
        self.requests: list[dict[str, str]] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(dict(request.query))
        if request.query.get("watch"):
            answer = self.watches.pop(0) if self.watches else None
            if answer is None:
                await asyncio.sleep(3600)  # a quiet watch
            if answer == "cut":  # the connection reset in the middle of an event
                response = web.StreamResponse()
                await response.prepare(request)
                await response.write(b'{"type": "ADD')
                assert request.transport is not None
                request.transport.abort()
                return response
            if isinstance(answer, int):
                return web.Response(status=answer)
            response = web.StreamResponse()
            await response.prepare(request)
            for line in answer:
                await response.write(line if isinstance(line, bytes) else json.dumps(line).encode())
                await response.write(b"\n")
            return response
        answer = self.lists.pop(0)
        if isinstance(answer, int):
            return web.Response(status=answer)
        if isinstance(answer, bytes):
            return web.Response(body=answer, content_type="application/json")
        if callable(answer):  # a page streamed chunk by chunk, never whole
            response = web.StreamResponse()
            await response.prepare(request)
            for chunk in answer():
                await response.write(chunk)
            return response
        return web.json_response(answer)


@contextlib.asynccontextmanager
async def serving(api: FakeApi, **options: Any) -> AsyncIterator[kube.Connection]:
    app = web.Application()
    app.router.add_get("/api/v1/nodes", api.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.1)  # the quiet watch never ends itself
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield kube.Connection(
            kubernetes.client.Configuration(host=f"http://127.0.0.1:{port}"), **options
        )
    finally:
        await runner.cleanup()


class Seen:
    def __init__(self) -> None:
        self.log: list[tuple[str, Any]] = []

    def on_object(self, body: Any) -> None:
        self.log.append(("object", body["metadata"]["name"]))

    def on_deleted(self, body: Any) -> None:
        self.log.append(("deleted", body["metadata"]["name"]))

    def on_listed(self, names: set[str]) -> None:
        self.log.append(("listed", names))


async def run_until(
    api: FakeApi,
    done: Callable[[Seen], bool],
    *,
    watches: list[kube.Watch] | None = None,
    on_restart: Callable[[str, str], None] | None = None,
    **options: Any,
) -> Seen:
    seen = Seen()
    async with serving(api, on_restart=on_restart) as connection:
        watch = kube.Watch(
            connection,
            "/api/v1/nodes",
            on_object=seen.on_object,
            on_deleted=seen.on_deleted,
            on_listed=seen.on_listed,
            **options,
        )
        if watches is not None:
            watches.append(watch)
        task = asyncio.create_task(watch.run())
        try:
            for _ in range(200):
                if done(seen):
                    break
                await asyncio.sleep(0.02)
            else:
                raise AssertionError(f"not done: {seen.log}")
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    return seen


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_watch, "RETRY_SECONDS", (0.01,))


def page(items: list[dict[str, Any]], version: str, token: str = "") -> dict[str, Any]:
    return {"items": items, "metadata": {"resourceVersion": version, "continue": token}}


async def test_an_expired_version_lists_again_and_drops_what_vanished() -> None:
    api = FakeApi(
        lists=[page([node("a", "1"), node("b", "2")], "5"), page([node("a", "7")], "8")],
        watches=[[{"type": "ERROR", "object": {"kind": "Status", "code": 410}}]],
    )
    seen = await run_until(api, lambda s: len([e for e in s.log if e[0] == "listed"]) == 2)
    assert seen.log == [
        ("object", "a"),
        ("object", "b"),
        ("listed", {"a", "b"}),
        ("object", "a"),
        ("listed", {"a"}),
    ]


async def test_a_410_status_on_the_watch_request_lists_again() -> None:
    api = FakeApi(lists=[page([], "5"), page([node("c", "9")], "9")], watches=[410])
    seen = await run_until(api, lambda s: ("listed", {"c"}) in s.log)
    assert seen.log == [("listed", set()), ("object", "c"), ("listed", {"c"})]


async def test_pages_follow_the_continue_token_and_bookmarks_move_the_version() -> None:
    api = FakeApi(
        lists=[page([node("a", "1")], "", token="next"), page([node("b", "2")], "5")],
        watches=[
            [
                {"type": "BOOKMARK", "object": node("", "40")},
                {"type": "DELETED", "object": node("a", "41")},
            ]
        ],
    )
    seen = await run_until(api, lambda s: ("deleted", "a") in s.log and len(api.requests) >= 4)
    assert seen.log == [("object", "a"), ("object", "b"), ("listed", {"a", "b"}), ("deleted", "a")]
    assert api.requests[1]["continue"] == "next"
    assert [r.get("resourceVersion") for r in api.requests[2:4]] == ["5", "41"]


@pytest.mark.parametrize(
    "answer",
    [
        500,
        [b"{not json"],
        # A well-formed event, but longer than the bound below: never handed on.
        [{"type": "ADDED", "object": {**node("big", "6"), "pad": "x" * 5000}}],
        [{"type": "ADDED"}],  # no object
    ],
    ids=["http-500", "garbage", "oversized", "no-object"],
)
async def test_a_broken_stream_starts_over_from_a_fresh_list(answer: Any) -> None:
    api = FakeApi(lists=[page([], "5"), page([node("z", "6")], "6")], watches=[answer])
    seen = await run_until(api, lambda s: ("listed", {"z"}) in s.log, max_object_bytes=1000)
    assert seen.log == [("listed", set()), ("object", "z"), ("listed", {"z"})]


@pytest.mark.parametrize(
    "answer",
    [
        # Well-formed, but one object is longer than the bound below: never handed on.
        json.dumps(page([{**node("big", "1"), "pad": "x" * 5000}], "5")).encode(),
        b'{"items": [{"metadata" {"name": "a"}}], "metadata": {}}',
        b'{"items": {"metadata": {"name": "a"}}, "metadata": {}}',
        b'{"items": [], "metadata": ["resourceVersion", "5"]}',
        b'{"items": [' + b"[" * 100_000 + b"]}",
    ],
    ids=["oversized-object", "garbage", "items-not-a-list", "metadata-not-an-object", "deep"],
)
async def test_a_broken_list_page_starts_over(answer: bytes) -> None:
    api = FakeApi(lists=[answer, page([node("z", "6")], "6")], watches=[])
    seen = await run_until(api, lambda s: ("listed", {"z"}) in s.log, max_object_bytes=1000)
    assert seen.log == [("object", "z"), ("listed", {"z"})]


async def test_a_silent_stream_is_dropped_at_its_idle_deadline_and_resumed() -> None:
    # A bookmark moves the version to 7, then the next watch hears nothing at all (a
    # connection that stopped forwarding); the one after that is healthy again.
    api = FakeApi(
        lists=[page([node("a", "1")], "5")],
        watches=[
            [{"type": "BOOKMARK", "object": node("", "7")}],
            None,
            [{"type": "ADDED", "object": node("b", "8")}],
        ],
    )
    watches: list[kube.Watch] = []
    started = asyncio.get_running_loop().time()
    seen = await run_until(
        api, lambda s: ("object", "b") in s.log, watches=watches, watch_seconds=0, idle_seconds=0.3
    )
    assert asyncio.get_running_loop().time() - started < 2
    assert seen.log == [("object", "a"), ("listed", {"a"}), ("object", "b")]
    # Resumed from the bookmark's version: nothing listed again.
    assert [r.get("resourceVersion") for r in api.requests][:4] == [None, "5", "7", "7"]
    (watch,) = watches
    assert (watch.restarts, watch.lists, watch.stale_seconds()) == ({"idle": 1}, 1, 0)
    assert watch.last_problem == "idle: no byte within 0.3s"


async def test_a_reset_connection_resumes_from_the_last_version() -> None:
    restarts: list[tuple[str, str]] = []
    api = FakeApi(
        lists=[page([], "5")],
        watches=[
            [{"type": "ADDED", "object": node("a", "6")}],
            "cut",
            [{"type": "ADDED", "object": node("b", "9")}],
        ],
    )
    watches: list[kube.Watch] = []
    seen = await run_until(
        api,
        lambda s: ("object", "b") in s.log,
        watches=watches,
        on_restart=lambda *labels: restarts.append(labels),
    )
    assert seen.log == [("listed", set()), ("object", "a"), ("object", "b")]
    assert [r.get("resourceVersion") for r in api.requests][:4] == [None, "5", "6", "6"]
    assert restarts == [("nodes", "connection")]
    assert watches[0].lists == 1


def test_watch_sockets_carry_tcp_keepalive() -> None:
    sock = _watch.keepalive_socket(
        (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("127.0.0.1", 0))
    )
    with sock:
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == _watch.KEEPALIVE[0]
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == _watch.KEEPALIVE[2]


def test_idle_deadline_must_exceed_the_watch_length() -> None:
    configuration = kubernetes.client.Configuration(host="http://127.0.0.1:1")
    with pytest.raises(ValueError, match="idle_seconds must be above watch_seconds"):
        kube.Connection(configuration, watch_seconds=30, idle_seconds=25)


def test_credentials_are_sent_however_the_client_configuration_holds_them() -> None:
    # A kubeconfig token, as load_kube_config stores it.
    kubeconfig = kubernetes.client.Configuration(host="https://127.0.0.1:1")
    kubeconfig.api_key = {"authorization": "Bearer from-kubeconfig"}
    assert kube.Connection(kubeconfig).headers()["Authorization"] == "Bearer from-kubeconfig"
    # The in-cluster ServiceAccount token, as load_incluster_config stores it.
    in_cluster = kubernetes.client.Configuration(host="https://127.0.0.1:1")
    in_cluster.api_key = {"BearerToken": "from-service-account"}
    in_cluster.api_key_prefix = {"BearerToken": "Bearer"}
    assert kube.Connection(in_cluster).headers()["Authorization"] == "Bearer from-service-account"
    # Client certificates only: no header.
    assert (
        "Authorization"
        not in kube.Connection(
            kubernetes.client.Configuration(host="https://127.0.0.1:1")
        ).headers()
    )


def test_every_watch_on_a_connection_takes_its_object_bound() -> None:
    """limits.apiObjectBytes reaches every stream through the connection they share."""
    connection = kube.Connection(
        kubernetes.client.Configuration(host="http://127.0.0.1:1"), max_object_bytes=8192
    )

    def nothing(_: Any) -> None:
        return None

    shared = kube.Watch(
        connection, "/api/v1/pods", on_object=nothing, on_deleted=nothing, on_listed=nothing
    )
    own = kube.Watch(
        connection,
        "/api/v1/nodes",
        on_object=nothing,
        on_deleted=nothing,
        on_listed=nothing,
        max_object_bytes=4096,
    )
    assert (shared.max_object_bytes, own.max_object_bytes) == (8192, 4096)
