"""Workloads reduced to their pod template's images and scheduling constraints."""

from __future__ import annotations

import dataclasses
import enum
import functools
import hashlib
from collections.abc import Mapping
from typing import Any

from archwarden.policy import _errors, _fields

__all__ = [
    "NODE_SELECTOR_OPERATORS",
    "SPEC_PATHS",
    "Container",
    "ContainerKind",
    "PodTemplate",
    "Requirement",
    "SelectorTerm",
    "Toleration",
    "Workload",
    "extract",
    "least_projected_bytes",
    "scheduling_changed",
]

# Where each kind keeps its pod spec. Pods are judged as they are; the others by their template.
SPEC_PATHS: Mapping[str, tuple[str, ...]] = {
    "Pod": ("spec",),
    "Deployment": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "ReplicaSet": ("spec", "template", "spec"),
    "ReplicationController": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
}

ITEM_BYTES = 64
"""What one item of a projection (a container, a toleration, a term, a value) is counted as
beside its strings: near what Python spends on a small object and its reference."""

NODE_SELECTOR_OPERATORS = frozenset({"In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"})
# The API server accepts only this field, with only these operators, in matchFields.
_FIELD_KEYS = frozenset({"metadata.name"})
_FIELD_OPERATORS = frozenset({"In", "NotIn"})

_REQUIRED = "requiredDuringSchedulingIgnoredDuringExecution"

_read = _fields.Reader(_errors.InvalidWorkload)


class ContainerKind(enum.StrEnum):
    """The pod spec list an image comes from (its JSON field name)."""

    CONTAINER = "containers"
    INIT = "initContainers"
    EPHEMERAL = "ephemeralContainers"
    VOLUME = "volumes"
    """An image volume (``volumes[].image.reference``): the kubelet pulls it for the node's
    platform like a container's image, and what it carries may be executed by the pod."""


CONTAINER_KINDS = (ContainerKind.CONTAINER, ContainerKind.INIT, ContainerKind.EPHEMERAL)
"""The kinds that name their image in ``image``; a volume names it in ``image.reference``."""


@dataclasses.dataclass(frozen=True)
class Container:
    """A container, or an image volume (``kind`` VOLUME, ``name`` the volume's)."""

    name: str
    kind: ContainerKind
    image: str
    """Exactly as written in the spec: messages show the user's own spelling."""


@dataclasses.dataclass(frozen=True)
class Requirement:
    """A node selector requirement (``matchExpressions`` or ``matchFields`` item)."""

    key: str
    operator: str
    values: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"key": self.key, "operator": self.operator}
        if self.values:
            data["values"] = list(self.values)
        return data


@dataclasses.dataclass(frozen=True)
class SelectorTerm:
    """One ``nodeSelectorTerms`` item; its requirements are ANDed."""

    match_expressions: tuple[Requirement, ...] = ()
    match_fields: tuple[Requirement, ...] = ()

    @property
    def empty(self) -> bool:
        """An empty term matches no node (Kubernetes semantics)."""
        return not self.match_expressions and not self.match_fields


@dataclasses.dataclass(frozen=True)
class Toleration:
    key: str = ""
    operator: str = "Equal"
    value: str = ""
    effect: str = ""


