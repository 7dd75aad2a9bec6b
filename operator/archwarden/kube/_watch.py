"""List and watch one kind cluster-wide on a single stream, without per-object machinery.

kopf gives every watched object its own worker, queue and toggle; with 5,000 nodes its start-up
alone took minutes and most of a core went to waking those workers (py-spy: 27% of samples in
``ToggleSet.make_toggle`` notifying every waiter per new object). Decisions need only a
projection of each object, kept in memory, so nodes and namespaces are read here instead: a
paged LIST, then a WATCH from its resourceVersion with bookmarks, again from a fresh LIST when
the server says the version is too old (410). kopf stays the framework for the webhooks and the
operator's lifecycle.

A connection can die silently: a load balancer's failover or a NAT timeout stops forwarding on
an open connection while new ones work, and a read then waits for bytes that never come (with
the old read timeout of the watch length plus 30 s, nodes stayed stale for 330 s). So each
stream has an idle deadline (``idle_seconds``): the server ends every watch after
``watch_seconds`` and sends a bookmark 2 s before (kube-apiserver's cacher: bookmarks about once
a minute, and 2 s ahead of the watch's deadline), so a healthy stream never stays silent that
long, and one that does is dropped with every pooled connection of its session. The watch then
resumes from the last resourceVersion it saw (a 410 lists again), and reports each restart by
reason (``on_restart``). Sockets carry TCP keepalive for what the deadline cannot see (a peer
gone with no bytes due).

The consumer gets each object as it arrives (``on_object``), each deletion (``on_deleted``) and,
after every complete LIST, the set of names it held (``on_listed``), so objects deleted while the
stream was down are dropped too. Objects are never kept here: a LIST page is decoded item by item
as it arrives (``_listing``) and a watch event line by line, so memory is the consumer's
projection plus about one object (at most ``max_object_bytes`` of text, twice over while it is
assembled), however many objects a page holds and however large they are.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import ssl
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import aiohttp

from archwarden.kube import _listing

__all__ = [
    "RESTART_REASONS",
    "Connection",
    "Watch",
    "WatchError",
    "keepalive_options",
    "keepalive_socket",
    "object_key",
]

logger = logging.getLogger("archwarden")

PAGE_SIZE = 500
"""Objects per LIST page. Pages are decoded item by item, so this no longer bounds memory; it
sets how many requests a list takes (5,000 nodes: ten)."""
CHUNK_BYTES = 64 * 1024
"""What one read of a LIST body takes, so that a read adds at most this beside the object being
assembled."""
WATCH_SECONDS = 20
"""The server ends each watch after this long (``timeoutSeconds``), with a bookmark 2 s before;
the next resumes from the last resourceVersion seen, so nothing is lost. Below the idle
deadline, so that a quiet but healthy stream is never taken for a dead one."""
IDLE_SECONDS = 25.0
"""No byte for this long on a stream (a watch or a LIST page) and its connection is taken for
dead: a silent connection is noticed within 30 s, ahead of client-go (about 45 s)."""
CONNECT_SECONDS = 10.0
"""Opening a connection (TCP and TLS)."""
KEEPALIVE = (10, 5, 3)
"""TCP keepalive: first probe after 10 idle seconds, then every 5 s, dropped after 3
unanswered: a peer that vanished is noticed by the kernel within 25 s."""
RESTART_REASONS = ("idle", "connection", "gone", "error")
"""Why a watch started over: no byte within the idle deadline, the connection failed (reset,
refused, cut short), the resourceVersion expired (410: listed again), or the stream was bad
(an HTTP error, JSON that is not an event, an oversized object: listed again)."""
MAX_OBJECT_BYTES = 4 * 1024 * 1024
"""The default of ``max_object_bytes``: an object (etcd stores at most 1.5 MiB) with room to
spare."""
RETRY_SECONDS = (0.5, 1.0, 2.0, 5.0, 10.0)
"""Back-off between failed attempts (the last repeats), so a down API server is not hammered."""


class WatchError(RuntimeError):
    """The stream failed (HTTP error, bad JSON, an oversized object or event); the watch starts
    over."""


class _Gone(Exception):
    """410: the resourceVersion is too old to resume from; list again."""


def keepalive_options() -> list[tuple[int, int, int]]:
    """``setsockopt`` arguments for :data:`KEEPALIVE` (those the platform has)."""
    idle, interval, count = KEEPALIVE
    options = [(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)]
    for name, value in (
        ("TCP_KEEPIDLE", idle),
        ("TCP_KEEPINTVL", interval),
        ("TCP_KEEPCNT", count),
    ):
        if hasattr(socket, name):
            options.append((socket.IPPROTO_TCP, getattr(socket, name), value))
    return options


def keepalive_socket(addr_info: Any) -> socket.socket:
    """aiohttp's socket factory: its default socket, with TCP keepalive."""
    family, kind, proto, _, _ = addr_info
    sock = socket.socket(family=family, type=kind, proto=proto)
    try:
        sock.setblocking(False)
        for option in keepalive_options():
            sock.setsockopt(*option)
    except OSError:
        sock.close()
        raise
    return sock


