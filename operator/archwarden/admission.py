"""One admission review, start to finish, without kopf: the handlers are thin glue over this.

Flow: scope (excluded namespaces, opt-out) -> what changed (UPDATE) -> extract the
pod template -> pull credentials -> resolve every image within the budget (stale answers
allowed) -> the policy decision -> a patch for pods -> Events and metrics for the caller.

Events are a record in the cluster that anyone reaching the webhook port could otherwise forge:
``may_report`` lets them be posted for a review from an authenticated API server, and for
others only about objects found in the cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import hashlib
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

import cachetools

from archwarden import metrics, platforms, policy, reasons, reference, registry, settings

__all__ = ["Admission", "EventNote", "Outcome"]

ANNOTATION_SKIP = "archwarden.io/skip"
# On a namespace: its workloads may use ANNOTATION_SKIP when skip.allowed is labelledNamespaces.
LABEL_ALLOW_SKIP = "archwarden.io/allow-skip"
LABEL_MODE = "archwarden.io/mode"

CredentialsFn = Callable[
    [str, Iterable[str], str], Awaitable[tuple[registry.CredentialStore, list[str]]]
]
HeldCredentialsFn = Callable[
    [str, Iterable[str], str], tuple[registry.CredentialStore, list[str]] | None
]
"""``credentials``' answer from its caches alone, or None when it must read something."""
ImageCredentialsFn = Callable[[reference.Reference, str, str], Awaitable[registry.Provided]]
"""Credentials the node would get for one image (kubelet credential providers), given the
pod's namespace and ServiceAccount: ``registry.CredentialProviders.for_image``."""
ExistsFn = Callable[[Mapping[str, Any]], Awaitable[bool]]

CREATE_SETTLE_SECONDS = 1.0
"""Wait before looking up an object admitted on CREATE: the API server stores it only after
every webhook answered."""


@dataclasses.dataclass(frozen=True)
class EventNote:
    """An Event the caller should post (unless the request is a dry run)."""

    type: str  # Normal | Warning
    reason: str
    message: str


Operation = policy.PatchOperation | policy.RemoveOperation | policy.TestOperation


@dataclasses.dataclass(frozen=True)
class Outcome:
    allowed: bool
    message: str = ""
    warnings: tuple[str, ...] = ()
    patch: tuple[Operation, ...] = ()
    events: tuple[EventNote, ...] = ()
    decision: policy.Decision | None = None
    label: str = "allowed"
    """For metrics: allowed, denied, warned, skipped."""
    reason: str = ""
    """For metrics, when denied: the decision's policy.Reason value, or one of ``UNCHECKED``."""
    authenticated: bool = False
    """The review came from a client the webhook server authenticated (webhook.clientCAFile)."""
    decided: bool = True
    """archwarden reached a decision (every image answered, or the answers already settled a
    denial); False when it admits without one (registry failures, too many images)."""

    @property
    def releases_gate(self) -> bool:
        """The patch removes archwarden's scheduling gate."""
        return any(op["op"] == "remove" for op in self.patch)


OPERATIONS = frozenset({"CREATE", "UPDATE", "DELETE", "CONNECT"})

_parse = functools.lru_cache(maxsize=4096)(reference.parse)
"""Image references recur in every review of a workload's pods; parsing is pure."""

TOO_MANY_IMAGES = "TooManyImages"
TEMPLATE_TOO_LARGE = "TemplateTooLarge"
UNCHECKED = frozenset({TOO_MANY_IMAGES, TEMPLATE_TOO_LARGE})
"""``Outcome.reason`` of a review decided by failure policy alone: nothing was resolved."""


def _mapping(value: object) -> Mapping[str, Any]:
    """``value`` if it is an object, else empty (JSON decodes to dicts: no ABC check for them)."""
    if type(value) is dict or isinstance(value, Mapping):
        return value
    return {}


