"""Cluster facts archwarden reads with the kubernetes client (kopf covers watches and indexes):
pull secrets, ServiceAccounts, workload owners and lists, whether an object exists; Event
de-duplication; OpenReports policy reports; and removing the webhook configurations on
uninstall."""

from archwarden.kube._api import ApiReader, load_api_client
from archwarden.kube._events import EventDeduper, EventPoster
from archwarden.kube._objects import ObjectChecker
from archwarden.kube._reports import PolicyResult, ReportWriteError, ReportWriter, Result
from archwarden.kube._secrets import PullSecrets
from archwarden.kube._webhooks import WebhookRemovalError, remove_webhook_configurations

__all__ = [
    "ApiReader",
    "EventDeduper",
    "EventPoster",
    "ObjectChecker",
    "PolicyResult",
    "PullSecrets",
    "ReportWriteError",
    "ReportWriter",
    "Result",
    "WebhookRemovalError",
    "load_api_client",
    "remove_webhook_configurations",
]
