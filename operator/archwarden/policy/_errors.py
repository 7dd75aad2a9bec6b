"""The policy engine's exceptions.

::

    ValueError
    └── InvalidObject          a Kubernetes object the engine cannot read; ``field`` names where
        ├── InvalidWorkload    a Pod or workload (malformed spec, unsupported kind)
        ├── InvalidNode        a Node
        └── InvalidCapacity    a NodePool, a Cluster API node group, a configured node group

Wrong types anywhere in the input surface as one of these, never as ``KeyError`` or
``TypeError``, so a webhook can turn them into a clear refusal.
"""

from __future__ import annotations

__all__ = ["InvalidCapacity", "InvalidNode", "InvalidObject", "InvalidWorkload"]


class InvalidObject(ValueError):
    """A Kubernetes object with a field of the wrong type or an impossible value."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}" if field else problem)
        self.field = field
        self.problem = problem


class InvalidWorkload(InvalidObject):
    """A Pod or workload the engine cannot read."""


class InvalidNode(InvalidObject):
    """A Node the engine cannot read."""


class InvalidCapacity(InvalidObject):
    """An object describing provisionable capacity that the engine cannot read."""
