"""``CountingProxy``: a threaded HTTP reverse proxy on 127.0.0.1 that counts registry requests.

Distribution has no request counter, so benchmarks and tests put this in front of a
:class:`~tests.support.registry.RegistryServer`. Every request is forwarded verbatim (method,
path and query, headers including ``Host`` and ``Authorization``, body streamed; hop-by-hop headers
are the only ones dropped) over a fresh upstream connection; redirects are passed back, never
followed. Each exchange is recorded as ``ProxyRecord(method, path, query, status)``.

Because ``Host`` is forwarded, the registry builds upload ``Location`` URLs that point back at the
proxy. When the upstream speaks TLS the proxy serves TLS too, with the registry's own certificate,
so ``ca_file`` stays valid. If the upstream is down the proxy answers ``502`` (recorded).

The proxy exposes ``host``, ``url``, ``ca_file``, ``username``, ``password``, ``token_server`` and
``mode`` like the registry, so a :class:`~tests.support.images.Seeder` can target it.
"""

from __future__ import annotations

import http.client
import ssl
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from tests.support.registry import RegistryServer
    from tests.support.token_server import TokenServer

__all__ = ["CountingProxy", "ProxyRecord"]

_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
_CHUNK = 64 * 1024


@dataclass(frozen=True)
class ProxyRecord:
    method: str
    path: str
    query: str
    status: int


def _read_chunked(rfile: Any) -> Iterator[bytes]:
    """Decode an HTTP/1.1 chunked request body from ``rfile`` (trailers are discarded)."""
    while True:
        line = rfile.readline(65537)
        size = int(line.split(b";", 1)[0].strip() or b"0", 16)
        if size == 0:
            while rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                pass
            return
        remaining = size
        while remaining:
            data = rfile.read(min(remaining, _CHUNK))
            if not data:
                raise ConnectionError("client closed mid-chunk")
            remaining -= len(data)
            yield data
        rfile.readline(65537)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def setup(self) -> None:
        if isinstance(self.request, ssl.SSLSocket):
            self.request.settimeout(30)
            self.request.do_handshake()
        super().setup()

    recorded = False

    def record(self, status: int) -> None:
        """Record before the response goes out, so a client never sees an uncounted answer."""
        if not self.recorded:
            self.recorded = True
            split = urlsplit(self.path)
            self.server.owner._record(ProxyRecord(self.command, split.path, split.query, status))

    def _proxy(self) -> None:
        self.recorded = False
        try:
            self.server.owner._forward(self)
        finally:
            self.record(502)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _proxy


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: CountingProxy


