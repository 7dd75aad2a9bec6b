"""/healthz keeps answering while a review with many images runs against a slow registry.

The registry is an aiohttp server on 127.0.0.1 that answers every manifest after a delay with a
wide index; the health server and the admission core share one event loop, as in ``archwarden
run``. /healthz is timed from another thread, so a blocked loop shows up as latency.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time

import httpx
from aiohttp import web

from archwarden import admission, metrics, policy, registry, serving, settings
from tests.registry.faults import digest, fault_server
from tests.support.registry import free_port

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
# Wide: the most children an index may list, each with its platform (no child fetches).
WIDE_INDEX = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": f"sha256:{i:064x}",
                "size": 1,
                "platform": {"os": "linux", "architecture": "arm64" if i % 2 else "amd64"},
            }
            for i in range(256)
        ],
    }
).encode()
REGISTRY_DELAY = 0.1
BUDGET = 1.5


class HealthProbe(threading.Thread):
    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.samples: list[tuple[float, float]] = []
        """(when sent, seconds to answer)"""
        self.done = threading.Event()

    def during(self, start: float, end: float) -> list[float]:
        return [seconds for when, seconds in self.samples if start <= when <= end]

    def run(self) -> None:
        with httpx.Client(timeout=5) as client:
            while not self.done.is_set():
                started = time.perf_counter()
                assert client.get(self.url).status_code == 200
                self.samples.append((started, time.perf_counter() - started))
                self.done.wait(0.01)


async def slow_index(request: web.Request) -> web.StreamResponse:
    await asyncio.sleep(REGISTRY_DELAY)
    headers = {"Content-Type": OCI_INDEX, "Docker-Content-Digest": digest(WIDE_INDEX)}
    return web.Response(body=WIDE_INDEX, headers=headers)


def pod(host: str, count: int) -> dict[str, object]:
    containers = [{"name": f"c{i}", "image": f"{host}/team/app{i}:1"} for i in range(count)]
    return {"kind": "Pod", "metadata": {"namespace": "team"}, "spec": {"containers": containers}}


async def test_health_answers_within_100ms_during_many_image_reviews() -> None:
    async with fault_server(slow_index) as fake:
        config = settings.Settings(
            registries={fake.host: registry.RegistrySettings(insecure=True)},
            webhook=settings.WebhookSettings(budget_seconds=BUDGET),
        )
        client = registry.RegistryClient(config.client_settings())
        nodes = policy.nodes_from_platforms(["linux/arm64"])
        meters = metrics.Metrics()
        eng = admission.Admission(config, registry.Resolver(client), lambda: nodes, meters=meters)
        health = serving.HealthServer(meters, asyncio.Event())
        port = free_port()
        await health.start("127.0.0.1", port)
        probe = HealthProbe(f"http://127.0.0.1:{port}/healthz")
        probe.start()
        try:
            await asyncio.sleep(0.2)  # the probe's connection is up before the load starts
            started = time.perf_counter()
            # At the cap, and far past it, at the same time.
            at_cap, past_cap = await asyncio.gather(
                eng.review(pod(fake.host, 64), operation="CREATE"),
                eng.review(pod(fake.host, 3000), operation="CREATE"),
            )
            elapsed = time.perf_counter() - started
            latencies = probe.during(started, started + elapsed)
            await asyncio.sleep(0.1)
        finally:
            probe.done.set()
            await asyncio.to_thread(probe.join, 5)
            await health.stop()
            await client.aclose()
    # Whatever did not answer within the budget is an inspection failure (failure policy open).
    assert at_cap.allowed
    assert past_cap.allowed and "more than limits.maxImagesPerReview" in past_cap.warnings[0]
    assert elapsed < BUDGET + 0.5
    # The 3000-image pod caused none: every request is one of the 64-image pod's, at most
    # once (how many of those the budget reached depends on the machine's load: 58 of 64 were
    # seen on a busy one).
    asked = [seen.path for seen in fake.requests]
    assert set(asked) <= {f"/v2/team/app{i}/manifests/1" for i in range(64)}, asked[-3:]
    assert len(asked) == len(set(asked))
    # Responsive, not merely alive. The 100 ms target is bench/hostile.py's to measure; on a
    # shared two-core machine one probe can wait for the scheduler (247 ms was seen once in
    # CI), so the test asserts what noise cannot explain: nine probes in ten within 100 ms and
    # none near the review's budget (before the limits the loop was blocked for minutes).
    latencies.sort()
    assert len(latencies) > 10, latencies
    assert latencies[int(len(latencies) * 0.9)] < 0.1, latencies[-5:]
    assert latencies[-1] < BUDGET / 3, latencies[-5:]
