"""Start real distribution 2.8 registries (``docker-registry serve``) on 127.0.0.1 for tests.

Modes (``start_registry(workdir, mode)``):

``plain``
    HTTP, no auth.
``tls``
    HTTPS with a serving certificate for ``127.0.0.1``/``localhost`` from a fresh test CA
    (:attr:`RegistryServer.ca_file`). Plain HTTP to it gets ``400``.
``basic``
    htpasswd auth (bcrypt ``$2b$`` hash written with the ``bcrypt`` package). Distribution 2.8.2
    serves htpasswd over plain HTTP without complaint (checked against the real binary), so basic
    mode runs on **plain HTTP** by default; pass ``tls=True`` for Basic over HTTPS.
``token``
    ``auth.token`` pointing at a :class:`~tests.support.token_server.TokenServer` started
    alongside (its signing certificate is the ``rootcertbundle``). Plain HTTP by default,
    ``tls=True`` for HTTPS. The token server uses the same username/password.

``tls`` may be combined with any mode; ``ca_file`` is set whenever the registry speaks HTTPS.

Each registry owns ``workdir`` (config.yml, data/, registry.log, PEM files): use one workdir per
registry. Only 127.0.0.1 is ever bound. The binary is ``$ARCHWARDEN_REGISTRY_BIN``, else
``docker-registry`` on ``PATH``, else ``/usr/bin/docker-registry``.

Lifecycle: :meth:`RegistryServer.stop` stops the registry (and its token server unless
``keep_token_server=True``); :meth:`RegistryServer.start` starts whatever is stopped again on the
same ports with the same data; :meth:`RegistryServer.restart` bounces the registry process only.
Use them to simulate outages mid-test.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import secrets
import shutil
import socket
import ssl
import subprocess
import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bcrypt
import httpx
import yaml

from tests.support.pki import write_tls_files
from tests.support.proxy import CountingProxy, ProxyRecord
from tests.support.token_server import TokenServer

__all__ = [
    "MODES",
    "CountingProxy",
    "ProxyRecord",
    "RegistryError",
    "RegistryServer",
    "TokenServer",
    "find_registry_binary",
    "free_port",
    "running_registry",
    "start_registry",
]

MODES = ("plain", "tls", "basic", "token")
HTTP_SECRET = "archwarden-fixed-test-secret"  # fixed so uploads survive restarts
DEFAULT_USERNAME = "archwarden"
START_TIMEOUT = 15.0
POLL_INTERVAL = 0.05
LOG_TAIL_LINES = 40


#: registries with a live process; stopped at interpreter exit as a safety net
_LIVE: weakref.WeakSet[RegistryServer] = weakref.WeakSet()


@atexit.register
def _stop_all() -> None:
    for server in list(_LIVE):
        with contextlib.suppress(Exception):
            server.stop()


class RegistryError(RuntimeError):
    """Registry failed to start or stop; the message ends with the registry's log tail."""


def find_registry_binary() -> str | None:
    env = os.environ.get("ARCHWARDEN_REGISTRY_BIN")
    if env:
        return env
    found = shutil.which("docker-registry")
    if found:
        return found
    return "/usr/bin/docker-registry" if Path("/usr/bin/docker-registry").exists() else None


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1 (racy by nature; callers retry on bind failure)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


