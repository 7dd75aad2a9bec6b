"""Pull credentials from docker ``config.json`` / Kubernetes ``dockerconfigjson`` content.

A credential belongs to exactly one registry host. The client looks credentials up by the host
it is talking to, so a credential is never sent anywhere else (mirrors need their own entry).

A config is untrusted input of any size: given ``max_bytes``, a longer one is refused before it
is parsed. From 64 KiB up, parsing peaks at up to 17 times the config's length and the store
keeps up to 7.6 times it (thousands of hosts with short names and passwords; a few long tokens
cost about their length): ``CredentialStore.held_bytes`` says what keeping a store costs, so a
cache of them can be bounded in bytes rather than by a factor of the length.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import functools
import hashlib
import json
import sys
from collections.abc import Iterable, Mapping
from typing import Any

from archwarden.registry import _config

__all__ = ["Credential", "CredentialStore", "InvalidDockerConfig", "fingerprint"]


_INVALID = object()

ENTRY_BYTES = 160
"""Memory one credential of a store takes besides its strings: the ``Credential`` with its
attribute values, and its slot in the store's dict, growth slack included (about 140 bytes
measured with tracemalloc, Python 3.11, for stores of 100 to 31,000 hosts)."""
STORE_BYTES = 1024
"""Memory a store takes besides its credentials: the object and its dict (about 300 bytes),
and what a store of one to four hosts takes per host above ``ENTRY_BYTES`` (up to 500 bytes in
all: small dicts are allocated at a minimum size)."""


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


def _text_bytes(text: str) -> int:
    # CPython shares one object for the empty string and for each one-character Latin-1
    # string: another reference to them costs nothing.
    return sys.getsizeof(text) if len(text) > 1 or (text and ord(text) > 0xFF) else 0


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

    @functools.cached_property
    def held_bytes(self) -> int:
        """What keeping this store costs in memory: its strings' own sizes plus
        ``ENTRY_BYTES`` a credential and ``STORE_BYTES``. Never below what tracemalloc
        measures a parsed store keeps, and at most 20% plus ``STORE_BYTES`` above it, for
        configs of 100 bytes to 1 MiB of seven shapes (Python 3.11)."""
        total = STORE_BYTES
        for host, c in self._entries.items():
            total += ENTRY_BYTES + _text_bytes(host) + _text_bytes(c.username)
            total += _text_bytes(c.password) + _text_bytes(c.identity_token)
            total += _text_bytes(c.registry_token)
        return total

    def lookup(self, host: str) -> Credential | None:
        return self._entries.get(_config.canonical_host(host))

    def merged(self, *others: CredentialStore) -> CredentialStore:
        """A new store; entries of later stores win (a pod's own secret over a global one)."""
        combined = dict(self._entries)
        for other in others:
            combined.update(other._entries)
        return CredentialStore(combined)

    @classmethod
    def from_docker_config(
        cls, content: bytes | str | Mapping[str, Any], *, max_bytes: int | None = None
    ) -> CredentialStore:
        """Read ``{"auths": {...}}`` (or a legacy ``.dockercfg`` without the wrapper). Content
        longer than ``max_bytes`` (characters, for a str) is refused unparsed."""
        if isinstance(content, bytes | str):
            if max_bytes is not None and len(content) > max_bytes:
                raise InvalidDockerConfig(f"docker config is larger than {max_bytes} bytes")
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
    def from_files(cls, paths: Iterable[str], *, max_bytes: int | None = None) -> CredentialStore:
        """The files' stores merged, later ones winning. With ``max_bytes``, at most one byte
        more than it is read of each file (a wrong path may name a huge file, or /dev/zero)."""
        store = cls()
        for path in paths:
            try:
                with open(path, "rb") as handle:
                    content = handle.read(-1 if max_bytes is None else max_bytes + 1)
            except OSError as exc:
                reason = exc.strerror or type(exc).__name__
                raise InvalidDockerConfig(f"cannot read docker config {path}: {reason}") from None
            try:
                store = store.merged(cls.from_docker_config(content, max_bytes=max_bytes))
            except InvalidDockerConfig as exc:
                raise InvalidDockerConfig(f"{path}: {exc}") from None
        return store
