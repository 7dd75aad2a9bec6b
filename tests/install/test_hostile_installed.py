"""Memory bounded by configuration, as installed (issue 18): the chart's replicas, with the
chart's own memory limit enforced by the real kubelet, survive what a tenant can write.

- A dry-run flood: server-side dry runs cost the tenant nothing and store nothing (no quota
  applies), so the only bound on what archwarden keeps of them is its own. 35 Deployments of
  35,000 tolerations each, then 300 distinct ones of 1,500 tolerations.
- A restart with 200 Pending pods of about 1 MiB each in the cluster: every replica lists
  them at start (and after every 410), so an unbounded list is an OOM loop, and while it loops
  the fail-open webhooks admit pods unchecked.

Both replicas must come through with restartCount 0 and no OOMKilled state, and archwarden
must still deny a pod it should deny afterwards.

Runs after test_gates_installed.py and before test_installed.py (file order); it deletes what
it created and leaves two fresh Ready replicas.
"""

from __future__ import annotations

import concurrent.futures
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.cluster.cluster import LocalCluster
from tests.install.conftest import Images, Release, wait_replaced
from tests.support.admission_load import api_client

pytestmark = pytest.mark.install

PENDING_PODS = 200
POD_PADDING = 1000 * 1000
"""Bytes of env values per Pending pod: about 1 MiB stored, under etcd's 1.5 MiB request limit."""


@pytest.fixture
def api(cluster: LocalCluster) -> Iterator[httpx.Client]:
    with tempfile.TemporaryDirectory(prefix="archwarden-hostile-") as tmp:
        with api_client(cluster.kubeconfig, Path(tmp), timeout=httpx.Timeout(60.0)) as client:
            yield client


def deployment(name: str, image: str, tolerations: int, tag: str) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [{"name": "c", "image": image}],
                    "tolerations": [
                        {"key": f"flood.example/{tag}-{i:06d}", "operator": "Exists"}
                        for i in range(tolerations)
                    ],
                },
            },
        },
    }


def padded_pod(name: str, image: str) -> dict[str, Any]:
    """A pod no node may take (its selector matches none), so it stays Pending, ~1 MiB."""
    env = [{"name": f"PAD_{i}", "value": "x" * 1000} for i in range(POD_PADDING // 1000)]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "nodeSelector": {"archwarden.test/no-such-node": "true"},
            "containers": [{"name": "c", "image": image, "env": env}],
        },
    }


def containers_state(release: Release) -> list[tuple[str, int, str]]:
    """(pod, restartCount, last termination reason) of every archwarden container."""
    found = []
    for pod in release.pods():
        for status in pod.get("status", {}).get("containerStatuses") or ():
            last = (status.get("lastState") or {}).get("terminated") or {}
            found.append(
                (pod["metadata"]["name"], int(status["restartCount"]), last.get("reason", ""))
            )
    return found


def assert_never_restarted(release: Release) -> None:
    state = containers_state(release)
    assert state and all(count == 0 and not reason for _, count, reason in state), (
        f"{state}\n{release.describe()}"
    )


def test_dry_run_flood_and_restart_over_large_pending_pods(
    cluster: LocalCluster, release: Release, images: Images, namespace: str, api: httpx.Client
) -> None:
    assert_never_restarted(release)
    base = f"/apis/apps/v1/namespaces/{namespace}/deployments"

    def dry_run(obj: dict[str, Any]) -> int:
        response = api.post(base, params={"dryRun": "All"}, json=obj)
        return response.status_code

    flood = [deployment(f"huge-{i}", images.amd64_only, 35_000, f"h{i}") for i in range(35)]
    flood += [deployment(f"wide-{i}", images.amd64_only, 1_500, f"w{i}") for i in range(300)]
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(dry_run, flood))
    print(f"\n{len(flood)} dry runs answered in {time.monotonic() - started:.1f} s: {codes[:3]}")
    # Every one answered by archwarden (the webhooks fail closed here): admitted (the huge
    # ones with a warning, judged by failure policy open), never a webhook error or timeout.
    assert set(codes) <= {201, 403}, sorted(set(codes))
    assert_never_restarted(release)

    pods = f"/api/v1/namespaces/{namespace}/pods"

    def create(i: int) -> int:
        return api.post(pods, json=padded_pod(f"pending-{i:03d}", images.multi)).status_code

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        created = list(pool.map(create, range(PENDING_PODS)))
    assert created.count(201) == PENDING_PODS, sorted(set(created))
    try:
        old = {pod["metadata"]["name"] for pod in release.pods()}
        cluster.kubectl(
            "-n",
            release.namespace,
            "delete",
            "pod",
            "-l",
            f"app.kubernetes.io/instance={release.name}",
            "--wait=false",
        )
        wait_replaced(release, old)
        # Ready means the first LIST of every kind is done; a while longer for any relist.
        time.sleep(15)
        assert_never_restarted(release)
        # Still deciding: an amd64-only image pinned to arm64 nodes has nowhere to run.
        pinned = padded_pod("denied", images.amd64_only)
        pinned["spec"]["containers"][0]["env"] = []
        pinned["spec"]["nodeSelector"] = {"kubernetes.io/arch": "arm64"}
        answer = api.post(pods, params={"dryRun": "All"}, json=pinned)
        assert answer.status_code == 403 and "archwarden" in answer.text, answer.text[:500]
    finally:
        # The namespace goes with its 200 MiB of pods (kubectl delete pods --all reads them
        # all first, and took over a minute).
        cluster.delete_namespace(namespace)
