"""Provisionable classes from the objects that describe them: Karpenter NodePools, Cluster API
node groups annotated for scale from zero, and node groups written in the configuration.

Pure reads of wire JSON (like :func:`node_from_object`); malformed objects raise
:class:`InvalidCapacity` naming the field.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from archwarden import platforms
from archwarden.policy import _capacity, _errors, _fields, _nodes, _workloads
from archwarden.policy._quantities import quantity

__all__ = [
    "CAPI_KINDS",
    "CAPI_LABELS",
    "CAPI_MAX_SIZE",
    "CAPI_MIN_SIZE",
    "CAPI_TAINTS",
    "LABEL_NODEPOOL",
    "node_group",
    "node_group_from_object",
    "nodepool_from_object",
    "parse_capi_labels",
    "parse_capi_taints",
    "quantity",
]

LABEL_NODEPOOL = "karpenter.sh/nodepool"

# cluster-autoscaler's Cluster API provider: a MachineDeployment/MachineSet/MachinePool is a
# node group only with both size annotations; scaling from zero reads the node template from
# the capacity annotations (cluster-autoscaler/cloudprovider/clusterapi/README.md).
CAPI_MIN_SIZE = "cluster.x-k8s.io/cluster-api-autoscaler-node-group-min-size"
CAPI_MAX_SIZE = "cluster.x-k8s.io/cluster-api-autoscaler-node-group-max-size"
CAPI_LABELS = "capacity.cluster-autoscaler.kubernetes.io/labels"
CAPI_TAINTS = "capacity.cluster-autoscaler.kubernetes.io/taints"
CAPI_KINDS = ("MachineDeployment", "MachineSet", "MachinePool")

# Bounds on what one object may make us hold: label options and platforms per class.
MAX_LABELS = 256
MAX_VALUES = 256
MAX_PLATFORMS = 64

_read = _fields.Reader(_errors.InvalidCapacity)

_OPERATORS = frozenset({"In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt", "Gte", "Lte"})
_EFFECTS = frozenset({"NoSchedule", "PreferNoSchedule", "NoExecute"})


def _requirement(raw: object, path: str) -> _workloads.Requirement:
    body = _read.mapping(raw, path)
    operator = _read.string(body.get("operator"), f"{path}.operator")
    if operator not in _OPERATORS:
        raise _read.fail(f"{path}.operator", f"unsupported operator {operator!r}")
    values = _read.strings(body.get("values"), f"{path}.values")
    if len(values) > MAX_VALUES:
        raise _read.fail(f"{path}.values", f"more than {MAX_VALUES} values")
    return _workloads.Requirement(_read.string(body.get("key"), f"{path}.key"), operator, values)


def _taint(raw: object, path: str) -> _nodes.Taint:
    body = _read.mapping(raw, path)
    effect = _read.string(body.get("effect"), f"{path}.effect")
    if effect not in _EFFECTS:
        raise _read.fail(f"{path}.effect", f"unsupported effect {effect!r}")
    return _nodes.Taint(
        key=_read.string(body.get("key"), f"{path}.key"),
        value=_read.string(body.get("value"), f"{path}.value"),
        effect=effect,
    )


def _options_by_key(
    requirements: Iterable[_workloads.Requirement], labels: Mapping[str, str], path: str
) -> dict[str, _capacity.LabelOptions]:
    """Requirements and fixed labels, narrowed per key (a key may be required twice)."""
    options: dict[str, _capacity.LabelOptions] = {}
    pairs = [
        *(
            (_capacity.NORMALIZED_LABELS.get(r.key, r.key), _capacity.options_from_requirement(r))
            for r in requirements
        ),
        *((key, _capacity.LabelOptions.exactly(value)) for key, value in labels.items()),
    ]
    for key, found in pairs:
        previous = options.get(key)
        options[key] = found if previous is None else _capacity.narrow(previous, found)
    if len(options) > MAX_LABELS:
        raise _read.fail(path, f"more than {MAX_LABELS} label keys")
    return options


def _choices(options: _capacity.LabelOptions | None, defaults: Sequence[str]) -> list[str]:
    """Values of a platform label a class can provision: its own set, else the defaults."""
    if options is None:
        return list(defaults)
    if not options.complement:
        return sorted(options.values)
    return [value for value in defaults if options.allows(value)]


def _platforms(
    options: dict[str, _capacity.LabelOptions],
    default_archs: Sequence[str],
    default_oses: Sequence[str],
    path: str,
) -> tuple[platforms.Platform, ...]:
    arches = _choices(options.pop(_nodes.LABEL_ARCH, None), default_archs)
    oses = _choices(options.pop(_nodes.LABEL_OS, None), default_oses)
    if len(arches) * len(oses) > MAX_PLATFORMS:
        raise _read.fail(path, f"more than {MAX_PLATFORMS} os/arch combinations")
    return tuple(platforms.normalize(os, arch) for os in oses for arch in arches)


def _limits_note(spec: Mapping[str, Any], status: Mapping[str, Any]) -> str:
    """``at its cpu limit now`` when the pool has no room left under ``spec.limits``."""
    # Quantities arrive as strings, or as numbers when written without quotes.
    limits = {k: str(v) for k, v in _read.mapping(spec.get("limits"), "spec.limits").items()}
    used = {
        k: str(v) for k, v in _read.mapping(status.get("resources"), "status.resources").items()
    }
    full = []
    for resource, limit in sorted(limits.items()):
        bound, usage = quantity(limit), quantity(used.get(resource, "0"))
        if bound is not None and usage is not None and usage >= bound:
            full.append(resource)
    if not full:
        return ""
    return f"at its {_messages_join(full)} limit{'s' if len(full) > 1 else ''} now"


def _messages_join(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _not_ready(status: Mapping[str, Any]) -> bool:
    for i, raw in enumerate(_read.list(status.get("conditions"), "status.conditions")):
        condition = _read.mapping(raw, f"status.conditions[{i}]")
        if condition.get("type") == "Ready":
            return condition.get("status") == "False"
    return False


def nodepool_from_object(
    obj: Mapping[str, Any],
    *,
    default_archs: Sequence[str] = ("amd64", "arm64"),
    default_oses: Sequence[str] = ("linux",),
    well_known: Iterable[str] = (),
) -> _capacity.ProvisionableClass:
    """A ``karpenter.sh/v1`` NodePool as Karpenter would provision from it.

    ``spec.template.spec.requirements`` and ``spec.template.metadata.labels`` are the label
    options (with ``karpenter.sh/nodepool`` set to the pool's name); a pool without an arch
    (os) requirement offers ``default_archs`` (``default_oses``), as a provider's instance
    types would; ``well_known`` adds provider labels a pod may constrain undefined. Every
    taint of the template must be tolerated (Karpenter checks PreferNoSchedule too); startup
    taints never need to be. A pool at its ``limits`` or not Ready still counts, with a note.
    """
    body = _read.mapping(obj, "nodepool")
    name = _read.string(
        _read.mapping(body.get("metadata"), "metadata").get("name"), "metadata.name"
    )
    spec = _read.mapping(body.get("spec"), "spec")
    status = _read.mapping(body.get("status"), "status")
    template = _read.mapping(spec.get("template"), "spec.template")
    meta = _read.mapping(template.get("metadata"), "spec.template.metadata")
    tspec = _read.mapping(template.get("spec"), "spec.template.spec")
    where = "spec.template.spec.requirements"
    requirements = [
        _requirement(raw, f"{where}[{i}]")
        for i, raw in enumerate(_read.list(tspec.get("requirements"), where))
    ]
    labels = _read.string_map(meta.get("labels"), "spec.template.metadata.labels")
    options = _options_by_key(requirements, {**labels, LABEL_NODEPOOL: name}, where)
    found = _platforms(options, default_archs, default_oses, where)
    notes = [note for note in (_limits_note(spec, status),) if note]
    if _not_ready(status):
        notes.append("not Ready now")
    return _capacity.ProvisionableClass(
        source=_capacity.Source("NodePool", name),
        platforms=found,
        labels=tuple(options.items()),
        taints=tuple(
            _taint(raw, f"spec.template.spec.taints[{i}]")
            for i, raw in enumerate(_read.list(tspec.get("taints"), "spec.template.spec.taints"))
        ),
        undefined=_capacity.KARPENTER_WELL_KNOWN_LABELS | frozenset(well_known),
        note=", ".join(notes),
        every_taint=True,
    )


def parse_capi_labels(text: str, path: str = CAPI_LABELS) -> dict[str, str]:
    """``key1=value1,key2=value2`` (cluster-autoscaler's capacity labels annotation)."""
    labels: dict[str, str] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise _read.fail(path, f"expected key=value, got {item!r}")
        labels[key.strip()] = value.strip()
    if len(labels) > MAX_LABELS:
        raise _read.fail(path, f"more than {MAX_LABELS} labels")
    return labels


def parse_capi_taints(text: str, path: str = CAPI_TAINTS) -> tuple[_nodes.Taint, ...]:
    """``key1=value1:NoSchedule,key2:NoExecute`` (cluster-autoscaler's capacity taints)."""
    taints: list[_nodes.Taint] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        head, sep, effect = item.rpartition(":")
        key, _, value = head.partition("=")
        if not sep or not key.strip() or effect.strip() not in _EFFECTS:
            raise _read.fail(path, f"expected key[=value]:Effect, got {item!r}")
        taints.append(_nodes.Taint(key.strip(), value.strip(), effect.strip()))
    if len(taints) > MAX_LABELS:
        raise _read.fail(path, f"more than {MAX_LABELS} taints")
    return tuple(taints)


def _size(value: str, path: str) -> int:
    try:
        return int(value.strip())
    except ValueError:
        raise _read.fail(path, f"expected an integer, got {value!r}") from None


def node_group_from_object(
    obj: Mapping[str, Any],
    *,
    default_arch: str = "amd64",
    default_os: str = "linux",
) -> _capacity.ProvisionableClass | None:
    """A Cluster API MachineDeployment, MachineSet or MachinePool that cluster-autoscaler
    scales (both size annotations), as the template node it builds to scale from zero.

    Labels come from the capacity labels annotation (arch and os from it too, else the
    defaults: cluster-autoscaler's own are amd64 and linux); taints from the capacity taints
    annotation. A template node has exactly those labels, so none may be left undefined. A
    group at its max size still counts, with a note. None when the object is no node group.
    """
    body = _read.mapping(obj, "node group")
    kind = _read.string(body.get("kind"), "kind")
    if kind not in CAPI_KINDS:
        raise _read.fail("kind", f"unsupported kind {kind!r}: expected {', '.join(CAPI_KINDS)}")
    meta = _read.mapping(body.get("metadata"), "metadata")
    annotations = _read.string_map(meta.get("annotations"), "metadata.annotations")
    if CAPI_MIN_SIZE not in annotations or CAPI_MAX_SIZE not in annotations:
        return None
    path = f"metadata.annotations[{CAPI_MAX_SIZE!r}]"
    max_size = _size(annotations[CAPI_MAX_SIZE], path)
    _size(annotations[CAPI_MIN_SIZE], f"metadata.annotations[{CAPI_MIN_SIZE!r}]")
    namespace = _read.string(meta.get("namespace"), "metadata.namespace")
    name = _read.string(meta.get("name"), "metadata.name")
    labels = parse_capi_labels(
        annotations.get(CAPI_LABELS, ""), f"metadata.annotations[{CAPI_LABELS!r}]"
    )
    taints = parse_capi_taints(
        annotations.get(CAPI_TAINTS, ""), f"metadata.annotations[{CAPI_TAINTS!r}]"
    )
    replicas = _read.mapping(body.get("spec"), "spec").get("replicas")
    note = ""
    if isinstance(replicas, int) and not isinstance(replicas, bool) and replicas >= max_size:
        note = f"at its max size ({max_size}) now"
    return node_group(
        _capacity.Source(kind, f"{namespace}/{name}" if namespace else name),
        labels,
        taints,
        default_arch=default_arch,
        default_os=default_os,
        note=note,
    )


def node_group(
    source: _capacity.Source,
    labels: Mapping[str, str],
    taints: Sequence[_nodes.Taint] = (),
    *,
    platform_specs: Sequence[str] = (),
    default_arch: str = "amd64",
    default_os: str = "linux",
    note: str = "",
) -> _capacity.ProvisionableClass:
    """A node group whose nodes all look alike: fixed labels, taints, platforms.

    ``platform_specs`` (``linux/arm64``, ``linux/arm/v7``) when given, else the arch and os
    labels, else the defaults. Raises :class:`InvalidCapacity` or
    :class:`archwarden.platforms.InvalidPlatform`.
    """
    options = _options_by_key((), labels, "labels")
    if platform_specs:
        options.pop(_nodes.LABEL_ARCH, None)
        options.pop(_nodes.LABEL_OS, None)
        found = tuple(dict.fromkeys(platforms.parse(spec) for spec in platform_specs))
        if len(found) > MAX_PLATFORMS:
            raise _read.fail("platforms", f"more than {MAX_PLATFORMS} platforms")
    else:
        found = _platforms(options, (default_arch,), (default_os,), "labels")
    return _capacity.ProvisionableClass(
        source=source,
        platforms=found,
        labels=tuple(options.items()),
        taints=tuple(taints),
        note=note,
    )
