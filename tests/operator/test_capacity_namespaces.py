"""Cluster API node groups count only from the namespaces ``capacity.clusterAPI.namespaces``
names: they are namespaced objects a tenant may write, and one would otherwise decide what every
other namespace is admitted with. Read only there, never counted from anywhere else."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import kubernetes
import pytest

from archwarden import cli, handlers, kube, metrics, policy, settings
from archwarden.policy import _sources
from tests.operator.test_admission_core import HOST, deployment
from tests.operator.test_capacity_events import engine
from tests.policy.test_capacity import arch, nodepool

MACHINE_DEPLOYMENTS = next(r for r in kube.SOURCES if r.kind == "MachineDeployment")
NODEPOOLS = next(r for r in kube.SOURCES if r.kind == "NodePool")
ONLY_PPC = policy.nodes_from_platforms(["linux/ppc64le"])
LEGACY = f"{HOST}/team/legacy:1"  # linux/amd64 only
NAMESPACES = ("capi", "infra", "tenant")


def machine_deployment(namespace: str, name: str = "md") -> dict[str, Any]:
    """A node group cluster-autoscaler scales from zero; its template node is amd64."""
    annotations = {_sources.CAPI_MIN_SIZE: "0", _sources.CAPI_MAX_SIZE: "3"}
    return {
        "apiVersion": "cluster.x-k8s.io/v1beta2",
        "kind": "MachineDeployment",
        "metadata": {"name": name, "namespace": namespace, "annotations": annotations},
        "spec": {"replicas": 0, "clusterName": "c"},
    }


def capacity_settings(*namespaces: str) -> settings.CapacitySettings:
    return settings.CapacitySettings(cluster_api=settings.ClusterAPISettings(namespaces=namespaces))


def runtime(*namespaces: str) -> handlers.Runtime:
    config = settings.Settings(capacity=capacity_settings(*namespaces))
    return handlers.Runtime(config, metrics=metrics.Metrics())


def counted(rt: handlers.Runtime) -> set[str]:
    return {str(c.source) for c in rt.provisionable()}


def not_counted_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "are not counted" in r.getMessage()]


@pytest.mark.parametrize(
    ("named", "counting"),
    [
        ((), ()),  # the default: none
        (("capi",), ("capi",)),
        (("capi", "infra"), ("capi", "infra")),
        (("*",), NAMESPACES),
    ],
)
def test_node_groups_count_only_from_the_named_namespaces(
    named: tuple[str, ...], counting: tuple[str, ...]
) -> None:
    rt = runtime(*named)
    for namespace in NAMESPACES:
        handlers.capacity_changed(rt, MACHINE_DEPLOYMENTS, machine_deployment(namespace))
    assert counted(rt) == {f"MachineDeployment {n}/md" for n in counting}
    # NodePools are cluster-scoped: only the cluster's admins write them, and they still count.
    handlers.capacity_changed(rt, NODEPOOLS, nodepool("general", arch("amd64")))
    assert "NodePool general" in counted(rt)


async def test_a_tenants_node_group_does_not_turn_a_denial_into_an_admit(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rt = runtime("capi")
    caplog.set_level(logging.INFO, logger="archwarden")
    for name in ("md", "md-2"):
        handlers.capacity_changed(rt, MACHINE_DEPLOYMENTS, machine_deployment("tenant", name))
    denied = await engine(list(rt.provisionable()), ONLY_PPC).review(
        deployment(LEGACY), operation="CREATE"
    )
    assert not denied.allowed
    assert "MachineDeployment" not in denied.message
    # Said once for the namespace, however many of its node groups arrive.
    assert not_counted_lines(caplog) == [
        "Cluster API node groups in namespace tenant are not counted "
        "(capacity.clusterAPI.namespaces)"
    ]
    # The same node group in the named namespace is what admits it.
    handlers.capacity_changed(rt, MACHINE_DEPLOYMENTS, machine_deployment("capi"))
    allowed = await engine(list(rt.provisionable()), ONLY_PPC).review(
        deployment(LEGACY), operation="CREATE"
    )
    assert allowed.allowed
    assert allowed.warnings == (
        "no node can run it now; MachineDeployment capi/md can provision linux/amd64",
    )


def test_ignored_namespaces_are_said_once_each_and_remembered_up_to_a_bound(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="archwarden")
    ignored = kube.IgnoredNamespaces(limit=2)
    for namespace in ["a", "b", "a", "c", "d", "b", "e"]:
        ignored.note(namespace)
    lines = not_counted_lines(caplog)
    assert lines[:2] == [kube.not_counted("a"), kube.not_counted("b")]
    assert lines[2:] == [
        "Cluster API node groups in more than 2 namespaces are not counted "
        "(capacity.clusterAPI.namespaces); further namespaces are not logged"
    ]


# -- where they are read ----------------------------------------------------------------------


class Reader:
    """ApiReader's discovery and custom-object lists, answered from memory; records each list
    (plural, namespace) asked for."""

    def __init__(self, objects: list[dict[str, Any]], forbidden: frozenset[str] = frozenset()):
        self.objects = objects
        self.forbidden = forbidden
        self.lists: list[tuple[str, str | None]] = []

    async def preferred_versions(self) -> dict[str, str]:
        return {"karpenter.sh": "v1", "cluster.x-k8s.io": "v1beta2"}

    async def resource_plurals(self, group: str, version: str) -> frozenset[str]:
        return frozenset(r.plural for r in kube.SOURCES if r.group == group)

    async def list_custom(
        self, group: str, version: str, plural: str, *, namespace: str | None = None, limit: int = 0
    ) -> list[Mapping[str, Any]]:
        self.lists.append((plural, namespace))
        if namespace in self.forbidden:
            raise kube.ApiUnavailable(f"list {plural}.{group} in {namespace}: HTTP 403 Forbidden")
        return [
            o
            for o in self.objects
            if o["kind"].lower() + "s" == plural
            and namespace in (None, o["metadata"].get("namespace"))
        ]


async def sources(reader: Reader, *named: str) -> dict[str, tuple[str, ...] | None]:
    found = await kube.available_sources(cast(kube.ApiReader, reader), capacity_settings(*named))
    return {r.kind: r.namespaces for r in found}


async def test_node_groups_are_read_only_in_the_named_namespaces(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="archwarden")
    reader = Reader([])
    # The default: no Cluster API kind is even listed, and the log says why.
    assert await sources(reader) == {"NodePool": None}
    assert reader.lists == [("nodepools", None)]
    assert (
        "Cluster API node groups are not counted: capacity.clusterAPI.namespaces names no namespace"
    ) in caplog.messages
    # Named: each kind is listed in those namespaces alone (a name given twice, once).
    reader = Reader([])
    assert await sources(reader, "capi", "infra", "capi") == {
        "NodePool": None,
        "MachineDeployment": ("capi", "infra"),
        "MachineSet": ("capi", "infra"),
        "MachinePool": ("capi", "infra"),
    }
    assert {n for plural, n in reader.lists if plural != "nodepools"} == {"capi", "infra"}
    # "*": everywhere, at once.
    assert (await sources(Reader([]), "*"))["MachineDeployment"] is None
    # A namespace archwarden may not list is left out, the others are still read.
    assert (await sources(Reader([], frozenset({"infra"})), "capi", "infra"))["MachineSet"] == (
        "capi",
    )
    assert "MachineSet" not in await sources(Reader([], frozenset({"capi"})), "capi")


async def test_check_from_the_cluster_counts_the_named_namespaces_alone() -> None:
    objects = [machine_deployment(n) for n in NAMESPACES]
    reader = Reader(objects)
    classes, problems = await kube.list_capacity(
        cast(kube.ApiReader, reader), capacity_settings("capi")
    )
    assert [str(c.source) for c in classes] == ["MachineDeployment capi/md"]
    assert problems == []
    assert ("machinedeployments", None) not in reader.lists
    # Whatever a list answers, an object of another namespace is never counted.
    named = dataclasses.replace(MACHINE_DEPLOYMENTS, version="v1beta2", namespaces=("capi",))
    assert kube.capacity_from_object(named, objects[2], capacity_settings("capi")) is None


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        ([], ()),
        (
            ["--cluster-api-namespace", "capi", "--cluster-api-namespace", "infra"],
            ("capi", "infra"),
        ),
        (["--cluster-api-namespace", "*"], ("*",)),
    ],
)
def test_check_from_the_cluster_names_namespaces_as_the_configuration_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, flags: list[str], named: tuple[str, ...]
) -> None:
    asked: list[settings.CapacitySettings] = []

    def cluster_nodes(
        kubeconfig: str | None, config: settings.CapacitySettings
    ) -> tuple[list[policy.Node], list[policy.ProvisionableClass], list[str]]:
        asked.append(config)
        return [], [], []

    monkeypatch.setattr(cli, "_cluster_nodes", cluster_nodes)
    manifest = tmp_path / "empty.yaml"
    manifest.write_text("")
    assert cli.main(["check", "--from-cluster", "-f", str(manifest), *flags]) == 0
    assert [c.cluster_api.namespaces for c in asked] == [named]


def test_node_groups_are_watched_in_the_named_namespaces_only() -> None:
    rt = runtime("capi", "infra")
    rt.capacity_sources = (
        dataclasses.replace(NODEPOOLS, version="v1"),
        dataclasses.replace(MACHINE_DEPLOYMENTS, version="v1beta2", namespaces=("capi", "infra")),
    )
    connection = kube.Connection(kubernetes.client.Configuration(host="http://127.0.0.1:1"))
    watches = rt.capacity_watches(connection, rt.capacity_sources)
    assert [w.path for w in watches] == [
        "/apis/karpenter.sh/v1/nodepools",
        "/apis/cluster.x-k8s.io/v1beta2/namespaces/capi/machinedeployments",
        "/apis/cluster.x-k8s.io/v1beta2/namespaces/infra/machinedeployments",
    ]
    for namespace in ("capi", "infra"):
        watches[1 + ("capi", "infra").index(namespace)].on_object(machine_deployment(namespace))
    # One namespace's list (empty now) removes what is gone from it, and nothing elsewhere.
    watches[1].on_listed(set())
    assert counted(rt) == {"MachineDeployment infra/md"}