class Connection:
    """Where and how to reach the API server, taken from a kubernetes client configuration
    (kubeconfig or in-cluster): base URL, TLS settings and the bearer token, read per request
    so that the in-cluster token's refresh hook keeps working."""

    def __init__(
        self,
        configuration: Any,
        *,
        max_object_bytes: int = MAX_OBJECT_BYTES,
        watch_seconds: int = WATCH_SECONDS,
        idle_seconds: float = IDLE_SECONDS,
        on_restart: Callable[[str, str], None] | None = None,
    ) -> None:
        if idle_seconds <= watch_seconds:
            raise ValueError("idle_seconds must be above watch_seconds")
        self._configuration = configuration
        # Every stream on this connection reads objects of the same cluster: one bound for
        # all (limits.apiObjectBytes), unless a watch is given its own; the same for the
        # watch length and idle deadline (kube.watchSeconds, kube.watchIdleSeconds).
        self.max_object_bytes = max_object_bytes
        self.watch_seconds = watch_seconds
        self.idle_seconds = idle_seconds
        self.on_restart = on_restart
        """Called with the resource (``nodes``) and one of :data:`RESTART_REASONS` each time
        one of its watches starts over."""
        self.base_url = str(configuration.host).rstrip("/")
        context = ssl.create_default_context(cafile=configuration.ssl_ca_cert or None)
        if configuration.cert_file:
            context.load_cert_chain(configuration.cert_file, configuration.key_file)
        if not configuration.verify_ssl:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        self.ssl = context

    @classmethod
    def from_api_client(cls, api_client: Any, **options: Any) -> Connection:
        """The same server as ``api_client``; ``options`` as for the constructor."""
        return cls(api_client.configuration, **options)

    def headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        # The client's own reading of its credentials: a kubeconfig token sits under
        # "authorization", the in-cluster one under "BearerToken" with a "Bearer" prefix, and
        # asking refreshes the in-cluster token when it is due.
        for setting in self._configuration.auth_settings().values():
            if setting.get("in") == "header" and setting.get("value"):
                headers[str(setting["key"]).title()] = str(setting["value"])
        return headers


