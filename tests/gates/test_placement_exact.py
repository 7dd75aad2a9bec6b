"""Placement is exact on the real scheduler: ~100 random Deployments (fixed seed) over kwok
nodes with per-node overrides (archwarden.io/runs-arm32, runs-386), taints, a cordon and two
Windows builds.

The oracle is this file's own, written from the node labels and the images' platforms (not
archwarden's code): every scheduled pod is on a node that runs all its images; no admitted pod
stays Pending while a node it may use could run it; a denial only where no such node exists.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pytest

from tests.cluster.cluster import LocalCluster
from tests.support.archwarden import ArchwardenProcess
from tests.support.images import Seeder
from tests.support.registry import RegistryServer

pytestmark = pytest.mark.e2e

SEED = 20261207
WORKLOADS = 100
ARCH, OS, BUILD = "kubernetes.io/arch", "kubernetes.io/os", "node.kubernetes.io/windows-build"
ARM32, I386 = "archwarden.io/runs-arm32", "archwarden.io/runs-386"
WIN2022, WIN2019 = "10.0.20348", "10.0.17763"

# Extra kwok nodes: (name, arch, os, labels, taints, cordoned).
NODES: list[tuple[str, str, str, dict[str, str], list[dict[str, str]], bool]] = [
    ("gp-arm64-arm32", "arm64", "linux", {ARM32: "true", "pool": "blue"}, [], False),
    ("gp-arm64-plain", "arm64", "linux", {"pool": "blue"}, [], False),
    ("gp-amd64-no386", "amd64", "linux", {I386: "false", "pool": "green"}, [], False),
    ("gp-amd64-gpu", "amd64", "linux", {"pool": "green"}, [{"key": "dedicated"}], False),
    ("gp-s390x-gpu", "s390x", "linux", {"pool": "blue"}, [{"key": "dedicated"}], False),
    ("gp-arm64-cordoned", "arm64", "linux", {ARM32: "true", "pool": "green"}, [], True),
    ("gp-win2019", "amd64", "windows", {BUILD: WIN2019, "pool": "blue"}, [], False),
]

# Image name -> platforms ("os/arch[/variant][:build]").
IMAGES: dict[str, list[str]] = {
    "amd64": ["linux/amd64"],
    "arm64": ["linux/arm64"],
    "multi": ["linux/amd64", "linux/arm64"],
    "s390x": ["linux/s390x"],
    "armv6": ["linux/arm/v6"],
    "armv7": ["linux/arm/v7"],
    "i386": ["linux/386"],
    "ppc-arm": ["linux/ppc64le", "linux/arm64"],
    "win2022": [f"windows/amd64:{WIN2022}.1129"],
    "win2019": [f"windows/amd64:{WIN2019}.5329"],
    "everywhere": ["linux/amd64", "linux/arm64", "linux/ppc64le", "linux/s390x"],
}


@dataclass(frozen=True)
class Node:
    name: str
    labels: Mapping[str, str]
    taints: tuple[str, ...]
    cordoned: bool


def _runs(node: Node, platform: str) -> bool:
    """Whether this node runs an image built for ``platform`` (the oracle's own rules)."""
    spec, _, build = platform.partition(":")
    os, arch, *_ = spec.split("/")
    if node.labels.get(OS) != os:
        return False
    if os == "windows" and node.labels.get(BUILD, "").split(".")[:3] != build.split(".")[:3]:
        return False
    own = node.labels.get(ARCH)
    if own == arch:
        return True
    if own == "amd64" and arch == "386":
        return node.labels.get(I386) != "false"  # on unless the node says otherwise
    if own == "arm64" and arch == "arm":
        return node.labels.get(ARM32) == "true"  # off unless the node says so
    return False


def _may_use(node: Node, spec: Mapping[str, Any]) -> bool:
    """The scheduler's filters for the constraints this test writes."""
    if node.cordoned or node.name == LocalCluster.REAL_NODE:
        return False
    if any(node.labels.get(k) != v for k, v in (spec.get("nodeSelector") or {}).items()):
        return False
    tolerated = {t["key"] for t in spec.get("tolerations") or ()}
    if any(taint not in tolerated for taint in node.taints):
        return False
    affinity = (spec.get("affinity") or {}).get("nodeAffinity") or {}
    required = affinity.get("requiredDuringSchedulingIgnoredDuringExecution")
    if required is None:
        return True
    for term in required["nodeSelectorTerms"]:
        ok = True
        for e in term.get("matchExpressions") or ():
            value = node.labels.get(e["key"])
            if e["operator"] == "In":
                ok &= value in e["values"]
            elif e["operator"] == "NotIn":
                ok &= value not in e["values"]
            elif e["operator"] == "Exists":
                ok &= value is not None
            elif e["operator"] == "DoesNotExist":
                ok &= value is None
        if ok:
            return True
    return False


def _workload(rng: random.Random, i: int, host: str) -> tuple[dict[str, Any], list[str]]:
    names = rng.sample(sorted(IMAGES), rng.choice([1, 1, 2]))
    spec: dict[str, Any] = {
        "containers": [{"name": "app", "image": f"{host}/gp/{names[0]}:1"}],
    }
    if len(names) > 1:
        spec["initContainers"] = [{"name": "init", "image": f"{host}/gp/{names[1]}:1"}]
    selector = rng.choice(
        [
            {},
            {},
            {ARCH: "arm64"},
            {ARCH: "amd64"},
            {OS: "windows"},
            {"pool": "blue"},
            {ARCH: "s390x"},
        ]
    )
    if selector:
        spec["nodeSelector"] = selector
    if rng.random() < 0.35:
        spec["tolerations"] = [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}]
    if rng.random() < 0.3:
        expression = rng.choice(
            [
                {"key": ARCH, "operator": "In", "values": ["amd64", "arm64"]},
                {"key": "pool", "operator": "NotIn", "values": ["green"]},
                {"key": "pool", "operator": "Exists"},
            ]
        )
        spec["affinity"] = {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{"matchExpressions": [expression]}]
                }
            }
        }
    name = f"w{i:03d}"
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": spec},
        },
    }
    return deployment, names


