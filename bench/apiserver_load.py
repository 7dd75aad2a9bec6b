"""Pod creation through the real API server, the way Kyverno measures its webhook (issue 20).

Run: `.venv/bin/python bench/apiserver_load.py [--scenarios smoke,average,...] [--scale F]`
against the local cluster already up (ARCHWARDEN_CLUSTER_DIR, default .cluster/).

Kyverno's published scenarios (kyverno/load-testing, k6/tests/kyverno-pss.js with the
thresholds of k6/tests/config.js) are translated below into vegeta runs (k6 is AGPL and not
used). Every request is what their script sends: POST /api/v1/namespaces/NS/pods of a one-
container pod (their security context, terminationGracePeriodSeconds 0), checked like theirs:
the answer must be 201. The pods name a multi-arch image of the cluster registry, carry a
schedulerName no scheduler serves (they stay Pending: judged, never scheduled, nothing lands
on the real node) and are deleted after each scenario.

Three targets, side by side in one run, scenario by scenario (so that whatever else runs on the
machine meanwhile weighs on all three alike), each in its own namespace:

1. none: no webhook is called for that namespace;
2. noop: a validating and a mutating webhook (the pod webhooks archwarden's chart registers,
   same failurePolicy Fail and timeout) calling a bare aiohttp TLS server on 127.0.0.1 that
   only parses the review and answers allowed (bench/admission.py's baseline);
3. archwarden: charts/archwarden installed by helm as tests/install installs it (2 replicas on
   the real node, PDB, failurePolicy Fail), its webhooks restricted to the bench's namespace.

During archwarden's runs a sample of dry-run pod creations (1/s, half of them an amd64-only
image pinned to arm64 nodes that must be denied with archwarden's message, half multi-arch
that must come back mutated) checks the answers under load (tests/support/admission_load.py),
and every 201 of archwarden's load is checked for the node affinity it injects. During its
average scenario one replica is deleted (grace 0) and, once replaced, the other: every failed
admission is counted.

Figures: requests, checks (share of 201), p50/p95/p99 latency, each p95 also as a ratio to the
no-webhook p95 of the same scenario in the same run, and each target's breakpoint rate. The
durations can be shortened with --scale (0.1: a tenth of Kyverno's); the scale is printed.
Everything created is removed (namespaces, the helm release, webhook configurations, the
no-op server, temporary files).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import csv
import json
import math
import os
import secrets
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# The pinned vegeta, built from its Go module when missing (one definition for every bench).
from bench.admission import vegeta_binary

ROOT = Path(__file__).resolve().parent.parent

# -- Kyverno's scenarios, transcribed ------------------------------------------------------------


@dataclass(frozen=True)
class Stage:
    """A k6 stage: reach ``target`` (VUs, or iterations/s) linearly over ``seconds``."""

    seconds: float
    target: float


@dataclass(frozen=True)
class Scenario:
    name: str
    executor: str  # constant-vus, ramping-vus or ramping-arrival-rate (k6's executors)
    stages: tuple[Stage, ...]
    start: float = 1.0  # k6's startVUs (1 by default) or startRate (0 by default)
    pre_allocated: int = 0  # preAllocatedVUs of the arrival-rate executor
    max_vus: int = 0  # maxVUs of the arrival-rate executor
    checks: float = 0.99  # threshold: checks rate > this
    p95_ms: float | None = None  # threshold: p(95) of http_req_duration < this


# kyverno/load-testing k6/tests/kyverno-pss.js (scenarios) and k6/tests/config.js (thresholds:
# SMOKE_RATE .. BREAKPOINT_RATE 0.99; SMOKE_DURATION 600, AVERAGE 800, STRESS 1600, SOAK 800,
# SPIKE 3200 ms; the breakpoint has a checks threshold only).
SCENARIOS: dict[str, Scenario] = {
    # constant-vus, vus 2, duration 20s
    "smoke": Scenario("smoke", "constant-vus", (Stage(20, 2),), start=2, p95_ms=600),
    # ramping-vus: 30s -> 5, 3m at 5, 30s -> 0
    "average": Scenario(
        "average", "ramping-vus", (Stage(30, 5), Stage(180, 5), Stage(30, 0)), p95_ms=800
    ),
    # ramping-vus: 1m -> 10, 3m at 10, 30s -> 0
    "stress": Scenario(
        "stress", "ramping-vus", (Stage(60, 10), Stage(180, 10), Stage(30, 0)), p95_ms=1600
    ),
    # ramping-vus: 1m -> 100, no plateau, 30s -> 0
    "spike": Scenario("spike", "ramping-vus", (Stage(60, 100), Stage(30, 0)), p95_ms=3200),
    # ramping-vus: 30s -> 5, 30m at 5, 30s -> 0
    "soak": Scenario(
        "soak", "ramping-vus", (Stage(30, 5), Stage(1800, 5), Stage(30, 0)), p95_ms=800
    ),
    # ramping-arrival-rate: 0 -> 300 iterations/s over 10m, preAllocatedVUs 20, maxVUs 200
    "breakpoint": Scenario(
        "breakpoint",
        "ramping-arrival-rate",
        (Stage(600, 300),),
        start=0,
        pre_allocated=20,
        max_vus=200,
    ),
}
ORDER = ("smoke", "average", "stress", "spike", "soak", "breakpoint")

RAMP_PIECE = 10.0
"""A k6 ramp is cut into pieces of this many of its (unscaled) seconds, each run at the VU
count (or rate) the ramp has at the piece's middle: vegeta cannot ramp by itself."""
ARRIVAL_PIECE = 30.0
"""The breakpoint's rate ramp is cut into pieces of 30 s (20 rates from 7.5 to 292.5/s)."""
BREAKPOINT_P95_MS = 1600.0
"""Kyverno's breakpoint aborts on checks alone; a rate is only called held here when its p95 is
also under this (their stress threshold), and when at least HELD_FRACTION of it was sent."""
HELD_FRACTION = 0.9


