"""A thin async face over the synchronous kubernetes client (calls run in a thread).

Every call has a timeout (``kube.requestTimeoutSeconds``): without one, a read sent on a pooled
connection that a load balancer had stopped forwarding waited for the kernel to give up (many
minutes), holding its thread, and every review waited its whole pull-secret budget. A GET that
times out is tried once more on a new connection (urllib3 closes the one that failed), and a
call that fails for good drops every pooled connection, which likely died with it. Sockets carry
TCP keepalive.
"""

from __future__ import annotations

import asyncio
import builtins
import json
from collections.abc import Callable, Mapping
from typing import Any

import kubernetes
import urllib3

from archwarden.kube import _watch

__all__ = ["REQUEST_TIMEOUT", "ApiReader", "ApiUnavailable", "NotFound", "load_api_client"]

REQUEST_TIMEOUT = 10.0
"""Seconds a call may wait to connect, and then for each read (not the whole answer: a large
LIST keeps going while bytes arrive)."""
RETRIES = urllib3.Retry(total=3, read=1)
"""urllib3's default (three attempts more) but a single retry after a read failed: a read that
timed out is retried once, on a new connection, and then the call fails."""

# A list of custom objects is held whole; past this many the rest is left out (bounded work).
MAX_CUSTOM_ITEMS = 5000


class NotFound(LookupError):
    pass


class ApiUnavailable(RuntimeError):
    pass


class _TimedApiClient(kubernetes.client.ApiClient):
    """Every request with a timeout unless its caller set one; a failed one drops the pool."""

    def __init__(self, configuration: Any, request_timeout: float) -> None:
        super().__init__(configuration)
        self.request_timeout = request_timeout

    def call_api(
        self,
        method: str,
        url: str,
        header_params: Any = None,
        body: Any = None,
        post_params: Any = None,
        _request_timeout: Any = None,
    ) -> Any:
        if _request_timeout is None:
            _request_timeout = (self.request_timeout, self.request_timeout)
        try:
            return super().call_api(
                method, url, header_params, body, post_params, _request_timeout=_request_timeout
            )
        except urllib3.exceptions.HTTPError:  # MaxRetryError among them
            # Connections opened alongside a dead one (same route, same load balancer) are
            # likely dead too: the next calls open new ones.
            self.rest_client.pool_manager.clear()
            raise


def load_api_client(
    kubeconfig: str | None = None, *, request_timeout: float = REQUEST_TIMEOUT
) -> Any:
    """The usual lookup: --kubeconfig, then $KUBECONFIG / ~/.kube/config, then in-cluster.

    ``request_timeout``: seconds to connect and for each read of every call."""
    configuration = kubernetes.client.Configuration()
    if kubeconfig:
        kubernetes.config.load_kube_config(
            config_file=kubeconfig, client_configuration=configuration
        )
    else:
        try:
            kubernetes.config.load_kube_config(client_configuration=configuration)
        except (kubernetes.config.ConfigException, OSError, TypeError):
            kubernetes.config.load_incluster_config(client_configuration=configuration)
    # urllib3 replaces its default socket options with these: keep TCP_NODELAY among them.
    configuration.socket_options = [
        *urllib3.connection.HTTPConnection.default_socket_options,
        *_watch.keepalive_options(),
    ]
    configuration.retries = RETRIES
    return _TimedApiClient(configuration, request_timeout)


