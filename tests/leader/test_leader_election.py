"""Three archwarden replicas and one Lease on the real API server: one leader does the
background work, a SIGKILLed leader is replaced within the lease duration plus 2 s, and a
stopped one hands over at once.

The replicas run without --dev, so they register no webhook configuration: nothing outside the
test's namespace is reviewed. Every other namespace that exists at start is excluded from the
audit, so only the test's Deployment is judged (and counted per replica).

Timings are short (lease 4 s, renew deadline 3 s, retry 1 s) unless
``ARCHWARDEN_LEADER_DEFAULTS=1`` selects the chart's (15 s, 10 s, 2 s), as the README's figures
were measured. Each measured figure is printed (``pytest -s``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from archwarden import kube
from tests.cluster.cluster import LocalCluster
from tests.support.archwarden import ArchwardenProcess
from tests.support.pki import write_tls_files

pytestmark = pytest.mark.e2e

LEASE = "archwarden-leader"
DEFAULTS = os.environ.get("ARCHWARDEN_LEADER_DEFAULTS") == "1"
DURATION, RENEW, RETRY = (15, 10.0, 2.0) if DEFAULTS else (4, 3.0, 1.0)
REPLICAS = ("replica-a", "replica-b", "replica-c")


class Lease:
    """Reads the Lease through the API directly: kubectl's start-up would blur the timings."""

    def __init__(self, cluster: LocalCluster, namespace: str) -> None:
        import kubernetes

        self.api = kubernetes.client.CoordinationV1Api(
            kube.load_api_client(str(cluster.kubeconfig))
        )
        self.namespace = namespace

    def spec(self) -> dict[str, Any]:
        lease = self.api.read_namespaced_lease(LEASE, self.namespace)
        spec = lease.spec
        return {
            "holder": spec.holder_identity or "",
            "transitions": spec.lease_transitions or 0,
            "duration": spec.lease_duration_seconds,
        }

    def wait_for_holder(self, other_than: str, timeout: float) -> tuple[str, float]:
        """The next holder that is neither ``other_than`` nor nobody, and when it took over."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                current = self.spec()["holder"]
            except Exception:
                current = ""
            if current and current != other_than:
                return current, time.monotonic()
            time.sleep(0.05)
        raise AssertionError(f"no new holder of the Lease within {timeout}s")


@pytest.fixture
def replicas(
    cluster: LocalCluster, namespace: str, tmp_path: Path
) -> Iterator[dict[str, ArchwardenProcess]]:
    tls = write_tls_files(tmp_path / "tls")
    others = [
        n["metadata"]["name"]
        for n in cluster.get_json("namespaces")["items"]
        if n["metadata"]["name"] != namespace
    ]
    config = {
        "mode": "audit",
        "excludedNamespaces": others,
        "audit": {"periodSeconds": 10},
        "webhook": {
            "address": "127.0.0.1",
            "certFile": str(tls.cert_file),
            "keyFile": str(tls.key_file),
        },
        "leaderElection": {
            "namespace": namespace,
            "leaseName": LEASE,
            "leaseDurationSeconds": DURATION,
            "renewDeadlineSeconds": RENEW,
            "retryPeriodSeconds": RETRY,
        },
    }
    processes = {
        name: ArchwardenProcess(
            tmp_path / name, cluster.kubeconfig, config, dev=False, env={"POD_NAME": name}
        )
        for name in REPLICAS
    }
    try:
        for process in processes.values():
            # Ready (/readyz) whether or not it leads: start() waits for it.
            process.start()
        yield processes
    finally:
        for process in processes.values():
            process.stop()


def audited(process: ArchwardenProcess) -> float:
    return process.metric("archwarden_audit_workloads_total")


def test_one_leader_audits_a_killed_one_is_replaced_and_a_stopped_one_hands_over_at_once(
    cluster: LocalCluster, namespace: str, replicas: dict[str, ArchwardenProcess]
) -> None:
    cluster.apply(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web"},
            "spec": {
                "replicas": 0,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": "registry.invalid/web:1"}]},
                },
            },
        },
        namespace=namespace,
    )
    lease = Lease(cluster, namespace)
    first, _ = lease.wait_for_holder("", timeout=30)
    assert first in replicas
    assert lease.spec()["duration"] == DURATION

    gone: set[str] = set()

    def leaders() -> list[str]:
        alive = [n for n in replicas if n not in gone]
        return [n for n in alive if replicas[n].metric("archwarden_leader") == 1]

    cluster.wait_for(lambda: leaders() == [first], timeout=10, message="one leader")
    # The leader audits the Deployment (at start and every 10 s); the others never do.
    cluster.wait_for(
        lambda: audited(replicas[first]) >= 1,
        timeout=40,
        message=lambda: "the leader's audit\n" + replicas[first].log_tail(),
    )
    time.sleep(2 * RETRY)
    followers = [n for n in replicas if n != first]
    assert [audited(replicas[n]) for n in followers] == [0, 0]
    assert all(
        replicas[n].metric("archwarden_leader_transitions_total", change="started") == 0
        for n in followers
    )

    # SIGKILL: no release; the others wait out the lease from when they last saw it change.
    replicas[first].kill()
    gone.add(first)
    killed_at = time.monotonic()
    second, taken_at = lease.wait_for_holder(first, timeout=DURATION + 10)
    failover = taken_at - killed_at
    print(f"\nfailover after SIGKILL: {failover:.2f}s (lease {DURATION}s, retry {RETRY:g}s)")
    assert failover <= DURATION + 2
    assert lease.spec()["transitions"] == 1
    cluster.wait_for(lambda: leaders() == [second], timeout=5, message="the new leader")
    # It resumes from the cluster as its own watches hold it: the audit runs again, there.
    cluster.wait_for(
        lambda: audited(replicas[second]) >= 1,
        timeout=40,
        message=lambda: "the new leader's audit\n" + replicas[second].log_tail(),
    )
    third = next(n for n in followers if n != second)
    assert audited(replicas[third]) == 0

    # A graceful stop releases the Lease: the last replica takes it at its next read.
    stopping = time.monotonic()
    replicas[second].stop()
    gone.add(second)
    stopped = time.monotonic() - stopping
    holder_now, taken_at = lease.wait_for_holder(second, timeout=DURATION + 10)
    handover = taken_at - stopping
    print(f"handover after SIGTERM: {handover:.2f}s (the process took {stopped:.2f}s to exit)")
    assert holder_now == third
    assert handover <= stopped + RETRY + 1
    assert "lease " + f"{namespace}/{LEASE} released" in replicas[second].log_tail(200)
    cluster.wait_for(lambda: leaders() == [third], timeout=5, message="the last leader")
