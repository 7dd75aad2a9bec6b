"""archwarden on a real control plane with thousands of kwok nodes (issue: cluster scale).

Run: `.venv/bin/python bench/scale_cluster.py [--nodes 5000] [--deployments 2000]
[--replicas 5] [--soak 600]` (`--deployments 0` skips the drain). Brings up its own local
cluster (state in `.cluster-bench/`, no real node) and a registry, and measures
`archwarden run --dev` side by side:

1. the 6-node cluster of `hack/cluster/nodes.yaml`: ready time, RSS, warm review p50;
2. plus N kwok nodes (3 zones; 50% amd64, 40% arm64, 10% ppc64le, labelled like kubelets'
   nodes, plus 3 s390x nodes): the same figures, and CPU while idle under kwok's heartbeats;
3. with D Deployments of R replicas each running on those nodes (kwok pods; every pod and
   Deployment reviewed by archwarden on the way in): draining the three s390x nodes, the time
   until re-evaluation has judged the workloads it concerns, and the Events it posted (exactly
   the s390x-only Deployments must get ArchitectureUnavailable, nothing else);
4. a soak: one node added, removed or relabelled every second; RSS sampled every 10 s.

Ratios (xR) are against the 6-node figure of the same run. Everything started is stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.admission import baseline_server
from tests.cluster.cluster import LocalCluster, node_manifest
from tests.support.archwarden import ArchwardenProcess
from tests.support.images import Seeder
from tests.support.registry import RegistryServer, start_registry

from archwarden import kube

ROOT = Path(__file__).resolve().parent.parent
ARCHES = ("amd64",) * 5 + ("arm64",) * 4 + ("ppc64le",)
TYPES = {"amd64": "m7i.xlarge", "arm64": "m7g.xlarge", "ppc64le": "s1022", "s390x": "z16"}
NAMESPACE = "bench"
CONCURRENCY = 16
WRK_SECONDS = 5


def scale_node(i: int, arch: str | None = None) -> dict[str, Any]:
    arch = arch or ARCHES[i % len(ARCHES)]
    name = f"scale-{arch}-{i:05d}"
    labels = {
        "topology.kubernetes.io/region": "eu-west-1",
        "topology.kubernetes.io/zone": f"eu-west-1{'abc'[i % 3]}",
        "node.kubernetes.io/instance-type": TYPES[arch],
        "archwarden.io/bench": "scale",
    }
    return node_manifest(name, arch, labels=labels)


class Api:
    """Concurrent writes straight to the API server (kubectl would take minutes for 5,000)."""

    def __init__(self, kubeconfig: Path) -> None:
        self.connection = kube.Connection.from_api_client(kube.load_api_client(str(kubeconfig)))
        self.session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Api:
        self.session = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.session is not None
        await self.session.close()

    async def call(self, method: str, path: str, body: Any = None, content_type: str = "") -> Any:
        assert self.session is not None
        headers = self.connection.headers()
        if content_type:
            headers["Content-Type"] = content_type
        async with self.session.request(
            method,
            self.connection.base_url + path,
            data=None if body is None else json.dumps(body),
            headers=headers,
            ssl=self.connection.ssl,
        ) as response:
            text = await response.text()
            if response.status >= 300 and response.status != 409:
                raise RuntimeError(f"{method} {path}: HTTP {response.status}: {text[:300]}")
            return json.loads(text) if text else None

    async def all(self, calls: list[tuple[str, str, Any]], content_type: str = "") -> None:
        gate = asyncio.Semaphore(CONCURRENCY)

        async def one(method: str, path: str, body: Any) -> None:
            async with gate:
                await self.call(method, path, body, content_type)

        await asyncio.gather(*(one(*c) for c in calls))


def deployment(i: int, image: str, arch_pin: str | None, replicas: int) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": "app", "image": image}]}
    if arch_pin:
        spec["nodeSelector"] = {"kubernetes.io/arch": arch_pin}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": f"app-{i:05d}", "namespace": NAMESPACE},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": f"app-{i:05d}"}},
            "template": {"metadata": {"labels": {"app": f"app-{i:05d}"}}, "spec": spec},
        },
    }


class Process:
    """RSS and CPU of one process, from /proc."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def cpu_share(self, seconds: float) -> float:
        c0, t0 = self.cpu_seconds(), time.monotonic()
        time.sleep(seconds)
        return (self.cpu_seconds() - c0) / (time.monotonic() - t0)


