"""kopf glue: indexes, admission handlers, watchers. Decisions live in ``admission``/``policy``.

Handler ids are the webhook URL paths (and the chart's webhook names), so they are stable API.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Coroutine, Mapping
from pathlib import Path
from typing import Any

import jsonpatch
import kopf

from archwarden import (
    admission,
    kube,
    metrics,
    policy,
    registry,
    serving,
    settings,
    webhook_server,
)

__all__ = ["WORKLOAD_RESOURCES", "Runtime"]

logger = logging.getLogger("archwarden")

WORKLOAD_RESOURCES = {
    "validate-deployments": ("apps", "v1", "deployments"),
    "validate-statefulsets": ("apps", "v1", "statefulsets"),
    "validate-daemonsets": ("apps", "v1", "daemonsets"),
    "validate-replicasets": ("apps", "v1", "replicasets"),
    "validate-jobs": ("batch", "v1", "jobs"),
    "validate-cronjobs": ("batch", "v1", "cronjobs"),
}
KIND_PLURALS = {
    "Deployment": ("apps/v1", "deployments"),
    "StatefulSet": ("apps/v1", "statefulsets"),
    "DaemonSet": ("apps/v1", "daemonsets"),
    "ReplicaSet": ("apps/v1", "replicasets"),
    "Job": ("batch/v1", "jobs"),
    "CronJob": ("batch/v1", "cronjobs"),
}
REEVALUATE_DELAY = 1.0
"""Seconds to let a burst of node changes settle before re-evaluating workloads."""
NODE_SOURCE = "node"
"""``archwarden_capacity_classes{source}`` of existing nodes' classes."""


