"""Registry authentication: ``WWW-Authenticate`` parsing and a token cache.

Challenges are RFC 7235 auth-param lists: case-insensitive scheme and keys, quoted strings with
backslash escapes, several challenges per header and several header lines.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable

__all__ = ["Challenge", "TokenCache", "parse_challenges", "pick_challenge"]

# Servers should not issue tokens shorter-lived than this (distribution token spec); it is also
# the default when a token response has no expires_in.
DEFAULT_TOKEN_LIFETIME = 60.0
# Refresh this long before expiry, so a token never expires between our check and the request.
TOKEN_REFRESH_MARGIN = 10.0
# Tokens kept at most (one per identity, realm, service and scope); the least recently used go
# first. Repositories are named by whoever writes a pod spec, so scopes are unbounded.
MAX_TOKENS = 1024
# Real bearer tokens are JWTs of one to a few kilobytes; a longer one is refused rather than
# cached (150 tokens of 1 MiB added 156 MiB).
MAX_TOKEN_BYTES = 16 * 1024
# A token response holds the token, its lifetime and perhaps a refresh token.
TOKEN_RESPONSE_MAX_BYTES = 64 * 1024


@dataclasses.dataclass(frozen=True)
class Challenge:
    scheme: str
    """Lower-cased: ``bearer`` or ``basic`` (others are kept but never answered)."""
    params: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def realm(self) -> str:
        return self.params.get("realm", "")

    @property
    def service(self) -> str:
        return self.params.get("service", "")

    @property
    def scopes(self) -> tuple[str, ...]:
        return tuple(s for s in self.params.get("scope", "").split(" ") if s)

    @property
    def error(self) -> str:
        return self.params.get("error", "")


def _skip_ws(text: str, i: int) -> int:
    while i < len(text) and text[i] in " \t":
        i += 1
    return i


def _read_token(text: str, i: int) -> tuple[str, int]:
    start = i
    while i < len(text) and text[i] not in ' \t,="':
        i += 1
    return text[start:i], i


def _read_quoted(text: str, i: int) -> tuple[str, int]:
    # text[i] is the opening quote.
    i += 1
    out: list[str] = []
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            out.append(text[i + 1])
            i += 2
            continue
        if c == '"':
            return "".join(out), i + 1
        out.append(c)
        i += 1
    return "".join(out), i  # unterminated: take what there is


def _parse_header(text: str) -> list[Challenge]:
    challenges: list[Challenge] = []
    i = 0
    current: Challenge | None = None
    while i < len(text):
        i = _skip_ws(text, i)
        if i < len(text) and text[i] == ",":
            i += 1
            continue
        word, j = _read_token(text, i)
        if not word:
            i = j + 1
            continue
        k = _skip_ws(text, j)
        if k < len(text) and text[k] == "=" and current is not None:
            k = _skip_ws(text, k + 1)
            if k < len(text) and text[k] == '"':
                value, k = _read_quoted(text, k)
            else:
                value, k = _read_token(text, k)
            current.params[word.lower()] = value
            i = k
        else:
            current = Challenge(scheme=word.lower())
            challenges.append(current)
            i = j
    return challenges


def parse_challenges(headers: Iterable[str]) -> list[Challenge]:
    result: list[Challenge] = []
    for header in headers:
        result.extend(_parse_header(header))
    return result


def pick_challenge(challenges: Iterable[Challenge]) -> Challenge | None:
    """Bearer over Basic, as docker and containerd do."""
    by_scheme = {c.scheme: c for c in challenges if c.scheme in ("bearer", "basic")}
    return by_scheme.get("bearer") or by_scheme.get("basic")


@dataclasses.dataclass
class _Entry:
    token: str
    expires_at: float


class TokenCache:
    """Bearer tokens keyed by (realm, service, sorted scopes), kept until shortly before expiry."""

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, max_entries: int = MAX_TOKENS
    ) -> None:
        self._clock = clock
        self._max_entries = max_entries
        # Insertion order is use order: a hit moves its entry to the end.
        self._entries: dict[tuple[str, str, tuple[str, ...]], _Entry] = {}

    @staticmethod
    def key(realm: str, service: str, scopes: Iterable[str]) -> tuple[str, str, tuple[str, ...]]:
        return realm, service, tuple(sorted(set(scopes)))

    def get(self, realm: str, service: str, scopes: Iterable[str]) -> str | None:
        key = self.key(realm, service, scopes)
        entry = self._entries.get(key)
        if entry is None:
            return None
        del self._entries[key]
        if self._clock() >= entry.expires_at:
            return None
        self._entries[key] = entry
        return entry.token

    def put(
        self, realm: str, service: str, scopes: Iterable[str], token: str, expires_in: float
    ) -> None:
        lifetime = expires_in if expires_in > 0 else DEFAULT_TOKEN_LIFETIME
        margin = min(TOKEN_REFRESH_MARGIN, lifetime / 4)
        key = self.key(realm, service, scopes)
        self._entries.pop(key, None)
        self._entries[key] = _Entry(token, self._clock() + lifetime - margin)
        while len(self._entries) > self._max_entries:
            del self._entries[next(iter(self._entries))]

    def drop(self, realm: str, service: str, scopes: Iterable[str]) -> None:
        self._entries.pop(self.key(realm, service, scopes), None)

    def tokens(self) -> list[str]:
        return [entry.token for entry in self._entries.values()]

    def __len__(self) -> int:
        return len(self._entries)