@dataclasses.dataclass(frozen=True)
class PodTemplate:
    """Everything in a pod spec that placement decisions depend on."""

    containers: tuple[Container, ...]
    """``containers``, then ``initContainers``, then ``ephemeralContainers``, then image
    volumes; no empty images."""
    node_selector: tuple[tuple[str, str], ...] = ()
    required_terms: tuple[SelectorTerm, ...] | None = None
    """Required node affinity terms (ORed); ``None`` when the pod has no required affinity."""
    tolerations: tuple[Toleration, ...] = ()
    image_pull_secrets: tuple[str, ...] = ()
    service_account: str = "default"
    node_name: str = ""
    """``spec.nodeName``: a pod bound to a node bypasses the scheduler."""

    @functools.cached_property
    def images(self) -> tuple[str, ...]:
        """Distinct images in container order (read several times per review)."""
        return tuple(dict.fromkeys(c.image for c in self.containers))

    @functools.cached_property
    def volume_only_images(self) -> frozenset[str]:
        """Images only image volumes name: an artifact with no platform mounts anywhere."""
        run = {c.image for c in self.containers if c.kind is not ContainerKind.VOLUME}
        return frozenset(c.image for c in self.containers if c.image not in run)

    @functools.cached_property
    def projected_bytes(self) -> int:
        """What this projection holds, counted as its strings' lengths plus ``ITEM_BYTES`` per
        item: the measure ``limits.templateBytes`` bounds. A tenant decides how many
        tolerations or terms a template has; this says what keeping it would cost."""
        total = ITEM_BYTES + len(self.service_account) + len(self.node_name)
        for c in self.containers:
            total += ITEM_BYTES + len(c.name) + len(c.image)
        for key, value in self.node_selector:
            total += ITEM_BYTES + len(key) + len(value)
        for term in self.required_terms or ():
            total += ITEM_BYTES
            for r in term.match_expressions + term.match_fields:
                total += ITEM_BYTES + len(r.key) + len(r.operator)
                total += sum(ITEM_BYTES + len(v) for v in r.values)
        for t in self.tolerations:
            total += ITEM_BYTES + len(t.key) + len(t.operator) + len(t.value) + len(t.effect)
        for name in self.image_pull_secrets:
            total += ITEM_BYTES + len(name)
        return total

    @functools.cached_property
    def digest(self) -> bytes:
        """SHA-256 of every field: two templates with one digest decide alike, so a cache
        can keep this instead of the template."""
        return hashlib.sha256(repr(self).encode()).digest()


@dataclasses.dataclass(frozen=True)
class Workload:
    kind: str
    name: str
    namespace: str
    template: PodTemplate
    controller_kind: str = ""
    """Kind of the controlling owner (``DaemonSet`` for a DaemonSet's pods), '' if none."""

    @property
    def spec_path(self) -> tuple[str, ...]:
        return SPEC_PATHS[self.kind]


def _requirement(raw: object, path: str, *, field: bool) -> Requirement:
    body = _read.mapping(raw, path)
    key = _read.string(body.get("key"), f"{path}.key")
    operator = _read.string(body.get("operator"), f"{path}.operator")
    values = _read.strings(body.get("values"), f"{path}.values")
    if field and key not in _FIELD_KEYS:
        raise _read.fail(f"{path}.key", f"unsupported field {key!r}: only metadata.name")
    allowed = _FIELD_OPERATORS if field else NODE_SELECTOR_OPERATORS
    if operator not in allowed:
        raise _read.fail(
            f"{path}.operator",
            f"unsupported operator {operator!r}: expected one of {', '.join(sorted(allowed))}",
        )
    if operator in ("Gt", "Lt"):
        try:
            (number,) = values
            int(number)
        except ValueError:
            raise _read.fail(
                f"{path}.values", f"operator {operator} needs exactly one integer value"
            ) from None
    return Requirement(key=key, operator=operator, values=values)


def _term(raw: object, path: str) -> SelectorTerm:
    body = _read.mapping(raw, path)

    def requirements(name: str, *, field: bool) -> tuple[Requirement, ...]:
        items = _read.list(body.get(name), f"{path}.{name}")
        return tuple(
            _requirement(item, f"{path}.{name}[{i}]", field=field) for i, item in enumerate(items)
        )

    return SelectorTerm(
        match_expressions=requirements("matchExpressions", field=False),
        match_fields=requirements("matchFields", field=True),
    )


def _required_terms(spec: Mapping[str, Any], path: str) -> tuple[SelectorTerm, ...] | None:
    affinity = _read.mapping(spec.get("affinity"), f"{path}.affinity")
    node_affinity = _read.mapping(affinity.get("nodeAffinity"), f"{path}.affinity.nodeAffinity")
    where = f"{path}.affinity.nodeAffinity.{_REQUIRED}"
    required = _read.optional_mapping(node_affinity.get(_REQUIRED), where)
    if required is None:
        return None
    terms = _read.list(required.get("nodeSelectorTerms"), f"{where}.nodeSelectorTerms")
    return tuple(_term(raw, f"{where}.nodeSelectorTerms[{i}]") for i, raw in enumerate(terms))


def _toleration(raw: object, path: str) -> Toleration:
    body = _read.mapping(raw, path)
    # tolerationSeconds only delays eviction; it does not change where a pod may start.
    return Toleration(
        key=_read.string(body.get("key"), f"{path}.key"),
        operator=_read.string(body.get("operator"), f"{path}.operator") or "Equal",
        value=_read.string(body.get("value"), f"{path}.value"),
        effect=_read.string(body.get("effect"), f"{path}.effect"),
    )


