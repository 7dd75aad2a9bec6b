"""Tenant memory attacks (issue 18): archwarden in a memory cgroup at the chart's limit.

Run, as root on a cgroup-v1 host (no sudo needed when already root), from the repository root:

    PYTHONPATH=$PWD/operator .venv/bin/python bench/tenants.py [--only baseline,flood,...]

No cluster; everything on 127.0.0.1, under two minutes. It refuses in one line (exit status 2)
when it cannot create a memory cgroup under /sys/fs/cgroup/memory; it prints a Markdown table,
the targets line and the command, and exits 1 when a target was missed.

Each attack runs against its own process under test (``bench/tenants.py --target SPEC``),
placed at its start (``preexec_fn``, before it allocates anything) in a fresh cgroup
``archwarden-bench-<pid>-<n>`` limited to 384 MiB (the chart's ``resources.limits.memory``),
swap included where the kernel accounts it. The process composes what ``archwarden run`` wires
(``wire``: ``handlers.Runtime`` with its node, namespace, workload and pod streams
(``kube.Watch``), ``WorkloadStore``, ``PodStore``, ``PullSecrets`` over ``kube.ApiReader``,
``Admission``, the auditor, re-evaluation) behind archwarden's HTTPS ``WebhookServer`` and its
direct route (``handlers.direct_route``), and the /healthz server. Its settings come from the
configuration (``settings.from_mapping``), so the ``limits`` byte bounds apply as in the chart.
Left out: kopf itself, capacity kinds (none served), OpenReports (``reports.enabled: false``: no
CRDs) and the gatekeeper (``schedulingGates.mode`` is off by default).

The API server is a fake (aiohttp, in this process, on its own thread): paged LISTs
(``limit``/``continue``), WATCHes that stay open with a BOOKMARK now and then, GETs of secrets and
service accounts, Events accepted. A fake is enough: the bench measures archwarden's memory, not
the API server's. List items are generated one at a time as they are written, so this process
never holds an attack's world. Two registries run next to it: one answering every manifest
with a small two-platform index, one answering everything 429 with an enormous Retry-After.

Per attack, while it runs: a "probe" process POSTs an ordinary 1-image pod review every 100 ms
(each must be answered within budgetSeconds 3 + 0.5 s), another times /healthz every 10 ms
(``bench/hostile.py``'s prober; target < 100 ms), and the process under test measures its own
event loop's lag. Reported: OOM killed (the cgroup's ``oom_kill`` count, or the process died of
SIGKILL before the bench stopped it), the cgroup's peak (``memory.max_usage_in_bytes``: anonymous
memory plus page cache the process caused), the process's peak RSS (VmHWM, when it survived; it
also counts shared library pages another cgroup was charged for, so it can exceed the cgroup's
peak), the worst probe answer (and how many failed), /healthz and loop lag. An attack's process
starts listing when the probes are up, so the start-up attacks (pending, stores) are measured
while they are listed. The cgroup, processes and temporary files are removed after each attack,
on errors, Ctrl-C and SIGTERM too.

Attacks (sizes as issue 18 states them):

- baseline: nothing hostile (2 nodes, 2 namespaces), for comparison.
- flood: 35 server-side dry runs (``dryRun: true``) of Deployments with 35,000 distinct
  tolerations each (~2 MiB reviews), then 300 distinct Deployments with 1,500 each; FLOOD_AT_ONCE
  reviews in flight; nothing stored on the API server.
- pending: the API server holds 200 Pending pods of 1 MiB each (an annotation), listed at
  start by the pod store; then reviews are served.
- stores: 40 Deployments (replicas 0) with 35,000 tolerations each in the workload store's list,
  and 100 pods of 64 containers whose images are distinct 20 KiB invalid references.
- secrets: 64 pull secrets with a 1 MiB ``.dockerconfigjson`` each (valid: many ``auths``
  entries), 16 named by each of 4 pods; the 4 pods reviewed at once, 3 times.
- held: 4 pods of 64 images each (at once) on a registry answering 429 with
  ``Retry-After: 1000000000``: every answer within budget + 0.5 s; how many requests reached it.
- deep: a 100,000-deep nested JSON review: answered 4xx in one line, no traceback on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import dataclasses
import functools
import json
import os
import queue
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import yaml
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.hostile import (
    BUDGET,
    OCI_INDEX,
    MiB,
    digest,
    free_port,
    loop_lag,
    peak_rss_mib,
    probe,
    small_index,
)

ROOT = Path(__file__).resolve().parents[1]
CGROUP_ROOT = Path("/sys/fs/cgroup/memory")
LIMIT_BYTES = 384 * MiB
"""The chart's memory limit (charts/archwarden/values.yaml, resources.limits.memory)."""
LIMITS = {
    "decisionCacheBytes": 33554432,
    "templateBytes": 262144,
    "pullSecretBytes": 262144,
    "pullSecretCacheBytes": 16777216,
    "apiObjectBytes": 4194304,
}
"""The chart's ``config.limits`` byte bounds, passed as configuration."""
ANSWER_BOUND = BUDGET + 0.5
HEALTH_BOUND_MS = 100.0
NAMESPACE = "tenant"
START_TIMEOUT = 60.0
"""Seconds for the process under test to serve (imports, keys) and later to list everything."""
LIST_TIMEOUT = 45.0
SETTLE = 3.0
"""Seconds after an attack before stopping: re-evaluation (1 s after the lists) and the first
audit run in that time."""
ATTACK_TIMEOUT = 30.0
"""The longest webhook timeout an API server allows."""
FLOOD_AT_ONCE = 4
BOOKMARK_SECONDS = 5.0
RESOURCE_VERSION = "1000"
WATCHES: list[Any] = []
"""Every ``kube.Watch`` the process under test built (it reports once all have listed)."""


