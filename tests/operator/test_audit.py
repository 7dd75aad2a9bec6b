"""The background audit without kopf: a fake registry behind MockTransport, real policy,
the real stores fed with objects, a fake clock for the registry budget."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import re
from collections.abc import Iterable
from typing import Any

import httpx
import pytest

from archwarden import admission, audit, kube, pod_store, policy, registry, settings
from archwarden import workload_store as ws

HOST = "registry.test"
# A runtime's start failure for the entrypoint's format (gVisor's sentry loads the ELF itself:
# google/gvisor pkg/sentry/loader/loader.go), under containerd's wording
# (internal/cri/server/container_start.go).
START_FAILED = (
    'failed to start containerd task "4b1c": OCI runtime start failed: starting container: '
    "starting root container: starting sandbox: creating process: failed to load /app: "
    "exec format error: unknown"
)
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def _index(*arches: str) -> bytes:
    manifests = [
        {
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": "sha256:" + f"{i + 7 * len(arches):064x}",
            "size": 1,
            "platform": {"os": "linux", "architecture": arch},
        }
        for i, arch in enumerate(arches)
    ]
    return json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}).encode()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)


class Registry:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.docs: dict[str, bytes] = {}
        self.times: list[float] = []
        self.throttle: list[str] = []
        """Retry-After values to answer 429 with, first to last."""

    async def handler(self, request: httpx.Request) -> httpx.Response:
        self.times.append(self.clock.now)
        if self.throttle:
            return httpx.Response(429, headers={"Retry-After": self.throttle.pop(0)})
        repo = request.url.path.split("/v2/")[1].split("/manifests/")[0]
        body = self.docs.get(repo)
        if body is None:
            return httpx.Response(404, json={"errors": [{"code": "MANIFEST_UNKNOWN"}]})
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        headers = {"Content-Type": OCI_INDEX, "Docker-Content-Digest": digest}
        if request.method == "HEAD":
            return httpx.Response(200, headers=headers)
        return httpx.Response(200, content=body, headers=headers)


class Poster:
    def __init__(self) -> None:
        self.posted: list[tuple[str, str, str, str]] = []

    def post(self, target: Any, type: str, reason: str, message: str) -> None:
        self.posted.append((target["kind"], target["metadata"]["name"], reason, message))

    def reasons(self, reason: str) -> list[tuple[str, str, str, str]]:
        return [p for p in self.posted if p[2] == reason]


async def posted(world: World, reason: str) -> list[tuple[str, str, str, str]]:
    """The Events of ``reason``, once one is posted by a lookup in the background (at most
    about a second later)."""
    for _ in range(100):
        if world.poster.reasons(reason):
            break
        await asyncio.sleep(0.01)
    return world.poster.reasons(reason)


class Reports:
    def __init__(self) -> None:
        self.synced: list[list[kube.PolicyResult]] = []

    async def available(self) -> bool:
        return True

    async def sync(
        self, results: Iterable[kube.PolicyResult], *, prune: bool = True
    ) -> kube.SyncSummary:
        self.synced.append(list(results))
        return kube.SyncSummary(created=1)


def deployment(name: str, image: str, arch: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": "app", "image": image}]}
    if arch:
        spec["nodeSelector"] = {"kubernetes.io/arch": arch}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "team", "uid": f"uid-{name}"},
        "spec": {"selector": {"matchLabels": {"a": name}}, "template": {"spec": spec}},
    }


def pod(name: str, image: str, node: str, owner: str, **status: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": "team",
            "uid": f"uid-{name}",
            "ownerReferences": [{"kind": "ReplicaSet", "name": owner, "controller": True}],
        },
        "spec": {"nodeName": node, "containers": [{"name": "app", "image": image}]},
        "status": status,
    }


class World:
    def __init__(
        self,
        nodes: list[str],
        template_bytes: int = settings.LimitsSettings().template_bytes,
        *,
        max_retries: int | None = None,
        skip: settings.SkipSettings | None = None,
        **audit_config: Any,
    ) -> None:
        self.clock = Clock()
        self.registry = Registry(self.clock)
        cfg = settings.Settings(
            registries={HOST: registry.RegistrySettings()},
            mode="enforce",
            audit=settings.AuditSettings(**audit_config),
            limits=settings.LimitsSettings(template_bytes=template_bytes),
            skip=skip or settings.SkipSettings(),
        )
        client_settings = cfg.client_settings()
        if max_retries is not None:
            client_settings = dataclasses.replace(client_settings, max_retries=max_retries)
        self.holds = registry.Holds(clock=self.clock, sleep=self.clock.sleep)
        client = registry.RegistryClient(
            client_settings,
            transport=httpx.MockTransport(self.registry.handler),
            holds=self.holds,
        )
        self.inventory = policy.Inventory()
        for node in policy.nodes_from_platforms(nodes):
            self.inventory.apply(node.name, node)
        resolver = registry.Resolver(client, cfg.cache, clock=self.clock)
        self.admission = admission.Admission(cfg, resolver, lambda: self.inventory)
        self.workloads = ws.WorkloadStore(template_bytes=cfg.limits.template_bytes)
        self.pods = pod_store.PodStore()
        self.poster = Poster()
        self.reports = Reports()
        a = cfg.audit
        self.pacer = registry.Pacer(
            a.requests_per_second, a.burst, clock=self.clock, sleep=self.clock.sleep
        )
        self.auditor = audit.Auditor(
            self.admission,
            self.workloads,
            self.pods,
            lambda: self.inventory,
            poster=self.poster,
            meters=self.admission.metrics,
            reports=self.reports,
            pacer=self.pacer,
            clock=self.clock,
        )

    def add(self, body: dict[str, Any]) -> None:
        self.workloads.put(body["kind"], body["apiVersion"], body)

    def sample(self, name: str, **labels: str) -> float:
        return self.admission.metrics.registry.get_sample_value(name, labels) or 0.0


async def test_audit_reports_what_admission_would_deny_once_per_message() -> None:
    world = World(["linux/arm64", "linux/arm64"])
    world.registry.docs = {"team/legacy": _index("amd64"), "team/web": _index("amd64", "arm64")}
    legacy = deployment("legacy", f"{HOST}/team/legacy:1")
    world.add(legacy)
    world.add(deployment("web", f"{HOST}/team/web:1"))
    summary = await world.auditor.audit_once()
    assert (summary.judged, summary.incompatible) == (2, 1)

    review = await world.admission.review(legacy, operation="CREATE")
    mismatches = world.poster.reasons("ArchitectureMismatch")
    assert mismatches == [
        ("Deployment", "legacy", "ArchitectureMismatch", "audit: " + review.message)
    ]
    by_name = {r.name: r for r in world.reports.synced[-1]}
    assert by_name["legacy"].result is kube.Result.FAIL
    assert by_name["legacy"].message == review.message
    assert by_name["web"].result is kube.Result.PASS
    assert world.sample("archwarden_workloads_incompatible", kind="Deployment") == 1
    assert world.sample("archwarden_audit_workloads_total") == 2
    assert world.sample("archwarden_audit_last_completed_timestamp_seconds") == world.clock.now

    await world.auditor.audit_once()  # same findings: no second Event
    assert len(world.poster.reasons("ArchitectureMismatch")) == 1
    assert len(world.reports.synced) == 2


async def test_audit_never_exceeds_its_request_budget() -> None:
    world = World(["linux/amd64"], requests_per_second=2.0, burst=3)
    world.registry.docs = {f"team/app{i}": _index("amd64") for i in range(12)}
    for i in range(12):
        world.add(deployment(f"app{i}", f"{HOST}/team/app{i}:1"))
    start = world.clock.now
    await world.auditor.audit_once()
    times = world.registry.times
    assert len(times) == 12
    for i, at in enumerate(times):
        # Token bucket: the (i+1)th request no earlier than (i + 1 - burst) / rate after start.
        assert at - start >= (i + 1 - 3) / 2.0 - 1e-9
    assert times[-1] - start == pytest.approx((12 - 3) / 2.0)


async def test_a_long_hold_fails_the_registrys_other_images_at_once_until_it_ends() -> None:
    world = World(["linux/amd64"], requests_per_second=100.0, burst=10)
    world.registry.docs = {f"team/app{i}": _index("amd64") for i in range(5)}
    # Longer than the client waits by itself (registry.ClientSettings.max_retry_after): the
    # lookup fails at once, and so does every other lookup on that registry, unasked.
    world.registry.throttle = ["30"]
    for i in range(5):
        world.add(deployment(f"app{i}", f"{HOST}/team/app{i}:1"))
    summary = await world.auditor.audit_once()
    assert summary.errors == 5
    assert world.registry.times == [1000.0]  # one request, and no time spent waiting
    assert world.clock.now == 1000.0
    held = [r.message for r in summary.results if "not asked again" in r.message]
    assert len(held) == 4
    assert re.search(
        r"registry registry\.test: asked to wait 30s \(Retry-After\); "
        r"not asked again until \d\d:\d\d:\d\dZ: team/app\d:1",
        held[0],
    ), held[0]

    world.clock.now += 30  # the hold ends
    summary = await world.auditor.audit_once()
    assert (summary.judged, summary.errors) == (5, 0)
    assert len(world.registry.times) == 6


async def test_the_audit_waits_out_a_short_hold() -> None:
    # A registry asking for 5 s is waited for (a workload marked "not inspected" for an audit
    # period over 5 s would be worse); the lookup that got the 429 does not retry here.
    world = World(["linux/amd64"], max_retries=0, requests_per_second=100.0, burst=10)
    world.registry.docs = {"team/app": _index("amd64"), "team/next": _index("amd64")}
    world.registry.throttle = ["5"]
    world.add(deployment("app", f"{HOST}/team/app:1"))
    world.add(deployment("next", f"{HOST}/team/next:1"))
    summary = await world.auditor.audit_once()
    assert summary.errors == 1
    first, second = world.registry.times
    assert second - first == pytest.approx(5)


async def test_admissions_neither_wait_for_nor_spend_the_audit_budget() -> None:
    world = World(["linux/amd64"], requests_per_second=0.001, burst=1)
    world.registry.docs = {"team/app": _index("amd64")}
    await world.pacer.acquire(HOST)  # the audit's budget for this registry is spent
    outcome = await asyncio.wait_for(
        world.admission.review(deployment("app", f"{HOST}/team/app:1"), operation="CREATE"),
        timeout=5,
    )
    assert outcome.allowed and outcome.label == "allowed"
    assert world.pacer.sent == {HOST: 1}  # the test's own token


async def test_a_held_registry_answers_admissions_at_once_with_what_is_held() -> None:
    world = World(["linux/amd64"])
    world.registry.docs = {"team/app": _index("amd64"), "team/new": _index("amd64")}
    app = deployment("app", f"{HOST}/team/app:1")
    world.add(app)
    assert (await world.admission.review(app, operation="CREATE")).allowed
    world.clock.now += world.admission.config.cache.tag_ttl + 1  # app:1 must be asked again
    world.registry.throttle = ["3600"]
    summary = await world.auditor.audit_once()  # the audit meets the 429 revalidating app:1
    assert summary.errors == 0  # and judges with the stale answer
    assert len(world.registry.times) == 2

    # The tag's last answer, stale, without asking the registry or waiting for it.
    outcome = await asyncio.wait_for(world.admission.review(app, operation="CREATE"), timeout=1)
    assert outcome.allowed and outcome.label == "allowed"
    # An image never seen fails at once, saying why and until when (admitted: fail-open).
    new = deployment("new", f"{HOST}/team/new:1")
    outcome = await asyncio.wait_for(world.admission.review(new, operation="CREATE"), timeout=1)
    assert outcome.reason == "ImageInspectionFailed"
    assert "asked to wait 3600s (Retry-After); not asked again until" in outcome.message
    assert len(world.registry.times) == 2


async def test_a_tag_that_lost_a_platform_warns_the_workloads_running_on_it() -> None:
    world = World(["linux/amd64", "linux/arm64"])
    world.registry.docs = {"team/web": _index("amd64", "arm64")}
    image = f"{HOST}/team/web:1"
    world.add(deployment("web", image))
    world.add(deployment("other", image))
    # web's pods run on the arm64 node; other's on amd64 only.
    world.pods.put(pod("web-abc-1", image, "linux-arm64", "web-5d4f"))
    world.pods.put(pod("other-abc-1", image, "linux-amd64", "other-77c"))
    await world.auditor.audit_once()
    assert world.auditor.check_drift.__name__  # nothing expired yet:
    assert await world.auditor.check_drift() == 0

    world.registry.docs["team/web"] = _index("amd64")  # re-pushed without arm64
    world.clock.now += world.admission.config.cache.tag_ttl + 1
    assert await world.auditor.check_drift() == 1
    [(kind, name, _reason, message)] = world.poster.reasons("ImagePlatformsChanged")
    assert (kind, name) == ("Deployment", "web")
    assert "lost linux/arm64" in message and "next rollout would be denied" in message
    assert "supports linux/amd64 only" in message and "linux/amd64 and linux/arm64" in message
    assert world.sample("archwarden_image_platforms_changed_total") == 1


async def test_exec_format_error_is_reported_on_the_workload() -> None:
    world = World(["linux/amd64"])
    world.registry.docs = {"team/liar": _index("amd64")}
    image = f"{HOST}/team/liar:1"
    world.add(deployment("liar", image))
    await world.auditor.audit_once()
    failing = pod(
        "liar-abc-1",
        image,
        "linux-amd64",
        "liar-6c9",
        containerStatuses=[
            {
                "name": "app",
                "state": {
                    "waiting": {
                        "reason": "CrashLoopBackOff",
                        "message": "back-off 10s restarting failed container",
                    }
                },
                # The runtime's start failure, kept from the run before the back-off.
                "lastState": {"terminated": {"reason": "StartError", "message": START_FAILED}},
            }
        ],
    )
    world.auditor.pod_changed(None, pod_store.project(failing))
    world.auditor.pod_changed(pod_store.project(failing), pod_store.project(failing))
    [(kind, name, _reason, message)] = world.poster.reasons("ExecFormatError")
    assert (kind, name) == ("Deployment", "liar")
    assert message.startswith(
        f"container app (image {image}) failed with exec format error on node linux-amd64 "
        "(linux/amd64), as the container runtime reported (StartError): "
    )
    assert "supports linux/amd64 only, so its binary does not match" in message
    assert world.sample("archwarden_exec_format_errors_total", evidence="runtime") == 1
    assert world.sample("archwarden_exec_format_errors_total", evidence="log") == 0


async def test_a_runtime_start_failure_while_waiting_is_the_runtimes_evidence() -> None:
    world = World(["linux/amd64"])
    world.registry.docs = {"team/liar": _index("arm64")}
    image = f"{HOST}/team/liar:1"
    world.add(deployment("liar", image))
    await world.auditor.audit_once()
    failing = pod(
        "liar-abc-1",
        image,
        "linux-amd64",
        "liar-6c9",
        containerStatuses=[
            {
                "name": "app",
                "state": {"waiting": {"reason": "RunContainerError", "message": START_FAILED}},
            }
        ],
    )
    world.auditor.pod_changed(None, pod_store.project(failing))
    [(_kind, _name, _reason, message)] = world.poster.reasons("ExecFormatError")
    assert "as the container runtime reported (RunContainerError): " in message
    assert "the image says it supports linux/arm64 only" in message
    assert world.sample("archwarden_exec_format_errors_total", evidence="runtime") == 1


async def test_runcs_line_in_the_log_is_reported_as_only_a_log_line() -> None:
    # runc execs the entrypoint after the start: the kernel's refusal is a line on the
    # container's stderr, copied into the message with FallbackToLogsOnError.
    world = World(["linux/amd64"])
    world.registry.docs = {"team/liar": _index("amd64")}
    image = f"{HOST}/team/liar:1"
    world.add(deployment("liar", image))
    await world.auditor.audit_once()
    failing = pod(
        "liar-abc-1",
        image,
        "linux-amd64",
        "liar-6c9",
        containerStatuses=[
            {
                "name": "app",
                "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 10s"}},
                "lastState": {
                    "terminated": {
                        "reason": "Error",
                        "exitCode": 255,
                        "message": "exec /catatonit: exec format error\n",
                    }
                },
            }
        ],
    )
    world.auditor.pod_changed(None, pod_store.project(failing))
    [(kind, name, _reason, message)] = world.poster.reasons("ExecFormatError")
    assert (kind, name) == ("Deployment", "liar")
    assert "failed with exec format error" not in message
    assert message.startswith(
        f"container app (image {image}) on node linux-amd64 (linux/amd64) ended with a log "
        "line saying exec format error for its entrypoint /catatonit, as runc writes "
    )
    assert "the evidence is only this log line, which the container could have written" in message
    assert message.endswith(
        "supports linux/amd64 only, so if the line is runc's, its binary does not match what "
        "the image says"
    )
    assert world.sample("archwarden_exec_format_errors_total", evidence="log") == 1
    assert world.sample("archwarden_exec_format_errors_total", evidence="runtime") == 0


async def test_a_container_writing_exec_format_error_itself_accuses_no_image() -> None:
    world = World(["linux/amd64"])
    world.registry.docs = {"team/web": _index("amd64")}
    image = f"{HOST}/team/web:1"
    world.add(deployment("web", image))
    await world.auditor.audit_once()
    for i, (reason, message) in enumerate(
        [
            # echo "exec format error" > /dev/termination-log; exit 1
            ("Error", "exec format error\n"),
            # A shell in the image failing to run one of the image's files.
            ("Error", "/bin/sh: 1: ./tool: Exec format error\n"),
            # The runtime's words, in the container's own termination log.
            ("Error", START_FAILED),
            ("Completed", "exec /app: exec format error"),
        ]
    ):
        body = pod(
            f"web-abc-{i}",
            image,
            "linux-amd64",
            "web-6c9",
            containerStatuses=[
                {"name": "app", "state": {"terminated": {"reason": reason, "message": message}}}
            ],
        )
        world.auditor.pod_changed(None, pod_store.project(body))
    await asyncio.sleep(0.05)  # a lookup, had one started, would have posted by now
    assert world.poster.reasons("ExecFormatError") == []
    registry = world.admission.metrics.registry
    for evidence in policy.ExecEvidence:
        # Both series exist (an alert on them sees 0), and neither counted the container's text.
        sample = registry.get_sample_value(
            "archwarden_exec_format_errors_total", {"evidence": evidence.value}
        )
        assert sample == 0, evidence


async def test_an_exec_format_error_of_an_image_never_inspected_names_its_platforms() -> None:
    # Admitted without an answer (fail-open, a registry that was down): the audit asks.
    world = World(["linux/amd64"])
    world.registry.docs = {"team/liar": _index("arm64")}
    image = f"{HOST}/team/liar:1"
    world.add(deployment("liar", image))
    failing = pod(
        "liar-abc-1",
        image,
        "linux-amd64",
        "liar-6c9",
        containerStatuses=[
            {
                "name": "app",
                "state": {
                    "terminated": {"reason": "Error", "message": "exec /app: exec format error"}
                },
            }
        ],
    )
    assert world.admission.held_platforms(image) is None
    world.auditor.pod_changed(None, pod_store.project(failing))
    [(kind, name, _reason, message)] = await posted(world, "ExecFormatError")
    assert (kind, name) == ("Deployment", "liar")
    assert "supports linux/arm64 only" in message and "not known" not in message


async def test_an_exec_format_error_of_an_unreadable_image_says_why() -> None:
    world = World(["linux/amd64"])
    world.registry.docs = {}  # the registry has no such repository: 404
    image = f"{HOST}/team/gone:1"
    world.add(deployment("gone", image))
    failing = pod(
        "gone-abc-1",
        image,
        "linux-amd64",
        "gone-6c9",
        containerStatuses=[
            {
                "name": "app",
                "lastState": {"terminated": {"reason": "StartError", "message": START_FAILED}},
            }
        ],
    )
    world.auditor.pod_changed(None, pod_store.project(failing))
    [(_kind, _name, _reason, message)] = await posted(world, "ExecFormatError")
    assert f"{image}) failed with exec format error" in message
    assert "its platforms could not be read: " in message and HOST in message


async def test_an_exec_format_error_of_a_cut_image_is_never_resolved() -> None:
    world = World(["linux/amd64"])
    image = f"{HOST}/team/" + "a" * 20 * 1024 + ":1"  # no reference: longer than 1024
    failing = pod(
        "odd-abc-1",
        image,
        "linux-amd64",
        "odd-6c9",
        containerStatuses=[
            {
                "name": "app",
                "lastState": {"terminated": {"reason": "StartError", "message": START_FAILED}},
            }
        ],
    )
    world.auditor.pod_changed(None, pod_store.project(failing))
    [(kind, _name, _reason, message)] = await posted(world, "ExecFormatError")
    assert kind == "Pod" and world.registry.times == []
    assert "(cut, 20501 characters)) failed with exec format error" in message
    assert "its platforms could not be read: invalid image reference" in message
    assert len(message) < 1024  # the Event carries the kept prefix, not the 20 KiB


async def test_a_pod_pending_on_an_arch_pin_is_explained() -> None:
    world = World(["linux/amd64", "linux/amd64"])
    world.registry.docs = {"team/web": _index("amd64", "arm64")}
    image = f"{HOST}/team/web:1"
    world.add(deployment("web", image, arch="arm64"))
    await world.auditor.audit_once()
    body = pod(
        "web-abc-1",
        image,
        "",
        "web-5d4f",
        phase="Pending",
        conditions=[
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": "0/2 nodes are available: 2 node(s) didn't match Pod's node "
                "affinity/selector.",
            }
        ],
    )
    body["spec"]["nodeSelector"] = {"kubernetes.io/arch": "arm64"}
    world.auditor.pod_changed(None, pod_store.project(body))
    [(kind, name, _reason, message)] = world.poster.reasons("NoNodeForArchitecture")
    assert (kind, name) == ("Pod", "web-abc-1")
    assert f"image {image} supports linux/amd64 and linux/arm64 only" in message
    assert "the pod asks for arm64" in message and "the nodes are linux/amd64" in message

    # Pending for another reason (resources): nothing to explain.
    body["metadata"]["name"] = "web-abc-2"
    body["status"]["conditions"][0]["message"] = "0/2 nodes are available: 2 Insufficient cpu."
    world.auditor.pod_changed(None, pod_store.project(body))
    assert len(world.poster.reasons("NoNodeForArchitecture")) == 1


async def test_excluded_namespaces_and_allowed_skips_are_not_audited() -> None:
    world = World(["linux/arm64"], skip=settings.SkipSettings(allowed="everyone"))
    world.registry.docs = {"team/legacy": _index("amd64")}
    image = f"{HOST}/team/legacy:1"
    skipped = deployment("skipped", image)
    skipped["metadata"]["annotations"] = {"archwarden.io/skip": "true"}
    world.add(skipped)
    system = deployment("system", image)
    system["metadata"]["namespace"] = "kube-system"
    world.add(system)
    world.add(deployment("checked", image))
    summary = await world.auditor.audit_once()
    assert [r.name for r in summary.results] == ["checked"]
    assert [p[1] for p in world.poster.posted] == ["checked"]


async def test_a_workload_kept_without_its_template_is_listed_as_not_checked() -> None:
    world = World(["linux/arm64"], template_bytes=2048)
    world.registry.docs = {"team/legacy": _index("amd64"), "team/big": _index("amd64")}
    legacy = deployment("legacy", f"{HOST}/team/legacy:1")
    world.add(legacy)
    await world.auditor.audit_once()
    assert [p[1] for p in world.poster.reasons("ArchitectureMismatch")] == ["legacy"]

    # Both past limits.templateBytes: big was never judged, legacy's earlier verdict is gone.
    many = [{"key": f"example.com/t{i}", "operator": "Exists"} for i in range(100)]
    big = deployment("big", f"{HOST}/team/big:1")
    for body in (big, legacy):
        body["spec"]["template"]["spec"]["tolerations"] = many
        world.add(body)
    asked = len(world.registry.times)
    summary = await world.auditor.audit_once()
    assert len(world.registry.times) == asked  # big's image was not resolved
    assert len(world.poster.posted) == 1  # no Event about either
    assert (summary.judged, summary.oversized, summary.errors) == (0, 2, 0)
    size = policy.least_projected_bytes(big)  # refused before extraction
    assert size <= policy.extract(big).template.projected_bytes
    by_name = {r.name: r for r in world.reports.synced[-1]}
    assert by_name["big"].result is kube.Result.ERROR
    assert by_name["big"].message == (
        f"pod template of at least {size} bytes is over limits.templateBytes (2048); "
        "its images were not checked"
    )
    assert by_name["legacy"].result is kube.Result.ERROR
    assert world.sample("archwarden_workloads_incompatible", kind="Deployment") == 0

    # Small again: judged, and its mismatch said again.
    world.add(deployment("legacy", f"{HOST}/team/legacy:1"))
    summary = await world.auditor.audit_once()
    assert (summary.judged, summary.oversized) == (1, 1)
    assert [p[1] for p in world.poster.reasons("ArchitectureMismatch")] == ["legacy", "legacy"]