@dataclass(frozen=True)
class Step:
    """One vegeta attack. ``rate`` 0: closed loop, ``workers`` each sending its next request as
    soon as the last was answered (what k6 VUs without sleep do: `-rate=0 -workers=N
    -max-workers=N`). ``rate`` > 0: open loop at that many requests/s (k6's arrival-rate
    executors: `-rate=R -workers=preAllocatedVUs -max-workers=maxVUs`)."""

    seconds: float
    workers: int
    rate: float = 0.0
    max_workers: int = 0

    def vegeta_args(self, cap: float = 0.0) -> list[str]:
        """``cap`` > 0: never more than that many requests/s (tiny runs on a shared machine)."""
        if self.rate:
            rate = min(self.rate, cap) if cap else self.rate
            return [
                f"-rate={rate:g}/1s",
                f"-workers={self.workers}",
                f"-max-workers={self.max_workers}",
            ]
        rate = f"{cap:g}/1s" if cap else "0"
        return [f"-rate={rate}", f"-workers={self.workers}", f"-max-workers={self.workers}"]


def _round(x: float) -> int:
    return math.floor(x + 0.5)


def plan(scenario: Scenario, scale: float = 1.0) -> list[Step]:
    """vegeta steps for a k6 scenario, durations times ``scale``.

    constant-vus N for D: one closed-loop step of N workers for D. ramping-vus: a stage whose
    target equals the current VU count is one step; a ramp is cut into pieces of RAMP_PIECE
    seconds, each with the (rounded) VU count at its middle; pieces of 0 VUs send nothing and
    are left out (k6 would idle through them). ramping-arrival-rate: pieces of ARRIVAL_PIECE
    seconds at the rate of their middle, open loop, workers from preAllocatedVUs up to maxVUs.
    """
    steps: list[Step] = []
    current = scenario.start
    arrival = scenario.executor == "ramping-arrival-rate"
    for stage in scenario.stages:
        if stage.target == current:
            pieces = 1
        else:
            pieces = max(1, _round(stage.seconds / (ARRIVAL_PIECE if arrival else RAMP_PIECE)))
        for i in range(pieces):
            middle = current + (stage.target - current) * (i + 0.5) / pieces
            seconds = stage.seconds / pieces * scale
            if arrival:
                steps.append(
                    Step(seconds, scenario.pre_allocated, round(middle, 2), scenario.max_vus)
                )
            elif (workers := _round(middle)) > 0:
                steps.append(Step(seconds, workers))
        current = stage.target
    return steps