class Watch:
    """One kind, e.g. ``/api/v1/nodes``; :meth:`run` until cancelled.

    ``max_object_bytes`` bounds the JSON text of one listed object and of one watch event line
    (an object and its short envelope); it is what the stream holds at most beside the
    consumer's projection. A larger one is a :class:`WatchError`: the stream is dropped and
    listed again. While listing it counts characters, which are bytes for ASCII text; an object
    of non-ASCII text may have up to four bytes for each. Unset, the connection's bound.

    ``watch_seconds`` must stay below ``idle_seconds``: the server's bookmark before its deadline
    and the end of the watch are what a quiet stream hears. Unset, the connection's.
    """

    def __init__(
        self,
        connection: Connection,
        path: str,
        *,
        on_object: Callable[[Mapping[str, Any]], None],
        on_deleted: Callable[[Mapping[str, Any]], None],
        on_listed: Callable[[set[str]], None],
        page_size: int = PAGE_SIZE,
        watch_seconds: int | None = None,
        idle_seconds: float | None = None,
        max_object_bytes: int | None = None,
        selector: Mapping[str, str] | None = None,
    ) -> None:
        watch_seconds = connection.watch_seconds if watch_seconds is None else watch_seconds
        idle_seconds = connection.idle_seconds if idle_seconds is None else idle_seconds
        if idle_seconds <= watch_seconds:
            raise ValueError("idle_seconds must be above watch_seconds")
        self.connection = connection
        self.selector = dict(selector or {})
        """Extra query parameters for both LIST and WATCH (``labelSelector``, ...)."""
        self.path = path
        self.on_object = on_object
        self.on_deleted = on_deleted
        self.on_listed = on_listed
        self.resource = path.rstrip("/").rsplit("/", 1)[-1]
        """The plural the path ends in (``nodes``): the label of its restarts."""
        self.page_size = page_size
        self.watch_seconds = watch_seconds
        self.idle_seconds = idle_seconds
        self.max_object_bytes = (
            connection.max_object_bytes if max_object_bytes is None else max_object_bytes
        )
        self.synced = asyncio.Event()
        """Set once the first LIST is complete (and stays set across relists)."""
        self.lists = 0
        """Complete LISTs so far: one at start, one more after each 410 or bad stream."""
        self.restarts: dict[str, int] = {}
        """Restarts so far by reason (:data:`RESTART_REASONS`)."""
        self.heard = time.monotonic()
        """When the server was last heard on a stream (``time.monotonic()``)."""
        self.disconnected_since: float | None = None
        """While the watch is down: when the server was last heard (changes since may be
        missing); None while a stream is up."""
        self.last_problem = ""
        """Why the watch last started over, in a few words."""

    def stale_seconds(self, now: float | None = None) -> float:
        """How long the watch has been down (0 while a stream is up); counted from the last
        byte heard, since a silent connection is only noticed at its deadline."""
        if self.disconnected_since is None:
            return 0.0
        return max(0.0, (time.monotonic() if now is None else now) - self.disconnected_since)

    def _session(self) -> aiohttp.ClientSession:
        # sock_read is the idle deadline: aiohttp restarts it whenever bytes arrive.
        timeout = aiohttp.ClientTimeout(
            total=None, connect=CONNECT_SECONDS, sock_read=self.idle_seconds
        )
        connector = aiohttp.TCPConnector(socket_factory=keepalive_socket)
        return aiohttp.ClientSession(timeout=timeout, connector=connector)

    async def run(self) -> None:
        failures = 0
        version = ""  # none yet: list first
        while True:
            # A fresh session after every failure: a connection that went silent rarely goes
            # alone (a load balancer's failover takes all of them), so none of its pooled
            # siblings is tried again.
            async with self._session() as session:
                try:
                    if not version:
                        version = await self._list(session)
                        failures = 0
                    while True:
                        version = await self._watch(session, version)
                        failures = 0
                except _Gone:
                    reason, detail, version = "gone", "resourceVersion expired", ""
                except asyncio.CancelledError:
                    raise
                except aiohttp.ConnectionTimeoutError as exc:
                    reason, detail = "connection", _describe(exc)
                except TimeoutError:  # aiohttp's read timeout: the idle deadline
                    reason, detail = "idle", f"no byte within {self.idle_seconds:g}s"
                except WatchError as exc:
                    # Resuming would replay what failed (an oversized or broken event).
                    reason, detail, version = "error", _describe(exc), ""
                except (aiohttp.ClientError, OSError) as exc:
                    reason, detail = "connection", _describe(exc)
            self._restarted(reason, detail)
            if reason == "gone":
                logger.debug("watch %s: resourceVersion expired, listing again", self.path)
                continue
            delay = RETRY_SECONDS[min(failures, len(RETRY_SECONDS) - 1)]
            failures += 1
            logger.warning(
                "watch %s failed (%s); %s in %.1fs",
                self.path,
                detail,
                "resuming" if version else "listing again",
                delay,
            )
            await asyncio.sleep(delay)

    def _restarted(self, reason: str, detail: str) -> None:
        if self.disconnected_since is None:
            self.disconnected_since = self.heard
        self.last_problem = f"{reason}: {detail}"
        self.restarts[reason] = self.restarts.get(reason, 0) + 1
        if self.connection.on_restart is not None:
            self.connection.on_restart(self.resource, reason)

    def _connected(self) -> None:
        self.heard = time.monotonic()
        self.disconnected_since = None

    async def _list(self, session: aiohttp.ClientSession) -> str:
        names: set[str] = set()
        token = ""
        while True:
            params = {**self.selector, "limit": str(self.page_size)}
            if token:
                params["continue"] = token
            async with session.get(
                self.connection.base_url + self.path,
                params=params,
                headers=self.connection.headers(),
                ssl=self.connection.ssl,
            ) as response:
                if response.status == 410:
                    # The continue token expired mid-list: start the list over.
                    names.clear()
                    token = ""
                    continue
                if response.status != 200:
                    raise WatchError(f"list: HTTP {response.status}")
                page = _listing.PageDecoder(
                    self.max_object_bytes, lambda item: self._listed(item, names)
                )
                try:
                    async for chunk in response.content.iter_chunked(CHUNK_BYTES):
                        page.feed(chunk)
                    page.finish()
                except _listing.PageError as exc:
                    raise WatchError(f"list: {exc}") from None
            meta = page.fields.get("metadata") or {}
            if not isinstance(meta, Mapping):
                raise WatchError("list: metadata is not an object")
            token = str(meta.get("continue") or "")
            if not token:
                self.on_listed(names)
                self.lists += 1
                self._connected()
                self.synced.set()
                return str(meta.get("resourceVersion") or "")

    def _listed(self, item: Any, names: set[str]) -> None:
        if isinstance(item, Mapping):
            names.add(object_key(item))
            self.on_object(item)

    async def _watch(self, session: aiohttp.ClientSession, version: str) -> str:
        params = {
            **self.selector,
            "watch": "1",
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(self.watch_seconds),
            "resourceVersion": version,
        }
        async with session.get(
            self.connection.base_url + self.path,
            params=params,
            headers=self.connection.headers(),
            ssl=self.connection.ssl,
        ) as response:
            if response.status == 410:
                raise _Gone
            if response.status != 200:
                raise WatchError(f"watch: HTTP {response.status}")
            # Up again: the server replays what changed since ``version`` first.
            self._connected()
            async for line in _lines(response.content, self.max_object_bytes, self):
                try:
                    event = json.loads(line)
                except ValueError:
                    raise WatchError("watch: an event is not JSON") from None
                if not isinstance(event, Mapping):
                    raise WatchError("watch: an event is not an object")
                kind, obj = event.get("type"), event.get("object")
                if not isinstance(obj, Mapping):
                    raise WatchError("watch: an event without an object")
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        raise _Gone
                    raise WatchError(f"watch: server error {obj.get('code')}")
                version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
                if kind in ("ADDED", "MODIFIED"):
                    self.on_object(obj)
                elif kind == "DELETED":
                    self.on_deleted(obj)
                # BOOKMARK: only the resourceVersion, taken above.
        return version


async def _lines(content: aiohttp.StreamReader, limit: int, watch: Watch) -> AsyncIterator[bytes]:
    """Newline-separated events; aiohttp's own readline stops at 128 KiB, below a real node.
    Every chunk is the server heard (``watch.heard``)."""
    buffer = b""
    async for chunk in content.iter_any():
        watch.heard = time.monotonic()
        buffer += chunk
        while True:
            end = buffer.find(b"\n")
            if end < 0:
                break
            if end > limit:
                raise WatchError(f"watch: an event longer than {limit} bytes")
            line, buffer = buffer[:end], buffer[end + 1 :]
            if line.strip():
                yield line
        if len(buffer) > limit:
            raise WatchError(f"watch: an event longer than {limit} bytes")
    if buffer.strip():
        yield buffer


def object_key(obj: Mapping[str, Any]) -> str:
    """``name``, or ``namespace/name`` for a namespaced object: the keys of ``on_listed``."""
    meta = obj.get("metadata") or {}
    namespace = meta.get("namespace")
    name = str(meta.get("name") or "")
    return f"{namespace}/{name}" if namespace else name


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
