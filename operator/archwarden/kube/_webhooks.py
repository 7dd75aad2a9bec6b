"""Removing archwarden's webhook configurations (the chart's pre-delete hook)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import kubernetes

__all__ = ["WebhookRemovalError", "remove_webhook_configurations"]


class WebhookRemovalError(RuntimeError):
    """A configuration could not be deleted (one line, no traceback)."""


def remove_webhook_configurations(api_client: Any, name: str) -> list[str]:
    """Delete the validating and the mutating configuration called ``name``.

    With failurePolicy Fail, a configuration that outlives archwarden's pods rejects every pod
    in the cluster; Helm deletes webhook configurations after the Deployment, so the chart runs
    this first. Absent configurations are fine (already removed, or mutation disabled).
    Returns what was deleted, as ``kind/name``.
    """
    api = kubernetes.client.AdmissionregistrationV1Api(api_client)
    return delete_named(
        name,
        (
            ("ValidatingWebhookConfiguration", api.delete_validating_webhook_configuration),
            ("MutatingWebhookConfiguration", api.delete_mutating_webhook_configuration),
        ),
        WebhookRemovalError,
    )


def delete_named(
    name: str,
    deleters: Iterable[tuple[str, Callable[..., Any]]],
    error: type[RuntimeError],
) -> list[str]:
    """Call each ``(kind, delete)`` on ``name``; absent objects are fine. Returns what was
    deleted, as ``kind/name``; a failure raises ``error`` in one line, no traceback."""
    deleted = []
    for kind, delete in deleters:
        try:
            delete(name, _preload_content=False)
        except kubernetes.client.exceptions.ApiException as exc:
            if exc.status == 404:
                continue
            raise error(f"deleting {kind} {name}: HTTP {exc.status} {exc.reason}") from None
        except Exception as exc:  # urllib3 and socket errors: name them, no traceback
            raise error(f"deleting {kind} {name}: {type(exc).__name__}") from None
        deleted.append(f"{kind}/{name}")
    return deleted