# -- the process under test -----------------------------------------------------------------------


def wire(config: Any, kubeconfig: str) -> tuple[Any, Any]:
    """``handlers.startup`` and ``cli._run`` without kopf: the Runtime with everything the
    operator builds, from ``config``. Returns it and the API connection its streams use.
    Keep it in step with those two (they take every byte bound from ``config.limits``)."""
    from archwarden import admission, audit, gatekeeper, handlers, kube, policy, registry
    from archwarden import workload_store as stores

    limits = config.limits
    base = kube.Watch

    class Watch(base):  # type: ignore[misc, valid-type]
        """kube.Watch, remembered: the bench waits for every list."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            WATCHES.append(self)

    kube.Watch = Watch  # every module reads kube.Watch when it builds a stream

    workloads = stores.WorkloadStore(
        config.excluded_namespaces, template_bytes=limits.template_bytes
    )
    rt = handlers.Runtime(config=config, kubeconfig=kubeconfig, workloads=workloads)
    api_client = kube.load_api_client(kubeconfig)
    rt.reader = reader = kube.ApiReader(api_client)
    rt.poster = kube.EventPoster(api_client, rt.events)
    client_settings = config.client_settings()

    def observe_registry(host: str, code: str, seconds: float) -> None:
        rt.metrics.observe_registry(client_settings.metric_label(host), code, seconds)

    rt.client = registry.RegistryClient(client_settings, observer=observe_registry)
    resolver = registry.Resolver(rt.client, config.cache, observer=rt.metrics.observe_lookup)
    secrets = kube.PullSecrets(
        rt.reader,
        config.global_pull_secret,
        pull_secret_bytes=limits.pull_secret_bytes,
        pull_secret_cache_bytes=limits.pull_secret_cache_bytes,
    )
    rt.admission = admission.Admission(
        config,
        resolver,
        rt.inventory,
        credentials=secrets.for_pod,
        held_credentials=secrets.held,
        namespace_mode=rt.namespace_modes.get,
        namespace_allows_skip=rt.skip_namespaces.__contains__,
        meters=rt.metrics,
        object_exists=kube.ObjectChecker(rt.reader).exists,
        capacity=rt.provisionable,
    )
    reports = kube.ReportWriter(api_client) if config.reports.enabled else None
    rt.auditor = audit.Auditor(
        rt.admission,
        rt.workloads,
        rt.pods,
        rt.inventory,
        poster=rt.poster,
        meters=rt.metrics,
        reports=reports,
    )
    if config.scheduling_gates.mode != policy.GateMode.OFF.value:
        rt.gatekeeper = gatekeeper.GateKeeper(
            rt.admission,
            functools.partial(reader.read, "Pod"),
            kube.PodPatcher(api_client).patch,
            rt.poster.post,
            rt.metrics,
            config.scheduling_gates,
        )
    rt.set_static_capacity(kube.static_capacity(config.capacity))
    handlers.watch_capacity(rt, [])  # the fake API server serves no capacity kinds
    return rt, kube.Connection.from_api_client(api_client, max_object_bytes=limits.api_object_bytes)


async def target(spec: dict[str, Any]) -> None:
    import logging

    # As kopf's plain format: one line per record, tracebacks included.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from archwarden import certs, handlers, serving, settings, webhook_server

    config = settings.from_mapping(spec["config"])
    rt, connection = wire(config, spec["kubeconfig"])
    files = certs.write_dev_certificates(Path(spec["workdir"]))
    server = webhook_server.WebhookServer(
        meters=rt.metrics,
        addr="127.0.0.1",
        port=spec["webhook_port"],
        host="127.0.0.1",
        certfile=str(files.cert_file),
        pkeyfile=str(files.key_file),
        cafile=str(files.ca_file),
    )
    server.direct = handlers.direct_route(rt)
    rt.health = serving.HealthServer(rt.metrics, rt.ready)
    await rt.health.start("127.0.0.1", spec["health_port"])
    loop = asyncio.get_running_loop()
    stop, begin = asyncio.Event(), asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, begin.set)

    async def kopf_route(**_: Any) -> None:  # never called: the direct route answers
        raise RuntimeError("kopf's admission route is not used")

    async def listed(started: float) -> None:
        await rt.ready.wait()
        for watch in WATCHES:
            await watch.synced.wait()
        print(json.dumps({"listed": loop.time() - started}), flush=True)

    async with server:
        configs = server(kopf_route)
        await configs.__anext__()
        print(json.dumps({"ca_file": str(files.ca_file)}), flush=True)
        begun, stopped = asyncio.ensure_future(begin.wait()), asyncio.ensure_future(stop.wait())
        await asyncio.wait({begun, stopped}, return_when=asyncio.FIRST_COMPLETED)
        begun.cancel()
        # Lag is measured from here: start-up (keys, CA store) is not an attack; listing is.
        lag = asyncio.create_task(loop_lag(stop, asyncio.Event()))
        rt.start_watches(connection)
        rt.spawn(listed(loop.time()))
        await stop.wait()
        print(json.dumps({"lag_ms": await lag * 1e3}), flush=True)
        for task in list(rt.background):
            task.cancel()
        await asyncio.gather(*rt.background, return_exceptions=True)
        await configs.aclose()
    await rt.health.stop()
    await rt.client.aclose()


# -- probes (own processes: no GIL shared with this one's servers) -------------------------------


def probe_reviews(spec: dict[str, Any]) -> None:
    """POST an ordinary 1-image pod review every 100 ms (the next one right away when an
    answer took longer). After "ready" (the first one came back), the first line on stdin
    restarts the count, the second stops it and prints the worst answer time, how many were
    sent and how many failed (no review in a 200 answer; a failure counts with its time)."""
    context = ssl.create_default_context(cafile=spec["ca_file"])
    stats = {"max_s": 0.0, "sent": 0, "failed": 0}
    answered, done = threading.Event(), threading.Event()
    lock = threading.Lock()

    def run() -> None:
        with httpx.Client(verify=context, timeout=ATTACK_TIMEOUT) as client:
            while not done.is_set():
                body = admission_review(
                    pod_object(f"probe-{uuid.uuid4().hex[:8]}", [spec["image"]])
                )
                started = time.perf_counter()
                ok = False
                with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
                    response = client.post(spec["url"], content=body)
                    ok = response.status_code == 200 and "allowed" in response.json()["response"]
                seconds = time.perf_counter() - started
                with lock:
                    stats["sent"] += 1
                    stats["failed"] += not ok
                    stats["max_s"] = max(stats["max_s"], seconds)
                answered.set()
                done.wait(max(0.0, 0.1 - seconds))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    answered.wait(30)
    print("ready", flush=True)
    sys.stdin.readline()
    with lock:
        stats.update(max_s=0.0, sent=0, failed=0)
    sys.stdin.readline()
    done.set()
    thread.join(ATTACK_TIMEOUT + 5)
    with lock:
        print(json.dumps(stats), flush=True)


# -- the fake API server and the registries (this process, own thread and loop) ------------------


@dataclasses.dataclass
class Listing:
    kind: str
    """The list's kind, e.g. PodList."""
    api_version: str
    count: int = 0
    item: Callable[[int], bytes] = lambda _i: b"{}"
    """The JSON of item ``i``, made when it is written."""


