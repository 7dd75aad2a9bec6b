"""The scheduling gate: removed in the webhook's own patch once decided, kept (or added) while
undecided, and decided in the background by the GateKeeper (fake API, real admission)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import jsonpatch
import pytest

from archwarden import gatekeeper, kube, metrics, pod_store, policy, settings
from archwarden import registry as registry_settings
from tests.operator.test_admission_core import HOST, NODES, Registry, engine

MIXED = policy.nodes_from_platforms(["linux/amd64", "linux/arm64", "linux/ppc64le"])
GATE = {"name": policy.GATE}


def pod(image: str, gates: list[dict[str, str]] | None = None, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "p",
            "namespace": "team",
            "uid": "u1",
            "creationTimestamp": "2026-01-01T00:00:00Z",
        },
        "spec": {"containers": [{"name": "c", "image": image}], **spec},
    }
    if gates is not None:
        body["spec"]["schedulingGates"] = gates
    return body


def gates(mode: str) -> settings.SchedulingGateSettings:
    return settings.SchedulingGateSettings(mode=mode, retry_seconds=0.05)


def applied(body: dict[str, Any], ops: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = jsonpatch.apply_patch(body, [dict(op) for op in ops])
    return result


async def test_a_decided_pod_loses_the_gate_in_the_patch_that_adds_its_affinity() -> None:
    review = engine(Registry(), MIXED, scheduling_gates=gates("policy"))
    body = pod(f"{HOST}/team/web:1", [{"name": "other.io/gate"}, GATE])
    outcome = await review.review(body, operation="CREATE", mutate=True, webhook="mutate-pods")
    assert outcome.allowed and outcome.decided and outcome.releases_gate
    after = applied(body, outcome.patch)
    assert after["spec"]["schedulingGates"] == [{"name": "other.io/gate"}]
    terms = after["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]["nodeSelectorTerms"]
    assert terms == [
        {
            "matchExpressions": [
                {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64", "arm64"]}
            ]
        }
    ]


async def test_an_undecided_pod_keeps_the_policys_gate() -> None:
    down = Registry()
    down.down = True
    review = engine(down, MIXED, scheduling_gates=gates("policy"))
    body = pod(f"{HOST}/team/web:1", [GATE])
    outcome = await review.review(body, operation="CREATE", mutate=True, webhook="mutate-pods")
    assert outcome.allowed and not outcome.decided
    assert applied(body, outcome.patch)["spec"]["schedulingGates"] == [GATE]


async def test_webhook_mode_adds_the_gate_only_when_it_cannot_decide() -> None:
    down = Registry()
    down.down = True
    review = engine(down, MIXED, scheduling_gates=gates("webhook"))
    body = pod(f"{HOST}/team/web:1")
    outcome = await review.review(body, operation="CREATE", mutate=True, webhook="mutate-pods")
    assert applied(body, outcome.patch)["spec"]["schedulingGates"] == [GATE]
    # Bound to a node by name: the API refuses gates there.
    bound = pod(f"{HOST}/team/web:1", nodeName="n1")
    outcome = await review.review(bound, operation="CREATE", mutate=True, webhook="mutate-pods")
    assert "schedulingGates" not in applied(bound, outcome.patch)["spec"]
    # Decided: nothing to hold.
    up = engine(Registry(), MIXED, scheduling_gates=gates("webhook"))
    outcome = await up.review(body, operation="CREATE", mutate=True, webhook="mutate-pods")
    assert "schedulingGates" not in applied(body, outcome.patch)["spec"]


async def test_gates_off_touches_no_gate() -> None:
    review = engine(Registry(), MIXED)
    body = pod(f"{HOST}/team/web:1", [GATE])
    outcome = await review.review(body, operation="CREATE", mutate=True, webhook="mutate-pods")
    assert applied(body, outcome.patch)["spec"]["schedulingGates"] == [GATE]


async def test_too_many_images_is_undecided() -> None:
    review = engine(Registry(), MIXED, scheduling_gates=gates("policy"))
    limits = dataclasses.replace(review.config.limits, max_images_per_review=1)
    review.config = dataclasses.replace(review.config, limits=limits)
    body = pod(f"{HOST}/team/web:1", [GATE])
    body["spec"]["containers"].append({"name": "d", "image": f"{HOST}/team/legacy:1"})
    outcome = await review.review(body, operation="CREATE", mutate=True, webhook="mutate-pods")
    assert outcome.allowed and not outcome.decided and outcome.reason == "TooManyImages"
    assert not outcome.releases_gate


# -- the GateKeeper -----------------------------------------------------------------------------


class FakeApi:
    """The API server's side of gated pods: read, JSON-patch (with test), Events."""

    def __init__(self, *pods: dict[str, Any]) -> None:
        self.pods = {(p["metadata"]["namespace"], p["metadata"]["name"]): p for p in pods}
        self.events: list[tuple[str, str, str]] = []
        self.patches = 0

    async def read(self, namespace: str, name: str) -> Mapping[str, Any]:
        if (namespace, name) not in self.pods:
            raise LookupError(name)
        return self.pods[(namespace, name)]

    async def patch(self, namespace: str, name: str, ops: Sequence[Mapping[str, Any]]) -> None:
        try:
            self.pods[(namespace, name)] = applied(self.pods[(namespace, name)], ops)
        except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
            raise kube.PatchConflict(str(exc)) from None
        self.patches += 1

    def post(self, target: Mapping[str, Any], type: str, reason: str, message: str) -> None:
        self.events.append((type, reason, message))


