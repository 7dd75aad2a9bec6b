"""Where provisionable capacity lives in the cluster: which sources exist and are readable,
and their objects as provisionable classes.

Each source is optional: its kind is watched only when the configuration enables it, the API
server serves it (the CRD is installed) and archwarden may list it (the chart's RBAC for that
source is on). A source that fails any of these is left out with one log line, so a missing
CRD or permission never stops archwarden from serving.

Cluster API node groups are namespaced objects, and a tenant may be allowed to write them in its
own namespace; counted, one would decide what every other namespace is admitted with (an s390x
MachineDeployment turns another team's denial into an admit). So they are read only from the
namespaces ``capacity.clusterAPI.namespaces`` names (``["*"]``: all), each listed and watched
on its own so that the chart can grant access in those namespaces alone, and an object from any
other namespace is never counted.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import urllib.parse
from collections.abc import Iterable, Mapping
from typing import Any

from archwarden import policy, settings
from archwarden.kube import _api

__all__ = [
    "ALL_NAMESPACES",
    "SOURCES",
    "CapacityResource",
    "IgnoredNamespaces",
    "available_sources",
    "capacity_from_object",
    "definition_name",
    "ignored_namespace",
    "list_capacity",
    "not_counted",
    "source_of",
    "static_capacity",
    "wanted_sources",
]

logger = logging.getLogger("archwarden")

ALL_NAMESPACES = "*"
"""``capacity.clusterAPI.namespaces: ["*"]``: node groups of every namespace count."""
MAX_IGNORED_NAMESPACES = 256
"""Namespaces :class:`IgnoredNamespaces` remembers: whoever may create namespaces must not grow
it without end, and a few hundred lines already say what is wrong."""


@dataclasses.dataclass(frozen=True)
class CapacityResource:
    """One kind of object that describes provisionable capacity."""

    kind: str
    group: str
    plural: str
    version: str = ""
    """The version the API server prefers (found by :func:`available_sources`)."""
    namespaced: bool = False
    namespaces: tuple[str, ...] | None = None
    """Where a namespaced kind is read: these namespaces alone (those of
    ``capacity.clusterAPI.namespaces`` archwarden may list, found by
    :func:`available_sources`); None: everywhere (a cluster-scoped kind, or ``["*"]``)."""

    @property
    def index(self) -> str:
        """The name of the kopf index that holds this kind's classes."""
        return f"capacity_{self.plural}"

    def scopes(self) -> tuple[str | None, ...]:
        """Each namespace to list and watch on its own; ``(None,)``: everywhere at once."""
        return (None,) if self.namespaces is None else self.namespaces

    def path(self, namespace: str | None = None) -> str:
        """The API path of its objects, everywhere or in one namespace."""
        base = f"/apis/{self.group}/{self.version}"
        if namespace is None:
            return f"{base}/{self.plural}"
        return f"{base}/namespaces/{urllib.parse.quote(namespace, safe='')}/{self.plural}"


SOURCES: tuple[CapacityResource, ...] = (
    CapacityResource("NodePool", "karpenter.sh", "nodepools"),
    *(
        CapacityResource(kind, "cluster.x-k8s.io", kind.lower() + "s", namespaced=True)
        for kind in policy.CAPI_KINDS
    ),
)


def _enabled(resource: CapacityResource, config: settings.CapacitySettings) -> bool:
    if resource.kind == "NodePool":
        return config.karpenter.enabled
    # No namespace named: nothing of Cluster API can count, so nothing is read either.
    return config.cluster_api.enabled and bool(config.cluster_api.namespaces)


def _namespaces(config: settings.ClusterAPISettings) -> tuple[str, ...] | None:
    """The named namespaces once each, in order; None for ``["*"]``."""
    if ALL_NAMESPACES in config.namespaces:
        return None
    return tuple(dict.fromkeys(config.namespaces))


