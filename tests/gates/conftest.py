"""Scheduling gates on the real local cluster: the chart's MutatingAdmissionPolicy, archwarden
as a process, pods that wait for their check.

Its own package, after tests/e2e: the e2e package's shared archwarden (gates off) is stopped
by then, so no other archwarden releases or judges the pods these tests hold.
"""

from __future__ import annotations

from tests.cluster.fixtures import cluster, namespace
from tests.e2e.conftest import e2e_registry, images
from tests.support.fixtures import registry_workdir

__all__ = ["cluster", "e2e_registry", "images", "namespace", "registry_workdir"]
