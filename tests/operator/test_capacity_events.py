"""Provisionable capacity in the admission core and the handlers: Events tell existing nodes
from capacity autoscalers add, metrics count classes by source, pool changes re-evaluate."""

from __future__ import annotations

from typing import Any

import httpx

from archwarden import admission, handlers, kube, metrics, policy, registry, settings
from tests.operator.test_admission_core import HOST, Registry, deployment
from tests.policy import objects
from tests.policy.test_capacity import arch, nodepool

AMD_PPC = policy.nodes_from_platforms(["linux/amd64", "linux/ppc64le"])
NODEPOOLS = next(r for r in kube.SOURCES if r.kind == "NodePool")
MACHINE_DEPLOYMENTS = next(r for r in kube.SOURCES if r.kind == "MachineDeployment")


def engine(
    capacity: list[policy.ProvisionableClass], nodes: list[policy.Node] = AMD_PPC
) -> admission.Admission:
    cfg = settings.Settings(registries={HOST: registry.RegistrySettings()})
    client = registry.RegistryClient(
        cfg.client_settings(), transport=httpx.MockTransport(Registry().handler)
    )
    return admission.Admission(
        cfg, registry.Resolver(client), lambda: nodes, capacity=lambda: capacity
    )


def pod(image: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": "team"},
        "spec": {"containers": [{"name": "c", "image": image}]},
    }


async def test_events_name_existing_and_provisionable_capacity() -> None:
    arm = policy.nodepool_from_object(nodepool("arm64-spot", arch("arm64")))
    image = f"{HOST}/team/web:1"  # linux/amd64 + linux/arm64
    outcome = await engine([arm]).review(pod(image), operation="CREATE", mutate=True)
    assert outcome.allowed
    (event,) = outcome.events
    assert (event.reason, event.message) == (
        "NodeAffinityInjected",
        "pods constrained to existing nodes of linux/amd64 and nodes of linux/arm64 that "
        "NodePool arm64-spot can provision",
    )
    # Without the pool the pin would have named amd64 alone.
    plain = await engine([]).review(pod(image), operation="CREATE", mutate=True)
    assert plain.events[0].message == "pods constrained to nodes of linux/amd64"


async def test_a_denial_names_the_capacity_that_cannot_help() -> None:
    power = policy.nodepool_from_object(nodepool("power", arch("ppc64le")))
    general = policy.nodepool_from_object(nodepool("general", arch("amd64", "arm64")))
    image = f"{HOST}/team/legacy:1"  # linux/amd64 only
    only_ppc = policy.nodes_from_platforms(["linux/ppc64le"])
    denied = await engine([power], only_ppc).review(deployment(image), operation="CREATE")
    assert not denied.allowed
    assert denied.message == (
        f"image {image} supports linux/amd64 only; the node this pod can use is "
        "linux/ppc64le (1); NodePool power can provision linux/ppc64le; publish a multi-arch "
        "image or select amd64 nodes"
    )
    assert [e.reason for e in denied.events] == ["ArchitectureMismatch"]
    allowed = await engine([power, general], only_ppc).review(deployment(image), operation="CREATE")
    assert allowed.allowed
    assert [(e.type, e.reason) for e in allowed.events] == [("Normal", "ProvisionableCapacity")]


async def test_an_arm64_only_workload_waits_for_the_pool() -> None:
    arm = policy.nodepool_from_object(nodepool("arm64-spot", arch("arm64")))
    only_amd = policy.nodes_from_platforms(["linux/amd64"])
    cfg = settings.Settings(registries={HOST: registry.RegistrySettings()})
    client = registry.RegistryClient(
        cfg.client_settings(), transport=httpx.MockTransport(_arm_only)
    )
    eng = admission.Admission(
        cfg, registry.Resolver(client), lambda: only_amd, capacity=lambda: [arm]
    )
    outcome = await eng.review(deployment(f"{HOST}/team/edge:1"), operation="CREATE")
    assert outcome.allowed and outcome.label == "warned"
    assert [(e.type, e.reason) for e in outcome.events] == [("Normal", "ProvisionableCapacity")]
    assert outcome.warnings == (
        "no node can run it now; NodePool arm64-spot can provision linux/arm64",
    )