def _containers(spec: Mapping[str, Any], path: str) -> tuple[Container, ...]:
    if spec.get(ContainerKind.CONTAINER) is None:
        raise _read.fail(f"{path}.containers", "required")
    found: list[Container] = []
    for kind in CONTAINER_KINDS:
        items = _read.list(spec.get(kind), f"{path}.{kind}")
        for i, raw in enumerate(items):
            where = f"{path}.{kind}[{i}]"
            body = _read.mapping(raw, where)
            name = _read.string(body.get("name"), f"{where}.name")
            # Templates may omit the image (tools fill it in later); nothing to check then.
            image = _read.string(body.get("image"), f"{where}.image").strip()
            if image:
                found.append(Container(name=name, kind=kind, image=image))
    volumes = _read.list(spec.get(ContainerKind.VOLUME), f"{path}.volumes")
    for i, raw in enumerate(volumes):
        where = f"{path}.volumes[{i}]"
        body = _read.mapping(raw, where)
        source = body.get("image")
        if source is None:
            continue  # another volume type
        source = _read.mapping(source, f"{where}.image")
        reference = _read.string(source.get("reference"), f"{where}.image.reference").strip()
        if reference:
            name = _read.string(body.get("name"), f"{where}.name")
            found.append(Container(name=name, kind=ContainerKind.VOLUME, image=reference))
    return tuple(found)


def _pull_secrets(spec: Mapping[str, Any], path: str) -> tuple[str, ...]:
    where = f"{path}.imagePullSecrets"
    names = []
    for i, raw in enumerate(_read.list(spec.get("imagePullSecrets"), where)):
        name = _read.string(_read.mapping(raw, f"{where}[{i}]").get("name"), f"{where}[{i}].name")
        if name:
            names.append(name)
    return tuple(names)


def _template(spec: Mapping[str, Any], path: str) -> PodTemplate:
    selector = _read.string_map(spec.get("nodeSelector"), f"{path}.nodeSelector")
    tolerations = _read.list(spec.get("tolerations"), f"{path}.tolerations")
    # serviceAccount is the deprecated spelling the API server still copies across.
    account = _read.string(spec.get("serviceAccountName"), f"{path}.serviceAccountName")
    account = account or _read.string(spec.get("serviceAccount"), f"{path}.serviceAccount")
    return PodTemplate(
        containers=_containers(spec, path),
        node_selector=tuple(sorted(selector.items())),
        required_terms=_required_terms(spec, path),
        tolerations=tuple(
            _toleration(raw, f"{path}.tolerations[{i}]") for i, raw in enumerate(tolerations)
        ),
        image_pull_secrets=_pull_secrets(spec, path),
        service_account=account or "default",
        node_name=_read.string(spec.get("nodeName"), f"{path}.nodeName"),
    )


def _controller_kind(metadata: Mapping[str, Any]) -> str:
    owners = _read.list(metadata.get("ownerReferences"), "metadata.ownerReferences")
    for i, raw in enumerate(owners):
        where = f"metadata.ownerReferences[{i}]"
        owner = _read.mapping(raw, where)
        if _read.boolean(owner.get("controller"), f"{where}.controller"):
            return _read.string(owner.get("kind"), f"{where}.kind")
    return ""