# -- figures ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    sent: float  # unix seconds
    latency: float  # seconds
    code: int
    error: str = ""
    body: bytes = b""

    @property
    def ok(self) -> bool:
        """Kyverno's check: the pod was created."""
        return self.code == 201


def percentile(values: Sequence[float], pct: float) -> float:
    """Linear interpolation between closest ranks (k6's trend percentiles do the same)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = pct / 100 * (len(ordered) - 1)
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True)
class Summary:
    requests: int
    checks: float  # share of requests answered 201
    p50: float
    p95: float
    p99: float
    seconds: float  # from the first request sent to the last answer

    @property
    def throughput(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    @classmethod
    def of(cls, results: Sequence[Result]) -> Summary:
        if not results:
            return cls(0, math.nan, math.nan, math.nan, math.nan, 0.0)
        latencies = [r.latency for r in results]
        first = min(r.sent for r in results)
        last = max(r.sent + r.latency for r in results)
        return cls(
            len(results),
            sum(r.ok for r in results) / len(results),
            percentile(latencies, 50),
            percentile(latencies, 95),
            percentile(latencies, 99),
            last - first,
        )


def meets(summary: Summary, scenario: Scenario) -> tuple[bool, bool | None]:
    """Kyverno's two thresholds: checks rate > scenario.checks, p(95) < scenario.p95_ms
    (None: the scenario has no latency threshold)."""
    checks = summary.requests > 0 and summary.checks > scenario.checks
    if scenario.p95_ms is None:
        return checks, None
    return checks, summary.p95 * 1000 < scenario.p95_ms


def held(step: Step, summary: Summary, p95_ms: float = BREAKPOINT_P95_MS) -> bool:
    """A breakpoint step held: checks > 99%, p95 under ``p95_ms`` and at least HELD_FRACTION of
    its rate sent and answered (an open-loop generator short of workers sends less)."""
    return (
        summary.requests > 0
        and summary.checks > 0.99
        and summary.p95 * 1000 < p95_ms
        and summary.requests >= HELD_FRACTION * step.rate * step.seconds
    )


def breakpoint_rate(steps: Sequence[tuple[Step, Summary]], p95_ms: float) -> float:
    """The highest rate of the ramp held before the first step that was not (0: none held)."""
    best = 0.0
    for step, summary in steps:
        if not held(step, summary, p95_ms):
            break
        best = step.rate
    return best


def ratio(value: float, baseline: float) -> str:
    if not baseline or math.isnan(value) or math.isnan(baseline):
        return "-"
    return f"{value / baseline:.2f}x"


# -- the run ------------------------------------------------------------------------------------

LABEL = "archwarden.io/load-bench"
MULTI = ("load/web", "1")
AMD64_ONLY = ("load/legacy", "1")
TARGETS = ("none", "noop", "archwarden")
NOOP_TIMEOUT = 5  # the chart's webhook.timeoutSeconds


def load_pod(image: str) -> dict[str, Any]:
    """kyverno/load-testing's generatePod, with generateName (vegeta sends one body: the API
    server names the pods) and a scheduler nobody runs."""
    return {
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {"generateName": "load-", "labels": {"app": "k6-test"}},
        "spec": {
            "schedulerName": "archwarden-load-unscheduled",
            "containers": [
                {
                    "name": "test",
                    "image": image,
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "runAsNonRoot": True,
                        "seccompProfile": {"type": "RuntimeDefault"},
                        "capabilities": {"drop": ["ALL"]},
                    },
                }
            ],
            "terminationGracePeriodSeconds": 0,
        },
    }


def mutated(body: bytes) -> bool:
    """archwarden's answer to a multi-arch pod: the arch affinity and its annotation."""
    try:
        pod = json.loads(body)
        terms = pod["spec"]["affinity"]["nodeAffinity"][
            "requiredDuringSchedulingIgnoredDuringExecution"
        ]["nodeSelectorTerms"]
    except (ValueError, KeyError, TypeError):
        return False
    want = {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64", "arm64"]}
    return all(want in t.get("matchExpressions", []) for t in terms) and (
        "archwarden.io/platforms" in (pod["metadata"].get("annotations") or {})
    )


class Vegeta:
    """vegeta against the API server as the kubeconfig's user (its client certificate)."""

    def __init__(self, binary: str, kubeconfig: Path, server: str, tmp: Path) -> None:
        self.binary = binary
        self.server = server
        self.tmp = tmp
        config = _yaml(kubeconfig)
        cluster, user = config["clusters"][0]["cluster"], config["users"][0]["user"]
        for key, name in (
            ("certificate-authority-data", "ca.crt"),
            ("client-certificate-data", "client.crt"),
            ("client-key-data", "client.key"),
        ):
            path = tmp / name
            path.touch(mode=0o600)
            path.write_bytes(base64.b64decode(cluster.get(key) or user[key]))

    def targets(self, namespace: str, body: dict[str, Any]) -> Path:
        (self.tmp / f"{namespace}.json").write_text(json.dumps(body))
        path = self.tmp / f"{namespace}.targets"
        path.write_text(
            f"POST {self.server}/api/v1/namespaces/{namespace}/pods\n"
            f"Content-Type: application/json\n@{self.tmp / f'{namespace}.json'}\n"
        )
        return path

    def attack(self, targets: Path, step: Step, cap: float = 0.0) -> list[Result]:
        out = self.tmp / "results.bin"
        subprocess.run(
            [self.binary, "attack", f"-targets={targets}", f"-duration={step.seconds:g}s",
             *step.vegeta_args(cap), "-http2=false", "-keepalive=true", "-timeout=60s",
             f"-cert={self.tmp / 'client.crt'}", f"-key={self.tmp / 'client.key'}",
             f"-root-certs={self.tmp / 'ca.crt'}", "-max-body=65536",
             f"-output={out}"],
            check=True, timeout=step.seconds + 120,
        )  # fmt: skip
        encoded = subprocess.run(
            [self.binary, "encode", "-to=csv", str(out)],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        out.unlink()
        results = []
        for row in csv.reader(encoded.splitlines()):
            results.append(
                Result(
                    sent=int(row[0]) / 1e9,
                    latency=int(row[2]) / 1e9,
                    code=int(row[1]),
                    error=row[5],
                    body=base64.b64decode(row[6]),
                )
            )
        return results


def _yaml(path: Path) -> Any:
    import yaml

    return yaml.safe_load(path.read_text())


@dataclass
class Run:
    """What one scenario against one target gave."""

    results: list[Result] = field(default_factory=list)
    steps: list[tuple[Step, Summary]] = field(default_factory=list)
    mutated: int = 0
    checked: int = 0
    notes: list[str] = field(default_factory=list)


def run_scenario(
    vegeta: Vegeta,
    targets: Path,
    scenario: Scenario,
    scale: float,
    check_mutation: bool,
    cap: float = 0.0,
    breakpoint_p95: float = BREAKPOINT_P95_MS,
) -> Run:
    run = Run()
    for step in plan(scenario, scale):
        results = vegeta.attack(targets, step, cap)
        summary = Summary.of(results)
        run.steps.append((step, summary))
        for r in results:
            if check_mutation and r.ok:
                run.checked += 1
                run.mutated += mutated(r.body)
            # Bodies of failures only: their messages are reported.
            run.results.append(Result(r.sent, r.latency, r.code, r.error, b"" if r.ok else r.body))
        if scenario.executor == "ramping-arrival-rate" and not held(step, summary, breakpoint_p95):
            # k6 aborts a breakpoint run when its threshold fails; so does this, one step late
            # at most: nothing above the first rate not held is asked of a shared machine.
            break
    return run


def noop_webhooks(name: str, url: str, ca: bytes, selector: dict[str, str]) -> list[Any]:
    """The pod webhooks of archwarden's chart (validate-pods CREATE/UPDATE, mutate-pods
    CREATE), pointing at the no-op server."""

    def hook(path: str, operations: list[str]) -> dict[str, Any]:
        return {
            "name": f"{path}.{name}.archwarden.io",
            "clientConfig": {"url": url.rsplit("/", 1)[0] + "/" + path, "caBundle": ca.decode()},
            "rules": [
                {
                    "apiGroups": [""],
                    "apiVersions": ["v1"],
                    "resources": ["pods"],
                    "operations": operations,
                    "scope": "Namespaced",
                }
            ],
            "failurePolicy": "Fail",
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            "timeoutSeconds": NOOP_TIMEOUT,
            "namespaceSelector": {"matchLabels": selector},
        }

    meta = {"name": name, "labels": {LABEL: "noop"}}
    return [
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration",
            "metadata": meta,
            "webhooks": [hook("validate-pods", ["CREATE", "UPDATE"])],
        },
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "metadata": meta,
            "webhooks": [{**hook("mutate-pods", ["CREATE"]), "reinvocationPolicy": "Never"}],
        },
    ]


