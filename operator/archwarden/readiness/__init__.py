"""The cluster readiness report (``archwarden report``): which workloads could run on arm64,
and which images stop the others. Pure: the CLI gathers workloads, nodes and image answers
(through the same engine and registry client as ``check``) and hands them here::

    report = readiness.build(workloads, nodes, answers)
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
    WorkloadRow,
    build,
    top_level,
)
from archwarden.readiness._table import render as table

__all__ = [
    "ARM64",
    "REPORTED_KINDS",
    "BlockerGroup",
    "BlockingImage",
    "ImageRow",
    "Readiness",
    "Report",
    "WorkloadRow",
    "build",
    "html",
    "table",
    "top_level",
]
