"""JSON patches that keep a pod (or a workload's template) on nodes that can run it.

Our expressions are ANDed into every existing required node affinity term, never added as a
new ORed term and never put into an empty term (which matches nothing): each operation can
only narrow the user's constraints, never loosen them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, TypedDict

from archwarden.policy import _decisions, _errors, _fields, _nodes, _workloads

__all__ = [
    "ANNOTATION_PLATFORMS",
    "PatchOperation",
    "pod_patch",
    "template_patch",
]

ANNOTATION_PLATFORMS = "archwarden.io/platforms"

_REQUIRED = "requiredDuringSchedulingIgnoredDuringExecution"
_PREFERRED = "preferredDuringSchedulingIgnoredDuringExecution"

_read = _fields.Reader(_errors.InvalidWorkload)

Path = tuple[str | int, ...]


class PatchOperation(TypedDict):
    """One RFC 6902 operation; ``add`` also replaces an existing member."""

    op: Literal["add"]
    path: str
    value: Any


def _pointer(path: Path) -> str:
    """RFC 6901: ``~`` and ``/`` inside a key are escaped (``archwarden.io~1platforms``)."""
    return "".join("/" + str(part).replace("~", "~0").replace("/", "~1") for part in path)


def _add(path: Path, value: Any) -> PatchOperation:
    return {"op": "add", "path": _pointer(path), "value": value}


def _dotted(path: Path) -> str:
    return ".".join(str(p) for p in path)


def _child(parent: Mapping[str, Any], key: str, path: Path) -> Mapping[str, Any] | None:
    """``parent[key]`` as an object, or ``None`` when missing or null."""
    return _read.optional_mapping(parent.get(key), _dotted((*path, key)))


def _walk(root: Mapping[str, Any], path: Path) -> Mapping[str, Any]:
    node = _read.mapping(root, "object")
    for i, part in enumerate(path):
        child = _child(node, str(part), path[:i])
        if child is None:
            raise _read.fail(_dotted(path[: i + 1]), "required")
        node = child
    return node


def _preferences(
    placement: _decisions.Placement, preferences: Mapping[str, int]
) -> list[dict[str, Any]]:
    entries = []
    for arch, weight in sorted(preferences.items()):
        # The API server accepts weights 1-100 only; settings should have refused others.
        if isinstance(weight, bool) or not isinstance(weight, int) or not 1 <= weight <= 100:
            raise ValueError(f"preference weight for {arch!r} must be 1-100, got {weight!r}")
        if arch in placement.arches:
            requirement = _workloads.Requirement(_nodes.LABEL_ARCH, "In", (arch,))
            entries.append(
                {"weight": weight, "preference": {"matchExpressions": [requirement.to_json()]}}
            )
    return entries


def _has_preference(existing: Sequence[Any], entry: Mapping[str, Any], path: Path) -> bool:
    """Whether a preferred term already expresses this arch preference (any weight)."""
    wanted = entry["preference"]["matchExpressions"][0]
    for i, raw in enumerate(existing):
        term = _read.mapping(raw, _dotted((*path, i)))
        preference = _read.mapping(term.get("preference"), _dotted((*path, i, "preference")))
        expressions = _read.list(
            preference.get("matchExpressions"),
            _dotted((*path, i, "preference", "matchExpressions")),
        )
        if wanted in expressions:
            return True
    return False


def _required_ops(
    node_affinity: Mapping[str, Any],
    node_path: Path,
    alternatives: list[list[dict[str, Any]]],
    narrow_only: bool,
) -> list[PatchOperation]:
    """AND ``alternatives`` (ORed among themselves) into the user's required terms.

    One alternative is appended to each term. Several make every user term one term per
    alternative (user term AND alternative), written as one replacement of the term list;
    with ``narrow_only`` (a pod that exists: only expressions may be added to its terms) the
    first, widest, alternative alone is appended instead.
    """
    existing = _child(node_affinity, _REQUIRED, node_path)
    if existing is None:
        fresh = [{"matchExpressions": alternative} for alternative in alternatives]
        return [_add((*node_path, _REQUIRED), {"nodeSelectorTerms": fresh})]
    terms_path: Path = (*node_path, _REQUIRED, "nodeSelectorTerms")
    # No terms at all matches no node; adding one would loosen that, so leave it alone.
    terms = _read.list(existing.get("nodeSelectorTerms"), _dotted(terms_path))
    if narrow_only and terms:
        alternatives = alternatives[:1]
    ops: list[PatchOperation] = []
    crossed: list[Any] = []
    for i, raw in enumerate(terms):
        term = _read.mapping(raw, _dotted((*terms_path, i)))
        expressions_path: Path = (*terms_path, i, "matchExpressions")
        expressions = _read.list(term.get("matchExpressions"), _dotted(expressions_path))
        fields = _read.list(term.get("matchFields"), _dotted((*terms_path, i, "matchFields")))
        if not expressions and not fields:
            crossed.append(raw)  # an empty term matches nothing; an expression would widen it
            continue
        for alternative in alternatives:
            missing = [r for r in alternative if r not in expressions]
            crossed.append({**term, "matchExpressions": [*expressions, *missing]})
            if len(alternatives) > 1 or not missing:
                continue
            if expressions:
                ops.extend(_add((*expressions_path, "-"), r) for r in missing)
            else:
                ops.append(_add(expressions_path, missing))
    if len(alternatives) > 1 and crossed != terms:
        return [_add(terms_path, crossed)]
    return ops


def _affinity_ops(
    spec: Mapping[str, Any],
    spec_path: Path,
    alternatives: list[list[dict[str, Any]]],
    preferred: list[dict[str, Any]],
    narrow_only: bool = False,
) -> list[PatchOperation]:
    fresh: dict[str, Any] = {}
    if alternatives:
        terms = [{"matchExpressions": alternative} for alternative in alternatives]
        fresh[_REQUIRED] = {"nodeSelectorTerms": terms}
    if preferred:
        fresh[_PREFERRED] = preferred
    if not fresh:
        return []
    affinity = _child(spec, "affinity", spec_path)
    if affinity is None:
        return [_add((*spec_path, "affinity"), {"nodeAffinity": fresh})]
    node_path: Path = (*spec_path, "affinity", "nodeAffinity")
    node_affinity = _child(affinity, "nodeAffinity", node_path[:-1])
    if node_affinity is None:
        return [_add(node_path, fresh)]
    ops = _required_ops(node_affinity, node_path, alternatives, narrow_only) if alternatives else []
    if preferred:
        preferred_path: Path = (*node_path, _PREFERRED)
        present = node_affinity.get(_PREFERRED)
        existing = _read.list(present, _dotted(preferred_path))
        new = [e for e in preferred if not _has_preference(existing, e, preferred_path)]
        if new and present is None:
            ops.append(_add(preferred_path, new))
        else:
            ops.extend(_add((*preferred_path, "-"), e) for e in new)
    return ops


def _annotation_ops(
    root: Mapping[str, Any], metadata_path: Path, value: str
) -> list[PatchOperation]:
    parent = _walk(root, metadata_path[:-1])
    metadata = _child(parent, str(metadata_path[-1]), metadata_path[:-1])
    if metadata is None:
        return [_add(metadata_path, {"annotations": {ANNOTATION_PLATFORMS: value}})]
    annotations = _child(metadata, "annotations", metadata_path)
    if annotations is None:
        return [_add((*metadata_path, "annotations"), {ANNOTATION_PLATFORMS: value})]
    if annotations.get(ANNOTATION_PLATFORMS) == value:
        return []
    return [_add((*metadata_path, "annotations", ANNOTATION_PLATFORMS), value)]


def _toleration_ops(
    spec: Mapping[str, Any], spec_path: Path, tolerations: Sequence[_workloads.Toleration]
) -> list[PatchOperation]:
    """Append the tolerations the pod lacks; the user's own are never touched."""
    wanted = [
        {"key": t.key, "operator": t.operator, "value": t.value, "effect": t.effect}
        for t in tolerations
    ]
    path: Path = (*spec_path, "tolerations")
    present = spec.get("tolerations")
    if present is None:
        return [_add(path, wanted)] if wanted else []
    existing = _read.list(present, _dotted(path))
    return [_add((*path, "-"), t) for t in wanted if t not in existing]


