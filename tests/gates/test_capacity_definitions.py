"""Capacity kinds whose CRD comes or goes while archwarden runs: watched from the moment the
CRD is Established, dropped when it is deleted, no restart.

Here, not in tests/e2e, because it needs an archwarden of its own started before the change
(and the e2e package's shared one stopped), and because it deletes the NodePool CRD, which
tests/e2e's Karpenter must not see.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest

from tests.cluster.cluster import LocalCluster
from tests.e2e.conftest import Images
from tests.e2e.test_admission import deployment
from tests.e2e.test_capacity import until
from tests.support.archwarden import ArchwardenProcess
from tests.support.capacity import install_capacity_crds, kwok_nodepool

pytestmark = pytest.mark.e2e

NODEPOOLS = "nodepools.karpenter.sh"


def test_a_nodepool_crd_installed_or_removed_while_running_counts_at_once(
    cluster: LocalCluster, namespace: str, images: Images, tmp_path: Path
) -> None:
    install_capacity_crds(cluster)
    pool = f"aw-late-s390x-{secrets.token_hex(3)}"
    workload = deployment("mainframe", images.s390x_only)
    archwarden = ArchwardenProcess(
        tmp_path / "aw",
        cluster.kubeconfig,
        {
            "mode": "enforce",
            "registries": {images.host: {"insecure": True}},
            "cache": {"failureTTL": 1},
            "audit": {"enabled": False},
            "webhook": {
                "clientCAFile": str(cluster.ca_file),
                "clientNames": [LocalCluster.WEBHOOK_CLIENT_NAME],
            },
        },
        dev_name="archwarden-capacity.io",
    )
    archwarden.start()
    try:
        # No s390x node, no pool yet: denied.
        until(
            cluster, namespace, workload, allowed=False, text="linux/s390x", archwarden=archwarden
        )
        cluster.apply(kwok_nodepool(pool, ["s390x"]))
        until(
            cluster, namespace, workload, allowed=True,
            text=f"NodePool {pool} can provision linux/s390x", archwarden=archwarden,
        )  # fmt: skip

        # The CRD deleted (its NodePools with it): the pool no longer counts.
        cluster.kubectl("delete", "crd", NODEPOOLS, "--wait=true", "--timeout=60s")
        until(
            cluster, namespace, workload, allowed=False,
            text="supports linux/s390x only", archwarden=archwarden,
        )  # fmt: skip

        # Installed again while archwarden runs: watched again, without a restart.
        install_capacity_crds(cluster)
        manifest = json.dumps(kwok_nodepool(pool, ["s390x"]))
        cluster.wait_for(
            lambda: (
                cluster.kubectl("apply", "-f", "-", input=manifest, check=False).returncode == 0
            ),
            timeout=30,
            interval=0.5,
            message="the NodePool served again",
        )
        until(
            cluster, namespace, workload, allowed=True,
            text=f"NodePool {pool} can provision linux/s390x", archwarden=archwarden,
        )  # fmt: skip
        log = archwarden.log_file.read_text(errors="replace")
        assert "NodePool CRD removed, no longer watched" in log
        assert "NodePool CRD established, watching NodePools" in log
    finally:
        archwarden.stop()
        install_capacity_crds(cluster)
        cluster.kubectl("delete", "nodepool", pool, "--ignore-not-found", check=False)
