"""Pull credentials from docker ``config.json`` / Kubernetes ``dockerconfigjson`` content.

A credential belongs to exactly one registry host. The client looks credentials up by the host
it is talking to, so a credential is never sent anywhere else (mirrors need their own entry).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

from archwarden.registry import _config

__all__ = ["Credential", "CredentialStore", "InvalidDockerConfig", "fingerprint"]


_INVALID = object()


def _parse_json(content: bytes | str) -> Any:
    try:
        return json.loads(content)
    except (ValueError, UnicodeDecodeError, RecursionError):
        # RecursionError: json's C scanner recurses once per nesting level ([[[[...).
        return _INVALID


class InvalidDockerConfig(ValueError):
    """A docker config that cannot be read; the message never includes its content."""


@dataclasses.dataclass(frozen=True)
class Credential:
    """One registry's secret. ``repr`` never shows the secret parts."""

    username: str = ""
    password: str = dataclasses.field(default="", repr=False)
    identity_token: str = dataclasses.field(default="", repr=False)
    """An OAuth2 refresh token (``identitytoken``), exchanged at the token realm."""
    registry_token: str = dataclasses.field(default="", repr=False)
    """A bearer token sent as it is (``registrytoken``)."""

    @property
    def has_basic(self) -> bool:
        return bool(self.username or self.password)

    def basic_header(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")

    @property
    def secrets(self) -> tuple[str, ...]:
        """Every form in which this credential could come back quoted (redaction)."""
        forms: tuple[str, ...] = (self.password, self.identity_token, self.registry_token)
        if self.has_basic:
            forms += (self.basic_header().removeprefix("Basic "),)
        return tuple(f for f in forms if f)


def fingerprint(credential: Credential | None) -> str:
    """Who ``credential`` is, without being it ('' for anonymous): what tokens and cached
    failures are keyed by, so one pod's secret never serves another pod."""
    if credential is None:
        return ""
    secret = "\0".join(
        (
            credential.username,
            credential.password,
            credential.identity_token,
            credential.registry_token,
        )
    )
    return hashlib.sha256(secret.encode()).hexdigest()[:16]


def _decode_auth(value: str, key: str) -> tuple[str, str]:
    try:
        raw = base64.b64decode(value.strip(), validate=False).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidDockerConfig(f"auth for {key!r} is not base64 of user:password") from None
    user, sep, password = raw.partition(":")
    if not sep:
        raise InvalidDockerConfig(f"auth for {key!r} has no ':' between user and password")
    return user, password.rstrip("\x00")


def _entry_credential(key: str, entry: Mapping[str, Any]) -> Credential | None:
    def text(name: str) -> str:
        value = entry.get(name)
        return value if isinstance(value, str) else ""

    username, password = text("username"), text("password")
    if text("auth"):
        username, password = _decode_auth(text("auth"), key)
    credential = Credential(
        username=username,
        password=password,
        identity_token=text("identitytoken"),
        registry_token=text("registrytoken"),
    )
    if not (credential.has_basic or credential.identity_token or credential.registry_token):
        return None  # an empty entry: the secret lives in a credential helper we cannot run
    return credential


class CredentialStore:
    """Credentials keyed by canonical registry host."""

    def __init__(self, entries: Mapping[str, Credential] | None = None) -> None:
        self._entries: dict[str, Credential] = {}
        for host, credential in (entries or {}).items():
            self._entries[_config.canonical_host(host)] = credential

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"CredentialStore(hosts={sorted(self._entries)!r})"

    @property
    def hosts(self) -> list[str]:
        return sorted(self._entries)

    def secrets(self) -> set[str]:
        return {secret for c in self._entries.values() for secret in c.secrets}

    def lookup(self, host: str) -> Credential | None:
        return self._entries.get(_config.canonical_host(host))

    def merged(self, *others: CredentialStore) -> CredentialStore:
        """A new store; entries of later stores win (a pod's own secret over a global one)."""
        combined = dict(self._entries)
        for other in others:
            combined.update(other._entries)
        return CredentialStore(combined)

    @classmethod
    def from_docker_config(cls, content: bytes | str | Mapping[str, Any]) -> CredentialStore:
        """Read ``{"auths": {...}}`` (or a legacy ``.dockercfg`` without the wrapper)."""
        if isinstance(content, bytes | str):
            # Raised outside the except block: the JSON error's text quotes the document, and
            # even a suppressed __context__ would keep secrets reachable from our exception.
            data = _parse_json(content)
            if data is _INVALID:
                raise InvalidDockerConfig("docker config is not valid JSON")
        else:
            data = content
        if not isinstance(data, Mapping):
            raise InvalidDockerConfig("docker config must be a JSON object")
        auths = data.get("auths", data if "auths" not in data else None)
        if not isinstance(auths, Mapping):
            raise InvalidDockerConfig("docker config 'auths' must be an object")
        entries: dict[str, Credential] = {}
        for key, entry in auths.items():
            if key in ("credsStore", "credHelpers", "HttpHeaders", "psFormat"):
                continue
            if not isinstance(entry, Mapping):
                continue
            credential = _entry_credential(str(key), entry)
            if credential is not None:
                entries[str(key)] = credential
        return cls(entries)

    @classmethod
    def from_files(cls, paths: Iterable[str]) -> CredentialStore:
        store = cls()
        for path in paths:
            try:
                with open(path, "rb") as handle:
                    content = handle.read()
            except OSError as exc:
                reason = exc.strerror or type(exc).__name__
                raise InvalidDockerConfig(f"cannot read docker config {path}: {reason}") from None
            try:
                store = store.merged(cls.from_docker_config(content))
            except InvalidDockerConfig as exc:
                raise InvalidDockerConfig(f"{path}: {exc}") from None
        return store