class CountingProxy:
    """Reverse proxy in front of ``upstream``; ``start()`` it (or use ``with``)."""

    def __init__(self, upstream: RegistryServer, *, port: int = 0) -> None:
        self.upstream = upstream
        self.port = port
        self.records: list[ProxyRecord] = []
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._upstream_ctx: ssl.SSLContext | None = None
        if upstream.tls:
            self._upstream_ctx = ssl.create_default_context(cafile=str(upstream.ca_file))

    def __repr__(self) -> str:
        return f"CountingProxy(url={self.url!r}, upstream={self.upstream.url!r})"

    # -- registry-like attributes ---------------------------------------------------------------

    @property
    def tls(self) -> bool:
        return self.upstream.tls

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}"

    @property
    def mode(self) -> str:
        return self.upstream.mode

    @property
    def ca_file(self) -> Path | None:
        return self.upstream.ca_file

    @property
    def username(self) -> str | None:
        return self.upstream.username

    @property
    def password(self) -> str | None:
        return self.upstream.password

    @property
    def token_server(self) -> TokenServer | None:
        return self.upstream.token_server

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> CountingProxy:
        if self._server is not None:
            return self
        server = _Server(("127.0.0.1", self.port), _Handler)
        server.owner = self
        if self.tls:
            assert self.upstream.cert_file is not None and self.upstream.key_file is not None
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(self.upstream.cert_file, self.upstream.key_file)
            server.socket = ctx.wrap_socket(
                server.socket, server_side=True, do_handshake_on_connect=False
            )
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"counting-proxy-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> CountingProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- counting ------------------------------------------------------------------------------

    def _record(self, rec: ProxyRecord) -> None:
        with self._lock:
            self.records.append(rec)

    def snapshot(self) -> list[ProxyRecord]:
        with self._lock:
            return list(self.records)

    def reset(self) -> None:
        with self._lock:
            self.records.clear()

    def count(
        self,
        method: str | None = None,
        *,
        path_contains: str | None = None,
        status: int | None = None,
    ) -> int:
        return sum(
            1
            for r in self.snapshot()
            if (method is None or r.method == method)
            and (path_contains is None or path_contains in r.path)
            and (status is None or r.status == status)
        )

    def counter(self) -> Counter[tuple[str, str]]:
        """Counts keyed by (method, path)."""
        return Counter((r.method, r.path) for r in self.snapshot())

    # -- forwarding ----------------------------------------------------------------------------

    def _connect(self) -> http.client.HTTPConnection:
        host, port = "127.0.0.1", self.upstream.port
        if self._upstream_ctx is not None:
            return http.client.HTTPSConnection(host, port, timeout=30, context=self._upstream_ctx)
        return http.client.HTTPConnection(host, port, timeout=30)

    def _forward(self, h: _Handler) -> int:
        conn = self._connect()
        try:
            try:
                conn.putrequest(h.command, h.path, skip_host=True, skip_accept_encoding=True)
                chunked_req = "chunked" in h.headers.get("Transfer-Encoding", "").lower()
                for name, value in h.headers.items():
                    if name.lower() not in _HOP_BY_HOP:
                        conn.putheader(name, value)
                if chunked_req:
                    conn.putheader("Transfer-Encoding", "chunked")
                conn.endheaders()
                if chunked_req:
                    for data in _read_chunked(h.rfile):
                        conn.send(b"%x\r\n%s\r\n" % (len(data), data))
                    conn.send(b"0\r\n\r\n")
                else:
                    remaining = int(h.headers.get("Content-Length") or 0)
                    while remaining > 0:
                        data = h.rfile.read(min(remaining, _CHUNK))
                        if not data:
                            raise ConnectionError("client closed mid-body")
                        remaining -= len(data)
                        conn.send(data)
                resp = conn.getresponse()
            except (OSError, http.client.HTTPException) as exc:
                h.close_connection = True
                h.record(502)
                body = f"counting proxy: upstream error: {type(exc).__name__}: {exc}\n".encode()
                h.send_response_only(502)
                h.send_header("Content-Type", "text/plain")
                h.send_header("Content-Length", str(len(body)))
                h.send_header("Connection", "close")
                h.end_headers()
                h.wfile.write(body)
                return 502

            h.record(resp.status)
            h.send_response_only(resp.status, resp.reason)
            has_length = False
            for name, value in resp.getheaders():
                lname = name.lower()
                if lname in _HOP_BY_HOP:
                    continue
                has_length = has_length or lname == "content-length"
                h.send_header(name, value)
            bodyless = h.command == "HEAD" or resp.status in (204, 304) or resp.status < 200
            rechunk = not bodyless and resp.chunked
            if rechunk:
                h.send_header("Transfer-Encoding", "chunked")
            elif not bodyless and not has_length:
                h.close_connection = True  # body delimited by connection close
            if h.close_connection:
                h.send_header("Connection", "close")
            h.end_headers()
            if not bodyless:
                while data := resp.read(_CHUNK):
                    h.wfile.write(b"%x\r\n%s\r\n" % (len(data), data) if rechunk else data)
                if rechunk:
                    h.wfile.write(b"0\r\n\r\n")
            return resp.status
        except (TimeoutError, ConnectionError):
            h.close_connection = True
            raise
        finally:
            conn.close()