class Killer(threading.Thread):
    """During archwarden's average scenario: delete one replica (grace 0) once the ramp is
    over and, when two replicas are Ready again, the other original one."""

    def __init__(self, release: Any, start_after: float) -> None:
        super().__init__(name="killer", daemon=True)
        self.release = release
        self.start_after = start_after
        self.events: list[tuple[float, str]] = []
        self.began = 0.0
        self.stop = threading.Event()

    def note(self, what: str) -> None:
        self.events.append((time.time(), what))

    def run(self) -> None:
        self.began = time.time()
        if self.stop.wait(self.start_after):
            return
        originals = sorted(self.release.ready_pods())
        for victim in originals:
            self.release.cluster.kubectl(
                "delete", "pod", victim, "-n", self.release.namespace,
                "--grace-period=0", "--force", "--wait=false", check=False,
            )  # fmt: skip
            self.note(f"deleted {victim} (grace 0)")
            while not self.stop.wait(0.5):
                ready = set(self.release.ready_pods())
                if len(ready) >= 2 and victim not in ready:
                    self.note(f"2 replicas Ready again: {', '.join(sorted(ready))}")
                    break
            if self.stop.is_set():
                self.note("the scenario ended first")
                return


def failures(results: Sequence[Result], since: float) -> list[str]:
    """Non-201 answers, grouped by code and message, with when they happened."""
    groups: dict[str, list[float]] = {}
    for r in results:
        if not r.ok:
            reason = r.error or (r.body[:200].decode(errors="replace") if r.body else "")
            groups.setdefault(f"HTTP {r.code} {reason}".strip(), []).append(r.sent - since)
    return [f"{len(t)} x {k} (+{min(t):.1f}s .. +{max(t):.1f}s)" for k, t in sorted(groups.items())]


