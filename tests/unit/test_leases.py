"""The Lease elector against an in-memory API server and a clock the test moves."""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import re
from collections.abc import Mapping
from typing import Any

import kubernetes
import pytest

from archwarden import kube
from archwarden.kube import _api

NAMESPACE, NAME = "archwarden", "archwarden-leader"
MICRO_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


class FakeLeases:
    """One namespace of Leases with resourceVersions, refusing stale writes as the API
    server does (409)."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.version = 0
        self.failing = False
        self.writes: list[str] = []

    def _stored(self, body: Mapping[str, Any]) -> dict[str, Any]:
        self.version += 1
        stored = copy.deepcopy(dict(body))
        stored["metadata"]["resourceVersion"] = str(self.version)
        self.objects[stored["metadata"]["name"]] = stored
        self.writes.append(str(stored["spec"].get("holderIdentity", "")))
        return copy.deepcopy(stored)

    async def get(self, namespace: str, name: str) -> Mapping[str, Any]:
        if self.failing:
            raise _api.ApiUnavailable("lease: HTTP 503")
        if name not in self.objects:
            raise _api.NotFound(name)
        return copy.deepcopy(self.objects[name])

    async def create(self, namespace: str, body: Mapping[str, Any]) -> Mapping[str, Any]:
        if self.failing:
            raise _api.ApiUnavailable("lease: HTTP 503")
        if body["metadata"]["name"] in self.objects:
            raise kube.LeaseConflict("exists")
        assert "resourceVersion" not in body["metadata"]
        return self._stored(body)

    async def replace(
        self, namespace: str, name: str, body: Mapping[str, Any]
    ) -> Mapping[str, Any]:
        if self.failing:
            raise _api.ApiUnavailable("lease: HTTP 503")
        current = self.objects[name]["metadata"]["resourceVersion"]
        if body["metadata"].get("resourceVersion") != current:
            raise kube.LeaseConflict("stale")
        return self._stored(body)

    def spec(self) -> dict[str, Any]:
        return self.objects[NAME]["spec"]


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    def wall(self) -> dt.datetime:
        return dt.datetime(2025, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=self.t)

    async def sleep(self, seconds: float) -> None:
        self.t += seconds
        await asyncio.sleep(0)


def elector(
    api: FakeLeases, clock: Clock, identity: str, changes: list[tuple[float, bool]] | None = None
) -> kube.Elector:
    def on_change(leading: bool) -> None:
        if changes is not None:
            changes.append((clock.t, leading))

    return kube.Elector(
        api,
        NAMESPACE,
        NAME,
        identity,
        lease_duration=15,
        renew_deadline=10,
        retry_period=2,
        on_change=on_change,
        clock=clock,
        now=clock.wall,
        sleep=clock.sleep,
    )


async def test_the_first_candidate_creates_the_lease_and_the_second_waits() -> None:
    api, clock = FakeLeases(), Clock()
    a, b = elector(api, clock, "pod-a"), elector(api, clock, "pod-b")
    assert await a.try_acquire_or_renew()
    assert not await b.try_acquire_or_renew()
    spec = api.spec()
    assert spec["holderIdentity"] == "pod-a"
    assert spec["leaseDurationSeconds"] == 15
    assert spec["leaseTransitions"] == 0
    assert MICRO_TIME.match(spec["acquireTime"]) and MICRO_TIME.match(spec["renewTime"])
    acquired = spec["acquireTime"]
    clock.t += 2
    assert await a.try_acquire_or_renew()
    # A renewal moves renewTime only.
    assert api.spec()["acquireTime"] == acquired
    assert api.spec()["renewTime"] != acquired
    assert api.spec()["leaseTransitions"] == 0
    assert api.writes == ["pod-a", "pod-a"]  # b never wrote


async def test_a_candidate_takes_over_only_a_lease_unchanged_for_its_duration() -> None:
    api, clock = FakeLeases(), Clock()
    a, b = elector(api, clock, "pod-a"), elector(api, clock, "pod-b")
    assert await a.try_acquire_or_renew()
    assert not await b.try_acquire_or_renew()  # b observes the record now
    clock.t += 14.9
    assert not await b.try_acquire_or_renew()
    clock.t += 0.2
    assert await b.try_acquire_or_renew()
    spec = api.spec()
    assert spec["holderIdentity"] == "pod-b"
    assert spec["leaseTransitions"] == 1
    # a, renewing late, finds b's Lease and does not write.
    assert not await a.try_acquire_or_renew()
    assert api.spec()["holderIdentity"] == "pod-b"


async def test_a_renewal_restarts_the_candidates_wait() -> None:
    # Expiry is measured from when the candidate saw the record change, by its own clock.
    api, clock = FakeLeases(), Clock()
    a, b = elector(api, clock, "pod-a"), elector(api, clock, "pod-b")
    assert await a.try_acquire_or_renew()
    assert not await b.try_acquire_or_renew()
    clock.t += 10
    assert await a.try_acquire_or_renew()
    clock.t += 10
    assert not await b.try_acquire_or_renew()  # changed: observed now, 15 s more
    clock.t += 14
    assert not await b.try_acquire_or_renew()
    clock.t += 1.1
    assert await b.try_acquire_or_renew()


async def test_a_stale_write_is_refused_and_not_counted_as_leading() -> None:
    api, clock = FakeLeases(), Clock()
    a, b = elector(api, clock, "pod-a"), elector(api, clock, "pod-b")
    assert await a.try_acquire_or_renew()
    # b read a Lease released by a; a renews in between; b's write carries the old version.
    await a.release()
    real_get = api.get
    read = await real_get(NAMESPACE, NAME)
    assert await a.try_acquire_or_renew()

    async def stale_get(namespace: str, name: str) -> Mapping[str, Any]:
        return copy.deepcopy(dict(read))

    api.get = stale_get  # type: ignore[method-assign]
    assert not await b.try_acquire_or_renew()
    assert api.spec()["holderIdentity"] == "pod-a"


async def test_a_leader_that_cannot_renew_steps_down_within_the_renew_deadline() -> None:
    api, clock = FakeLeases(), Clock()
    changes: list[tuple[float, bool]] = []
    a = elector(api, clock, "pod-a", changes)
    task = asyncio.create_task(a.run())
    for _ in range(20):
        await asyncio.sleep(0)
    assert changes == [(1000.0, True)]
    api.failing = True  # the API server is unreachable from now on
    failed_at = clock.t
    for _ in range(200):
        await asyncio.sleep(0)
        if len(changes) > 1:
            break
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert changes[1][1] is False
    stepped_down = changes[1][0] - failed_at
    # The next renewal starts a retry period later and may take the renew deadline: the
    # leader stops before the Lease (15 s) could pass to anyone else.
    assert stepped_down <= 2 + 10
    assert stepped_down < 15


async def test_a_leader_whose_lease_names_another_holder_steps_down_at_once() -> None:
    api, clock = FakeLeases(), Clock()
    changes: list[tuple[float, bool]] = []
    a = elector(api, clock, "pod-a", changes)
    task = asyncio.create_task(a.run())
    for _ in range(20):
        await asyncio.sleep(0)
    assert a.leading
    api.objects[NAME]["spec"]["holderIdentity"] = "pod-b"  # taken (an operator edited it)
    api.objects[NAME]["metadata"]["resourceVersion"] = "99"
    taken_at = clock.t
    for _ in range(50):
        await asyncio.sleep(0)
        if len(changes) > 1:
            break
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    # At its next renewal (a retry period at most), not its renew deadline.
    assert changes[1][1] is False
    assert changes[1][0] - taken_at <= 2


async def test_a_released_lease_is_taken_at_the_next_read() -> None:
    api, clock = FakeLeases(), Clock()
    a, b = elector(api, clock, "pod-a"), elector(api, clock, "pod-b")
    assert await a.try_acquire_or_renew()
    assert not await b.try_acquire_or_renew()
    assert await a.release()
    spec = api.spec()
    assert "holderIdentity" not in spec
    assert spec["leaseDurationSeconds"] == 1
    assert spec["leaseTransitions"] == 0
    assert await b.try_acquire_or_renew()  # no wait for the 15 s
    assert api.spec()["leaseTransitions"] == 1
    assert not await a.release()  # no longer a's to release


async def test_cancelling_the_campaign_stops_leading_first() -> None:
    api, clock = FakeLeases(), Clock()
    changes: list[tuple[float, bool]] = []
    a = elector(api, clock, "pod-a", changes)
    task = asyncio.create_task(a.run())
    for _ in range(20):
        await asyncio.sleep(0)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert [leading for _, leading in changes] == [True, False]
    assert await a.release()


def test_timings_must_leave_room_to_step_down() -> None:
    with pytest.raises(ValueError):
        kube.Elector(FakeLeases(), NAMESPACE, NAME, "a", lease_duration=10, renew_deadline=10)


def test_the_identity_is_the_pod_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POD_NAME", "archwarden-7c9f-x2")
    assert kube.holder_identity() == "archwarden-7c9f-x2"
    monkeypatch.delenv("POD_NAME")
    assert kube.holder_identity().endswith(f"_{__import__('os').getpid()}")


async def test_the_lease_client_starts_on_new_connections_after_a_silent_one() -> None:
    # A server that accepts and never answers: a connection that went silent.
    silent: list[asyncio.StreamWriter] = []

    async def accept(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        silent.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    configuration = kubernetes.client.Configuration(host=f"http://127.0.0.1:{port}")
    leases = kube.HttpLeases(kube.Connection(configuration), timeout=0.3)
    try:
        with pytest.raises(kube.ApiUnavailable, match="TimeoutError"):
            await leases.get("default", "archwarden-leader")
        # Its pool went with the failure: the next renewal opens a new connection.
        assert leases._session is None
        with pytest.raises(kube.ApiUnavailable):
            await leases.get("default", "archwarden-leader")
        assert len(silent) == 2
    finally:
        if leases._session is not None:
            await leases._session.close()
        for writer in silent:
            writer.close()
        server.close()
        await server.wait_closed()
