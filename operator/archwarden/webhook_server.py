"""kopf's HTTPS webhook server, accepting every review the API server can send.

kopf builds its aiohttp application with aiohttp's default body limit (1 MiB). The API server
accepts requests up to 3 MiB and stores objects up to 1.5 MiB, and an UPDATE review carries
both the object and the old one: a pod padded past 1 MiB was answered 413, and with
failurePolicy Ignore the API server admitted it unchecked. Every review is read here with a
larger limit (aiohttp's ``Request.clone(client_max_size=...)``), and a request still refused
(too large, not JSON, an unknown webhook path) is counted and logged in one line.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf
from aiohttp import web

from archwarden import metrics

__all__ = ["MAX_REVIEW_BYTES", "WebhookServer"]

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


class WebhookServer(kopf.WebhookServer):
    def __init__(
        self,
        *,
        meters: metrics.Metrics,
        max_review_bytes: int = MAX_REVIEW_BYTES,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.meters = meters
        self.max_review_bytes = max_review_bytes

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
        roomy = request.clone(client_max_size=self.max_review_bytes)
        try:
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
