"""Cluster facts archwarden reads: pull secrets, ServiceAccounts and their tokens (for
kubelet credential providers), workload owners and lists,
whether an object exists, which capacity sources (NodePools, Cluster API node groups) the
cluster serves (the kubernetes client); nodes, namespaces, workloads and capacity as they change
(one list-and-watch stream per kind); Event de-duplication; OpenReports policy reports; removing
the webhook configurations on uninstall; patching gated pods and releasing their gates; leader
election on a Lease."""

from archwarden.kube._api import ApiReader, ApiUnavailable, load_api_client
from archwarden.kube._capacity import (
    ALL_NAMESPACES,
    SOURCES,
    CapacityResource,
    IgnoredNamespaces,
    available_sources,
    capacity_from_object,
    definition_name,
    ignored_namespace,
    list_capacity,
    not_counted,
    source_of,
    static_capacity,
    wanted_sources,
)
from archwarden.kube._events import EventDeduper, EventPoster, event_body
from archwarden.kube._gates import (
    RELEASED_REASON,
    GateReleaseError,
    PatchConflict,
    PodPatcher,
    instance_name,
    release_gates,
    remove_gate_policy,
)
from archwarden.kube._leases import (
    Elector,
    HttpLeases,
    LeaseConflict,
    LeaseRecord,
    holder_identity,
    lease_body,
    micro_time,
    record_of,
)
from archwarden.kube._objects import ObjectChecker
from archwarden.kube._reports import (
    PolicyResult,
    ReportWriteError,
    ReportWriter,
    Result,
    SyncSummary,
)
from archwarden.kube._secrets import PullSecrets
from archwarden.kube._tokens import ServiceAccountTokens
from archwarden.kube._watch import Connection, Watch, WatchError, object_key
from archwarden.kube._webhooks import WebhookRemovalError, remove_webhook_configurations

__all__ = [
    "ALL_NAMESPACES",
    "RELEASED_REASON",
    "SOURCES",
    "ApiReader",
    "ApiUnavailable",
    "CapacityResource",
    "Connection",
    "Elector",
    "EventDeduper",
    "EventPoster",
    "GateReleaseError",
    "HttpLeases",
    "IgnoredNamespaces",
    "LeaseConflict",
    "LeaseRecord",
    "ObjectChecker",
    "PatchConflict",
    "PodPatcher",
    "PolicyResult",
    "PullSecrets",
    "ReportWriteError",
    "ReportWriter",
    "Result",
    "ServiceAccountTokens",
    "SyncSummary",
    "Watch",
    "WatchError",
    "WebhookRemovalError",
    "available_sources",
    "capacity_from_object",
    "definition_name",
    "event_body",
    "holder_identity",
    "ignored_namespace",
    "instance_name",
    "lease_body",
    "list_capacity",
    "load_api_client",
    "micro_time",
    "not_counted",
    "object_key",
    "record_of",
    "release_gates",
    "remove_gate_policy",
    "remove_webhook_configurations",
    "source_of",
    "static_capacity",
    "wanted_sources",
]
