"""Registry authentication: the token dance as an httpx auth flow, and what it remembers.

:class:`RegistryAuth` is the flow of one request: send it with what is known of its origin
(a Basic header, a cached Bearer token), follow redirects by the rules of ``_redirects``, and on
a 401 read the challenge, fetch a token from the realm and send once more. What a client learns
lives in :class:`AuthState`, one per client: the challenge each origin answered with, tokens
per identity and scope, and the token fetches under way. Every failure is a RegistryError.

Challenges are RFC 7235 auth-param lists: case-insensitive scheme and keys, quoted strings with
backslash escapes, several challenges per header and several header lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable

import cachetools
import httpx

from archwarden.registry import _config, _credentials, _redirects, _wire
from archwarden.registry import _exceptions as exc

__all__ = [
    "Access",
    "AuthState",
    "Challenge",
    "RegistryAuth",
    "TokenCache",
    "TokenExchange",
    "origin_key",
    "parse_challenges",
    "pick_challenge",
]

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
# Registries whose 401 challenge is remembered (the least recently used is forgotten first).
MAX_CHALLENGES = 1024


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


TokenKey = tuple[str, str, tuple[str, ...]]

TokenExchange = Callable[
    [str, str, dict[str, str], dict[str, str] | None], Awaitable[tuple[int, bytes]]
]
"""One token request: (method, URL, headers, form) -> (status, body). The client sends it on
the registry's connections (SSRF guard, redirect rules, the token-response cap); its
failures are already RegistryErrors."""


def origin_key(url: httpx.URL) -> str:
    scheme, host, port = _redirects.origin(url)
    return f"{scheme}://{host}:{port}"


def _usable_token(token: object) -> bool:
    """A token goes into an HTTP header: visible ASCII only (RFC 6750's b64token and JWTs)."""
    return (
        isinstance(token, str)
        and bool(token)
        and token.isascii()
        and token.isprintable()
        and (" " not in token)
    )


class AuthState:
    """What one client has learned, shared by all its requests; every part is bounded."""

    def __init__(self) -> None:
        self.tokens = TokenCache()
        self.challenges: cachetools.LRUCache[str, Challenge] = cachetools.LRUCache(MAX_CHALLENGES)
        """The challenge each origin (scheme://host:port) answered with, so later requests
        authenticate up front instead of paying a 401 round trip for every new repository.
        Bounded, since hosts are named by whoever writes a pod spec."""
        self.locks: dict[TokenKey, tuple[asyncio.Lock, int]] = {}
        """Token fetches under way, with how many requests hold or wait for each."""

    @contextlib.asynccontextmanager
    async def fetching(self, key: TokenKey) -> AsyncIterator[None]:
        """Concurrent requests for one token share one fetch. A lock lives only while someone
        holds or waits for it, so locks never pile up for scopes seen once."""
        lock, users = self.locks.get(key, (asyncio.Lock(), 0))
        self.locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self.locks[key]
            if users <= 1:
                del self.locks[key]
            else:
                self.locks[key] = (lock, users - 1)


@dataclasses.dataclass(frozen=True)
class Access:
    """On whose behalf one request authenticates, for what, and how its failures are named."""

    registry: str
    """The naming domain of the image (what errors are keyed by)."""
    subject: str
    scope: str
    """``repository:<path>:pull``."""
    credential: _credentials.Credential | None = None
    """The secret for the host contacted: a mirror's own, never the upstream's."""


class RegistryAuth(httpx.Auth):
    """The flow of one request to a registry endpoint (``first``: its URL and headers).

    One instance serves one request and its retries (timeouts, 5xx): the attempts it counts
    hold across them, so a retry never earns a second round of 401s. Reading a 401 here is
    bounded by the client's transport (``_transport.Metered``), which cuts error bodies short.
    """

    def __init__(
        self,
        state: AuthState,
        access: Access,
        first: _redirects.Hop,
        build: _redirects.Build,
        settings: _config.ClientSettings,
        exchange: TokenExchange,
    ) -> None:
        self._state = state
        self._access = access
        self._first = first
        self._build = build
        self._settings = settings
        self._exchange = exchange
        self._origin = origin_key(first.url)
        self._attempts = 0
        self._token_refetched = False

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        given: httpx.Request | None = request  # the first attempt sends what httpx handed over
        while True:
            authorization = await self._authorization()
            headers = dict(self._first.headers)
            if authorization is not None:
                headers["Authorization"] = authorization
                if given is not None:
                    given.headers["Authorization"] = authorization
            hop = dataclasses.replace(self._first, headers=headers)
            chain = _redirects.Chain(hop, self._build, self._settings.max_redirects, given)
            given = None
            response = yield chain.request
            while (following := chain.follow(response)) is not None:
                response = yield following
            if response.status_code != 401:
                return
            # Read (the transport caps it), so its connection is free for the token fetch.
            await response.aread()
            self._answer(response, chain.hop.url, authorization)

    def _answer(self, response: httpx.Response, url: httpx.URL, authorization: str | None) -> None:
        """Learn from a 401 what the next attempt sends, or raise why there is none."""
        access = self._access
        if _redirects.origin(url) != _redirects.origin(self._first.url):
            # A redirect target asked for credentials. Its challenge is its own: kept under
            # the registry, the registry's credentials would go to its realm.
            raise self._failed(
                "unauthorized at a redirect target; credentials never follow a "
                "redirect to another origin"
            )
        challenge = pick_challenge(parse_challenges(response.headers.get_list("www-authenticate")))
        if challenge is None:
            raise self._failed("unauthorized, and no usable challenge")
        if challenge.error == "insufficient_scope":
            raise exc.AccessDenied(access.registry, "insufficient scope", access.subject)
        known = self._state.challenges.get(self._origin)
        retry_token = (
            authorization is not None
            and challenge.scheme == "bearer"
            and challenge.error == "invalid_token"
            and not self._token_refetched
        )
        if retry_token:
            self._token_refetched = True  # once: a second invalid_token is final
        elif self._attempts >= 1:
            raise self._failed(
                "unauthorized (no credentials for this registry)"
                if access.credential is None
                else "unauthorized: the registry rejected the credentials"
            )
        if known is not None and known.scheme == "bearer":
            self._state.tokens.drop(self._realm_key(known.realm), known.service, (access.scope,))
        self._state.challenges[self._origin] = Challenge(
            challenge.scheme,
            {k: v for k, v in challenge.params.items() if k in ("realm", "service")},
        )
        if challenge.scheme == "basic" and authorization is None:
            credential = access.credential
            if credential is None or not credential.has_basic:
                raise self._failed("unauthorized and no credentials for it")
        self._attempts += 1

    def _failed(self, problem: str) -> exc.AuthenticationFailed:
        return exc.AuthenticationFailed(self._access.registry, problem, self._access.subject)

    async def _authorization(self) -> str | None:
        credential = self._access.credential
        if credential is not None and credential.registry_token:
            return f"Bearer {credential.registry_token}"
        challenge = self._state.challenges.get(self._origin)
        if challenge is None:
            return None
        if challenge.scheme == "basic":
            return credential.basic_header() if credential and credential.has_basic else None
        return f"Bearer {await self._token(challenge, (self._access.scope,))}"

    def _realm_key(self, realm: str) -> str:
        """Tokens are cached per identity: one pod's secret must never serve another pod."""
        fingerprint = _credentials.fingerprint(self._access.credential)
        return f"{realm}#{fingerprint}" if fingerprint else realm

    async def _token(self, challenge: Challenge, scopes: tuple[str, ...]) -> str:
        tokens = self._state.tokens
        realm_key = self._realm_key(challenge.realm)
        async with self._state.fetching(TokenCache.key(realm_key, challenge.service, scopes)):
            cached = tokens.get(realm_key, challenge.service, scopes)
            if cached is not None:
                return cached
            token, expires_in = await self._fetch_token(challenge, scopes)
            tokens.put(realm_key, challenge.service, scopes, token, expires_in)
            return token

    def _may_send_credentials(self, target: httpx.URL) -> bool:
        """Credentials go to the registry's own origin, or to its realm over HTTPS.

        A token realm is where the registry itself sends clients to trade credentials, so it
        may be another host (auth.docker.io); plain HTTP there would expose them in transit.
        The origin counts scheme, host and port: another port on the registry's host is
        another server (anyone may listen there), so it gets nothing over plain HTTP, unless
        the operator configured that very origin as an insecure registry.
        """
        same = _redirects.origin(target) == _redirects.origin(self._first.url)
        consented = self._settings.for_host(target.netloc.decode("ascii")).insecure
        return same or target.scheme == "https" or consented

    async def _fetch_token(
        self, challenge: Challenge, scopes: tuple[str, ...]
    ) -> tuple[str, float]:
        realm = challenge.realm
        try:
            realm_url = httpx.URL(realm)
        except httpx.InvalidURL:
            realm_url = httpx.URL("")
        if realm_url.scheme not in ("http", "https") or not realm_url.host:
            raise self._failed(f"token realm {realm[:100]!r} is not an HTTP URL")
        credential = self._access.credential
        if credential is not None and not self._may_send_credentials(realm_url):
            credential = None
        answer: tuple[int, bytes] | None = None
        if credential is not None and credential.identity_token:
            form = {
                "grant_type": "refresh_token",
                "refresh_token": credential.identity_token,
                "service": challenge.service,
                "scope": " ".join(scopes),
                "client_id": "archwarden",
            }
            answer = await self._exchange("POST", realm, {}, form)
            if answer[0] in (400, 401, 404, 405):
                answer = None  # this realm has no OAuth2 endpoint: fall back to GET
        if answer is None:
            headers: dict[str, str] = {}
            if credential is not None and credential.has_basic:
                headers["Authorization"] = credential.basic_header()
            params: list[tuple[str, str | int | float | bool | None]] = []
            if challenge.service:
                params.append(("service", challenge.service))
            params.extend(("scope", s) for s in scopes)
            url = str(realm_url.copy_merge_params(httpx.QueryParams(params)))
            answer = await self._exchange("GET", url, headers, None)
        return self._read_token(*answer)

    def _read_token(self, status: int, body: bytes) -> tuple[str, float]:
        if status in (401, 403):
            raise self._failed(f"token server refused the credentials (HTTP {status})")
        if status != 200:
            raise self._failed(f"token server answered HTTP {status}")
        try:
            data = _wire.loads(body, "token response")
            token = data.get("access_token") or data.get("token")
            expires_in = _wire.finite(
                data.get("expires_in") or DEFAULT_TOKEN_LIFETIME, "expires_in"
            )
        except (ValueError, AttributeError, TypeError):
            token, expires_in = None, 0.0
        if not token:
            raise self._failed("token server answered without a token")
        if isinstance(token, str) and len(token) > MAX_TOKEN_BYTES:
            raise self._failed(f"token server answered a token over {MAX_TOKEN_BYTES} bytes")
        if not _usable_token(token):
            raise self._failed("token server answered an unusable token")
        assert isinstance(token, str)
        return token, expires_in
