"""Node affinity that admits exactly the nodes a decision judged able to run the pod.

A judgement reads a node through its judged labels (:data:`_nodes.JUDGED_LABELS`: arch, os,
Windows build and every per-node override of the runtime fallbacks), so two nodes with the same
values there get the same verdict. Placement groups the compatible nodes by those values and
turns each group into one selector term: the term names only what it takes to keep every
incompatible node out, and groups that differ in one label merge into one ``In`` list. The
result is one term per distinct requirement set, never one per node, and over the nodes it was
built from it matches the compatible ones and no other (tests/policy/test_placement.py checks
that over random clusters).

A label added to ``JUDGED_LABELS`` (with the judgement reading it) is placed by this code as
it is: there is no list of labels here to keep in step.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence

from archwarden.policy import _nodes, _workloads

__all__ = ["Placement", "Term", "placement"]

Term = tuple[_workloads.Requirement, ...]
"""Requirements ANDed together; a placement's terms are ORed."""

# What a term allows per judged label: label values, with None meaning "the label is absent".
_Allowed = dict[str, frozenset[str | None]]


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where the pods can go, in node-label terms, for mutation."""

    arches: tuple[str, ...]
    """``kubernetes.io/arch`` values of the candidate nodes (and provisionable capacity)
    that can run the pod."""
    terms: tuple[Term, ...] = ()
    """Alternatives (ORed) to AND into every required affinity term so the pod avoids the
    candidate nodes that cannot run it; empty when nothing needs excluding. Over the nodes
    judged, a node matches one of them exactly when it was judged able to run the pod."""

    @property
    def required(self) -> Term:
        """The requirements every alternative shares (the whole term when there is one)."""
        if not self.terms:
            return ()
        first, *others = self.terms
        return tuple(r for r in first if all(r in term for term in others))


def _values(node: _nodes.Node) -> dict[str, str | None]:
    labels = node.label_map
    return {key: labels.get(key) for key in _nodes.JUDGED_LABELS}


def _matches(allowed: _Allowed, values: Mapping[str, str | None]) -> bool:
    return all(values[key] in permitted for key, permitted in allowed.items())


def _forced(compatible: Sequence[_nodes.Node], incompatible: Sequence[_nodes.Node]) -> set[str]:
    """Labels every term names even when today's nodes would not need them.

    The arch pin always goes in (a node joining before the pod is scheduled is kept out too),
    and the os whenever the judged nodes span more than one (a Windows node of the same arch).
    """
    forced = {_nodes.LABEL_ARCH}
    judged = [*compatible, *incompatible]
    if len({node.label_map.get(_nodes.LABEL_OS) for node in judged}) > 1:
        forced.add(_nodes.LABEL_OS)
    return forced


def _narrowest(
    group: Mapping[str, str | None],
    excluded: Sequence[Mapping[str, str | None]],
    forced: set[str],
) -> _Allowed:
    """The fewest labels of ``group`` that still keep every ``excluded`` node out.

    Labels are tried for removal from the least to the most fundamental (overrides, then
    build, os, arch); one that leaves an excluded node matched stays.
    """
    allowed: _Allowed = {key: frozenset({value}) for key, value in group.items()}
    for key in reversed(_nodes.JUDGED_LABELS):
        if key in forced and group[key] is not None:
            continue
        trial = {k: v for k, v in allowed.items() if k != key}
        if not any(_matches(trial, values) for values in excluded):
            allowed = trial
    return allowed


def _mergeable(first: _Allowed, second: _Allowed) -> str | None:
    """The one label two terms differ in, when merging them loses nothing; else ``None``."""
    if first.keys() != second.keys():
        return None
    differing = [key for key in first if first[key] != second[key]]
    if len(differing) != 1:
        return None
    key = differing[0]
    # "absent or one of these values" is no single requirement: such terms stay apart.
    if None in first[key] or None in second[key]:
        return None
    return key


def _merged(terms: list[_Allowed]) -> list[_Allowed]:
    """Equal terms once, and terms that differ in one label's values merged (``In [a, b]``):
    the merged term matches exactly what the two did."""
    out: list[_Allowed] = []
    for term in terms:
        if term in out:
            continue
        for i, other in enumerate(out):
            key = _mergeable(other, term)
            if key is not None:
                out[i] = {**other, key: other[key] | term[key]}
                break
        else:
            out.append(term)
    return out if len(out) == len(terms) else _merged(out)


def _requirements(allowed: _Allowed) -> Term:
    out = []
    for key in _nodes.JUDGED_LABELS:
        if key not in allowed:
            continue
        values = allowed[key]
        if values == {None}:
            out.append(_workloads.Requirement(key, "DoesNotExist"))
        else:
            present = sorted(v for v in values if v is not None)
            out.append(_workloads.Requirement(key, "In", tuple(present)))
    return tuple(out)


def _arches(compatible: Iterable[_nodes.Node]) -> tuple[str, ...]:
    """The arch labels of the compatible nodes; () when one of them has none."""
    values = [node.label_map.get(_nodes.LABEL_ARCH) for node in compatible]
    if any(v is None for v in values):
        return ()
    return tuple(sorted({v for v in values if v is not None}))


def placement(compatible: Sequence[_nodes.Node], incompatible: Sequence[_nodes.Node]) -> Placement:
    """The affinity terms that keep the pod on ``compatible`` nodes and off ``incompatible``
    ones (both: the candidates, by class, and provisionable capacity's nodes).

    Nothing is required while nothing needs excluding. A node whose judged labels equal a
    compatible node's cannot be told apart by any selector; the judgement gives it the same
    verdict, so that never happens between a compatible and an incompatible node, except for
    nodes whose platform is read from ``nodeInfo`` because they carry no arch/os label.
    """
    arches = _arches(compatible)
    if not incompatible:
        return Placement(arches=arches)
    forced = _forced(compatible, incompatible)
    excluded = [_values(node) for node in incompatible]
    groups = list(dict.fromkeys(tuple(_values(node).items()) for node in compatible))
    terms = _merged([_narrowest(dict(group), excluded, forced) for group in groups])
    # The widest alternative first: a pod already created (gated) may only narrow each of its
    # own terms, so it gets the first alone (a subset of the nodes able to run it).
    values = [_values(node) for node in compatible]
    terms.sort(key=lambda term: -sum(_matches(term, v) for v in values))
    rendered = tuple(dict.fromkeys(_requirements(term) for term in terms))
    return Placement(arches=arches, terms=rendered)