async def _arm_only(request: httpx.Request) -> httpx.Response:
    from tests.operator.test_admission_core import OCI_INDEX, _digest, _index

    body = _index(("linux", "arm64"))
    return httpx.Response(
        200,
        content=body,
        headers={"Content-Type": OCI_INDEX, "Docker-Content-Digest": _digest(body)},
    )


def _classes(rt: handlers.Runtime) -> dict[tuple[str, str, str], float]:
    samples = [s for m in rt.metrics.capacity_classes.collect() for s in m.samples]
    return {(s.labels["source"], s.labels["os"], s.labels["arch"]): s.value for s in samples}


async def test_pool_changes_adjust_metrics_and_re_evaluate() -> None:
    rt = handlers.Runtime(settings.Settings(), metrics=metrics.Metrics(), leading=True)
    rt.ready.set()  # changes re-evaluate once the first lists are complete
    for name, arch_name in (("a", "amd64"), ("b", "amd64"), ("c", "arm64")):
        rt.note_node(name, policy.node_from_object(objects.node(name, arch_name)))
    assert _classes(rt) == {("node", "linux", "amd64"): 1, ("node", "linux", "arm64"): 1}

    body = nodepool("general", arch("amd64", "arm64"))

    def event(obj: dict[str, Any] | None) -> None:
        handlers.capacity_changed(rt, NODEPOOLS, obj or body, deleted=obj is None)

    event(body)
    assert rt.reevaluation is not None
    rt.reevaluation.cancel()
    rt.reevaluation = None
    assert _classes(rt) == {
        ("node", "linux", "amd64"): 1,
        ("node", "linux", "arm64"): 1,
        ("NodePool", "linux", "amd64"): 1,
        ("NodePool", "linux", "arm64"): 1,
    }
    # The same pool again (a status heartbeat): nothing changes, nothing is re-evaluated.
    event(nodepool("general", arch("amd64", "arm64")))
    assert rt.reevaluation is None
    # Narrowed to amd64: the arm64 series goes, and workloads are re-evaluated.
    event(nodepool("general", arch("amd64")))
    assert rt.reevaluation is not None
    rt.reevaluation.cancel()
    assert ("NodePool", "linux", "arm64") not in _classes(rt)
    assert [c.platforms[0].canonical for c in rt.provisionable()] == ["linux/amd64"]
    # Deleted.
    event(None)
    assert rt.provisionable() == ()
    assert not any(source == "NodePool" for source, _, _ in _classes(rt))
    if rt.reevaluation is not None:
        rt.reevaluation.cancel()


def test_unreadable_objects_provision_nothing() -> None:
    # Node groups of namespace ns count (capacity.clusterAPI.namespaces), so the plain
    # MachineDeployment below provisions nothing for what it is, not for where it is.
    capi = settings.ClusterAPISettings(namespaces=("ns",))
    config = settings.Settings(capacity=settings.CapacitySettings(cluster_api=capi))
    rt = handlers.Runtime(config, metrics=metrics.Metrics())
    handlers.capacity_changed(rt, NODEPOOLS, nodepool("bad", arch("arm64")))
    assert [str(c.source) for c in rt.provisionable()] == ["NodePool bad"]
    broken = nodepool("bad")
    broken["spec"]["template"]["spec"]["requirements"] = [{"key": "a", "operator": "Near"}]
    handlers.capacity_changed(rt, NODEPOOLS, broken)
    assert rt.provisionable() == ()
    plain = {"kind": "MachineDeployment", "metadata": {"name": "md", "namespace": "ns"}}
    handlers.capacity_changed(rt, MACHINE_DEPLOYMENTS, plain)
    assert rt.provisionable() == ()


def test_static_node_groups_from_the_configuration() -> None:
    config = settings.Settings(
        capacity=settings.CapacitySettings(
            node_groups=(settings.NodeGroupSettings("asg", ("linux/s390x",)),)
        )
    )
    rt = handlers.Runtime(config, metrics=metrics.Metrics())
    rt.set_static_capacity(kube.static_capacity(config.capacity))
    assert [str(c.source) for c in rt.provisionable()] == ["nodeGroup asg"]
    assert _classes(rt) == {("nodeGroup", "linux", "s390x"): 1}
    assert rt.counts_capacity
