"""Where provisionable capacity lives in the cluster: which sources exist and are readable,
and their objects as provisionable classes.

Each source is optional: its kind is watched only when the configuration enables it, the API
server serves it (the CRD is installed) and archwarden may list it (the chart's RBAC for that
source is on). A source that fails any of these is left out with one log line, so a missing
CRD or permission never stops archwarden from serving.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

from archwarden import policy, settings
from archwarden.kube import _api

__all__ = [
    "SOURCES",
    "CapacityResource",
    "available_sources",
    "capacity_from_object",
    "list_capacity",
    "source_of",
    "static_capacity",
]

logger = logging.getLogger("archwarden")


@dataclasses.dataclass(frozen=True)
class CapacityResource:
    """One kind of object that describes provisionable capacity."""

    kind: str
    group: str
    plural: str
    version: str = ""
    """The version the API server prefers (found by :func:`available_sources`)."""

    @property
    def index(self) -> str:
        """The name of the kopf index that holds this kind's classes."""
        return f"capacity_{self.plural}"


SOURCES: tuple[CapacityResource, ...] = (
    CapacityResource("NodePool", "karpenter.sh", "nodepools"),
    *(CapacityResource(kind, "cluster.x-k8s.io", kind.lower() + "s") for kind in policy.CAPI_KINDS),
)


def _enabled(resource: CapacityResource, config: settings.CapacitySettings) -> bool:
    if resource.kind == "NodePool":
        return config.karpenter.enabled
    return config.cluster_api.enabled


def source_of(resource: CapacityResource, obj: Mapping[str, Any]) -> policy.Source:
    meta = obj.get("metadata")
    meta = meta if isinstance(meta, Mapping) else {}
    name, namespace = str(meta.get("name") or ""), str(meta.get("namespace") or "")
    return policy.Source(resource.kind, f"{namespace}/{name}" if namespace else name)


def capacity_from_object(
    resource: CapacityResource, obj: Mapping[str, Any], config: settings.CapacitySettings
) -> policy.ProvisionableClass | None:
    """What the object lets an autoscaler add; None when nothing (a Machine* object that is no
    autoscaled node group). Raises :class:`policy.InvalidCapacity`."""
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


async def available_sources(
    reader: _api.ApiReader, config: settings.CapacitySettings
) -> list[CapacityResource]:
    """The enabled sources the API server serves and archwarden may list, with the version
    the API server prefers; one log line for each that is left out."""
    wanted = [r for r in SOURCES if _enabled(r, config)]
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
        try:
            await reader.list_custom(resource.group, version, resource.plural, limit=1)
        except (_api.ApiUnavailable, _api.NotFound) as exc:
            logger.warning("%ss not watched: cannot list them: %s", resource.kind, exc)
            continue
        found.append(dataclasses.replace(resource, version=version))
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
    resources = await available_sources(reader, config)
    listed = await asyncio.gather(
        *(reader.list_custom(r.group, r.version, r.plural) for r in resources),
        return_exceptions=True,
    )
    for resource, items in zip(resources, listed, strict=True):
        if isinstance(items, BaseException):
            problems.append(f"{resource.plural}: {items}")
            continue
        for obj in items:
            try:
                value = capacity_from_object(resource, obj, config)
            except policy.InvalidCapacity as exc:
                problems.append(f"{source_of(resource, obj)}: {exc}")
                continue
            if value is not None:
                classes.append(value)
    return classes, problems
