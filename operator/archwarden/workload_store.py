"""The cluster's top-level workloads, kept as they change, for re-evaluation (and audits).

One ``kube.Watch`` stream per kind; of each object only what a decision reads is kept
(``policy.Workload``) and what an Event needs to name it. Objects a controller owns (a
Deployment's ReplicaSets, a CronJob's Jobs) are judged through their owner and not kept. The
store has a bound: beyond ``limit`` workloads new ones are counted, not kept, and a warning says
so once, so a cluster far beyond what archwarden was sized for cannot exhaust its memory.

Each workload is bounded too: a tenant decides how many tolerations, selector terms and values
a template has. A template whose projection (``PodTemplate.projected_bytes``) is over
``limits.templateBytes`` is not kept: its entry says how large it was (``Entry.oversized``) and
holds a placeholder template, which readers must not judge (the audit lists such a workload
as not checked, as admission leaves it to the failure policy).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Collection, Iterator, Mapping
from typing import Any

from archwarden import kube, policy, settings

__all__ = ["KINDS", "Entry", "Key", "WorkloadStore", "oversized_message"]

logger = logging.getLogger("archwarden")

KINDS = {
    "Deployment": ("apps/v1", "deployments"),
    "StatefulSet": ("apps/v1", "statefulsets"),
    "DaemonSet": ("apps/v1", "daemonsets"),
    "ReplicaSet": ("apps/v1", "replicasets"),
    "Job": ("batch/v1", "jobs"),
    "CronJob": ("batch/v1", "cronjobs"),
}
"""Kinds kept, with their apiVersion and plural."""

MAX_WORKLOADS = 50_000
"""A bound far above the 10,000 workloads archwarden is measured with (bench/scale.py)."""

SKIP_ANNOTATION = "archwarden.io/skip"
"""As ``admission.ANNOTATION_SKIP`` (not imported: the store sits below admission)."""

Key = tuple[str, str, str]
"""``(kind, namespace, name)``."""


@dataclasses.dataclass(frozen=True)
class Entry:
    ref: Mapping[str, Any]
    """apiVersion, kind, name, namespace and uid: enough to post an Event about the object."""
    workload: policy.Workload
    skip: bool = False
    """The object carries ``archwarden.io/skip: "true"`` (whether that is allowed is the
    reader's to decide: ``Admission.skip_refusal``)."""
    oversized: int = 0
    """The projected bytes of a template over the store's ``template_bytes``, or the lower
    bound that already passed it (``policy.least_projected_bytes``); 0: kept whole.
    Then ``workload.template`` is a placeholder without containers or constraints: judging
    it would say something of a template nobody wrote."""


_PLACEHOLDER = policy.PodTemplate(containers=())


def oversized_message(size: int, limit: int) -> str:
    """Why an oversized entry was not checked."""
    return f"pod template of at least {size} bytes is over limits.templateBytes ({limit})"


class WorkloadStore:
    def __init__(
        self,
        excluded_namespaces: Collection[str] = (),
        limit: int = MAX_WORKLOADS,
        template_bytes: int = settings.LimitsSettings().template_bytes,
    ) -> None:
        self._excluded = frozenset(excluded_namespaces)
        self._limit = limit
        self.template_bytes = template_bytes
        """``limits.templateBytes``: templates projected larger are not kept."""
        self._entries: dict[Key, Entry] = {}
        self.refused = 0
        """Workloads not kept because the store was full."""
        self.oversized = 0
        """Entries kept without their template (``Entry.oversized``)."""
        self.on_removed: Callable[[Key], None] = lambda _key: None
        """Told of every key that leaves the store (deleted, now owned, or invalid)."""

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[Key]:
        return iter(list(self._entries))

    def get(self, key: Key) -> Entry | None:
        return self._entries.get(key)

    def items(self) -> list[tuple[Key, Entry]]:
        return list(self._entries.items())

    def watches(self, connection: kube.Connection) -> list[kube.Watch]:
        """One stream per kind, feeding this store."""
        return [self._watch(connection, kind) for kind in KINDS]

    def _watch(self, connection: kube.Connection, kind: str) -> kube.Watch:
        api_version, plural = KINDS[kind]

        def on_object(body: Mapping[str, Any]) -> None:
            self.put(kind, api_version, body)

        def on_deleted(body: Mapping[str, Any]) -> None:
            self.remove(_key(kind, body))

        def on_listed(names: set[str]) -> None:
            self.keep_only(kind, names)

        return kube.Watch(
            connection,
            f"/apis/{api_version}/{plural}",
            on_object=on_object,
            on_deleted=on_deleted,
            on_listed=on_listed,
        )

    def put(self, kind: str, api_version: str, body: Mapping[str, Any]) -> None:
        key = _key(kind, body)
        meta = body.get("metadata") or {}
        if key[1] in self._excluded or any(
            isinstance(ref, Mapping) and ref.get("controller")
            for ref in meta.get("ownerReferences") or ()
        ):
            self.remove(key)  # owned objects are judged through their owner
            return
        # Counted before anything is built: extracting a template of 35,000 tolerations takes
        # a third of a second of the event loop, and a relist brings every one of them again.
        least = policy.least_projected_bytes(body, kind=kind)
        try:
            workload = (
                policy.Workload(kind, key[2], key[1], _PLACEHOLDER)
                if least > self.template_bytes
                else policy.extract({**body, "kind": kind})
            )
        except policy.InvalidWorkload:
            self.remove(key)
            return
        if key not in self._entries and len(self._entries) >= self._limit:
            if not self.refused:
                logger.warning("more than %d workloads: the rest are not re-evaluated", self._limit)
            self.refused += 1
            return
        ref = {
            "apiVersion": api_version,
            "kind": kind,
            "metadata": {"name": key[2], "namespace": key[1], "uid": meta.get("uid")},
        }
        annotations = meta.get("annotations") or {}
        skip = str(annotations.get(SKIP_ANNOTATION, "")).lower() == "true"
        # Measured as written, so a template is oversized here exactly when it is for admission.
        size = least if least > self.template_bytes else workload.template.projected_bytes
        if size > self.template_bytes:
            workload = dataclasses.replace(workload, template=_PLACEHOLDER)
        else:
            size = 0
            workload = _without_repeats(workload)
        old = self._entries.get(key)
        if old is not None and old.oversized:
            self.oversized -= 1
        if size:
            self.oversized += 1
        self._entries[key] = Entry(ref, workload, skip, size)

    def remove(self, key: Key) -> None:
        old = self._entries.pop(key, None)
        if old is not None:
            if old.oversized:
                self.oversized -= 1
            self.on_removed(key)

    def keep_only(self, kind: str, names: set[str]) -> None:
        """After a complete list of ``kind``: drop what is no longer there."""
        for key in [k for k in self._entries if k[0] == kind and f"{k[1]}/{k[2]}" not in names]:
            self.remove(key)


def _without_repeats(workload: policy.Workload) -> policy.Workload:
    """The workload with each toleration once: a pod tolerates a taint when any toleration
    matches it, so a repeated one changes no decision, only what is kept."""
    tolerations = workload.template.tolerations
    distinct = tuple(dict.fromkeys(tolerations))
    if len(distinct) == len(tolerations):
        return workload  # the usual case: kept as extracted
    template = dataclasses.replace(workload.template, tolerations=distinct)
    return dataclasses.replace(workload, template=template)


def _key(kind: str, body: Mapping[str, Any]) -> Key:
    meta = body.get("metadata") or {}
    return kind, str(meta.get("namespace") or ""), str(meta.get("name") or "")