class ApiReader:
    """Reads that kopf does not cover. Each call is one GET or LIST, run off the event loop.

    Calls go through the typed API classes with ``_preload_content=False`` and plain JSON is
    decoded here: the result is the same wire dict kopf hands to handlers.
    """

    def __init__(self, api_client: Any) -> None:
        self._client = api_client
        core = kubernetes.client.CoreV1Api(api_client)
        apps = kubernetes.client.AppsV1Api(api_client)
        batch = kubernetes.client.BatchV1Api(api_client)
        self._lists: dict[tuple[str, str], Callable[..., Any]] = {
            ("v1", "nodes"): core.list_node,
            ("v1", "pods"): core.list_pod_for_all_namespaces,
            ("apps/v1", "deployments"): apps.list_deployment_for_all_namespaces,
            ("apps/v1", "statefulsets"): apps.list_stateful_set_for_all_namespaces,
            ("apps/v1", "daemonsets"): apps.list_daemon_set_for_all_namespaces,
            ("apps/v1", "replicasets"): apps.list_replica_set_for_all_namespaces,
            ("batch/v1", "jobs"): batch.list_job_for_all_namespaces,
            ("batch/v1", "cronjobs"): batch.list_cron_job_for_all_namespaces,
        }
        self._core = core
        self._apis = kubernetes.client.ApisApi(api_client)
        self._custom = kubernetes.client.CustomObjectsApi(api_client)
        self._reads: dict[str, Callable[..., Any]] = {
            "ReplicaSet": apps.read_namespaced_replica_set,
            "Job": batch.read_namespaced_job,
        }
        # Objects archwarden posts Events about (the reviewed kinds), read to tell whether an
        # unauthenticated review is about a real one.
        self._objects: dict[str, Callable[..., Any]] = {
            "Pod": core.read_namespaced_pod,
            "Deployment": apps.read_namespaced_deployment,
            "StatefulSet": apps.read_namespaced_stateful_set,
            "DaemonSet": apps.read_namespaced_daemon_set,
            "ReplicaSet": apps.read_namespaced_replica_set,
            "Job": batch.read_namespaced_job,
            "CronJob": batch.read_namespaced_cron_job,
        }

    async def _call(
        self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> Mapping[str, Any]:
        def call() -> Any:
            response = fn(*args, _preload_content=False, **kwargs)
            return json.loads(response.data)

        try:
            result = await asyncio.to_thread(call)
        except kubernetes.client.exceptions.ApiException as exc:
            if exc.status == 404:
                raise NotFound(what) from None
            raise ApiUnavailable(f"{what}: HTTP {exc.status} {exc.reason}") from None
        except Exception as exc:  # urllib3, socket and JSON errors: name them, no traceback
            raise ApiUnavailable(f"{what}: {type(exc).__name__}") from None
        if not isinstance(result, Mapping):
            raise ApiUnavailable(f"{what}: unexpected answer")
        return result

    async def secret(self, namespace: str, name: str) -> Mapping[str, Any]:
        return await self._call(
            f"secret {namespace}/{name}", self._core.read_namespaced_secret, name, namespace
        )

    async def service_account(self, namespace: str, name: str) -> Mapping[str, Any]:
        return await self._call(
            f"serviceaccount {namespace}/{name}",
            self._core.read_namespaced_service_account,
            name,
            namespace,
        )

    async def list(self, api_version: str, plural: str) -> list[Mapping[str, Any]]:
        fn = self._lists.get((api_version, plural))
        if fn is None:
            raise ValueError(f"no list call for {api_version} {plural}")
        result = await self._call(f"list {plural}", fn)
        items = result.get("items")
        return [i for i in items if isinstance(i, Mapping)] if isinstance(items, list) else []

    async def preferred_versions(self) -> dict[str, str]:
        """API group -> the version the API server prefers (discovery, /apis)."""
        result = await self._call("API discovery", self._apis.get_api_versions)
        versions: dict[str, str] = {}
        for group in result.get("groups") or []:
            if not isinstance(group, Mapping):
                continue
            preferred = group.get("preferredVersion")
            if isinstance(preferred, Mapping) and isinstance(group.get("name"), str):
                versions[group["name"]] = str(preferred.get("version") or "")
        return versions

    async def resource_plurals(self, group: str, version: str) -> frozenset[str]:
        """The resources ``group/version`` serves (their plural names)."""
        result = await self._call(
            f"API discovery {group}/{version}", self._custom.get_api_resources, group, version
        )
        return frozenset(
            str(r.get("name"))
            for r in result.get("resources") or []
            if isinstance(r, Mapping) and "/" not in str(r.get("name"))
        )

    async def list_custom(
        self,
        group: str,
        version: str,
        plural: str,
        *,
        namespace: str | None = None,
        limit: int = MAX_CUSTOM_ITEMS,
    ) -> builtins.list[Mapping[str, Any]]:  # the method list() shadows the builtin here
        """Objects of a custom resource in one namespace, or in every namespace when None (at
        most ``limit``)."""
        if namespace is None:
            result = await self._call(
                f"list {plural}.{group}",
                self._custom.list_cluster_custom_object,
                group,
                version,
                plural,
                limit=limit,
            )
        else:
            result = await self._call(
                f"list {plural}.{group} in {namespace}",
                self._custom.list_namespaced_custom_object,
                group,
                version,
                namespace,
                plural,
                limit=limit,
            )
        items = result.get("items")
        return [i for i in items if isinstance(i, Mapping)] if isinstance(items, list) else []

    def readable(self, kind: str) -> bool:
        """Whether :meth:`read` knows ``kind``."""
        return kind in self._objects

    async def read(self, kind: str, namespace: str, name: str) -> Mapping[str, Any]:
        """One namespaced object of a reviewed kind; NotFound when it does not exist."""
        read = self._objects.get(kind)
        if read is None:
            raise ValueError(f"no read call for {kind}")
        return await self._call(f"{kind} {namespace}/{name}", read, name, namespace)

    async def controller_of(self, kind: str, namespace: str, name: str) -> Mapping[str, Any] | None:
        """The controller ownerReference of a ReplicaSet or Job (its Deployment or CronJob)."""
        read = self._reads.get(kind)
        if read is None:
            return None
        body = await self._call(f"{kind} {namespace}/{name}", read, name, namespace)
        for ref in (body.get("metadata") or {}).get("ownerReferences") or []:
            if isinstance(ref, Mapping) and ref.get("controller"):
                return ref
        return None
