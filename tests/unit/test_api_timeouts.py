"""API calls through the kubernetes client (kube.load_api_client) are bounded: a server that
accepts the connection and never answers costs a call its timeout and one retry, not forever."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from archwarden import kube


@contextlib.contextmanager
def silent_server() -> Iterator[tuple[int, list[socket.socket]]]:
    """Accepts connections, reads nothing, answers nothing; yields its port and connections.
    Used inside the test, not as a fixture: pytest-asyncio closes the event loop (waiting for
    its executor's threads) before fixtures are torn down, so a call stuck on this server
    would be waited for forever."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    accepted: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            accepted.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], accepted
    finally:
        # shutdown() wakes the blocked accept(); close() alone would leave the socket listening
        # (and a client without a timeout waiting on a connection nobody reads).
        with contextlib.suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)
        listener.close()
        thread.join(5)
        for conn in accepted:
            conn.close()


def kubeconfig(tmp_path: Path, port: int) -> str:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return str(path)


async def test_a_call_to_a_server_that_never_answers_fails_after_its_timeout_and_one_retry(
    tmp_path: Path,
) -> None:
    with silent_server() as (port, accepted):
        api = kube.load_api_client(kubeconfig(tmp_path, port), request_timeout=0.3)
        reader = kube.ApiReader(api)
        start = time.monotonic()
        with pytest.raises(kube.ApiUnavailable, match="secret ns/name: MaxRetryError"):
            await asyncio.wait_for(reader.secret("ns", "name"), 5)
        took = time.monotonic() - start
        assert 0.6 <= took < 1.5  # two reads of 0.3 s: the first, then one on a new connection
        assert len(accepted) == 2


def test_api_sockets_carry_tcp_keepalive(tmp_path: Path) -> None:
    api = kube.load_api_client(kubeconfig(tmp_path, 1))
    options = api.rest_client.pool_manager.connection_pool_kw["socket_options"]
    assert (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1) in options
    assert (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1) in options  # urllib3's own, kept
    assert (socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 10) in options
