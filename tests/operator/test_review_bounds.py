"""Work per review is bounded: distinct images, resolutions at once, and nothing more is resolved
once the outcome is decided. A fake registry behind MockTransport, real policy."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Any

import httpx

from archwarden import admission, policy, registry, settings
from tests.operator.test_admission_core import DOCS, HOST, OCI_INDEX, _digest

NODES = policy.nodes_from_platforms(["linux/arm64", "linux/arm64"])
MULTI = DOCS["team/web"]  # linux/amd64 and linux/arm64
AMD64_ONLY = DOCS["team/legacy"]


class SlowRegistry:
    """Every repository is the multi-arch index after ``delay``; some answer differently."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.fast: dict[str, httpx.Response] = {}
        self.in_flight = 0
        self.most_in_flight = 0
        self.started = 0
        self.finished = 0

    async def handler(self, request: httpx.Request) -> httpx.Response:
        repo = request.url.path.split("/v2/")[1].split("/manifests/")[0]
        if repo in self.fast:
            return self.fast[repo]
        self.started += 1
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay)
        finally:
            self.in_flight -= 1
        self.finished += 1
        headers = {"Content-Type": OCI_INDEX, "Docker-Content-Digest": _digest(MULTI)}
        return httpx.Response(200, content=MULTI, headers=headers)


def index_response(body: bytes) -> httpx.Response:
    return httpx.Response(
        200,
        content=body,
        headers={"Content-Type": OCI_INDEX, "Docker-Content-Digest": _digest(body)},
    )


def engine(fake: SlowRegistry, **config: Any) -> admission.Admission:
    cfg = settings.Settings(registries={HOST: registry.RegistrySettings()}, **config)
    client = registry.RegistryClient(
        cfg.client_settings(), transport=httpx.MockTransport(fake.handler)
    )
    return admission.Admission(cfg, registry.Resolver(client), lambda: list(NODES))


def pod(*images: str) -> dict[str, Any]:
    containers = [{"name": f"c{i}", "image": image} for i, image in enumerate(images)]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": "team"},
        "spec": {"containers": containers},
    }


def images(count: int) -> list[str]:
    return [f"{HOST}/team/app{i}:1" for i in range(count)]


async def test_too_many_images_with_failure_policy_closed_deny_in_one_line() -> None:
    fake = SlowRegistry()
    eng = engine(fake, failure_policy="closed")
    outcome = await eng.review(pod(*images(65)), operation="CREATE")
    assert not outcome.allowed
    assert outcome.message == (
        "the pod has 65 distinct images, more than limits.maxImagesPerReview (64); "
        "images were not checked (failure policy closed)"
    )
    assert fake.started == 0


async def test_too_many_images_with_failure_policy_open_admit_with_one_warning() -> None:
    fake = SlowRegistry()
    eng = engine(fake, limits=settings.LimitsSettings(max_images_per_review=3))
    # Repeats of one image count once.
    assert (await eng.review(pod(*images(3), *images(3)), operation="CREATE")).warnings == ()
    outcome = await eng.review(pod(*images(4)), operation="CREATE")
    assert outcome.allowed and outcome.label == "warned"
    assert outcome.warnings == (
        "the pod has 4 distinct images, more than limits.maxImagesPerReview (3); "
        "admitted without a platform check",
    )
    assert [e.reason for e in outcome.events] == ["ImageInspectionFailed"]


async def test_resolutions_of_one_review_are_bounded() -> None:
    fake = SlowRegistry(delay=0.05)
    eng = engine(fake, limits=settings.LimitsSettings(max_concurrent_resolutions=4))
    outcome = await eng.review(pod(*images(20)), operation="CREATE")
    assert outcome.allowed and outcome.warnings == ()
    assert fake.finished == 20
    assert fake.most_in_flight == 4


async def test_a_closed_failure_cancels_the_images_still_resolving() -> None:
    fake = SlowRegistry(delay=10)
    fake.fast["team/gone"] = httpx.Response(404, json={"errors": [{"code": "MANIFEST_UNKNOWN"}]})
    eng = engine(fake, failure_policy="closed")
    started = time.perf_counter()
    outcome = await eng.review(pod(*images(5), f"{HOST}/team/gone:1"), operation="CREATE")
    assert time.perf_counter() - started < 1.0
    assert not outcome.allowed
    assert "could not inspect image registry.test/team/gone:1" in outcome.message
    await asyncio.sleep(0.1)  # let the cancellations reach the fake registry
    assert fake.in_flight == 0 and fake.finished == 0


async def test_a_mismatch_decides_without_waiting_for_slow_images() -> None:
    fake = SlowRegistry(delay=10)
    fake.fast["team/legacy"] = index_response(AMD64_ONLY)
    eng = engine(fake)
    started = time.perf_counter()
    outcome = await eng.review(pod(*images(5), f"{HOST}/team/legacy:1"), operation="CREATE")
    assert time.perf_counter() - started < 1.0
    assert not outcome.allowed and outcome.label == "denied"
    assert outcome.message.startswith("image registry.test/team/legacy:1 supports linux/amd64 only")
    await asyncio.sleep(0.1)
    assert fake.in_flight == 0


async def test_open_failures_still_wait_for_the_other_images() -> None:
    fake = SlowRegistry(delay=0.05)
    fake.fast["team/gone"] = httpx.Response(404, json={"errors": [{"code": "MANIFEST_UNKNOWN"}]})
    outcome = await engine(fake).review(pod(*images(3), f"{HOST}/team/gone:1"), operation="CREATE")
    assert outcome.allowed and fake.finished == 3


async def test_pull_secrets_are_read_within_the_budget() -> None:
    async def stuck(
        _namespace: str, _names: Iterable[str], _account: str
    ) -> tuple[registry.CredentialStore, list[str]]:
        await asyncio.sleep(30)
        raise AssertionError("never reached")

    eng = engine(SlowRegistry(), webhook=settings.WebhookSettings(budget_seconds=0.3))
    eng.credentials = stuck
    started = time.perf_counter()
    outcome = await eng.review(pod(*images(2)), operation="CREATE")
    assert time.perf_counter() - started < 0.8
    assert outcome.allowed
    # Half the budget at most for secrets: the registry still had time to answer.
    assert outcome.warnings == (
        "archwarden: pull secrets not read within 0.15s; images resolved without them",
    )
