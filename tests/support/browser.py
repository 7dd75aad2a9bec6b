"""Headless Chromium (Debian's ``chromium`` package) for checking rendered HTML, offline.

Every run gets its own profile directory and a NetLog; :func:`network_use` reads the log.
Chromium is kept off the network three ways: pages are opened as ``file://``; every host name
resolves to nothing (``--host-resolver-rules="MAP * ~NOTFOUND"``), so neither the page nor the
browser's own background services (update checks, sign-in) can open a connection; and the
background services are switched off as far as flags allow. The NetLog proves it afterwards:
no TCP socket was opened and no UDP datagram sent. (Chromium does ``connect()`` a UDP socket
to a public address to learn its own source address; that sends nothing and is allowed.)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

__all__ = ["Rendered", "find_chromium", "network_use", "render", "require_chromium"]

FLAGS = (
    "--headless",
    "--disable-gpu",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--no-pings",
    "--disable-domain-reliability",
    "--disable-client-side-phishing-detection",
    "--disable-features=Translate,OptimizationHints,MediaRouter,AutofillServerCommunication",
    "--metrics-recording-only",
    "--hide-scrollbars",
)
# Every host name and address resolves to nothing: no connection can be made.
OFFLINE = "--host-resolver-rules=MAP * ~NOTFOUND"
# The same, but 127.0.0.1 stays reachable: only to prove that network_use sees a connection.
LOOPBACK_ONLY = "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"
TIMEOUT = 90


def find_chromium() -> str | None:
    return os.environ.get("ARCHWARDEN_CHROMIUM") or shutil.which("chromium")


def require_chromium() -> str:
    """The binary; skipped without it locally, failed in CI (``make deps`` installs it)."""
    found = find_chromium()
    if found is None:
        message = "chromium not installed (make deps installs Debian's package)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


@dataclass(frozen=True)
class Rendered:
    dom: str
    """The DOM after parsing and layout (``--dump-dom``)."""
    netlog: dict[str, object]


def _run(page: Path, *extra: str, offline: bool = True) -> tuple[str, dict[str, object]]:
    binary = require_chromium()
    with tempfile.TemporaryDirectory(prefix="archwarden-chromium-") as scratch:
        netlog = Path(scratch) / "netlog.json"
        args = [
            binary,
            *FLAGS,
            OFFLINE if offline else LOOPBACK_ONLY,
            f"--user-data-dir={scratch}/profile",
            f"--log-net-log={netlog}",
            *extra,
            page.resolve().as_uri(),
        ]
        if os.geteuid() == 0:
            args.insert(1, "--no-sandbox")  # Chromium refuses to run as root with its sandbox
        proc = subprocess.run(
            args, capture_output=True, text=True, timeout=TIMEOUT, check=False, cwd=scratch
        )
        if proc.returncode != 0:
            raise AssertionError(f"chromium failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        return proc.stdout, json.loads(netlog.read_text())


def render(page: Path, *, offline: bool = True) -> Rendered:
    """``offline=False`` lets the page reach 127.0.0.1 (nothing else), only to prove that
    :func:`network_use` sees real connections."""
    dom, netlog = _run(page, "--dump-dom", offline=offline)
    return Rendered(dom, netlog)


def screenshot(page: Path, out: Path, *, width: int = 1200, height: int = 900) -> Rendered:
    """A PNG of the page at ``width`` x ``height``; Chromium prints no DOM in this mode."""
    dom, netlog = _run(page, f"--screenshot={out.resolve()}", f"--window-size={width},{height}")
    if not out.exists() or out.stat().st_size == 0:
        raise AssertionError(f"chromium wrote no screenshot to {out}")
    return Rendered(dom, netlog)


def network_use(netlog: dict[str, object]) -> list[str]:
    """What in the NetLog left (or could have left) the process: TCP sockets opened or tried,
    UDP datagrams sent."""
    constants = netlog["constants"]
    assert isinstance(constants, dict)
    types = {v: k for k, v in constants["logEventTypes"].items()}
    sources = {v: k for k, v in constants["logSourceType"].items()}
    found: list[str] = []
    events = netlog["events"]
    assert isinstance(events, list)
    for event in events:
        kind = types.get(event["type"], str(event["type"]))
        source = sources.get(event["source"]["type"], "")
        params = event.get("params") or {}
        if source == "SOCKET" or kind in ("TCP_CONNECT", "TCP_CONNECT_ATTEMPT"):
            found.append(f"{source} {kind} {params}")
        elif kind in ("UDP_BYTES_SENT", "UDP_SEND_ERROR"):
            found.append(f"{kind} {params}")
    return found
