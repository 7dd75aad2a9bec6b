"""What already runs: the background audit, tag drift, pending pods and exec format errors.

Admission judges a workload once, when it is written. The :class:`Auditor` judges again what
the cluster holds (``workload_store``, ``pod_store``), with the same engine:

- **audit**: once the workloads are listed, and every ``audit.periodSeconds``, every kept
  workload is decided as admission would (its namespace's mode, the failure policy, the nodes
  and provisionable capacity), its images resolved through the shared cache. Results go to
  Warning Events (``ArchitectureMismatch``, the message starting with ``audit:``; posted again
  only when the message changes), metrics, and OpenReports when the CRDs are installed.
- **tag drift**: a mutable tag whose cached answer expired is resolved again; when its new
  digest lost a platform a workload runs on (its pods' nodes, or where it could be placed), a
  Warning ``ImagePlatformsChanged`` on the workload says the next rollout would be denied.
- **pending pods**: a pod the scheduler could not place because of node affinity/selectors,
  whose images' platforms (from the cache) and architecture pin match no node, gets a Warning
  ``NoNodeForArchitecture`` naming both.
- **exec format errors**: a container whose runtime reported ``exec format error`` (a start
  failure: ``StartError``, ``RunContainerError``...) gets a Warning ``ExecFormatError`` on its
  workload naming the image's platforms and the node's. When the only evidence is the line
  runc or crun writes in the container's log (they exec the entrypoint after the start, so
  their error goes there), the Event says it is only a log line; other text the container
  wrote is not reported (``policy.exec_format_finding``).
- **images that lie** (``audit.verifyImages``): each index's entries are checked against their
  configs once per digest; a mismatch is a Warning ``ImagePlatformsMislabelled``.

Registry requests made here are paced (``registry.Pacer``: ``audit.requestsPerSecond`` per
registry host); admissions never wait for that budget nor spend it. A registry that answered
429 is held (``registry.Holds``, shared with admissions): the audit waits out a hold of a few
seconds, and past a longer one every image on that registry fails at once, without a request,
so the audit moves on to the next. The work yields to the event loop between workloads, so
reviews are answered in between.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Protocol

import cachetools

from archwarden import (
    admission,
    kube,
    metrics,
    platforms,
    pod_store,
    policy,
    reasons,
    reference,
    registry,
    settings,
    workload_store,
)

__all__ = ["AuditSummary", "Auditor"]

logger = logging.getLogger("archwarden")

PREFIX = "audit: "
"""Every audit Event message starts with this: the reader knows it did not come from a review."""
YIELD_EVERY = 20
"""Workloads judged between two yields when nothing had to be fetched."""
MAX_VERIFIED = 10_000
"""Digests remembered as verified (LRU)."""
MAX_PENDING_LOOKUPS = 64
"""Exec format errors waiting for their image's answer at once; beyond, posted without it."""
COMPATIBLE_MESSAGE = "every image runs on the nodes this workload may be scheduled to"
REPORT_ERRORS_LOGGED = 5
"""Report write failures logged one by one per audit; the rest are counted by reason."""


class Poster(Protocol):
    def post(self, target: Mapping[str, Any], type: str, reason: str, message: str) -> None: ...


class Reports(Protocol):
    async def available(self) -> bool: ...

    async def sync(
        self, results: Iterable[kube.PolicyResult], *, prune: bool = True
    ) -> kube.SyncSummary: ...


@dataclasses.dataclass
class AuditSummary:
    judged: int = 0
    incompatible: int = 0
    errors: int = 0
    oversized: int = 0
    """Workloads not judged: kept without their template (``limits.templateBytes``)."""
    drifted: int = 0
    results: list[kube.PolicyResult] = dataclasses.field(default_factory=list)


