"""Writing to gated pods: archwarden's patch after a late decision, and releasing gates.

Two callers: the background decision of gated pods (``PodPatcher``, async, off the event loop)
and ``archwarden ungate`` / the chart's uninstall hook (``release_gates``, synchronous). Both
speak JSON patch with a ``test`` of the gate's index first, so a pod whose gates changed since
it was read is refused (409/422) rather than losing another controller's gate.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import kubernetes

from archwarden import policy, reasons
from archwarden.kube import _events, _webhooks

__all__ = [
    "RELEASED_REASON",
    "GateReleaseError",
    "PatchConflict",
    "PodPatcher",
    "instance_name",
    "release_gates",
    "remove_gate_policy",
]

RELEASED_REASON = reasons.SCHEDULING_GATE_RELEASED


class PatchConflict(RuntimeError):
    """The pod changed since it was read (the ``test`` failed) or is gone: read it again."""


class GateReleaseError(RuntimeError):
    """A gate could not be released or the policy removed (one line, no traceback)."""


def _failure(what: str, exc: BaseException) -> str:
    if isinstance(exc, kubernetes.client.exceptions.ApiException):
        return f"{what}: HTTP {exc.status} {exc.reason}"
    return f"{what}: {type(exc).__name__}"


class PodPatcher:
    """Applies a JSON patch to one pod, off the event loop."""

    def __init__(self, api_client: Any) -> None:
        self._core = kubernetes.client.CoreV1Api(api_client)

    async def patch(
        self, namespace: str, name: str, operations: Sequence[Mapping[str, Any]]
    ) -> None:
        body = [dict(op) for op in operations]

        def call() -> None:
            # A list body is sent as application/json-patch+json by the client.
            self._core.patch_namespaced_pod(name, namespace, body, _preload_content=False)

        try:
            await asyncio.to_thread(call)
        except kubernetes.client.exceptions.ApiException as exc:
            if exc.status in (404, 409, 422):
                raise PatchConflict(_failure(f"pod {namespace}/{name}", exc)) from None
            raise GateReleaseError(_failure(f"patching pod {namespace}/{name}", exc)) from None
        except Exception as exc:  # urllib3 and socket errors: name them, no traceback
            raise GateReleaseError(_failure(f"patching pod {namespace}/{name}", exc)) from None


def release_gates(
    api_client: Any, namespace: str | None, why: str, instance: str = "archwarden-ungate"
) -> tuple[list[str], list[str]]:
    """Remove archwarden's gate from every pod (in ``namespace``, or all), each recorded in a
    Warning Event on the pod. Returns ``(released, failures)``: ``namespace/name`` of each
    released pod, and one line per pod that could not be released."""
    core = kubernetes.client.CoreV1Api(api_client)
    released: list[str] = []
    failures: list[str] = []
    continue_token: str | None = None
    while True:
        kwargs: dict[str, Any] = {"limit": 250, "_preload_content": False}
        if continue_token:
            kwargs["_continue"] = continue_token
        try:
            response: Any = (
                core.list_namespaced_pod(namespace, **kwargs)
                if namespace
                else core.list_pod_for_all_namespaces(**kwargs)
            )
            page = json.loads(response.data)
        except Exception as exc:
            raise GateReleaseError(_failure("listing pods", exc)) from None
        for pod in page.get("items") or ():
            operations = policy.release_ops(pod)
            if not operations:
                continue
            meta = pod.get("metadata") or {}
            pod_namespace, name = str(meta.get("namespace")), str(meta.get("name"))
            key = f"{pod_namespace}/{name}"
            body: Any = [dict(op) for op in operations]
            try:
                core.patch_namespaced_pod(name, pod_namespace, body, _preload_content=False)
            except Exception as exc:
                failures.append(_failure(f"pod {key}", exc))
                continue
            released.append(key)
            target = {"apiVersion": "v1", "kind": "Pod", "metadata": meta}
            try:
                event: Any = _events.event_body(target, "Warning", RELEASED_REASON, why, instance)
                core.create_namespaced_event(pod_namespace, event, _preload_content=False)
            except Exception as exc:  # the release counts; its record is best effort
                failures.append(_failure(f"event for pod {key}", exc))
        continue_token = (page.get("metadata") or {}).get("continue")
        if not continue_token:
            return released, failures


def remove_gate_policy(api_client: Any, name: str) -> list[str]:
    """Delete the MutatingAdmissionPolicyBinding and MutatingAdmissionPolicy called ``name``
    (absent ones are fine: mode webhook or off, or an API server without the API)."""
    api = kubernetes.client.AdmissionregistrationV1Api(api_client)
    return _webhooks.delete_named(
        name,
        (
            ("MutatingAdmissionPolicyBinding", api.delete_mutating_admission_policy_binding),
            ("MutatingAdmissionPolicy", api.delete_mutating_admission_policy),
        ),
        GateReleaseError,
    )


def instance_name() -> str:
    """A reporting instance for Events posted by a one-off command."""
    return f"archwarden-ungate-{uuid.uuid4().hex[:8]}"
