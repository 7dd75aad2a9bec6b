"""Leader election on a ``coordination.k8s.io/v1`` Lease, with client-go's semantics.

Every replica serves admissions and keeps its watches; only the leader does the background work
that writes to the cluster (the audit and its reports, tag drift, re-evaluation Events, exec
format explanations, gated pods). :class:`Elector` decides who that is:

- a candidate reads the Lease every ``retry_period``; it takes the Lease when nobody holds it,
  when its holder released it (``holderIdentity`` empty), or when the record has not changed
  for ``lease_duration`` as measured by the candidate's own clock since it *observed* the
  change (never by comparing ``renewTime`` with the local clock: the clocks of two nodes may
  disagree, as client-go reasons);
- the leader renews every ``retry_period``; when no renewal succeeds within ``renew_deadline``
  (below ``lease_duration``, so it steps down before anyone may take over), or the Lease names
  someone else, it stops leading at once;
- every write carries the ``resourceVersion`` read (optimistic concurrency): of two candidates
  writing the same version, the API server refuses the second (409);
- a leader stopping gracefully releases the Lease (holder cleared, duration 1 s), so a
  candidate takes over on its next read rather than after ``lease_duration``.

``acquireTime`` and ``renewTime`` are MicroTime (RFC 3339, microseconds, UTC);
``leaseTransitions`` counts changes of holder.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

import aiohttp

from archwarden.kube import _api, _watch

__all__ = [
    "Elector",
    "HttpLeases",
    "LeaseApi",
    "LeaseConflict",
    "LeaseRecord",
    "holder_identity",
    "lease_body",
    "micro_time",
    "record_of",
]

logger = logging.getLogger("archwarden")

API_PATH = "/apis/coordination.k8s.io/v1"
RELEASE_SECONDS = 5.0
"""How long a graceful stop may spend releasing the Lease: past it the Lease simply expires."""
IDENTITY_MAX = 253
"""A holder identity longer than an object name is cut: it is only compared, never parsed."""


class LeaseConflict(RuntimeError):
    """409: the Lease changed since it was read (or was created meanwhile): read it again."""


def holder_identity() -> str:
    """This replica's name in the Lease: the pod's (the chart sets POD_NAME), else host and
    process, so two processes on one machine never share an identity."""
    named = os.environ.get("POD_NAME") or f"{socket.gethostname()}_{os.getpid()}"
    return named[:IDENTITY_MAX]


def micro_time(moment: dt.datetime) -> str:
    """A metav1.MicroTime: RFC 3339 in UTC with exactly six fractional digits."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclasses.dataclass(frozen=True)
class LeaseRecord:
    """What a Lease's spec says; compared whole to notice that its holder renewed it."""

    holder: str = ""
    duration: int = 0
    acquire_time: str = ""
    renew_time: str = ""
    transitions: int = 0


def record_of(body: Mapping[str, Any]) -> LeaseRecord:
    spec = body.get("spec") or {}
    if not isinstance(spec, Mapping):
        return LeaseRecord()

    def number(key: str) -> int:
        value = spec.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) else 0

    return LeaseRecord(
        holder=str(spec.get("holderIdentity") or ""),
        duration=number("leaseDurationSeconds"),
        acquire_time=str(spec.get("acquireTime") or ""),
        renew_time=str(spec.get("renewTime") or ""),
        transitions=number("leaseTransitions"),
    )


def lease_body(
    namespace: str, name: str, record: LeaseRecord, resource_version: str = ""
) -> dict[str, Any]:
    """The whole Lease to create, or to replace (with the version read)."""
    meta: dict[str, Any] = {"name": name, "namespace": namespace}
    if resource_version:
        meta["resourceVersion"] = resource_version
    spec: dict[str, Any] = {
        "leaseDurationSeconds": record.duration,
        "leaseTransitions": record.transitions,
    }
    # An empty holder is released: the API server refuses "" for a MicroTime, so absent then.
    if record.holder:
        spec["holderIdentity"] = record.holder
    if record.acquire_time:
        spec["acquireTime"] = record.acquire_time
    if record.renew_time:
        spec["renewTime"] = record.renew_time
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": meta,
        "spec": spec,
    }


