"""``FaultyProxy``: a TCP proxy on 127.0.0.1 that kills connections the way networks do.

Between a client and a server (TLS passes through untouched, so the server's certificate stays
valid for 127.0.0.1), it can

- :meth:`~FaultyProxy.blackhole` the connections open now: they stay open, and whatever either
  side sends is dropped (a load balancer's failover, a NAT entry that timed out), while new
  connections work;
- :meth:`~FaultyProxy.reset` them: both sides get a TCP RST;
- go :meth:`~FaultyProxy.down`: blackhole the open ones and reset every new one, until
  :meth:`~FaultyProxy.up`.

The kernel still answers for the proxy's sockets, so TCP keepalive never notices a blackhole:
only a deadline in the client does, which is what it is for.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from types import TracebackType

__all__ = ["FaultyProxy"]

_CHUNK = 64 * 1024


def _abort(writer: asyncio.StreamWriter) -> None:
    """Close with an RST, not a FIN: linger on, with a zero timeout."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class _Pair:
    def __init__(self, client: asyncio.StreamWriter, server: asyncio.StreamWriter) -> None:
        self.client = client
        self.server = server
        self.blackholed = False
        self.tasks: list[asyncio.Task[None]] = []

    async def pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await source.read(_CHUNK):
                if self.blackholed:
                    continue  # read and dropped: the sender's kernel sees it acknowledged
                sink.write(data)
                await sink.drain()
        if not self.blackholed:
            with contextlib.suppress(ConnectionError, OSError, RuntimeError):
                sink.write_eof()

    def reset(self) -> None:
        for task in self.tasks:
            task.cancel()
        _abort(self.client)
        _abort(self.server)


class FaultyProxy:
    """``async with FaultyProxy(port) as proxy``: listens on ``proxy.port``."""

    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = 0
        self.accepted = 0
        """Connections accepted so far (refused ones included)."""
        self._pairs: set[_Pair] = set()
        self._down = False
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> FaultyProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        # Every connection is reset, so nothing waits on a blackholed one after the test.
        for pair in list(self._pairs):
            pair.reset()
        self._pairs.clear()
        await self._server.wait_closed()

    @property
    def open_connections(self) -> int:
        return len(self._pairs)

    def blackhole(self) -> None:
        for pair in self._pairs:
            pair.blackholed = True

    def reset(self) -> None:
        for pair in list(self._pairs):
            pair.reset()
        self._pairs.clear()

    def down(self) -> None:
        self.blackhole()
        self._down = True

    def up(self) -> None:
        self._down = False

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self._down:
            _abort(writer)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            _abort(writer)
            return
        pair = _Pair(writer, up_writer)
        self._pairs.add(pair)
        pair.tasks = [
            asyncio.create_task(pair.pump(reader, up_writer)),
            asyncio.create_task(pair.pump(up_reader, writer)),
        ]
        try:
            await asyncio.gather(*pair.tasks, return_exceptions=True)
        except asyncio.CancelledError:
            # The loop is closing: asyncio's stream callback reports a handler that ends
            # cancelled as an error, so this one ends quietly.
            pair.reset()
        finally:
            if pair in self._pairs and not pair.blackholed:
                self._pairs.discard(pair)
                writer.close()
                up_writer.close()