@dataclasses.dataclass
class Runtime:
    """Everything the handlers share, built by ``archwarden run`` before kopf starts."""

    config: settings.Settings
    dev: bool = False
    dev_dir: Path = Path(".archwarden-dev")
    dev_name: str = "archwarden.io"
    kubeconfig: str | None = None
    metrics: metrics.Metrics = dataclasses.field(default_factory=metrics.Metrics)
    ready: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    events: kube.EventDeduper = dataclasses.field(default_factory=kube.EventDeduper)
    node_index: Mapping[Any, Any] | None = None
    """kopf's live index over Nodes (key: node name, values: policy.Node), captured from the
    first handler call; kopf fills every index before it runs any handler."""
    nodes: policy.Inventory = dataclasses.field(default_factory=policy.Inventory)
    """What decisions read, kept one node event at a time (see ``node_changed``)."""
    capacity: policy.Capacity = dataclasses.field(default_factory=policy.Capacity)
    """What autoscalers can add, by source (see ``watch_capacity``)."""
    capacity_sources: tuple[kube.CapacityResource, ...] = ()
    """The capacity kinds watched (their CRDs exist and archwarden may list them)."""
    capacity_indexes: dict[str, Mapping[Any, Any]] = dataclasses.field(default_factory=dict)
    """kopf's indexes over those kinds, by index name, captured like ``node_index``."""
    namespace_modes: dict[str, str] = dataclasses.field(default_factory=dict)
    skip_namespaces: set[str] = dataclasses.field(default_factory=set)
    """Namespaces labelled archwarden.io/allow-skip=true (skip.allowed: labelledNamespaces)."""
    platform_set: frozenset[str] | None = None
    admission: admission.Admission | None = None
    reader: kube.ApiReader | None = None
    poster: kube.EventPoster | None = None
    client: registry.RegistryClient | None = None
    health: serving.HealthServer | None = None
    reevaluation: asyncio.Task[None] | None = None
    reevaluation_dirty: bool = False
    background: set[asyncio.Task[None]] = dataclasses.field(default_factory=set)

    def inventory(self) -> policy.Inventory:
        return self.nodes

    def provisionable(self) -> tuple[policy.ProvisionableClass, ...]:
        return self.capacity.classes()

    @property
    def counts_capacity(self) -> bool:
        """Whether any provisionable capacity source is configured or watched."""
        return bool(self.capacity_sources or self.config.capacity.node_groups)

    def catch_up(self) -> None:
        """Take every node kopf's index holds (once, at readiness): kopf fills its indexes
        before any handler runs, but the node events themselves may still be queued."""
        index = self.node_index
        if index is None:
            return
        for name in list(index):
            node = next(iter(index.get(name, ())), None)
            if node is not None:
                self.note_node(name, node)
        for capacity_index in self.capacity_indexes.values():
            for source in list(capacity_index):
                self.note_capacity(source, next(iter(capacity_index.get(source, ())), None))

    def note_node(self, name: str, node: policy.Node | None) -> bool:
        """Record a node's current value; whether anything a decision reads changed. O(1)."""
        change = self.nodes.apply(name, node)
        if change is None:
            return False
        # Only the (os, arch) series the old and new values fall in can have moved.
        for value in change:
            if value is not None:
                key = policy.metric_key(value)
                count = self.nodes.count(key)
                if count:
                    self.metrics.nodes.labels(*key).set(count)
                else:
                    self.metrics.nodes.remove(*key)
                classes = self.nodes.class_count(key)
                if classes:
                    self.metrics.capacity_classes.labels(NODE_SOURCE, *key).set(classes)
                else:
                    self.metrics.capacity_classes.remove(NODE_SOURCE, *key)
        return True

    def note_capacity(self, source: policy.Source, value: policy.ProvisionableClass | None) -> bool:
        """Record what a source can provision now (None: nothing); whether that changed."""
        if not self.capacity.apply(source, value):
            return False
        self._count_capacity()
        return True

    def set_static_capacity(self, values: list[policy.ProvisionableClass]) -> None:
        if self.capacity.replace("nodeGroup", values):
            self._count_capacity()

    def _count_capacity(self) -> None:
        # A few dozen pools at most: recounting them all is cheaper than bookkeeping.
        counts = self.capacity.counts()
        gauge = self.metrics.capacity_classes
        for sample in [s for metric in gauge.collect() for s in metric.samples]:
            labels = sample.labels
            key = (labels["source"], labels["os"], labels["arch"])
            if labels["source"] != NODE_SOURCE and key not in counts:
                gauge.remove(*key)
        for key, count in counts.items():
            gauge.labels(*key).set(count)

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Work that must not delay an admission answer (Events and their owner lookups)."""
        task = asyncio.get_running_loop().create_task(coro)
        self.background.add(task)
        task.add_done_callback(self.background.discard)


def _runtime(memo: Any) -> Runtime:
    runtime = memo.get("runtime") if isinstance(memo, Mapping) else getattr(memo, "runtime", None)
    if not isinstance(runtime, Runtime):
        raise RuntimeError("archwarden handlers need a Runtime in kopf's memo")
    return runtime


# -- startup and cleanup --------------------------------------------------------------------------


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: Any, **_: Any) -> None:
    rt = _runtime(memo)
    config = rt.config
    # Events are ours alone (kube.EventPoster): kopf's per-handler Events would be noise, and
    # its posting queue is not available to admission handlers anyway.
    settings.posting.enabled = False
    settings.persistence.finalizer = "archwarden.io/finalizer"
    settings.watching.server_timeout = 300
    if rt.dev:
        # Imported here: certs needs cryptography, an optional extra ([dev]) the image lacks.
        from archwarden import certs

        files = certs.write_dev_certificates(rt.dev_dir)
        settings.admission.server = webhook_server.WebhookServer(
            meters=rt.metrics,
            addr="127.0.0.1",
            port=config.webhook.port,
            host="127.0.0.1",
            certfile=str(files.cert_file),
            pkeyfile=str(files.key_file),
            cafile=str(files.ca_file),
            client_ca_file=config.webhook.client_ca_file,
            client_names=config.webhook.client_names,
            file_check_interval=config.webhook.reload_seconds,
        )
        settings.admission.managed = rt.dev_name
    else:
        if not (config.webhook.cert_file and config.webhook.key_file):
            raise kopf.PermanentError(
                "webhook.certFile and webhook.keyFile are required (or --dev)"
            )
        settings.admission.server = webhook_server.WebhookServer(
            meters=rt.metrics,
            addr=config.webhook.address,
            port=config.webhook.port,
            certfile=config.webhook.cert_file,
            pkeyfile=config.webhook.key_file,
            client_ca_file=config.webhook.client_ca_file,
            client_names=config.webhook.client_names,
            file_check_interval=config.webhook.reload_seconds,
        )
    api_client = kube.load_api_client(rt.kubeconfig)
    rt.reader = kube.ApiReader(api_client)
    rt.poster = kube.EventPoster(api_client, rt.events)
    client_settings = config.client_settings()

    def observe_registry(host: str, code: str, seconds: float) -> None:
        rt.metrics.observe_registry(client_settings.metric_label(host), code, seconds)

    rt.client = registry.RegistryClient(client_settings, observer=observe_registry)
    resolver = registry.Resolver(rt.client, config.cache, observer=rt.metrics.observe_lookup)
    secrets = kube.PullSecrets(rt.reader, config.global_pull_secret)
    # Asked only for reviews from unauthenticated callers (no webhook.clientCAFile).
    objects = kube.ObjectChecker(rt.reader)
    rt.admission = admission.Admission(
        config,
        resolver,
        rt.inventory,
        capacity=rt.provisionable,
        credentials=secrets.for_pod,
        namespace_mode=rt.namespace_modes.get,
        namespace_allows_skip=rt.skip_namespaces.__contains__,
        meters=rt.metrics,
        object_exists=objects.exists,
    )
    rt.set_static_capacity(kube.static_capacity(config.capacity))
    rt.health = serving.HealthServer(rt.metrics, rt.ready)
    await rt.health.start(config.metrics.address, config.metrics.port)
    logger.info(
        "archwarden ready to serve: webhook port %d, metrics port %d, mode %s",
        config.webhook.port,
        config.metrics.port,
        config.mode,
    )


@kopf.on.cleanup()
async def cleanup(memo: Any, **_: Any) -> None:
    rt = _runtime(memo)
    if rt.health is not None:
        await rt.health.stop()
    if rt.client is not None:
        await rt.client.aclose()


# -- inventory ------------------------------------------------------------------------------------


@kopf.index("nodes")
def node_index(name: str, body: Mapping[str, Any], **_: Any) -> dict[str, policy.Node] | None:
    """Per node only what decisions read (os, arch, build, labels, taints, Ready, cordoned)."""
    try:
        return {name: policy.node_from_object(body)}
    except policy.InvalidNode as exc:
        logger.warning("node %s ignored: %s", name, exc)
        return None


@kopf.on.event("nodes")
async def node_changed(name: str, memo: Any, **kw: Any) -> None:
    """Notice changes that matter: metrics, platform set, and workloads left stranded."""
    rt = _runtime(memo)
    node_index: Mapping[Any, Any] = kw["node_index"]  # indexes arrive as kwargs by name
    rt.node_index = node_index
    current = next(iter(node_index.get(name, ())), None)
    if not rt.note_node(name, current):
        return  # heartbeats and status noise: nothing a decision depends on changed
    platforms = rt.nodes.ready_platforms()
    if platforms != rt.platform_set and rt.platform_set is not None:
        logger.info("node platforms now: %s", ", ".join(sorted(platforms)))
    rt.platform_set = platforms
    # Any change to what decisions read (a node gone, relabelled, tainted, NotReady) can
    # strand workloads even when the cluster-wide platform set stays the same: a pool can
    # lose its only arm64 node while other pools keep theirs.
    _schedule_reevaluation(rt)


@kopf.on.event("namespaces")
async def namespace_changed(
    event: Mapping[str, Any], name: str, labels: Mapping[str, str], memo: Any, **kw: Any
) -> None:
    rt = _runtime(memo)
    rt.node_index = kw["node_index"]
    for resource in rt.capacity_sources:
        rt.capacity_indexes[resource.index] = kw[resource.index]
    mode = labels.get(admission.LABEL_MODE)
    if event.get("type") == "DELETED" or not mode:
        rt.namespace_modes.pop(name, None)
    else:
        rt.namespace_modes[name] = mode
    if event.get("type") != "DELETED" and labels.get(admission.LABEL_ALLOW_SKIP) == "true":
        rt.skip_namespaces.add(name)
    else:
        rt.skip_namespaces.discard(name)
    # kopf runs no handler before every index is filled from its initial listing, so the
    # first namespace event (there is always a namespace, even with no nodes) means the node
    # inventory is as complete as the cluster's.
    if not rt.ready.is_set():
        rt.catch_up()
    rt.ready.set()


def _schedule_reevaluation(rt: Runtime) -> None:
    # Coalesce bursts: one run covers every change made before it starts reading; a change
    # arriving during a run marks it dirty, and the run goes round once more.
    rt.reevaluation_dirty = True
    if rt.reevaluation is None or rt.reevaluation.done():
        rt.reevaluation = asyncio.create_task(_reevaluate_until_clean(rt))


async def _reevaluate_until_clean(rt: Runtime) -> None:
    while rt.reevaluation_dirty:
        await asyncio.sleep(REEVALUATE_DELAY)
        rt.reevaluation_dirty = False
        await _reevaluate(rt)


async def _reevaluate(rt: Runtime) -> None:
    """After inventory changes: which workloads have no node left that can run them?"""
    if rt.reader is None or rt.admission is None:
        return
    workloads: dict[tuple[str, str, str], policy.Workload] = {}
    bodies: dict[tuple[str, str, str], Mapping[str, Any]] = {}
    for kind, (api_version, plural) in KIND_PLURALS.items():
        try:
            items = await rt.reader.list(api_version, plural)
        except Exception as exc:  # the API may be briefly unavailable; next change retries
            logger.warning("re-evaluation skipped %s: %s", plural, exc)
            continue
        for item in items:
            meta = item.get("metadata") or {}
            namespace = str(meta.get("namespace") or "")
            if namespace in rt.config.excluded_namespaces or any(
                ref.get("controller") for ref in meta.get("ownerReferences") or []
            ):
                continue  # owned objects (a Deployment's ReplicaSets) are judged via the owner
            try:
                workload = policy.extract({**item, "kind": kind})
            except policy.InvalidWorkload:
                continue
            key = (kind, namespace, str(meta.get("name") or ""))
            workloads[key] = workload
            bodies[key] = {**item, "kind": kind, "apiVersion": api_version}
    answers: dict[str, policy.ImageAnswer] = {}
    for workload in workloads.values():
        for image in workload.template.images:
            held = rt.admission.held_platforms(image)
            if held is not None:
                answers[image] = held
    left = policy.stranded(
        workloads,
        rt.inventory(),
        answers,
        fallbacks=rt.config.platforms.fallbacks(),
        capacity=rt.provisionable(),
    )
    lead = (
        "no node left, nor capacity an autoscaler can add, can run this workload: "
        if rt.counts_capacity
        else "no node left can run this workload: "
    )
    rt.metrics.workloads_unschedulable.clear()
    per_kind: dict[str, int] = {}
    for key, decision in left.items():
        per_kind[key[0]] = per_kind.get(key[0], 0) + 1
        message = lead + decision.message
        if rt.poster is not None:
            rt.poster.post(bodies[key], "Warning", "ArchitectureUnavailable", message)
    for kind, count in per_kind.items():
        rt.metrics.workloads_unschedulable.labels(kind).set(count)


# -- provisionable capacity ----------------------------------------------------------------------


def watch_capacity(rt: Runtime, resources: list[kube.CapacityResource]) -> None:
    """Index and watch the capacity kinds the cluster serves (``kube.available_sources``).

    Called before kopf starts, so a kind without its CRD (or without RBAC) is never watched.
    Indexes, like the nodes', are filled before any handler runs: readiness waits for the
    capacity the cluster has.
    """
    rt.capacity_sources = tuple(resources)
    for resource in resources:
        _register_capacity(resource)
        logger.info("provisionable capacity: watching %ss", resource.kind)


def capacity_entry(
    rt: Runtime, resource: kube.CapacityResource, body: Mapping[str, Any]
) -> dict[policy.Source, policy.ProvisionableClass | None]:
    """The index entry of one capacity object: what it lets autoscalers add (None: nothing,
    or an object that cannot be read, logged once per change)."""
    source = kube.source_of(resource, body)
    try:
        value = kube.capacity_from_object(resource, body, rt.config.capacity)
    except policy.InvalidCapacity as exc:
        logger.warning("%s ignored: %s", source, exc)
        value = None
    return {source: value}


def capacity_changed(
    rt: Runtime,
    resource: kube.CapacityResource,
    body: Mapping[str, Any],
    held: Mapping[Any, Any],
) -> None:
    """What a source can provision changed: a pool deleted or narrowed can strand workloads,
    exactly as a node going away can, so the same re-evaluation follows."""
    rt.capacity_indexes[resource.index] = held
    source = kube.source_of(resource, body)
    if rt.note_capacity(source, next(iter(held.get(source, ())), None)):
        logger.info("provisionable capacity changed: %s", source)
        _schedule_reevaluation(rt)


def _register_capacity(resource: kube.CapacityResource) -> None:
    @kopf.index(resource.group, resource.version, resource.plural, id=resource.index)
    def index(
        body: Mapping[str, Any], memo: Any, **_: Any
    ) -> dict[policy.Source, policy.ProvisionableClass | None]:
        return capacity_entry(_runtime(memo), resource, body)

    @kopf.on.event(
        resource.group, resource.version, resource.plural, id=f"capacity-{resource.plural}"
    )
    async def changed(body: Mapping[str, Any], memo: Any, **kw: Any) -> None:
        capacity_changed(_runtime(memo), resource, body, kw[resource.index])


# -- admission ------------------------------------------------------------------------------------


def _reference_body(ref: Mapping[str, Any], namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": ref.get("apiVersion"),
        "kind": ref.get("kind"),
        "metadata": {"name": ref.get("name"), "namespace": namespace, "uid": ref.get("uid")},
    }


async def _event_target(
    rt: Runtime, body: Mapping[str, Any]
) -> tuple[Mapping[str, Any] | None, bool]:
    """Pods made by controllers report on the workload the user wrote: a Deployment's pods
    on the Deployment (through its ReplicaSet), a CronJob's on the CronJob.

    Also says whether the target was read from the API server (the ReplicaSet's or Job's
    controller) rather than taken from the review, which anyone could have written.
    """
    meta = body.get("metadata") or {}
    namespace = str(meta.get("namespace") or "")
    owner = next((r for r in meta.get("ownerReferences") or [] if r.get("controller")), None)
    if owner is None:
        return (body if meta.get("name") else None), False
    target = _reference_body(owner, namespace)
    if rt.reader is not None and owner.get("kind") in ("ReplicaSet", "Job"):
        try:
            top = await rt.reader.controller_of(str(owner["kind"]), namespace, str(owner["name"]))
        except Exception as exc:  # the owner itself is enough when the read fails
            logger.debug("owner lookup failed: %s", exc)
            top = None
        if top is not None:
            return _reference_body(top, namespace), True
    return target, False


async def _post_events(
    rt: Runtime,
    body: Mapping[str, Any],
    outcome: admission.Outcome,
    dryrun: bool,
    operation: str,
) -> None:
    if dryrun or not outcome.events or rt.poster is None or rt.admission is None:
        return
    target, from_api = await _event_target(rt, body)
    if target is None:
        return
    if not await rt.admission.may_report(
        outcome, target, operation=operation, reviewed=target is body, from_api=from_api
    ):
        return
    for note in outcome.events:
        rt.poster.post(target, note.type, note.reason, note.message)


async def _validate(webhook: str, kw: Mapping[str, Any]) -> None:
    rt = _runtime(kw["memo"])
    assert rt.admission is not None
    body, old = kw["body"], kw.get("old")
    operation = str(kw.get("operation") or "")
    outcome = await rt.admission.review(
        dict(body),
        operation=operation,
        old=dict(old) if old else None,
        webhook=webhook,
        authenticated=webhook_server.authenticated(kw.get("sslpeer")),
    )
    kw["warnings"].extend(outcome.warnings)
    rt.spawn(_post_events(rt, body, outcome, bool(kw.get("dryrun")), operation))
    if not outcome.allowed:
        raise kopf.AdmissionError(outcome.message, code=403)


def _register_validation(
    handler_id: str, group: str, version: str, plural: str, subresource: str | None = None
) -> None:
    # ignore_failures: with --dev the managed configuration uses failurePolicy Ignore, so a
    # stopped archwarden never locks a developer's cluster. Registry failures are decided by
    # our own failurePolicy setting, not by the apiserver's.
    resource = (group, version, plural) if group else (version, plural)

    @kopf.on.validate(
        *resource,
        id=handler_id,
        subresource=subresource,
        operations=["UPDATE"] if subresource else ["CREATE", "UPDATE"],
        side_effects=True,  # Events, but never on dry runs
        ignore_failures=True,
    )
    async def validate(**kw: Any) -> None:
        await _validate(handler_id, kw)


for _id, (_group, _version, _plural) in WORKLOAD_RESOURCES.items():
    _register_validation(_id, _group, _version, _plural)
_register_validation("validate-pods", "", "v1", "pods")  # core group
_register_validation("validate-ephemeralcontainers", "", "v1", "pods", "ephemeralcontainers")


def _register_template_mutation(handler_id: str, group: str, version: str, plural: str) -> None:
    @kopf.on.mutate(
        group,
        version,
        plural,
        id=handler_id,
        operations=["CREATE", "UPDATE"],
        side_effects=True,
        ignore_failures=True,
    )
    async def mutate(**kw: Any) -> None:
        rt = _runtime(kw["memo"])
        # Off unless configured: a GitOps tool would see the patched template as drift.
        if not rt.config.mutate_workload_templates:
            return
        await _mutate(handler_id, kw)


for _id, (_group, _version, _plural) in WORKLOAD_RESOURCES.items():
    _register_template_mutation(_id.replace("validate-", "mutate-"), _group, _version, _plural)


async def _mutate(webhook: str, kw: Mapping[str, Any]) -> None:
    body, patch, old = kw["body"], kw["patch"], kw.get("old")
    rt = _runtime(kw["memo"])
    assert rt.admission is not None
    operation = str(kw.get("operation") or "CREATE")
    outcome = await rt.admission.review(
        dict(body),
        operation=operation,
        old=dict(old) if old else None,
        mutate=True,
        webhook=webhook,
        authenticated=webhook_server.authenticated(kw.get("sslpeer")),
    )
    if outcome.patch:
        operations = [dict(op) for op in outcome.patch]

        def apply(target: Any) -> None:
            jsonpatch.apply_patch(target, operations, in_place=True)

        patch.fns.append(apply)
    rt.spawn(_post_events(rt, body, outcome, bool(kw.get("dryrun")), operation))


@kopf.on.mutate(
    "v1",
    "pods",
    id="mutate-pods",
    operations=["CREATE"],
    side_effects=True,
    ignore_failures=True,
)
async def mutate_pods(**kw: Any) -> None:
    await _mutate("mutate-pods", kw)
