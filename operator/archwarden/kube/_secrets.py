"""Pull credentials for a pod: its imagePullSecrets, its ServiceAccount's, and a global one.

Secrets are cached briefly (a rotated secret is seen within the TTL) and never logged: only
their namespace/name appears in messages. Any pod may list thousands of names, so what one pod
costs is bounded: names are de-duplicated, only the first ``max_secrets`` are read, a few at a
time, and missing ones are remembered for a shorter TTL (so a secret created after the pod is
seen soon). Concurrent reviews that need the same object share one read, and one parse.

What is kept is bounded in bytes too. A ``.dockerconfigjson`` (or ``.dockercfg``) longer than
``pull_secret_bytes`` once decoded is never decoded, let alone parsed (its base64 length tells):
it is remembered as that one-line problem, at the cost of its name. Parsed stores are
remembered up to ``pull_secret_cache_bytes`` in all, each counted at what it really holds
(``CredentialStore.held_bytes``: thousands of short entries keep 7.6 times their JSON), the
oldest going first; one larger than the whole cache serves its review and is not kept. A
ServiceAccount keeps only the names that can be read (the first ``max_secrets``), and a name
longer than any Secret's (253 characters) is skipped unread, so neither a ServiceAccount nor a
pod listing thousands of long names makes the caches hold them.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import dataclasses
import functools
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import cachetools

from archwarden import registry
from archwarden.kube import _api

__all__ = ["PullSecrets"]

SECRET_TTL = 30.0
MISSING_TTL = 5.0
"""Seconds a missing secret is remembered: short, since it may be created right after the pod."""
MAX_SECRETS = 16
"""Pull secrets read per pod (its own and its ServiceAccount's); real pods list a handful."""
READS_AT_ONCE = 4
"""Secret reads in flight per pod: each holds a thread of the default executor."""
PULL_SECRET_BYTES = 256 * 1024
"""Decoded bytes of one secret's docker config (``limits.pullSecretBytes``); real ones hold a
few registries in a few KiB."""
PULL_SECRET_CACHE_BYTES = 16 * 1024 * 1024
"""Bytes of secrets remembered (``limits.pullSecretCacheBytes``)."""
MAX_NAME = 253
"""The longest name a Secret can have (a DNS subdomain): a longer one cannot be found, and
reading it would only put its bytes into the caches."""
ENTRY_BYTES = 384
"""What remembering one secret costs besides its store, name and problem: the cache's
bookkeeping (a TTL link and three dict slots), the key tuple and the ``_Secret``. Measured with
tracemalloc (Python 3.11, cachetools 5): 334 bytes an entry in a cache of 20,000."""

_NO_CREDENTIALS = registry.CredentialStore()


@dataclasses.dataclass(frozen=True, slots=True)
class _Secret:
    """A secret as it was read: its credentials, and why they are empty when it could not be
    used (repeated by every review within the TTL, as a missing secret is)."""

    store: registry.CredentialStore
    problem: str | None
    held_bytes: int
    """What remembering it costs (its cache entry's size)."""


def _secret(
    namespace: str, name: str, store: registry.CredentialStore, problem: str | None = None
) -> _Secret:
    if not store:
        store = _NO_CREDENTIALS  # shared: an empty store costs nothing more
    size = ENTRY_BYTES + sys.getsizeof(namespace) + sys.getsizeof(name)
    size += sys.getsizeof(problem) if problem else 0
    size += 0 if store is _NO_CREDENTIALS else store.held_bytes
    return _Secret(store, problem, size)


def _secret_size(secret: _Secret) -> int:
    return secret.held_bytes


@dataclasses.dataclass(frozen=True, slots=True)
class _Account:
    """What a ServiceAccount's ``imagePullSecrets`` say, as far as reviews can use it."""

    names: tuple[str, ...]
    """Its first distinct readable names, at most ``max_secrets``: the only ones ever read
    (the account's come before the pod's)."""
    more: int = 0
    """Distinct readable names past those, for the warning."""
    too_long: int = 0
    """Names longer than ``MAX_NAME``, skipped."""


_NO_ACCOUNT = _Account(())


def _decoded_length(text: str) -> int:
    """The most bytes base64 ``text`` decodes to: 3 for every 4 characters but its trailing
    padding (exact for canonical base64, as the API server sends; characters outside the
    alphabet, which the decoder skips, only make it less)."""
    padding = 2 if text.endswith("==") else 1 if text.endswith("=") else 0
    return (len(text) - padding) * 3 // 4


def _merged(stores: list[registry.CredentialStore]) -> registry.CredentialStore:
    """One store of them all, later ones winning. Stores are never changed once built, so one
    (or none) needs no copy."""
    if len(stores) <= 1:
        return stores[0] if stores else _NO_CREDENTIALS
    return registry.CredentialStore().merged(*stores)


class PullSecrets:
    def __init__(
        self,
        reader: _api.ApiReader,
        global_secret: str | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_secrets: int = MAX_SECRETS,
        concurrency: int = READS_AT_ONCE,
        pull_secret_bytes: int = PULL_SECRET_BYTES,
        pull_secret_cache_bytes: int = PULL_SECRET_CACHE_BYTES,
    ) -> None:
        self._reader = reader
        # "namespace/name", split once: every review that needs credentials reads it.
        self._global: tuple[str, str] | None = None
        if global_secret:
            global_namespace, _, global_name = global_secret.partition("/")
            self._global = (global_namespace, global_name)
        self._max_secrets = max_secrets
        self._concurrency = concurrency
        self._secret_bytes = pull_secret_bytes
        # Counted entries whose names are at most MAX_NAME long: 4096 hold at most about 3 MiB.
        self._missing: cachetools.TTLCache[tuple[str, str], bool] = cachetools.TTLCache(
            4096, MISSING_TTL, timer=clock
        )
        self._cache: cachetools.TTLCache[tuple[str, str], _Secret] = cachetools.TTLCache(
            pull_secret_cache_bytes, SECRET_TTL, timer=clock, getsizeof=_secret_size
        )
        # Counted entries of at most max_secrets names of at most MAX_NAME characters each:
        # 1024 accounts hold at most about 6 MiB with the default 16 (a few KiB in practice).
        self._accounts: cachetools.TTLCache[tuple[str, str], _Account] = cachetools.TTLCache(
            1024, SECRET_TTL, timer=clock
        )
        # Reads under way, shared by every review that needs the same object meanwhile: a
        # Deployment scaled up sends its pods' reviews at once, and each found the cache empty
        # (or just expired) and read the same ServiceAccount and Secrets again.
        self._reads: dict[tuple[str, str, str], asyncio.Future[Mapping[str, Any]]] = {}

    async def _shared(
        self,
        key: tuple[str, str, str],
        read: Callable[[str, str], Awaitable[Mapping[str, Any]]],
    ) -> Mapping[str, Any]:
        """``read(namespace, name)``, once for all concurrent callers. A caller that gives up
        (its review's budget ran out) leaves the read to the others: it is shielded."""
        future = self._reads.get(key)
        if future is None:
            _kind, namespace, name = key
            future = asyncio.ensure_future(read(namespace, name))
            self._reads[key] = future
            future.add_done_callback(functools.partial(self._read_done, key))
        return await asyncio.shield(future)

    def _read_done(self, key: tuple[str, str, str], future: asyncio.Future[Any]) -> None:
        self._reads.pop(key, None)
        if not future.cancelled():
            future.exception()  # retrieved even when every caller gave up: no asyncio warning

    async def _store(
        self, namespace: str, name: str, problems: list[str]
    ) -> registry.CredentialStore:
        held = self._held_store(namespace, name, problems)
        if held is not None:
            return held
        key = (namespace, name)
        try:
            body = await self._shared(("secret", namespace, name), self._reader.secret)
        except _api.NotFound:
            self._missing[key] = True
            problems.append(f"pull secret {namespace}/{name} not found")
            return _NO_CREDENTIALS
        except _api.ApiUnavailable as exc:
            problems.append(f"pull secret {namespace}/{name} unreadable ({exc})")
            return _NO_CREDENTIALS
        # Every review waiting for this read wakes up here: the first parses and caches, the
        # others take its store rather than each keeping a parse of its own meanwhile.
        held = self._held_store(namespace, name, problems)
        if held is not None:
            return held
        secret = self._parsed(namespace, name, body)
        if secret.problem:
            problems.append(secret.problem)
        # ValueError: larger than the whole cache, it serves this review and is read again.
        with contextlib.suppress(ValueError):
            self._cache[key] = secret
        return secret.store

    def _parsed(self, namespace: str, name: str, body: Mapping[str, Any]) -> _Secret:
        data = body.get("data") or {}
        key = ".dockerconfigjson" if data.get(".dockerconfigjson") else ".dockercfg"
        raw = data.get(key)
        if not isinstance(raw, str):
            problem = f"pull secret {namespace}/{name} has no .dockerconfigjson"
            return _secret(namespace, name, _NO_CREDENTIALS, problem)
        if _decoded_length(raw) > self._secret_bytes:
            problem = (
                f"pull secret {namespace}/{name} not used: its {key} is larger than "
                f"limits.pullSecretBytes ({self._secret_bytes} bytes)"
            )
            return _secret(namespace, name, _NO_CREDENTIALS, problem)
        try:
            store = registry.CredentialStore.from_docker_config(base64.b64decode(raw))
        except (binascii.Error, registry.InvalidDockerConfig) as exc:
            # InvalidDockerConfig never quotes the content; binascii's message is not ours.
            reason = str(exc) if isinstance(exc, registry.InvalidDockerConfig) else None
            problem = f"pull secret {namespace}/{name}: {reason or key + ' is not base64'}"
            return _secret(namespace, name, _NO_CREDENTIALS, problem)
        return _secret(namespace, name, store)

    async def _account_secrets(self, namespace: str, account: str, problems: list[str]) -> _Account:
        key = (namespace, account)
        held = self._accounts.get(key)
        if held is not None:
            return held
        try:
            body = await self._shared(
                ("serviceaccount", namespace, account), self._reader.service_account
            )
        except _api.NotFound:
            found = _NO_ACCOUNT  # not created yet: the pod will fail on its own
        except _api.ApiUnavailable as exc:
            problems.append(f"service account {namespace}/{account} unreadable ({exc})")
            return _NO_ACCOUNT
        else:
            found = self._account(body)
        self._accounts[key] = found
        return found

    def _account(self, body: Mapping[str, Any]) -> _Account:
        refs = body.get("imagePullSecrets") or []
        names = dict.fromkeys(
            r["name"] for r in refs if isinstance(r, dict) and isinstance(r.get("name"), str)
        )
        readable = [n for n in names if len(n) <= MAX_NAME]
        kept = tuple(readable[: self._max_secrets])
        return _Account(kept, len(readable) - len(kept), len(names) - len(readable))

    def _held_store(
        self, namespace: str, name: str, problems: list[str]
    ) -> registry.CredentialStore | None:
        """``_store`` from the caches alone; None when the secret must be read."""
        key = (namespace, name)
        secret = self._cache.get(key)
        if secret is not None:
            if secret.problem:
                problems.append(secret.problem)
            return secret.store
        if key in self._missing:
            problems.append(f"pull secret {namespace}/{name} not found")
            return _NO_CREDENTIALS
        return None

    def _names(
        self, account: _Account, secret_names: Iterable[str], problems: list[str]
    ) -> list[str]:
        """The secrets to read: the account's, then the pod's, each once, at most
        ``max_secrets`` (the cut is a problem worth a warning, as are names too long to read)."""
        names = list(dict.fromkeys([*account.names, *secret_names]))
        readable = [n for n in names if len(n) <= MAX_NAME]
        too_long = account.too_long + len(names) - len(readable)
        if too_long:
            names_were = "name was" if too_long == 1 else "names were"
            problems.append(
                f"{too_long} pull secret {names_were} skipped: longer than {MAX_NAME} "
                "characters, no Secret has one"
            )
        # The account's names past its kept ones are counted, not known: a pod naming one of
        # them again is counted twice (the number only tells how much was left out).
        listed = len(readable) + account.more
        if listed > self._max_secrets:
            problems.append(
                f"only the first {self._max_secrets} of {listed} pull secrets were read"
            )
        return readable[: self._max_secrets]

    def held(
        self, namespace: str, secret_names: Iterable[str], service_account: str
    ) -> tuple[registry.CredentialStore, list[str]] | None:
        """``for_pod``'s answer when everything it reads is cached, without awaiting anything
        (a warm review needs no timer or task for it); None when something must be read."""
        problems: list[str] = []
        stores: list[registry.CredentialStore] = []
        if self._global:
            held = self._held_store(*self._global, problems)
            if held is None:
                return None
            stores.append(held)
        account = self._accounts.get((namespace, service_account))
        if account is None:
            return None
        for name in self._names(account, secret_names, problems):
            held = self._held_store(namespace, name, problems)
            if held is None:
                return None
            stores.append(held)
        return _merged(stores), problems

    async def for_pod(
        self, namespace: str, secret_names: Iterable[str], service_account: str
    ) -> tuple[registry.CredentialStore, list[str]]:
        """Credentials for a pod, and problems worth a warning (missing or broken secrets)."""
        secret_names = tuple(secret_names)
        held = self.held(namespace, secret_names, service_account)
        if held is not None:
            return held
        problems: list[str] = []
        stores: list[registry.CredentialStore] = []
        if self._global:
            stores.append(await self._store(*self._global, problems))
        account = await self._account_secrets(namespace, service_account, problems)
        names = self._names(account, secret_names, problems)
        slots = asyncio.Semaphore(self._concurrency)

        async def read(name: str) -> tuple[registry.CredentialStore, list[str]]:
            found: list[str] = []
            async with slots:
                return await self._store(namespace, name, found), found

        # gather keeps the order: later secrets win in the merge, and problems read in order.
        for store, found in await asyncio.gather(*(read(name) for name in names)):
            stores.append(store)
            problems.extend(found)
        return _merged(stores), problems
