"""Events: one per (object, reason, message) per window in a replica, and one across replicas.

Each replica de-duplicates in memory. Across replicas the Event's name is derived from what it
says (the object, its uid, type, reason and message): the first replica to post creates it,
and every later post of the same decision, by any replica, finds it taken (409) and adds one
to its ``count`` with ``lastTimestamp`` and the poster's ``reportingInstance``, as client-go's
event correlator counts repeats. Three replicas admitting one Deployment make one Event with
count 3, not three Events.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
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

COUNT_ATTEMPTS = 5
"""Read-and-patch rounds to count a repeat while other replicas count theirs."""

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
        "metadata": {"name": event_name(involved, type, reason, message), "namespace": namespace},
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


def event_name(involved: Mapping[str, Any], type: str, reason: str, message: str) -> str:
    """The name every replica gives this Event: the object's name (as client-go names
    Events) and a digest of what the Event says, so the same decision is one object."""
    said = "\x00".join(
        str(part)
        for part in (
            involved.get("kind"),
            involved.get("namespace"),
            involved.get("name"),
            involved.get("uid", ""),
            type,
            reason,
            message[:MESSAGE_MAX],
        )
    )
    return (
        f"{str(involved.get('name') or '')[:200]}.{hashlib.sha256(said.encode()).hexdigest()[:16]}"
    )


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
            try:
                # A plain dict is serialised as it is; the typed model would drop nothing.
                self._core.create_namespaced_event(
                    namespace, cast(Any, body), _preload_content=False
                )
            except kubernetes.client.ApiException as exc:
                if exc.status != 409:
                    raise
                self._count(namespace, body)

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

    def _count(self, namespace: str, body: Mapping[str, Any]) -> None:
        """Another replica (or this one, past its window) posted this Event: one more."""
        name = body["metadata"]["name"]
        for _ in range(COUNT_ATTEMPTS):
            response: Any = self._core.read_namespaced_event(
                name, namespace, _preload_content=False
            )
            current = json.loads(response.data)
            patch = [
                # The resourceVersion test makes a concurrent count retry instead of losing one.
                {
                    "op": "test",
                    "path": "/metadata/resourceVersion",
                    "value": current["metadata"]["resourceVersion"],
                },
                {"op": "replace", "path": "/count", "value": int(current.get("count") or 1) + 1},
                {"op": "replace", "path": "/lastTimestamp", "value": body["lastTimestamp"]},
                {"op": "replace", "path": "/reportingInstance", "value": body["reportingInstance"]},
            ]
            try:
                self._core.patch_namespaced_event(
                    name, namespace, cast(Any, patch), _preload_content=False,
                    _content_type="application/json-patch+json",
                )  # fmt: skip
                return
            except kubernetes.client.ApiException as exc:
                if exc.status not in (409, 422):  # a failed test is 422 (resourceVersion moved)
                    raise
        raise RuntimeError(f"Event {namespace}/{name} kept changing")
