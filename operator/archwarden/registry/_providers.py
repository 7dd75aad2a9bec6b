"""Credentials from kubelet credential provider plugins, got as the kubelet gets them
(``pkg/credentialprovider/plugin/plugin.go``, Kubernetes 1.37).

For an image (``host[:port]/path``, no tag or digest: what the kubelet passes), every provider
whose ``matchImages`` covers it is asked, in config order: first its cache (keys tried in the
order image, registry, global), else its binary is run with the config's ``args`` and ``env``
(over archwarden's own environment), a ``CredentialProviderRequest`` on stdin and a
``CredentialProviderResponse`` read from stdout. The answers' ``auth`` keys are then matched
against the image as the kubelet's keyring does (most specific key first, pull secrets' rules);
the first matching entry is the image's credential.

Where this differs from the kubelet, on purpose:
- Bounded: the plugin gets ``timeout`` seconds (the kubelet gives one minute), never more than
  the review has left; its stdout may be at most ``output_bytes`` (a longer answer kills it and
  is refused), stderr is drained up to ``stderr_bytes`` and never shown; the cache is bounded
  in bytes, oldest first.
- A failure is one line naming the plugin, never its output: the kubelet quotes stderr.
- Only JSON answers are read (the kubelet's decoder also takes YAML); decoding is strict as the
  kubelet's (an unknown field is refused).
- One credential per image: the first matching auth entry. The kubelet tries each matching
  entry in turn until a pull succeeds.
- ServiceAccount tokens are not bound to the pod (an admitted pod does not exist yet): they are
  requested for the ServiceAccount and the audience alone (see ``ServiceAccountSource``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import os
import signal
import sys
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from archwarden import reference
from archwarden.registry import _credentials
from archwarden.registry import _exceptions as exc
from archwarden.registry import _provider_config as config

__all__ = [
    "CredentialProviders",
    "Provided",
    "ProviderLimits",
    "ServiceAccount",
    "ServiceAccountSource",
    "image_key",
]

TIMEOUT = 5.0
"""Seconds a plugin may run. ECR, GCP and ACR plugins answer in well under a second once warm
(one HTTPS call to a metadata or token service); the kubelet allows a minute, which no
admission review has."""
OUTPUT_BYTES = 256 * 1024
"""Bytes of a plugin's stdout. Real answers are one to a few kilobytes (a token per auth key);
this leaves a hundredfold while a runaway plugin is stopped early."""
STDERR_BYTES = 64 * 1024
"""Bytes of stderr drained and kept (for nothing but its length): the rest is discarded, so a
chatty plugin never blocks on a full pipe nor fills memory."""
CACHE_BYTES = 4 * 1024 * 1024
"""Bytes of cached answers (``credentialProviders.cacheBytes``)."""
ENTRY_BYTES = 512
"""What one cached answer costs besides its strings: the entry, its key tuple and the
credential objects (an estimate on the safe side)."""
GLOBAL_KEY = "global"
CACHE_KEY_TYPES = ("Image", "Registry", "Global")
RESPONSE_KIND = "CredentialProviderResponse"
REQUEST_KIND = "CredentialProviderRequest"


@dataclasses.dataclass(frozen=True)
class ProviderLimits:
    timeout: float = TIMEOUT
    output_bytes: int = OUTPUT_BYTES
    stderr_bytes: int = STDERR_BYTES
    cache_bytes: int = CACHE_BYTES
    concurrency: int = 4
    """Plugin processes running at once, whatever the number of reviews: a flood of dry runs
    naming distinct images must not fork one plugin each (each waits within its timeout)."""


@dataclasses.dataclass(frozen=True)
class ServiceAccount:
    """What a token provider is told about the pod's ServiceAccount."""

    namespace: str
    name: str
    uid: str
    annotations: Mapping[str, str] = dataclasses.field(default_factory=dict)


