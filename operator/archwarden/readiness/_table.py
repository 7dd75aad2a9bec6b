"""The report as text for a terminal: one line per workload, its images below, the summary."""

from __future__ import annotations

from collections.abc import Sequence

from archwarden.printable import printable
from archwarden.readiness import _report

__all__ = ["cpu", "memory", "render"]

_BINARY = (("Ei", 2**60), ("Pi", 2**50), ("Ti", 2**40), ("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10))


def cpu(millis: int) -> str:
    """Cores, exactly: ``250`` millicores is ``0.25``, ``2000`` is ``2``."""
    whole, rest = divmod(millis, 1000)
    return f"{whole}.{rest:03d}".rstrip("0").rstrip(".") if rest else str(whole)


def memory(size: int) -> str:
    """Bytes in the largest binary unit they reach, to a tenth (``268435456`` is ``256Mi``)."""
    for suffix, unit in _BINARY:
        if size >= unit:
            whole, rest = divmod(size, unit)
            if not rest:
                return f"{whole}{suffix}"
            return f"{size / unit:.1f}{suffix}"
    return str(size)


def _platforms(values: tuple[str, ...]) -> str:
    return printable(", ".join(values)) if values else "-"


def _aligned(lines: Sequence[tuple[str, ...]], indent: str = "") -> list[str]:
    """Columns padded to their widest cell; the last column unpadded."""
    widths = [max(len(line[c]) for line in lines) for c in range(len(lines[0]) - 1)]
    return [
        indent
        + "  ".join(
            [*(f"{cell:<{widths[c]}}" for c, cell in enumerate(line[:-1])), line[-1]]
        ).rstrip()
        for line in lines
    ]


def _held(totals: _report.Totals) -> str:
    count = totals.workloads
    return (
        f"{count} workload{'s' if count != 1 else ''}, {totals.replicas} replicas, "
        f"{cpu(totals.cpu_millis)} CPU, {memory(totals.memory_bytes)} memory"
    )


def _weights(report: _report.Report) -> list[str]:
    header = ("NAMESPACE", "ARM64", "WORKLOADS", "REPLICAS", "CPU", "MEMORY")
    lines: list[tuple[str, ...]] = [header]
    for namespace in (None, *report.namespaces):
        for state in _report.Readiness:
            totals = report.totals(state, namespace)
            if namespace is not None and not totals.workloads:
                continue
            lines.append(
                (
                    "(all)" if namespace is None else printable(namespace) or "-",
                    str(state),
                    str(totals.workloads),
                    str(totals.replicas),
                    cpu(totals.cpu_millis),
                    memory(totals.memory_bytes),
                )
            )
    return [
        "Requests by arm64 readiness (CPU in cores; replicas times each pod's requests):",
        *_aligned(lines, "  "),
    ]


def render(report: _report.Report) -> str:
    header = (
        "WORKLOAD",
        "ARM64",
        "REPLICAS",
        "CPU",
        "MEMORY",
        "VERDICT",
        "RUNS ON",
        "SCHEDULABLE ON",
    )
    lines: list[tuple[str, ...]] = [header]
    details: dict[int, list[str]] = {}
    for row in report.workloads:
        weight = row.weight
        lines.append(
            (
                printable(row.key),
                str(row.readiness),
                str(weight.replicas),
                cpu(weight.total_cpu_millis),
                memory(weight.total_memory_bytes),
                row.verdict,
                _platforms(row.runs_on),
                _platforms(row.schedulable_on),
            )
        )
        details[len(lines) - 1] = [
            f"    {printable(i.image)}  "
            + (f"error: {printable(i.error)}" if i.error else _platforms(i.platforms))
            for i in row.images
        ] + [f"    note: {printable(note)}" for note in weight.notes]
    out: list[str] = []
    for index, line in enumerate(_aligned(lines)):
        out.append(line)
        out.extend(details.get(index, []))
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
    moving = report.totals(_report.Readiness.READY)
    everything = _report.Totals.of(row.weight for row in report.workloads)
    out.append(
        f"arm64: {cpu(moving.cpu_millis)} of {cpu(everything.cpu_millis)} CPU, "
        f"{memory(moving.memory_bytes)} of {memory(everything.memory_bytes)} memory and "
        f"{moving.replicas} of {everything.replicas} replicas requested could move"
    )
    out.extend(_weights(report))
    if report.blockers:
        out.append("Blocking images, by registry and owner, most requests held back first:")
        for group in report.blockers:
            owner = f" {group.owner}" if group.owner else ""
            out.append(printable(f"  {group.registry}{owner}: {_held(group.held)}"))
            for image in group.images:
                out.append(
                    printable(
                        f"    {image.image} ({', '.join(image.platforms) or '-'}) holds back "
                        f"{cpu(image.held.cpu_millis)} CPU, {memory(image.held.memory_bytes)}: "
                        "blocks " + ", ".join(image.workloads)
                    )
                )
    return "\n".join(out)
