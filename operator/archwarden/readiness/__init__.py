"""The cluster readiness report (``archwarden report``): which workloads could run on arm64,
and which images stop the others. Pure: the CLI gathers workloads, nodes and image answers
(through the same engine and registry client as ``check``) and hands them here::

    weights = {(ns, kind, name): readiness.weigh(obj, nodes=len(nodes)), ...}
    report = readiness.build(workloads, nodes, answers, weights=weights)
    readiness.table(report); report.to_json(); readiness.html(report)
"""

from archwarden.readiness._html import render as html
from archwarden.readiness._report import (
    ARM64,
    REPORTED_KINDS,
    BlockerGroup,
    BlockingImage,
    ImageRow,
    Readiness,
    Report,
    Totals,
    WorkloadRow,
    build,
    top_level,
)
from archwarden.readiness._table import cpu, memory
from archwarden.readiness._table import render as table
from archwarden.readiness._weights import Weight, pod_requests, weigh

__all__ = [
    "ARM64",
    "REPORTED_KINDS",
    "BlockerGroup",
    "BlockingImage",
    "ImageRow",
    "Readiness",
    "Report",
    "Totals",
    "Weight",
    "WorkloadRow",
    "build",
    "cpu",
    "html",
    "memory",
    "pod_requests",
    "table",
    "top_level",
    "weigh",
]