class ServiceAccountSource(Protocol):
    """The cluster side of token providers (``kube.ServiceAccountTokens``)."""

    async def account(self, namespace: str, name: str) -> ServiceAccount:
        """The ServiceAccount; raises (any exception, one line) when it cannot be read."""
        ...

    async def token(self, namespace: str, name: str, audience: str) -> str:
        """A token of the ServiceAccount for ``audience`` (TokenRequest), cached as the
        kubelet caches them."""
        ...


@dataclasses.dataclass(frozen=True)
class Provided:
    """Credentials the providers gave for one image, and why some gave none."""

    store: _credentials.CredentialStore
    failures: tuple[exc.CredentialProviderFailed, ...] = ()
    notes: tuple[str, ...] = ()
    """Providers deliberately not run (a ServiceAccount lacks a required annotation...)."""

    @property
    def problems(self) -> list[str]:
        return [str(f) for f in self.failures] + list(self.notes)


def image_key(ref: reference.Reference) -> str:
    """What the kubelet matches and sends: the normalised repository, no tag or digest
    (``docker.io/library/nginx``)."""
    return ref.name


@dataclasses.dataclass(frozen=True)
class _Answer:
    cache_key_type: str
    cache_duration: float | None
    auth: tuple[tuple[str, _credentials.Credential], ...]
    """(auth key as indexed, credential), in the answer's order."""


@dataclasses.dataclass
class _Entry:
    auth: tuple[tuple[str, _credentials.Credential], ...]
    expires: float
    size: int


@dataclasses.dataclass
class _Flight:
    future: asyncio.Future[_Answer]
    waiters: int = 0


class _Failed(Exception):
    """A plugin run that failed; its text is safe to show."""


def _text_size(*texts: str) -> int:
    return sum(sys.getsizeof(t) for t in texts)


def _decode(data: bytes, api_version: str) -> _Answer:
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):
        # Never the decoder's message: it quotes the document, which holds the credentials.
        raise _Failed("its answer is not JSON") from None
    if not isinstance(document, dict):
        raise _Failed("its answer is not a JSON object")
    if document.get("kind") != RESPONSE_KIND:
        raise _Failed(f"its answer's kind is not {RESPONSE_KIND}")
    if document.get("apiVersion") != api_version:
        raise _Failed(f"its answer's apiVersion is not {api_version}")
    unknown = set(document) - {"kind", "apiVersion", "cacheKeyType", "cacheDuration", "auth"}
    if unknown:
        raise _Failed(f"its answer has an unknown field {sorted(unknown)[0]!r}")
    key_type = document.get("cacheKeyType")
    if key_type not in CACHE_KEY_TYPES:
        raise _Failed(f"its answer's cacheKeyType is not one of {', '.join(CACHE_KEY_TYPES)}")
    duration: float | None = None
    if document.get("cacheDuration") is not None:
        try:
            duration = config.parse_duration(document["cacheDuration"])
        except ValueError:
            raise _Failed("its answer's cacheDuration is not a duration") from None
        duration = max(duration, 0.0)
    raw_auth = document.get("auth") or {}
    if not isinstance(raw_auth, dict):
        raise _Failed("its answer's auth is not an object")
    auth: list[tuple[str, _credentials.Credential]] = []
    for key, entry in raw_auth.items():
        if not isinstance(entry, dict) or set(entry) - {"username", "password"}:
            raise _Failed("its answer's auth entries must hold only username and password")
        username, password = entry.get("username", ""), entry.get("password", "")
        if not isinstance(username, str) or not isinstance(password, str):
            raise _Failed("its answer's username and password must be strings")
        auth.append((config.auth_key(str(key)), _credentials.Credential(username, password)))
    return _Answer(str(key_type), duration, tuple(auth))


def _lookup(
    auth: list[tuple[str, _credentials.Credential]], image: str
) -> _credentials.Credential | None:
    """The kubelet keyring's first credential for ``image``: keys in reverse lexical order
    (more specific paths first), earlier providers first among equal keys; a docker.io image
    without a match takes ``index.docker.io``'s."""
    order = sorted({key for key, _ in auth}, reverse=True)
    for key in order:
        if config.matches(key, image):
            return next(c for k, c in auth if k == key)
    domain = image.split("/", 1)[0]
    if domain in ("docker.io", "index.docker.io"):
        return next((c for k, c in auth if k == "index.docker.io"), None)
    return None


