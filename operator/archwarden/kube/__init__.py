"""Cluster facts archwarden reads with the kubernetes client (kopf covers watches and indexes):
pull secrets, ServiceAccounts, workload owners and lists; and Event de-duplication."""

from archwarden.kube._api import ApiReader, load_api_client
from archwarden.kube._events import EventDeduper, EventPoster
from archwarden.kube._secrets import PullSecrets

__all__ = ["ApiReader", "EventDeduper", "EventPoster", "PullSecrets", "load_api_client"]
