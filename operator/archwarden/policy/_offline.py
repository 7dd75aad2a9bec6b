"""Offline checks: the constraints synthetic nodes cannot answer.

Nodes built from platforms (:func:`nodes_from_platforms`) carry their os and architecture and
nothing else a real node has: no ``disktype``, no role, no real host name. A pod that selects
one of those matches none of them, is judged to have no node, and its images are never
checked: an arm/v7-only image behind ``disktype: ssd`` would pass CI. Offline, such constraints
are assumed satisfiable (a real cluster presumably has such nodes), so the images are judged
against every platform the pod's own os and architecture constraints still allow.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection

from archwarden.policy import _nodes, _workloads

__all__ = ["assume_unmodelled"]

# Operators a node without the label fails; NotIn and DoesNotExist hold on such a node already.
_NEEDS_LABEL = frozenset({"In", "Exists", "Gt", "Lt"})


def _described(requirement: _workloads.Requirement) -> str:
    values = f" [{', '.join(requirement.values)}]" if requirement.values else ""
    return f"node affinity {requirement.key} {requirement.operator}{values}"


def assume_unmodelled(
    workload: _workloads.Workload, modelled: Collection[str] = _nodes.SYNTHETIC_LABELS
) -> tuple[_workloads.Workload, tuple[str, ...]]:
    """The workload without the constraints nodes modelling only the ``modelled`` labels could
    never satisfy, and those constraints as written (``nodeSelector disktype=ssd``).

    Dropped: nodeSelector entries and required affinity requirements (In, Exists, Gt, Lt) on
    other labels, ``matchFields`` on node names, and ``spec.nodeName``. A term left with no
    requirement admits every node, and so does the affinity it is one alternative of.
    """
    template = workload.template
    assumed: list[str] = []
    selector = []
    for key, value in template.node_selector:
        if key in modelled:
            selector.append((key, value))
        else:
            assumed.append(f"nodeSelector {key}={value}")
    terms: tuple[_workloads.SelectorTerm, ...] | None = template.required_terms
    if terms is not None:
        kept: list[_workloads.SelectorTerm] = []
        admits_all = False
        for term in terms:
            expressions = []
            for r in term.match_expressions:
                if r.key in modelled or r.operator not in _NEEDS_LABEL:
                    expressions.append(r)
                else:
                    assumed.append(_described(r))
            fields = []
            for r in term.match_fields:
                if r.operator == "In":
                    assumed.append(_described(r))
                else:
                    fields.append(r)
            relaxed = _workloads.SelectorTerm(tuple(expressions), tuple(fields))
            # An empty term matches nothing; one emptied here was all assumptions, so this
            # alternative admits every node, and then so does the whole affinity.
            admits_all = admits_all or (relaxed.empty and not term.empty)
            kept.append(relaxed)
        terms = None if admits_all else tuple(kept)
    if template.node_name:
        assumed.append(f"nodeName {template.node_name}")
    if not assumed:
        return workload, ()
    relaxed_template = dataclasses.replace(
        template, node_selector=tuple(selector), required_terms=terms, node_name=""
    )
    return dataclasses.replace(workload, template=relaxed_template), tuple(dict.fromkeys(assumed))
