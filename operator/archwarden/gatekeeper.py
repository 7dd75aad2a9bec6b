"""Pods waiting on archwarden's scheduling gate, decided in the background.

A pod keeps the gate ``archwarden.io/platforms`` when the webhook could not decide it at
creation: the registry was slow or down, the pod had too many images, or no archwarden replica
answered at all (the chart's MutatingAdmissionPolicy gated it inside the API server). Every such
pod is seen here through the pod store (at start-up too: a restarted archwarden picks up every
pod gated while it was away), read whole, judged by the same review as the webhook's with a
longer budget, and then:

- decided and runnable: one patch adds the node affinity (narrowing only: the pod exists) and
  removes the gate; the scheduler takes it from there;
- no capacity can run it (or the failure policy is closed): the gate stays, with an Event on the
  pod; it is judged again when nodes or capacity change, and slowly otherwise;
- its images could not be read: the gate stays and the pod is tried again, backing off.

``archwarden_pods_gated{reason}`` counts what is held and why, and
``archwarden_gated_pod_oldest_seconds`` feeds the chart's alert on pods held too long.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from archwarden import admission, kube, metrics, pod_store, policy, reasons, settings

__all__ = ["GateKeeper"]

logger = logging.getLogger("archwarden")

PENDING = "Pending"
"""``archwarden_pods_gated`` reason of a pod not decided yet."""
TICK_SECONDS = 1.0
"""How often retries come due and the gauges are refreshed."""
RETRIES_PER_WORKER = 5
"""Retries started per tick and worker: 20 pod reads a second with the default 4 workers."""
MAX_BACKOFF = 5
"""A failing pod's retries back off to ``retrySeconds`` x this at most (10 s by default), so
the pods held while a registry was down are placed within seconds of its return."""
BUDGET_SECONDS = 20.0
"""Time for one gated pod's images: no API server waits on this answer, so the registries get
far longer than an admission's budget (still bounded: a hung registry must not hold a worker)."""
MISMATCH_RETRY_FACTOR = 30
"""A pod no capacity can run is judged again on every node or capacity change, and otherwise
every ``retrySeconds`` x this (a registry may have published the missing platform)."""

ReadFn = Callable[[str, str], Awaitable[Mapping[str, Any]]]
PatchFn = Callable[[str, str, Sequence[Mapping[str, Any]]], Awaitable[None]]
PostFn = Callable[[Mapping[str, Any], str, str, str], None]


@dataclasses.dataclass
class _Held:
    since: float
    """Monotonic time the pod was first seen gated (its creation, when known)."""
    reason: str = PENDING
    due: float = 0.0
    """Monotonic time of its next attempt; 0 while queued or being decided."""
    failures: int = 0


