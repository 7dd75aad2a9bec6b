"""Leader election between archwarden processes on the real local cluster."""

from __future__ import annotations

from tests.cluster.fixtures import cluster, namespace

__all__ = ["cluster", "namespace"]
