"""Hostile registries, pods and callers: answer time, peak memory and health under each attack.

Run: `.venv/bin/python bench/hostile.py` (no cluster; everything on 127.0.0.1, about a minute).

The process under test is a subprocess (`bench/hostile.py --target SPEC`): archwarden's HTTPS
WebhookServer with the admission core behind it (kopf's dispatch to a handler replaced by a
direct call to ``Admission.review``), the /healthz server, a real registry client and, for the
pull-secret attack, the real ``kube.ApiReader`` against a fake API server. One subprocess per
attack, so its VmHWM (peak RSS from /proc) belongs to that attack alone.

The hostile servers run in this process, in a thread with their own event loop. Each attack's
review is POSTed over HTTPS to the webhook port while another thread times /healthz every 10 ms.
Targets: every answer within budgetSeconds (3) + 0.5 s, peak RSS under 384 MiB (the chart's
memory limit), /healthz within 100 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import hashlib
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml
from aiohttp import web

ROOT = Path(__file__).resolve().parents[1]
BUDGET = 3.0
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MiB = 1024 * 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# -- the process under test -----------------------------------------------------------------------


async def target(spec: dict[str, Any]) -> None:
    from archwarden import (
        admission,
        certs,
        kube,
        metrics,
        policy,
        registry,
        serving,
        settings,
        webhook_server,
    )

    config = settings.from_mapping(spec["config"])
    meters = metrics.Metrics()
    client = registry.RegistryClient(config.client_settings())
    resolver = registry.Resolver(client, config.cache)
    credentials = None
    if spec.get("kubeconfig"):
        reader = kube.ApiReader(kube.load_api_client(spec["kubeconfig"]))
        credentials = kube.PullSecrets(reader).for_pod
    nodes = policy.nodes_from_platforms(["linux/amd64", "linux/arm64"])
    engine = admission.Admission(
        config, resolver, lambda: nodes, credentials=credentials, meters=meters
    )

    async def decide(data: Any, **_: Any) -> dict[str, Any]:
        request = data["request"]
        outcome = await engine.review(request["object"], operation=request["operation"])
        response: dict[str, Any] = {"uid": request["uid"], "allowed": outcome.allowed}
        if not outcome.allowed:
            response["status"] = {"code": 403, "message": outcome.message}
        if outcome.warnings:
            response["warnings"] = list(outcome.warnings)
        return {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "response": response,
        }

    files = certs.write_dev_certificates(Path(spec["workdir"]))
    server = webhook_server.WebhookServer(
        meters=meters,
        addr="127.0.0.1",
        port=spec["webhook_port"],
        host="127.0.0.1",
        certfile=str(files.cert_file),
        pkeyfile=str(files.key_file),
        cafile=str(files.ca_file),
    )
    health = serving.HealthServer(meters, asyncio.Event())
    await health.start("127.0.0.1", spec["health_port"])
    stop, restart = asyncio.Event(), asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, restart.set)
    async with server:
        configs = server(decide)
        await configs.__anext__()
        # Lag is measured from here: start-up (keys, CA store) is not an attack.
        lag = asyncio.create_task(loop_lag(stop, restart))
        print(json.dumps({"ca_file": str(files.ca_file)}), flush=True)
        await stop.wait()
        print(f"{await lag * 1e3:.1f}", flush=True)
        await configs.aclose()
    await health.stop()
    await client.aclose()


async def loop_lag(stop: asyncio.Event, restart: asyncio.Event) -> float:
    """The event loop's worst lateness waking from a 10 ms sleep, since the attack started
    (``restart``): how long archwarden itself blocked, where the external /healthz probe also
    sees the machine's scheduling noise."""
    loop, worst = asyncio.get_running_loop(), 0.0
    while not stop.is_set():
        if restart.is_set():
            restart.clear()
            worst = 0.0
        before = loop.time()
        await asyncio.sleep(0.01)
        worst = max(worst, loop.time() - before - 0.01)
    return worst


# -- hostile servers (this process, own thread and loop) -----------------------------------------


def small_index() -> bytes:
    entries = [
        {
            "mediaType": OCI_MANIFEST,
            "digest": f"sha256:{i:064x}",
            "size": 1,
            "platform": {"os": "linux", "architecture": arch},
        }
        for i, arch in enumerate(("amd64", "arm64"))
    ]
    return json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}).encode()


def wide_documents() -> tuple[bytes, dict[str, bytes]]:
    """An index of 256 children without platforms, each a 64 KiB manifest: every child must be
    fetched (16 MiB per resolution, the client's byte budget)."""
    children: dict[str, bytes] = {}
    for i in range(256):
        config = {"mediaType": "application/vnd.oci.image.config.v1+json", "size": 2}
        config["digest"] = digest(f"config-{i}".encode())
        body = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": config,
                "layers": [],
                "annotations": {"pad": "x" * (64 * 1024)},
            }
        ).encode()
        children[digest(body)] = body
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {"mediaType": OCI_MANIFEST, "digest": d, "size": len(b)}
                for d, b in children.items()
            ],
        }
    ).encode()
    return index, children


