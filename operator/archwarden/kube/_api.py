"""A thin async face over the synchronous kubernetes client (calls run in a thread)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import kubernetes

__all__ = ["ApiReader", "NotFound", "load_api_client"]


class NotFound(LookupError):
    pass


class ApiUnavailable(RuntimeError):
    pass


def load_api_client(kubeconfig: str | None = None) -> Any:
    """The usual lookup: --kubeconfig, then $KUBECONFIG / ~/.kube/config, then in-cluster."""
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
    return kubernetes.client.ApiClient(configuration)


class ApiReader:
    """Reads that kopf does not cover. Each call is one GET or LIST, run off the event loop."""

    def __init__(self, api_client: Any) -> None:
        self._client = api_client

    async def _get(self, path: str) -> Mapping[str, Any]:
        def call() -> Any:
            return self._client.call_api(
                path,
                "GET",
                response_type="object",
                auth_settings=["BearerToken"],
                _return_http_data_only=True,
                _preload_content=True,
                header_params={"Accept": "application/json"},
            )

        try:
            result = await asyncio.to_thread(call)
        except kubernetes.client.exceptions.ApiException as exc:
            if exc.status == 404:
                raise NotFound(path) from None
            raise ApiUnavailable(f"GET {path}: HTTP {exc.status} {exc.reason}") from None
        except Exception as exc:  # urllib3 and socket errors: name them, no traceback
            raise ApiUnavailable(f"GET {path}: {type(exc).__name__}") from None
        if not isinstance(result, Mapping):
            raise ApiUnavailable(f"GET {path}: unexpected answer")
        return result

    async def secret(self, namespace: str, name: str) -> Mapping[str, Any]:
        return await self._get(f"/api/v1/namespaces/{namespace}/secrets/{name}")

    async def service_account(self, namespace: str, name: str) -> Mapping[str, Any]:
        return await self._get(f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}")

    async def object(
        self, api_version: str, kind_plural: str, namespace: str, name: str
    ) -> Mapping[str, Any]:
        prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        return await self._get(f"{prefix}/namespaces/{namespace}/{kind_plural}/{name}")

    async def list(self, api_version: str, kind_plural: str) -> list[Mapping[str, Any]]:
        prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        result = await self._get(f"{prefix}/{kind_plural}")
        items = result.get("items")
        return [i for i in items if isinstance(i, Mapping)] if isinstance(items, list) else []
