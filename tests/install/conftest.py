"""archwarden as users install it: the image built by `make image`, pushed to the cluster's
registry, installed by `helm install` of charts/archwarden onto the real node, with the chart's
own ServiceAccount, RBAC and generated certificates; the API server reaches it through the
chart's Service."""

from __future__ import annotations

import base64
import copy
import json
import os
import re
import secrets
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.cluster import LocalCluster
from tests.cluster.fixtures import cluster, namespace
from tests.support.images import PlainRegistry, Seeder

__all__ = ["cluster", "image", "images", "namespace", "release"]

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Images:
    amd64_only: str
    multi: str  # linux/amd64 + linux/arm64


@pytest.fixture(scope="package")
def images(cluster: LocalCluster) -> Images:
    registry = PlainRegistry(cluster.registry)
    with Seeder(registry) as seeder:
        seeder.push_image("install/legacy", "2.3", "linux/amd64")
        seeder.push_multiarch("install/web", "1.0", ["linux/amd64", "linux/arm64"])
    return Images(
        amd64_only=f"{registry.host}/install/legacy:2.3", multi=f"{registry.host}/install/web:1.0"
    )


@pytest.fixture(scope="package")
def image(cluster: LocalCluster) -> str:
    """archwarden's image for this machine's platform, built with `make image` and pushed to
    the cluster registry (the four-platform build is tests/image's). ARCHWARDEN_INSTALL_IMAGE
    names an image already pushed there instead (quicker iterations on the chart)."""
    return build_image(cluster)


