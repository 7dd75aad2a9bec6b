"""Event de-duplication: one Event per (object, reason, message) per window."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping
from typing import Any, cast

import cachetools
import kubernetes

__all__ = ["EventDeduper", "EventPoster"]

logger = logging.getLogger("archwarden.events")
COMPONENT = "archwarden"
MESSAGE_MAX = 1024
INSTANCE_MAX = 128  # the API server's limit for reportingInstance

# Controllers re-create pods in bursts (a 50-replica rollout); one Event per window is enough.
DEDUP_WINDOW = 600.0


class EventDeduper:
    def __init__(self, window: float = DEDUP_WINDOW, clock: Callable[[], float] = time.monotonic):
        self._seen: cachetools.TTLCache[tuple[str, ...], bool] = cachetools.TTLCache(
            10_000, window, timer=clock
        )

    def first(self, *key: str) -> bool:
        """True the first time ``key`` is seen within the window."""
        if key in self._seen:
            return False
        self._seen[key] = True
        return True


def event_body(
    target: Mapping[str, Any], type: str, reason: str, message: str, instance: str
) -> dict[str, Any]:
    """A core/v1 Event about ``target`` (an object's apiVersion, kind and metadata)."""
    meta = target.get("metadata") or {}
    namespace = str(meta.get("namespace") or "default")
    name = str(meta.get("name") or "")
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    involved = {
        "apiVersion": target.get("apiVersion"),
        "kind": str(target.get("kind") or ""),
        "name": name,
        "namespace": namespace,
    }
    if meta.get("uid"):
        involved["uid"] = meta["uid"]
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{name[:200]}.", "namespace": namespace},
        "involvedObject": involved,
        "type": type,
        "reason": reason,
        "message": message[:MESSAGE_MAX],
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "reportingInstance": instance[:INSTANCE_MAX],
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }


class EventPoster:
    """Posts core/v1 Events in the background.

    kopf's ``kopf.event`` needs the posting queue of a resource handler's context, which
    admission handlers do not have; and an admission answer must never wait for an Event.
    """

    def __init__(
        self, api_client: Any, deduper: EventDeduper | None = None, instance: str | None = None
    ) -> None:
        self._core = kubernetes.client.CoreV1Api(api_client)
        self._deduper = deduper or EventDeduper()
        self._tasks: set[asyncio.Task[None]] = set()
        # Which replica posted an Event: the pod's name (the chart sets POD_NAME), else the host
        # name. With a constant, two replicas' Events (or two archwardens') looked alike.
        named = instance or os.environ.get("POD_NAME") or socket.gethostname() or COMPONENT
        self.instance = named[:INSTANCE_MAX]

    def post(self, target: Mapping[str, Any], type: str, reason: str, message: str) -> None:
        meta = target.get("metadata") or {}
        namespace = str(meta.get("namespace") or "default")
        name = str(meta.get("name") or "")
        kind = str(target.get("kind") or "")
        if not name or not self._deduper.first(kind, namespace, name, reason, message):
            return
        body = event_body(target, type, reason, message, self.instance)
        task = asyncio.get_running_loop().create_task(self._send(namespace, body))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, namespace: str, body: dict[str, Any]) -> None:
        def call() -> None:
            # A plain dict is serialised as it is; the typed model would drop nothing we set.
            self._core.create_namespaced_event(namespace, cast(Any, body), _preload_content=False)

        try:
            await asyncio.to_thread(call)
        except Exception as exc:  # an Event is best effort; say why, once, without a traceback
            status = getattr(exc, "status", None)
            logger.warning(
                "could not post %s Event for %s/%s: %s",
                body["reason"],
                namespace,
                body["involvedObject"]["name"],
                f"HTTP {status}" if status else type(exc).__name__,
            )