class LeaseApi(Protocol):
    """Three calls on one Lease; ``get`` raises ``NotFound``, writes raise
    :class:`LeaseConflict` on 409, and all raise ``ApiUnavailable`` otherwise."""

    async def get(self, namespace: str, name: str) -> Mapping[str, Any]: ...

    async def create(self, namespace: str, body: Mapping[str, Any]) -> Mapping[str, Any]: ...

    async def replace(
        self, namespace: str, name: str, body: Mapping[str, Any]
    ) -> Mapping[str, Any]: ...


class HttpLeases:
    """:class:`LeaseApi` over the watches' connection (aiohttp): a request is a coroutine, so
    a renewal past its deadline is cancelled, not left running in a thread."""

    def __init__(self, connection: _watch.Connection, timeout: float = 10.0) -> None:
        self._connection = connection
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def _request(
        self, method: str, path: str, what: str, body: Mapping[str, Any] | None = None
    ) -> Mapping[str, Any]:
        if self._session is None or self._session.closed:
            # The watches' keepalive sockets: a Lease renewed over a connection that went
            # silent would otherwise wait for the whole timeout on every try.
            connector = aiohttp.TCPConnector(socket_factory=_watch.keepalive_socket)
            self._session = aiohttp.ClientSession(timeout=self._timeout, connector=connector)
        try:
            async with self._session.request(
                method,
                self._connection.base_url + API_PATH + path,
                json=body,
                headers=self._connection.headers(),
                ssl=self._connection.ssl,
            ) as response:
                if response.status == 404:
                    raise _api.NotFound(what)
                if response.status == 409:
                    raise LeaseConflict(f"{what}: HTTP 409")
                if response.status not in (200, 201):
                    raise _api.ApiUnavailable(f"{what}: HTTP {response.status}")
                result = await response.json()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            # Its pooled connections may all be dead: the next try starts on new ones.
            session, self._session = self._session, None
            await session.close()
            raise _api.ApiUnavailable(f"{what}: {type(exc).__name__}") from None
        except ValueError as exc:
            raise _api.ApiUnavailable(f"{what}: {type(exc).__name__}") from None
        if not isinstance(result, Mapping):
            raise _api.ApiUnavailable(f"{what}: unexpected answer")
        return result

    async def get(self, namespace: str, name: str) -> Mapping[str, Any]:
        path = f"/namespaces/{namespace}/leases/{name}"
        return await self._request("GET", path, f"lease {namespace}/{name}")

    async def create(self, namespace: str, body: Mapping[str, Any]) -> Mapping[str, Any]:
        name = (body.get("metadata") or {}).get("name")
        path = f"/namespaces/{namespace}/leases"
        return await self._request("POST", path, f"creating lease {namespace}/{name}", body)

    async def replace(
        self, namespace: str, name: str, body: Mapping[str, Any]
    ) -> Mapping[str, Any]:
        path = f"/namespaces/{namespace}/leases/{name}"
        return await self._request("PUT", path, f"updating lease {namespace}/{name}", body)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


