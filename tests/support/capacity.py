"""Capacity sources for the e2e tests: the Karpenter and Cluster API CRDs from their Go modules,
and real Karpenter (its kwok provider) as a host process against the local cluster.

``hack/karpenter/build.sh`` fetches the CRDs into the binary cache (``crds``: seconds, no
build) and builds Karpenter (minutes, once per version); nothing third-party is in the repo.
Facts and traps: Karpenter binds its metrics and health ports on every interface (free ports
are chosen), NodeClaims carry a finalizer only a running Karpenter removes, and pods existing
nodes can take never reach Karpenter.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from tests.cluster.cluster import LocalCluster
from tests.support.registry import free_port

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "hack" / "karpenter" / "build.sh"

__all__ = ["KarpenterProcess", "capacity_dirs", "install_capacity_crds", "kwok_nodepool"]


def capacity_dirs(*, build: bool = False) -> dict[str, Path]:
    """``KARPENTER_BIN``, ``KARPENTER_CRDS`` and ``CAPI_CRDS`` directories (fetched or built
    when absent; ``build`` also builds Karpenter itself)."""
    result = subprocess.run(
        [str(BUILD), *([] if build else ["crds"])],
        capture_output=True,
        text=True,
        timeout=60 * 60,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"hack/karpenter/build.sh failed:\n{result.stderr[-4000:]}")
    dirs: dict[str, Path] = {}
    for line in result.stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            dirs[key] = Path(value)
    return dirs


def install_capacity_crds(cluster: LocalCluster) -> None:
    """NodePool, NodeClaim, KWOKNodeClass and the Cluster API node group CRDs, Established."""
    dirs = capacity_dirs()
    files = sorted(dirs["KARPENTER_CRDS"].glob("*.yaml")) + sorted(dirs["CAPI_CRDS"].glob("*.yaml"))
    for path in files:
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(path))
    names = [
        "nodepools.karpenter.sh",
        "nodeclaims.karpenter.sh",
        "kwoknodeclasses.karpenter.kwok.sh",
        "machinedeployments.cluster.x-k8s.io",
        "machinesets.cluster.x-k8s.io",
        "machinepools.cluster.x-k8s.io",
    ]
    cluster.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s", *(f"crd/{n}" for n in names)
    )


def kwok_nodepool(
    name: str,
    arches: list[str],
    *,
    labels: dict[str, str] | None = None,
    taints: list[dict[str, str]] | None = None,
) -> dict[str, Any]:
    """A karpenter.sh/v1 NodePool of the kwok provider's default KWOKNodeClass."""
    template: dict[str, Any] = {
        "spec": {
            "nodeClassRef": {
                "group": "karpenter.kwok.sh",
                "kind": "KWOKNodeClass",
                "name": "default",
            },
            "requirements": [
                {"key": "kubernetes.io/arch", "operator": "In", "values": arches},
                {"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]},
                {"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["on-demand"]},
            ],
            "expireAfter": "Never",
        }
    }
    if labels:
        template["metadata"] = {"labels": labels}
    if taints:
        template["spec"]["taints"] = taints
    return {
        "apiVersion": "karpenter.sh/v1",
        "kind": "NodePool",
        "metadata": {"name": name},
        "spec": {
            "template": template,
            # Empty nodes go quickly, so a test's nodes do not outlive it.
            "disruption": {"consolidationPolicy": "WhenEmpty", "consolidateAfter": "5s"},
        },
    }


KWOK_NODECLASS = {
    "apiVersion": "karpenter.kwok.sh/v1alpha1",
    "kind": "KWOKNodeClass",
    "metadata": {"name": "default"},
}


class KarpenterProcess:
    """Karpenter with the kwok cloud provider, running on the host against ``cluster``."""

    def __init__(self, cluster: LocalCluster, workdir: Path) -> None:
        self.cluster = cluster
        self.workdir = workdir
        self.metrics_port = free_port()
        self.health_port = free_port()
        self.log_file = workdir / "karpenter.log"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> KarpenterProcess:
        binary = capacity_dirs(build=True)["KARPENTER_BIN"] / "karpenter"
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.cluster.apply(KWOK_NODECLASS)
        env = {
            **os.environ,
            "KUBECONFIG": str(self.cluster.kubeconfig),
            "DISABLE_LEADER_ELECTION": "true",
            "METRICS_PORT": str(self.metrics_port),
            "HEALTH_PROBE_PORT": str(self.health_port),
            "BATCH_IDLE_DURATION": "1s",
            "BATCH_MAX_DURATION": "3s",
        }
        with self.log_file.open("wb") as log:
            self._process = subprocess.Popen(
                [str(binary)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"karpenter exited:\n{self.log_tail()}")
            try:
                url = f"http://127.0.0.1:{self.health_port}/readyz"
                if httpx.get(url, timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"karpenter not ready within {timeout}s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_file.exists():
            return ""
        return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)