LIST_PATHS = {
    "/api/v1/nodes": ("NodeList", "v1"),
    "/api/v1/namespaces": ("NamespaceList", "v1"),
    "/api/v1/pods": ("PodList", "v1"),
    "/apis/apps/v1/deployments": ("DeploymentList", "apps/v1"),
    "/apis/apps/v1/statefulsets": ("StatefulSetList", "apps/v1"),
    "/apis/apps/v1/daemonsets": ("DaemonSetList", "apps/v1"),
    "/apis/apps/v1/replicasets": ("ReplicaSetList", "apps/v1"),
    "/apis/batch/v1/jobs": ("JobList", "batch/v1"),
    "/apis/batch/v1/cronjobs": ("CronJobList", "batch/v1"),
}


@dataclasses.dataclass
class World:
    """What the fake API server holds during one attack."""

    lists: dict[str, Listing]
    secrets: dict[tuple[str, str], Callable[[], bytes]] = dataclasses.field(default_factory=dict)

    @classmethod
    def quiet(cls) -> World:
        lists = {path: Listing(kind, version) for path, (kind, version) in LIST_PATHS.items()}
        nodes = [node_object("node-amd64", "amd64"), node_object("node-arm64", "arm64")]
        lists["/api/v1/nodes"].count = len(nodes)
        lists["/api/v1/nodes"].item = lambda i: compact(nodes[i])
        spaces = [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}}
            for n in ("default", NAMESPACE)
        ]
        lists["/api/v1/namespaces"].count = len(spaces)
        lists["/api/v1/namespaces"].item = lambda i: compact(spaces[i])
        return cls(lists)

    def holding(self, path: str, count: int, item: Callable[[int], bytes]) -> World:
        self.lists[path].count, self.lists[path].item = count, item
        return self