def keeper(api: FakeApi, registry: Registry, nodes: list[policy.Node], **config: Any) -> Any:
    review = engine(registry, nodes, scheduling_gates=gates("policy"), **config)
    # engine() caches failures for the default failureTTL; the configured one applies here.
    review.resolver = registry_settings.Resolver(review.resolver.client, review.config.cache)
    return gatekeeper.GateKeeper(
        review, api.read, api.patch, api.post, metrics.Metrics(), gates("policy")
    )


def seen(keeper: gatekeeper.GateKeeper, api: FakeApi) -> None:
    for body in api.pods.values():
        keeper.pod_changed(pod_store.project(body))


async def test_a_held_pod_gets_its_affinity_and_loses_its_gate() -> None:
    api = FakeApi(pod(f"{HOST}/team/web:1", [GATE]))
    gk = keeper(api, Registry(), MIXED)
    seen(gk, api)
    assert ("team", "p") in gk.held
    await gk.decide("team", "p")
    after = api.pods[("team", "p")]
    assert "schedulingGates" not in after["spec"] or after["spec"]["schedulingGates"] == []
    assert after["spec"]["affinity"]["nodeAffinity"]
    assert gk.held == {}
    assert ("Normal", "NodeAffinityInjected") in [(t, r) for t, r, _ in api.events]


async def test_a_pod_no_node_can_run_keeps_its_gate_with_an_event() -> None:
    api = FakeApi(pod(f"{HOST}/team/legacy:1", [GATE]))
    gk = keeper(api, Registry(), NODES)  # arm64 and ppc64le only; legacy is amd64
    seen(gk, api)
    await gk.decide("team", "p")
    assert api.pods[("team", "p")]["spec"]["schedulingGates"] == [GATE]
    assert api.patches == 0
    (kind, reason, message), *_ = api.events
    assert (kind, reason) == ("Warning", "ArchitectureMismatch")
    assert "stays gated" in message
    assert gk.held[("team", "p")].reason == "ArchitectureMismatch"
    gk._tick()
    assert gk.metrics.pods_gated.labels("ArchitectureMismatch")._value.get() == 1
    assert gk.metrics.gated_oldest._value.get() > 0


async def test_registry_down_keeps_the_gate_and_retries_until_it_answers() -> None:
    api = FakeApi(pod(f"{HOST}/team/web:1", [GATE]))
    registry = Registry()
    registry.down = True
    # Failures are cached (cache.failureTTL); a short one lets the retry reach the registry.
    gk = keeper(api, registry, MIXED, cache=registry_settings.CacheSettings(failure_ttl=0.01))
    seen(gk, api)
    await gk.decide("team", "p")
    held = gk.held[("team", "p")]
    assert held.reason == "ImageInspectionFailed" and held.due > 0
    assert api.pods[("team", "p")]["spec"]["schedulingGates"] == [GATE]
    registry.down = False

    async def ready() -> None:
        return None

    task = asyncio.create_task(gk.run(ready))
    try:
        for _ in range(100):
            if not gk.held:
                break
            await asyncio.sleep(0.05)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert gk.held == {}
    assert api.pods[("team", "p")]["spec"].get("schedulingGates", []) == []


