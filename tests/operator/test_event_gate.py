"""Events only for real objects or authenticated callers (no cluster, no HTTP).

A review from a caller the webhook server did not authenticate may be forged: its Events are
posted only about objects found in the cluster, and dropped ones are counted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import pytest

from archwarden import admission, handlers, kube, metrics, settings
from archwarden.kube import _api
from tests.operator.test_admission_core import HOST, Registry, deployment, engine

WARNING = admission.EventNote("Warning", "ArchitectureMismatch", "no node runs linux/amd64")


class Lookups:
    """``object_exists`` for the admission core: answers from a set, and records each call."""

    def __init__(self, *present: str) -> None:
        self.present = set(present)
        self.asked: list[str] = []

    async def exists(self, target: Mapping[str, Any]) -> bool:
        name = str(target["metadata"]["name"])
        self.asked.append(name)
        return name in self.present


def gate(lookups: Lookups) -> admission.Admission:
    core = engine(Registry())
    core.object_exists = lookups.exists
    core.create_settle = 0.0
    return core


def dropped(core: admission.Admission) -> float:
    value = core.metrics.registry.get_sample_value(
        "archwarden_events_dropped_total", {"reason": "unverified_object"}
    )
    return value or 0.0


def outcome(*, allowed: bool = True, authenticated: bool = False) -> admission.Outcome:
    return admission.Outcome(allowed=allowed, events=(WARNING,), authenticated=authenticated)


TARGET = deployment(f"{HOST}/team/web:1")  # named "api"


async def test_an_unverified_review_about_a_missing_object_posts_nothing() -> None:
    lookups = Lookups()
    core = gate(lookups)
    allowed = await core.may_report(
        outcome(), TARGET, operation="UPDATE", reviewed=True, from_api=False
    )
    assert not allowed and lookups.asked == ["api"] and dropped(core) == 1


async def test_an_existing_object_gets_its_event() -> None:
    lookups = Lookups("api")
    core = gate(lookups)
    assert await core.may_report(
        outcome(), TARGET, operation="UPDATE", reviewed=True, from_api=False
    )
    assert dropped(core) == 0


async def test_an_authenticated_review_is_trusted_without_a_lookup() -> None:
    lookups = Lookups()
    core = gate(lookups)
    trusted = outcome(allowed=False, authenticated=True)
    assert await core.may_report(trusted, TARGET, operation="CREATE", reviewed=True, from_api=False)
    assert lookups.asked == [] and dropped(core) == 0


async def test_a_denied_create_is_about_nothing_that_exists() -> None:
    lookups = Lookups("api")
    core = gate(lookups)
    denied = outcome(allowed=False)
    assert not await core.may_report(
        denied, TARGET, operation="CREATE", reviewed=True, from_api=False
    )
    assert lookups.asked == [] and dropped(core) == 1


async def test_a_target_read_from_the_api_needs_no_lookup() -> None:
    # A pod's Deployment, found by reading its ReplicaSet: the API server named it.
    lookups = Lookups()
    core = gate(lookups)
    denied = outcome(allowed=False)
    assert await core.may_report(denied, TARGET, operation="CREATE", reviewed=False, from_api=True)
    assert lookups.asked == []


async def test_an_allowed_create_is_looked_up_once_stored() -> None:
    lookups = Lookups("api")
    core = gate(lookups)
    core.create_settle = 0.05
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await core.may_report(
        outcome(), TARGET, operation="CREATE", reviewed=True, from_api=False
    )
    assert loop.time() - started >= 0.05 and lookups.asked == ["api"]


async def test_without_a_lookup_nothing_unverified_is_posted() -> None:
    core = engine(Registry())
    assert core.object_exists is None
    assert not await core.may_report(
        outcome(), TARGET, operation="UPDATE", reviewed=True, from_api=False
    )
    assert dropped(core) == 1


async def test_review_carries_the_webhook_layers_verdict() -> None:
    core = engine(Registry())
    body = deployment(f"{HOST}/team/web:1")
    assert (await core.review(body, operation="CREATE", authenticated=True)).authenticated
    assert not (await core.review(body, operation="CREATE")).authenticated


# -- the kube layer's lookup ----------------------------------------------------------------------


class Reader:
    """The part of kube.ApiReader that ObjectChecker uses."""

    def __init__(self, objects: dict[tuple[str, str, str], str], delay: float = 0.0) -> None:
        self.objects = objects  # (kind, namespace, name) -> uid
        self.delay = delay
        self.reads = 0
        self.error: Exception | None = None

    def readable(self, kind: str) -> bool:
        return kind in ("Pod", "Deployment")

    async def read(self, kind: str, namespace: str, name: str) -> Mapping[str, Any]:
        self.reads += 1
        await asyncio.sleep(self.delay)
        if self.error is not None:
            raise self.error
        uid = self.objects.get((kind, namespace, name))
        if uid is None:
            raise _api.NotFound(name)
        return {"metadata": {"name": name, "namespace": namespace, "uid": uid}}


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def ref(kind: str, name: str, uid: str = "", namespace: str = "team") -> dict[str, Any]:
    meta = {"name": name, "namespace": namespace, **({"uid": uid} if uid else {})}
    return {"apiVersion": "apps/v1", "kind": kind, "metadata": meta}


def checker(reader: Reader, **kw: Any) -> kube.ObjectChecker:
    return kube.ObjectChecker(reader, **kw)  # type: ignore[arg-type]


async def test_found_objects_are_cached_and_uids_must_match() -> None:
    reader = Reader({("Deployment", "team", "api"): "u-1"})
    objects = checker(reader)
    assert await objects.exists(ref("Deployment", "api"))
    assert await objects.exists(ref("Deployment", "api", uid="u-1"))
    assert not await objects.exists(ref("Deployment", "api", uid="made-up"))
    assert reader.reads == 1


async def test_missing_objects_are_remembered_briefly() -> None:
    clock = Clock()
    reader = Reader({})
    objects = checker(reader, clock=clock)
    assert not await objects.exists(ref("Deployment", "web"))
    assert not await objects.exists(ref("Deployment", "web"))
    assert reader.reads == 1
    reader.objects[("Deployment", "team", "web")] = "u-2"
    clock.now += 5
    assert await objects.exists(ref("Deployment", "web")) and reader.reads == 2


async def test_what_cannot_be_told_is_not_taken_to_exist() -> None:
    reader = Reader({("Deployment", "team", "api"): "u-1"})
    assert not await checker(reader).exists(ref("Rollout", "api"))  # a kind it cannot read
    assert not await checker(reader).exists(ref("Deployment", "api", namespace=""))
    reader.error = _api.ApiUnavailable("HTTP 403 Forbidden")
    assert not await checker(reader).exists(ref("Deployment", "api"))
    slow = Reader({("Deployment", "team", "api"): "u-1"}, delay=1.0)
    assert not await checker(slow, timeout=0.05).exists(ref("Deployment", "api"))


# -- through the handlers' background posting -----------------------------------------------------


class Poster:
    def __init__(self) -> None:
        self.posted: list[tuple[str, str]] = []

    def post(self, target: Mapping[str, Any], type: str, reason: str, message: str) -> None:
        self.posted.append((str(target["metadata"]["name"]), reason))


@pytest.mark.parametrize(("authenticated", "posted"), [(False, []), (True, [("api", "Denied")])])
async def test_a_denied_create_posts_only_for_an_authenticated_caller(
    authenticated: bool, posted: list[tuple[str, str]]
) -> None:
    lookups = Lookups()
    core = gate(lookups)
    rt = handlers.Runtime(settings.Settings(), metrics=metrics.Metrics())
    poster = Poster()
    rt.admission, rt.poster = core, poster  # type: ignore[assignment]
    body = deployment(f"{HOST}/team/legacy:1")
    note = admission.EventNote("Warning", "Denied", "amd64 only")
    result = admission.Outcome(allowed=False, events=(note,), authenticated=authenticated)
    await handlers._post_events(rt, body, result, False, "CREATE")
    assert poster.posted == posted and lookups.asked == []
    assert dropped(core) == (0 if authenticated else 1)
