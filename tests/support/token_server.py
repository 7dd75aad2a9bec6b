"""A minimal Docker-registry token server (``auth.token`` realm) for tests.

Contract (checked against distribution 2.8.2, see docs/registry-protocol.md sections 3 and 7):

* ``GET /token?service=S&scope=A&scope=B`` with optional Basic credentials. Wrong credentials give
  401; no credentials give a token only if ``allow_anonymous`` (by default anonymous callers get
  ``pull`` only, authenticated callers get every action they ask for; pass ``policy`` to change).
  A ``service`` other than the configured one gives 400.
* ``POST /token`` (OAuth2, form-encoded): ``grant_type=password`` (``username``/``password``
  fields) or ``grant_type=refresh_token`` (``refresh_token`` must equal ``identity_token``).
  Disabled with ``post_enabled=False`` (then 404, which makes containerd-style clients fall back
  to GET).
* Answer: JSON ``{"token", "access_token", "expires_in", "issued_at"}`` (``expires_in`` omitted
  when ``include_expires_in`` is false). The JWT is ES256, its header carries ``x5c`` (the
  self-signed signing certificate, which is the registry's ``rootcertbundle``) or the libtrust
  ``kid``; claims ``iss``, ``aud`` (a string), ``sub``, ``exp``, ``nbf``, ``iat``, ``jti``,
  ``access``.

The registry accepts tokens up to 60 s after ``exp`` (leeway). To hand out tokens the registry
already refuses, set ``lifetime`` below ``-60``.

Every request is recorded in :attr:`TokenServer.requests` (never with credentials).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from tests.support.pki import IssuedCert, self_signed

__all__ = ["AccessPolicy", "TokenRequest", "TokenServer", "libtrust_key_id"]

#: (subject or None for anonymous, resource type, resource name, requested actions) -> granted
AccessPolicy = Callable[[str | None, str, str, list[str]], list[str]]


def default_policy(subject: str | None, _type: str, _name: str, actions: list[str]) -> list[str]:
    if subject is None:
        return [a for a in actions if a == "pull"]
    return list(actions)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def libtrust_key_id(public_key: ec.EllipticCurvePublicKey) -> str:
    """docker/libtrust key ID: base32 of SHA-256(DER SPKI)[:30], in 12 groups of 4, ':'-joined."""
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    b32 = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode("ascii").rstrip("=")
    return ":".join(b32[i : i + 4] for i in range(0, len(b32), 4))


def parse_scope(scope: str) -> tuple[str, str, list[str]] | None:
    """``repository:lab/x:pull,push`` -> ("repository", "lab/x", ["pull", "push"])."""
    typ, sep, rest = scope.partition(":")
    name, sep2, actions = rest.rpartition(":")
    if not sep or not sep2 or not typ or not name:
        return None
    return typ, name, [a for a in actions.split(",") if a]


@dataclass(frozen=True)
class TokenRequest:
    """One request seen by the token server (no secrets)."""

    method: str
    path: str
    query: dict[str, list[str]]
    has_auth: bool
    status: int
    grant_type: str | None = None
    scopes: tuple[str, ...] = ()
    subject: str | None = None


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _reply(self, status: int, body: dict[str, Any], extra: dict[str, str] | None = None) -> int:
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(raw)
        return status

    def do_GET(self) -> None:
        self.server.owner._handle_get(self)

    def do_POST(self) -> None:
        self.server.owner._handle_post(self)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: TokenServer


class TokenServer:
    """Threaded token server on ``127.0.0.1``; see the module docstring for the contract."""

    def __init__(
        self,
        *,
        service: str = "test-registry",
        issuer: str = "test-issuer",
        username: str | None = None,
        password: str | None = None,
        allow_anonymous: bool = True,
        expires_in: int = 300,
        include_expires_in: bool = True,
        lifetime: int | None = None,
        identity_token: str | None = None,
        identity_subject: str = "identity-user",
        post_enabled: bool = True,
        key_id: Literal["x5c", "kid"] = "x5c",
        policy: AccessPolicy | None = None,
        path: str = "/token",
        port: int = 0,
    ) -> None:
        self.service = service
        self.issuer = issuer
        self.username = username
        self.password = password
        self.allow_anonymous = allow_anonymous
        self.expires_in = expires_in
        self.include_expires_in = include_expires_in
        self.lifetime = lifetime
        self.identity_token = identity_token
        self.identity_subject = identity_subject
        self.post_enabled = post_enabled
        self.key_id = key_id
        self.policy: AccessPolicy = policy or default_policy
        self.path = path
        self.port = port
        self.signing: IssuedCert = self_signed("archwarden test token signer")
        self.requests: list[TokenRequest] = []
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"TokenServer(port={self.port}, service={self.service!r}, running={self.running})"

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def realm(self) -> str:
        if not self.port:
            raise RuntimeError("token server not started yet (no port)")
        return f"http://127.0.0.1:{self.port}{self.path}"

    def start(self) -> TokenServer:
        """Start (or restart, on the same port once one was chosen). Idempotent."""
        if self._server is not None:
            return self
        server = _Server(("127.0.0.1", self.port), _Handler)
        server.owner = self
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"token-server-{self.port}",
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

    def __enter__(self) -> TokenServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- helpers for tests ----------------------------------------------------------------------

    @property
    def rootcertbundle_pem(self) -> bytes:
        """PEM of the signing certificate; the registry's ``rootcertbundle``."""
        return self.signing.cert_pem

    def write_bundle(self, path: Path) -> Path:
        path.write_bytes(self.rootcertbundle_pem)
        return path

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()

    def count(self, method: str | None = None, *, status: int | None = None) -> int:
        with self._lock:
            return sum(
                1
                for r in self.requests
                if (method is None or r.method == method) and (status is None or r.status == status)
            )

    def issue(self, subject: str | None, scopes: list[str]) -> str:
        """Sign a token for ``subject`` granting what the policy allows for ``scopes``."""
        access: list[dict[str, Any]] = []
        for scope in scopes:
            for part in scope.split(" "):
                parsed = parse_scope(part)
                if parsed is None:
                    continue
                typ, name, actions = parsed
                granted = self.policy(subject, typ, name, actions)
                access.append({"type": typ, "name": name, "actions": granted})
        now = int(time.time())
        lifetime = self.expires_in if self.lifetime is None else self.lifetime
        claims = {
            "iss": self.issuer,
            "sub": subject or "",
            "aud": self.service,
            "exp": now + lifetime,
            "nbf": now - 1,
            "iat": now,
            "jti": uuid.uuid4().hex,
            "access": access,
        }
        header: dict[str, Any] = {"typ": "JWT", "alg": "ES256"}
        if self.key_id == "x5c":
            der = self.signing.cert.public_bytes(serialization.Encoding.DER)
            header["x5c"] = [base64.b64encode(der).decode("ascii")]
        else:
            header["kid"] = libtrust_key_id(self.signing.key.public_key())
        signing_input = (
            _b64url(json.dumps(header, separators=(",", ":")).encode())
            + "."
            + _b64url(json.dumps(claims, separators=(",", ":")).encode())
        )
        der_sig = self.signing.key.sign(signing_input.encode("ascii"), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der_sig)
        return signing_input + "." + _b64url(r.to_bytes(32, "big") + s.to_bytes(32, "big"))

    # -- request handling ----------------------------------------------------------------------

    def _record(self, req: TokenRequest) -> None:
        with self._lock:
            self.requests.append(req)

    def _check_basic(self, header: str) -> str | None:
        """Return the username if the Basic header matches the configured credentials."""
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic" or self.username is None or self.password is None:
            return None
        try:
            user, sep, pwd = base64.b64decode(value.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        ok = (
            sep == ":"
            and hmac.compare_digest(user.encode(), self.username.encode())
            and hmac.compare_digest(pwd.encode(), self.password.encode())
        )
        return user if ok else None

    def _token_body(self, token: str, *, oauth: bool) -> dict[str, Any]:
        body: dict[str, Any] = {"access_token": token} if oauth else {"token": token}
        if not oauth:
            body["access_token"] = token
        if self.include_expires_in:
            body["expires_in"] = self.expires_in
        body["issued_at"] = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return body

    def _handle_get(self, h: _Handler) -> None:
        url = urlsplit(h.path)
        query = parse_qs(url.query, keep_blank_values=True)
        auth = h.headers.get("Authorization")
        scopes = tuple(query.get("scope", []))

        def done(status: int, subject: str | None = None) -> None:
            self._record(
                TokenRequest(
                    method="GET",
                    path=url.path,
                    query=query,
                    has_auth=auth is not None,
                    status=status,
                    scopes=scopes,
                    subject=subject,
                )
            )

        if url.path != self.path:
            done(h._reply(404, {"errors": [{"code": "NOT_FOUND", "message": "not found"}]}))
            return
        service = query.get("service", [self.service])[0]
        if service != self.service:
            done(h._reply(400, {"errors": [{"code": "UNSUPPORTED", "message": "bad service"}]}))
            return
        subject: str | None = None
        if auth is not None:
            subject = self._check_basic(auth)
            if subject is None:
                done(self._unauthorized(h))
                return
        elif not self.allow_anonymous:
            done(self._unauthorized(h))
            return
        token = self.issue(subject, list(scopes))
        done(h._reply(200, self._token_body(token, oauth=False)), subject)

    def _unauthorized(self, h: _Handler) -> int:
        return h._reply(
            401,
            {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]},
            {"WWW-Authenticate": 'Basic realm="archwarden-token"'},
        )

    def _handle_post(self, h: _Handler) -> None:
        url = urlsplit(h.path)
        length = int(h.headers.get("Content-Length") or 0)
        form = parse_qs(h.rfile.read(length).decode("utf-8", "replace"), keep_blank_values=True)
        grant = form.get("grant_type", [""])[0]
        scopes = tuple(s for v in form.get("scope", []) for s in v.split(" ") if s)

        def done(status: int, subject: str | None = None) -> None:
            self._record(
                TokenRequest(
                    method="POST",
                    path=url.path,
                    query=parse_qs(url.query),
                    has_auth=h.headers.get("Authorization") is not None,
                    status=status,
                    grant_type=grant or None,
                    scopes=scopes,
                    subject=subject,
                )
            )

        if url.path != self.path or not self.post_enabled:
            done(h._reply(404, {"error": "not_found"}))
            return
        service = form.get("service", [self.service])[0]
        if service != self.service:
            done(h._reply(400, {"error": "invalid_request", "error_description": "bad service"}))
            return
        subject: str | None = None
        if grant == "password":
            user = form.get("username", [""])[0]
            pwd = form.get("password", [""])[0]
            if (
                self.username is not None
                and self.password is not None
                and hmac.compare_digest(user.encode(), self.username.encode())
                and hmac.compare_digest(pwd.encode(), self.password.encode())
            ):
                subject = user
        elif grant == "refresh_token":
            refresh = form.get("refresh_token", [""])[0]
            if self.identity_token is not None and hmac.compare_digest(
                refresh.encode(), self.identity_token.encode()
            ):
                subject = self.identity_subject
        else:
            done(h._reply(400, {"error": "unsupported_grant_type"}))
            return
        if subject is None:
            done(h._reply(401, {"error": "invalid_grant"}))
            return
        token = self.issue(subject, list(scopes))
        body = self._token_body(token, oauth=True)
        body["scope"] = " ".join(scopes)
        done(h._reply(200, body), subject)
