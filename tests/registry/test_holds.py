"""A registry that answered 429 is held: lookups on it fail at once, without a request, until
the time it asked for has passed; and a registry can only hold itself (issue 18, item 6).
A real registry never answers 429, so those come from small local servers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web

from archwarden import admission, audit, kube, metrics, pod_store, policy, registry, settings
from archwarden import workload_store as ws
from tests.registry import faults
from tests.support.images import Seeder, unique_repo
from tests.support.registry import RegistryServer

pytestmark = pytest.mark.registry

A_BILLION = "1000000000"


async def throttled(_request: web.Request) -> web.StreamResponse:
    return web.Response(status=429, headers={"Retry-After": A_BILLION})


def insecure(*hosts: str, **per_host: Any) -> dict[str, registry.RegistrySettings]:
    return {h: registry.RegistrySettings(insecure=True, **per_host) for h in hosts}


def deployment(name: str, image: str) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "team", "uid": f"uid-{name}"},
        "spec": {"template": {"spec": {"containers": [{"name": "app", "image": image}]}}},
    }


async def test_an_audit_moves_past_a_registry_that_asked_for_a_billion_seconds(
    plain_registry: RegistryServer, seeder_for: Callable[[Any], Seeder]
) -> None:
    repo = unique_repo("unheld")
    seeder_for(plain_registry).push_multiarch(repo, "1", ["linux/amd64"])
    async with faults.fault_server(throttled) as held:
        cfg = settings.Settings(registries=insecure(held.host, plain_registry.host), mode="enforce")
        inventory = policy.Inventory()
        for node in policy.nodes_from_platforms(["linux/amd64"]):
            inventory.apply(node.name, node)
        meters = metrics.Metrics()
        async with registry.RegistryClient(cfg.client_settings()) as client:
            checker = admission.Admission(
                cfg, registry.Resolver(client, cfg.cache), lambda: inventory, meters=meters
            )
            workloads = ws.WorkloadStore()
            for i in range(64):
                workloads.put(
                    "Deployment", "apps/v1", deployment(f"app{i}", f"{held.host}/team/app{i}:1")
                )
            workloads.put(
                "Deployment", "apps/v1", deployment("unheld", f"{plain_registry.host}/{repo}:1")
            )
            # The audit's own pacing (audit.requestsPerSecond per registry) and deadline.
            auditor = audit.Auditor(
                checker,
                workloads,
                pod_store.PodStore(),
                lambda: inventory,
                poster=None,
                meters=meters,
            )
            started = time.monotonic()
            async with asyncio.timeout(10):  # unheld: 30 s (the lookup deadline) an image
                summary = await auditor.audit_once()
            took = time.monotonic() - started
    assert len(held.requests) == 1  # the 429; the other 63 images were answered by the hold
    assert took < 1.0
    by_name = {r.name: r for r in summary.results}
    assert by_name.pop("unheld").result is kube.Result.PASS  # another registry: unaffected
    assert {r.result for r in by_name.values()} == {kube.Result.ERROR}
    refused = [r.message for r in by_name.values() if "not asked again until" in r.message]
    assert len(refused) == 63
    assert f"registry {held.host}: asked to wait {A_BILLION}s (Retry-After);" in refused[0]


async def test_a_registry_holds_only_itself_not_the_host_it_redirects_to() -> None:
    manifest, config = faults.single_image({"os": "linux", "architecture": "arm64"})

    async def victim_handler(request: web.Request) -> web.StreamResponse:
        if request.path.startswith("/v2/hostile/"):
            return web.Response(status=429, headers={"Retry-After": A_BILLION})
        if "/manifests/" in request.path:
            return faults.manifest_response(manifest)
        return web.Response(body=config)

    async with faults.fault_server(victim_handler) as victim:

        async def hostile_handler(request: web.Request) -> web.StreamResponse:
            raise web.HTTPTemporaryRedirect(f"{victim.url}/v2/hostile{request.path[3:]}")

        async with faults.fault_server(hostile_handler) as hostile:
            client_settings = registry.ClientSettings(
                registries=insecure(hostile.host, victim.host)
            )
            async with registry.RegistryClient(client_settings) as client:
                with pytest.raises(registry.RateLimited):
                    await client.resolve(f"{hostile.host}/team/app:1")
                answer = await client.resolve(f"{victim.host}/team/web:1")
                with pytest.raises(registry.RegistryHeld) as caught:
                    await client.resolve(f"{hostile.host}/team/other:1")
    assert answer.canonical == ["linux/arm64"]
    assert caught.value.registry == caught.value.host == hostile.host
    assert [r.path for r in hostile.requests] == ["/v2/team/app/manifests/1"]
    assert [r.path for r in victim.requests] == [
        "/v2/hostile/team/app/manifests/1",  # the 429, met through the redirect
        "/v2/team/web/manifests/1",
        f"/v2/team/web/blobs/{faults.digest(config)}",
    ]


async def test_a_held_mirror_is_passed_over_for_its_registry() -> None:
    manifest, config = faults.single_image({"os": "linux", "architecture": "s390x"})

    async def upstream_handler(request: web.Request) -> web.StreamResponse:
        if "/manifests/" in request.path:
            return faults.manifest_response(manifest)
        return web.Response(body=config)

    async with (
        faults.fault_server(throttled) as mirror,
        faults.fault_server(upstream_handler) as upstream,
    ):
        registries = {
            **insecure(upstream.host, mirrors=(mirror.url,)),
            **insecure(mirror.host),
        }
        async with registry.RegistryClient(registry.ClientSettings(registries)) as client:
            for name in ("a", "b", "c"):
                answer = await client.resolve(f"{upstream.host}/team/{name}:1")
                assert answer.canonical == ["linux/s390x"]
    assert len(mirror.requests) == 1
    assert len(upstream.requests) == 6


async def test_the_lookup_that_met_a_short_retry_after_asks_again_and_no_other() -> None:
    manifest, config = faults.single_image({"os": "linux", "architecture": "arm64"})

    async def handler(request: web.Request) -> web.StreamResponse:
        if "/manifests/" in request.path and len(server.requests) == 1:
            return web.Response(status=429, headers={"Retry-After": "1"})
        if "/manifests/" in request.path:
            return faults.manifest_response(manifest)
        return web.Response(body=config)

    async with faults.fault_server(handler) as server:
        settings_ = registry.ClientSettings(registries=insecure(server.host))
        async with registry.RegistryClient(settings_) as client:
            first = asyncio.ensure_future(client.resolve(f"{server.host}/team/first:1"))
            for _ in range(500):
                if client.holds.held(server.host) is not None:
                    break  # the 429 is in: the registry is held for a second
                await asyncio.sleep(0.01)
            started = time.monotonic()
            with pytest.raises(registry.RegistryHeld, match="asked to wait 1s"):
                await client.resolve(f"{server.host}/team/second:1")
            assert time.monotonic() - started < 0.1
            assert (await first).canonical == ["linux/arm64"]  # after its second
            assert (await client.resolve(f"{server.host}/team/third:1")).digest
    paths = [r.path.rsplit("/", 2)[0] for r in server.requests]
    assert paths.count("/v2/team/first") == 3  # the 429, the manifest and the config
    assert "/v2/team/second" not in paths