def _created(pod: pod_store.Pod, now_wall: float, now: float) -> float:
    """The pod's creation as a monotonic time (now, when unknown or in the future)."""
    try:
        stamp = dt.datetime.fromisoformat(pod.created.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return now
    return now - max(0.0, now_wall - stamp)


class GateKeeper:
    def __init__(
        self,
        review: admission.Admission,
        read: ReadFn,
        patch: PatchFn,
        post: PostFn,
        meters: metrics.Metrics,
        config: settings.SchedulingGateSettings,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.review = review
        self.read = read
        self.patch = patch
        self.post = post
        self.metrics = meters
        self.config = config
        self.clock = clock
        self.held: dict[pod_store.Key, _Held] = {}
        self._queue: asyncio.Queue[pod_store.Key] = asyncio.Queue()
        self._queued: set[pod_store.Key] = set()

    # -- what the pod store tells -------------------------------------------------------------

    def pod_changed(self, pod: pod_store.Pod) -> None:
        key = (pod.namespace, pod.name)
        if not pod.gated:
            self.held.pop(key, None)  # released (by us, a person, or another replica)
            return
        if key not in self.held:
            self.held[key] = _Held(since=_created(pod, time.time(), self.clock()))
            self._enqueue(key)

    def pod_deleted(self, namespace: str, name: str) -> None:
        self.held.pop((namespace, name), None)

    def capacity_changed(self) -> None:
        """Nodes or capacity changed: every pod held for want of capacity is judged again."""
        for key, held in self.held.items():
            if held.reason not in (PENDING, policy.Reason.IMAGE_INSPECTION_FAILED.value):
                self._enqueue(key)

    def _enqueue(self, key: pod_store.Key) -> None:
        if key in self._queued:
            return
        held = self.held.get(key)
        if held is not None:
            held.due = 0.0
        self._queued.add(key)
        self._queue.put_nowait(key)

    # -- the work -----------------------------------------------------------------------------

    async def run(self, ready: Callable[[], Awaitable[object]]) -> None:
        """Decide held pods once ``ready`` returns (nodes listed), with bounded concurrency."""
        await ready()
        workers = [asyncio.create_task(self._worker()) for _ in range(self.config.max_concurrent)]
        try:
            while True:
                self._tick()
                await asyncio.sleep(TICK_SECONDS)
        finally:
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)

    def _tick(self) -> None:
        now = self.clock()
        counts: dict[str, int] = {}
        oldest = 0.0
        # Retries come due together when a registry or the API server was away; each costs a
        # read of the pod from the API server, so at most this many start per tick.
        budget = self.config.max_concurrent * RETRIES_PER_WORKER
        for key, held in self.held.items():
            counts[held.reason] = counts.get(held.reason, 0) + 1
            oldest = max(oldest, now - held.since)
            if held.due and held.due <= now and budget > 0:
                budget -= 1
                self._enqueue(key)
        self.metrics.pods_gated.clear()
        for reason, count in counts.items():
            self.metrics.pods_gated.labels(reason).set(count)
        self.metrics.gated_oldest.set(oldest)

    async def _worker(self) -> None:
        while True:
            key = await self._queue.get()
            self._queued.discard(key)
            try:
                await self.decide(*key)
            except Exception:  # one pod's surprise must not stop the others
                logger.exception("deciding gated pod %s/%s", *key)
                self._retry(key, self.held.get(key))

    def _retry(self, key: pod_store.Key, held: _Held | None, factor: float = 1.0) -> None:
        if held is None:
            return
        held.failures += 1
        delay = self.config.retry_seconds * min(2 ** (held.failures - 1), MAX_BACKOFF) * factor
        held.due = self.clock() + delay

    async def decide(self, namespace: str, name: str) -> None:
        """Decide one held pod, and release or keep its gate."""
        key = (namespace, name)
        held = self.held.get(key)
        if held is None:
            return
        try:
            body = await self.read(namespace, name)
        except LookupError:
            self.held.pop(key, None)
            return
        except kube.ApiUnavailable as exc:
            logger.warning("gated pod %s/%s not read: %s", namespace, name, exc)
            self._retry(key, held)
            return
        if not policy.gated(body):
            self.held.pop(key, None)
            return
        outcome = await self.review.review(
            body,
            operation="CREATE",
            namespace=namespace,
            mutate=True,
            webhook="gate",
            budget=BUDGET_SECONDS,
            gated=True,
        )
        decision = outcome.decision
        unchecked = outcome.reason in admission.UNCHECKED
        if unchecked and self._closed(namespace):
            # The webhook would deny it (failure policy closed): nothing can be decided.
            outcome = dataclasses.replace(outcome, allowed=False)
        if not outcome.allowed:
            # No capacity can run it (enforce), or the failure policy is closed: the gate is
            # what keeps it from running where it cannot; say so on the pod.
            held.reason = outcome.reason or "Denied"
            message = (
                f"{outcome.message}; the pod stays gated ({policy.GATE}) until capacity that "
                "can run it appears (archwarden ungate releases it unchecked)"
            )
            self.post(body, "Warning", _event_reason(decision), message)
            self._retry(key, held, MISMATCH_RETRY_FACTOR)
            return
        if not outcome.decided and not unchecked:
            held.reason = policy.Reason.IMAGE_INSPECTION_FAILED.value
            if decision is not None and decision.message:
                self.post(body, "Warning", reasons.IMAGE_INSPECTION_FAILED, decision.message)
            self._retry(key, held)
            return
        operations: list[Mapping[str, Any]] = list(outcome.patch)
        if not outcome.releases_gate:
            # Past a review limit under an open failure policy: admitted undecided, as the
            # webhook would, so the review kept the gate; released here.
            operations.extend(policy.release_ops(body))
        try:
            await self.patch(namespace, name, operations)
        except kube.PatchConflict as exc:
            # Changed since it was read (another replica released it, a gate was added):
            # read it again soon.
            logger.info("gated pod %s/%s changed: %s", namespace, name, exc)
            self._retry(key, held, 0.1)
            return
        except kube.GateReleaseError as exc:
            logger.warning("%s", exc)
            self._retry(key, held)
            return
        self.held.pop(key, None)
        self.metrics.gates_released.labels("background").inc()
        for note in outcome.events:
            self.post(body, note.type, note.reason, note.message)
        if unchecked:
            # Released unchecked, as the webhook admits such a pod (failure policy open).
            self.post(body, "Warning", reasons.IMAGE_INSPECTION_FAILED, outcome.message)

    def _closed(self, namespace: str) -> bool:
        return (
            self.review.mode_for(namespace) is policy.Mode.ENFORCE
            and self.review.config.failure_policy == policy.FailurePolicy.CLOSED.value
        )


def _event_reason(decision: policy.Decision | None) -> str:
    """ArchitectureMismatch for a pod no capacity can run, else (closed failure policy, too
    many images) ImageInspectionFailed."""
    if decision is not None and decision.reason.is_mismatch:
        return reasons.ARCHITECTURE_MISMATCH
    return reasons.IMAGE_INSPECTION_FAILED
