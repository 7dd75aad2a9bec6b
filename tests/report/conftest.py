"""``archwarden report`` end to end: a real registry, the real local cluster, the installed CLI."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.cluster.fixtures import cluster, namespace
from tests.support.proxy import CountingProxy
from tests.support.registry import RegistryServer, start_registry

__all__ = ["cluster", "namespace", "report_proxy", "report_registry"]


@pytest.fixture(scope="package")
def report_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    server = start_registry(tmp_path_factory.mktemp("report-registry"), "plain")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="package")
def report_proxy(report_registry: RegistryServer) -> Iterator[CountingProxy]:
    """The registry as the report sees it: every request counted on the wire."""
    with CountingProxy(report_registry) as proxy:
        yield proxy