def build_image(cluster: LocalCluster) -> str:
    """The image fixture's work, for benches too (bench/apiserver_load.py)."""
    prebuilt = os.environ.get("ARCHWARDEN_INSTALL_IMAGE")
    if prebuilt:
        return prebuilt
    ref = f"{cluster.registry}/archwarden/archwarden:install-{secrets.token_hex(3)}"
    result = subprocess.run(
        ["make", "--no-print-directory", "image", f"IMAGE={ref}", "PLATFORMS=linux/amd64"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    if result.returncode != 0:
        raise AssertionError(
            f"make image failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return ref


@dataclass
class Release:
    cluster: LocalCluster
    name: str
    namespace: str
    image: str
    values: dict[str, Any]

    @property
    def fullname(self) -> str:
        return self.name if "archwarden" in self.name else f"{self.name}-archwarden"

    def helm(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(self.cluster.helm_path), *args, "--namespace", self.namespace],
            env=self.cluster.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise AssertionError(
                f"helm {' '.join(args[:2])} failed:\n{result.stdout}\n{result.stderr}\n"
                + self.describe()
            )
        return result

    def install_or_upgrade(self, verb: str, **overrides: Any) -> None:
        values = copy.deepcopy(self.values)
        _merge(values, overrides)
        self.helm(
            verb,
            self.name,
            str(ROOT / "charts" / "archwarden"),
            "--values",
            self._values_file(values),
            "--wait",
            "--timeout",
            "240s",
        )

    def _values_file(self, values: dict[str, Any]) -> str:
        path = self.cluster.state_dir / f"values-{self.name}.json"
        path.write_text(json.dumps(values))
        return str(path)

    def pods(self) -> list[dict[str, Any]]:
        return self.cluster.pods(self.namespace, f"app.kubernetes.io/instance={self.name}")

    def ready_pods(self) -> list[str]:
        ready = []
        for pod in self.pods():
            if pod["metadata"].get("deletionTimestamp"):
                continue
            conditions = pod.get("status", {}).get("conditions") or []
            if any(c["type"] == "Ready" and c["status"] == "True" for c in conditions):
                ready.append(pod["metadata"]["name"])
        return ready

    def metrics(self) -> str:
        """/metrics of one replica, through the Service (the API server's service proxy)."""
        return self.cluster.kubectl(
            "get",
            "--raw",
            f"/api/v1/namespaces/{self.namespace}/services/http:{self.fullname}:metrics/proxy/metrics",
        ).stdout

    def describe(self) -> str:
        out = self.cluster.kubectl(
            "-n",
            self.namespace,
            "get",
            "pods,deploy,rs,endpointslices,events",
            "-o",
            "wide",
            check=False,
        )
        logs = self.cluster.kubectl(
            "-n",
            self.namespace,
            "logs",
            "--tail=30",
            "--prefix",
            "--all-containers",
            "-l",
            f"app.kubernetes.io/instance={self.name}",
            check=False,
        )
        previous = self.cluster.kubectl(
            "-n",
            self.namespace,
            "logs",
            "--previous",
            "--tail=30",
            "--prefix",
            "-l",
            f"app.kubernetes.io/instance={self.name}",
            check=False,
        )
        return (
            f"{out.stdout}{out.stderr}\n--- logs ---\n{logs.stdout}{logs.stderr}"
            f"\n--- logs of restarted containers ---\n{previous.stdout}{previous.stderr}"
            f"\n--- archwarden processes on this machine ---\n{_processes()}"
        )


class ProcessSampler:
    """Once a second, for each archwarden process in a pod of the real node: its state, the
    kernel function it sleeps in and the CPU seconds it used since the last sample. Kept as
    text lines for a failure message (a replica that stops answering is starved, blocked in
    a system call, or busy in its own code: these tell which)."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="process-sampler", daemon=True)
        self._cpu: dict[str, float] = {}

    def __enter__(self) -> ProcessSampler:
        self._started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        tick = os.sysconf("SC_CLK_TCK")
        while not self._stop.wait(1.0):
            cells = []
            for pid in _archwarden_pids():
                try:
                    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                    wchan = Path(f"/proc/{pid}/wchan").read_text().strip() or "-"
                except OSError:
                    continue
                cpu = (int(stat[11]) + int(stat[12])) / tick
                used = cpu - self._cpu.get(pid, cpu)
                self._cpu[pid] = cpu
                cells.append(f"{pid} {stat[0]} {wchan} +{used:.2f}s")
            self.lines.append(f"+{time.monotonic() - self._started:.0f}s " + ", ".join(cells))


def _archwarden_pids() -> list[str]:
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
            groups = (proc / "cgroup").read_text()
        except OSError:
            continue
        if b"archwarden" in cmdline and b"python" in cmdline and "kubepods" in groups:
            pids.append(proc.name)
    return pids


def _processes() -> str:
    """Each archwarden process in a pod of the real node: its memory and CPU cgroup figures
    (a replica that stops answering is either starved, throttled or stuck in its own code)."""
    lines = []
    for pid in _archwarden_pids():
        proc = Path("/proc") / pid
        try:
            groups = dict(
                line.split(":", 2)[1:] for line in (proc / "cgroup").read_text().splitlines()
            )
            status = (proc / "status").read_text()
        except (OSError, ValueError):
            continue
        rss = next((x.split()[1] for x in status.splitlines() if x.startswith("VmRSS")), "?")
        state = next((x.split()[1] for x in status.splitlines() if x.startswith("State")), "?")
        figures = [f"pid {pid} state {state} rss {rss} kB"]
        # cgroup v1 names a hierarchy per controller (cpu alone or joined with cpuacct); v2
        # has one, under the empty name, mounted at unified/ beside v1 in hybrid mode.
        unified = "unified" if Path("/sys/fs/cgroup/unified").is_dir() else ""
        for controller, files in (
            ("memory", ("memory.usage_in_bytes", "memory.limit_in_bytes", "memory.failcnt")),
            ("cpu", ("cpu.stat",)),
            ("cpu,cpuacct", ("cpu.stat",)),
            ("", ("memory.current", "memory.max", "memory.events", "cpu.stat", "cpu.pressure")),
        ):
            if controller not in groups:
                continue
            mount = controller or unified
            directory = Path("/sys/fs/cgroup", mount, groups[controller].lstrip("/"))
            for name in files:
                path = directory / name
                if path.is_file():
                    figures.append(f"{name}: {' '.join(path.read_text().split())}")
        lines.append("; ".join(figures))
    return "\n".join(lines) or "(none found)"


def wait_replaced(release: Release, old: set[str], timeout: float = 180) -> None:
    """Until two replicas are Ready, none of them one of ``old``."""
    release.cluster.wait_for(
        lambda: len(ready := set(release.ready_pods())) == 2 and not ready & old,
        timeout=timeout,
        interval=0.5,
        message=lambda: "two new ready replicas\n" + release.describe(),
    )


def _merge(into: dict[str, Any], extra: dict[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def chart_values(cluster: LocalCluster, image: str) -> dict[str, Any]:
    """The release fixture's values: 2 replicas on the real node, failurePolicy Fail, only the
    API server gets past the webhooks' handshake (benches install the same)."""
    repository, _, tag = image.rpartition(":")
    return {
        "replicaCount": 2,
        "image": {"repository": repository, "tag": tag, "pullPolicy": "IfNotPresent"},
        "nodeSelector": {"kubernetes.io/os": "linux", LocalCluster.REAL_NODE_TAINT: "true"},
        "tolerations": [
            {"key": LocalCluster.REAL_NODE_TAINT, "operator": "Exists", "effect": "NoSchedule"}
        ],
        "webhook": {
            "validating": {"failurePolicy": "Fail"},
            "mutating": {"failurePolicy": "Fail"},
            # The API server presents its webhook client certificate (up.sh); nobody else
            # gets past the TLS handshake.
            "clientAuth": {
                "enabled": True,
                "caBundle": base64.b64encode(cluster.ca_file.read_bytes()).decode(),
                "names": [LocalCluster.WEBHOOK_CLIENT_NAME],
            },
        },
        "config": {
            "mode": "enforce",
            "registries": {cluster.registry: {"insecure": True}},
        },
    }


@pytest.fixture(scope="package")
def release(cluster: LocalCluster, image: str, images: Images) -> Iterator[Release]:
    """charts/archwarden installed: 2 replicas on the real node, failurePolicy Fail."""
    suffix = secrets.token_hex(3)
    rel = Release(
        cluster=cluster,
        name=f"aw-{suffix}",
        namespace=f"archwarden-{suffix}",
        image=image,
        values=chart_values(cluster, image),
    )
    cluster.kubectl("create", "namespace", rel.namespace)
    try:
        rel.install_or_upgrade("install")
        yield rel
    finally:
        if os.environ.get("ARCHWARDEN_KEEP_RELEASE") != "1":
            subprocess.run(
                [
                    str(cluster.helm_path),
                    "uninstall",
                    rel.name,
                    "-n",
                    rel.namespace,
                    "--wait",
                    "--timeout",
                    "120s",
                ],
                env=cluster.env(),
                capture_output=True,
                timeout=180,
                check=False,
            )
            cluster.kubectl("delete", "namespace", rel.namespace, "--wait=false", check=False)
        (cluster.state_dir / f"values-{rel.name}.json").unlink(missing_ok=True)


def apiserver_webhook_counts(cluster: LocalCluster, release: Release) -> dict[str, float]:
    """The API server's own account of calls to this release's webhooks: fail-open and
    rejections for any reason other than the webhook's verdict."""
    text = cluster.kubectl("get", "--raw", "/metrics").stdout
    counts = {"fail_open": 0.0, "rejected_without_answer": 0.0, "requests": 0.0}
    service = f"{release.fullname}.{release.namespace}.svc"
    for line in text.splitlines():
        if line.startswith("#") or service not in line:
            continue
        value = float(line.rpartition(" ")[2])
        if line.startswith("apiserver_admission_webhook_fail_open_count"):
            counts["fail_open"] += value
        elif line.startswith("apiserver_admission_webhook_rejection_count") and not re.search(
            r'error_type="no_error"', line
        ):
            counts["rejected_without_answer"] += value
        elif line.startswith("apiserver_admission_webhook_request_total"):
            counts["requests"] += value
    return counts