class Servers:
    """The fake API server and the two registries, started once in a background thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.hosts: dict[str, str] = {}
        self.world = World.quiet()
        self.listed: dict[str, int] = {}
        """LISTs started from the beginning, per path, since the last ``reset``."""
        self.held_requests = 0
        """Requests that reached the 429 registry since the last ``reset``."""
        self._closing: Any = None
        self._runners: list[Any] = []
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def start(self) -> Servers:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(30)
        return self

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)

    def reset(self, world: World) -> None:
        """Serve ``world`` from now on, with the counters at zero."""

        async def swap() -> None:
            self.world = world
            self.listed = {}
            self.held_requests = 0

        asyncio.run_coroutine_threadsafe(swap(), self.loop).result(10)

    async def _start(self) -> None:
        self._closing = asyncio.Event()
        index = small_index()
        index_headers = {"Content-Type": OCI_INDEX, "Docker-Content-Digest": digest(index)}

        async def registry(_request: web.Request) -> web.Response:
            return web.Response(body=index, headers=index_headers)

        async def held(_request: web.Request) -> web.Response:
            self.held_requests += 1
            return web.Response(status=429, headers={"Retry-After": "1000000000"})

        api = web.Application()
        api.router.add_get("/api/v1/namespaces/{ns}/secrets/{name}", self._secret)
        api.router.add_get("/api/v1/namespaces/{ns}/serviceaccounts/{name}", self._account)
        api.router.add_post("/api/v1/namespaces/{ns}/events", self._event)
        api.router.add_get("/api/v1/{plural}", self._list)
        api.router.add_get("/apis/{group}/{version}/{plural}", self._list)
        api.router.add_route("*", "/{tail:.*}", self._not_found)
        apps = {"api": api}
        for name, handler in (("registry", registry), ("held", held)):
            apps[name] = web.Application()
            apps[name].router.add_route("*", "/{tail:.*}", handler)
        for name, app in apps.items():
            runner = web.AppRunner(app, access_log=None, shutdown_timeout=1)
            await runner.setup()
            port = free_port()
            await web.TCPSite(runner, "127.0.0.1", port).start()
            self._runners.append(runner)
            self.hosts[name] = f"127.0.0.1:{port}"

    async def _stop(self) -> None:
        self._closing.set()
        for runner in self._runners:
            await runner.cleanup()

    @staticmethod
    def _status(code: int, reason: str) -> Any:
        body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code}
        return web.json_response({**body, "reason": reason}, status=code)

    async def _not_found(self, _request: Any) -> Any:
        return self._status(404, "NotFound")

    async def _secret(self, request: Any) -> Any:
        make = self.world.secrets.get((request.match_info["ns"], request.match_info["name"]))
        if make is None:
            return self._status(404, "NotFound")
        return web.Response(body=make(), content_type="application/json")

    async def _account(self, request: Any) -> Any:
        meta = {"name": request.match_info["name"], "namespace": request.match_info["ns"]}
        return web.json_response({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta})

    async def _event(self, request: Any) -> Any:
        await request.read()
        return web.json_response({"apiVersion": "v1", "kind": "Event"}, status=201)

    async def _list(self, request: Any) -> Any:
        listing = self.world.lists.get(request.path)
        if listing is None:
            return self._status(404, "NotFound")
        query = request.query
        if query.get("watch") in ("1", "true"):
            return await self._watch(request, listing)
        start = int(query.get("continue") or 0)
        limit = int(query.get("limit") or 0) or listing.count
        end = min(listing.count, start + limit)
        if start == 0:
            self.listed[request.path] = self.listed.get(request.path, 0) + 1
        meta: dict[str, Any] = {"resourceVersion": RESOURCE_VERSION}
        if end < listing.count:
            meta["continue"] = str(end)
        head = {"kind": listing.kind, "apiVersion": listing.api_version, "metadata": meta}
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        try:
            await response.write(compact(head)[:-1] + b',"items":[')
            for i in range(start, end):
                await response.write((b"," if i > start else b"") + listing.item(i))
            await response.write(b"]}")
            await response.write_eof()
        except ConnectionError:
            pass  # the process under test went away (OOM-killed) mid-page
        return response

    async def _watch(self, request: Any, listing: Listing) -> Any:
        kind = listing.kind.removesuffix("List")
        meta = {"resourceVersion": RESOURCE_VERSION}
        obj = {"kind": kind, "apiVersion": listing.api_version, "metadata": meta}
        bookmark = compact({"type": "BOOKMARK", "object": obj}) + b"\n"
        seconds = min(float(request.query.get("timeoutSeconds") or 300), 300.0)
        deadline = asyncio.get_running_loop().time() + seconds
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        try:
            while asyncio.get_running_loop().time() < deadline and not self._closing.is_set():
                await response.write(bookmark)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), BOOKMARK_SECONDS)
        except ConnectionError:
            pass
        return response


# -- objects --------------------------------------------------------------------------------------


def compact(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def node_object(name: str, arch: str) -> dict[str, Any]:
    labels = {
        "kubernetes.io/arch": arch,
        "kubernetes.io/os": "linux",
        "kubernetes.io/hostname": name,
    }
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "uid": f"uid-{name}", "labels": labels, "resourceVersion": "1"},
        "spec": {},
        "status": {
            "nodeInfo": {"operatingSystem": "linux", "architecture": arch},
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }


def pod_object(
    name: str,
    images: list[str],
    *,
    annotations: dict[str, str] | None = None,
    pull_secrets: Sequence[str] = (),
    node: str = "",
    phase: str = "Pending",
) -> dict[str, Any]:
    containers = [{"name": f"c{i}", "image": image} for i, image in enumerate(images)]
    spec: dict[str, Any] = {"containers": containers}
    if pull_secrets:
        spec["imagePullSecrets"] = [{"name": n} for n in pull_secrets]
    if node:
        spec["nodeName"] = node
    meta: dict[str, Any] = {
        "name": name,
        "namespace": NAMESPACE,
        "uid": str(uuid.uuid5(uuid.NAMESPACE_URL, name)),
        "resourceVersion": "1",
        "creationTimestamp": "2025-01-01T00:00:00Z",
    }
    if annotations:
        meta["annotations"] = annotations
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": spec,
        "status": {"phase": phase},
    }


def deployment_object(
    name: str, image: str, tolerations: int, *, tag: str, replicas: int = 1
) -> dict[str, Any]:
    """A Deployment whose template has ``tolerations`` distinct tolerations, their keys
    starting with ``tag`` (distinct per Deployment), about 61 bytes of JSON each."""
    labels = {"app": name}
    spec = {
        "containers": [{"name": "app", "image": image}],
        "tolerations": [
            {"key": f"{tag}{j:05d}", "operator": "Exists", "effect": "NoSchedule"}
            for j in range(tolerations)
        ],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "uid": str(uuid.uuid5(uuid.NAMESPACE_URL, name)),
            "resourceVersion": "1",
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": spec},
        },
    }


def admission_review(obj: dict[str, Any], *, dry_run: bool = False) -> bytes:
    """The AdmissionReview an API server sends for creating ``obj``."""
    group, _, version = obj["apiVersion"].rpartition("/")
    plural = obj["kind"].lower() + "s"
    meta = obj["metadata"]
    request = {
        "uid": str(uuid.uuid4()),
        "kind": {"group": group, "version": version, "kind": obj["kind"]},
        "resource": {"group": group, "version": version, "resource": plural},
        "requestKind": {"group": group, "version": version, "kind": obj["kind"]},
        "namespace": meta.get("namespace", ""),
        "name": meta.get("name", ""),
        "operation": "CREATE",
        "userInfo": {"username": "tenant", "groups": ["system:authenticated"]},
        "object": obj,
        "oldObject": None,
        "dryRun": dry_run,
    }
    return compact(
        {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}
    )


def pull_secret(name: str, size: int) -> bytes:
    """A Secret whose ``.dockerconfigjson`` is valid JSON of ``size`` bytes or a little more:
    ``auths`` entries of distinct hosts, each with its own credentials."""
    entries: dict[str, Any] = {}
    written = 12
    j = 0
    while written < size:
        host = f"{name}-{j:06d}.registry.example"
        auth = base64.b64encode(f"user-{j}:password-{name}-{j:06d}".encode()).decode()
        entries[host] = {"auth": auth}
        written += len(host) + len(auth) + 15
        j += 1
    config = base64.b64encode(compact({"auths": entries})).decode()
    return compact(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "kubernetes.io/dockerconfigjson",
            "metadata": {"name": name, "namespace": NAMESPACE, "resourceVersion": "1"},
            "data": {".dockerconfigjson": config},
        }
    )


# -- attacks --------------------------------------------------------------------------------------


@dataclasses.dataclass
class Answer:
    status: int
    """HTTP status; 0 when no answer came."""
    seconds: float
    verdict: str
    """allowed, denied, HTTP <code> <reason>, or the transport error's name."""