@dataclass(eq=False)
class RegistryServer:
    mode: str
    host: str
    url: str
    ca_file: Path | None
    username: str | None
    password: str | None = field(repr=False)
    token_server: TokenServer | None
    workdir: Path
    port: int
    config_file: Path
    log_file: Path
    cert_file: Path | None = None
    key_file: Path | None = None
    start_timeout: float = START_TIMEOUT
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False, compare=False)

    # -- info ----------------------------------------------------------------------------------

    @property
    def tls(self) -> bool:
        return self.url.startswith("https://")

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def ssl_context(self) -> ssl.SSLContext | bool:
        """``verify=`` value for httpx: a context trusting :attr:`ca_file`, or True."""
        if self.ca_file is None:
            return True
        return ssl.create_default_context(cafile=str(self.ca_file))

    def client(self, *, auth: bool = True, **kwargs: Any) -> httpx.Client:
        """An httpx client with ``base_url``/``verify`` set (and Basic auth in basic mode)."""
        kwargs.setdefault("base_url", self.url)
        kwargs.setdefault("verify", self.ssl_context())
        kwargs.setdefault("timeout", 10.0)
        if auth and self.mode == "basic" and self.username and self.password is not None:
            kwargs.setdefault("auth", httpx.BasicAuth(self.username, self.password))
        return httpx.Client(**kwargs)

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError:
            return "<no registry log>"
        return "\n".join(text.splitlines()[-lines:])

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> RegistryServer:
        """Start the token server (if any) and the registry if not running; wait for /v2/."""
        if self.token_server is not None:
            self.token_server.start()
        if self.running:
            return self
        self._spawn()
        self._wait_ready()
        return self

    def restart(self) -> RegistryServer:
        """Stop the registry process (token server untouched) and start it on the same port."""
        self._stop_process()
        return self.start()

    def stop(self, *, keep_token_server: bool = False) -> None:
        """Stop the registry process, and the token server unless ``keep_token_server``."""
        self._stop_process()
        if self.token_server is not None and not keep_token_server:
            self.token_server.stop()

    def __enter__(self) -> RegistryServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _spawn(self) -> None:
        binary = find_registry_binary()
        if binary is None:
            raise RegistryError("docker-registry binary not found (set ARCHWARDEN_REGISTRY_BIN)")
        env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
        with self.log_file.open("ab") as log:
            log.write(f"--- starting {binary} serve {self.config_file}\n".encode())
            log.flush()
            self._process = subprocess.Popen(
                [binary, "serve", str(self.config_file)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.workdir,
            )
        _LIVE.add(self)

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        last_error = "no attempt"
        with httpx.Client(verify=self.ssl_context(), timeout=1.0) as probe:
            while True:
                proc = self._process
                if proc is None or proc.poll() is not None:
                    code = None if proc is None else proc.returncode
                    self._process = None
                    raise RegistryError(
                        f"registry ({self.mode}) on {self.host} exited with {code} during start"
                        f"\n--- log tail ({self.log_file}):\n{self.log_tail()}"
                    )
                try:
                    resp = probe.get(f"{self.url}/v2/")
                    if resp.status_code in (200, 401):
                        return
                    last_error = f"HTTP {resp.status_code}"
                except httpx.HTTPError as exc:
                    last_error = f"{type(exc).__name__}: {exc}"
                if time.monotonic() >= deadline:
                    self._stop_process()
                    raise RegistryError(
                        f"registry ({self.mode}) on {self.host} not ready after "
                        f"{self.start_timeout:.0f}s (last: {last_error})"
                        f"\n--- log tail ({self.log_file}):\n{self.log_tail()}"
                    )
                time.sleep(POLL_INTERVAL)

    def _stop_process(self) -> None:
        proc, self._process = self._process, None
        _LIVE.discard(self)
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired as exc:
                raise RegistryError(
                    f"registry pid {proc.pid} did not die\n{self.log_tail()}"
                ) from exc


def _write_htpasswd(path: Path, username: str, password: str) -> None:
    # Cost 4 (the minimum) keeps each authenticated request cheap; 2.8 accepts $2b$ hashes.
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode("ascii")
    path.touch(mode=0o600)
    path.write_text(f"{username}:{hashed}\n")


def start_registry(
    workdir: Path,
    mode: str = "plain",
    *,
    port: int | None = None,
    tls: bool | None = None,
    username: str = DEFAULT_USERNAME,
    password: str | None = None,
    token_server: TokenServer | None = None,
    extra_config: dict[str, Any] | None = None,
    data_dir: Path | None = None,
    timeout: float = START_TIMEOUT,
) -> RegistryServer:
    """Start a registry in ``workdir`` and wait (at most ``timeout`` s) until /v2/ answers.

    ``port`` None picks a free port (retrying on a bind race). ``tls`` defaults to
    ``mode == "tls"``. ``password`` defaults to a random one. ``token_server`` (token mode) lets
    you pass a pre-configured, not necessarily started, :class:`TokenServer`; by default one is
    made with the same credentials. ``extra_config`` is deep-merged into the generated config.
    ``data_dir`` (default ``workdir/data``) is the storage root: the filesystem driver fsyncs every
    blob, so a tmpfs directory (``/dev/shm``) makes pushes ~4x faster; the caller removes it.
    Raises :class:`RegistryError` including the log tail on failure.
    """
    if mode not in MODES:
        raise ValueError(f"unknown registry mode {mode!r}; expected one of {MODES}")
    if tls is None:
        tls = mode == "tls"
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    data_dir = (data_dir or workdir / "data").resolve()
    data_dir.mkdir(parents=True, exist_ok=True)

    config: dict[str, Any] = {
        "version": 0.1,
        "log": {"level": "warn", "formatter": "text", "accesslog": {"disabled": True}},
        "storage": {
            "filesystem": {"rootdirectory": str(data_dir)},
            "delete": {"enabled": True},
        },
        "http": {"addr": "", "secret": HTTP_SECRET},
        "health": {"storagedriver": {"enabled": False}},
    }
    ca_file = cert_file = key_file = None
    if tls:
        files = write_tls_files(workdir)
        ca_file, cert_file, key_file = files.ca_file, files.cert_file, files.key_file
        config["http"]["tls"] = {"certificate": str(cert_file), "key": str(key_file)}

    user: str | None = None
    pwd: str | None = None
    if mode in ("basic", "token"):
        user = username
        pwd = password if password is not None else secrets.token_urlsafe(16)
    if mode == "basic":
        assert user is not None and pwd is not None
        htpasswd = workdir / "htpasswd"
        _write_htpasswd(htpasswd, user, pwd)
        config["auth"] = {"htpasswd": {"realm": "archwarden-test", "path": str(htpasswd)}}
    elif mode == "token":
        if token_server is None:
            token_server = TokenServer(username=user, password=pwd)
        token_server.start()
        bundle = token_server.write_bundle(workdir / "token-bundle.pem")
        config["auth"] = {
            "token": {
                "realm": token_server.realm,
                "service": token_server.service,
                "issuer": token_server.issuer,
                "rootcertbundle": str(bundle),
            }
        }
    elif token_server is not None:
        raise ValueError("token_server is only meaningful in token mode")

    if extra_config:
        config = _deep_merge(config, extra_config)

    scheme = "https" if tls else "http"
    attempts = 1 if port is not None else 3
    try:
        for attempt in range(attempts):
            chosen = port if port is not None else free_port()
            config["http"]["addr"] = f"127.0.0.1:{chosen}"
            config_file = workdir / "config.yml"
            config_file.write_text(yaml.safe_dump(config, sort_keys=False))
            server = RegistryServer(
                mode=mode,
                host=f"127.0.0.1:{chosen}",
                url=f"{scheme}://127.0.0.1:{chosen}",
                ca_file=ca_file,
                username=user,
                password=pwd,
                token_server=token_server,
                workdir=workdir,
                port=chosen,
                config_file=config_file,
                log_file=workdir / "registry.log",
                cert_file=cert_file,
                key_file=key_file,
                start_timeout=timeout,
            )
            try:
                return server.start()
            except RegistryError as exc:
                if attempt + 1 < attempts and "address already in use" in str(exc):
                    continue
                raise
    except BaseException:
        if token_server is not None:
            token_server.stop()
        raise
    raise AssertionError("unreachable")


@contextlib.contextmanager
def running_registry(workdir: Path, mode: str = "plain", **kwargs: Any) -> Iterator[RegistryServer]:
    """``with running_registry(tmp_path, "token") as reg: ...`` — stopped on exit."""
    server = start_registry(workdir, mode, **kwargs)
    try:
        yield server
    finally:
        server.stop()
