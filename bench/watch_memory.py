"""Memory of the watched stores: 10,000 pods and 2,000 workloads, against the same run without.

Run: `.venv/bin/python bench/watch_memory.py [PODS WORKLOADS]` (default 10000 2000).

Each figure is measured in a fresh interpreter (so one measurement's freed memory is not reused
by the next): the process imports archwarden, builds the empty stores, then generates objects
shaped like what the API server sends (a Deployment with labels, annotations, resources, probes
and a managedFields entry; its pods with owner references, node names, container statuses and
conditions) one at a time, as the watch's JSON decoding hands them over. In the "without" run
each object is generated and dropped; in the "with" run it is fed to ``WorkloadStore.put`` /
``PodStore.put`` and only the stores' projections stay. The cost is the difference of the
resident set size (VmRSS, after a gc) between the two runs. The issue's bound is 60 MB.
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
from typing import Any

BOUND_MB = 60.0


def deployment(i: int) -> dict[str, Any]:
    name, ns = f"api-{i:05d}", f"team-{i % 150:03d}"
    labels = {"app": name, "app.kubernetes.io/part-of": "shop", "tier": "backend"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "namespace": ns,
            "uid": f"{i:08d}-1111-2222-3333-444455556666",
            "resourceVersion": str(1000 + i),
            "generation": 3,
            "labels": labels,
            "annotations": {"deployment.kubernetes.io/revision": "3"},
            "managedFields": [{"manager": "kubectl", "operation": "Apply", "fieldsV1": {}}],
        },
        "spec": {
            "replicas": 5,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "image": f"registry.example/team-{i % 150:03d}/api:1.{i % 7}",
                            "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
                            "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}},
                        },
                        {"name": "proxy", "image": "registry.example/mesh/proxy:2.1"},
                    ],
                    "nodeSelector": {"kubernetes.io/os": "linux"},
                    "tolerations": [{"key": "dedicated", "operator": "Exists"}],
                },
            },
        },
        "status": {"replicas": 5, "readyReplicas": 5, "observedGeneration": 3},
    }


def pod(i: int, workloads: int) -> dict[str, Any]:
    owner = deployment(i % workloads)
    name = owner["metadata"]["name"]
    spec = owner["spec"]["template"]["spec"]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{name}-7d9f8c6b5-{i:05d}",
            "namespace": owner["metadata"]["namespace"],
            "uid": f"{i:08d}-aaaa-bbbb-cccc-ddddeeeeffff",
            "resourceVersion": str(50000 + i),
            "labels": {**owner["spec"]["template"]["metadata"]["labels"], "pod-template-hash": "x"},
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "name": f"{name}-7d9f8c6b5",
                    "uid": "rs",
                    "controller": True,
                }
            ],
            "managedFields": [{"manager": "kubelet", "operation": "Update", "fieldsV1": {}}],
        },
        "spec": {**spec, "nodeName": f"node-{i % 500:04d}", "serviceAccountName": "default"},
        "status": {
            "phase": "Running",
            "podIP": f"10.{i // 65536}.{i // 256 % 256}.{i % 256}",
            "conditions": [
                {"type": t, "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}
                for t in ("Initialized", "Ready", "ContainersReady", "PodScheduled")
            ],
            "containerStatuses": [
                {
                    "name": c["name"],
                    "image": c["image"],
                    "imageID": "sha256:" + "0" * 64,
                    "ready": True,
                    "restartCount": 0,
                    "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}},
                }
                for c in spec["containers"]
            ],
        },
    }


def rss_kb() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def child(keep: bool, pods: int, workloads: int) -> int:
    from archwarden import pod_store, workload_store

    wstore = workload_store.WorkloadStore()
    pstore = pod_store.PodStore()
    gc.collect()
    for i in range(workloads):
        # Through JSON, as the watch decodes it: fresh strings, not shared literals.
        body = json.loads(json.dumps(deployment(i)))
        if keep:
            wstore.put("Deployment", "apps/v1", body)
    for i in range(pods):
        body = json.loads(json.dumps(pod(i, workloads)))
        if keep:
            pstore.put(body)
    del body
    gc.collect()
    assert len(wstore) == (workloads if keep else 0)
    assert len(pstore) == (pods if keep else 0)
    return rss_kb()


def measure(keep: bool, pods: int, workloads: int) -> int:
    out = subprocess.run(
        [sys.executable, __file__, "--child", "1" if keep else "0", str(pods), str(workloads)],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(out.stdout.strip())


def main(pods: int, workloads: int) -> None:
    without = min(measure(False, pods, workloads) for _ in range(3))
    with_ = min(measure(True, pods, workloads) for _ in range(3))
    cost = (with_ - without) / 1024
    print(f"{pods} pods, {workloads} workloads")
    print(f"  RSS without stores fed: {without / 1024:8.1f} MB")
    print(f"  RSS with stores fed:    {with_ / 1024:8.1f} MB")
    print(f"  cost:                   {cost:8.1f} MB (bound {BOUND_MB:g} MB)")
    print(f"  per pod (all of it):    {cost * 1024 * 1024 / pods:8.0f} bytes")
    if cost > BOUND_MB:
        sys.exit(f"over the bound: {cost:.1f} MB > {BOUND_MB:g} MB")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        print(child(sys.argv[2] == "1", int(sys.argv[3]), int(sys.argv[4])))
    else:
        args = [int(a) for a in sys.argv[1:3]] or [10_000, 2_000]
        main(*args)
