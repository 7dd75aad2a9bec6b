"""Node inventory and decisions at cluster scale, without a cluster.

Run: `.venv/bin/python bench/scale.py [N ...]` (default 6 and 5000). Builds N synthetic Node
objects shaped like a real kubelet's (3 zones; 50% amd64, 40% arm64, 10% ppc64le; hostname,
zone, instance-type labels) and measures, per N: (a) the inventory built from N add events
(parse + apply, as ``handlers.node_changed`` does), (b) one heartbeat-like event (unchanged
projection) and one real change (a taint added, then removed), (c) a warm decision for a
typical Deployment, node by node and by class, (d) the same Deployment pinned to one node by
``kubernetes.io/hostname`` (by class: only its class's members are judged one by one). Ratios
are against the first N of the run.
"""

from __future__ import annotations

import copy
import sys
import time
from collections.abc import Callable
from typing import Any

from archwarden import platforms, policy

ARCHES = ("amd64",) * 5 + ("arm64",) * 4 + ("ppc64le",)
TYPES = {"amd64": "m7i.xlarge", "arm64": "m7g.xlarge", "ppc64le": "s1022"}
IMAGE = "registry.local/team/api:1.4"
ANSWERS = {IMAGE: (platforms.parse("linux/amd64"), platforms.parse("linux/arm64"))}
DEPLOYMENT = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "api", "namespace": "team"},
    "spec": {
        "selector": {"matchLabels": {"app": "api"}},
        "template": {
            "metadata": {"labels": {"app": "api"}},
            "spec": {
                "containers": [{"name": "api", "image": IMAGE}],
                "tolerations": [{"key": "dedicated", "operator": "Exists"}],
            },
        },
    },
}


def node_object(i: int) -> dict[str, Any]:
    arch, zone, name = ARCHES[i % len(ARCHES)], "abc"[i % 3], f"node-{i:05d}"
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "resourceVersion": "1",
            "labels": {
                "beta.kubernetes.io/arch": arch,
                "beta.kubernetes.io/os": "linux",
                "kubernetes.io/arch": arch,
                "kubernetes.io/os": "linux",
                "kubernetes.io/hostname": name,
                "node.kubernetes.io/instance-type": TYPES[arch],
                "topology.kubernetes.io/region": "eu-west-1",
                "topology.kubernetes.io/zone": f"eu-west-1{zone}",
            },
        },
        "spec": {"podCIDR": f"10.{i // 250}.{i % 250}.0/24"},
        "status": {
            "conditions": [
                {"type": "MemoryPressure", "status": "False", "lastHeartbeatTime": "t0"},
                {"type": "Ready", "status": "True", "lastHeartbeatTime": "t0"},
            ],
            "nodeInfo": {
                "architecture": arch,
                "operatingSystem": "linux",
                "kernelVersion": "6.8.0",
                "kubeletVersion": "v1.37.2",
            },
        },
    }


def per_call(fn: Callable[[], object], budget: float = 0.3) -> float:
    """Seconds per call: the best of 3 rounds, each as many calls as fit the budget."""
    fn()
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < budget / 3:
        fn()
        calls += 1
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - start) / calls)
    return best


def measure(n: int) -> dict[str, float]:
    bodies = [node_object(i) for i in range(n)]
    start = time.perf_counter()
    inventory = policy.Inventory()
    for body in bodies:
        inventory.apply(body["metadata"]["name"], policy.node_from_object(body))
    build = time.perf_counter() - start

    target = bodies[n // 2]
    name = target["metadata"]["name"]
    heartbeat = copy.deepcopy(target)
    heartbeat["metadata"]["resourceVersion"] = "2"
    heartbeat["status"]["conditions"][1]["lastHeartbeatTime"] = "t1"
    tainted = copy.deepcopy(target)
    tainted["spec"]["taints"] = [{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]
    flip = [target, tainted]  # reversed before each call: tainted, untainted, ...

    def beat() -> None:
        assert inventory.apply(name, policy.node_from_object(heartbeat)) is None

    def change() -> None:
        flip.reverse()
        assert inventory.apply(name, policy.node_from_object(flip[0])) is not None
        inventory.classes()  # the first review after a change rebuilds what changed

    workload = policy.extract(DEPLOYMENT)
    pinned_body = copy.deepcopy(DEPLOYMENT)
    pinned_body["spec"]["template"]["spec"]["nodeSelector"] = {"kubernetes.io/hostname": name}
    pinned = policy.extract(pinned_body)
    listed = list(inventory.nodes())
    by_node = policy.decide(workload, listed, ANSWERS)
    assert by_node == policy.decide(workload, inventory, ANSWERS) and by_node.allowed
    return {
        "classes": len(inventory.classes()),
        "build": build,
        "heartbeat": per_call(beat),
        "change": per_call(change),
        "node-by-node": per_call(lambda: policy.decide(workload, listed, ANSWERS)),
        "by class": per_call(lambda: policy.decide(workload, inventory, ANSWERS)),
        "host pin": per_call(lambda: policy.decide(pinned, inventory, ANSWERS)),
    }


def main(sizes: list[int]) -> None:
    results = {n: measure(n) for n in sizes}
    base = results[sizes[0]]
    print(
        f"{'nodes':>6} {'classes':>7} {'build (a)':>14} {'heartbeat (b)':>18} "
        f"{'change (b)':>18} {'node-by-node (c)':>20} {'by class (c)':>18} {'host pin (d)':>18}"
    )
    for n, r in results.items():
        cells = []
        for key in ("build", "heartbeat", "change", "node-by-node", "by class", "host pin"):
            unit, scale = ("ms", 1e3) if key == "build" or r[key] > 1e-3 else ("us", 1e6)
            cells.append(f"{r[key] * scale:8.1f} {unit} x{r[key] / base[key]:<6.1f}")
        print((f"{n:>6} {int(r['classes']):>7} " + " ".join(f"{c:>18}" for c in cells)).rstrip())


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [6, 5000])
