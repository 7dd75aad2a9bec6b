"""kopf glue: admission handlers, start-up and clean-up; the node and namespace streams
(``kube.Watch``) feeding the inventory; re-evaluation; leadership. Decisions live in
``admission``/``policy``.

Every replica serves admissions and keeps every watch. The work that writes to the cluster in
the background (the audit and its reports, tag drift, re-evaluation Events, exec format and
pending explanations, gated pods) runs on the leader alone (``Runtime.set_leading``), the holder
of the Lease (``kube.Elector``); a single process (``--dev``, ``leaderElection.enabled`` false)
leads itself.

Handler ids are the webhook URL paths (and the chart's webhook names), so they are stable API.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import functools
import gc
import json
import logging
import os
from collections.abc import Coroutine, Iterable, Mapping
from pathlib import Path
from typing import Any

import jsonpatch
import kopf

from archwarden import (
    admission,
    audit,
    gatekeeper,
    kube,
    metrics,
    pod_store,
    policy,
    reasons,
    registry,
    serving,
    settings,
    webhook_server,
    workload_store,
)

__all__ = ["WORKLOAD_RESOURCES", "Runtime", "kopf_timeouts"]

logger = logging.getLogger("archwarden")

WORKLOAD_RESOURCES = {
    "validate-deployments": ("apps", "v1", "deployments"),
    "validate-statefulsets": ("apps", "v1", "statefulsets"),
    "validate-daemonsets": ("apps", "v1", "daemonsets"),
    "validate-replicasets": ("apps", "v1", "replicasets"),
    "validate-jobs": ("batch", "v1", "jobs"),
    "validate-cronjobs": ("batch", "v1", "cronjobs"),
}
REEVALUATE_DELAY = 1.0
"""Seconds to let a burst of node changes settle before re-evaluating workloads."""
REEVALUATE_SLICE = 200
"""Workloads judged between two yields to the event loop, so admissions never wait long."""
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
    nodes: policy.Inventory = dataclasses.field(default_factory=policy.Inventory)
    """What decisions read, kept one node event at a time (see ``on_node``)."""
    capacity: policy.Capacity = dataclasses.field(default_factory=policy.Capacity)
    """What autoscalers can add, by source (see ``watch_capacity``)."""
    capacity_sources: tuple[kube.CapacityResource, ...] = ()
    """The capacity kinds watched (their CRDs exist and archwarden may list them)."""
    ignored_namespaces: kube.IgnoredNamespaces = dataclasses.field(
        default_factory=kube.IgnoredNamespaces
    )
    """Namespaces whose node groups arrived but do not count (capacity.clusterAPI.namespaces)."""
    namespace_modes: dict[str, str] = dataclasses.field(default_factory=dict)
    skip_namespaces: set[str] = dataclasses.field(default_factory=set)
    """Namespaces labelled archwarden.io/allow-skip=true (skip.allowed: labelledNamespaces)."""
    platform_set: frozenset[str] | None = None
    admission: admission.Admission | None = None
    reader: kube.ApiReader | None = None
    poster: kube.EventPoster | None = None
    client: registry.RegistryClient | None = None
    health: serving.HealthServer | None = None
    watches: list[kube.Watch] = dataclasses.field(default_factory=list)
    workloads: workload_store.WorkloadStore = dataclasses.field(
        default_factory=workload_store.WorkloadStore
    )
    pods: pod_store.PodStore = dataclasses.field(default_factory=pod_store.PodStore)
    auditor: audit.Auditor | None = None
    """Built at start-up once admission is; judges what already runs (``archwarden.audit``)."""
    gatekeeper: gatekeeper.GateKeeper | None = None
    """Built at start-up once admission is; decides pods held by the scheduling gate."""
    changed_classes: set[policy.Node] = dataclasses.field(default_factory=set)
    """Node classes (before and after) changed since the last re-evaluation."""
    reevaluate_all: bool = True
    """The next re-evaluation judges every workload (the first one, after a relist)."""
    stranded: dict[workload_store.Key, policy.Decision] = dataclasses.field(default_factory=dict)
    """Workloads no node can run, as last judged."""
    reevaluation: asyncio.Task[None] | None = None
    reevaluation_dirty: bool = False
    background: set[asyncio.Task[None]] = dataclasses.field(default_factory=set)
    capacity_tasks: dict[str, list[tuple[kube.Watch, asyncio.Task[None]]]] = dataclasses.field(
        default_factory=dict
    )
    """The running watches of each capacity kind (its CRD established), by kind."""
    leading: bool = False
    """This replica does the leader's work (``set_leading``)."""
    leader_work: set[asyncio.Task[None]] = dataclasses.field(default_factory=set)
    """The leader's tasks, cancelled together the moment leadership is lost."""
    elector: kube.Elector | None = None
    leases: kube.HttpLeases | None = None
    workload_watches: list[kube.Watch] = dataclasses.field(default_factory=list)
    pod_watch: kube.Watch | None = None

    def __post_init__(self) -> None:
        self.workloads.on_removed = self._workload_removed
        self.metrics.templates_oversized.set_function(lambda: self.workloads.oversized)

    def inventory(self) -> policy.Inventory:
        return self.nodes

    def provisionable(self) -> tuple[policy.ProvisionableClass, ...]:
        return self.capacity.classes()

    @property
    def counts_capacity(self) -> bool:
        """Whether any provisionable capacity source is configured or watched."""
        return bool(self.capacity_sources or self.config.capacity.node_groups)

    def note_node(self, name: str, node: policy.Node | None) -> bool:
        """Record a node's current value; whether anything a decision reads changed. O(1)."""
        change = self.nodes.apply(name, node)
        if change is None:
            return False
        self.changed_classes.update(policy.class_of(v) for v in change if v is not None)
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

    # -- the node and namespace streams (kube.Watch) ------------------------------------------
    def on_node(self, body: Mapping[str, Any]) -> None:
        """A node listed, added or modified: only its projection is kept."""
        name = str((body.get("metadata") or {}).get("name") or "")
        try:
            node: policy.Node | None = policy.node_from_object(body)
        except policy.InvalidNode as exc:
            logger.warning("node %s ignored: %s", name, exc)
            node = None
        self._node_changed(name, node)

    def on_node_deleted(self, body: Mapping[str, Any]) -> None:
        self._node_changed(str((body.get("metadata") or {}).get("name") or ""), None)

    def on_nodes_listed(self, names: set[str]) -> None:
        """After a complete list: nodes deleted while the stream was down are gone too."""
        for name in [n for n in self.nodes.names() if n not in names]:
            self._node_changed(name, None)

    def _node_changed(self, name: str, node: policy.Node | None) -> None:
        if not self.note_node(name, node):
            return  # heartbeats and status noise: nothing a decision depends on changed
        self.metrics.node_changes.inc()
        platforms = self.nodes.ready_platforms()
        if platforms != self.platform_set and self.platform_set is not None and self.ready.is_set():
            logger.info("node platforms now: %s", ", ".join(sorted(platforms)))
        self.platform_set = platforms
        # Any change to what decisions read (a node gone, relabelled, tainted, NotReady) can
        # strand workloads even when the cluster-wide platform set stays the same: a pool can
        # lose its only arm64 node while other pools keep theirs.
        if self.ready.is_set():
            _schedule_reevaluation(self)

    def on_namespace(self, body: Mapping[str, Any]) -> None:
        meta = body.get("metadata") or {}
        name = str(meta.get("name") or "")
        labels = meta.get("labels") or {}
        mode = labels.get(admission.LABEL_MODE)
        if mode:
            self.namespace_modes[name] = str(mode)
        else:
            self.namespace_modes.pop(name, None)
        if labels.get(admission.LABEL_ALLOW_SKIP) == "true":
            self.skip_namespaces.add(name)
        else:
            self.skip_namespaces.discard(name)

    def on_namespace_deleted(self, body: Mapping[str, Any]) -> None:
        name = str((body.get("metadata") or {}).get("name") or "")
        self.namespace_modes.pop(name, None)
        self.skip_namespaces.discard(name)

    def on_namespaces_listed(self, names: set[str]) -> None:
        for name in [n for n in self.namespace_modes if n not in names]:
            del self.namespace_modes[name]
        self.skip_namespaces &= names

    def start_watches(self, connection: kube.Connection) -> None:
        """Nodes and namespaces, each on one stream; ready once both are listed. The nodes'
        watch comes first (``inventory_stale`` reads it)."""
        base = [
            kube.Watch(
                connection,
                "/api/v1/nodes",
                on_object=self.on_node,
                on_deleted=self.on_node_deleted,
                on_listed=self.on_nodes_listed,
            ),
            kube.Watch(
                connection,
                "/api/v1/namespaces",
                on_object=self.on_namespace,
                on_deleted=self.on_namespace_deleted,
                on_listed=self.on_namespaces_listed,
            ),
        ]
        # Readiness waits for these and for the capacity kinds found at start-up.
        self.watches = list(base)
        for resource in self.capacity_sources:
            streams = self.capacity_watches(connection, [resource])
            self.watches += streams
            self.capacity_tasks[resource.kind] = [
                (watch, self.spawn(watch.run())) for watch in streams
            ]
        self._watch_definitions(connection)
        workloads = self.workload_watches = self.workloads.watches(connection)
        self.pods.on_changed = self._pod_changed
        self.pods.on_deleted = self._pod_deleted
        pods = self.pod_watch = self.pods.watch(connection)
        for watch in [*base, *workloads, pods]:
            self.spawn(watch.run())
        self.spawn(self._ready_when_listed())

    # -- leadership ----------------------------------------------------------------------------
    def set_leading(self, leading: bool) -> None:
        """Start the leader's work, or stop it: called by the elector the moment leadership
        changes. Stopping cancels every leader task before anything else runs, so nothing more
        is written; what they wrote (Events, reports) is idempotent, and the next leader starts
        from the cluster as its watches show it."""
        if leading == self.leading:
            return
        self.leading = leading
        self.metrics.leader.set(1 if leading else 0)
        self.metrics.leader_transitions.labels("started" if leading else "stopped").inc()
        if not leading:
            for task in self.leader_work:
                task.cancel()
            if self.reevaluation is not None:
                self.reevaluation.cancel()
            if self.auditor is not None:
                self.auditor.stop()
            # Judged by the leader alone: a follower's figures would be stale.
            self.stranded.clear()
            self._count_stranded()
            return
        if self.auditor is not None and self.config.audit.enabled:
            self._lead(self.auditor.run(self._listed))
        if self.gatekeeper is not None:
            self._lead(self.gatekeeper.run(self.ready.wait))
        self._lead(self._reevaluate_when_listed())

    async def _listed(self) -> None:
        await self.ready.wait()
        for watch in [*self.workload_watches, *([self.pod_watch] if self.pod_watch else [])]:
            await watch.synced.wait()

    async def _reevaluate_when_listed(self) -> None:
        # Workloads are not needed to answer reviews; the first re-evaluation waits for them.
        await self.ready.wait()
        for watch in self.workload_watches:
            await watch.synced.wait()
        self.reevaluate_all = True
        _schedule_reevaluation(self)

    def _lead(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.leader_work.add(task)
        task.add_done_callback(self.leader_work.discard)

    def leader_post(self, target: Mapping[str, Any], type: str, reason: str, message: str) -> None:
        """The leader's Events: dropped once leadership is lost, whatever still calls."""
        if self.leading and self.poster is not None:
            self.poster.post(target, type, reason, message)

    def watch_connection(self, api_client: Any) -> kube.Connection:
        """Where every watch streams from, with the configured bounds, counting restarts."""

        def restarted(resource: str, reason: str) -> None:
            self.metrics.watch_restarts.labels(resource, reason).inc()

        return kube.Connection.from_api_client(
            api_client,
            max_object_bytes=self.config.limits.api_object_bytes,
            watch_seconds=self.config.kube.watch_seconds,
            idle_seconds=self.config.kube.watch_idle_seconds,
            on_restart=restarted,
        )

    def inventory_stale(self) -> str | None:
        """Why /readyz says not ready once synced: the node watch down for longer than
        kube.inventoryStaleSeconds (nodes may have come and gone unseen). None otherwise."""
        if not self.watches:
            return None
        nodes = self.watches[0]
        down = nodes.stale_seconds()
        bound = self.config.kube.inventory_stale_seconds
        if down <= bound:
            return None
        return f"node watch down for {down:.0f}s (over {bound:g}s; {nodes.last_problem})"

    def _pod_changed(self, old: pod_store.Pod | None, pod: pod_store.Pod) -> None:
        # Held pods are decided once the nodes are listed (GateKeeper.run waits for that).
        if self.gatekeeper is not None:
            self.gatekeeper.pod_changed(pod)
        # Before the nodes are listed, a pod's node and the node platforms are not known yet.
        if self.auditor is not None and self.ready.is_set() and self.leading:
            self.auditor.pod_changed(old, pod)

    def _pod_deleted(self, namespace: str, name: str) -> None:
        if self.gatekeeper is not None:
            self.gatekeeper.pod_deleted(namespace, name)

    def capacity_watches(
        self, connection: kube.Connection, resources: Iterable[kube.CapacityResource]
    ) -> list[kube.Watch]:
        """One stream per capacity kind, or per kind and named namespace (Cluster API node
        groups: only the namespaces of capacity.clusterAPI.namespaces are read)."""
        return [
            self._capacity_watch(connection, resource, namespace)
            for resource in resources
            for namespace in resource.scopes()
        ]

    def _watch_definitions(self, connection: kube.Connection) -> None:
        """Capacity kinds whose CRD is installed, or removed, while archwarden runs: each
        enabled kind's CRD is watched by name (a cluster may hold thousands of large CRDs),
        and its objects are watched from the moment the CRD is Established until it is
        deleted. Needs list/watch on CRDs (the chart's rbac.crdDiscovery); without it the
        kinds found at start-up stay as they are."""
        for resource in kube.wanted_sources(self.config.capacity):
            name = kube.definition_name(resource)

            def on_object(body: Mapping[str, Any], kind: str = resource.kind) -> None:
                if _established(body) and kind not in self.capacity_tasks:
                    self.capacity_tasks[kind] = []  # claimed: one start at a time
                    self.spawn(self._start_capacity(connection, kind))

            def on_deleted(body: Mapping[str, Any], kind: str = resource.kind) -> None:
                self._stop_capacity(kind)

            def on_listed(names: set[str], kind: str = resource.kind, crd: str = name) -> None:
                if crd not in names:
                    self._stop_capacity(kind)

            watch = kube.Watch(
                connection,
                "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
                on_object=on_object,
                on_deleted=on_deleted,
                on_listed=on_listed,
                selector={"fieldSelector": f"metadata.name={name}"},
            )
            self.spawn(self._definitions(watch))

    async def _definitions(self, watch: kube.Watch) -> None:
        if self.reader is not None:
            try:
                await self.reader.list_custom(
                    "apiextensions.k8s.io", "v1", "customresourcedefinitions", limit=1
                )
            except (kube.ApiUnavailable, LookupError) as exc:
                logger.info(
                    "capacity CRDs installed or removed later are not noticed: cannot list "
                    "CRDs (%s)",
                    exc,
                )
                return
        await watch.run()

    async def _start_capacity(self, connection: kube.Connection, kind: str) -> None:
        """Watch a capacity kind whose CRD was just established. Discovery may lag the CRD
        by a moment: asked a few times."""
        found: list[kube.CapacityResource] = []
        for delay in (0.0, 0.5, 1.0, 2.0, 4.0):
            await asyncio.sleep(delay)
            if self.reader is None or self.capacity_tasks.get(kind) is None:
                return
            found = await kube.available_sources(self.reader, self.config.capacity, only=[kind])
            if found:
                break
        if not found or self.capacity_tasks.get(kind) is None:
            self.capacity_tasks.pop(kind, None)
            return
        (resource,) = found
        logger.info("provisionable capacity: %s CRD established, watching %ss", kind, kind)
        self.capacity_sources = (*self.capacity_sources, resource)
        self.capacity_tasks[kind] = [
            (watch, self.spawn(watch.run()))
            for watch in self.capacity_watches(connection, [resource])
        ]

    def _stop_capacity(self, kind: str) -> None:
        """The kind's CRD is gone: its watches stop and what its objects offered no longer
        counts (workloads it alone could run are re-evaluated)."""
        tasks = self.capacity_tasks.pop(kind, None)
        if tasks is None:
            return
        for watch, task in tasks:
            task.cancel()
            # Readiness waits for the first lists of the kinds found at start-up: not for
            # one that is gone.
            watch.synced.set()
        self.capacity_sources = tuple(r for r in self.capacity_sources if r.kind != kind)
        logger.info("provisionable capacity: %s CRD removed, no longer watched", kind)
        for source in list(self.capacity.sources(kind)):
            if self.note_capacity(source, None):
                _capacity_reevaluation(self, source)

    def _capacity_watch(
        self, connection: kube.Connection, resource: kube.CapacityResource, namespace: str | None
    ) -> kube.Watch:
        def on_object(body: Mapping[str, Any]) -> None:
            capacity_changed(self, resource, body)

        def on_deleted(body: Mapping[str, Any]) -> None:
            capacity_changed(self, resource, body, deleted=True)

        def on_listed(names: set[str]) -> None:
            # A namespace's list says nothing about the kind's objects in other namespaces.
            prefix = "" if namespace is None else f"{namespace}/"
            for source in self.capacity.sources(resource.kind):
                if not source.name.startswith(prefix) or source.name in names:
                    continue
                if self.note_capacity(source, None):
                    _capacity_reevaluation(self, source)

        return kube.Watch(
            connection,
            resource.path(namespace),
            on_object=on_object,
            on_deleted=on_deleted,
            on_listed=on_listed,
        )

    def _workload_removed(self, key: workload_store.Key) -> None:
        if self.stranded.pop(key, None) is not None:
            self._count_stranded()

    def _count_stranded(self) -> None:
        per_kind: dict[str, int] = {}
        for kind, _, _ in self.stranded:
            per_kind[kind] = per_kind.get(kind, 0) + 1
        self.metrics.workloads_unschedulable.clear()
        for kind, count in per_kind.items():
            self.metrics.workloads_unschedulable.labels(kind).set(count)

    async def _ready_when_listed(self) -> None:
        # Ready only once every node and namespace is known: before that every decision would
        # be made against an incomplete cluster.
        for watch in self.watches:
            await watch.synced.wait()
        self.platform_set = self.nodes.ready_platforms()
        logger.info(
            "listed %d nodes (%d classes); node platforms: %s",
            len(self.nodes),
            len(self.nodes.classes()),
            ", ".join(sorted(self.platform_set)) or "none",
        )
        # Everything held so far (modules, kopf, the inventory) lives as long as the process:
        # moved out of the cyclic collector's sight, a full collection no longer walks it in
        # the middle of a review. Refcounting still frees what becomes garbage.
        gc.freeze()
        self.ready.set()

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Work that must not delay an admission answer (Events and their owner lookups);
        the task, for callers that stop it (a capacity kind's watches)."""
        task = asyncio.get_running_loop().create_task(coro)
        self.background.add(task)
        task.add_done_callback(self.background.discard)
        return task


def _runtime(memo: Any) -> Runtime:
    runtime = memo.get("runtime") if isinstance(memo, Mapping) else getattr(memo, "runtime", None)
    if not isinstance(runtime, Runtime):
        raise RuntimeError("archwarden handlers need a Runtime in kopf's memo")
    return runtime


# -- startup and cleanup --------------------------------------------------------------------------


def kopf_timeouts(kopf_settings: kopf.OperatorSettings, kube: settings.KubeSettings) -> None:
    """kopf's own API calls and watches (its resource discovery) get archwarden's bounds: a
    watch the server ends every watchSeconds, dropped after watchIdleSeconds without an event
    or bookmark (kopf's default, 70 s, outlasts the 30 s target), and a timeout on every call."""
    kopf_settings.watching.server_timeout = kube.watch_seconds
    kopf_settings.watching.inactivity_timeout = kube.watch_idle_seconds
    kopf_settings.networking.request_timeout = kube.request_timeout_seconds
    kopf_settings.networking.connect_timeout = kube.request_timeout_seconds


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: Any, **_: Any) -> None:
    rt = _runtime(memo)
    config = rt.config
    # Events are ours alone (kube.EventPoster): kopf's per-handler Events would be noise, and
    # its posting queue is not available to admission handlers anyway.
    settings.posting.enabled = False
    settings.persistence.finalizer = "archwarden.io/finalizer"
    kopf_timeouts(settings, config.kube)
    if rt.dev:
        # Imported here: certs needs cryptography, an optional extra ([dev]) the image lacks.
        from archwarden import certs

        files = certs.write_dev_certificates(rt.dev_dir)
        server = webhook_server.WebhookServer(
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
        server = webhook_server.WebhookServer(
            meters=rt.metrics,
            addr=config.webhook.address,
            port=config.webhook.port,
            certfile=config.webhook.cert_file,
            pkeyfile=config.webhook.key_file,
            client_ca_file=config.webhook.client_ca_file,
            client_names=config.webhook.client_names,
            file_check_interval=config.webhook.reload_seconds,
        )
    server.direct = direct_route(rt)
    settings.admission.server = server
    api_client = kube.load_api_client(
        rt.kubeconfig, request_timeout=config.kube.request_timeout_seconds
    )
    rt.reader = kube.ApiReader(api_client)
    rt.poster = kube.EventPoster(api_client, rt.events)
    client_settings = config.client_settings()

    def observe_registry(host: str, code: str, seconds: float) -> None:
        rt.metrics.observe_registry(client_settings.metric_label(host), code, seconds)

    def observe_held(host: str) -> None:
        rt.metrics.registry_held_lookups.labels(client_settings.metric_label(host)).inc()

    rt.client = registry.RegistryClient(
        client_settings, observer=observe_registry, held_observer=observe_held
    )
    resolver = registry.Resolver(rt.client, config.cache, observer=rt.metrics.observe_lookup)
    secrets = kube.PullSecrets(
        rt.reader,
        config.global_pull_secret,
        pull_secret_bytes=config.limits.pull_secret_bytes,
        pull_secret_cache_bytes=config.limits.pull_secret_cache_bytes,
    )
    providers = _credential_providers(config, api_client, rt.reader)
    # Asked only for reviews from unauthenticated callers (no webhook.clientCAFile).
    objects = kube.ObjectChecker(rt.reader)
    rt.admission = admission.Admission(
        config,
        resolver,
        rt.inventory,
        credentials=secrets.for_pod,
        held_credentials=secrets.held,
        image_credentials=providers.for_image if providers is not None else None,
        namespace_mode=rt.namespace_modes.get,
        namespace_allows_skip=rt.skip_namespaces.__contains__,
        meters=rt.metrics,
        object_exists=objects.exists,
        capacity=rt.provisionable,
    )
    reports = kube.ReportWriter(api_client) if config.reports.enabled else None
    rt.auditor = audit.Auditor(
        rt.admission,
        rt.workloads,
        rt.pods,
        rt.inventory,
        poster=_LeaderEvents(rt),
        meters=rt.metrics,
        reports=reports,
    )
    if config.scheduling_gates.mode != policy.GateMode.OFF.value:
        # Off: gated pods are not archwarden's (switching off with pods still held is followed
        # by `archwarden ungate -A`; the chart's uninstall hook releases them itself).
        rt.gatekeeper = gatekeeper.GateKeeper(
            rt.admission,
            functools.partial(rt.reader.read, "Pod"),
            kube.PodPatcher(api_client).patch,
            rt.leader_post,
            rt.metrics,
            config.scheduling_gates,
        )
    rt.set_static_capacity(kube.static_capacity(config.capacity))
    connection = rt.watch_connection(api_client)
    rt.start_watches(connection)
    _campaign(rt, connection)
    rt.health = serving.HealthServer(rt.metrics, rt.ready, rt.inventory_stale)
    await rt.health.start(config.metrics.address, config.metrics.port)
    logger.info(
        "archwarden ready to serve: webhook port %d, metrics port %d, mode %s",
        config.webhook.port,
        config.metrics.port,
        config.mode,
    )


def _campaign(rt: Runtime, connection: kube.Connection) -> None:
    """Campaign for the leader Lease, or lead at once when this process is alone."""
    section = rt.config.leader_election
    if rt.dev or not section.enabled:
        logger.info("leader election off: this process does the leader's work")
        rt.set_leading(True)
        return
    namespace = section.namespace or os.environ.get("POD_NAMESPACE") or "default"
    rt.leases = kube.HttpLeases(connection, timeout=section.renew_deadline_seconds)
    rt.elector = kube.Elector(
        rt.leases,
        namespace,
        section.lease_name,
        kube.holder_identity(),
        lease_duration=section.lease_duration_seconds,
        renew_deadline=section.renew_deadline_seconds,
        retry_period=section.retry_period_seconds,
        on_change=rt.set_leading,
    )
    logger.info(
        "leader election: lease %s/%s as %s", namespace, section.lease_name, rt.elector.identity
    )
    rt.spawn(rt.elector.run())


@dataclasses.dataclass
class _LeaderEvents:
    """The audit's poster: Events go out only while this replica leads."""

    rt: Runtime

    def post(self, target: Mapping[str, Any], type: str, reason: str, message: str) -> None:
        self.rt.leader_post(target, type, reason, message)


@kopf.on.cleanup()
async def cleanup(memo: Any, **_: Any) -> None:
    rt = _runtime(memo)
    # The campaign is among the background tasks: cancelled, it stops the leader's work first.
    for task in list(rt.background):
        task.cancel()
    await asyncio.gather(*rt.background, return_exceptions=True)
    rt.set_leading(False)
    await asyncio.gather(*rt.leader_work, return_exceptions=True)
    if rt.elector is not None:
        # Released now, a candidate takes over at its next read rather than after the lease
        # duration.
        await rt.elector.release()
    if rt.leases is not None:
        await rt.leases.aclose()
    if rt.health is not None:
        await rt.health.stop()
    if rt.client is not None:
        await rt.client.aclose()


# -- re-evaluation --------------------------------------------------------------------------------


def _established(crd: Mapping[str, Any]) -> bool:
    conditions = (crd.get("status") or {}).get("conditions") or []
    return any(
        isinstance(c, Mapping) and c.get("type") == "Established" and c.get("status") == "True"
        for c in conditions
    )


def _schedule_reevaluation(rt: Runtime) -> None:
    if not rt.leading:
        # The leader's work: a replica that becomes leader judges every workload first.
        return
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
    """After inventory changes: which workloads have no node left that can run them?

    Only workloads for which a changed node class is (or was) a candidate are judged again: a
    decision reads nothing else. Judged from the workloads kept by the store and the image
    answers already cached (an image not in the cache is unknown, never fetched here).
    """
    if rt.admission is None:
        return
    changed, rt.changed_classes = rt.changed_classes, set()
    everything, rt.reevaluate_all = rt.reevaluate_all, False
    inventory = rt.inventory()
    fallbacks = rt.config.platforms.fallbacks()
    capacity = rt.provisionable()
    lead = (
        "no node left, nor capacity an autoscaler can add, can run this workload: "
        if rt.counts_capacity
        else "no node left can run this workload: "
    )
    judged = 0
    for position, (key, entry) in enumerate(rt.workloads.items()):
        if position % REEVALUATE_SLICE == REEVALUATE_SLICE - 1:
            await asyncio.sleep(0)  # admissions first
        if entry.oversized:
            # Kept without its template (limits.templateBytes): nothing to judge, and an earlier
            # template's verdict no longer holds.
            rt.stranded.pop(key, None)
            continue
        if not (
            everything or policy.concerned(entry.workload, changed, rt.config.platforms.taints)
        ):
            continue
        judged += 1
        answers: dict[str, policy.ImageAnswer] = {}
        for image in entry.workload.template.images:
            held = rt.admission.held_platforms(image)
            if held is not None:
                answers[image] = held
        left = policy.stranded(
            {key: entry.workload},
            inventory,
            answers,
            fallbacks=fallbacks,
            capacity=capacity,
            platform_taints=rt.config.platforms.taints,
        )
        decision = left.get(key)
        if decision is None:
            rt.stranded.pop(key, None)
            continue
        rt.stranded[key] = decision
        rt.leader_post(
            entry.ref, "Warning", reasons.ARCHITECTURE_UNAVAILABLE, lead + decision.message
        )
    rt.metrics.reevaluated.inc(judged)
    rt._count_stranded()
    if rt.gatekeeper is not None:
        rt.gatekeeper.capacity_changed()


# -- provisionable capacity ----------------------------------------------------------------------


def watch_capacity(rt: Runtime, resources: list[kube.CapacityResource]) -> None:
    """Watch the capacity kinds the cluster serves (``kube.available_sources``), each on one
    stream like the nodes; readiness waits for their first lists. Called before kopf starts,
    so a kind without its CRD (or without RBAC) is never watched."""
    rt.capacity_sources = tuple(resources)
    for resource in resources:
        if resource.namespaces is None:
            logger.info("provisionable capacity: watching %ss", resource.kind)
        else:
            logger.info(
                "provisionable capacity: watching %ss in namespaces %s",
                resource.kind,
                ", ".join(resource.namespaces),
            )


def capacity_changed(
    rt: Runtime, resource: kube.CapacityResource, body: Mapping[str, Any], deleted: bool = False
) -> None:
    """What a source can provision changed: a pool deleted or narrowed can strand workloads,
    exactly as a node going away can, so the same re-evaluation follows."""
    source = kube.source_of(resource, body)
    value: policy.ProvisionableClass | None = None
    ignored = None if deleted else kube.ignored_namespace(resource, body, rt.config.capacity)
    if ignored is not None:
        rt.ignored_namespaces.note(ignored)
    elif not deleted:
        try:
            value = kube.capacity_from_object(resource, body, rt.config.capacity)
        except policy.InvalidCapacity as exc:
            logger.warning("%s ignored: %s", source, exc)
    if rt.note_capacity(source, value):
        _capacity_reevaluation(rt, source)


def _capacity_reevaluation(rt: Runtime, source: policy.Source) -> None:
    if not rt.ready.is_set():
        return  # the first lists are still arriving; the first re-evaluation judges all
    logger.info("provisionable capacity changed: %s", source)
    # Capacity is no node class: every workload may be concerned.
    rt.reevaluate_all = True
    _schedule_reevaluation(rt)


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


async def _review(
    rt: Runtime,
    webhook: str,
    body: Mapping[str, Any],
    old: Mapping[str, Any] | None,
    *,
    operation: str,
    dryrun: bool,
    authenticated: bool,
    mutate: bool,
) -> admission.Outcome:
    """One review, whichever way it arrived; its Events are posted after the answer."""
    assert rt.admission is not None
    outcome = await rt.admission.review(
        _plain(body),
        operation=operation,
        old=_plain(old) if old else None,
        mutate=mutate,
        webhook=webhook,
        authenticated=authenticated,
    )
    if outcome.events and not dryrun:  # most reviews have none: no task to schedule
        rt.spawn(_post_events(rt, body, outcome, dryrun, operation))
    return outcome


def _plain(obj: Mapping[str, Any]) -> dict[str, Any]:
    """kopf's read-only Body as a dict; the direct route's decoded JSON as it is."""
    return obj if type(obj) is dict else dict(obj)


async def _kopf_review(webhook: str, kw: Mapping[str, Any], *, mutate: bool) -> None:
    """A review through kopf's handler kwargs: only when the webhook server has no direct
    route (``answer_review``), which ``startup`` always sets."""
    rt = _runtime(kw["memo"])
    outcome = await _review(
        rt,
        webhook,
        kw["body"],
        kw.get("old"),
        operation=str(kw.get("operation") or ("CREATE" if mutate else "")),
        dryrun=bool(kw.get("dryrun")),
        authenticated=webhook_server.authenticated(kw.get("sslpeer")),
        mutate=mutate,
    )
    if mutate:
        if outcome.patch:
            operations = [dict(op) for op in outcome.patch]

            def apply(target: Any) -> None:
                jsonpatch.apply_patch(target, operations, in_place=True)

            kw["patch"].fns.append(apply)
        return
    kw["warnings"].extend(outcome.warnings)
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
        await _kopf_review(handler_id, kw, mutate=False)


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
        await _kopf_review(handler_id, kw, mutate=True)


for _id, (_group, _version, _plural) in WORKLOAD_RESOURCES.items():
    _register_template_mutation(_id.replace("validate-", "mutate-"), _group, _version, _plural)


@kopf.on.mutate(
    "v1",
    "pods",
    id="mutate-pods",
    operations=["CREATE"],
    side_effects=True,
    ignore_failures=True,
)
async def mutate_pods(**kw: Any) -> None:
    await _kopf_review("mutate-pods", kw, mutate=True)


# -- the direct route -----------------------------------------------------------------------------
# kopf's admission machinery builds a cause, a memo, a diff, handler state and outcomes for every
# review, and costs as much again as archwarden's own review. The webhook server hands reviews
# here instead (``WebhookServer.direct``); the kopf handlers above stay registered, for kopf to
# serve the port and, with --dev, to write the webhook configurations from them, and answer
# only when no direct route is set.

VALIDATING = frozenset({*WORKLOAD_RESOURCES, "validate-pods", "validate-ephemeralcontainers"})
MUTATING = frozenset(
    {"mutate-pods", *(i.replace("validate-", "mutate-") for i in WORKLOAD_RESOURCES)}
)


class ReviewError(ValueError):
    """The AdmissionReview lacks what every review has (the webhook server answers 400)."""


def direct_route(rt: Runtime) -> webhook_server.ReviewFn:
    async def answer(
        webhook: str, review: Mapping[str, Any], sslpeer: Mapping[str, Any] | None
    ) -> dict[str, Any] | None:
        return await answer_review(rt, webhook, review, sslpeer)

    return answer


async def answer_review(
    rt: Runtime, webhook: str, review: Mapping[str, Any], sslpeer: Mapping[str, Any] | None
) -> dict[str, Any] | None:
    """The AdmissionReview response for one request to ``/<webhook>``; None: no such webhook."""
    mutate = webhook in MUTATING
    if not mutate and webhook not in VALIDATING:
        return None
    request = review.get("request")
    if not isinstance(request, Mapping):
        raise ReviewError("the review has no request")
    body, old = request.get("object"), request.get("oldObject")
    if not isinstance(body, Mapping) or not (old is None or isinstance(old, Mapping)):
        raise ReviewError("the review has no object")
    response: dict[str, Any] = {"uid": str(request.get("uid") or ""), "allowed": True}
    # Off unless configured: a GitOps tool would see the patched template as drift.
    if webhook == "mutate-pods" or not mutate or rt.config.mutate_workload_templates:
        operation = str(request.get("operation") or ("CREATE" if mutate else ""))
        try:
            outcome = await _review(
                rt,
                webhook,
                body,
                old,
                operation=operation,
                dryrun=bool(request.get("dryRun")),
                authenticated=webhook_server.authenticated(sslpeer),
                mutate=mutate,
            )
        except Exception as exc:
            # As kopf answered a failed handler: not allowed, code 500.
            logger.exception("review on /%s failed", webhook)
            response.update(allowed=False, status={"message": str(exc) or repr(exc), "code": 500})
        else:
            if mutate and outcome.patch:
                patch = json.dumps([dict(op) for op in outcome.patch]).encode()
                response.update(patch=base64.b64encode(patch).decode(), patchType="JSONPatch")
            if not mutate:
                if outcome.warnings:
                    response["warnings"] = list(outcome.warnings)
                if not outcome.allowed:
                    response.update(allowed=False, status={"message": outcome.message, "code": 403})
    return {
        "apiVersion": review.get("apiVersion") or "admission.k8s.io/v1",
        "kind": review.get("kind") or "AdmissionReview",
        "response": response,
    }


def _credential_providers(
    config: settings.Settings, api_client: Any, reader: kube.ApiReader
) -> registry.CredentialProviders | None:
    """The kubelet credential provider plugins, read once at start: a config the kubelet
    would refuse stops archwarden with its one-line reason."""
    section = config.credential_providers
    if not section.enabled:
        return None
    try:
        providers = registry.CredentialProviders.from_files(
            section.config, section.bin_dir, limits=section.limits()
        )
    except registry.InvalidProviderConfig as exc:
        raise settings.ConfigError(f"credentialProviders: {exc}") from None
    if providers.config.uses_tokens:
        providers.accounts = kube.ServiceAccountTokens.for_cluster(
            api_client,
            reader,
            providers.config.annotation_keys,
            cache_bytes=section.token_cache_bytes,
        )
    return providers
