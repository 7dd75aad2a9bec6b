"""What every exchange with a registry passes through, below httpx's client.

- :class:`GuardedTransport`: httpx's own transport over the SSRF-guarded network backend.
- :class:`Metered`: requests to a held host refused (``_holds``), every 429 holding its host,
  error and redirect bodies cut short before anyone reads them, and the observer told about
  every exchange. An auth flow that answers a 401 or follows a redirect moves on to its next
  request, and httpx then reads the previous response in full (``Response.aread``): without
  the cut, a hostile registry's 401 body would be buffered whole, and inflated if it came
  compressed.
- :func:`failure`: the one translation of httpx's connection errors into RegistryErrors.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpcore
import httpx

from archwarden.registry import _config, _guard, _holds, _pacing, _wire
from archwarden.registry import _exceptions as exc

__all__ = ["GuardedTransport", "Metered", "Observer", "error_kind", "failure"]

Observer = Callable[[str, str, float], None]
"""Called after every HTTP exchange with (registry host, status code or error kind, seconds)."""


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's own transport with the SSRF-guarded network backend underneath."""

    def __init__(
        self, ssl_context: ssl.SSLContext, backend: _guard.GuardedBackend, max_connections: int
    ) -> None:
        super().__init__(verify=ssl_context, trust_env=False)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context,
            max_connections=max_connections,
            max_keepalive_connections=max_connections,
            keepalive_expiry=5.0,
            network_backend=backend,
        )

    def describe(self) -> dict[str, Any]:
        return {"guarded": True}


def error_kind(error: BaseException) -> str:
    if isinstance(error, httpx.TimeoutException):
        return "timeout"
    if isinstance(error, httpx.TransportError):
        return "error"
    return "cancelled"


class _Body(httpx.AsyncByteStream):
    """A response body as sent, stopped before ``cap`` bytes would be passed (None: no cap);
    ``done`` runs once, when the body is closed."""

    def __init__(
        self, inner: httpx.AsyncByteStream, cap: int | None, done: Callable[[], None]
    ) -> None:
        self._inner = inner
        self._cap = cap
        self._done: Callable[[], None] | None = done

    async def __aiter__(self) -> AsyncIterator[bytes]:
        if self._cap == 0:
            return
        total = 0
        async for chunk in self._inner:
            total += len(chunk)
            if self._cap is not None and total > self._cap:
                return  # the rest is never read; closing drops the connection
            yield chunk

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        finally:
            done, self._done = self._done, None
            if done is not None:
                done()


class Metered(httpx.AsyncBaseTransport):
    """Wraps one endpoint's transport. ``label`` is the host the observer is told about and
    the host a 429 holds, whichever host actually answered (a redirect's target, a token
    realm): a registry can only ever hold itself.

    A request to a held host fails at once with RegistryHeld; paced work first waits out a
    hold ending within ``patience`` seconds. A body of a status 300 or above is cut at the
    error-body cap, and one the registry encoded (gzip, though identity was asked for) is not
    read at all: only its code and message are ever quoted. A 2xx body passes whole; the
    client caps it by its own kind.
    """

    def __init__(
        self,
        inner: httpx.AsyncBaseTransport,
        label: str,
        observer: Observer | None = None,
        *,
        holds: _holds.Holds | None = None,
        patience: float = 0.0,
    ) -> None:
        self._inner = inner
        self._label = label
        self._observer = observer
        self._holds = holds or _holds.Holds()
        self._patience = patience

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        patience = self._patience if _pacing.current() is not None else 0.0
        # Before the pacer: a held host is refused without waiting for (or spending) a token.
        await self._holds.admit(self._label, patience)
        # Background work (the audit) is paced here, where every request on the wire passes:
        # redirects, token requests and retries included. Admissions run without a pacer.
        await _pacing.acquire(self._label)
        # A 429 may have come in while this request waited for its token.
        await self._holds.admit(self._label, patience)
        started = time.perf_counter()
        try:
            response = await self._inner.handle_async_request(request)
        except BaseException as error:
            self._observe(error_kind(error), started)
            raise
        status = response.status_code
        if status == 429:
            self._holds.hold(self._label, _wire.retry_after(response.headers.get("retry-after")))
        if status < 300 and self._observer is None:
            return response
        cap: int | None = None
        if status >= 300:
            encoding = response.headers.get("content-encoding", "identity").strip().lower()
            cap = _config.ERROR_BODY_MAX_BYTES if encoding in ("", "identity") else 0
        stream = response.stream
        assert isinstance(stream, httpx.AsyncByteStream)
        return httpx.Response(
            status,
            headers=response.headers,
            stream=_Body(stream, cap, lambda: self._observe(str(status), started)),
            extensions=response.extensions,
        )

    def _observe(self, code: str, started: float) -> None:
        if self._observer is not None:
            self._observer(self._label, code, time.perf_counter() - started)

    async def aclose(self) -> None:
        await self._inner.aclose()


def _causes(error: BaseException) -> list[BaseException]:
    """The error and everything it was raised from (httpx wraps httpcore wraps OSError)."""
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in chain and len(chain) < 10:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _refusal(error: BaseException) -> _guard.AddressRefused | None:
    for cause in _causes(error):
        if isinstance(cause, _guard.AddressRefused):
            return cause
    return None


def failure(
    registry: str,
    error: httpx.TransportError,
    subject: str,
    role: str = "",
    server: str = "",
) -> exc.RegistryError:
    """The one translation of httpx's connection errors (timeouts are the caller's to retry)."""
    refused = _refusal(error)
    if refused is not None:
        return exc.ForbiddenAddress(
            registry,
            f"{role}{refused.host} resolves to {refused.address}, a link-local or metadata"
            " address; refused unless the registry is configured explicitly",
            subject,
        )
    reason = _reason(error)
    problem = f"{server} unreachable ({reason})" if server else f"cannot connect ({reason})"
    return exc.RegistryUnavailable(registry, problem, subject)


def _reason(error: httpx.TransportError) -> str:
    chain = _causes(error)
    text = " ".join(str(c) for c in chain)
    if any(isinstance(c, ssl.SSLCertVerificationError) for c in chain) or (
        "CERTIFICATE_VERIFY_FAILED" in text
    ):
        return "TLS certificate not trusted"
    if any(isinstance(c, ConnectionRefusedError) for c in chain):
        return "connection refused"
    if "WRONG_VERSION_NUMBER" in text or "record layer failure" in text:
        return "TLS handshake failed; is this registry plain HTTP?"
    if any(isinstance(c, ssl.SSLError) for c in chain):
        return "TLS handshake failed"
    if any(isinstance(c, ConnectionResetError) for c in chain):
        return "connection reset"
    if "Name or service not known" in text or "nodename nor servname" in text:
        return "unknown host"
    if isinstance(error, httpx.RemoteProtocolError):
        return "the registry broke the HTTP protocol"
    return type(error).__name__