def wrk_p50(url: str, body: bytes) -> float:
    """One connection, closed loop: the latency of a warm review with nothing queued."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        script.write(
            'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
            f"wrk.body = [==[{body.decode()}]==]\n"
        )
        script.flush()
        output = subprocess.run(
            ["wrk", "-t1", "-c1", f"-d{WRK_SECONDS}s", "--latency", "-s", script.name, url],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    if "Non-2xx" in output:
        raise RuntimeError(f"wrk saw errors:\n{output}")
    value = output.split(" 50% ")[1].split()[0]
    unit = value.lstrip("0123456789.")
    return float(value[: -len(unit)]) * {"us": 1e-6, "ms": 1e-3, "s": 1.0}[unit]


def review(obj: dict[str, Any]) -> bytes:
    return json.dumps(
        {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "bench",
                "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
                "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
                "operation": "CREATE",
                "userInfo": {"username": "bench"},
                "object": obj,
            },
        }
    ).encode()


@contextlib.contextmanager
def archwarden(workdir: Path, cluster: LocalCluster, config: dict[str, Any]) -> Iterator[Any]:
    process = ArchwardenProcess(workdir, cluster.kubeconfig, config)
    started = time.monotonic()
    process.start(timeout=900)
    ready = time.monotonic() - started
    assert process._process is not None
    try:
        yield process, Process(process._process.pid), ready
    finally:
        process.stop()


def measure_running(
    process: Any, proc: Process, ready: float, body: bytes, idle_seconds: float
) -> dict[str, float]:
    time.sleep(5)  # let start-up work (first re-evaluation) finish
    url = f"https://127.0.0.1:{process.webhook_port}/validate-deployments"
    figures = {"ready": ready, "rss": proc.rss_mb(), "p50": wrk_p50(url, body)}
    # The bare aiohttp TLS server of bench/admission.py, same certificate and body, measured
    # right after: what the machine itself (a control plane busy with thousands of kwok
    # nodes' heartbeats on the same two cores) adds to any server's latency.
    dev = process.workdir / "dev"
    with baseline_server(dev / "tls.crt", dev / "tls.key") as baseline_url:
        figures["bare p50"] = wrk_p50(baseline_url, body)
    figures["idle cpu"] = proc.cpu_share(idle_seconds)
    return figures


def metric(process: Any, name: str, **labels: str) -> float:
    return float(process.metric(name, **labels))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=5000)
    parser.add_argument("--deployments", type=int, default=2000)
    parser.add_argument("--replicas", type=int, default=5)
    parser.add_argument("--soak", type=float, default=600, help="seconds of node churn")
    parser.add_argument("--idle", type=float, default=30, help="seconds of idle CPU sampling")
    args = parser.parse_args()
    print("$ " + shlex.join(sys.orig_argv), flush=True)
    os.environ["ARCHWARDEN_REAL_NODE"] = "0"  # kwok nodes only; the real node is not needed
    cluster = LocalCluster(ROOT / ".cluster-bench")
    shm = Path(tempfile.mkdtemp(prefix="archwarden-bench-", dir="/dev/shm"))
    server: RegistryServer | None = None
    try:
        print("starting a fresh local cluster in .cluster-bench/", flush=True)
        cluster.up(restart=True)
        with tempfile.TemporaryDirectory(prefix="archwarden-bench-") as tmp:
            workdir = Path(tmp)
            server = start_registry(workdir / "registry", "plain", data_dir=shm)
            host = server.host
            with Seeder(server) as seeder:
                seeder.push_multiarch("bench/multi", "1", ["linux/amd64", "linux/arm64"])
                seeder.push_image("bench/amd64", "1", "linux/amd64")
                seeder.push_image("bench/s390x", "1", "linux/s390x")
            config = {"mode": "enforce", "registries": {host: {"insecure": True}}}
            body = review(deployment(0, f"{host}/bench/multi:1", None, 1))
            run(args, cluster, workdir, config, host, body)
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(shm, ignore_errors=True)
        cluster.down()
        shutil.rmtree(cluster.state_dir, ignore_errors=True)


def run(
    args: argparse.Namespace,
    cluster: LocalCluster,
    workdir: Path,
    config: dict[str, Any],
    host: str,
    body: bytes,
) -> None:
    figures: dict[str, dict[str, float]] = {}
    with archwarden(workdir / "a6", cluster, config) as (process, proc, ready):
        figures["6"] = measure_running(process, proc, ready, body, args.idle)

    async def add_nodes() -> float:
        started = time.monotonic()
        nodes = [scale_node(i) for i in range(args.nodes)]
        nodes += [scale_node(args.nodes + i, "s390x") for i in range(3)]
        async with Api(cluster.kubeconfig) as api:
            await api.all([("POST", "/api/v1/nodes", n) for n in nodes], "application/json")
        return time.monotonic() - started

    created = asyncio.run(add_nodes())
    print(f"created {args.nodes + 3} kwok nodes in {created:.0f} s", flush=True)
    # kwok marks them Ready a batch at a time; measuring before it is done would time
    # archwarden following thousands of real changes, not a cluster at rest.
    started, ready = time.monotonic(), 0
    while time.monotonic() - started < 1500:
        ready = ready_nodes(cluster)
        if ready >= args.nodes + 9:
            break
        time.sleep(15)
    print(f"{ready} nodes Ready and untainted {time.monotonic() - started:.0f} s later", flush=True)
    time.sleep(10)  # the last status updates settle

    with archwarden(workdir / "aN", cluster, config) as (process, proc, ready):
        figures[str(args.nodes + 9)] = measure_running(process, proc, ready, body, args.idle)
        print_figures(figures)
        if args.deployments > 0:  # 0: the node figures and the soak only
            drain(args, cluster, process, proc, host)
        soak(args, cluster, process, proc)


def ready_nodes(cluster: LocalCluster) -> int:
    """Nodes Ready and without the lifecycle controller's not-ready/unreachable taints: it
    lifts them at about a dozen nodes a second, and until then no pod may go there."""
    nodes = json.loads(cluster.kubectl("get", "nodes", "-o", "json").stdout)["items"]
    lifecycle = {"node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"}
    return sum(
        1
        for node in nodes
        if any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in node.get("status", {}).get("conditions", [])
        )
        and not any(t["key"] in lifecycle for t in node.get("spec", {}).get("taints", []))
    )


def print_figures(figures: dict[str, dict[str, float]]) -> None:
    base = figures["6"]
    print(
        f"\n{'nodes':>6} {'ready':>16} {'RSS':>18} {'warm p50 (wrk -c1)':>22} "
        f"{'bare server p50':>20} {'CPU idle (heartbeats)':>22}"
    )
    for nodes, f in figures.items():
        print(
            f"{nodes:>6} {f['ready']:>8.1f} s x{f['ready'] / base['ready']:<5.1f}"
            f" {f['rss']:>8.0f} MB x{f['rss'] / base['rss']:<5.2f}"
            f" {f['p50'] * 1e3:>10.2f} ms x{f['p50'] / base['p50']:<5.2f}"
            f" {f['bare p50'] * 1e3:>8.2f} ms x{f['bare p50'] / base['bare p50']:<5.2f}"
            f" {f['idle cpu'] * 100:>14.1f} % of a core",
            flush=True,
        )
    last = figures[max(figures, key=int)]
    print(
        "warm p50 against the bare server's in the same moment: "
        + ", ".join(f"{n} nodes {f['p50'] / f['bare p50']:.2f}x" for n, f in figures.items())
        + f"; archwarden's own factor {last['p50'] / last['bare p50']:.2f}"
        f" / {base['p50'] / base['bare p50']:.2f} ="
        f" {(last['p50'] / last['bare p50']) / (base['p50'] / base['bare p50']):.2f}",
        flush=True,
    )


def drain(
    args: argparse.Namespace, cluster: LocalCluster, process: Any, proc: Process, host: str
) -> None:
    kinds = [
        (f"{host}/bench/multi:1", None),
        (f"{host}/bench/amd64:1", "amd64"),
        (f"{host}/bench/multi:1", "arm64"),
    ]
    s390x = max(1, args.deployments // 100)

    async def create() -> float:
        started = time.monotonic()
        async with Api(cluster.kubeconfig) as api:
            await api.call(
                "POST", "/api/v1/namespaces", {"metadata": {"name": NAMESPACE}}, "application/json"
            )
            path = f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments"
            # The s390x-only ones first, while the three s390x nodes are surely Ready.
            await api.all(
                [
                    ("POST", path, deployment(args.deployments - s390x + i, image, None, 1))
                    for i in range(s390x)
                    for image in [f"{host}/bench/s390x:1"]
                ],
                "application/json",
            )
            objs = [
                deployment(i, *kinds[i % len(kinds)], args.replicas)
                for i in range(args.deployments - s390x)
            ]
            await api.all([("POST", path, o) for o in objs], "application/json")
        return time.monotonic() - started

    created = asyncio.run(create())
    print(
        f"\ncreated {args.deployments} Deployments ({s390x} of them s390x-only) in {created:.0f} s;"
        " waiting for their pods",
        flush=True,
    )
    wanted = (args.deployments - s390x) * args.replicas + s390x
    deadline = time.monotonic() + 1800
    running = 0
    while time.monotonic() < deadline:
        pods = cluster.kubectl(
            "get", "pods", "-n", NAMESPACE, "--field-selector=status.phase=Running", "-o", "name"
        )
        running = len(pods.stdout.splitlines())
        if running >= wanted:
            break
        time.sleep(10)
    print(
        f"{running} pods Running (of {wanted}); archwarden RSS {proc.rss_mb():.0f} MB", flush=True
    )
    time.sleep(5)

    before = metric(process, "archwarden_workloads_reevaluated_total")
    s390x_nodes = cluster.nodes_with({"kubernetes.io/arch": "s390x"})
    # Cordoned together, then timed: from the moment no s390x node takes pods until the
    # s390x-only Deployments are reported stranded (the pods are evicted afterwards).
    cluster.kubectl("cordon", *s390x_nodes)
    cordoned = time.monotonic()
    while metric(process, "archwarden_workloads_unschedulable", kind="Deployment") < s390x:
        if time.monotonic() - cordoned > 120:
            break
        time.sleep(0.02)
    settled = time.monotonic()
    for name in s390x_nodes:
        cluster.kubectl("drain", name, "--ignore-daemonsets", "--force", "--timeout=60s")
    time.sleep(5)  # any Event a late re-evaluation would post
    judged = metric(process, "archwarden_workloads_reevaluated_total") - before
    events = json.loads(
        cluster.kubectl(
            "get",
            "events",
            "-n",
            NAMESPACE,
            "--field-selector=reason=ArchitectureUnavailable",
            "-o",
            "json",
        ).stdout
    )["items"]
    named = sorted({e["involvedObject"]["name"] for e in events})
    expected = [f"app-{args.deployments - s390x + i:05d}" for i in range(s390x)]
    print(
        f"drain of the {len(s390x_nodes)} s390x nodes: stranded workloads reported "
        f"{settled - cordoned:.2f} s after the cordon; {judged:.0f} workload judgements by "
        f"re-evaluation in all (of {args.deployments} workloads); ArchitectureUnavailable "
        f"Events on {len(named)} Deployments, "
        + ("exactly the s390x-only ones" if named == expected else f"UNEXPECTED: {named[:10]}"),
        flush=True,
    )


def soak(args: argparse.Namespace, cluster: LocalCluster, process: Any, proc: Process) -> None:
    if args.soak <= 0:
        return
    print(
        f"\nsoak: {args.soak:.0f} s, one node added, removed or relabelled per second", flush=True
    )

    async def churn() -> tuple[list[tuple[float, float]], int]:
        """RSS samples, and the node changes made."""
        samples = [(0.0, proc.rss_mb())]
        started = time.monotonic()
        added: list[str] = []
        async with Api(cluster.kubeconfig) as api:
            step = 0
            while (elapsed := time.monotonic() - started) < args.soak:
                target = args.nodes + 100 + step
                if step % 3 == 0:
                    node = scale_node(target)
                    await api.call("POST", "/api/v1/nodes", node, "application/json")
                    added.append(node["metadata"]["name"])
                elif step % 3 == 1 and added:
                    await api.call("DELETE", f"/api/v1/nodes/{added.pop(0)}")
                else:
                    name = scale_node(step % args.nodes)["metadata"]["name"]
                    # A few values in turn: the cluster itself stays the same size, so any
                    # growth is archwarden's (a new value per step would grow the cluster's
                    # own state, one node class per relabelled node).
                    patch = {"metadata": {"labels": {"bench/churn": str(step % 5)}}}
                    await api.call(
                        "PATCH", f"/api/v1/nodes/{name}", patch, "application/merge-patch+json"
                    )
                step += 1
                if step % 10 == 0:
                    samples.append((elapsed, proc.rss_mb()))
                await asyncio.sleep(max(0.0, started + step - time.monotonic()))
        return samples, step

    changes_before = metric(process, "archwarden_node_changes_total")
    samples, sent = asyncio.run(churn())
    time.sleep(2)  # the last changes reach archwarden
    changes = metric(process, "archwarden_node_changes_total") - changes_before
    first = [r for t, r in samples if t <= 60]
    last = [r for t, r in samples if t >= samples[-1][0] - 60]
    print(
        f"RSS: {samples[0][1]:.0f} MB at start, {sum(first) / len(first):.0f} MB over the first "
        f"minute, {sum(last) / len(last):.0f} MB over the last, "
        f"max {max(r for _, r in samples):.0f} MB ({len(samples)} samples); trend over the "
        f"second half {slope(samples[len(samples) // 2 :]) * 60:+.2f} MB/min",
        flush=True,
    )
    print(
        f"node changes archwarden saw during the soak: {changes:.0f} of {sent} made"
        " (archwarden_node_changes_total: heartbeats not counted)",
        flush=True,
    )
    print("RSS samples (s, MB): " + " ".join(f"{t:.0f}:{r:.1f}" for t, r in samples), flush=True)


def slope(samples: list[tuple[float, float]]) -> float:
    """Least-squares MB per second: bounded caches filling up early do not count as a leak;
    a leak keeps the second half rising."""
    if len(samples) < 2:
        return 0.0
    n = len(samples)
    mean_t = sum(t for t, _ in samples) / n
    mean_r = sum(r for _, r in samples) / n
    spread = sum((t - mean_t) ** 2 for t, _ in samples)
    return sum((t - mean_t) * (r - mean_r) for t, r in samples) / spread if spread else 0.0


if __name__ == "__main__":
    main()
