"""The node inventory, kept up to date one node event at a time.

With thousands of nodes, most node events are heartbeats that change nothing a decision reads;
and even a real change touches one node. So every event costs O(1): the per-node values, the
per-(os, arch) counts and the ready platforms are adjusted, never recounted. Snapshots for
decisions are rebuilt lazily, at most once per change, by the first reader after it.
"""

from __future__ import annotations

import collections
import dataclasses

from archwarden.policy import _nodes

__all__ = ["Inventory", "NodeClass", "class_of", "metric_key"]


@dataclasses.dataclass(frozen=True)
class NodeClass:
    """Nodes no scheduling constraint can tell apart, unless it names a per-node label.

    Thousands of nodes usually fall into a few dozen classes (pool, zone, platform, taints),
    so decisions judge each class once.
    """

    node: _nodes.Node
    """What the members share: a node without name and per-node labels."""
    names: tuple[str, ...]
    """The members' names, sorted."""


def class_of(node: _nodes.Node) -> _nodes.Node:
    """The class a node falls in, as a node value (its :attr:`NodeClass.node`)."""
    return dataclasses.replace(
        node,
        name="",
        labels=tuple(kv for kv in node.labels if kv[0] not in _nodes.PER_NODE_LABELS),
    )


def metric_key(node: _nodes.Node) -> tuple[str, str]:
    """``(os, arch)`` as the ``archwarden_nodes`` metric labels them."""
    return node.os or "unknown", node.arch or "unknown"


class Inventory:
    """Nodes by name, with the counts and platform set derived from them."""

    def __init__(self) -> None:
        self._nodes: dict[str, _nodes.Node] = {}
        self._counts: collections.Counter[tuple[str, str]] = collections.Counter()
        # Canonical platforms of known, ready nodes, counted so a removal needs no rescan.
        self._ready: collections.Counter[str] = collections.Counter()
        self._snapshot: tuple[_nodes.Node, ...] | None = None
        # Classes: members by class, each member's class, and the classes as last built
        # (a changed class is rebuilt alone, when next asked for).
        self._members: dict[_nodes.Node, dict[str, None]] = {}
        self._class: dict[str, _nodes.Node] = {}
        self._built: dict[_nodes.Node, NodeClass] = {}
        self._classes: tuple[NodeClass, ...] | None = None
        self._class_counts: collections.Counter[tuple[str, str]] = collections.Counter()
        # Per-node label values (host names) to the nodes carrying them, so a pod pinned to one
        # host is judged against that node, not against every member of every class.
        self._by_label: dict[tuple[str, str], dict[str, None]] = {}
        self.generation = 0
        """Counts changes to what decisions read: equal generations, equal decisions."""

    def __len__(self) -> int:
        return len(self._nodes)

    def apply(
        self, name: str, node: _nodes.Node | None
    ) -> tuple[_nodes.Node | None, _nodes.Node | None] | None:
        """Record ``node`` as the current value for ``name`` (``None``: gone).

        Returns ``(old, new)`` when this changed anything a decision reads, else ``None``
        (a heartbeat): comparing two frozen nodes is all an unchanged event costs.
        """
        old = self._nodes.get(name)
        if old == node:
            return None
        if old is not None:
            self._forget(old)
            self._leave(name)
            del self._nodes[name]
        if node is not None:
            self._nodes[name] = node
            self._count(node)
            self._join(name, node)
        self._snapshot = None
        self.generation += 1
        return old, node

    def _join(self, name: str, node: _nodes.Node) -> None:
        key = class_of(node)
        members = self._members.get(key)
        if members is None:
            members = self._members[key] = {}
            self._classes = None
            self._class_counts[metric_key(key)] += 1
        members[name] = None
        self._class[name] = key
        self._built.pop(key, None)
        for kv in node.labels:
            if kv[0] in _nodes.PER_NODE_LABELS:
                self._by_label.setdefault(kv, {})[name] = None

    def _leave(self, name: str) -> None:
        for kv in self._nodes[name].labels:
            holders = self._by_label.get(kv)
            if holders is not None:
                holders.pop(name, None)
                if not holders:
                    del self._by_label[kv]
        key = self._class.pop(name)
        members = self._members[key]
        del members[name]
        if not members:
            del self._members[key]
            self._classes = None
            counted = metric_key(key)
            self._class_counts[counted] -= 1
            if not self._class_counts[counted]:
                del self._class_counts[counted]
        self._built.pop(key, None)

    def _count(self, node: _nodes.Node) -> None:
        self._counts[metric_key(node)] += 1
        if node.known and node.ready:
            self._ready[node.platform.canonical] += 1

    def _forget(self, node: _nodes.Node) -> None:
        # Counters keep zero entries; drop them so keys() is exactly what is present.
        key = metric_key(node)
        self._counts[key] -= 1
        if not self._counts[key]:
            del self._counts[key]
        if node.known and node.ready:
            canonical = node.platform.canonical
            self._ready[canonical] -= 1
            if not self._ready[canonical]:
                del self._ready[canonical]

    def labelled(self, key: str, value: str) -> list[str]:
        """Names of the nodes whose per-node label ``key`` is ``value`` (a host name)."""
        return list(self._by_label.get((key, value), ()))

    def names(self) -> list[str]:
        return list(self._nodes)

    def get(self, name: str) -> _nodes.Node | None:
        return self._nodes.get(name)

    def nodes(self) -> tuple[_nodes.Node, ...]:
        """Every node; the same tuple until the next change."""
        if self._snapshot is None:
            self._snapshot = tuple(self._nodes.values())
        return self._snapshot

    def classes(self) -> tuple[NodeClass, ...]:
        """Every node, by class; only the classes changed since the last call are rebuilt."""
        if self._classes is not None and len(self._built) == len(self._members):
            return self._classes
        for key, members in self._members.items():
            if key not in self._built:
                self._built[key] = NodeClass(key, tuple(sorted(members)))
        self._classes = tuple(self._built[key] for key in self._members)
        return self._classes

    def count(self, key: tuple[str, str]) -> int:
        """Nodes per ``(os, arch)`` (see :func:`metric_key`)."""
        return self._counts.get(key, 0)

    def counts(self) -> dict[tuple[str, str], int]:
        return dict(self._counts)

    def class_count(self, key: tuple[str, str]) -> int:
        """Node classes per ``(os, arch)`` (``archwarden_capacity_classes{source="node"}``)."""
        return self._class_counts.get(key, 0)

    def ready_platforms(self) -> frozenset[str]:
        """Canonical platforms of the known, ready nodes."""
        return frozenset(self._ready)