class Driver:
    """What an attack can do to the process under test: POST reviews, read the servers."""

    def __init__(self, url: str, context: ssl.SSLContext, process: subprocess.Popen[bytes]):
        self.url = url
        self.context = context
        self.process = process

    def alive(self) -> bool:
        return self.process.poll() is None

    def post(self, client: httpx.Client, path: str, body: bytes) -> Answer:
        started = time.perf_counter()
        try:
            response = client.post(
                self.url + path, content=body, headers={"Content-Type": "application/json"}
            )
        except httpx.HTTPError as exc:
            return Answer(0, time.perf_counter() - started, type(exc).__name__)
        seconds = time.perf_counter() - started
        if response.status_code != 200:
            reason = response.reason_phrase.splitlines()[0] if response.reason_phrase else ""
            return Answer(response.status_code, seconds, f"HTTP {response.status_code} {reason}")
        try:
            allowed = response.json()["response"]["allowed"]
        except (ValueError, KeyError, TypeError):
            return Answer(200, seconds, "HTTP 200 without a review")
        return Answer(200, seconds, "allowed" if allowed else "denied")

    def post_many(
        self, jobs: Sequence[tuple[str, Callable[[], bytes]]], at_once: int
    ) -> list[Answer]:
        """Each job's body is made by the worker sending it: at most ``at_once`` exist here.
        Stops sending once the process under test is gone."""
        answers: list[Answer] = []
        lock = threading.Lock()
        pending = iter(jobs)

        def work() -> None:
            with httpx.Client(verify=self.context, timeout=ATTACK_TIMEOUT) as client:
                while self.alive():
                    with lock:
                        job = next(pending, None)
                    if job is None:
                        return
                    path, make = job
                    answer = self.post(client, path, make())
                    with lock:
                        answers.append(answer)

        workers = [threading.Thread(target=work, daemon=True) for _ in range(at_once)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        return answers


def summary(answers: list[Answer], sent: int) -> str:
    verdicts: dict[str, int] = {}
    for answer in answers:
        verdicts[answer.verdict] = verdicts.get(answer.verdict, 0) + 1
    counted = ", ".join(f"{n} {v}" for v, n in sorted(verdicts.items(), key=lambda kv: -kv[1]))
    worst = max((a.seconds for a in answers), default=float("nan"))
    text = f"{len(answers)}/{sent} answered ({counted or 'none'}), slowest {worst:.2f} s"
    return text


@dataclasses.dataclass
class Attack:
    key: str
    name: str
    world: Callable[[dict[str, str]], World]
    """What the API server holds, given the registries' hosts."""
    run: Callable[[Driver, dict[str, str], Servers], tuple[str, bool]] = lambda *_: ("", True)
    """The attack once everything is listed: a note for the table and whether the attack's
    own target was met."""
    at_start: bool = False
    """The attack is what is listed at start: the table says how long listing took."""
    settle: float = SETTLE
    clean_stderr: bool = False
    """A traceback on the process's stderr misses the target."""


def quiet(_hosts: dict[str, str]) -> World:
    return World.quiet()


def flood(driver: Driver, hosts: dict[str, str], _servers: Servers) -> tuple[str, bool]:
    image = f"{hosts['registry']}/tenant/app:1"

    def job(name: str, tolerations: int) -> tuple[str, Callable[[], bytes]]:
        def body() -> bytes:
            obj = deployment_object(name, image, tolerations, tag=name.rpartition("-")[2] + "-")
            return admission_review(obj, dry_run=True)

        return "/validate-deployments", body

    big = [job(f"flood-big-b{i:02d}", 35_000) for i in range(35)]
    size = len(big[0][1]())
    answers = driver.post_many(big, FLOOD_AT_ONCE)
    small = [job(f"flood-small-s{i:03d}", 1_500) for i in range(300)]
    answers += driver.post_many(small, FLOOD_AT_ONCE)
    note = f"35 x {size / MiB:.1f} MiB + 300 dry runs: {summary(answers, 335)}"
    return note, True


def pending_world(hosts: dict[str, str]) -> World:
    image = f"{hosts['registry']}/tenant/app:1"

    def item(i: int) -> bytes:
        pad = f"{i:06d}" + "x" * (MiB - 6)
        return compact(pod_object(f"pending-{i:03d}", [image], annotations={"pad": pad}))

    return World.quiet().holding("/api/v1/pods", 200, item)


def stores_world(hosts: dict[str, str]) -> World:
    image = f"{hosts['registry']}/tenant/app:1"

    def deployment(i: int) -> bytes:
        return compact(
            deployment_object(f"wide-{i:02d}", image, 35_000, tag=f"w{i:02d}-", replicas=0)
        )

    def pod(i: int) -> bytes:
        # Upper case is never valid in a repository: each is an invalid reference of 20 KiB.
        images = [f"INVALID/{i:03d}-{c:02d}-" + "X" * (20 * 1024 - 15) for c in range(64)]
        return compact(pod_object(f"long-{i:03d}", images, node="node-amd64", phase="Running"))

    world = World.quiet().holding("/apis/apps/v1/deployments", 40, deployment)
    return world.holding("/api/v1/pods", 100, pod)


SECRETS_PER_POD = 16
SECRET_PODS = 4


def secrets_world(_hosts: dict[str, str]) -> World:
    world = World.quiet()
    for k in range(SECRETS_PER_POD * SECRET_PODS):
        name = f"pull-{k:02d}"
        world.secrets[(NAMESPACE, name)] = functools.partial(pull_secret, name, MiB)
    return world


def secrets(driver: Driver, hosts: dict[str, str], _servers: Servers) -> tuple[str, bool]:
    image = f"{hosts['registry']}/tenant/app:1"
    jobs = []
    for _round in range(3):
        for p in range(SECRET_PODS):
            names = [f"pull-{p * SECRETS_PER_POD + j:02d}" for j in range(SECRETS_PER_POD)]
            obj = pod_object(f"secretive-{p}", [image], pull_secrets=names)
            jobs.append(("/validate-pods", functools.partial(admission_review, obj)))
    answers: list[Answer] = []
    for start in range(0, len(jobs), SECRET_PODS):  # each round's 4 pods at once
        answers += driver.post_many(jobs[start : start + SECRET_PODS], SECRET_PODS)
    return f"64 x 1 MiB secrets, 3 x 4 pods: {summary(answers, len(jobs))}", True


def held_registry(driver: Driver, hosts: dict[str, str], servers: Servers) -> tuple[str, bool]:
    jobs = []
    for p in range(4):
        images = [f"{hosts['held']}/tenant/held-{p}-{i:02d}:1" for i in range(64)]
        obj = pod_object(f"held-{p}", images)
        jobs.append(("/validate-pods", functools.partial(admission_review, obj)))
    answers = driver.post_many(jobs, len(jobs))
    within = len(answers) == len(jobs) and all(
        a.status == 200 and a.seconds <= ANSWER_BOUND for a in answers
    )
    reached = servers.held_requests
    note = f"4 x 64 images: {summary(answers, 4)}; {reached} requests reached the 429 registry"
    return note, within


def deep(driver: Driver, _hosts: dict[str, str], _servers: Servers) -> tuple[str, bool]:
    depth = 100_000
    body = (
        b'{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":'
        b'{"uid":"deep","operation":"CREATE","object":'
        + b'{"a":' * depth
        + b"1"
        + b"}" * depth
        + b"}}"
    )
    with httpx.Client(verify=driver.context, timeout=ATTACK_TIMEOUT) as client:
        answer = driver.post(client, "/validate-pods", body)
    ok = 400 <= answer.status < 500
    return (
        f"{depth:,} deep, {len(body) / MiB:.2f} MiB: {answer.verdict} in {answer.seconds:.2f} s",
        ok,
    )


ATTACKS = [
    Attack("baseline", "baseline: nothing hostile", quiet),
    Attack("flood", "dry-run flood: 35 x 35,000 + 300 x 1,500 tolerations", quiet, flood),
    Attack("pending", "start-up: 200 Pending pods of 1 MiB", pending_world, at_start=True),
    Attack(
        "stores",
        "stores: 40 x 35,000 tolerations, 100 pods x 64 x 20 KiB images",
        stores_world,
        at_start=True,
        settle=5.0,
    ),
    Attack("secrets", "pull secrets: 64 x 1 MiB, 16 per pod", secrets_world, secrets),
    Attack("held", "held registry: 429, Retry-After 1e9", quiet, held_registry),
    Attack("deep", "deep JSON: 100,000 levels", quiet, deep, clean_stderr=True),
]


# -- the cgroup -----------------------------------------------------------------------------------


class Cgroup:
    """A cgroup-v1 memory cgroup limited to ``LIMIT_BYTES``, swap included where accounted."""

    def __init__(self, n: int) -> None:
        self.path = CGROUP_ROOT / f"archwarden-bench-{os.getpid()}-{n}"
        self._procs = str(self.path / "cgroup.procs")

    def create(self) -> Cgroup:
        self.path.mkdir()
        try:
            (self.path / "memory.limit_in_bytes").write_text(str(LIMIT_BYTES))
        except OSError:
            self.remove()
            raise
        with contextlib.suppress(OSError):  # absent without swap accounting
            (self.path / "memory.memsw.limit_in_bytes").write_text(str(LIMIT_BYTES))
        return self

    def enter(self) -> None:
        """``preexec_fn``: the child joins the cgroup between fork and exec. Plain system
        calls only (other threads of this process may hold Python-level locks)."""
        fd = os.open(self._procs, os.O_WRONLY)
        try:
            os.write(fd, str(os.getpid()).encode())
        finally:
            os.close(fd)

    def read(self, name: str) -> str:
        return (self.path / name).read_text()

    def stats(self) -> tuple[float, int, int]:
        """Peak MiB, OOM kills and how often the limit was hit."""
        oom_kills = 0
        for line in self.read("memory.oom_control").splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                oom_kills = int(value)
        peak = int(self.read("memory.max_usage_in_bytes")) / MiB
        return peak, oom_kills, int(self.read("memory.failcnt"))

    def remove(self) -> None:
        for _ in range(50):
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.1)  # the killed process's last pages are still being released
        print(f"warning: could not remove {self.path}", file=sys.stderr)