class Elector:
    """Campaigns for one Lease until cancelled; ``on_change(True)`` when this replica starts
    leading, ``on_change(False)`` the moment it stops (called synchronously, so the caller can
    cancel its leader-only work before anything else runs)."""

    def __init__(
        self,
        api: LeaseApi,
        namespace: str,
        name: str,
        identity: str,
        *,
        lease_duration: int = 15,
        renew_deadline: float = 10.0,
        retry_period: float = 2.0,
        on_change: Callable[[bool], None] = lambda leading: None,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if not lease_duration > renew_deadline > retry_period > 0:
            raise ValueError("expected lease_duration > renew_deadline > retry_period > 0")
        self.api = api
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self.on_change = on_change
        self.clock = clock
        self.now = now
        self.sleep = sleep
        self.leading = False
        self._observed = LeaseRecord()
        self._observed_at = 0.0
        """When (``clock``) the record last changed as far as this replica saw."""
        self._version = ""

    # -- one attempt --------------------------------------------------------------------------

    def _held_by_other(self) -> bool:
        record = self._observed
        return (
            bool(record.holder)
            and record.holder != self.identity
            and self._observed_at + record.duration > self.clock()
        )

    def _observe(self, record: LeaseRecord, version: str) -> None:
        self._version = version
        if record != self._observed:
            self._observed = record
            self._observed_at = self.clock()

    async def try_acquire_or_renew(self) -> bool:
        """One read and at most one write: whether this replica holds the Lease now."""
        stamp = micro_time(self.now())
        try:
            body = await self.api.get(self.namespace, self.name)
        except _api.NotFound:
            record = LeaseRecord(self.identity, self.lease_duration, stamp, stamp, 0)
            try:
                created = await self.api.create(
                    self.namespace, lease_body(self.namespace, self.name, record)
                )
            except LeaseConflict:
                return False  # another candidate created it first
            self._observe(record, _version_of(created))
            return True
        record = record_of(body)
        self._observe(record, _version_of(body))
        if self._held_by_other():
            return False
        mine = record.holder == self.identity
        wanted = LeaseRecord(
            holder=self.identity,
            duration=self.lease_duration,
            acquire_time=record.acquire_time if mine and record.acquire_time else stamp,
            renew_time=stamp,
            transitions=record.transitions if mine else record.transitions + 1,
        )
        try:
            updated = await self.api.replace(
                self.namespace,
                self.name,
                lease_body(self.namespace, self.name, wanted, self._version),
            )
        except LeaseConflict:
            return False  # written by someone else since the read
        self._observe(wanted, _version_of(updated))
        return True

    async def _attempt(self, timeout: float) -> bool:
        # asyncio.timeout, not wait_for: Python 3.11's wait_for loses a cancellation that
        # arrives as the call completes, and a campaign that cannot be cancelled never stops.
        try:
            async with asyncio.timeout(max(timeout, 0.001)):
                return await self.try_acquire_or_renew()
        except (TimeoutError, _api.ApiUnavailable) as exc:
            logger.warning("lease %s/%s: %s", self.namespace, self.name, exc or "timed out")
            return False

    # -- the campaign -------------------------------------------------------------------------

    async def run(self) -> None:
        """Acquire, lead while renewals succeed, and campaign again after losing the Lease."""
        try:
            while True:
                await self._acquire()
                self._set(True)
                await self._renew()
                self._set(False)
        finally:
            self._set(False)

    async def _acquire(self) -> None:
        while True:
            if await self._attempt(self.renew_deadline):
                return
            wait = self.retry_period
            if self._held_by_other():
                # Try again the moment the observed record would expire, not a period later.
                left = self._observed_at + self._observed.duration - self.clock()
                wait = min(wait, max(left, 0.0) + 0.01)
            await self.sleep(wait)

    async def _renew(self) -> None:
        """Returns once this replica no longer leads."""
        while True:
            await self.sleep(self.retry_period)
            deadline = self.clock() + self.renew_deadline
            while not await self._attempt(deadline - self.clock()):
                if self._held_by_other():
                    logger.warning(
                        "lease %s/%s: now held by %s",
                        self.namespace,
                        self.name,
                        self._observed.holder,
                    )
                    return
                left = deadline - self.clock()
                if left <= 0:
                    logger.warning(
                        "lease %s/%s: not renewed within %gs",
                        self.namespace,
                        self.name,
                        self.renew_deadline,
                    )
                    return
                await self.sleep(min(self.retry_period, left))

    def _set(self, leading: bool) -> None:
        if leading == self.leading:
            return
        self.leading = leading
        logger.info(
            "lease %s/%s: %s",
            self.namespace,
            self.name,
            "leading" if leading else "no longer leading",
        )
        self.on_change(leading)

    async def release(self) -> bool:
        """Give the Lease up (graceful stop), after the campaign is cancelled; whether it was
        released. Only when this replica still holds it, with the version it last wrote."""
        if self._observed.holder != self.identity or not self._version:
            return False
        stamp = micro_time(self.now())
        released = LeaseRecord("", 1, stamp, stamp, self._observed.transitions)
        try:
            async with asyncio.timeout(RELEASE_SECONDS):
                await self.api.replace(
                    self.namespace,
                    self.name,
                    lease_body(self.namespace, self.name, released, self._version),
                )
        except (TimeoutError, LeaseConflict, _api.ApiUnavailable, _api.NotFound) as exc:
            logger.warning("lease %s/%s not released: %s", self.namespace, self.name, exc)
            return False
        self._observed = released
        logger.info("lease %s/%s released", self.namespace, self.name)
        return True


def _version_of(body: Mapping[str, Any]) -> str:
    return str((body.get("metadata") or {}).get("resourceVersion") or "")