@contextlib.contextmanager
def step_out(what: str) -> Iterator[None]:
    print(f"-- {what}", flush=True)
    yield


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenarios", default=",".join(ORDER), help="comma separated")
    parser.add_argument("--scale", type=float, default=1.0, help="durations times this")
    parser.add_argument(
        "--targets", default=",".join(TARGETS), help="comma separated, of none,noop,archwarden"
    )
    parser.add_argument("--breakpoint-p95", type=float, default=BREAKPOINT_P95_MS, help="ms")
    parser.add_argument("--no-kill", action="store_true", help="no replica deleted")
    parser.add_argument(
        "--max-rate",
        type=float,
        default=0.0,
        help="requests/s never exceeded (tiny trial runs on a shared machine; 0: no cap)",
    )
    args = parser.parse_args(argv)
    names = [s for s in args.scenarios.split(",") if s]
    targets = [t for t in args.targets.split(",") if t]
    unknown = [*(set(names) - set(SCENARIOS)), *(set(targets) - set(TARGETS))]
    if unknown:
        parser.error(f"unknown: {', '.join(sorted(unknown))}")
    signal.signal(signal.SIGTERM, _interrupted)
    print("$ " + shlex.join(sys.orig_argv), flush=True)
    print(
        f"scale {args.scale:g} (Kyverno's durations times {args.scale:g}); machine: "
        f"{os.cpu_count()} CPUs shared by vegeta, the control plane, the real node and its "
        "archwarden replicas, the no-op server and whatever else runs on it",
        flush=True,
    )
    if args.max_rate:
        print(f"capped at {args.max_rate:g} requests/s: not Kyverno's load", flush=True)
    figures = Figures()
    try:
        measure(
            figures,
            names,
            targets,
            args.scale,
            not args.no_kill,
            args.max_rate,
            args.breakpoint_p95,
        )
    finally:
        # What was measured is reported even when a later scenario failed.
        report(figures, names, targets, args.scale, args.breakpoint_p95)


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


