"""archwarden end to end: a real registry, the real local cluster, archwarden as a process."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.cluster.cluster import LocalCluster
from tests.cluster.fixtures import cluster, namespace
from tests.support.archwarden import ArchwardenProcess
from tests.support.capacity import install_capacity_crds
from tests.support.fixtures import registry_workdir
from tests.support.images import Seeder
from tests.support.registry import RegistryServer, start_registry

__all__ = [
    "CAPI_NAMESPACE",
    "archwarden",
    "cluster",
    "e2e_registry",
    "images",
    "namespace",
    "private_registry",
    "registry_workdir",
]


CAPI_NAMESPACE = f"aw-capi-{secrets.token_hex(3)}"
"""The one namespace whose Cluster API node groups archwarden counts (capacity.clusterAPI
.namespaces): node groups in a test's own namespace, as a tenant would write them, must not."""


@dataclass(frozen=True)
class Images:
    host: str
    amd64_only: str
    arm64_only: str
    multi: str  # linux/amd64 + linux/arm64
    everywhere: str  # linux/amd64, arm64, ppc64le + windows/amd64 (ltsc2022)
    s390x_only: str
    artifact: str  # an OCI artifact (a data file): names no platform

    def ref(self, name: str) -> str:
        return f"{self.host}/{name}"


@pytest.fixture(scope="package")
def e2e_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    server = start_registry(tmp_path_factory.mktemp("e2e-registry"), "plain")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="package")
def images(e2e_registry: RegistryServer) -> Images:
    with Seeder(e2e_registry) as seeder:
        seeder.push_image("e2e/legacy", "2.3", "linux/amd64")
        seeder.push_image("e2e/edge", "0.9", "linux/arm64")
        seeder.push_image("e2e/mainframe", "1", "linux/s390x")
        seeder.push_multiarch("e2e/web", "1.0", ["linux/amd64", "linux/arm64"], attestations=True)
        children = [
            seeder.push_image("e2e/all", None, p)
            for p in ("linux/amd64", "linux/arm64", "linux/ppc64le")
        ]
        win = seeder.push_image("e2e/all", None, "windows/amd64:10.0.20348.1129", fmt="docker")
        seeder.push_index("e2e/all", "1", [(c, c.platform) for c in [*children, win]], fmt="oci")
        seeder.push_artifact("e2e/model", "1", {"weights.bin": b"\x00" * 64})
    host = e2e_registry.host
    return Images(
        host=host,
        amd64_only=f"{host}/e2e/legacy:2.3",
        arm64_only=f"{host}/e2e/edge:0.9",
        multi=f"{host}/e2e/web:1.0",
        everywhere=f"{host}/e2e/all:1",
        s390x_only=f"{host}/e2e/mainframe:1",
        artifact=f"{host}/e2e/model:1",
    )


@pytest.fixture(scope="package")
def private_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    """htpasswd Basic auth; holds private/app:1 (linux/amd64 + linux/arm64)."""
    server = start_registry(tmp_path_factory.mktemp("e2e-private"), "basic")
    try:
        with Seeder(server) as seeder:
            seeder.push_multiarch("private/app", "1", ["linux/amd64", "linux/arm64"])
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="package")
def archwarden(
    cluster: LocalCluster,
    e2e_registry: RegistryServer,
    private_registry: RegistryServer,
    images: Images,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ArchwardenProcess]:
    workdir: Path = tmp_path_factory.mktemp("archwarden")
    # archwarden watches the capacity kinds whose CRDs exist when it starts (test_capacity).
    install_capacity_crds(cluster)
    process = ArchwardenProcess(
        workdir,
        cluster.kubeconfig,
        {
            "mode": "enforce",
            "failurePolicy": "open",
            # The cluster's own registry too: every archwarden watching this cluster sees the
            # pods the real node pulls from it, and explains their exec format errors.
            "registries": {
                e2e_registry.host: {"insecure": True},
                private_registry.host: {"insecure": True},
                cluster.registry: {"insecure": True},
            },
            "cache": {"tagTTL": 300, "failureTTL": 1},
            # Listed and watched there alone; the namespace is created by the test that uses it
            # (a list in a namespace that does not exist yet is empty).
            "capacity": {"clusterAPI": {"namespaces": [CAPI_NAMESPACE]}},
            # Only the API server (its webhook client certificate) is served; Events about
            # objects archwarden cannot look up need that proof.
            "webhook": {
                "clientCAFile": str(cluster.ca_file),
                "clientNames": [LocalCluster.WEBHOOK_CLIENT_NAME],
            },
        },
    )
    process.start()
    # The webhook configurations exist once kopf has registered them; wait until the API
    # server really calls us (a server-side dry run of a pod we deny).
    probe = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "archwarden-probe", "namespace": "default"},
        "spec": {
            "containers": [{"name": "c", "image": images.amd64_only}],
            "nodeSelector": {"kubernetes.io/arch": "arm64"},
        },
    }
    import json

    try:
        cluster.wait_for(
            lambda: (
                "archwarden"
                in cluster.kubectl(
                    "create", "--dry-run=server", "-f", "-", input=json.dumps(probe), check=False
                ).stderr
            ),
            timeout=60,
            interval=0.5,
            message=lambda: "the API server calling archwarden's webhook\n" + process.log_tail(),
        )
        yield process
    finally:
        process.stop()