class Auditor:
    def __init__(
        self,
        checker: admission.Admission,
        workloads: workload_store.WorkloadStore,
        pods: pod_store.PodStore,
        nodes: Callable[[], policy.Inventory],
        *,
        poster: Poster | None,
        meters: metrics.Metrics,
        reports: Reports | None = None,
        config: settings.AuditSettings | None = None,
        pacer: registry.Pacer | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.admission = checker
        self.config = config or checker.config.audit
        self.workloads = workloads
        self.pods = pods
        self.nodes = nodes
        self.poster = poster
        self.metrics = meters
        self.reports = reports
        self.pacer = pacer or registry.Pacer(
            self.config.requests_per_second, float(self.config.burst)
        )
        self.clock = clock
        self._reported: dict[tuple[workload_store.Key, str], str] = {}
        """What was last posted per (workload, reason): posted again only when it changes."""
        self._verified: cachetools.LRUCache[str, tuple[registry.EntryCheck, ...]] = (
            cachetools.LRUCache(MAX_VERIFIED)
        )
        self.last: AuditSummary | None = None
        self._lookups: set[asyncio.Task[None]] = set()
        """Image lookups for exec format errors whose image had no answer yet."""
        self._pods_explained = False
        """Whether the pods kept before this run started were explained (its first audit)."""

    # -- resolution within the budget --------------------------------------------------------

    async def _resolve(
        self, image: str, creds: registry.CredentialStore | None
    ) -> tuple[policy.ImageAnswer, registry.ImagePlatforms | None]:
        """The image's answer (a failure as ``policy.ImageFailure``) and, when the tag now
        points to another digest than the cache held, the previous answer."""
        try:
            ref = reference.parse(image)
        except reference.InvalidReference as exc:
            return policy.ImageFailure(str(exc)), None
        resolver = self.admission.resolver
        before = None if ref.digest else resolver.cached(ref)
        token = registry.RegistryClient.using(creds)
        try:
            with registry.paced(self.pacer):
                answer = await resolver.resolve(ref, allow_stale=True)
        except registry.RegistryError as exc:
            return policy.ImageFailure(str(exc)), None
        finally:
            registry.RegistryClient.restore(token)
        changed = before if before is not None and before.digest != answer.digest else None
        return answer.platforms, changed

    async def _credentials(self, entry: workload_store.Entry) -> registry.CredentialStore | None:
        lookup = self.admission.credentials
        if lookup is None:
            return None
        template = entry.workload.template
        try:
            creds, _problems = await lookup(
                entry.workload.namespace, template.image_pull_secrets, template.service_account
            )
        except Exception as exc:  # the audit goes on without the secret, as admission would
            logger.debug("audit: pull secrets of %s not read: %s", entry.workload.name, exc)
            return None
        return creds

    # -- the audit ---------------------------------------------------------------------------

    async def run(self, synced: Callable[[], Awaitable[None]]) -> None:
        """Once ``synced`` returns (the workloads are listed), audit now and every period;
        between audits, re-resolve mutable tags as their cache entries expire."""
        await synced()
        tag_ttl = max(self.admission.config.cache.tag_ttl, 1.0)
        while True:
            started = time.monotonic()
            try:
                await self.audit_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception(
                    "audit failed; the next one runs in %gs", self.config.period_seconds
                )
            next_audit = started + self.config.period_seconds
            while (left := next_audit - time.monotonic()) > 0:
                await asyncio.sleep(min(left, tag_ttl))
                if next_audit - time.monotonic() > 0:
                    try:
                        await self.check_drift()
                    except asyncio.CancelledError:
                        raise
                    except Exception:
                        logger.exception("tag drift check failed")

    def stop(self) -> None:
        """This replica stopped leading (its ``run`` is cancelled): no pending lookup posts
        anything now, and the next run explains every kept pod again, as at start-up."""
        for task in self._lookups:
            task.cancel()
        self._pods_explained = False

    async def audit_once(self) -> AuditSummary:
        started = time.monotonic()
        summary = AuditSummary()
        inventory = self.nodes()
        capacity = self.admission.capacity()
        config = self.admission.config
        fallbacks = config.platforms.fallbacks()
        failure_policy = policy.FailurePolicy(config.failure_policy)
        seen: dict[tuple[str, str], tuple[policy.ImageAnswer, registry.ImagePlatforms | None]] = {}
        incompatible: dict[str, int] = {}
        drifted: dict[str, tuple[registry.ImagePlatforms, policy.ImageAnswer]] = {}
        keys = set()
        excluded = set(config.excluded_namespaces)
        for position, (key, entry) in enumerate(self.workloads.items()):
            if position % YIELD_EVERY == 0:
                await asyncio.sleep(0)  # admissions first
            if key[1] in excluded or (entry.skip and self.admission.skip_refusal(key[1]) is None):
                continue  # as admission: never checked
            keys.add(key)
            if entry.oversized:
                # Only a placeholder is kept: nothing to judge, said as an error (not checked).
                summary.results.append(self._not_checked(key, entry))
                summary.oversized += 1
                continue
            creds = await self._credentials(entry)
            answers: dict[str, policy.ImageAnswer] = {}
            for image in entry.workload.template.images:
                identity = _identity(self.admission.resolver.client, image, creds)
                if (image, identity) not in seen:
                    seen[image, identity] = await self._resolve(image, creds)
                answer, before = seen[image, identity]
                answers[image] = answer
                if before is not None:
                    drifted[image] = (before, answer)
            mode = self.admission.mode_for(entry.workload.namespace)
            decision = policy.decide(
                entry.workload,
                inventory,
                answers,
                mode=mode,
                failure_policy=failure_policy,
                fallbacks=fallbacks,
                capacity=capacity,
                platform_taints=config.platforms.taints,
            )
            result = self._judged(key, entry, decision)
            summary.results.append(result)
            summary.judged += 1
            if result.result is kube.Result.FAIL:
                summary.incompatible += 1
                incompatible[key[0]] = incompatible.get(key[0], 0) + 1
            elif result.result is kube.Result.ERROR:
                summary.errors += 1
            self.metrics.audit_workloads.inc()
        if self.config.verify_images:
            await self._verify(seen)
        if not self._pods_explained:
            # Pods that failed or waited before archwarden started (or before this replica
            # became the leader) are explained once.
            self._pods_explained = True
            for pod in self.pods:
                self.pod_changed(None, pod)
        for image, (before, answer) in drifted.items():
            summary.drifted += self._drifted(image, before, answer)
        self._forget(keys)
        self.metrics.workloads_incompatible.clear()
        for kind, count in incompatible.items():
            self.metrics.workloads_incompatible.labels(kind).set(count)
        await self._write_reports(summary.results)
        self.metrics.audit_last_completed.set(self.clock())
        self.metrics.audit_duration.set(time.monotonic() - started)
        self.last = summary
        logger.info(
            "audit: %d workloads judged, %d incompatible, %d not inspected, %d not checked "
            "(pod template over limits.templateBytes), in %.1fs",
            summary.judged,
            summary.incompatible,
            summary.errors,
            summary.oversized,
            time.monotonic() - started,
        )
        return summary

    def _judged(
        self, key: workload_store.Key, entry: workload_store.Entry, decision: policy.Decision
    ) -> kube.PolicyResult:
        if decision.mismatch:
            outcome, message = kube.Result.FAIL, decision.message
            self._report(key, entry.ref, reasons.ARCHITECTURE_MISMATCH, PREFIX + message)
        elif decision.reason is policy.Reason.IMAGE_INSPECTION_FAILED:
            outcome, message = kube.Result.ERROR, decision.message
            self._reported.pop((key, reasons.ARCHITECTURE_MISMATCH), None)
        elif decision.warnings:
            outcome, message = kube.Result.WARN, decision.message or " ".join(decision.warnings)
            self._reported.pop((key, reasons.ARCHITECTURE_MISMATCH), None)
        else:
            outcome, message = kube.Result.PASS, decision.message or COMPATIBLE_MESSAGE
            self._reported.pop((key, reasons.ARCHITECTURE_MISMATCH), None)
        return _result(key, entry, outcome, message)

    def _not_checked(
        self, key: workload_store.Key, entry: workload_store.Entry
    ) -> kube.PolicyResult:
        """A workload kept without its template: listed, never judged. A mismatch posted about
        an earlier template is forgotten, as after a failed inspection."""
        self._reported.pop((key, reasons.ARCHITECTURE_MISMATCH), None)
        why = workload_store.oversized_message(entry.oversized, self.workloads.template_bytes)
        return _result(key, entry, kube.Result.ERROR, f"{why}; its images were not checked")

    def _report(
        self, key: workload_store.Key, ref: Mapping[str, Any], reason: str, message: str
    ) -> bool:
        """Post a Warning unless the same message was already posted for this workload."""
        if self._reported.get((key, reason)) == message:
            return False
        self._reported[key, reason] = message
        if self.poster is not None:
            self.poster.post(ref, "Warning", reason, message)
        return True

    def _forget(self, keys: set[workload_store.Key]) -> None:
        for gone in [k for k in self._reported if k[0] not in keys]:
            del self._reported[gone]

    async def _write_reports(self, results: list[kube.PolicyResult]) -> None:
        if self.reports is None:
            return
        try:
            if await self.reports.available():
                summary = await self.reports.sync(results)
                for error in summary.errors[:REPORT_ERRORS_LOGGED]:
                    logger.warning("audit: policy report not written: %s", error)
                if summary.failed:
                    counts = ", ".join(f"{n} ({why})" for why, n in sorted(summary.failed.items()))
                    logger.warning("audit: policy reports not written: %s", counts)
        except kube.ReportWriteError as exc:
            logger.warning("audit: policy reports not written: %s", exc)

    # -- tag drift ---------------------------------------------------------------------------

    async def check_drift(self) -> int:
        """Re-resolve mutable tags in use whose cached answer expired; report drift."""
        resolver = self.admission.resolver
        images = {
            image
            for _key, entry in self.workloads.items()
            for image in entry.workload.template.images
        }
        found = 0
        for image in sorted(images):
            try:
                ref = reference.parse(image)
            except reference.InvalidReference:
                continue
            if ref.digest or resolver.is_fresh(ref) or resolver.cached(ref) is None:
                continue  # digests never drift; unknown images are the audit's to resolve
            answer, before = await self._resolve(image, None)
            if before is not None:
                found += self._drifted(image, before, answer)
        return found

    def _drifted(
        self, image: str, before: registry.ImagePlatforms, answer: policy.ImageAnswer
    ) -> int:
        """Report a tag's new digest on the workloads that need a platform it lost."""
        if isinstance(answer, policy.ImageFailure):
            return 0
        lost_any = {p for p in before.platforms if p not in answer}
        if not lost_any:
            return 0
        inventory = self.nodes()
        fallbacks = self.admission.config.platforms.fallbacks()
        placed = self._placements()
        reported = 0
        for key, entry in self.workloads.items():
            if image not in entry.workload.template.images:
                continue
            needed = placed.get(key)
            if not needed:
                # No pod seen running: where the workload could be placed with the old answer.
                decision = policy.decide(
                    entry.workload,
                    inventory,
                    {image: before.platforms},
                    fallbacks=fallbacks,
                    platform_taints=self.admission.config.platforms.taints,
                )
                needed = {platforms.parse(p) for p in decision.node_platforms}
            lost = policy.lost_platforms(before.platforms, answer, needed, fallbacks)
            if not lost:
                continue
            message = policy.drift_message(image, before.platforms, answer, lost)
            if self._report(key, entry.ref, reasons.IMAGE_PLATFORMS_CHANGED, message):
                self.metrics.image_platforms_changed.inc()
                reported += 1
        return reported

    def _placements(self) -> dict[workload_store.Key, set[platforms.Platform]]:
        """Node platforms each workload's pods run on, from the pods' owners and nodes."""
        inventory = self.nodes()
        placed: dict[workload_store.Key, set[platforms.Platform]] = {}
        for pod in self.pods:
            node = inventory.get(pod.node) if pod.node else None
            key = self.workload_of(pod)
            if node is not None and key is not None and node.known:
                placed.setdefault(key, set()).add(node.platform)
        return placed

    def workload_of(self, pod: pod_store.Pod) -> workload_store.Key | None:
        """The kept workload a pod belongs to: its controller, or the controller's own
        (a Deployment's ReplicaSet ``<deployment>-<hash>``, a CronJob's Job
        ``<cronjob>-<time>``), when the store holds it."""
        if not pod.owner_kind:
            return None
        direct = (pod.owner_kind, pod.namespace, pod.owner_name)
        parent = {"ReplicaSet": "Deployment", "Job": "CronJob"}.get(pod.owner_kind)
        if parent is not None and "-" in pod.owner_name:
            key = (parent, pod.namespace, pod.owner_name.rsplit("-", 1)[0])
            if self.workloads.get(key) is not None:
                return key
        return direct if self.workloads.get(direct) is not None else None

    # -- images that lie ---------------------------------------------------------------------

    async def _verify(self, seen: Mapping[tuple[str, str], tuple[policy.ImageAnswer, Any]]) -> None:
        client = self.admission.resolver.client
        liars: dict[str, str] = {}
        for image, _identity in list(seen):
            held = self.admission.resolver.cached(image) if _parses(image) else None
            if held is None:
                continue
            checks = self._verified.get(held.digest)
            if checks is None:
                try:
                    with registry.paced(self.pacer):
                        verification = await client.verify(f"{held.reference.name}@{held.digest}")
                except registry.RegistryError as exc:
                    logger.debug("audit: %s not verified: %s", image, exc)
                    continue
                checks = self._verified[held.digest] = verification.mismatches
            if checks:
                liars[image] = "; ".join(
                    f"index entry {c.digest[:19]} says {c.declared.canonical} but its config says "
                    f"{c.actual.canonical}"
                    for c in checks
                )
        for key, entry in self.workloads.items():
            for image in entry.workload.template.images:
                if image in liars:
                    message = f"image {image} is mislabelled: {liars[image]}"
                    if self._report(key, entry.ref, reasons.IMAGE_PLATFORMS_MISLABELLED, message):
                        self.metrics.images_mislabelled.inc()

    # -- pods --------------------------------------------------------------------------------

    def pod_changed(self, old: pod_store.Pod | None, pod: pod_store.Pod) -> None:
        """A kept pod changed: explain new exec format errors and architecture pending."""
        before = {(p.container, p.message) for p in old.problems} if old else set()
        for problem in pod.problems:
            if (problem.container, problem.message) in before:
                continue
            finding = policy.exec_format_finding(problem.reason, problem.message)
            if finding is not None:
                self._exec_format_error(pod, problem, finding)
        if pod.unschedulable and (old is None or old.unschedulable != pod.unschedulable):
            self._explain_pending(pod)

    def _target(self, pod: pod_store.Pod) -> Mapping[str, Any]:
        key = self.workload_of(pod)
        entry = self.workloads.get(key) if key is not None else None
        return entry.ref if entry is not None else pod.ref

    def _exec_format_error(
        self,
        pod: pod_store.Pod,
        problem: pod_store.ContainerProblem,
        finding: policy.ExecFormatFinding,
    ) -> None:
        self.metrics.exec_format_errors.labels(finding.evidence.value).inc()
        held = self.admission.held_platforms(problem.image)
        if held is None and len(self._lookups) < MAX_PENDING_LOOKUPS:
            # Admitted without an answer (fail-open, audit mode, a registry that was down):
            # ask now, within the audit's budget, so the Event can name the image's platforms.
            task = asyncio.get_running_loop().create_task(self._explain_exec(pod, problem, finding))
            self._lookups.add(task)
            task.add_done_callback(self._lookups.discard)
            return
        self._post_exec(pod, problem, finding, held)

    async def _explain_exec(
        self,
        pod: pod_store.Pod,
        problem: pod_store.ContainerProblem,
        finding: policy.ExecFormatFinding,
    ) -> None:
        answer, _ = await self._resolve(problem.image, None)
        if isinstance(answer, policy.ImageFailure):
            logger.info(
                "audit: %s not resolved after an exec format error: %s", problem.image, answer.error
            )
            self._post_exec(pod, problem, finding, None, answer.error)
            return
        self._post_exec(pod, problem, finding, tuple(answer))

    def _post_exec(
        self,
        pod: pod_store.Pod,
        problem: pod_store.ContainerProblem,
        finding: policy.ExecFormatFinding,
        held: tuple[platforms.Platform, ...] | None,
        unknown_because: str | None = None,
    ) -> None:
        node = self.nodes().get(pod.node) if pod.node else None
        message = policy.exec_format_message(
            problem.container,
            problem.image,
            finding,
            held,
            pod.node or "(none)",
            node.platform if node is not None and node.known else None,
            unknown_because,
        )
        if self.poster is not None:
            self.poster.post(self._target(pod), "Warning", reasons.EXEC_FORMAT_ERROR, message)

    def _explain_pending(self, pod: pod_store.Pod) -> None:
        if not policy.arch_unschedulable(pod.unschedulable):
            return
        images: list[tuple[str, tuple[platforms.Platform, ...]]] = []
        for _container, image in pod.images:
            held = self.admission.held_platforms(image)
            if held is None:
                return  # not known: nothing to explain with
            if all(i != image for i, _ in images):
                images.append((image, held))
        # By class: a few dozen, however many nodes there are.
        node_platforms = {
            c.node.platform for c in self.nodes().classes() if c.node.known and c.node.ready
        }
        message = policy.pending_message(images, node_platforms, pod.pinned_arches)
        if message is None:
            return
        self.metrics.pending_explained.inc()
        if self.poster is not None:
            self.poster.post(pod.ref, "Warning", reasons.NO_NODE_FOR_ARCHITECTURE, message)


def _result(
    key: workload_store.Key, entry: workload_store.Entry, outcome: kube.Result, message: str
) -> kube.PolicyResult:
    meta = entry.ref.get("metadata") or {}
    return kube.PolicyResult(
        api_version=str(entry.ref.get("apiVersion") or ""),
        kind=key[0],
        name=key[2],
        namespace=key[1],
        uid=str(meta.get("uid") or ""),
        result=outcome,
        message=message,
    )


def _parses(image: str) -> bool:
    try:
        reference.parse(image)
    except reference.InvalidReference:
        return False
    return True


def _identity(
    client: registry.RegistryClient, image: str, creds: registry.CredentialStore | None
) -> str:
    try:
        ref = reference.parse(image)
    except reference.InvalidReference:
        return ""
    token = registry.RegistryClient.using(creds)
    try:
        return client.identity(ref)
    finally:
        registry.RegistryClient.restore(token)