def _metadata(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return _mapping(obj.get("metadata"))


class Admission:
    def __init__(
        self,
        config: settings.Settings,
        resolver: registry.Resolver,
        nodes: Callable[[], policy.Nodes],
        *,
        capacity: Callable[[], policy.Provisionable] = tuple,
        credentials: CredentialsFn | None = None,
        held_credentials: HeldCredentialsFn | None = None,
        image_credentials: ImageCredentialsFn | None = None,
        namespace_mode: Callable[[str], str | None] = lambda _ns: None,
        namespace_allows_skip: Callable[[str], bool] = lambda _ns: False,
        meters: metrics.Metrics | None = None,
        object_exists: ExistsFn | None = None,
    ) -> None:
        self.config = config  # the setter below derives what every review reads
        self.object_exists = object_exists
        self.create_settle = CREATE_SETTLE_SECONDS
        self.resolver = resolver
        self.nodes = nodes
        self.capacity = capacity
        self.credentials = credentials
        self.held_credentials = held_credentials
        self.image_credentials = image_credentials
        self.namespace_mode = namespace_mode
        self.namespace_allows_skip = namespace_allows_skip
        self.metrics = meters or metrics.Metrics()
        # Bounded by the clamped label values (webhook ids are the server's routes).
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}

    @property
    def config(self) -> settings.Settings:
        return self._config

    @config.setter
    def config(self, config: settings.Settings) -> None:
        # Built once per configuration, not once per review.
        self._config = config
        self._mode = policy.Mode(config.mode)
        self._failure_policy = policy.FailurePolicy(config.failure_policy)
        self._fallbacks = config.platforms.fallbacks()
        self._platform_taints = config.platforms.taints
        self._gate_mode = policy.GateMode(config.scheduling_gates.mode)
        held = getattr(self, "_decisions", None)
        if held is None or held.maxsize != config.limits.decision_cache_bytes:
            # A new bound starts an empty cache: entries are cheap to decide again.
            self._decisions: cachetools.LRUCache[_Key, policy.Decision] = cachetools.LRUCache(
                config.limits.decision_cache_bytes, getsizeof=_decision_bytes
            )

    def mode_for(self, namespace: str) -> policy.Mode:
        override = self.namespace_mode(namespace)
        if override in ("enforce", "warn", "audit"):
            return policy.Mode(override)
        return self._mode

    def skip_refusal(self, namespace: str) -> str | None:
        """Why ``archwarden.io/skip`` may not be used in ``namespace``; None when it may."""
        allowed = self.config.skip.allowed
        if allowed == "everyone" or (
            allowed == "labelledNamespaces" and self.namespace_allows_skip(namespace)
        ):
            return None
        return f"{ANNOTATION_SKIP} is not allowed here (skip.allowed: {allowed})"

    async def answers(
        self,
        images: Iterable[str],
        creds: registry.CredentialStore | None,
        *,
        settled: Callable[[Mapping[str, policy.ImageAnswer]], bool] | None = None,
        deadline: float | None = None,
        namespace: str = "",
        service_account: str = "",
    ) -> dict[str, policy.ImageAnswer]:
        """Platforms (or the failure) of every image, within the admission budget (by the
        event loop's clock, ``deadline`` when the review already spent part of it).

        At most ``limits.maxConcurrentResolutions`` images are resolved at once; once
        ``settled`` says the answers so far decide the outcome, the rest are cancelled.
        """
        images = list(dict.fromkeys(images))
        result: dict[str, policy.ImageAnswer] = {}
        # Answers already held need no task, no semaphore and no wait: most reviews are warm.
        for image in images:
            try:
                held = self.resolver.fresh(_parse(image))
            except reference.InvalidReference:
                continue  # answered below, with the reason
            if held is not None:
                result[image] = held.platforms
        if len(result) == len(images):
            return result
        budget = self.config.webhook.budget_seconds
        loop = asyncio.get_running_loop()
        if deadline is None:
            deadline = loop.time() + budget
        end = deadline
        slots = asyncio.Semaphore(self.config.limits.max_concurrent_resolutions)

        async def one(image: str) -> None:
            try:
                ref = _parse(image)
            except reference.InvalidReference as exc:
                result[image] = policy.ImageFailure(str(exc))
                return
            async with slots:
                provided, notes = await self._provided(ref, namespace, service_account, end)
                attempts = _attempts(creds, provided, ref)
                for last, store in enumerate(attempts, 1 - len(attempts)):
                    token = registry.RegistryClient.using(store)
                    try:
                        answer = await self.resolver.resolve(ref, allow_stale=True)
                    except (registry.AuthenticationFailed, registry.AccessDenied) as exc:
                        if last:
                            continue  # as the kubelet: the next credential is tried
                        result[image] = policy.ImageFailure(_noted(str(exc), notes))
                    except registry.RegistryError as exc:
                        result[image] = policy.ImageFailure(_noted(str(exc), notes))
                    else:
                        result[image] = answer.platforms
                    finally:
                        registry.RegistryClient.restore(token)
                    break

        pending = {asyncio.ensure_future(one(image)) for image in images if image not in result}
        decided = False
        while pending and not decided:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            _done, pending = await asyncio.wait(
                pending, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
            )
            # With nothing left outstanding there is nothing to cut short (a warm review).
            decided = bool(pending) and settled is not None and settled(result)
        for task in pending:
            # The shared lookup goes on while other admissions wait for it, and is cancelled
            # with its last waiter (a kubectl retry starts it again, bounded by its deadline).
            task.cancel()
        for image in images:
            if image in result:
                continue
            if decided:
                result[image] = policy.ImageFailure(
                    "not inspected: the outcome was already decided"
                )
                continue
            stale = self.held_platforms(image)
            result[image] = (
                stale
                if stale is not None
                else policy.ImageFailure(
                    f"image {image}: registry did not answer within {budget:g}s"
                )
            )
        return result

    async def _provided(
        self, ref: reference.Reference, namespace: str, account: str, deadline: float
    ) -> tuple[registry.Provided | None, list[str]]:
        """What the credential providers give for ``ref``, in at most half of what the review
        has left (the registry keeps the rest), and why some gave nothing."""
        if self.image_credentials is None:
            return None, []
        allowed = max(deadline - asyncio.get_running_loop().time(), 0.0) / 2
        try:
            async with asyncio.timeout(allowed):
                provided = await self.image_credentials(ref, namespace, account)
        except TimeoutError:
            return None, [f"credential providers gave no answer within {allowed:.3g}s"]
        return provided, provided.problems

    def held_platforms(self, image: str) -> tuple[platforms.Platform, ...] | None:
        """The cached platforms of ``image`` without any I/O, however old; None if unknown."""
        try:
            held = self.resolver.cached(image)
        except reference.InvalidReference:
            return None
        return held.platforms if held is not None else None

    async def review(
        self,
        obj: Mapping[str, Any],
        *,
        operation: str,
        old: Mapping[str, Any] | None = None,
        namespace: str = "",
        mutate: bool = False,
        webhook: str = "validate",
        authenticated: bool = False,
        budget: float | None = None,
        gated: bool = False,
    ) -> Outcome:
        """``authenticated``: the webhook server verified the caller's client certificate.

        ``budget``: seconds for the images (default ``webhook.budgetSeconds``; the background
        decision of gated pods has longer). ``gated``: the pod exists and waits on archwarden's
        gate, so its affinity may only be narrowed."""
        started = time.perf_counter()
        # Label values from the review are clamped: anyone reaching the port could otherwise
        # mint a series per made-up kind or operation.
        kind = str(obj.get("kind") or "")
        kind = kind if kind in policy.SPEC_PATHS else "other"
        operation_label = operation if operation in OPERATIONS else "other"
        try:
            outcome = await self._review(obj, operation, old, namespace, mutate, budget, gated)
        finally:
            self._child(self.metrics.admission_duration, webhook).observe(
                time.perf_counter() - started
            )
        self._child(
            self.metrics.admission_requests, webhook, kind, operation_label, outcome.label
        ).inc()
        if not outcome.allowed:
            self.metrics.admission_denials.labels(webhook, outcome.reason or "Unknown").inc()
        if authenticated == outcome.authenticated:
            return outcome
        return dataclasses.replace(outcome, authenticated=authenticated)

    def _child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, remembered: a label lookup costs more than the count."""
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    async def may_report(
        self,
        outcome: Outcome,
        target: Mapping[str, Any],
        *,
        operation: str,
        reviewed: bool,
        from_api: bool,
    ) -> bool:
        """Whether ``outcome.events`` may be posted about ``target``; dropped ones are counted.

        ``reviewed``: the target is the object under review; ``from_api``: it was read from
        the API server (a pod's Deployment through its ReplicaSet), not taken from the review.
        Runs in the background Event posting, never before the admission answer.
        """
        if outcome.authenticated or from_api:
            return True
        if reviewed and operation == "CREATE":
            if not outcome.allowed:
                # A denied CREATE is about an object that will never exist: nothing to check.
                return self._dropped(outcome)
            await asyncio.sleep(self.create_settle)
        if self.object_exists is not None and await self.object_exists(target):
            return True
        return self._dropped(outcome)

    def _dropped(self, outcome: Outcome) -> bool:
        self.metrics.events_dropped.labels("unverified_object").inc(len(outcome.events))
        return False

    async def _review(
        self,
        obj: Mapping[str, Any],
        operation: str,
        old: Mapping[str, Any] | None,
        namespace: str,
        mutate: bool,
        budget: float | None = None,
        gated: bool = False,
    ) -> Outcome:
        outcome = await self._judge(obj, operation, old, namespace, mutate, budget, gated)
        if not mutate or str(obj.get("kind") or "") != "Pod" or operation != "CREATE":
            return outcome
        return self._gate(obj, outcome)

    def _gate(self, pod: Mapping[str, Any], outcome: Outcome) -> Outcome:
        """The scheduling gate's part of a pod's patch: removed once decided, kept (or, with
        schedulingGates.mode webhook, added) while archwarden admits the pod undecided."""
        mode = self._gate_mode
        if mode is policy.GateMode.OFF or not outcome.allowed:
            return outcome
        if outcome.decided:
            ops: list[Operation] = list(policy.release_ops(pod))
        elif mode is policy.GateMode.WEBHOOK:
            ops = list(policy.hold_ops(pod))
        else:
            return outcome  # the policy's gate stays: the pod waits for the background decision
        if not ops:
            return outcome
        return dataclasses.replace(outcome, patch=(*outcome.patch, *ops))

    async def _judge(
        self,
        obj: Mapping[str, Any],
        operation: str,
        old: Mapping[str, Any] | None,
        namespace: str,
        mutate: bool,
        budget: float | None,
        gated: bool,
    ) -> Outcome:
        meta = _metadata(obj)
        namespace = namespace or str(meta.get("namespace") or "")
        annotations = _mapping(meta.get("annotations"))
        if operation not in ("CREATE", "UPDATE"):
            return Outcome(True, label="skipped")  # DELETE and CONNECT are never blocked
        if namespace in self.config.excluded_namespaces:
            return Outcome(True, label="skipped")
        wants_skip = str(annotations.get(ANNOTATION_SKIP, "")).lower() == "true"
        refused_skip = self.skip_refusal(namespace) if wants_skip else None
        if wants_skip and refused_skip is None:
            if not mutate:
                self.metrics.skipped.labels(str(obj.get("kind") or "")).inc()
            note = EventNote(
                "Normal",
                reasons.ARCHITECTURE_CHECK_SKIPPED,
                f'{ANNOTATION_SKIP}: "true" is set; archwarden did not check this workload',
            )
            return Outcome(True, events=(note,) if not mutate else (), label="skipped")
        if operation == "UPDATE" and old is not None and not policy.scheduling_changed(old, obj):
            return Outcome(True, label="unchanged")
        mode = self.mode_for(namespace)
        failure_policy = self._failure_policy
        size_limit = self.config.limits.template_bytes
        least = policy.least_projected_bytes(obj)
        if least > size_limit:
            # Refused before extraction, which alone would hold the event loop for a third
            # of a second for 35,000 tolerations (and dry runs of them cost a tenant nothing).
            what = (
                f"the pod template's scheduling fields take at least {least} bytes, more than "
                f"limits.templateBytes ({size_limit})"
            )
            return self._unchecked(TEMPLATE_TOO_LARGE, what, mode, failure_policy, mutate)
        try:
            workload = policy.extract(obj)
        except policy.InvalidWorkload as exc:
            # The API server's own validation rejects malformed objects with better context;
            # we only say why we could not check it.
            return Outcome(True, warnings=(f"archwarden: cannot read this object: {exc}",))

        distinct = len(workload.template.images)  # distinct already
        limit = self.config.limits.max_images_per_review
        if distinct > limit:
            what = (
                f"the pod has {distinct} distinct images, more than "
                f"limits.maxImagesPerReview ({limit})"
            )
            return self._unchecked(TOO_MANY_IMAGES, what, mode, failure_policy, mutate)
        size = workload.template.projected_bytes
        if size > size_limit:
            # Judged without holding it anywhere: a tenant decides how many tolerations or
            # terms a template has, and each would otherwise be kept in the decision cache.
            what = (
                f"the pod template's scheduling fields take {size} bytes, more than "
                f"limits.templateBytes ({size_limit})"
            )
            return self._unchecked(TEMPLATE_TOO_LARGE, what, mode, failure_policy, mutate)

        loop = asyncio.get_running_loop()
        if budget is None:
            budget = self.config.webhook.budget_seconds
        deadline = loop.time() + budget
        problems: list[str] = []
        creds: registry.CredentialStore | None = None
        held = (
            self.held_credentials(
                namespace, workload.template.image_pull_secrets, workload.template.service_account
            )
            if self.held_credentials is not None
            else None
        )
        if held is not None:
            creds, problems = held  # all cached: no timer, no await
        elif self.credentials is not None:
            # Inside the budget, and at most half of it, so registries keep time to answer: a
            # review past the API server's timeout is admitted unchecked.
            secrets_budget = budget / 2
            try:
                async with asyncio.timeout(secrets_budget):
                    creds, problems = await self.credentials(
                        namespace,
                        workload.template.image_pull_secrets,
                        workload.template.service_account,
                    )
            except TimeoutError:
                problems = [
                    f"pull secrets not read within {secrets_budget:g}s; "
                    "images resolved without them"
                ]
        nodes = self.nodes()
        capacity = self.capacity()
        fallbacks = self._fallbacks

        def settled(partial: Mapping[str, policy.ImageAnswer]) -> bool:
            # A DaemonSet's pods are judged with warn semantics below: never settled early.
            if workload.controller_kind == "DaemonSet":
                return False
            return policy.settled(
                workload,
                nodes,
                partial,
                mode=mode,
                failure_policy=failure_policy,
                fallbacks=fallbacks,
                capacity=capacity,
                platform_taints=self._platform_taints,
            )

        answers = await self.answers(
            workload.template.images,
            creds,
            settled=settled,
            deadline=deadline,
            namespace=namespace,
            service_account=workload.template.service_account,
        )
        decision = self._decide(workload, nodes, answers, mode, failure_policy, fallbacks, capacity)
        # A DaemonSet's own pods are pinned to one node each; denying one would make the
        # controller retry forever, so those are judged with warn semantics.
        if (
            not decision.allowed
            and workload.kind == "Pod"
            and workload.controller_kind == "DaemonSet"
        ):
            decision = policy.decide(
                workload,
                nodes,
                answers,
                mode=policy.Mode.WARN,
                failure_policy=failure_policy,
                fallbacks=fallbacks,
                capacity=capacity,
                platform_taints=self._platform_taints,
            )

        events: list[EventNote] = []
        if decision.mismatch:
            events.append(EventNote("Warning", reasons.ARCHITECTURE_MISMATCH, decision.message))
        if decision.reason is policy.Reason.PROVISIONABLE:
            # Not a mismatch: the pods wait for a node an autoscaler adds.
            events.append(EventNote("Normal", reasons.PROVISIONABLE_CAPACITY, decision.message))
        if decision.reason is policy.Reason.IMAGE_INSPECTION_FAILED:
            events.append(EventNote("Warning", reasons.IMAGE_INSPECTION_FAILED, decision.message))
            self.metrics.registry_failures.labels("allowed" if decision.allowed else "denied").inc()
        warnings = list(decision.warnings) + [f"archwarden: {p}" for p in problems]
        message = decision.message
        if refused_skip is not None:
            how = (
                f': label the namespace {LABEL_ALLOW_SKIP}="true" to allow it'
                if self.config.skip.allowed == "labelledNamespaces"
                else ""
            )
            warnings.append(f"archwarden: {refused_skip}; checked anyway{how}")
            if not decision.allowed:
                message += f"; {refused_skip}"

        patch: tuple[policy.PatchOperation, ...] = ()
        wanted = (
            self.config.mutate if workload.kind == "Pod" else self.config.mutate_workload_templates
        )
        if mutate and decision.allowed and wanted:
            preferences = self.config.preferred_architectures
            patch = tuple(
                policy.pod_patch(obj, decision, preferences=preferences, narrow_only=gated)
                if workload.kind == "Pod"
                else policy.template_patch(obj, decision, preferences=preferences)
            )
            if any(
                op["path"].endswith("/affinity") or "nodeAffinity" in op["path"] for op in patch
            ):
                events.append(
                    EventNote("Normal", reasons.NODE_AFFINITY_INJECTED, _constrained(decision))
                )
            added = _added_tolerations(patch)
            if added:
                # Its own Event: a toleration lets the pod onto nodes it stayed off before, which
                # whoever reads the pod's Events should find apart from a narrowing.
                events.append(EventNote("Normal", reasons.TOLERATION_INJECTED, _tolerated(added)))
        if mutate:
            # The validating webhook reports mismatches; the mutating one only its own patches.
            events = [e for e in events if e.reason in _PATCH_EVENTS]
            warnings = []
        if not decision.allowed:
            label = "denied"
        elif decision.warnings or refused_skip is not None:
            label = "warned"
        else:
            label = "allowed"
        return Outcome(
            allowed=decision.allowed,
            message=message,
            warnings=tuple(warnings),
            patch=patch,
            events=tuple(events),
            decision=decision,
            label=label,
            reason=decision.reason.value,
            decided=decision.reason is not policy.Reason.IMAGE_INSPECTION_FAILED,
        )

    def _decide(
        self,
        workload: policy.Workload,
        nodes: policy.Nodes,
        answers: Mapping[str, policy.ImageAnswer],
        mode: policy.Mode,
        failure_policy: policy.FailurePolicy,
        fallbacks: platforms.Fallbacks,
        capacity: Sequence[policy.ProvisionableClass],
    ) -> policy.Decision:
        """``policy.decide``, remembered: a Deployment's pods, a rollout's retries and kubectl's
        re-applies ask the same question again and again. A decision reads the pod template,
        the image answers, the settings and the inventory; the inventory's generation stands
        for the last (it changes with anything a decision reads), so a hit is exact.

        What a tenant wrote enters the key only as a digest: dry runs cost nothing to send and
        are never stored, so a key holding the template would let them fill memory. The
        cache is bounded by the bytes its decisions hold (``limits.decisionCacheBytes``)."""
        generation = getattr(nodes, "generation", None)
        key = None
        if generation is not None:
            written = hashlib.sha256(workload.template.digest)
            written.update(repr((workload.kind, workload.controller_kind)).encode())
            written.update(repr(tuple(answers.items())).encode())
            # Settings and capacity are the cluster's, shared by every entry: kept as they are.
            key = _Key(
                (
                    written.digest(),
                    mode,
                    failure_policy,
                    fallbacks,
                    self._platform_taints,
                    tuple(capacity),
                    generation,
                )
            )
            held = self._decisions.get(key)
            if held is not None:
                self._child(self.metrics.decision_cache, "hit").inc()
                return held
        decision = policy.decide(
            workload,
            nodes,
            answers,
            mode=mode,
            failure_policy=failure_policy,
            fallbacks=fallbacks,
            capacity=capacity,
            platform_taints=self._platform_taints,
        )
        if key is not None:
            self._child(self.metrics.decision_cache, "miss").inc()
            with contextlib.suppress(ValueError):  # larger than the whole cache: not kept
                self._decisions[key] = decision
            self.metrics.decision_cache_bytes.set(self._decisions.currsize)
        return decision

    def _unchecked(
        self,
        reason: str,
        what: str,
        mode: policy.Mode,
        failure_policy: policy.FailurePolicy,
        mutate: bool,
    ) -> Outcome:
        """A review past a limit: decided by failure policy, nothing resolved, nothing kept."""
        if not mutate:  # each request is reviewed by both webhooks: counted once
            self._child(self.metrics.unchecked, reason).inc()
        return _unchecked(reason, what, mode, failure_policy, mutate)


def _attempts(
    pod: registry.CredentialStore | None,
    provided: registry.Provided | None,
    ref: reference.Reference,
) -> list[registry.CredentialStore | None]:
    """The stores to try, in the kubelet's order: the pod's pull secrets first, then what the
    credential providers gave (each only when it holds a credential for ``ref``'s host)."""
    node = provided.store if provided is not None else None
    if node is None or node.lookup(ref.domain) is None:
        return [pod]
    if pod is None or pod.lookup(ref.domain) is None:
        return [node if pod is None else pod.merged(node)]
    if pod.lookup(ref.domain) == node.lookup(ref.domain):
        return [pod]
    return [pod, pod.merged(node)]


def _noted(error: str, notes: list[str]) -> str:
    """A failure with why the node's credentials were missing, when some were."""
    return "; ".join([error, *notes[:3]])


class _Key:
    """A decision cache key hashed once. The LRU cache hashes a key three times per lookup
    (contains, get, move to end), and this one holds dataclasses (settings, capacity) whose
    hashes are computed in Python every time."""

    __slots__ = ("_hash", "parts")

    def __init__(self, parts: tuple[Any, ...]) -> None:
        self.parts = parts
        self._hash = hash(parts)

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Key) and self.parts == other.parts


_ITEM_BYTES = 64
"""What one object or reference a decision holds is counted as, beside its strings."""


def _decision_bytes(decision: policy.Decision) -> int:
    """What a remembered decision costs, counted as its strings plus ``_ITEM_BYTES`` an item
    (the key: a digest and references to shared settings, counted as one more item a
    capacity entry). Node classes are the inventory's, shared, and counted as references."""
    strings = [decision.message, *decision.warnings, *decision.pod_platforms]
    strings += [*decision.node_platforms, *decision.provisionable_platforms]
    strings += [*decision.provisionable_sources]
    strings += [t.value for t in decision.tolerations]
    strings += [text for pair in decision.inspection_errors for text in pair]
    total = 8 * _ITEM_BYTES + sum(_ITEM_BYTES + len(text) for text in strings)
    total += 8 * (len(decision.compatible_classes) + len(decision.incompatible_classes))
    if decision.placement is not None:
        total += len(repr(decision.placement))
    return total


_PATCH_EVENTS = frozenset({reasons.NODE_AFFINITY_INJECTED, reasons.TOLERATION_INJECTED})


def _added_tolerations(patch: Sequence[policy.PatchOperation]) -> list[Mapping[str, Any]]:
    """The tolerations ``patch`` adds (a new list, or items appended to one)."""
    added: list[Mapping[str, Any]] = []
    for op in patch:
        if op["path"].endswith("/tolerations"):
            added.extend(op["value"])
        elif op["path"].endswith("/tolerations/-"):
            added.append(op["value"])
    return added


def _tolerated(added: Sequence[Mapping[str, Any]]) -> str:
    """The TolerationInjected message: ``tolerations added for the taints
    kubernetes.io/arch=arm64:NoSchedule (every image runs on that architecture)``."""
    taints = [f"{t['key']}={t['value']}:{t['effect']}" for t in added]
    return (
        f"tolerations added for the taint{'s' if len(taints) > 1 else ''} {', '.join(taints)}"
        " (every image runs on the tainted nodes' architecture)"
    )


def _constrained(decision: policy.Decision) -> str:
    """The NodeAffinityInjected message: existing nodes apart from what autoscalers can add."""
    if not decision.provisionable_platforms:
        return "pods constrained to nodes of " + ", ".join(
            decision.node_platforms or decision.pod_platforms
        )
    parts = []
    if decision.node_platforms:
        parts.append(f"existing nodes of {', '.join(decision.node_platforms)}")
    parts.append(
        f"nodes of {', '.join(decision.provisionable_platforms)} that "
        f"{_and(decision.provisionable_sources)} can provision"
    )
    return "pods constrained to " + " and ".join(parts)


def _and(items: tuple[str, ...]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _unchecked(
    reason: str,
    what: str,
    mode: policy.Mode,
    failure_policy: policy.FailurePolicy,
    mutate: bool,
) -> Outcome:
    """Decided by failure policy alone (``reason`` in ``UNCHECKED``); ``what`` says which
    limit the request passed."""
    denied = mode is policy.Mode.ENFORCE and failure_policy is policy.FailurePolicy.CLOSED
    message = f"{what}; " + (
        "images were not checked (failure policy closed)"
        if denied
        else "admitted without a platform check"
    )
    if mutate:
        # The validating webhook reports it; a gated pod keeps waiting (decided=False), and
        # the background decision reads the reason and message.
        return Outcome(True, message=message, label="allowed", reason=reason, decided=False)
    warnings = (message,) if not denied and mode is not policy.Mode.AUDIT else ()
    return Outcome(
        allowed=not denied,
        message=message,
        warnings=warnings,
        events=(EventNote("Warning", reasons.IMAGE_INSPECTION_FAILED, message),),
        label="denied" if denied else ("warned" if warnings else "allowed"),
        reason=reason,
        decided=False,
    )
