"""Prometheus metrics. Labels are bounded: no per-image, per-pod or per-namespace labels."""

from __future__ import annotations

import prometheus_client as prom

__all__ = ["Metrics"]


class Metrics:
    """One registry of archwarden's metrics (a fresh one per instance keeps tests apart)."""

    def __init__(self, registry: prom.CollectorRegistry | None = None) -> None:
        self.registry = registry or prom.CollectorRegistry()
        r = self.registry
        self.admission_requests = prom.Counter(
            "archwarden_admission_requests",
            "Admission reviews answered.",
            ["webhook", "kind", "operation", "decision"],
            registry=r,
        )
        self.admission_duration = prom.Histogram(
            "archwarden_admission_duration_seconds",
            "Time to answer an admission review.",
            ["webhook"],
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=r,
        )
        self.registry_requests = prom.Counter(
            "archwarden_registry_requests",
            "HTTP requests to registries, by registry host and status code (or error kind).",
            ["registry", "code"],
            registry=r,
        )
        self.registry_duration = prom.Histogram(
            "archwarden_registry_request_duration_seconds",
            "Duration of registry HTTP requests.",
            ["registry"],
            registry=r,
        )
        self.registry_held_lookups = prom.Counter(
            "archwarden_registry_held_lookups_total",
            "Registry lookups failed at once, without a request, because the registry host "
            "answered 429 and the time it asked for (Retry-After, capped) has not passed.",
            ["registry"],
            registry=r,
        )
        self.cache_lookups = prom.Counter(
            "archwarden_image_cache_lookups",
            "Image platform lookups by result: hit, miss, revalidated, stale, failure_cached.",
            ["result"],
            registry=r,
        )
        # The Resolver's results, a handful of fixed names.
        self._lookup_results: dict[str, prom.Counter] = {}
        self.watch_restarts = prom.Counter(
            "archwarden_watch_restarts",
            "Watches of the API server started over, by resource and reason: idle (no byte "
            "within kube.watchIdleSeconds: a silent connection), connection (reset, refused, "
            "cut short), gone (410: listed again), error (bad stream: listed again).",
            ["resource", "reason"],
            registry=r,
        )
        self.nodes = prom.Gauge(
            "archwarden_nodes", "Nodes in the inventory by os and arch.", ["os", "arch"], registry=r
        )
        self.capacity_classes = prom.Gauge(
            "archwarden_capacity_classes",
            "Classes of capacity by source and the os/arch they offer: source node counts "
            "classes of existing nodes; NodePool, MachineDeployment, MachineSet, MachinePool "
            "and nodeGroup count what autoscalers can add.",
            ["source", "os", "arch"],
            registry=r,
        )
        self.workloads_unschedulable = prom.Gauge(
            "archwarden_workloads_unschedulable",
            "Workloads left with no node that can run their images.",
            ["kind"],
            registry=r,
        )
        self.decision_cache = prom.Counter(
            "archwarden_decision_cache_total",
            "Admission decisions taken from the decision cache (hit) or made (miss).",
            ["result"],
            registry=r,
        )
        self.decision_cache_bytes = prom.Gauge(
            "archwarden_decision_cache_bytes",
            "Bytes the decision cache holds, as it counts them (bounded by "
            "limits.decisionCacheBytes).",
            registry=r,
        )
        self.unchecked = prom.Counter(
            "archwarden_admission_unchecked_total",
            "Admission reviews decided by failurePolicy without a platform check, by reason "
            "(TooManyImages, TemplateTooLarge).",
            ["reason"],
            registry=r,
        )
        self.node_changes = prom.Counter(
            "archwarden_node_changes_total",
            "Node additions, removals and changes to what decisions read (labels, taints, "
            "schedulability, readiness, platform); heartbeats and other status noise excluded.",
            registry=r,
        )
        self.templates_oversized = prom.Gauge(
            "archwarden_templates_oversized",
            "Workloads kept without their pod template: its projection is over "
            "limits.templateBytes, so neither re-evaluation nor the audit checks them.",
            registry=r,
        )
        self.reevaluated = prom.Counter(
            "archwarden_workloads_reevaluated_total",
            "Workloads judged again after node changes (only those a changed node class concerns).",
            registry=r,
        )
        self.admission_denials = prom.Counter(
            "archwarden_admission_denials",
            "Admission reviews denied, by reason (a policy.Reason value, or TooManyImages).",
            ["webhook", "reason"],
            registry=r,
        )
        self.registry_failures = prom.Counter(
            "archwarden_registry_failures",
            "Admissions that met a registry failure, by failure policy outcome.",
            ["outcome"],
            registry=r,
        )

        self.admission_refused = prom.Counter(
            "archwarden_admission_refused",
            "Admission requests answered with an HTTP error before any decision (too large, "
            "malformed, unknown webhook): with failurePolicy Ignore the API server admits them.",
            ["reason"],
            registry=r,
        )

        self.skipped = prom.Counter(
            "archwarden_skipped",
            'Workloads admitted unchecked through the archwarden.io/skip: "true" annotation.',
            ["kind"],
            registry=r,
        )

        self.events_dropped = prom.Counter(
            "archwarden_events_dropped",
            "Events not posted, by reason: unverified_object is a review from an "
            "unauthenticated caller about an object that could not be found.",
            ["reason"],
            registry=r,
        )

        self.workloads_incompatible = prom.Gauge(
            "archwarden_workloads_incompatible",
            "Workloads the last audit found incompatible with the nodes they may run on.",
            ["kind"],
            registry=r,
        )
        self.audit_workloads = prom.Counter(
            "archwarden_audit_workloads_total",
            "Workloads judged by the background audit.",
            registry=r,
        )
        self.audit_last_completed = prom.Gauge(
            "archwarden_audit_last_completed_timestamp_seconds",
            "When the last background audit completed (Unix time; 0: none yet).",
            registry=r,
        )
        self.audit_duration = prom.Gauge(
            "archwarden_audit_duration_seconds",
            "How long the last background audit took (registry budget waits included).",
            registry=r,
        )
        self.image_platforms_changed = prom.Counter(
            "archwarden_image_platforms_changed_total",
            "Workloads told that a mutable tag they use lost a platform they run on.",
            registry=r,
        )
        self.exec_format_errors = prom.Counter(
            "archwarden_exec_format_errors_total",
            "Containers seen failing with exec format error (binary built for another "
            "architecture than the node's), by evidence: runtime (the runtime's start failure) "
            "or log (only the line runc or crun writes in the container's log, which the "
            "container could have written itself).",
            ["evidence"],
            registry=r,
        )
        for evidence in ("runtime", "log"):
            # Both series exist from the start: an alert on the rate sees 0, not no data.
            self.exec_format_errors.labels(evidence)
        self.pending_explained = prom.Counter(
            "archwarden_pending_pods_explained_total",
            "Pending pods explained: no node matches their images' platforms and arch pin.",
            registry=r,
        )
        self.pods_gated = prom.Gauge(
            "archwarden_pods_gated",
            "Pods held by archwarden's scheduling gate, by why: Pending (not decided yet), "
            "ImageInspectionFailed (retried), ArchitectureMismatch and the like (no capacity "
            "can run them).",
            ["reason"],
            registry=r,
        )
        self.gated_oldest = prom.Gauge(
            "archwarden_gated_pod_oldest_seconds",
            "Seconds the longest-held pod has waited on archwarden's scheduling gate (0: none).",
            registry=r,
        )
        self.gates_released = prom.Counter(
            "archwarden_gates_released_total",
            "Scheduling gates archwarden removed from existing pods after deciding, by path.",
            ["path"],
            registry=r,
        )
        self.images_mislabelled = prom.Counter(
            "archwarden_images_mislabelled_total",
            "Workloads told that an image's index names platforms its configs contradict.",
            registry=r,
        )
        self.leader = prom.Gauge(
            "archwarden_leader",
            "1 on the replica holding the leader Lease (it alone audits, writes reports, "
            "re-evaluates, explains and releases gated pods), else 0.",
            registry=r,
        )
        self.leader_transitions = prom.Counter(
            "archwarden_leader_transitions_total",
            "Times this replica started or stopped leading.",
            ["change"],
            registry=r,
        )
        for change in ("started", "stopped"):
            self.leader_transitions.labels(change)

    def observe_registry(self, registry: str, code: str, seconds: float) -> None:
        self.registry_requests.labels(registry, code).inc()
        self.registry_duration.labels(registry).observe(seconds)

    def observe_lookup(self, result: str) -> None:
        # Once per image of every review: a label lookup costs more than the count.
        child = self._lookup_results.get(result)
        if child is None:
            child = self._lookup_results[result] = self.cache_lookups.labels(result)
        child.inc()

    def exposition(self) -> bytes:
        return prom.generate_latest(self.registry)