def _namespace_of(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata")
    return str(meta.get("namespace") or "") if isinstance(meta, Mapping) else ""


def ignored_namespace(
    resource: CapacityResource, obj: Mapping[str, Any], config: settings.CapacitySettings
) -> str | None:
    """The namespace of a namespaced capacity object that ``capacity.clusterAPI.namespaces``
    does not name (the object is never counted); None when the object may count."""
    if not resource.namespaced:
        return None
    namespace = _namespace_of(obj)
    named = _namespaces(config.cluster_api)
    return None if named is None or namespace in named else namespace


def not_counted(namespace: str) -> str:
    """What is said about a namespace whose node groups are ignored."""
    return (
        f"Cluster API node groups in namespace {namespace} are not counted "
        "(capacity.clusterAPI.namespaces)"
    )


class IgnoredNamespaces:
    """Namespaces whose node groups were ignored, each said once in the log.

    At most ``limit`` are remembered; past that, one last line, then silence.
    """

    def __init__(self, limit: int = MAX_IGNORED_NAMESPACES) -> None:
        self._seen: set[str] = set()
        self._limit = limit
        self._full = False

    def note(self, namespace: str) -> None:
        if namespace in self._seen or self._full:
            return
        if len(self._seen) >= self._limit:
            self._full = True
            logger.warning(
                "Cluster API node groups in more than %d namespaces are not counted "
                "(capacity.clusterAPI.namespaces); further namespaces are not logged",
                self._limit,
            )
            return
        self._seen.add(namespace)
        logger.warning("%s", not_counted(namespace))


def source_of(resource: CapacityResource, obj: Mapping[str, Any]) -> policy.Source:
    meta = obj.get("metadata")
    meta = meta if isinstance(meta, Mapping) else {}
    name, namespace = str(meta.get("name") or ""), str(meta.get("namespace") or "")
    return policy.Source(resource.kind, f"{namespace}/{name}" if namespace else name)


def capacity_from_object(
    resource: CapacityResource, obj: Mapping[str, Any], config: settings.CapacitySettings
) -> policy.ProvisionableClass | None:
    """What the object lets an autoscaler add; None when nothing (a Machine* object that is no
    autoscaled node group, or one in a namespace ``capacity.clusterAPI.namespaces`` does not
    name). Raises :class:`policy.InvalidCapacity`."""
    # Checked here as well as by the callers, which read only the named namespaces: whatever
    # path an object takes in, a tenant's node group never decides for other namespaces.
    if ignored_namespace(resource, obj, config) is not None:
        return None
    if resource.kind == "NodePool":
        k = config.karpenter
        return policy.nodepool_from_object(
            obj,
            default_archs=k.default_architectures,
            default_oses=k.default_operating_systems,
            well_known=k.well_known_labels,
        )
    c = config.cluster_api
    return policy.node_group_from_object(
        {**obj, "kind": resource.kind},
        default_arch=c.default_architecture,
        default_os=c.default_operating_system,
    )


def static_capacity(config: settings.CapacitySettings) -> list[policy.ProvisionableClass]:
    """The configuration's ``capacity.nodeGroups`` (validated when the settings were read)."""
    return [
        policy.node_group(
            policy.Source("nodeGroup", group.name),
            group.labels,
            [policy.Taint(*taint) for taint in group.taints],
            platform_specs=group.platforms,
        )
        for group in config.node_groups
    ]


def definition_name(resource: CapacityResource) -> str:
    """The name of the CustomResourceDefinition that serves ``resource``."""
    return f"{resource.plural}.{resource.group}"


def wanted_sources(config: settings.CapacitySettings) -> list[CapacityResource]:
    """The sources the configuration enables, whether or not the cluster serves them."""
    return [r for r in SOURCES if _enabled(r, config)]


async def available_sources(
    reader: _api.ApiReader,
    config: settings.CapacitySettings,
    only: Iterable[str] | None = None,
) -> list[CapacityResource]:
    """The enabled sources the API server serves and archwarden may list, with the version
    the API server prefers and, for Cluster API node groups, the named namespaces archwarden
    may list them in; one log line for each that is left out. ``only``: these kinds alone."""
    if only is None and config.cluster_api.enabled and not config.cluster_api.namespaces:
        logger.info(
            "Cluster API node groups are not counted: capacity.clusterAPI.namespaces names "
            "no namespace"
        )
    kinds = None if only is None else set(only)
    wanted = [r for r in wanted_sources(config) if kinds is None or r.kind in kinds]
    if not wanted:
        return []
    try:
        preferred = await reader.preferred_versions()
    except _api.ApiUnavailable as exc:
        logger.warning("provisionable capacity ignored: API discovery failed: %s", exc)
        return []
    found: list[CapacityResource] = []
    for resource in wanted:
        version = preferred.get(resource.group)
        if version is None or resource.plural not in await _plurals(reader, resource, version):
            logger.info("%ss not served (no CRD): not watched", resource.kind)
            continue
        namespaces = _namespaces(config.cluster_api) if resource.namespaced else None
        if namespaces is None:
            try:
                await reader.list_custom(resource.group, version, resource.plural, limit=1)
            except (_api.ApiUnavailable, _api.NotFound) as exc:
                logger.warning("%ss not watched: cannot list them: %s", resource.kind, exc)
                continue
        else:
            # Each namespace on its own: the chart grants access in the named ones alone, and
            # a watch that cannot list would keep archwarden from ever being ready.
            readable = []
            for namespace in namespaces:
                try:
                    await reader.list_custom(
                        resource.group, version, resource.plural, namespace=namespace, limit=1
                    )
                except (_api.ApiUnavailable, _api.NotFound) as exc:
                    logger.warning(
                        "%ss in namespace %s not watched: cannot list them: %s",
                        resource.kind,
                        namespace,
                        exc,
                    )
                    continue
                readable.append(namespace)
            if not readable:
                continue
            namespaces = tuple(readable)
        found.append(dataclasses.replace(resource, version=version, namespaces=namespaces))
    return found


async def _plurals(
    reader: _api.ApiReader, resource: CapacityResource, version: str
) -> frozenset[str]:
    try:
        return await reader.resource_plurals(resource.group, version)
    except (_api.ApiUnavailable, _api.NotFound):
        return frozenset()


async def list_capacity(
    reader: _api.ApiReader, config: settings.CapacitySettings
) -> tuple[list[policy.ProvisionableClass], list[str]]:
    """Every provisionable class in the cluster and the configuration (``check
    --from-cluster``), and one problem line per object that could not be read."""
    classes = static_capacity(config)
    problems: list[str] = []
    scopes = [(r, n) for r in await available_sources(reader, config) for n in r.scopes()]
    listed = await asyncio.gather(
        *(reader.list_custom(r.group, r.version, r.plural, namespace=n) for r, n in scopes),
        return_exceptions=True,
    )
    ignored: set[str] = set()
    for (resource, _), items in zip(scopes, listed, strict=True):
        if isinstance(items, BaseException):
            problems.append(f"{resource.plural}: {items}")
            continue
        for obj in items:
            namespace = ignored_namespace(resource, obj, config)
            if namespace is not None:
                if namespace not in ignored:
                    ignored.add(namespace)
                    problems.append(not_counted(namespace))
                continue
            try:
                value = capacity_from_object(resource, obj, config)
            except policy.InvalidCapacity as exc:
                problems.append(f"{source_of(resource, obj)}: {exc}")
                continue
            if value is not None:
                classes.append(value)
    return classes, problems