def _patch(
    root: Mapping[str, Any],
    spec_path: Path,
    decision: _decisions.Decision,
    preferences: Mapping[str, int] | None,
    *,
    annotate: bool,
    narrow_only: bool = False,
) -> list[PatchOperation]:
    if not decision.allowed:
        return []
    ops: list[PatchOperation] = []
    if decision.placement is not None:
        spec = _walk(root, spec_path)
        alternatives = [[r.to_json() for r in term] for term in decision.placement.terms]
        preferred = _preferences(decision.placement, preferences or {})
        ops.extend(_affinity_ops(spec, spec_path, alternatives, preferred, narrow_only))
    if decision.tolerations:
        spec = _walk(root, spec_path)
        ops.extend(_toleration_ops(spec, spec_path, decision.tolerations))
    if annotate and decision.pod_platforms:
        metadata_path = (*spec_path[:-1], "metadata")
        ops.extend(_annotation_ops(root, metadata_path, ",".join(decision.pod_platforms)))
    return ops


def pod_patch(
    pod: Mapping[str, Any],
    decision: _decisions.Decision,
    *,
    preferences: Mapping[str, int] | None = None,
    narrow_only: bool = False,
) -> list[PatchOperation]:
    """Operations that constrain ``pod`` to the nodes ``decision`` found able to run it.

    Adds the placement's required terms (``kubernetes.io/arch In [...]``, and the os, the
    Windows build or a runtime override label where those tell compatible nodes apart) only
    when some candidate node cannot run the pod; ``preferences`` (``{"arm64": 50}``) adds
    preferred terms for arches that can run it, unless already present; adds the decision's
    platform-taint tolerations the pod lacks; and sets the ``archwarden.io/platforms``
    annotation.
    Returns ``[]`` for a denied decision. ``narrow_only``: the pod exists (gated), so its own
    required terms may only gain expressions, never be multiplied.
    """
    return _patch(pod, ("spec",), decision, preferences, annotate=True, narrow_only=narrow_only)


def template_patch(
    obj: Mapping[str, Any],
    decision: _decisions.Decision,
    *,
    preferences: Mapping[str, int] | None = None,
    annotate: bool = True,
) -> list[PatchOperation]:
    """:func:`pod_patch` for a workload's pod template (any kind :func:`extract` reads).

    Changing a template rolls out new pods; the caller decides whether that is wanted.
    """
    kind = _read.string(_read.mapping(obj, "object").get("kind"), "kind")
    if kind not in _workloads.SPEC_PATHS:
        raise _read.fail("kind", f"unsupported kind {kind!r}")
    return _patch(obj, _workloads.SPEC_PATHS[kind], decision, preferences, annotate=annotate)