@dataclass
class Figures:
    runs: dict[tuple[str, str], Run] = field(default_factory=dict)
    sample: Any = None
    kill: list[str] = field(default_factory=list)
    kill_apiserver: dict[str, float] = field(default_factory=dict)


def measure(
    figures: Figures,
    names: list[str],
    targets: list[str],
    scale: float,
    kill: bool,
    cap: float,
    breakpoint_p95: float,
) -> None:
    from bench.admission import baseline_server
    from tests.cluster.cluster import LocalCluster
    from tests.install.conftest import (
        Release,
        apiserver_webhook_counts,
        build_image,
        chart_values,
    )
    from tests.support.admission_load import AdmissionLoad
    from tests.support.images import PlainRegistry, Seeder

    from archwarden import certs

    cluster = LocalCluster()
    if not cluster.is_healthy():
        raise SystemExit(f"no healthy cluster in {cluster.state_dir} (make cluster-up)")
    suffix = secrets.token_hex(3)
    namespaces = {t: f"aw-load-{t}-{suffix}" for t in targets}
    noop_name = f"aw-load-noop-{suffix}"
    release: Any = None
    cleanups: list[Callable[[], Any]] = []
    with tempfile.TemporaryDirectory(prefix="archwarden-apiserver-load-") as tmpdir:
        tmp = Path(tmpdir)
        try:
            registry = PlainRegistry(cluster.registry)
            with Seeder(registry) as seeder:
                seeder.push_multiarch(*MULTI, ["linux/amd64", "linux/arm64"])
                seeder.push_image(*AMD64_ONLY, "linux/amd64")
            multi = f"{registry.host}/{MULTI[0]}:{MULTI[1]}"
            amd64_only = f"{registry.host}/{AMD64_ONLY[0]}:{AMD64_ONLY[1]}"
            for target, namespace in namespaces.items():
                cleanups.append(lambda n=namespace: cluster.delete_namespace(n))
                cluster.create_namespace(namespace)
                cluster.kubectl("label", "namespace", namespace, f"{LABEL}={target}-{suffix}")
            if "noop" in targets:
                with step_out("the no-op webhook server on 127.0.0.1"):
                    files = certs.write_dev_certificates(tmp / "noop")
                    server = baseline_server(files.cert_file, files.key_file)
                    url = server.__enter__()
                    cleanups.append(lambda: server.__exit__(None, None, None))
                    cleanups.append(
                        lambda: cluster.kubectl(
                            "delete",
                            "validatingwebhookconfiguration,mutatingwebhookconfiguration",
                            noop_name,
                            "--ignore-not-found",
                            check=False,
                        )
                    )
                    cluster.apply(
                        {
                            "apiVersion": "v1",
                            "kind": "List",
                            "items": noop_webhooks(
                                noop_name,
                                url,
                                base64.b64encode(files.ca_file.read_bytes()),
                                {LABEL: f"noop-{suffix}"},
                            ),
                        }
                    )
            if "archwarden" in targets:
                with step_out("archwarden: the image, helm install (2 replicas)"):
                    image = build_image(cluster)
                    values = chart_values(cluster, image)
                    values["webhook"]["matchExpressions"] = [
                        {"key": LABEL, "operator": "In", "values": [f"archwarden-{suffix}"]}
                    ]
                    release = Release(
                        cluster, f"aw-load-{suffix}", f"aw-load-sys-{suffix}", image, values
                    )
                    cleanups.append(lambda: _uninstall(cluster, release))
                    cluster.kubectl("create", "namespace", release.namespace)
                    started = time.monotonic()
                    release.install_or_upgrade("install")
                    print(f"   installed {image} in {time.monotonic() - started:.0f} s")
            time.sleep(5)  # webhook configurations reach the API server's informers
            vegeta = Vegeta(vegeta_binary(), cluster.kubeconfig, cluster.server, tmp)
            sample = None
            for name in names:
                scenario = SCENARIOS[name]
                for target in targets:
                    namespace = namespaces[target]
                    body = load_pod(multi)
                    body["metadata"]["namespace"] = namespace
                    target_file = vegeta.targets(namespace, body)
                    is_aw = target == "archwarden"
                    killer = None
                    if is_aw:
                        sample = AdmissionLoad(
                            cluster.kubeconfig,
                            namespace,
                            deny_image=amd64_only,
                            admit_image=multi,
                            rate=1,
                            workers=4,
                        )
                        sample.__enter__()
                        if name == "average" and kill:
                            ramp = scenario.stages[0].seconds * scale
                            killer = Killer(release, ramp + 1)
                            before = apiserver_webhook_counts(cluster, release)
                            killer.start()
                    began = time.time()
                    with step_out(f"{name} against {target}"):
                        try:
                            run = run_scenario(
                                vegeta, target_file, scenario, scale, is_aw, cap, breakpoint_p95
                            )
                        finally:
                            if killer is not None:
                                killer.stop.set()
                                killer.join(60)
                            if sample is not None and is_aw:
                                sample.__exit__(None, None, None)
                                figures.sample = _merge_sample(figures.sample, sample.report)
                    figures.runs[(name, target)] = run
                    if killer is not None:
                        after = apiserver_webhook_counts(cluster, release)
                        figures.kill_apiserver = {k: after[k] - before[k] for k in before}
                        figures.kill = [
                            f"+{t - began:.1f}s {what}" for t, what in killer.events
                        ] + [
                            f"failed admissions: {sum(not r.ok for r in run.results)} of "
                            f"{len(run.results)}",
                            *failures(run.results, began),
                        ]
                    s = Summary.of(run.results)
                    print(
                        f"   {s.requests} requests, checks {s.checks:.2%}, p95 "
                        f"{s.p95 * 1000:.0f} ms, {s.throughput:.1f}/s"
                        + (f", mutated {run.mutated}/{run.checked}" if is_aw else ""),
                        flush=True,
                    )
                    _delete_pods(cluster, namespace, tmp)
                    time.sleep(3)
        finally:
            for cleanup in reversed(cleanups):
                try:
                    cleanup()
                except Exception as exc:  # report, and clean up the rest
                    print(f"cleanup failed: {exc}", file=sys.stderr)


