"""pytest fixtures for the local cluster, shared by every test package that needs it.

Use from a conftest.py (pytest only honours ``pytest_plugins`` in the rootdir conftest)::

    from tests.cluster.fixtures import cluster, namespace  # noqa: F401

``cluster`` (session scope) brings the cluster up once through ``hack/cluster/up.sh`` (which
builds the binaries first when the cache is cold) and stops it at the end of the session. It does
not stop a cluster that was already up and healthy before the session, nor any cluster when
``ARCHWARDEN_KEEP_CLUSTER=1``. ``namespace`` creates a unique namespace per test (with its
``default`` ServiceAccount ready) and deletes it afterwards.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Iterator

import pytest

from tests.cluster.cluster import LocalCluster

__all__ = ["cluster", "namespace"]


@pytest.fixture(scope="session")
def cluster() -> Iterator[LocalCluster]:
    local = LocalCluster()
    reused = local.is_healthy()
    if not reused:
        local.up()
    try:
        yield local
    finally:
        if not reused and os.environ.get("ARCHWARDEN_KEEP_CLUSTER") != "1":
            local.down()


@pytest.fixture
def namespace(cluster: LocalCluster, request: pytest.FixtureRequest) -> Iterator[str]:
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"t-{slug}-{secrets.token_hex(3)}"
    cluster.create_namespace(name)
    try:
        yield name
    finally:
        cluster.delete_namespace(name)
