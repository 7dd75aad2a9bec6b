"""Kubernetes JSON shaped like the API server's, built small, and a strict JSON-patch applier."""

from __future__ import annotations

import copy
from typing import Any

from archwarden import platforms

API = "registry.local/team/api:1.4"
SIDECAR = "registry.local/team/sidecar:2"


def node(
    name: str,
    arch: str = "amd64",
    os: str = "linux",
    *,
    labels: dict[str, str] | None = None,
    taints: list[dict[str, str]] | None = None,
    ready: bool = True,
    unschedulable: bool = False,
    build: str = "",
) -> dict[str, Any]:
    all_labels = {
        "kubernetes.io/os": os,
        "kubernetes.io/arch": arch,
        "kubernetes.io/hostname": name,
    }
    if build:
        all_labels["node.kubernetes.io/windows-build"] = build
    all_labels.update(labels or {})
    spec: dict[str, Any] = {"podCIDR": "10.244.0.0/24"}
    if taints:
        spec["taints"] = taints
    if unschedulable:
        spec["unschedulable"] = True
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": all_labels, "resourceVersion": "1"},
        "spec": spec,
        "status": {
            "conditions": [
                {"type": "MemoryPressure", "status": "False"},
                {"type": "Ready", "status": "True" if ready else "False"},
            ],
            "nodeInfo": {
                "architecture": arch,
                "operatingSystem": os,
                "kernelVersion": "6.8.0",
                "kubeletVersion": "v1.37.2",
            },
        },
    }


def pod_spec(*images: str, **extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "containers": [{"name": f"c{i}", "image": image} for i, image in enumerate(images)],
        "restartPolicy": "Always",
    }
    spec.update(extra)
    return spec


def pod(*images: str, annotations: dict[str, str] | None = None, **extra: Any) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": "web-0", "namespace": "team", "uid": "u-1"}
    if annotations is not None:
        metadata["annotations"] = annotations
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": pod_spec(*images, **extra),
    }


def workload(kind: str, spec: dict[str, Any], api_version: str = "apps/v1") -> dict[str, Any]:
    template = {"metadata": {"labels": {"app": "web"}}, "spec": spec}
    body: dict[str, Any]
    if kind == "CronJob":
        body = {"schedule": "*/5 * * * *", "jobTemplate": {"spec": {"template": template}}}
    else:
        body = {"selector": {"matchLabels": {"app": "web"}}, "template": template}
    return {
        "apiVersion": api_version,
        "kind": kind,
        "metadata": {"name": "web", "namespace": "team"},
        "spec": body,
    }


def arch_affinity(*terms: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": list(t)} for t in terms]
            }
        }
    }


def plats(*specs: str) -> tuple[platforms.Platform, ...]:
    return tuple(platforms.parse(s) for s in specs)


def _unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def apply_patch(document: Any, operations: list[Any]) -> Any:
    """RFC 6902 ``add`` (and ``test``); strict: a missing parent fails, as in the API server."""
    result = copy.deepcopy(document)
    for operation in operations:
        tokens = [_unescape(t) for t in operation["path"].split("/")[1:]]
        assert operation["path"].startswith("/") and tokens, operation
        parent = result
        for token in tokens[:-1]:
            parent = parent[int(token)] if isinstance(parent, list) else parent[token]
        last, value = tokens[-1], copy.deepcopy(operation.get("value"))
        if operation["op"] == "test":
            found = parent[int(last)] if isinstance(parent, list) else parent[last]
            assert found == value, operation
        elif operation["op"] != "add":
            raise AssertionError(f"unexpected op {operation['op']}")
        elif isinstance(parent, list):
            index = len(parent) if last == "-" else int(last)
            assert 0 <= index <= len(parent), operation
            parent.insert(index, value)
        else:
            assert isinstance(parent, dict), operation
            parent[last] = value
    return result