def least_projected_bytes(obj: Mapping[str, Any], *, kind: str | None = None) -> int:
    """A lower bound of what ``extract(obj).template.projected_bytes`` would be, from the
    lengths of the lists alone: no string is read and nothing is built, so a template with
    35,000 tolerations is refused in microseconds, not after the third of a second its
    extraction takes on the event loop. 0 when the object has no pod spec where its kind keeps
    one (``extract`` then says why)."""
    spec: object = obj
    for part in SPEC_PATHS.get(str(kind or obj.get("kind") or ""), ()):
        spec = spec.get(part) if isinstance(spec, Mapping) else None
    if not isinstance(spec, Mapping):
        return 0
    items = 1  # the template itself, as projected_bytes counts it

    def listed(value: object) -> list[Any]:
        return value if isinstance(value, list) else []

    for kind_name in CONTAINER_KINDS:
        items += sum(
            1 for c in listed(spec.get(kind_name)) if isinstance(c, Mapping) and c.get("image")
        )
    for volume in listed(spec.get(ContainerKind.VOLUME)):
        source = volume.get("image") if isinstance(volume, Mapping) else None
        items += isinstance(source, Mapping) and bool(source.get("reference"))
    items += len(listed(spec.get("tolerations")))
    items += sum(
        1 for s in listed(spec.get("imagePullSecrets")) if isinstance(s, Mapping) and s.get("name")
    )
    selector = spec.get("nodeSelector")
    items += len(selector) if isinstance(selector, Mapping) else 0
    affinity = spec.get("affinity")
    node = affinity.get("nodeAffinity") if isinstance(affinity, Mapping) else None
    required = node.get(_REQUIRED) if isinstance(node, Mapping) else None
    terms = required.get("nodeSelectorTerms") if isinstance(required, Mapping) else None
    for term in listed(terms):
        items += 1
        if not isinstance(term, Mapping):
            continue
        requirements = [*listed(term.get("matchExpressions")), *listed(term.get("matchFields"))]
        for requirement in requirements:
            items += 1
            if isinstance(requirement, Mapping):
                items += len(listed(requirement.get("values")))
    return items * ITEM_BYTES


def extract(obj: Mapping[str, Any], *, kind: str | None = None) -> Workload:
    """The :class:`Workload` of a Pod or workload object; raises :class:`InvalidWorkload`.

    ``kind`` overrides ``obj["kind"]`` (admission requests name the kind separately).
    """
    try:
        return _plain_workload(obj, kind)
    except _Irregular:
        return _careful_workload(obj, kind)


def _careful_workload(obj: Mapping[str, Any], kind: str | None) -> Workload:
    """The reference reader: any mapping and sequence types, every wrong type named by path."""
    body = _read.mapping(obj, "object")
    kind = kind or _read.string(body.get("kind"), "kind")
    if kind not in SPEC_PATHS:
        raise _read.fail("kind", f"unsupported kind {kind!r}")
    metadata = _read.mapping(body.get("metadata"), "metadata")
    name = _read.string(metadata.get("name"), "metadata.name")
    name = name or _read.string(metadata.get("generateName"), "metadata.generateName")
    spec: Mapping[str, Any] = body
    path = ""
    for part in SPEC_PATHS[kind]:
        path = f"{path}.{part}" if path else part
        if spec.get(part) is None:
            raise _read.fail(path, "required")
        spec = _read.mapping(spec.get(part), path)
    return Workload(
        kind=kind,
        name=name,
        namespace=_read.string(metadata.get("namespace"), "metadata.namespace"),
        template=_template(spec, path),
        controller_kind=_controller_kind(metadata),
    )


# -- the plain-JSON reader ------------------------------------------------------------------------
# Every review reads one object, and the careful reader above costs most of a warm review: it
# formats a field path for every read in case that read fails. What the API server sends is
# plain, well-typed JSON (dicts, lists, strings), which the reader below takes without building
# a single path. Anything else (another mapping type, a wrong type, an operator it does not
# judge itself) raises _Irregular, and the careful reader reads the object again, so results
# and error messages are the careful reader's by construction. A property test compares the
# two on random objects.


class _Irregular(Exception):
    """Not plain, well-typed JSON: left to the careful reader."""


_NO_FIELDS: Mapping[str, Any] = {}
_CONTAINER_FIELDS = tuple((kind, kind.value) for kind in CONTAINER_KINDS)
_PLAIN_OPERATORS = NODE_SELECTOR_OPERATORS - {"Gt", "Lt"}
"""Operators the plain reader takes; Gt and Lt need their value checked by the careful one."""


def _str(value: object) -> str:
    if type(value) is str:
        return value
    if value is None:
        return ""
    raise _Irregular


def _dict(value: object) -> Mapping[str, Any]:
    if type(value) is dict:
        return value
    if value is None:
        return _NO_FIELDS
    raise _Irregular


def _list(value: object) -> list[Any] | tuple[()]:
    if type(value) is list:
        return value
    if value is None:
        return ()
    raise _Irregular


