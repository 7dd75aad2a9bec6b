"""Registry request counts and resolution latency, against a real local distribution 2.8.

Run: `make bench` or `.venv/bin/python bench/registry.py`. Every HTTP request is counted on the
wire by a counting proxy in front of the registry (and by the token server for token GETs).
The baseline, measured in the same run, is the same client without the cache layer.
"""

from __future__ import annotations

import asyncio
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.images import Seeder
from tests.support.registry import CountingProxy, RegistryServer, start_registry

from archwarden import registry

CONCURRENT = 200
LATENCY_SAMPLES = 200


def settings_for(host: str, server: RegistryServer | None = None) -> registry.ClientSettings:
    hosts = [host]
    if server is not None and server.token_server is not None:
        # The bench token server is plain HTTP on its own port: another origin, so it gets
        # credentials only as a configured insecure registry.
        hosts.append(f"127.0.0.1:{server.token_server.port}")
    return registry.ClientSettings(
        registries={h: registry.RegistrySettings(insecure=True) for h in hosts}
    )


def credentials_for(host: str, user: str | None, password: str | None) -> registry.CredentialStore:
    if user is None:
        return registry.CredentialStore()
    return registry.CredentialStore(
        {host: registry.Credential(username=user, password=password or "")}
    )


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))
    return ordered[index]


async def measure(mode: str, workdir: Path) -> list[str]:
    shm = Path(tempfile.mkdtemp(prefix="archwarden-bench-", dir="/dev/shm"))
    server = start_registry(workdir / mode, mode, data_dir=shm)
    proxy = CountingProxy(server).start()
    lines: list[str] = []
    try:
        seeder = Seeder(server)
        for i in range(CONCURRENT + 3):
            seeder.push_multiarch(f"bench/multi{i}", "1", ["linux/amd64", "linux/arm64"])
        seeder.push_image("bench/single", "1", "linux/arm64")
        seeder.close()
        tokens = server.token_server

        def wire() -> tuple[int, int]:
            return len(proxy.records), tokens.count("GET") if tokens else 0

        def used(before: tuple[int, int]) -> str:
            after = wire()
            registry_requests = after[0] - before[0]
            token_requests = after[1] - before[1]
            text = f"{registry_requests} registry"
            if tokens:
                text += f" + {token_requests} token"
            return text

        host = proxy.host
        creds = credentials_for(host, server.username, server.password)
        async with registry.RegistryClient(settings_for(host, server), creds) as client:
            resolver = registry.Resolver(client)
            before = wire()
            await resolver.resolve(f"{host}/bench/multi0:1")
            lines.append(f"{mode:6} index, first contact with the registry : {used(before)}")
            before = wire()
            await resolver.resolve(f"{host}/bench/multi1:1")
            lines.append(f"{mode:6} index, cold (registry already known)    : {used(before)}")
            before = wire()
            await resolver.resolve(f"{host}/bench/single:1")
            lines.append(f"{mode:6} single-arch, cold                       : {used(before)}")
            before = wire()
            await resolver.resolve(f"{host}/bench/multi1:1")
            lines.append(f"{mode:6} warm (cached)                           : {used(before)}")

            before = wire()
            await asyncio.gather(
                *(resolver.resolve(f"{host}/bench/multi2:1") for _ in range(CONCURRENT))
            )
            lines.append(
                f"{mode:6} {CONCURRENT} concurrent, one new tag, cached    : {used(before)}"
            )
            before = wire()
            await asyncio.gather(
                *(client.resolve(f"{host}/bench/multi3:1") for _ in range(CONCURRENT))
            )
            lines.append(
                f"{mode:6} {CONCURRENT} concurrent, same, no cache (baseline): {used(before)}"
            )

        # Latency straight to the registry (the counting proxy would dominate the figures).
        direct = credentials_for(server.host, server.username, server.password)
        async with registry.RegistryClient(settings_for(server.host, server), direct) as client:
            resolver = registry.Resolver(client)
            await resolver.resolve(f"{server.host}/bench/multi1:1")
            warm: list[float] = []
            for _ in range(LATENCY_SAMPLES):
                started = time.perf_counter()
                await resolver.resolve(f"{server.host}/bench/multi1:1")
                warm.append(time.perf_counter() - started)
            cold: list[float] = []
            for i in range(4, 4 + CONCURRENT - 1):
                started = time.perf_counter()
                await resolver.resolve(f"{server.host}/bench/multi{i}:1")
                cold.append(time.perf_counter() - started)
            lines.append(
                f"{mode:6} latency warm p50/p99 {percentile(warm, 50) * 1e6:.0f}/"
                f"{percentile(warm, 99) * 1e6:.0f} us; cold index p50/p99 "
                f"{percentile(cold, 50) * 1e3:.1f}/{percentile(cold, 99) * 1e3:.1f} ms "
                f"(mean {statistics.mean(cold) * 1e3:.1f} ms)"
            )
    finally:
        proxy.stop()
        server.stop()
        shutil.rmtree(shm, ignore_errors=True)
    return lines


async def main() -> None:
    with tempfile.TemporaryDirectory(prefix="archwarden-bench-") as tmp:
        for mode in ("plain", "token"):
            for line in await measure(mode, Path(tmp)):
                print(line)


if __name__ == "__main__":
    asyncio.run(main())
