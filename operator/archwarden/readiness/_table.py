"""The report as text for a terminal: one line per workload, its images below, the summary."""

from __future__ import annotations

from archwarden.printable import printable
from archwarden.readiness import _report

__all__ = ["render"]


def _platforms(values: tuple[str, ...]) -> str:
    return printable(", ".join(values)) if values else "-"


def render(report: _report.Report) -> str:
    header = ("WORKLOAD", "ARM64", "VERDICT", "RUNS ON", "SCHEDULABLE ON")
    lines: list[tuple[str, ...]] = [header]
    images: dict[int, list[str]] = {}
    for row in report.workloads:
        lines.append(
            (
                printable(row.key),
                str(row.readiness),
                row.verdict,
                _platforms(row.runs_on),
                _platforms(row.schedulable_on),
            )
        )
        images[len(lines) - 1] = [
            f"    {printable(i.image)}  "
            + (f"error: {printable(i.error)}" if i.error else _platforms(i.platforms))
            for i in row.images
        ]
    widths = [max(len(line[c]) for line in lines) for c in range(len(header) - 1)]
    out: list[str] = []
    for index, line in enumerate(lines):
        cells = [f"{cell:<{widths[c]}}" for c, cell in enumerate(line[:-1])]
        out.append("  ".join([*cells, line[-1]]).rstrip())
        out.extend(images.get(index, []))
    out.append("")
    nodes = ", ".join(f"{p} ({n})" for p, n in report.node_platforms) or "none"
    out.append(f"Node platforms: {nodes}")
    total = len(report.workloads)
    ready = report.count(_report.Readiness.READY)
    blocked = report.count(_report.Readiness.BLOCKED)
    unknown = report.count(_report.Readiness.UNKNOWN)
    out.append(
        f"arm64: {ready} of {total} workloads could move (every image has linux/arm64); "
        f"{blocked} blocked, {unknown} unknown (an image could not be inspected)"
    )
    if report.blockers:
        out.append("Blocking images, by registry and owner:")
        for group in report.blockers:
            owner = f" {group.owner}" if group.owner else ""
            count = len(group.workloads)
            out.append(
                printable(f"  {group.registry}{owner}: {count} workload{'s' if count != 1 else ''}")
            )
            for image in group.images:
                out.append(
                    printable(
                        f"    {image.image} ({', '.join(image.platforms) or '-'}) blocks "
                        + ", ".join(image.workloads)
                    )
                )
    return "\n".join(out)