async def test_capacity_that_can_run_it_releases_a_held_pod() -> None:
    api = FakeApi(pod(f"{HOST}/team/legacy:1", [GATE]))
    nodes = list(NODES)
    gk = keeper(api, Registry(), nodes)
    seen(gk, api)
    await gk.decide("team", "p")
    assert ("team", "p") in gk.held
    nodes.extend(policy.nodes_from_platforms(["linux/amd64"]))
    gk.capacity_changed()
    key = await asyncio.wait_for(gk._queue.get(), 1)
    await gk.decide(*key)
    assert gk.held == {}
    terms = api.pods[("team", "p")]["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]["nodeSelectorTerms"]
    assert terms[0]["matchExpressions"][0]["values"] == ["amd64"]


async def test_a_gated_pod_with_its_own_terms_is_only_narrowed() -> None:
    # Two alternatives (amd64; the arm64 node that runs 32-bit arm) cannot be crossed with the
    # pod's own term once it exists: the widest alone is appended.
    arm32 = policy.Node(
        "arm-0",
        "linux",
        "arm64",
        labels=(("kubernetes.io/arch", "arm64"), ("archwarden.io/runs-arm32", "true")),
    )
    arm = policy.Node("arm-1", "linux", "arm64", labels=(("kubernetes.io/arch", "arm64"),))
    amd = [
        policy.Node(f"amd-{i}", "linux", "amd64", labels=(("kubernetes.io/arch", "amd64"),))
        for i in range(2)
    ]
    own = {"matchExpressions": [{"key": "team", "operator": "DoesNotExist"}]}
    body = pod(
        f"{HOST}/team/web:1",
        [GATE],
        affinity={
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [own]}
            }
        },
    )
    registry = Registry()
    api = FakeApi(body)
    gk = keeper(api, registry, [arm32, arm, *amd])
    seen(gk, api)
    # web is amd64 + arm64; make it amd64 + arm/v7 for this test
    from tests.operator import test_admission_core as core

    saved = dict(core.DOCS)
    core.DOCS["team/web"] = core._index(("linux", "amd64"), ("linux", "arm"))
    try:
        await gk.decide("team", "p")
    finally:
        core.DOCS.clear()
        core.DOCS.update(saved)
    terms = api.pods[("team", "p")]["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]["nodeSelectorTerms"]
    assert len(terms) == 1
    assert terms[0]["matchExpressions"] == [
        own["matchExpressions"][0],
        {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]},
    ]


@pytest.mark.parametrize("gone", ["deleted", "released"])
async def test_a_pod_deleted_or_released_elsewhere_is_dropped(gone: str) -> None:
    api = FakeApi(pod(f"{HOST}/team/web:1", [GATE]))
    gk = keeper(api, Registry(), MIXED)
    seen(gk, api)
    if gone == "deleted":
        del api.pods[("team", "p")]
    else:
        api.pods[("team", "p")]["spec"]["schedulingGates"] = []
    await gk.decide("team", "p")
    assert gk.held == {} and api.patches == 0


def test_retries_that_come_due_together_start_a_bounded_number_per_tick() -> None:
    api = FakeApi()
    gk = keeper(api, Registry(), MIXED)
    for i in range(50):
        gk.held[("team", f"p{i}")] = gatekeeper._Held(since=0.0, due=1.0)
    gk._tick()
    assert gk._queue.qsize() == gk.config.max_concurrent * gatekeeper.RETRIES_PER_WORKER == 20
    # The rest start on the next ticks; nothing is queued twice.
    gk._tick()
    gk._tick()
    assert gk._queue.qsize() == 50


@pytest.mark.parametrize("failure_policy", ["open", "closed"])
async def test_a_held_pod_with_too_many_images_follows_the_failure_policy(
    failure_policy: str,
) -> None:
    body = pod(f"{HOST}/team/web:1", [GATE])
    body["spec"]["containers"].append({"name": "d", "image": f"{HOST}/team/legacy:1"})
    api = FakeApi(body)
    gk = keeper(api, Registry(), MIXED, failure_policy=failure_policy)
    limits = dataclasses.replace(gk.review.config.limits, max_images_per_review=1)
    gk.review.config = dataclasses.replace(gk.review.config, limits=limits)
    seen(gk, api)
    await gk.decide("team", "p")
    after = api.pods[("team", "p")]
    reasons = [reason for _, reason, _ in api.events]
    if failure_policy == "open":
        # Admitted unchecked, as the webhook would: released, and said so on the pod.
        assert not after["spec"].get("schedulingGates") and gk.held == {}
        assert reasons == ["ImageInspectionFailed"]
    else:
        assert after["spec"]["schedulingGates"] == [GATE] and api.patches == 0
        assert gk.held[("team", "p")].reason == "TooManyImages"
        assert reasons == ["ImageInspectionFailed"]