class CredentialProviders:
    """The plugins of one ``CredentialProviderConfig``, run from ``bin_dir``."""

    def __init__(
        self,
        providers: config.ProviderConfig,
        bin_dir: str,
        *,
        limits: ProviderLimits | None = None,
        accounts: ServiceAccountSource | None = None,
        clock: Callable[[], float] = time.monotonic,
        environ: Callable[[], Mapping[str, str]] = lambda: os.environ,
    ) -> None:
        self.config = providers
        self.bin_dir = bin_dir
        self.limits = limits or ProviderLimits()
        self.accounts = accounts
        self._clock = clock
        self._environ = environ
        self._cache: OrderedDict[tuple[str, str, str], _Entry] = OrderedDict()
        self._cache_size = 0
        self._flights: dict[tuple[str, str], _Flight] = {}
        self._reaping: set[asyncio.Task[Any]] = set()
        self._slots = asyncio.Semaphore(self.limits.concurrency)
        self.running = 0
        """Plugin processes running now (at most ``limits.concurrency``)."""
        self.runs = 0
        """Plugin executions so far (tests and metrics)."""

    @classmethod
    def from_files(cls, config_path: str, bin_dir: str, **kwargs: Any) -> CredentialProviders:
        """``--image-credential-provider-config`` and ``--image-credential-provider-bin-dir``
        as the kubelet takes them; the bin directory must exist."""
        if not os.path.isdir(bin_dir):
            raise config.InvalidProviderConfig(f"plugin binary directory {bin_dir} does not exist")
        return cls(config.load_provider_config(config_path), bin_dir, **kwargs)

    @property
    def held_bytes(self) -> int:
        return self._cache_size

    # -- the public call ------------------------------------------------------------------------

    async def for_image(
        self, ref: reference.Reference, namespace: str = "", service_account: str = ""
    ) -> Provided:
        """Credentials for ``ref`` from every matching provider (a CredentialStore holding at
        most ``ref``'s own host). A provider that fails is reported, never raised: the image
        may still be readable anonymously, or through another provider."""
        image = image_key(ref)
        auth: list[tuple[str, _credentials.Credential]] = []
        failures: list[exc.CredentialProviderFailed] = []
        notes: list[str] = []
        for provider in self.config.providers:
            if not provider.matches(image):
                continue
            try:
                answer = await self._provide(provider, image, namespace, service_account, notes)
            except _Failed as error:
                failures.append(
                    exc.CredentialProviderFailed(ref.domain, provider.name, str(error), ref.path)
                )
                continue
            auth.extend(answer)
        credential = _lookup(auth, image)
        store = _credentials.CredentialStore({ref.domain: credential} if credential else {})
        return Provided(store, tuple(failures), tuple(notes))

    # -- one provider ---------------------------------------------------------------------------

    async def _provide(
        self,
        provider: config.Provider,
        image: str,
        namespace: str,
        account_name: str,
        notes: list[str],
    ) -> tuple[tuple[str, _credentials.Credential], ...]:
        token = ""
        annotations: dict[str, str] = {}
        account_key = ""
        attributes = provider.token_attributes
        if attributes is not None:
            if not account_name and attributes.require_service_account:
                return ()  # as the kubelet: not run, nothing said
            if account_name:
                if self.accounts is None:
                    notes.append(
                        f"credential provider {provider.name} not run: it needs a "
                        "ServiceAccount token, and none can be requested here"
                    )
                    return ()
                try:
                    account = await self.accounts.account(namespace, account_name)
                except Exception as error:  # one line from the kube side
                    raise _Failed(
                        f"cannot read serviceaccount {namespace}/{account_name}: {error}"
                    ) from None
                for key in attributes.required_annotation_keys:
                    if key not in account.annotations:
                        notes.append(
                            f"credential provider {provider.name} not run: serviceaccount "
                            f"{namespace}/{account_name} has no annotation {key}"
                        )
                        return ()
                    annotations[key] = account.annotations[key]
                for key in attributes.optional_annotation_keys:
                    if key in account.annotations:
                        annotations[key] = account.annotations[key]
                try:
                    token = await self.accounts.token(namespace, account_name, attributes.audience)
                except Exception as error:
                    raise _Failed(
                        f"no token for serviceaccount {namespace}/{account_name}: {error}"
                    ) from None
                parts = [namespace, account_name, account.uid]
                parts += [f"{k}={v}" for k, v in sorted(annotations.items())]
                if attributes.cache_type == "Token":
                    parts += ["token", hashlib.sha256(token.encode()).hexdigest()]
                account_key = json.dumps(parts)
        cached = self._cached(provider.name, image, account_key)
        if cached is not None:
            return cached
        flight_key = (provider.name, json.dumps([image, account_key, _digest(token)]))
        answer = await self._shared(flight_key, provider, image, token, annotations)
        echoed = any(c.password == token for _, c in answer.auth)
        if token and echoed and attributes is not None and attributes.cache_type != "Token":
            raise _Failed(
                "it returned the ServiceAccount token as the password, which needs "
                "tokenAttributes.cacheType: Token"
            )
        self._store(provider, image, account_key, answer)
        return answer.auth

    async def _shared(
        self,
        key: tuple[str, str],
        provider: config.Provider,
        image: str,
        token: str,
        annotations: Mapping[str, str],
    ) -> _Answer:
        """One run for concurrent lookups of the same image (and token); cancelled, and the
        plugin killed, once its last waiter stops waiting (a review's budget ended)."""
        flight = self._flights.get(key)
        if flight is None:
            flight = _Flight(asyncio.ensure_future(self._run(provider, image, token, annotations)))
            self._flights[key] = flight
            flight.future.add_done_callback(lambda f: self._landed(key, f))
        flight.waiters += 1
        try:
            return await asyncio.shield(flight.future)
        finally:
            flight.waiters -= 1
            if flight.waiters == 0 and not flight.future.done():
                flight.future.cancel()

    def _landed(self, key: tuple[str, str], future: asyncio.Future[_Answer]) -> None:
        if self._flights.get(key) is not None and self._flights[key].future is future:
            del self._flights[key]
        if not future.cancelled():
            future.exception()  # retrieved here: its waiters may all have gone

    # -- the cache ------------------------------------------------------------------------------

    def _cached(
        self, name: str, image: str, account_key: str
    ) -> tuple[tuple[str, _credentials.Credential], ...] | None:
        now = self._clock()
        for base in (image, image.split("/", 1)[0], GLOBAL_KEY):
            key = (name, base, account_key)
            entry = self._cache.get(key)
            if entry is None:
                continue
            if now >= entry.expires:
                self._drop(key)
                continue
            return entry.auth
        return None

    def _drop(self, key: tuple[str, str, str]) -> None:
        entry = self._cache.pop(key, None)
        if entry is not None:
            self._cache_size -= entry.size

    def _store(
        self, provider: config.Provider, image: str, account_key: str, answer: _Answer
    ) -> None:
        duration = answer.cache_duration
        if duration is None:
            duration = provider.default_cache_duration
        if duration <= 0:
            return  # 0 means: do not cache (an explicit 0, or no default)
        base = {
            "Image": image,
            "Registry": image.split("/", 1)[0],
            "Global": GLOBAL_KEY,
        }[answer.cache_key_type]
        key = (provider.name, base, account_key)
        size = ENTRY_BYTES + _text_size(provider.name, base, account_key)
        for auth_key, c in answer.auth:
            size += ENTRY_BYTES + _text_size(auth_key, c.username, c.password)
        self._drop(key)
        if size > self.limits.cache_bytes:
            return  # larger than the whole cache: serves this review, is not kept
        while self._cache and self._cache_size + size > self.limits.cache_bytes:
            self._drop(next(iter(self._cache)))
        self._cache[key] = _Entry(answer.auth, self._clock() + duration, size)
        self._cache_size += size

    # -- running the plugin ---------------------------------------------------------------------

    async def _run(
        self, provider: config.Provider, image: str, token: str, annotations: Mapping[str, str]
    ) -> _Answer:
        path = _binary(self.bin_dir, provider.name)
        request: dict[str, Any] = {
            "apiVersion": provider.api_version,
            "kind": REQUEST_KIND,
            "image": image,
        }
        if token:
            request["serviceAccountToken"] = token
        if annotations:
            request["serviceAccountAnnotations"] = dict(annotations)
        env = dict(self._environ())
        env.update(provider.env)  # the config's values win, as in the kubelet
        async with self._slots:
            self.running += 1
            try:
                return await self._exec(path, provider, request, env)
            finally:
                self.running -= 1

    async def _exec(
        self,
        path: str,
        provider: config.Provider,
        request: Mapping[str, Any],
        env: Mapping[str, str],
    ) -> _Answer:
        self.runs += 1
        try:
            process = await asyncio.create_subprocess_exec(
                path,
                *provider.args,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=env,
                start_new_session=True,  # its own process group: a timeout kills its children
            )
        except OSError as error:
            raise _Failed(f"cannot run {path}: {error.strerror or type(error).__name__}") from None
        try:
            async with asyncio.timeout(self.limits.timeout):
                stdout = await self._communicate(process, json.dumps(request).encode())
        except asyncio.CancelledError:
            self._kill(process, reap_later=True)  # the caller is gone: it may not wait more
            raise
        except TimeoutError:
            await self._kill(process)
            raise _Failed(f"no answer within {self.limits.timeout:g}s") from None
        except BaseException:
            await self._kill(process)
            raise
        if process.returncode != 0:
            # stderr is not quoted: plugins print tokens, request dumps and HTTP bodies there.
            raise _Failed(f"exited with status {process.returncode}")
        return _decode(stdout, provider.api_version)

    async def _communicate(self, process: asyncio.subprocess.Process, request: bytes) -> bytes:
        assert process.stdin is not None and process.stdout is not None
        assert process.stderr is not None
        stdout_cap = self.limits.output_bytes

        async def feed(stdin: asyncio.StreamWriter) -> None:
            try:
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    stdin.write(request)
                    await stdin.drain()
            finally:
                stdin.close()

        async def drain(stream: asyncio.StreamReader) -> None:
            kept = 0
            while chunk := await stream.read(65536):
                kept = min(self.limits.stderr_bytes, kept + len(chunk))

        async def read(stream: asyncio.StreamReader) -> bytes:
            chunks: list[bytes] = []
            total = 0
            while chunk := await stream.read(65536):
                total += len(chunk)
                if total > stdout_cap:
                    raise _Failed(f"its answer exceeds {stdout_cap} bytes")
                chunks.append(chunk)
            return b"".join(chunks)

        feeder = asyncio.ensure_future(feed(process.stdin))
        drainer = asyncio.ensure_future(drain(process.stderr))
        try:
            stdout = await read(process.stdout)
            await drainer
            await process.wait()
        finally:
            feeder.cancel()
            drainer.cancel()
            process.stdin.close()
        return stdout

    def _kill(
        self, process: asyncio.subprocess.Process, *, reap_later: bool = False
    ) -> Awaitable[int]:
        """SIGKILL to the plugin's process group; the wait for it, or a background task
        reaping it (``reap_later``: a cancelled caller cannot wait)."""
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                process.kill()
        task = asyncio.ensure_future(process.wait())
        if reap_later:
            self._reaping.add(task)
            task.add_done_callback(self._reaping.discard)
        return task


def _binary(bin_dir: str, name: str) -> str:
    """The plugin's path; a stat, no I/O worth a thread."""
    path = os.path.join(bin_dir, name)
    if not os.path.isfile(path):
        raise _Failed(f"plugin binary {path} does not exist")
    if not os.access(path, os.X_OK):
        raise _Failed(f"plugin binary {path} is not executable")
    return path


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest() if token else ""