def _merge_sample(into: Any, report: Any) -> Any:
    if into is None:
        return report
    into.sent += report.sent
    into.denied += report.denied
    into.admitted += report.admitted
    into.failures += report.failures
    into.latencies += report.latencies
    return into


def _delete_pods(cluster: Any, namespace: str, tmp: Path) -> None:
    """Kyverno's teardown: one DELETE of the collection (tens of thousands of pods would take
    kubectl minutes one by one), then until none is left."""
    import httpx
    from tests.support.admission_load import api_client

    path = f"/api/v1/namespaces/{namespace}/pods"
    with api_client(cluster.kubeconfig, tmp, timeout=120) as client:

        def gone() -> bool:
            # A DELETE of 50,000 pods outlasts the API server's 60 s request timeout (504):
            # what it deleted stays deleted; the next one goes on.
            with contextlib.suppress(httpx.HTTPError):
                client.request("DELETE", path, params={"labelSelector": "app=k6-test"})
            return not client.get(path, params={"limit": 1}).json()["items"]

        cluster.wait_for(gone, timeout=900, interval=1, message=f"pods of {namespace} deleted")


def _uninstall(cluster: Any, release: Any) -> None:
    subprocess.run(
        [str(cluster.helm_path), "uninstall", release.name, "-n", release.namespace,
         "--wait", "--timeout", "120s"],
        env=cluster.env(), capture_output=True, timeout=180, check=False,
    )  # fmt: skip
    # The chart's uninstall hook removes its webhook configurations; should the hook fail, they
    # go here (they would keep rejecting pods of the bench's namespaces while those terminate).
    cluster.kubectl(
        "delete",
        "validatingwebhookconfiguration,mutatingwebhookconfiguration,"
        "mutatingadmissionpolicy,mutatingadmissionpolicybinding",
        "-l",
        f"app.kubernetes.io/instance={release.name}",
        "--ignore-not-found",
        check=False,
    )
    cluster.delete_namespace(release.namespace)
    (cluster.state_dir / f"values-{release.name}.json").unlink(missing_ok=True)