# -- one attack -----------------------------------------------------------------------------------


@dataclasses.dataclass
class Row:
    attack: str
    oom: bool = False
    killed: bool = False
    """The process under test died of SIGKILL before the bench stopped it."""
    peak_mib: float = float("nan")
    rss_mib: float = float("nan")
    probe: dict[str, Any] = dataclasses.field(default_factory=dict)
    health_ms: float = float("nan")
    lag_ms: float = float("nan")
    note: str = ""
    met: bool = True
    """The attack's own target (not OOM, probes and /healthz are judged separately)."""

    @property
    def within(self) -> bool:
        return (
            self.met
            and not self.oom
            and self.peak_mib < LIMIT_BYTES / MiB
            and bool(self.probe)
            and self.probe["failed"] == 0
            and self.probe["max_s"] <= ANSWER_BOUND
            and self.health_ms < HEALTH_BOUND_MS
        )


class Lines:
    """The process under test's stdout, one JSON object a line, read on a thread."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.process = process
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._seen: dict[str, Any] = {}
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with contextlib.suppress(ValueError):
                self._queue.put(json.loads(line))
        self._queue.put(None)

    def wait(self, key: str, timeout: float) -> Any:
        """The value printed under ``key``; None when the process ended or time ran out."""
        deadline = time.monotonic() + timeout
        while key not in self._seen:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                item = self._queue.get(timeout=min(left, 0.2))
            except queue.Empty:
                continue
            if item is None:
                return None
            self._seen.update(item)
        return self._seen[key]


def prober(args: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, __file__, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT / "operator")},
    )


def tell(process: subprocess.Popen[str], line: str) -> None:
    assert process.stdin is not None
    with contextlib.suppress(OSError):
        process.stdin.write(line + "\n")
        process.stdin.flush()


def finish(process: subprocess.Popen[str]) -> str:
    """Tell a prober to stop; its last line (its result)."""
    try:
        out = process.communicate("stop\n", timeout=ATTACK_TIMEOUT + 10)[0]
    except (subprocess.TimeoutExpired, OSError, ValueError):
        return ""
    return out.strip().splitlines()[-1] if out.strip() else ""


def end(process: subprocess.Popen[Any]) -> None:
    if process.poll() is None:
        process.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(10)


def run_attack(attack: Attack, n: int, servers: Servers, workdir: Path) -> Row:
    workdir.mkdir(parents=True)
    kubeconfig = workdir / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {"name": "c", "cluster": {"server": f"http://{servers.hosts['api']}"}}
                ],
                "users": [{"name": "u", "user": {}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    hosts = servers.hosts
    servers.reset(attack.world(hosts))
    registries = {hosts[name]: {"insecure": True} for name in ("registry", "held")}
    spec = {
        "config": {
            "registries": registries,
            "webhook": {"budgetSeconds": BUDGET},
            "limits": LIMITS,
            "reports": {"enabled": False},  # no openreports.io CRDs on the fake API server
        },
        "kubeconfig": str(kubeconfig),
        "workdir": str(workdir / "tls"),
        "webhook_port": free_port(),
        "health_port": free_port(),
    }
    row = Row(attack.name)
    stderr_path = workdir / "stderr"
    cgroup = Cgroup(n).create()
    children: list[subprocess.Popen[Any]] = []
    oom_kills = failcnt = 0
    try:
        with stderr_path.open("wb") as stderr:
            process = subprocess.Popen(
                [sys.executable, __file__, "--target", json.dumps(spec)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr,
                # KUBECONFIG too: nothing in it may fall back to a real cluster's credentials.
                env={
                    **os.environ,
                    "PYTHONPATH": str(ROOT / "operator"),
                    "KUBECONFIG": str(kubeconfig),
                },
                preexec_fn=cgroup.enter,  # plain system calls only: see Cgroup.enter
            )
        children.append(process)
        try:
            drive(attack, row, process, Lines(process), spec, hosts, servers, children)
        except Exception as exc:  # the bench's own failure: this row says so, the rest run
            row.note, row.met = f"bench error: {type(exc).__name__}: {exc}", False
    finally:
        for child in reversed(children):
            end(child)
        try:
            row.peak_mib, oom_kills, failcnt = cgroup.stats()
        finally:
            cgroup.remove()
    row.oom = oom_kills > 0 or row.killed
    notes = [row.note] if row.note else []
    if failcnt and not row.oom:
        notes.append(f"limit hit {failcnt} times")
    errors = stderr_path.read_text(errors="replace")
    if "Traceback" in errors:
        notes.append(f"{errors.count('Traceback')} traceback(s) on stderr")
        row.met = row.met and not attack.clean_stderr
    elif attack.clean_stderr:
        notes.append("no traceback on stderr")
    row.note = "; ".join(notes)
    return row


def drive(
    attack: Attack,
    row: Row,
    process: subprocess.Popen[bytes],
    lines: Lines,
    spec: dict[str, Any],
    hosts: dict[str, str],
    servers: Servers,
    children: list[subprocess.Popen[Any]],
) -> None:
    ca_file = lines.wait("ca_file", START_TIMEOUT)
    if ca_file is None:
        row.note, row.met = "did not start", False
        return
    url = f"https://127.0.0.1:{spec['webhook_port']}"
    context = ssl.create_default_context(cafile=ca_file)
    image = f"{hosts['registry']}/tenant/probe:1"
    # One ordinary review first: a running archwarden has long done its first-use work.
    with (
        httpx.Client(verify=context, timeout=ATTACK_TIMEOUT) as client,
        contextlib.suppress(httpx.HTTPError),
    ):
        client.post(f"{url}/validate-pods", content=admission_review(pod_object("warm", [image])))
    health = prober(["--probe", f"http://127.0.0.1:{spec['health_port']}/healthz"])
    children.append(health)
    reviews = prober(
        [
            "--probe-reviews",
            json.dumps({"url": f"{url}/validate-pods", "ca_file": ca_file, "image": image}),
        ]
    )
    children.append(reviews)
    for started in (health, reviews):
        assert started.stdout is not None
        started.stdout.readline()  # "ready"
        tell(started, "reset")
    process.send_signal(signal.SIGUSR1)  # the attack starts: lists, then the attack's requests
    seconds = lines.wait("listed", LIST_TIMEOUT)
    driver = Driver(url, context, process)
    notes = []
    if seconds is not None and attack.at_start:
        notes.append(f"listed in {seconds:.1f} s")
    elif seconds is None and driver.alive():
        notes.append(f"not listed within {LIST_TIMEOUT:g} s")
    if driver.alive():
        note, row.met = attack.run(driver, hosts, servers)
        if note:
            notes.append(note)
        time.sleep(attack.settle)
    if not driver.alive():
        code = process.returncode
        row.killed, row.met = code == -signal.SIGKILL, False
        when = "while listing" if seconds is None else "after listing"
        notes.append(f"died {when}" + ("" if row.killed else f" (exit status {code})"))
    relisted = {p: c for p, c in servers.listed.items() if c > 1}
    notes += [f"{p} listed {c} times" for p, c in relisted.items()]
    result = finish(reviews)
    row.probe = json.loads(result) if result else {}
    health_out = finish(health)
    row.health_ms = float(health_out) if health_out else float("nan")
    if driver.alive():
        row.rss_mib = peak_rss_mib(process.pid)
        process.terminate()
        lag = lines.wait("lag_ms", 10)
        row.lag_ms = float("nan") if lag is None else float(lag)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(10)
    row.note = "; ".join(notes)


# -- the table ------------------------------------------------------------------------------------


def figure(value: float, unit: str = "") -> str:
    """``value`` rounded, or "-" when not measured (NaN)."""
    return "-" if value != value else f"{value:.0f}{unit}"


def table(rows: list[Row]) -> str:
    out = [
        "| attack | OOM | peak cgroup MiB | peak RSS MiB | max probe answer | max /healthz "
        "| loop lag | notes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        probe_text = "-"
        if row.probe:
            probe_text = f"{row.probe['max_s']:.2f} s"
            if row.probe["failed"]:
                probe_text += f" ({row.probe['failed']}/{row.probe['sent']} failed)"
        out.append(
            f"| {row.attack} | {'yes' if row.oom else 'no'} | {figure(row.peak_mib)} "
            f"| {figure(row.rss_mib)} | {probe_text} | {figure(row.health_ms, ' ms')} "
            f"| {figure(row.lag_ms, ' ms')} | {row.note} |"
        )
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated: " + ",".join(a.key for a in ATTACKS))
    parser.add_argument("--target", help=argparse.SUPPRESS)
    parser.add_argument("--probe", help=argparse.SUPPRESS)
    parser.add_argument("--probe-reviews", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe:
        probe(args.probe)
        return 0
    if args.probe_reviews:
        probe_reviews(json.loads(args.probe_reviews))
        return 0
    if args.target:
        asyncio.run(target(json.loads(args.target)))
        return 0
    chosen = ATTACKS
    if args.only:
        keys = set(args.only.split(","))
        chosen = [a for a in ATTACKS if a.key in keys]
        if unknown := keys - {a.key for a in ATTACKS}:
            parser.error(f"unknown attacks: {', '.join(sorted(unknown))}")
    try:
        Cgroup(0).create().remove()
    except OSError as exc:
        print(
            f"tenants.py: cannot create a memory cgroup under {CGROUP_ROOT} "
            f"({exc.strerror or exc}); run as root on a cgroup-v1 host",
            file=sys.stderr,
        )
        return 2

    def interrupted(_signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    servers = Servers().start()
    rows: list[Row] = []
    try:
        with tempfile.TemporaryDirectory(prefix="archwarden-tenants-") as tmp:
            for n, attack in enumerate(chosen, 1):
                started = time.monotonic()
                rows.append(run_attack(attack, n, servers, Path(tmp) / str(n)))
                print(
                    f"  {attack.key}: {time.monotonic() - started:.0f} s, "
                    f"{'OOM killed' if rows[-1].oom else 'survived'}",
                    file=sys.stderr,
                    flush=True,
                )
    except KeyboardInterrupt:
        print(
            "tenants.py: interrupted (targets, probes, cgroups and files removed)", file=sys.stderr
        )
        return 130
    finally:
        servers.stop()
    print(table(rows))
    missed = [row.attack.split(":")[0] for row in rows if not row.within]
    print(
        f"\ntargets (no OOM, peak < {LIMIT_BYTES // MiB} MiB, every probe answered within "
        f"{ANSWER_BOUND:g} s, /healthz < {HEALTH_BOUND_MS:g} ms, each attack's own): "
        + ("all met" if not missed else "MISSED by " + ", ".join(missed))
    )
    print(f"\ncommand: cd {ROOT} && PYTHONPATH=$PWD/operator {sys.executable} bench/tenants.py")
    return 0 if not missed else 1


if __name__ == "__main__":
    sys.exit(main())
