"""Cluster facts archwarden reads with the kubernetes client (kopf covers watches and indexes):
pull secrets, ServiceAccounts, workload owners and lists, whether an object exists, which
capacity sources (NodePools, Cluster API node groups) the cluster serves; Event
de-duplication; and removing the webhook configurations on uninstall."""

from archwarden.kube._api import ApiReader, ApiUnavailable, load_api_client
from archwarden.kube._capacity import (
    SOURCES,
    CapacityResource,
    available_sources,
    capacity_from_object,
    list_capacity,
    source_of,
    static_capacity,
)
from archwarden.kube._events import EventDeduper, EventPoster
from archwarden.kube._objects import ObjectChecker
from archwarden.kube._secrets import PullSecrets
from archwarden.kube._webhooks import WebhookRemovalError, remove_webhook_configurations

__all__ = [
    "SOURCES",
    "ApiReader",
    "ApiUnavailable",
    "CapacityResource",
    "EventDeduper",
    "EventPoster",
    "ObjectChecker",
    "PullSecrets",
    "WebhookRemovalError",
    "available_sources",
    "capacity_from_object",
    "list_capacity",
    "load_api_client",
    "remove_webhook_configurations",
    "source_of",
    "static_capacity",
]
