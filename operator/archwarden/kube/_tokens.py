"""ServiceAccount tokens for kubelet credential providers in token mode (``tokenAttributes``).

The kubelet requests a token for the pod's ServiceAccount with the audience the provider's
config names (TokenRequest, default lifetime), bound to the pod, and keeps it in its token
manager until 80% of its lifetime has passed (or 24 hours). Here the pod does not exist yet
(admission comes first), so the token is bound to nothing but the ServiceAccount; it is kept
per (namespace, ServiceAccount, audience) on the same refresh rule. Tokens are never logged.

Bounded: tokens are kept up to ``cache_bytes`` (oldest first), ServiceAccounts (UID and only
the annotations some provider reads) for ``ACCOUNT_TTL`` seconds, up to ``MAX_ACCOUNTS``.
Concurrent reviews needing the same token share one request.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import json
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import cachetools
import kubernetes

from archwarden import registry
from archwarden.kube import _api

__all__ = ["ServiceAccountTokens"]

REFRESH_FRACTION = 0.8
"""A token is renewed once this share of its lifetime has passed (the kubelet's 20% rule)."""
MAX_TOKEN_AGE = 24 * 3600.0
"""Nor kept longer than this, whatever its lifetime (the kubelet's ``maxTTL``)."""
TOKEN_CACHE_BYTES = 4 * 1024 * 1024
"""Bytes of tokens kept: a bound token is about 1 KiB, so thousands of ServiceAccounts."""
TOKEN_ENTRY_BYTES = 512
"""What keeping one token costs besides its text (the entry, its key and the cache's links)."""
ACCOUNT_TTL = 30.0
"""Seconds a ServiceAccount's UID and annotations are trusted, as pull secrets are."""
MAX_ACCOUNTS = 4096


@dataclasses.dataclass(frozen=True)
class _Token:
    token: str = dataclasses.field(repr=False)
    renew_at: float
    """Monotonic time after which it is requested again."""


TokenRequestFn = Callable[[str, str, str], Awaitable[tuple[str, float]]]
"""(namespace, name, audience) -> (token, lifetime in seconds): one TokenRequest."""


class ServiceAccountTokens:
    """``registry.ServiceAccountSource`` for a cluster."""

    def __init__(
        self,
        reader: _api.ApiReader,
        request: TokenRequestFn,
        annotation_keys: Iterable[str] = (),
        *,
        cache_bytes: int = TOKEN_CACHE_BYTES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._reader = reader
        self._request = request
        self._keys = frozenset(annotation_keys)
        self._clock = clock
        self._tokens: cachetools.LRUCache[tuple[str, str, str], _Token] = cachetools.LRUCache(
            maxsize=cache_bytes, getsizeof=lambda t: TOKEN_ENTRY_BYTES + sys.getsizeof(t.token)
        )
        self._accounts: cachetools.TTLCache[tuple[str, str], registry.ServiceAccount] = (
            cachetools.TTLCache(maxsize=MAX_ACCOUNTS, ttl=ACCOUNT_TTL, timer=clock)
        )
        self._flights: dict[tuple[str, str, str], asyncio.Future[str]] = {}
        self.requests = 0
        """TokenRequests made so far."""

    @classmethod
    def for_cluster(
        cls, api_client: Any, reader: _api.ApiReader, annotation_keys: Iterable[str], **kw: Any
    ) -> ServiceAccountTokens:
        core = kubernetes.client.CoreV1Api(api_client)

        async def request(namespace: str, name: str, audience: str) -> tuple[str, float]:
            body: Any = {
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenRequest",
                # No expirationSeconds, as the kubelet: the API server's default (an hour).
                "spec": {"audiences": [audience]},
            }

            def call() -> Mapping[str, Any]:
                response: Any = core.create_namespaced_service_account_token(
                    name, namespace, body, _preload_content=False
                )
                result = json.loads(response.data)
                return result if isinstance(result, Mapping) else {}

            what = f"token for serviceaccount {namespace}/{name}"
            try:
                answer = await asyncio.to_thread(call)
            except kubernetes.client.exceptions.ApiException as exc:
                raise _api.ApiUnavailable(f"{what}: HTTP {exc.status} {exc.reason}") from None
            except Exception as exc:  # never the body: it would hold the token
                raise _api.ApiUnavailable(f"{what}: {type(exc).__name__}") from None
            return _token_of(answer, what)

        return cls(reader, request, annotation_keys, **kw)

    async def account(self, namespace: str, name: str) -> registry.ServiceAccount:
        key = (namespace, name)
        held = self._accounts.get(key)
        if held is not None:
            return held
        body = await self._reader.service_account(namespace, name)
        meta = body.get("metadata") or {}
        annotations = meta.get("annotations") or {}
        account = registry.ServiceAccount(
            namespace,
            name,
            str(meta.get("uid") or ""),
            {k: str(v) for k, v in annotations.items() if k in self._keys},
        )
        self._accounts[key] = account
        return account

    async def token(self, namespace: str, name: str, audience: str) -> str:
        key = (namespace, name, audience)
        held = self._tokens.get(key)
        if held is not None and self._clock() < held.renew_at:
            return held.token
        flight = self._flights.get(key)
        if flight is None:
            flight = asyncio.ensure_future(self._fetch(key))
            self._flights[key] = flight
            flight.add_done_callback(lambda _f: self._flights.pop(key, None))
        return await asyncio.shield(flight)

    async def _fetch(self, key: tuple[str, str, str]) -> str:
        self.requests += 1
        token, lifetime = await self._request(*key)
        keep = min(lifetime * REFRESH_FRACTION, MAX_TOKEN_AGE)
        # cachetools refuses a value larger than the whole cache: it serves this review only.
        with contextlib.suppress(ValueError):
            self._tokens[key] = _Token(token, self._clock() + keep)
        return token


def _token_of(answer: Mapping[str, Any], what: str) -> tuple[str, float]:
    status = answer.get("status") or {}
    spec = answer.get("spec") or {}
    token = status.get("token")
    if not isinstance(token, str) or not token:
        raise _api.ApiUnavailable(f"{what}: the answer holds no token")
    lifetime = spec.get("expirationSeconds")
    expires = status.get("expirationTimestamp")
    if isinstance(expires, str):
        try:
            when = datetime.datetime.fromisoformat(expires.replace("Z", "+00:00"))
            lifetime = (when - datetime.datetime.now(datetime.UTC)).total_seconds()
        except ValueError:
            pass
    if not isinstance(lifetime, int | float) or lifetime <= 0:
        lifetime = 0.0  # used once, asked again next time
    return token, float(lifetime)