class Hostile:
    """The attack servers, started once in a background thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.hosts: dict[str, str] = {}
        self._runners: list[web.AppRunner] = []
        self._servers: list[asyncio.Server] = []
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def start(self) -> Hostile:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(30)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)

    async def _app(self, name: str, handler: Callable[[web.Request], Awaitable[Any]]) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        self._runners.append(runner)
        self.hosts[name] = f"127.0.0.1:{port}"

    async def _raw(self, name: str, handler: Any) -> None:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        self._servers.append(server)
        self.hosts[name] = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"

    async def _start(self) -> None:
        small = small_index()
        wide, children = wide_documents()
        bomb = gzip.compress(gzip.compress(b"\0" * (256 * MiB)))

        async def slow(_request: web.Request) -> web.Response:
            await asyncio.sleep(0.2)
            headers = {"Content-Type": OCI_INDEX, "Docker-Content-Digest": digest(small)}
            return web.Response(body=small, headers=headers)

        async def wide_index(request: web.Request) -> web.Response:
            reference = request.path.rsplit("/", 1)[-1]
            if reference in children:
                body, media_type = children[reference], OCI_MANIFEST
            else:
                body, media_type = wide, OCI_INDEX
            headers = {"Content-Type": media_type, "Docker-Content-Digest": digest(body)}
            return web.Response(body=body, headers=headers)

        async def bombing(_request: web.Request) -> web.Response:
            headers = {"Content-Type": OCI_INDEX, "Content-Encoding": "gzip, gzip"}
            return web.Response(body=bomb, headers=headers)

        async def api(request: web.Request) -> web.Response:
            await asyncio.sleep(0.001)  # an API server's round trip
            status = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404}
            return web.json_response({**status, "reason": "NotFound"}, status=404)

        async def trickle(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: " + OCI_INDEX.encode() + b"\r\n"
                    b"Content-Length: 100000\r\n\r\n{"
                )
                for _ in range(300):  # 30 s at most per connection
                    await writer.drain()
                    await asyncio.sleep(0.1)
                    writer.write(b" ")
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                writer.close()

        await self._app("slow", slow)
        await self._app("wide", wide_index)
        await self._app("bomb", bombing)
        await self._app("api", api)
        await self._raw("trickle", trickle)

    async def _stop(self) -> None:
        for runner in self._runners:
            await runner.cleanup()
        for server in self._servers:
            server.close()
        for task in asyncio.all_tasks(self.loop):
            if task is not asyncio.current_task():
                task.cancel()


# -- attacks --------------------------------------------------------------------------------------


def pod(images: list[str], **spec: Any) -> dict[str, Any]:
    containers = [{"name": f"c{i}", "image": image} for i, image in enumerate(images)]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "attack", "namespace": "team"},
        "spec": {"containers": containers, **spec},
    }


def review(obj: dict[str, Any]) -> bytes:
    body = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {"uid": "bench", "operation": "CREATE", "object": obj},
    }
    return json.dumps(body).encode()


def attacks(hosts: dict[str, str]) -> list[tuple[str, bytes]]:
    slow, wide, trickle, bomb = hosts["slow"], hosts["wide"], hosts["trickle"], hosts["bomb"]
    padded = pod([f"{slow}/team/big:1"])
    padded["spec"]["containers"][0]["env"] = [
        {"name": f"PAD_{i}", "value": "x" * 1000} for i in range(3000)
    ]
    secrets = [{"name": f"absent-{i}"} for i in range(4000)]
    return [
        ("baseline: 1 image, 0.2 s registry", review(pod([f"{slow}/base/a:1"]))),
        ("many images: 64 at 0.2 s each", review(pod([f"{slow}/m/a{i}:1" for i in range(64)]))),
        ("many images: 3,000", review(pod([f"{slow}/m/b{i}:1" for i in range(3000)]))),
        ("wide index: 16 x 256 x 64 KiB", review(pod([f"{wide}/w/a{i}:1" for i in range(16)]))),
        ("slow trickle: 8 images", review(pod([f"{trickle}/t/a{i}:1" for i in range(8)]))),
        ("compressed bomb: 8 images", review(pod([f"{bomb}/b/a{i}:1" for i in range(8)]))),
        ("big review: 3 MiB pod", review(padded)),
        (
            "pull secrets: 4,000 missing",
            review(pod([f"{slow}/s/a:1"], imagePullSecrets=secrets)),
        ),
    ]


@dataclass
class Row:
    attack: str
    size: int
    status: str
    seconds: float
    rss_mib: float
    health_ms: float
    lag_ms: float


def probe(url: str) -> None:
    """In its own process (no GIL shared with the hostile servers): time GET ``url`` every
    10 ms; the first line on stdin restarts the count (the attack starts), the second stops it
    and prints the worst latency in milliseconds."""
    worst, done = 0.0, threading.Event()

    def poll() -> None:
        nonlocal worst
        with httpx.Client(timeout=2) as client:
            while not done.is_set():
                started = time.perf_counter()
                # A failed probe counts with its full time.
                with contextlib.suppress(httpx.HTTPError):
                    client.get(url).raise_for_status()
                worst = max(worst, time.perf_counter() - started)
                done.wait(0.01)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    while worst == 0.0:  # answered once: the connection is up
        time.sleep(0.01)
    worst = 0.0
    print("ready", flush=True)
    sys.stdin.readline()  # the warm-up review is done
    worst = 0.0
    sys.stdin.readline()
    done.set()
    thread.join(5)
    print(f"{worst * 1e3:.1f}", flush=True)


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_attack(name: str, body: bytes, hosts: dict[str, str], workdir: Path) -> Row:
    workdir.mkdir(parents=True)
    kubeconfig = workdir / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": f"http://{hosts['api']}"}}],
                "users": [{"name": "u", "user": {}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    registries = {host: {"insecure": True} for host in hosts.values()}
    spec = {
        "config": {"registries": registries, "webhook": {"budgetSeconds": BUDGET}},
        "kubeconfig": str(kubeconfig),
        "workdir": str(workdir / "tls"),
        "webhook_port": free_port(),
        "health_port": free_port(),
    }
    process = subprocess.Popen(
        [sys.executable, __file__, "--target", json.dumps(spec)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(ROOT / "operator")},
    )
    try:
        assert process.stdout is not None
        ca_file = json.loads(process.stdout.readline())["ca_file"]
        prober = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--probe",
                f"http://127.0.0.1:{spec['health_port']}/healthz",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert prober.stdout is not None
        prober.stdout.readline()  # "ready"
        context = ssl.create_default_context(cafile=ca_file)
        # One ordinary review first: a running archwarden has long done its first-use work
        # (lazy imports in httpx/anyio, aiohttp), which costs 50-150 ms of loop time once.
        with httpx.Client(verify=context, timeout=30) as client:
            client.post(
                f"https://127.0.0.1:{spec['webhook_port']}/validate-pods",
                content=review(pod([f"{hosts['slow']}/warm/up:1"])),
            ).raise_for_status()
        assert prober.stdin is not None
        prober.stdin.write("reset\n")
        prober.stdin.flush()
        process.send_signal(signal.SIGUSR1)  # the attack starts now
        time.sleep(0.05)
        started = time.perf_counter()
        try:
            with httpx.Client(verify=context, timeout=30) as client:
                answer = client.post(
                    f"https://127.0.0.1:{spec['webhook_port']}/validate-pods",
                    content=body,
                    headers={"Content-Type": "application/json"},
                )
            seconds = time.perf_counter() - started
            if answer.status_code != 200:
                status = f"HTTP {answer.status_code}"
            else:
                response = answer.json()["response"]
                status = "allowed" if response["allowed"] else "denied"
                status += " + warning" if response.get("warnings") else ""
        except httpx.HTTPError as exc:
            seconds, status = time.perf_counter() - started, type(exc).__name__
        time.sleep(0.2)
        health_ms = float(prober.communicate("stop\n", timeout=10)[0])
        rss = peak_rss_mib(process.pid)
        process.terminate()
        lag_ms = float(process.communicate(timeout=10)[0] or "nan")
        return Row(name, len(body), status, seconds, rss, health_ms, lag_ms)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", help=argparse.SUPPRESS)
    parser.add_argument("--probe", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe:
        probe(args.probe)
        return 0
    if args.target:
        asyncio.run(target(json.loads(args.target)))
        return 0
    hostile = Hostile().start()
    rows: list[Row] = []
    try:
        with tempfile.TemporaryDirectory(prefix="archwarden-hostile-") as tmp:
            for i, (name, body) in enumerate(attacks(hostile.hosts)):
                rows.append(run_attack(name, body, hostile.hosts, Path(tmp) / str(i)))
                row = rows[-1]
                print(f"  {row.attack}: {row.seconds:.2f} s", file=sys.stderr, flush=True)
    finally:
        hostile.stop()
    print("| attack | review | answer | time | peak RSS | max /healthz | max loop lag |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row.attack} | {row.size / MiB:.2f} MiB | {row.status} | {row.seconds:.2f} s "
            f"| {row.rss_mib:.0f} MiB | {row.health_ms:.0f} ms | {row.lag_ms:.0f} ms |"
        )
    within = all(r.seconds <= BUDGET + 0.5 and r.rss_mib < 384 and r.health_ms < 100 for r in rows)
    print(
        f"\ntargets (answer <= {BUDGET + 0.5:g} s, RSS < 384 MiB, health < 100 ms): "
        + ("all met" if within else "MISSED")
    )
    return 0 if within else 1


if __name__ == "__main__":
    sys.exit(main())
