"""Python handle on the local multi-arch cluster of ``hack/cluster/`` (not a test module).

The cluster is real: etcd, kube-apiserver, kube-controller-manager and kube-scheduler built from
the Go module proxy, with kwok driving fake nodes and pod status. ``LocalCluster.up()`` runs
``hack/cluster/up.sh`` (which builds or reuses the cached binaries first); the admin kubeconfig
is ``.cluster/kubeconfig`` and ``kubectl``/``helm`` are linked into ``.cluster/bin/``.

Only 127.0.0.1 is ever used. Every wait is bounded; failures carry the component log tails.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

__all__ = ["REPO_ROOT", "ClusterError", "LocalCluster", "node_manifest"]

REPO_ROOT = Path(__file__).resolve().parents[2]
HACK = REPO_ROOT / "hack" / "cluster"

T = TypeVar("T")

# Realistic defaults per architecture, in the shape of hack/cluster/nodes.yaml.
_INSTANCE_TYPES = {"amd64": "m6i.2xlarge", "arm64": "m7g.2xlarge", "ppc64le": "s1022.16x64"}
_KERNELS = {
    ("linux", "amd64"): "6.1.0-28-amd64",
    ("linux", "arm64"): "6.1.0-28-arm64",
    ("linux", "ppc64le"): "5.14.0-503.11.1.el9_5.ppc64le",
    ("linux", "s390x"): "6.1.0-28-s390x",
}
WINDOWS_BUILD = "10.0.20348"


class ClusterError(RuntimeError):
    """A cluster operation failed; the message includes command output and log tails."""


def kube_version() -> str:
    """The Kubernetes version pinned in ``hack/cluster/kube/go.mod`` (e.g. ``v1.37.2``)."""
    for line in (HACK / "kube" / "go.mod").read_text().splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "k8s.io/kubernetes":
            return parts[1]
    raise ClusterError("k8s.io/kubernetes not found in hack/cluster/kube/go.mod")


def node_manifest(
    name: str,
    arch: str,
    os: str = "linux",
    *,
    labels: Mapping[str, str] | None = None,
    taints: Sequence[Mapping[str, str]] = (),
    cpu: str = "8",
    memory: str = "32Gi",
    pods: str = "110",
) -> dict[str, Any]:
    """A kwok-managed Node like those of ``hack/cluster/nodes.yaml``.

    ``taints`` are dicts with ``key``, optional ``value`` and ``effect`` (default NoSchedule).
    """
    all_labels = {
        "beta.kubernetes.io/arch": arch,
        "beta.kubernetes.io/os": os,
        "kubernetes.io/arch": arch,
        "kubernetes.io/os": os,
        "kubernetes.io/hostname": name,
        "node.kubernetes.io/instance-type": _INSTANCE_TYPES.get(arch, "generic.2xlarge"),
        "topology.kubernetes.io/region": "local-1",
        "topology.kubernetes.io/zone": "local-1a",
        "type": "kwok",
    }
    if os == "windows":
        all_labels["node.kubernetes.io/windows-build"] = WINDOWS_BUILD
        kernel, image = f"{WINDOWS_BUILD}.2849", "Windows Server 2022 Datacenter"
    else:
        kernel = _KERNELS.get((os, arch), f"6.1.0-28-{arch}")
        image = "Debian GNU/Linux 12 (bookworm)"
    all_labels.update(labels or {})
    version = kube_version()
    spec: dict[str, Any] = {"providerID": f"kwok://{name}"}
    if taints:
        spec["taints"] = [
            {k: v for k, v in {"effect": "NoSchedule", **t}.items() if v is not None}
            for t in taints
        ]
    resources = {"cpu": cpu, "memory": memory, "pods": pods}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": all_labels,
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
        },
        "spec": spec,
        "status": {
            "capacity": dict(resources),
            "allocatable": dict(resources),
            "nodeInfo": {
                "architecture": arch,
                "operatingSystem": os,
                "kernelVersion": kernel,
                "osImage": image,
                "containerRuntimeVersion": "containerd://1.7.24",
                "kubeletVersion": version,
                "kubeProxyVersion": version,
            },
        },
    }


class LocalCluster:
    """The cluster whose state lives in ``state_dir`` (default ``<repo>/.cluster``)."""

    # The one real node (kubelet + containerd), tainted so that only pods that tolerate it land
    # there; see hack/cluster/node.sh.
    REAL_NODE = "archwarden-node"
    REAL_NODE_TAINT = "archwarden.io/real-node"

    def __init__(self, state_dir: Path | None = None) -> None:
        env_dir = os.environ.get("ARCHWARDEN_CLUSTER_DIR")
        self.state_dir = state_dir or (Path(env_dir) if env_dir else REPO_ROOT / ".cluster")

    # -- paths and environment -------------------------------------------------------------
    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "kubeconfig"

    @property
    def bin_dir(self) -> Path:
        return self.state_dir / "bin"

    @property
    def kubectl_path(self) -> Path:
        return self.bin_dir / "kubectl"

    @property
    def helm_path(self) -> Path:
        return self.bin_dir / "helm"

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    def ports(self) -> dict[str, int]:
        """The ports chosen by up.sh (``API_PORT``, ``ETCD_PORT``, ...)."""
        ports: dict[str, int] = {}
        for line in (self.state_dir / "ports.env").read_text().splitlines():
            key, _, value = line.partition("=")
            if value:
                ports[key.strip()] = int(value)
        return ports

    # The client certificate the API server presents to every admission webhook (up.sh's
    # AdmissionConfiguration), issued by the cluster CA.
    WEBHOOK_CLIENT_NAME = "kube-apiserver-webhook-client"

    @property
    def ca_file(self) -> Path:
        """The cluster CA: it signed the API server's webhook client certificate."""
        return self.state_dir / "pki" / "ca.crt"

    @property
    def registry(self) -> str:
        """``host:port`` of the cluster's registry (plain HTTP), which the host, the real
        node's containerd and its pods all reach under this one name."""
        return (self.state_dir / "registry").read_text().strip()

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.ports()['API_PORT']}"

    def env(self) -> dict[str, str]:
        """``os.environ`` plus ``KUBECONFIG`` and ``.cluster/bin`` first on ``PATH``."""
        env = dict(os.environ)
        env["KUBECONFIG"] = str(self.kubeconfig)
        env["PATH"] = f"{self.bin_dir}{os.pathsep}{env.get('PATH', '')}"
        return env

    # -- lifecycle --------------------------------------------------------------------------
    def _script(self, name: str, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ, ARCHWARDEN_CLUSTER_DIR=str(self.state_dir))
        return subprocess.run(
            [str(HACK / name), *args],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def is_healthy(self) -> bool:
        """All components alive and the apiserver ready (``hack/cluster/status.sh``)."""
        try:
            return self._script("status.sh", timeout=30).returncode == 0
        except subprocess.TimeoutExpired:
            return False

    def up(self, *, restart: bool = False, timeout: float = 90 * 60) -> None:
        """Build (if the cache is cold) and start the cluster; reuses a healthy one."""
        proc = self._script("up.sh", *(["--restart"] if restart else []), timeout=timeout)
        if proc.returncode != 0:
            raise ClusterError(
                f"hack/cluster/up.sh failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
            )

    def down(self, *, timeout: float = 120) -> None:
        proc = self._script("down.sh", timeout=timeout)
        if proc.returncode != 0:
            raise ClusterError(f"hack/cluster/down.sh failed:\n{proc.stdout}\n{proc.stderr}")

    def log_tails(self, lines: int = 30) -> str:
        """The last ``lines`` lines of every component log, for assertion messages."""
        out = []
        for log in sorted(self.logs_dir.glob("*.log")):
            tail = log.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"----- {log.name} (last {len(tail)} lines) -----")
            out.extend(tail)
        return "\n".join(out)

    # -- kubectl ----------------------------------------------------------------------------
    def kubectl(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        """Run the cluster's kubectl with the admin kubeconfig."""
        cmd = [str(self.kubectl_path), f"--kubeconfig={self.kubeconfig}", *args]
        proc = subprocess.run(
            cmd,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env(),
            check=False,
        )
        if check and proc.returncode != 0:
            raise ClusterError(
                f"kubectl {' '.join(args)} failed ({proc.returncode}):\n"
                f"stdout: {proc.stdout}\nstderr: {proc.stderr}"
            )
        return proc

    def get_json(self, *args: str) -> Any:
        """``kubectl get <args> -o json`` parsed."""
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)

    def apply(self, manifests: Any, namespace: str | None = None) -> str:
        """``kubectl apply`` a YAML string, a dict or a list of dicts; returns stdout."""
        if isinstance(manifests, str):
            text = manifests
        else:
            docs = manifests if isinstance(manifests, list) else [manifests]
            text = yaml.safe_dump_all(docs)
        ns = ["-n", namespace] if namespace else []
        return self.kubectl("apply", *ns, "-f", "-", input=text).stdout

    # -- waiting ----------------------------------------------------------------------------
    def wait_for(
        self,
        check: Callable[[], T | None],
        *,
        timeout: float = 60,
        interval: float = 0.25,
        message: str | Callable[[], str] = "condition",
    ) -> T:
        """Poll ``check`` until it returns something truthy (returned) or ``timeout`` passes.

        Exceptions from ``check`` count as "not yet"; the last one is reported. On timeout an
        AssertionError names ``message`` and carries the component log tails.
        """
        deadline = time.monotonic() + timeout
        last_error: BaseException | None = None
        while True:
            try:
                result = check()
                if result:
                    return result
            except Exception as exc:  # the check may race with object creation
                last_error = exc
            if time.monotonic() >= deadline:
                what = message() if callable(message) else message
                detail = f"\nlast error: {last_error!r}" if last_error else ""
                raise AssertionError(
                    f"timed out after {timeout}s waiting for {what}{detail}\n{self.log_tails()}"
                )
            time.sleep(interval)

    # -- nodes ------------------------------------------------------------------------------
    def nodes(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.get_json("nodes")["items"]
        return items

    def nodes_with(self, selector: Mapping[str, str]) -> list[str]:
        """Names of nodes whose labels include every key/value of ``selector``."""
        return [n["metadata"]["name"] for n in self.nodes() if _has_labels(n, selector)]

    def node_ready(self, name: str) -> bool:
        """Ready=True and no ``node.kubernetes.io/not-ready``/``unreachable`` taint."""
        node = self.get_json("node", name)
        ready = any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in node.get("status", {}).get("conditions", [])
        )
        lifecycle = {"node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"}
        tainted = any(t["key"] in lifecycle for t in node.get("spec", {}).get("taints", []))
        return ready and not tainted

    def add_node(
        self,
        name: str,
        arch: str,
        os: str = "linux",
        *,
        labels: Mapping[str, str] | None = None,
        taints: Sequence[Mapping[str, str]] = (),
        wait_ready: bool = True,
        timeout: float = 60,
        **resources: str,
    ) -> dict[str, Any]:
        """Create a kwok-managed node and (by default) wait until it is Ready and schedulable."""
        manifest = node_manifest(name, arch, os, labels=labels, taints=taints, **resources)
        self.kubectl("create", "-f", "-", input=json.dumps(manifest))
        if wait_ready:
            self.wait_for(
                lambda: self.node_ready(name), timeout=timeout, message=f"node {name} Ready"
            )
        return manifest

    def taint_node(
        self, name: str, key: str, value: str | None = None, effect: str = "NoSchedule"
    ) -> None:
        taint = f"{key}={value}:{effect}" if value is not None else f"{key}:{effect}"
        self.kubectl("taint", "nodes", name, taint, "--overwrite")

    def untaint_node(self, name: str, key: str, effect: str | None = None) -> None:
        self.kubectl("taint", "nodes", name, f"{key}:{effect}-" if effect else f"{key}-")

    def cordon_node(self, name: str) -> None:
        self.kubectl("cordon", name)

    def uncordon_node(self, name: str) -> None:
        self.kubectl("uncordon", name)

    def delete_node(self, name: str, *, wait: bool = True) -> None:
        self.kubectl("delete", "node", name, "--ignore-not-found", f"--wait={str(wait).lower()}")

    # -- namespaces and pods ----------------------------------------------------------------
    def create_namespace(self, name: str, *, timeout: float = 30) -> str:
        """Create a namespace and wait for its ``default`` ServiceAccount (pods need it)."""
        self.kubectl("create", "namespace", name)
        self.wait_for(
            lambda: (
                self.kubectl("-n", name, "get", "serviceaccount", "default", check=False).returncode
                == 0
            ),
            timeout=timeout,
            message=f"serviceaccount {name}/default",
        )
        return name

    def delete_namespace(self, name: str, *, wait: bool = False) -> None:
        self.kubectl(
            "delete", "namespace", name, "--ignore-not-found", f"--wait={str(wait).lower()}"
        )

    def pods(self, namespace: str, selector: str | None = None) -> list[dict[str, Any]]:
        args = ["pods", "-n", namespace] + (["-l", selector] if selector else [])
        items: list[dict[str, Any]] = self.get_json(*args)["items"]
        return items

    def wait_pods_running(
        self, namespace: str, count: int, selector: str | None = None, timeout: float = 60
    ) -> list[dict[str, Any]]:
        """Wait until exactly ``count`` pods (matching ``selector``) are Running on a node."""

        def running() -> list[dict[str, Any]] | None:
            pods = self.pods(namespace, selector)
            ok = [
                p
                for p in pods
                if p["status"].get("phase") == "Running"
                and p["spec"].get("nodeName")
                and not p["metadata"].get("deletionTimestamp")
            ]
            return ok if len(ok) == count and len(pods) == count else None

        def describe() -> str:
            pods = self.kubectl("get", "pods", "-n", namespace, "-o", "wide", check=False)
            events = self.kubectl("get", "events", "-n", namespace, check=False)
            return f"{count} running pods in {namespace}\n{pods.stdout}\n{events.stdout}"

        return self.wait_for(running, timeout=timeout, message=describe)


def _has_labels(obj: Mapping[str, Any], selector: Mapping[str, str]) -> bool:
    labels: Mapping[str, str] = obj.get("metadata", {}).get("labels", {}) or {}
    return all(labels.get(k) == v for k, v in selector.items())


def names(objs: Iterable[Mapping[str, Any]]) -> list[str]:
    return [o["metadata"]["name"] for o in objs]
