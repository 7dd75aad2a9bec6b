"""The registry client: fetch manifests and configs, verify them, resolve platforms.

Orchestration only: which endpoints to try (mirrors, then the registry), retries with backoff,
bodies read under their caps, statuses turned into RegistryErrors. Authentication and redirects
are the auth flow's (``_auth``, ``_redirects``), handed to httpx with every request; what sits
under httpx (SSRF guard, pools, error-body cut, observer) is the transport's.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import functools
import random
import ssl
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx

from archwarden import reference
from archwarden.registry import (
    _auth,
    _budget,
    _config,
    _credentials,
    _guard,
    _holds,
    _manifests,
    _models,
    _pools,
    _redirects,
    _resolution,
    _transport,
    _verification,
    _wire,
)
from archwarden.registry import _exceptions as exc

__all__ = ["RegistryClient", "RequestObserver"]

USER_AGENT = "archwarden/0.1 (+https://github.com/archwarden/archwarden)"
RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})

# Per-call credentials (a pod's pull secrets) for one shared client: set by
# :meth:`RegistryClient.using`, inherited by tasks started inside, so concurrent admissions with
# different secrets never see each other's. Tokens are cached per identity for the same reason.
_call_credentials: contextvars.ContextVar[_credentials.CredentialStore | None] = (
    contextvars.ContextVar("archwarden_registry_credentials", default=None)
)

RequestObserver = _transport.Observer
"""Called after every HTTP exchange with (registry host, status code or error kind, seconds)."""


@dataclasses.dataclass(frozen=True)
class _Endpoint:
    host: str
    """``host[:port]`` the requests go to (mirror or registry API host)."""
    base_url: str
    registry: str
    """The naming domain of the image (what errors and credentials are keyed by)."""
    settings: _config.RegistrySettings
    mirror: bool = False


class _RequestExpired(httpx.TimeoutException):
    """A request outlived ``request_deadline``. A timeout like a slow read, so it is retried
    and translated the same way; its own class only so the message names the whole request."""


@dataclasses.dataclass(frozen=True)
class _Response:
    status: int
    headers: httpx.Headers
    body: bytes


def _error_summary(body: bytes) -> tuple[str, str]:
    """The first ``code`` and ``message`` of a registry error body, if it has them."""
    try:
        data = _wire.loads(body[: _config.ERROR_BODY_MAX_BYTES], "error body")
        first = data["errors"][0]
        code = str(first.get("code", ""))[:64]
        message = str(first.get("message", ""))[:200]
        return code, message
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return "", ""


class RegistryClient:
    """An async client for OCI / Docker registries; usable on its own.

    ``transport`` replaces the network (tests pass ``httpx.MockTransport``); ``resolver``
    replaces DNS for the SSRF guard; ``observer`` sees every exchange (metrics). ``holds``
    keeps the hosts that answered 429 (tests pass one with their clock); ``held_observer`` is
    told the host each time an operation fails at once because that host is held.
    """

    def __init__(
        self,
        settings: _config.ClientSettings = _config.DEFAULT_SETTINGS,
        credentials: _credentials.CredentialStore | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        resolver: _guard.Resolver | None = None,
        observer: RequestObserver | None = None,
        holds: _holds.Holds | None = None,
        held_observer: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        self.credentials = credentials or _credentials.CredentialStore()
        self._transport = transport
        self._resolver = resolver or _guard.system_resolver
        self._observer = observer
        # One for every endpoint: a 429 answered to the audit holds its host for admissions too.
        self.holds = holds or _holds.Holds()
        self._held_observer = held_observer
        self._pools = _pools.Pools(self._new_http)
        # TLS contexts by CA file, shared by every pool: loading a CA store costs 50-200 ms of
        # CPU, and a pod spec may name a new registry per image. The system store is loaded
        # here, before any review; keys are CA files from the configuration, so few.
        self._ssl_contexts: dict[str | None, ssl.SSLContext] = {}
        if transport is None:
            self._ssl_context(None)
        # Challenges per origin, tokens per identity and scope: shared by every request.
        self._auth = _auth.AuthState()
        # Bare host names (no port, no brackets) the SSRF guard trusts, as httpcore names the
        # host it connects to; a configured naming domain also trusts its API host.
        self._trusted_hosts = frozenset(
            _bare_host(address)
            for name, value in settings.registries.items()
            for address in (name, _config.api_host(name), *value.mirrors)
        )

    async def __aenter__(self) -> RegistryClient:
        return self

    async def __aexit__(self, *args: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._pools.aclose()

    # -- endpoints and HTTP clients -------------------------------------------------------------

    def _endpoints(self, ref: reference.Reference) -> list[_Endpoint]:
        settings = self.settings.for_host(ref.domain)
        endpoints = []
        for mirror in settings.mirrors:
            scheme, _, host = mirror.rpartition("://")
            host = host.rstrip("/")
            if not scheme:
                scheme = "http" if self.settings.for_host(host).insecure else "https"
            endpoints.append(
                _Endpoint(
                    host, f"{scheme}://{host}", ref.domain, self.settings.for_host(host), True
                )
            )
        api = _config.api_host(ref.domain)
        scheme = "http" if settings.insecure else "https"
        endpoints.append(_Endpoint(api, f"{scheme}://{api}", ref.domain, settings))
        return endpoints

    def _host_allowed(self, host: str) -> bool:
        """The SSRF guard lets explicitly configured registries (and their mirrors) through."""
        return host.strip("[]").lower() in self._trusted_hosts

    def _ssl_context(self, ca_file: str | None) -> ssl.SSLContext:
        context = self._ssl_contexts.get(ca_file)
        if context is None:
            context = self._ssl_contexts[ca_file] = ssl.create_default_context(cafile=ca_file)
        return context

    def _new_http(self, host: str, ca_file: str | None) -> httpx.AsyncClient:
        timeout = httpx.Timeout(self.settings.for_host(host).timeout or self.settings.timeout)
        if self._transport is not None:
            transport: httpx.AsyncBaseTransport = self._transport
        else:
            transport = _transport.GuardedTransport(
                self._ssl_context(ca_file),
                _guard.GuardedBackend(self._host_allowed, self._resolver),
                self.settings.max_connections_per_registry,
            )
        return httpx.AsyncClient(
            transport=_transport.Metered(
                transport,
                host,
                self._observer,
                holds=self.holds,
                patience=self.settings.max_retry_after,
            ),
            timeout=timeout,
            follow_redirects=False,
            trust_env=False,
            # identity: a compressed body is counted against the caps only after it has
            # been inflated, and inflating blocks the event loop (590 bytes of gzip, gzip
            # became 256 MiB). Nothing a registry serves here is worth compressing.
            headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"},
        )

    # -- one exchange ---------------------------------------------------------------------------

    async def _send(
        self,
        client: httpx.AsyncClient,
        endpoint: _Endpoint,
        first: _redirects.Hop,
        auth: httpx.Auth,
        max_bytes: int,
        subject: str,
    ) -> _Response:
        """Send ``first`` through ``auth``'s flow (redirects, credentials) and read the answer,
        all of it within ``request_deadline`` when one is set."""
        limit = self.settings.request_deadline
        deadline = asyncio.timeout(limit)
        try:
            async with deadline:
                return await self._exchange(client, endpoint, first, auth, max_bytes, subject)
        except TimeoutError:
            if not deadline.expired():
                raise  # an enclosing deadline's, or the library's: not this request's to name
            raise _RequestExpired(f"no complete answer within {limit:g}s") from None

    async def _exchange(
        self,
        client: httpx.AsyncClient,
        endpoint: _Endpoint,
        first: _redirects.Hop,
        auth: httpx.Auth,
        max_bytes: int,
        subject: str,
    ) -> _Response:
        try:
            response = await client.send(_build(client, first), auth=auth, stream=True)
        except _redirects.RedirectRefused as refused:
            raise exc.RegistryServerError(endpoint.registry, str(refused), subject) from None
        except exc.RegistryHeld as held:
            raise held.about(endpoint.registry, subject) from None
        try:
            body = await self._read(response, endpoint, max_bytes, subject)
            return _Response(response.status_code, response.headers, body)
        finally:
            await response.aclose()

    async def _read(
        self, response: httpx.Response, endpoint: _Endpoint, max_bytes: int, subject: str
    ) -> bytes:
        if response.request.method == "HEAD":
            return b""
        cap = max_bytes if response.status_code < 300 else _config.ERROR_BODY_MAX_BYTES
        declared = response.headers.get("content-length", "")
        if response.status_code < 300 and declared.isdigit() and int(declared) > cap:
            raise exc.ManifestTooLarge(
                endpoint.registry,
                f"document of {int(declared)} bytes exceeds the {cap}-byte cap",
                subject,
            )
        encoding = response.headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            if response.status_code >= 300:
                return b""  # error bodies are only skimmed; an encoded one is not worth it
            raise exc.InvalidManifest(
                endpoint.registry,
                f"refused a body with Content-Encoding {_wire.quote(encoding)}"
                " (asked for identity)",
                subject,
            )
        chunks: list[bytes] = []
        total = 0
        async for chunk in _raw_chunks(response):
            total += len(chunk)
            if total > cap:
                if response.status_code >= 300:
                    break  # error bodies are only skimmed
                raise exc.ManifestTooLarge(
                    endpoint.registry, f"document exceeds the {cap}-byte cap", subject
                )
            _budget.charge(len(chunk), endpoint.registry, subject)
            chunks.append(chunk)
        return b"".join(chunks)

    # -- authentication -------------------------------------------------------------------------

    def _credential(self, endpoint: _Endpoint) -> _credentials.Credential | None:
        # Keyed by the host actually contacted: a mirror never receives the upstream's secret.
        store = _call_credentials.get() or self.credentials
        return store.lookup(endpoint.registry if not endpoint.mirror else endpoint.host)

    def identity(self, ref: reference.Reference) -> str:
        """Who the current context would authenticate as for ``ref`` ('' for anonymous).

        Callers that cache failures key them by this, so one pod's missing secret never
        fails another pod that has the right one.
        """
        store = _call_credentials.get() or self.credentials
        return _credentials.fingerprint(store.lookup(ref.domain))

    @staticmethod
    def using(credentials: _credentials.CredentialStore | None) -> contextvars.Token[Any]:
        """Use ``credentials`` (instead of the client's own) in the current context.

        Pass the returned token to :meth:`restore`. ``None`` means the client's own store.
        """
        return _call_credentials.set(credentials)

    @staticmethod
    def restore(token: contextvars.Token[Any]) -> None:
        _call_credentials.reset(token)

    async def _token_exchange(
        self, endpoint: _Endpoint, client: httpx.AsyncClient, subject: str, hop: _redirects.Hop
    ) -> tuple[int, bytes]:
        """One token request for the auth flow, on the endpoint's own connections."""
        follow = _redirects.Follow(
            hop, functools.partial(_build, client), self.settings.max_redirects
        )
        try:
            response = await self._send(
                client, endpoint, hop, follow, _auth.TOKEN_RESPONSE_MAX_BYTES, subject
            )
        except exc.ManifestTooLarge:
            raise exc.AuthenticationFailed(
                endpoint.registry,
                f"token server answered more than {_auth.TOKEN_RESPONSE_MAX_BYTES} bytes",
                subject,
            ) from None
        except httpx.TransportError as error:
            if isinstance(error, httpx.TimeoutException):
                raise exc.RegistryTimeout(
                    endpoint.registry, "token server timed out", subject
                ) from None
            raise _transport.failure(
                endpoint.registry, error, subject, "token realm ", "token server"
            ) from None
        return response.status, response.body

    # -- requests with auth and retries ---------------------------------------------------------

    async def _request(
        self,
        endpoint: _Endpoint,
        ref: reference.Reference,
        method: str,
        path: str,
        *,
        accept: str | None,
        max_bytes: int,
        subject: str,
    ) -> _Response:
        first = _redirects.Hop(
            method, httpx.URL(endpoint.base_url + path), {"Accept": accept} if accept else {}
        )
        access = _auth.Access(
            endpoint.registry, subject, f"repository:{ref.path}:pull", self._credential(endpoint)
        )
        ca_file = endpoint.settings.ca_file or self.settings.ca_file
        async with self._pools.use(endpoint.host, ca_file) as client:

            async def exchange(
                method: str, url: str, headers: dict[str, str], form: dict[str, str] | None
            ) -> tuple[int, bytes]:
                hop = _redirects.Hop(method, httpx.URL(url), headers, form)
                return await self._token_exchange(endpoint, client, subject, hop)

            # One flow for the request and all its retries: its 401 count holds across them.
            auth = _auth.RegistryAuth(
                self._auth,
                access,
                first,
                functools.partial(_build, client),
                self.settings,
                exchange,
            )
            return await self._with_retries(client, endpoint, first, auth, max_bytes, subject)

    async def _with_retries(
        self,
        client: httpx.AsyncClient,
        endpoint: _Endpoint,
        first: _redirects.Hop,
        auth: _auth.RegistryAuth,
        max_bytes: int,
        subject: str,
    ) -> _Response:
        retries = 0
        while True:
            try:
                response = await self._send(client, endpoint, first, auth, max_bytes, subject)
            except httpx.TransportError as error:
                if not isinstance(error, httpx.TimeoutException):
                    raise _transport.failure(endpoint.registry, error, subject) from None
                if retries < min(1, self.settings.max_retries):
                    retries += 1
                    continue
                waited = endpoint.settings.timeout or self.settings.timeout
                problem = (
                    str(error)
                    if isinstance(error, _RequestExpired)
                    else f"no answer within {waited:g}s"
                )
                raise exc.RegistryTimeout(endpoint.registry, problem, subject) from None
            if response.status in RETRYABLE_STATUSES:
                wait = _wire.retry_after(response.headers.get("retry-after"))
                if wait is not None and wait > self.settings.max_retry_after:
                    raise self._status_error(endpoint, response, subject, wait)
                if retries < self.settings.max_retries:
                    # The hold this 429 set (see _holds), which other lookups meet meanwhile.
                    hold = self.holds.held(endpoint.host) if response.status == 429 else None
                    if wait is None:
                        wait = self.settings.backoff * (2**retries) * (0.5 + random.random())
                    retries += 1
                    await asyncio.sleep(wait)
                    if hold is not None:
                        # This lookup waited what was asked (or backed off without Retry-After)
                        # and asks again; a hold another 429 set meanwhile refuses it.
                        self.holds.release(endpoint.host, hold)
                    continue
                raise self._status_error(endpoint, response, subject, wait)
            return response

    def _status_error(
        self, endpoint: _Endpoint, response: _Response, subject: str, wait: float | None = None
    ) -> exc.RegistryError:
        code, message = _error_summary(response.body)
        status = response.status
        if status == 429:
            detail = "rate limited (HTTP 429)"
            if wait is not None:
                detail += f", retry after {wait:.0f}s"
            return exc.RateLimited(endpoint.registry, detail, subject, retry_after=wait)
        if status == 404:
            words = {
                "MANIFEST_UNKNOWN": "manifest unknown",
                "NAME_UNKNOWN": "repository unknown",
                "BLOB_UNKNOWN": "blob unknown",
            }
            return exc.ImageNotFound(endpoint.registry, words.get(code, "not found"), subject)
        if status == 403:
            return exc.AccessDenied(endpoint.registry, "access denied", subject)
        described = f"HTTP {status}"
        if code:
            described += f" {code}"
        if message:
            described += f" ({message})"
        return exc.RegistryServerError(endpoint.registry, described, subject, status=status)

    # -- public operations ----------------------------------------------------------------------

    def _secrets(self) -> set[str]:
        """Every credential this context could have sent, and every token held."""
        secrets = self.credentials.secrets() | set(self._auth.tokens.tokens())
        store = _call_credentials.get()
        return secrets | store.secrets() if store is not None else secrets

    @contextlib.asynccontextmanager
    async def _contained(self, registry: str, subject: str) -> AsyncIterator[None]:
        """The one chokepoint of every public operation: an overall deadline, and any failure
        that is not yet a RegistryError becomes one.

        ``timeout`` bounds each read; the deadline bounds the whole operation, so a registry
        trickling a byte a second cannot keep it alive. Specific failures are translated where
        they happen, with a precise message; this catches what they miss (a library raising
        something new), so callers can rely on ``except RegistryError`` and the Resolver caches
        the failure. Only the type is named: exception texts can quote their input (a
        UnicodeEncodeError quotes the token it could not encode).
        """
        deadline = asyncio.timeout(self.settings.deadline)
        try:
            async with deadline:
                yield
        except exc.RegistryError as error:
            if isinstance(error, exc.RegistryHeld) and self._held_observer is not None:
                self._held_observer(error.host)
            error.redact(self._secrets())
            raise
        except TimeoutError:
            if not deadline.expired():
                raise exc.RegistryServerError(
                    registry, "unusable answer (TimeoutError)", subject
                ) from None
            raise exc.RegistryTimeout(
                registry, f"no complete answer within {self.settings.deadline:g}s", subject
            ) from None
        except Exception as error:
            raise exc.RegistryServerError(
                registry, f"unusable answer ({type(error).__name__})", subject
            ) from error

    async def _on_endpoints(
        self,
        ref: reference.Reference,
        method: str,
        path: str,
        *,
        accept: str | None,
        max_bytes: int,
        subject: str,
    ) -> tuple[_Endpoint, _Response]:
        """Try each mirror, then the registry; the registry's own error wins if all fail."""
        endpoints = self._endpoints(ref)
        for endpoint in endpoints:
            is_last = endpoint is endpoints[-1]
            try:
                response = await self._request(
                    endpoint, ref, method, path, accept=accept, max_bytes=max_bytes, subject=subject
                )
            except exc.RegistryError:
                if is_last:
                    raise
                continue
            if response.status >= 300 and not is_last:
                continue
            return endpoint, response
        raise AssertionError("unreachable: the registry endpoint is always last")

    async def head_manifest(self, ref: reference.Reference) -> _models.ManifestHead | None:
        """The digest of ``ref`` without downloading it, or None when the registry won't say.

        Docker Hub does not count HEADs toward its pull limit, so revalidating a tag this way
        spends the limit only on digests we have never seen.
        """
        path = f"/v2/{ref.path}/manifests/{ref.target}"
        async with self._contained(ref.domain, ref.short):
            _, response = await self._on_endpoints(
                ref, "HEAD", path, accept=_manifests.ACCEPT, max_bytes=0, subject=ref.short
            )
        digest = response.headers.get("docker-content-digest", "")
        if response.status != 200 or not digest:
            return None
        try:
            reference.validate_digest(digest)
        except reference.InvalidReference:
            return None
        media_type = response.headers.get("content-type", "").split(";", 1)[0]
        length = response.headers.get("content-length", "")
        return _models.ManifestHead(digest, media_type, int(length) if length.isdigit() else -1)

    async def fetch_manifest(
        self, ref: reference.Reference, target: str | None = None
    ) -> tuple[_manifests.Document, str]:
        """GET a manifest by tag or digest, verify it, and return it with its digest."""
        async with self._contained(ref.domain, f"{ref.path}@{target}" if target else ref.short):
            return await self._fetch_manifest(ref, target)

    async def _fetch_manifest(
        self, ref: reference.Reference, target: str | None = None
    ) -> tuple[_manifests.Document, str]:
        target = target or ref.target
        subject = f"{ref.path}@{target}" if ":" in target else f"{ref.path}:{target}"
        endpoint, response = await self._on_endpoints(
            ref,
            "GET",
            f"/v2/{ref.path}/manifests/{target}",
            accept=_manifests.ACCEPT,
            max_bytes=self.settings.manifest_max_bytes,
            subject=subject,
        )
        if response.status != 200:
            raise self._status_error(endpoint, response, subject)
        try:
            document = _manifests.Document.parse(
                response.body, response.headers.get("content-type", "")
            )
            expected = target if ":" in target else response.headers.get("docker-content-digest")
            if expected:
                reference.validate_digest(expected)
                actual = document.digest(expected.split(":", 1)[0])
                if actual != expected:
                    raise exc.DigestMismatch(
                        endpoint.registry,
                        f"manifest digest mismatch: expected {expected}, got {actual}",
                        subject,
                    )
                return document, expected
            return document, document.digest()
        except _manifests.DocumentError as error:
            raise exc.InvalidManifest(endpoint.registry, str(error), subject) from None
        except reference.InvalidReference as error:
            raise exc.InvalidManifest(
                endpoint.registry, f"bad Docker-Content-Digest: {error.problem}", subject
            ) from None

    async def fetch_blob(self, ref: reference.Reference, digest: str, max_bytes: int) -> bytes:
        async with self._contained(ref.domain, f"{ref.path}@{digest}"):
            return await self._fetch_blob(ref, digest, max_bytes)

    async def _fetch_blob(self, ref: reference.Reference, digest: str, max_bytes: int) -> bytes:
        subject = f"{ref.path}@{digest}"
        endpoint, response = await self._on_endpoints(
            ref,
            "GET",
            f"/v2/{ref.path}/blobs/{digest}",
            accept=None,
            max_bytes=max_bytes,
            subject=subject,
        )
        if response.status != 200:
            raise self._status_error(endpoint, response, subject)
        actual = _manifests.compute_digest(response.body, digest.split(":", 1)[0])
        if actual != digest:
            raise exc.DigestMismatch(
                endpoint.registry, f"blob digest mismatch: expected {digest}, got {actual}", subject
            )
        return response.body

    async def resolve(self, ref: reference.Reference | str) -> _models.ImagePlatforms:
        """Every platform the image named by ``ref`` can run on."""
        if isinstance(ref, str):
            ref = reference.parse(ref)
        async with self._contained(ref.domain, ref.short):
            return await self._resolve(ref)

    async def _resolve(self, ref: reference.Reference) -> _models.ImagePlatforms:
        budget = _budget.use(_budget.Budget(self.settings.resolution_max_bytes))
        try:
            document, digest = await self._fetch_manifest(ref)
            walk = _resolution.Walk(ref, self.settings, self._fetch_manifest, self._fetch_blob)
            found = await walk.platforms(document, digest, depth=0, seen=frozenset({digest}))
        finally:
            _budget.reset(budget)
        artifact = walk.artifact_type
        if not found and not artifact:
            raise exc.InvalidManifest(ref.domain, "index lists no runnable images", ref.short)
        return _models.ImagePlatforms(
            reference=ref,
            digest=digest,
            media_type=document.media_type,
            platforms=tuple(sorted(set(found))),
            artifact_type=artifact,
        )

    async def verify(self, ref: reference.Reference | str) -> _models.Verification:
        """Check every platform an index claims against the config of the image it names.

        Reads each claiming entry's manifest and config (which resolution skips), under the
        same byte budget, caps and deadline as a resolution; see :mod:`_verification`.
        """
        if isinstance(ref, str):
            ref = reference.parse(ref)
        async with self._contained(ref.domain, ref.short):
            budget = _budget.use(_budget.Budget(self.settings.resolution_max_bytes))
            try:
                document, digest = await self._fetch_manifest(ref)
                check = _verification.Check(
                    ref, self.settings, self._fetch_manifest, self._fetch_blob
                )
                entries = await check.entries(document, digest, depth=0, seen=frozenset({digest}))
            finally:
                _budget.reset(budget)
        return _models.Verification(reference=ref, digest=digest, entries=tuple(entries))


async def _raw_chunks(response: httpx.Response) -> AsyncIterator[bytes]:
    """The body as sent (aiter_raw), so httpx never inflates anything behind the caps."""
    if response.is_stream_consumed:
        # Only an in-memory response (MockTransport's ``content=``) arrives already read.
        yield response.content
        return
    async for chunk in response.aiter_raw():
        yield chunk


def _bare_host(address: str) -> str:
    """``host`` of ``host[:port]``, ``[v6]:port`` or a URL, lower-cased, without brackets."""
    authority = address.rpartition("://")[2].split("/", 1)[0]
    return httpx.URL(f"http://{authority}").host.lower()


def _build(client: httpx.AsyncClient, hop: _redirects.Hop) -> httpx.Request:
    """The request for one hop, with the client's headers and timeouts."""
    return client.build_request(hop.method, hop.url, headers=hop.headers, data=hop.data)