@pytest.fixture(scope="module")
def seeded(e2e_registry: RegistryServer) -> str:
    with Seeder(e2e_registry) as seeder:
        for name, platforms in IMAGES.items():
            if len(platforms) == 1:
                seeder.push_image(f"gp/{name}", "1", platforms[0])
            else:
                seeder.push_multiarch(f"gp/{name}", "1", platforms)
    return e2e_registry.host


@pytest.fixture(scope="module")
def nodes(cluster: LocalCluster) -> Iterator[list[Node]]:
    for name, arch, os, labels, taints, cordoned in NODES:
        cluster.add_node(name, arch, os, labels=labels, taints=taints)
        if cordoned:
            cluster.cordon_node(name)
    try:
        found = []
        for obj in cluster.nodes():
            spec = obj.get("spec") or {}
            found.append(
                Node(
                    obj["metadata"]["name"],
                    obj["metadata"]["labels"],
                    tuple(
                        t["key"]
                        for t in spec.get("taints") or ()
                        if t.get("effect") != "PreferNoSchedule"
                    ),
                    bool(spec.get("unschedulable")),
                )
            )
        yield found
    finally:
        for name, *_ in NODES:
            cluster.delete_node(name, wait=False)


def test_every_pod_lands_where_it_runs_and_none_waits_where_one_could(
    cluster: LocalCluster, namespace: str, seeded: str, nodes: list[Node], tmp_path: Any
) -> None:
    archwarden = ArchwardenProcess(
        tmp_path / "aw",
        cluster.kubeconfig,
        {
            "mode": "enforce",
            "registries": {seeded: {"insecure": True}},
            "schedulingGates": {"mode": "webhook"},
            "audit": {"enabled": False},
            "webhook": {
                "clientCAFile": str(cluster.ca_file),
                "clientNames": [LocalCluster.WEBHOOK_CLIENT_NAME],
            },
        },
        dev_name="archwarden-placement.io",
    )
    archwarden.start()
    rng = random.Random(SEED)
    admitted: dict[str, tuple[dict[str, Any], list[str]]] = {}
    denied: dict[str, tuple[dict[str, Any], list[str], str]] = {}
    try:
        for i in range(WORKLOADS):
            deployment, names = _workload(rng, i, seeded)
            proc = cluster.kubectl(
                "apply", "-n", namespace, "-f", "-", input=json.dumps(deployment), check=False
            )
            name = deployment["metadata"]["name"]
            if proc.returncode == 0:
                admitted[name] = (deployment, names)
            else:
                assert "denied the request" in proc.stderr, proc.stderr
                denied[name] = (deployment, names, proc.stderr)

        def settled() -> list[dict[str, Any]] | None:
            pods = cluster.pods(namespace)
            by_app = {p["metadata"]["labels"].get("app") for p in pods}
            if not set(admitted) <= by_app:
                return None
            for body in pods:
                conditions = {c["type"]: c for c in body["status"].get("conditions", [])}
                scheduled = conditions.get("PodScheduled")
                if scheduled is None or scheduled.get("reason") == "SchedulingGated":
                    return None
            return pods

        pods = cluster.wait_for(
            settled, timeout=180, interval=1, message=lambda: archwarden.log_tail()
        )
    finally:
        archwarden.stop()

    by_name = {node.name: node for node in nodes}
    wrong, waiting = [], []
    for body in pods:
        app = body["metadata"]["labels"]["app"]
        deployment, names = admitted[app]
        spec = deployment["spec"]["template"]["spec"]
        platforms = [IMAGES[n] for n in names]
        able = [
            node
            for node in nodes
            if _may_use(node, spec) and all(any(_runs(node, p) for p in ps) for ps in platforms)
        ]
        bound = body["spec"].get("nodeName")
        if bound:
            node = by_name[bound]
            if not all(any(_runs(node, p) for p in ps) for ps in platforms):
                wrong.append(f"{app} ({', '.join(names)}) on {bound}")
        elif able:
            waiting.append(f"{app} ({', '.join(names)}) Pending; could run on {able[0].name}")
    needless = []
    for app, (deployment, names, _stderr) in denied.items():
        spec = deployment["spec"]["template"]["spec"]
        platforms = [IMAGES[n] for n in names]
        for node in nodes:
            if _may_use(node, spec) and all(any(_runs(node, p) for p in ps) for ps in platforms):
                needless.append(f"{app} ({', '.join(names)}) denied, but {node.name} runs it")
                break
    print(
        f"{len(admitted)} admitted ({sum(1 for p in pods if p['spec'].get('nodeName'))} pods "
        f"bound), {len(denied)} denied"
    )
    assert wrong == []
    assert waiting == []
    assert needless == []
    # The run covered what it is about.
    assert len(admitted) >= 40 and len(denied) >= 10
    assert any(p["spec"].get("nodeName") == "gp-arm64-arm32" for p in pods)
