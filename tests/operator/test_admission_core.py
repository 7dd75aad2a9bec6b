"""The admission core without kopf: a fake registry behind MockTransport, real policy."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
from typing import Any

import httpx
import pytest

from archwarden import admission, policy, registry, settings

HOST = "registry.test"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _index(*platforms: tuple[str, str]) -> bytes:
    manifests = [
        {
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": "sha256:" + f"{i:064x}",
            "size": 1,
            "platform": {"os": os_name, "architecture": arch},
        }
        for i, (os_name, arch) in enumerate(platforms)
    ]
    return json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}).encode()


DOCS = {
    "team/legacy": _index(("linux", "amd64")),
    "team/web": _index(("linux", "amd64"), ("linux", "arm64")),
}


class Registry:
    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.delay = 0.0
        self.down = False

    async def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.down:
            raise httpx.ConnectError("connection refused", request=request)
        repo = request.url.path.split("/v2/")[1].split("/manifests/")[0]
        if repo not in DOCS:
            return httpx.Response(404, json={"errors": [{"code": "MANIFEST_UNKNOWN"}]})
        body = DOCS[repo]
        return httpx.Response(
            200,
            content=body,
            headers={"Content-Type": OCI_INDEX, "Docker-Content-Digest": _digest(body)},
        )


NODES = policy.nodes_from_platforms(["linux/arm64", "linux/arm64", "linux/arm64", "linux/ppc64le"])


def engine(fake: Registry, nodes: list[policy.Node] = NODES, **config: Any) -> admission.Admission:
    base = settings.Settings(registries={HOST: registry.RegistrySettings()})
    values = {**{"mode": "enforce"}, **config}
    cfg = settings.Settings(**{**base.__dict__, **values})
    client = registry.RegistryClient(
        cfg.client_settings(), transport=httpx.MockTransport(fake.handler)
    )
    return admission.Admission(cfg, registry.Resolver(client), lambda: list(nodes))


def deployment(image: str, **meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "api", "namespace": "team", **meta},
        "spec": {
            "selector": {"matchLabels": {"a": "b"}},
            "template": {"spec": {"containers": [{"name": "c", "image": image}]}},
        },
    }


async def test_enforce_denies_with_the_exact_message() -> None:
    outcome = await engine(Registry()).review(
        deployment(f"{HOST}/team/legacy:1.4"), operation="CREATE"
    )
    assert not outcome.allowed and outcome.label == "denied"
    assert outcome.message == (
        f"image {HOST}/team/legacy:1.4 supports linux/amd64 only; the nodes this pod can use are "
        "linux/arm64 (3), linux/ppc64le (1); publish a multi-arch image or select amd64 nodes"
    )
    assert [e.reason for e in outcome.events] == ["ArchitectureMismatch"]


def _denials(eng: admission.Admission, reason: str) -> float:
    value = eng.metrics.registry.get_sample_value(
        "archwarden_admission_denials_total", {"webhook": "validate", "reason": reason}
    )
    return value or 0.0


async def test_denials_are_counted_by_reason() -> None:
    # The dashboard's "denials by reason" panel reads this counter.
    fake = Registry()
    eng = engine(fake, failure_policy="closed")
    await eng.review(deployment(f"{HOST}/team/legacy:1"), operation="CREATE")
    await eng.review(deployment(f"{HOST}/team/web:1"), operation="CREATE")  # allowed
    fake.down = True
    await eng.review(deployment(f"{HOST}/team/other:1"), operation="CREATE")
    assert _denials(eng, "ArchitectureMismatch") == 1
    assert _denials(eng, "ImageInspectionFailed") == 1
    total = sum(
        sample.value
        for family in eng.metrics.registry.collect()
        if family.name == "archwarden_admission_denials"
        for sample in family.samples
        if sample.name.endswith("_total")
    )
    assert total == 2


async def test_namespace_mode_override_and_audit() -> None:
    eng = engine(Registry())
    eng.namespace_mode = {"team": "audit"}.get
    outcome = await eng.review(deployment(f"{HOST}/team/legacy:1"), operation="CREATE")
    assert outcome.allowed and outcome.warnings == ()
    assert [e.reason for e in outcome.events] == ["ArchitectureMismatch"]


async def test_scope_rules_skip_without_registry_traffic() -> None:
    fake = Registry()
    eng = engine(fake, skip=settings.SkipSettings(allowed="everyone"))
    image = f"{HOST}/team/legacy:1"
    system = deployment(image)
    system["metadata"]["namespace"] = "kube-system"
    assert (await eng.review(system, operation="CREATE")).label == "skipped"
    opted_out = deployment(image, annotations={"archwarden.io/skip": "true"})
    outcome = await eng.review(opted_out, operation="CREATE")
    assert outcome.allowed and [e.reason for e in outcome.events] == ["ArchitectureCheckSkipped"]
    assert (await eng.review(deployment(image), operation="DELETE")).label == "skipped"
    # An UPDATE that only changes replicas needs no new decision.
    old, new = deployment(image), deployment(image)
    new["spec"]["replicas"] = 5
    assert (await eng.review(new, operation="UPDATE", old=old)).label == "unchanged"
    assert fake.requests == []


async def test_archwardens_own_label_is_checked_like_any_other() -> None:
    # Anyone can set the chart's name label; archwarden's own pods are kept out by the
    # webhooks' namespaceSelector (the release namespace), not by a label.
    fake = Registry()
    labelled = deployment(f"{HOST}/team/legacy:1", labels={"app.kubernetes.io/name": "archwarden"})
    outcome = await engine(fake).review(labelled, operation="CREATE")
    assert not outcome.allowed and outcome.label == "denied"
    assert fake.requests


async def test_budget_exceeded_fails_open_with_a_warning() -> None:
    fake = Registry()
    fake.delay = 5.0
    cfg_webhook = settings.WebhookSettings(budget_seconds=0.2)
    eng = engine(fake, webhook=cfg_webhook)
    outcome = await eng.review(deployment(f"{HOST}/team/web:1"), operation="CREATE")
    assert outcome.allowed
    assert outcome.decision is not None
    assert outcome.decision.reason is policy.Reason.IMAGE_INSPECTION_FAILED
    assert any("did not answer within 0.2s" in w for w in outcome.warnings)


async def test_closed_failure_policy_denies_with_the_registry_error() -> None:
    fake = Registry()
    fake.down = True
    eng = engine(fake, failure_policy="closed")
    outcome = await eng.review(deployment(f"{HOST}/team/web:1"), operation="CREATE")
    assert not outcome.allowed
    assert f"registry {HOST}: cannot connect" in outcome.message


async def test_stale_answer_is_used_when_the_registry_goes_down() -> None:
    fake = Registry()
    eng = engine(fake, failure_policy="closed", cache=registry.CacheSettings(tag_ttl=0.01))
    image = f"{HOST}/team/web:1"
    first = await eng.review(deployment(image), operation="CREATE")
    assert first.allowed
    await asyncio.sleep(0.05)
    fake.down = True
    again = await eng.review(deployment(image), operation="CREATE")
    assert again.allowed and again.warnings == ()


async def test_mutation_patches_pods_and_notes_an_event() -> None:
    nodes = policy.nodes_from_platforms(["linux/amd64", "linux/arm64", "linux/ppc64le"])
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": "team"},
        "spec": {"containers": [{"name": "c", "image": f"{HOST}/team/web:1"}]},
    }
    outcome = await engine(Registry(), nodes).review(pod, operation="CREATE", mutate=True)
    assert outcome.allowed and outcome.patch
    assert [e.reason for e in outcome.events] == ["NodeAffinityInjected"]
    paths = [op["path"] for op in outcome.patch]
    assert "/spec/affinity" in paths
    assert "/metadata/annotations" in paths


async def test_a_tainted_arm_pool_gets_the_toleration_and_its_own_event() -> None:
    # GKE's Arm nodes: kubernetes.io/arch=arm64:NoSchedule.
    taint = policy.Taint("kubernetes.io/arch", "arm64", "NoSchedule")
    nodes = [
        dataclasses.replace(node, taints=(taint,)) if node.arch == "arm64" else node
        for node in policy.nodes_from_platforms(["linux/amd64", "linux/arm64", "linux/ppc64le"])
    ]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": "team"},
        "spec": {"containers": [{"name": "c", "image": f"{HOST}/team/web:1"}]},
    }
    outcome = await engine(Registry(), nodes).review(pod, operation="CREATE", mutate=True)
    assert outcome.allowed
    assert [e.reason for e in outcome.events] == ["NodeAffinityInjected", "TolerationInjected"]
    assert "kubernetes.io/arch=arm64:NoSchedule" in outcome.events[1].message
    added = [op["value"] for op in outcome.patch if op["path"] == "/spec/tolerations"]
    assert added == [
        [
            {
                "key": "kubernetes.io/arch",
                "operator": "Equal",
                "value": "arm64",
                "effect": "NoSchedule",
            }
        ]
    ]
    # Configured away: the taint keeps its meaning, nothing is tolerated.
    plain = settings.PlatformSettings(taints=())
    outcome = await engine(Registry(), nodes, platforms=plain).review(
        pod, operation="CREATE", mutate=True
    )
    assert [e.reason for e in outcome.events] == ["NodeAffinityInjected"]
    assert not [op for op in outcome.patch if "tolerations" in op["path"]]


@pytest.mark.parametrize("bad", ["UPPER/Case:1", "registry.test/a@sha256:abc"])
async def test_malformed_image_reference_is_an_inspection_failure(bad: str) -> None:
    eng = engine(Registry(), failure_policy="closed")
    outcome = await eng.review(deployment(bad), operation="CREATE")
    assert not outcome.allowed
    assert "invalid image reference" in outcome.message


async def test_malformed_workload_is_allowed_with_a_clear_warning() -> None:
    broken = deployment("x")
    broken["spec"]["template"]["spec"]["containers"] = "nginx"
    outcome = await engine(Registry()).review(broken, operation="CREATE")
    assert outcome.allowed
    assert outcome.warnings == (
        "archwarden: cannot read this object: spec.template.spec.containers: "
        "expected a list, got a string",
    )


@pytest.mark.parametrize("enabled", [True, False])
async def test_workload_templates_are_patched_only_when_configured(enabled: bool) -> None:
    nodes = policy.nodes_from_platforms(["linux/amd64", "linux/arm64", "linux/ppc64le"])
    eng = engine(Registry(), nodes, mutate_workload_templates=enabled)
    outcome = await eng.review(deployment(f"{HOST}/team/web:1"), operation="CREATE", mutate=True)
    assert outcome.allowed
    paths = [op["path"] for op in outcome.patch]
    if enabled:
        assert "/spec/template/spec/affinity" in paths
        assert [e.reason for e in outcome.events] == ["NodeAffinityInjected"]
    else:
        assert paths == [] and outcome.events == ()


def _cache(eng: admission.Admission, result: str) -> float:
    value = eng.metrics.registry.get_sample_value(
        "archwarden_decision_cache_total", {"result": result}
    )
    return value or 0.0


async def test_decisions_are_remembered_until_the_inventory_changes() -> None:
    inventory = policy.Inventory()
    for node in NODES:
        inventory.apply(node.name, node)
    fake = Registry()
    eng = engine(fake)
    eng.nodes = lambda: inventory
    legacy = deployment(f"{HOST}/team/legacy:1")
    first = await eng.review(legacy, operation="CREATE")
    again = await eng.review(deployment(f"{HOST}/team/legacy:1", name="other"), operation="CREATE")
    assert not first.allowed and not again.allowed and again.message == first.message
    assert (_cache(eng, "miss"), _cache(eng, "hit")) == (1, 1)
    requests = len(fake.requests)
    # An amd64 node joins: the same question now has another answer.
    amd64 = policy.nodes_from_platforms(["linux/amd64"])[0]
    inventory.apply("amd64-1", dataclasses.replace(amd64, name="amd64-1"))
    assert (await eng.review(legacy, operation="CREATE")).allowed
    assert (_cache(eng, "miss"), _cache(eng, "hit")) == (2, 1)
    assert len(fake.requests) == requests  # the image answer came from the resolver's cache


async def test_made_up_kinds_and_operations_share_one_series() -> None:
    eng = engine(Registry())
    for i in range(20):
        obj = {**deployment(f"{HOST}/team/web:1"), "kind": f"Invented{i}"}
        await eng.review(obj, operation=f"OP{i}", webhook="validate-deployments")
    samples = [
        s
        for m in eng.metrics.admission_requests.collect()
        for s in m.samples
        if s.name.endswith("_total")
    ]
    assert [(s.labels["kind"], s.labels["operation"], s.value) for s in samples] == [
        ("other", "other", 20.0)
    ]
