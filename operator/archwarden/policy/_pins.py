"""The pod's own platform pins, and the images they contradict.

A pod that pins ``kubernetes.io/arch``, ``kubernetes.io/os`` or the Windows build (in its
nodeSelector or in every required affinity term) can only ever run on nodes of that kind. An
image none of whose platforms such a node could run makes the pod unrunnable whatever nodes
exist, so this is judged even when no node matches the pod today (and it would otherwise stay
Pending forever).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

from archwarden import platforms
from archwarden.policy import _messages, _nodes, _workloads

__all__ = ["Pin", "contradicted", "message", "pins"]

# The labels a pin can contradict an image through, in the order they are described.
_PINNED = (_nodes.LABEL_ARCH, _nodes.LABEL_OS, _nodes.LABEL_WINDOWS_BUILD)


@dataclasses.dataclass(frozen=True)
class Pin:
    key: str
    described: str
    """As the user wrote it: ``nodeSelector kubernetes.io/arch=s390x``."""
    values: tuple[str, ...]
    """The values a node may have; a node without the label is never admitted."""


def _pin(template: _workloads.PodTemplate, key: str) -> Pin | None:
    selected = dict(template.node_selector).get(key)
    if selected is not None:
        return Pin(key, f"nodeSelector {key}={selected}", (selected,))
    terms = [t for t in template.required_terms or () if not t.empty]
    if not terms:
        return None
    allowed: set[str] = set()
    for term in terms:
        found = [
            set(r.values) for r in term.match_expressions if r.key == key and r.operator == "In"
        ]
        if not found:
            return None  # this term admits any value: no pin
        allowed |= set.intersection(*found)
    values = tuple(sorted(allowed))
    return Pin(key, f"node affinity {key} In [{', '.join(values)}]", values)


def pins(template: _workloads.PodTemplate) -> tuple[Pin, ...]:
    """The pod's arch, os and Windows-build pins (each present one, in that order)."""
    return tuple(pin for key in _PINNED if (pin := _pin(template, key)) is not None)


def _runnable(
    image: platforms.Platform, pinned: Sequence[Pin], fallbacks: platforms.Fallbacks
) -> bool:
    """Whether some node the pins allow could run this image platform."""
    by_key = {pin.key: pin.values for pin in pinned}
    oses = by_key.get(_nodes.LABEL_OS, (image.os,))
    arches = by_key.get(_nodes.LABEL_ARCH, (image.architecture,))
    builds = by_key.get(_nodes.LABEL_WINDOWS_BUILD, (image.os_version,))
    return any(
        platforms.node_can_run(
            platforms.normalize(os, arch, os_version=build if os == "windows" else ""),
            image,
            fallbacks,
        )
        for os in oses
        for arch in arches
        for build in builds
    )


def contradicted(
    pinned: Sequence[Pin],
    resolved: Mapping[str, Sequence[platforms.Platform]],
    fallbacks: platforms.Fallbacks,
) -> dict[str, Sequence[platforms.Platform]]:
    """The images no node the pins allow could run, with their platforms."""
    if not pinned:
        return {}
    return {
        image: found
        for image, found in resolved.items()
        if not any(_runnable(p, pinned, fallbacks) for p in found)
    }


def message(pinned: Sequence[Pin], images: Mapping[str, Sequence[platforms.Platform]]) -> str:
    """``nodeSelector kubernetes.io/arch=arm64 contradicts image x, which supports ...``"""
    named = _messages.join_and(
        [f"image {image}, which {_messages.supports(found)}" for image, found in images.items()]
    )
    described = _messages.join_and([pin.described for pin in pinned])
    verb = "contradicts" if len(pinned) == 1 else "contradict"
    fix = "remove the pin" if len(pinned) == 1 else "remove the pins"
    arches = next((pin.values for pin in pinned if pin.key == _nodes.LABEL_ARCH), None)
    if len(pinned) > 1 or arches is None:
        those = "that node" if len(pinned) == 1 else "those nodes"
        wanted = ("an image " if len(images) == 1 else "images ") + f"{those} can run"
    elif len(images) == 1 and len(arches) == 1:
        wanted = f"{_messages.article(arches[0])} {arches[0]} image"
    elif len(arches) == 1:
        wanted = f"{arches[0]} images"
    else:
        wanted = ("an image" if len(images) == 1 else "images") + " for " + " or ".join(arches)
    return f"{described} {verb} {named}; {fix} or publish {wanted}"
