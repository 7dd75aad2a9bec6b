"""Human text for decisions: image and node platform summaries, and kubectl warning lines."""

from __future__ import annotations

import collections
import textwrap
from collections.abc import Iterable, Sequence

from archwarden import platforms
from archwarden.policy import _nodes

__all__ = [
    "WARNING_WIDTH",
    "article",
    "join_and",
    "node_summary",
    "platform_summary",
    "refused_fallback",
    "show",
    "some_names",
    "supports",
    "warning_lines",
]

# kubectl prints each admission warning on its own "Warning: ..." line; past ~120 characters
# they wrap badly in terminals, and the API server truncates very long ones.
WARNING_WIDTH = 120

# How many node names a message lists before "and N more": enough to act on, short enough to read.
NAMES_SHOWN = 5


def show(platform: platforms.Platform) -> str:
    """Canonical form; Windows keeps os.version, since the build decides compatibility there."""
    return platform.detailed if platform.os == "windows" else platform.canonical


def join_and(items: Sequence[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def supports(image_platforms: Iterable[platforms.Platform]) -> str:
    """``supports linux/amd64 only`` / ``supports linux/amd64 and linux/s390x only``."""
    shown = list(dict.fromkeys(show(p) for p in sorted(image_platforms)))
    return f"supports {join_and(shown)} only"


def node_summary(nodes: Iterable[_nodes.Node]) -> str:
    """``linux/arm64 (3), linux/ppc64le (1)``: by count, most common first, then by name."""
    return platform_summary((node.platform, 1) for node in nodes)


def platform_summary(counted: Iterable[tuple[platforms.Platform, int]]) -> str:
    """As :func:`node_summary`, from ``(platform, node count)`` pairs (classes of nodes)."""
    counts: collections.Counter[str] = collections.Counter()
    for platform, count in counted:
        counts[show(platform)] += count
    ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return ", ".join(f"{name} ({count})" for name, count in ordered)


def refused_fallback(
    node: platforms.Platform, image: platforms.Platform, fallbacks: platforms.Fallbacks
) -> str | None:
    """Why a node does not run ``image`` when only a disabled runtime fallback stands in the
    way (and how to enable it); None otherwise."""
    if platforms.node_can_run(node, image, fallbacks) or not platforms.node_can_run(
        node, image, platforms.ALL_FALLBACKS
    ):
        return None
    if image.architecture == "arm":
        setting, label = "platforms.arm64RunsArm32", _nodes.LABEL_RUNS_ARM32
    else:
        setting, label = "platforms.amd64Runs386", _nodes.LABEL_RUNS_386
    return (
        f"{node.architecture} nodes do not run {image.canonical} here: "
        f"set {setting} or label nodes {label}=true"
    )


def some_names(names: Sequence[str]) -> str:
    """The first few names, then ``and N more``."""
    if len(names) <= NAMES_SHOWN:
        return join_and(names)
    return ", ".join(names[:NAMES_SHOWN]) + f" and {len(names) - NAMES_SHOWN} more"


def article(word: str) -> str:
    """``a``/``an`` as architecture names are read aloud (an arm64, an s390x, a ppc64le)."""
    spoken_vowel = word[:1] in ("a", "e", "i", "o", "u") or word.startswith(("s390", "x86"))
    return "an" if spoken_vowel else "a"


def warning_lines(message: str, width: int = WARNING_WIDTH) -> tuple[str, ...]:
    """Split a message into warnings of at most ``width`` characters where possible.

    Clauses (separated by ``"; "``) are packed whole; a clause longer than ``width`` is wrapped
    at spaces, unless it holds a word that long (an image reference), which is never cut: then
    the clause stays whole rather than leave a stray word on a line of its own.
    """
    lines: list[str] = []
    for clause in message.split("; "):
        pieces = [clause]
        if len(clause) > width and all(len(word) <= width for word in clause.split()):
            pieces = textwrap.wrap(clause, width, break_on_hyphens=False)
        first, rest = pieces[0], pieces[1:]
        if lines and len(lines[-1]) + 2 + len(first) <= width:
            lines[-1] += "; " + first
        else:
            lines.append(first)
        lines.extend(rest)
    return tuple(line for line in lines if line)
