"""kopf's HTTPS webhook server, accepting every review the API server can send.

kopf builds its aiohttp application with aiohttp's default body limit (1 MiB). The API server
accepts requests up to 3 MiB and stores objects up to 1.5 MiB, and an UPDATE review carries
both the object and the old one: a pod padded past 1 MiB was answered 413, and with
failurePolicy Ignore the API server admitted it unchecked. Every review is read here with a
larger limit (aiohttp's ``Request.clone(client_max_size=...)``, or our own bounded read on the
direct route), and a request still refused
(too large, not JSON, an unknown webhook path) is counted and logged in one line.

Client authentication (``webhook.clientCAFile``): anyone who reaches the port could otherwise
POST forged reviews, and archwarden would fetch registries and post Events for them. With a
client CA the TLS handshake requires a certificate it signed; ``webhook.clientNames`` further
requires its CN or a DNS SAN to be listed (checked after the handshake: Python's ssl has no
verification callback, so such a caller gets 403 and its review is never read). kopf re-reads
only the serving certificate, key and published CA, so the client CA file is watched here and
the listener restarted, through kopf, when it changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import ssl
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Mapping,
)
from pathlib import Path
from typing import Any, cast

import kopf
from aiohttp import web

from archwarden import metrics

__all__ = ["MAX_REVIEW_BYTES", "ReviewFn", "WebhookServer", "authenticated", "certificate_names"]

ReviewFn = Callable[
    [str, Mapping[str, Any], Mapping[str, Any] | None], Awaitable[Mapping[str, Any] | None]
]
"""``(webhook id, AdmissionReview, TLS peer) -> AdmissionReview response``, None for an unknown
webhook id; a ValueError for a review without what every review has."""

logger = logging.getLogger("archwarden")

# Above the API server's 3 MiB request limit, so nothing it sends is refused for its size;
# still a bound, since the whole body is buffered and parsed in memory.
MAX_REVIEW_BYTES = 4 * 1024 * 1024

# The HTTP errors kopf answers before a handler runs, named for the metric's label.
REFUSAL_REASONS = {
    400: "malformed",
    404: "unknown_webhook",
    409: "ambiguous_resource",
    413: "too_large",
}


def authenticated(sslpeer: Mapping[str, Any] | None) -> bool:
    """Whether a review came from a client this server authenticated, from kopf's ``sslpeer``.

    Python reports a peer certificate only once it was verified (an unverified or absent one
    is an empty dict), the server asks for one only with a client CA, and a certificate whose
    names are not allowed never reaches kopf: a non-empty ``sslpeer`` is an authenticated
    caller. It comes from the TLS session, so no request header can forge it.
    """
    return bool(sslpeer)


def certificate_names(peercert: Mapping[str, Any] | None) -> set[str]:
    """The CN and DNS SANs of a verified peer certificate (Python's ``getpeercert()`` dict)."""
    names: set[str] = set()
    if not peercert:
        return names
    for rdn in peercert.get("subject") or ():
        for key, value in rdn:
            if key == "commonName":
                names.add(str(value))
    for kind, value in peercert.get("subjectAltName") or ():
        if kind == "DNS":
            names.add(str(value))
    return names


def _digest(path: str) -> str | None:
    """A hash of a loadable CA bundle; None when it cannot be read or holds no certificate."""
    try:
        data = Path(path).read_bytes()
        ssl.create_default_context(purpose=ssl.Purpose.CLIENT_AUTH).load_verify_locations(
            cadata=data.decode("ascii")
        )
    except (OSError, UnicodeDecodeError, ssl.SSLError, ValueError):
        return None
    return hashlib.sha256(data).hexdigest()


class WebhookServer(kopf.WebhookServer):
    def __init__(
        self,
        *,
        meters: metrics.Metrics,
        max_review_bytes: int = MAX_REVIEW_BYTES,
        client_ca_file: str | None = None,
        client_names: Iterable[str] = (),
        **kwargs: Any,
    ) -> None:
        client_names = frozenset(client_names)
        if client_names and client_ca_file is None:
            raise ValueError("client_names need a client_ca_file to verify certificates with")
        if client_ca_file is not None:
            # kopf loads these into the SSL context it builds for every (re)start.
            kwargs.update(verify_mode=ssl.CERT_REQUIRED, verify_cafile=client_ca_file)
        super().__init__(**kwargs)
        self.meters = meters
        self.max_review_bytes = max_review_bytes
        self.client_ca_file = client_ca_file
        self.client_names = client_names
        self.direct: ReviewFn | None = None
        """Where reviews go instead of kopf's admission machinery (see ``handlers``)."""

    async def __call__(self, fn: kopf.WebhookFn) -> AsyncIterator[kopf.WebhookClientConfig]:
        ca_file = self.client_ca_file
        if ca_file is None:
            async for config in super().__call__(fn):
                yield config
            return
        while True:
            # kopf's listener restarts itself when its own files change; a changed client CA
            # closes it, and a fresh one loads the new bundle into a new SSL context.
            serving = _digest(ca_file)
            # kopf declares an AsyncIterator; it is an async generator, which we must close.
            listener = cast(AsyncGenerator[kopf.WebhookClientConfig, None], super().__call__(fn))
            try:
                yield await listener.__anext__()
                while True:
                    renewed = asyncio.ensure_future(listener.__anext__())
                    changed = asyncio.ensure_future(self._ca_changed(ca_file, serving))
                    try:
                        await asyncio.wait({renewed, changed}, return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        for task in (renewed, changed):
                            task.cancel()
                            with contextlib.suppress(asyncio.CancelledError):
                                await task
                    if changed.done() and not changed.cancelled():
                        logger.info("client CA file %s changed: restarting the listener", ca_file)
                        break
                    yield renewed.result()
            finally:
                await listener.aclose()

    async def _ca_changed(self, path: str, serving: str | None) -> None:
        """Returns once ``path`` holds another loadable bundle than the one being served."""
        warned = False
        while True:
            await asyncio.sleep(self.file_check_interval)
            current = _digest(path)
            if current is None:
                # A half-written or wrong file: keep the CA in use rather than stop serving.
                if not warned:
                    logger.warning("client CA file %s is unreadable; keeping the one in use", path)
                    warned = True
                continue
            warned = False
            if current != serving:
                return

    def _peer(self, request: web.Request) -> Mapping[str, Any] | None:
        """The caller's verified certificate; None without a client CA, when the server never
        asks for one (reading the TLS session's empty answer costs every review microseconds)."""
        if self.client_ca_file is None:
            return None
        transport = request.transport
        return transport.get_extra_info("peercert") if transport is not None else None

    def _client_allowed(self, peer: Mapping[str, Any] | None) -> bool:
        if self.client_ca_file is None or not self.client_names:
            return True
        return bool(certificate_names(peer) & self.client_names)

    def _refused(self, reason: str, request: web.Request, detail: str) -> None:
        self.meters.admission_refused.labels(reason).inc()
        logger.warning(
            "admission request refused (%s) on /%s, %s bytes: %s",
            reason,
            request.match_info.get("id", ""),
            request.content_length if request.content_length is not None else "unknown",
            detail,
        )

    # kopf declares _serve a staticmethod but calls it through the instance (self._serve), so
    # an instance method is what it runs; the limit and the counter live on the instance.
    async def _serve(  # type: ignore[override]
        self, fn: kopf.WebhookFn, request: web.Request
    ) -> web.Response:
        # kopf reads the body through this request; the clone carries our limit instead of the
        # application's (the body is still unread, which clone() requires).
        peer = self._peer(request)
        if not self._client_allowed(peer):
            # Refused before the body is read: the caller is not one of webhook.clientNames.
            self._refused("client_name", request, "client certificate name not allowed")
            raise web.HTTPForbidden(reason="client certificate name not allowed")
        try:
            if self.direct is not None:
                return await self._serve_directly(self.direct, request, self.max_review_bytes, peer)
            roomy = request.clone(client_max_size=self.max_review_bytes)
            response: web.Response = await super()._serve(fn, roomy)
        except web.HTTPException as exc:
            reason = REFUSAL_REASONS.get(exc.status, "http_error")
            self._refused(reason, request, f"HTTP {exc.status} {exc.reason}")
            raise
        except Exception as exc:
            # aiohttp answers 500; the review was not decided either way.
            self._refused("error", request, type(exc).__name__)
            raise
        return response

    @staticmethod
    async def _serve_directly(
        direct: ReviewFn, request: web.Request, limit: int, sslpeer: Mapping[str, Any] | None
    ) -> web.Response:
        webhook = request.match_info.get("id", "")
        body = await _read_bounded(request, limit)
        try:
            try:
                review = json.loads(body)
            except RecursionError:
                # json's C scanner recurses once per nesting level: a deep body is malformed
                # input, answered in one line, never a 500 with a traceback.
                raise ValueError("the review is nested too deeply") from None
            if not isinstance(review, Mapping):
                raise ValueError("the review is not a JSON object")
            answer = await direct(webhook, review, sslpeer)
        except ValueError as exc:  # JSON errors included
            raise web.HTTPBadRequest(reason=str(exc).splitlines()[0][:200] or None) from None
        if answer is None:
            raise web.HTTPNotFound(reason=f"no webhook {webhook[:100]!r}")
        return web.Response(body=json.dumps(answer).encode(), content_type="application/json")


async def _read_bounded(request: web.Request, limit: int) -> bytes:
    """The whole body, refused (413) past ``limit`` bytes, declared or not (chunked)."""
    declared = request.content_length
    if declared is not None and declared > limit:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=declared)
    chunks: list[bytes] = []
    size = 0
    # readany: what has arrived, however much (aiohttp's flow control bounds its buffer); a
    # review usually arrives whole, and read(n) costs more per call.
    while chunk := await request.content.readany():
        size += len(chunk)
        if size > limit:
            raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=size)
        chunks.append(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)
