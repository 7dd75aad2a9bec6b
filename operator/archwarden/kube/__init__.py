"""Cluster facts archwarden reads: pull secrets, ServiceAccounts, workload owners and lists,
whether an object exists (the kubernetes client); nodes and namespaces as they change (one
list-and-watch stream each); Event de-duplication; OpenReports policy reports; removing the
webhook configurations on
uninstall."""

from archwarden.kube._api import ApiReader, load_api_client
from archwarden.kube._events import EventDeduper, EventPoster
from archwarden.kube._objects import ObjectChecker
from archwarden.kube._reports import PolicyResult, ReportWriteError, ReportWriter, Result
from archwarden.kube._secrets import PullSecrets
from archwarden.kube._watch import Connection, Watch, WatchError, object_key
from archwarden.kube._webhooks import WebhookRemovalError, remove_webhook_configurations

__all__ = [
    "ApiReader",
    "Connection",
    "EventDeduper",
    "EventPoster",
    "ObjectChecker",
    "PolicyResult",
    "PullSecrets",
    "ReportWriteError",
    "ReportWriter",
    "Result",
    "Watch",
    "WatchError",
    "WebhookRemovalError",
    "load_api_client",
    "object_key",
    "remove_webhook_configurations",
]