def _plain_requirement(raw: object, *, field: bool) -> Requirement:
    body = _dict(raw)
    key, operator = _str(body.get("key")), _str(body.get("operator"))
    # Gt and Lt need their value checked, and wrong keys or operators an error: the careful
    # reader does both.
    allowed = _FIELD_OPERATORS if field else _PLAIN_OPERATORS
    if operator not in allowed or (field and key not in _FIELD_KEYS):
        raise _Irregular
    return Requirement(key, operator, tuple([_str(v) for v in _list(body.get("values"))]))


def _plain_terms(spec: Mapping[str, Any]) -> tuple[SelectorTerm, ...] | None:
    node_affinity = _dict(_dict(spec.get("affinity")).get("nodeAffinity"))
    required = node_affinity.get(_REQUIRED)
    if required is None:
        return None
    terms = []
    for raw in _list(_dict(required).get("nodeSelectorTerms")):
        body = _dict(raw)
        expressions = _list(body.get("matchExpressions"))
        fields = _list(body.get("matchFields"))
        terms.append(
            SelectorTerm(
                tuple([_plain_requirement(r, field=False) for r in expressions]),
                tuple([_plain_requirement(r, field=True) for r in fields]),
            )
        )
    return tuple(terms)


def _plain_template(spec: Mapping[str, Any]) -> PodTemplate:
    if spec.get("containers") is None:
        raise _Irregular
    containers = []
    for kind, field in _CONTAINER_FIELDS:
        for raw in _list(spec.get(field)):
            body = _dict(raw)
            name, image = _str(body.get("name")), _str(body.get("image")).strip()
            if image:
                containers.append(Container(name, kind, image))
    for raw in _list(spec.get("volumes")):
        body = _dict(raw)
        source = body.get("image")
        if source is None:
            continue
        if reference := _str(_dict(source).get("reference")).strip():
            containers.append(Container(_str(body.get("name")), ContainerKind.VOLUME, reference))
    selector = []
    for key, value in _dict(spec.get("nodeSelector")).items():
        if type(key) is not str:
            raise _Irregular
        selector.append((key, _str(value)))
    selector.sort()
    tolerations = []
    for raw in _list(spec.get("tolerations")):
        body = _dict(raw)
        tolerations.append(
            Toleration(
                _str(body.get("key")),
                _str(body.get("operator")) or "Equal",
                _str(body.get("value")),
                _str(body.get("effect")),
            )
        )
    secrets = []
    for raw in _list(spec.get("imagePullSecrets")):
        if name := _str(_dict(raw).get("name")):
            secrets.append(name)
    account = _str(spec.get("serviceAccountName")) or _str(spec.get("serviceAccount"))
    return PodTemplate(
        containers=tuple(containers),
        node_selector=tuple(selector),
        required_terms=_plain_terms(spec),
        tolerations=tuple(tolerations),
        image_pull_secrets=tuple(secrets),
        service_account=account or "default",
        node_name=_str(spec.get("nodeName")),
    )


def _plain_workload(obj: Mapping[str, Any], kind: str | None) -> Workload:
    body = _dict(obj)
    kind = kind or _str(body.get("kind"))
    spec_path = SPEC_PATHS.get(kind)
    if spec_path is None:
        raise _Irregular
    metadata = _dict(body.get("metadata"))
    name = _str(metadata.get("name")) or _str(metadata.get("generateName"))
    spec = body
    for part in spec_path:
        inner = spec.get(part)
        if type(inner) is not dict:
            raise _Irregular  # absent (required) or not an object: named by the careful reader
        spec = inner
    controller_kind = ""
    for raw in _list(metadata.get("ownerReferences")):
        owner = _dict(raw)
        controller = owner.get("controller")
        if controller is not None and type(controller) is not bool:
            raise _Irregular
        if controller:
            controller_kind = _str(owner.get("kind"))
            break
    return Workload(
        kind=kind,
        name=name,
        namespace=_str(metadata.get("namespace")),
        template=_plain_template(spec),
        controller_kind=controller_kind,
    )


def scheduling_changed(old_obj: Mapping[str, Any], new_obj: Mapping[str, Any]) -> bool:
    """Whether an UPDATE changed anything a placement decision depends on.

    That is the images (any container kind, image volumes), nodeSelector, required node affinity,
    tolerations, nodeName, and the pull secrets and service account that decide how images
    are inspected. An object that cannot be read counts as changed, so it gets (re)checked.
    """
    try:
        old, new = extract(old_obj), extract(new_obj)
    except _errors.InvalidWorkload:
        return True
    return old.kind != new.kind or old.template != new.template