def report(
    figures: Figures, names: list[str], targets: list[str], scale: float, breakpoint_p95: float
) -> None:
    print(f"\nscale {scale:g}; checks: answered 201; x none: p95 over the no-webhook p95")
    print(
        f"{'scenario':<11}{'target':<11}{'requests':>9}{'req/s':>8}{'checks':>9}"
        f"{'p50 ms':>8}{'p95 ms':>8}{'p99 ms':>8}{'x none':>8}  thresholds"
    )
    for name in names:
        scenario = SCENARIOS[name]
        base = figures.runs.get((name, "none"))
        base_p95 = Summary.of(base.results).p95 if base else math.nan
        for target in targets:
            run = figures.runs.get((name, target))
            if run is None:
                continue
            s = Summary.of(run.results)
            checks, latency = meets(s, scenario)
            verdict = f"checks>{scenario.checks:g} {'pass' if checks else 'FAIL'}"
            if latency is not None:
                verdict += f", p95<{scenario.p95_ms:g}ms {'pass' if latency else 'FAIL'}"
            print(
                f"{name:<11}{target:<11}{s.requests:>9}{s.throughput:>8.1f}{s.checks:>9.2%}"
                f"{s.p50 * 1000:>8.0f}{s.p95 * 1000:>8.0f}{s.p99 * 1000:>8.0f}"
                f"{ratio(s.p95, base_p95):>8}  {verdict}"
            )
    if "breakpoint" in names:
        print(
            f"\nbreakpoint (highest rate held: checks > 99%, p95 < {breakpoint_p95:g} ms, "
            f">= {HELD_FRACTION:.0%} of the rate sent)"
        )
        for target in targets:
            run = figures.runs.get(("breakpoint", target))
            if run is None:
                continue
            rate = breakpoint_rate(run.steps, breakpoint_p95)
            last = run.steps[-1]
            print(
                f"  {target:<11}{rate:>7.1f}/s  (last step asked {last[0].rate:g}/s: "
                f"{last[1].throughput:.1f}/s, checks {last[1].checks:.2%}, p95 "
                f"{last[1].p95 * 1000:.0f} ms)"
            )
    mutations = [figures.runs[k] for k in figures.runs if k[1] == "archwarden"]
    if mutations:
        checked = sum(r.checked for r in mutations)
        good = sum(r.mutated for r in mutations)
        print(f"\narchwarden's 201s carrying its arch affinity and annotation: {good}/{checked}")
    if figures.sample is not None:
        sample = figures.sample
        print(f"correctness sample during archwarden's runs (dry runs, 1/s): {sample.summary()}")
        for line in Counter(f.split(" ", 1)[1][:160] for f in sample.failures).most_common(5):
            print(f"  {line[1]} x {line[0]}")
    if figures.kill:
        print("\nreplicas deleted during archwarden's average scenario:")
        for line in figures.kill:
            print(f"  {line}")
        print(f"  API server's webhook counters meanwhile: {figures.kill_apiserver}")
        print("  leader: archwarden has no leader election yet (pending, issue 20)")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        print("interrupted; everything started here is removed", file=sys.stderr)
        sys.exit(130)
