"""Policy reports in the OpenReports format: one ``Report`` per namespace, one ``ClusterReport``.

``openreports.io/v1alpha1`` is the successor of ``wgpolicyk8s.io`` PolicyReports, which Kyverno
now writes and Policy Reporter reads; the CRDs come from their project
(third_party/openreports). Each result names one workload, its outcome (pass, fail, warn,
error) under the policy ``archwarden-architecture``, and the admission message.

Writes are create-or-update and idempotent: a report whose results did not change is not
written at all (no resourceVersion churn, no watch events for report readers), and a result
unchanged since the last write keeps its timestamp, which therefore says since when a workload
has been in its present state. :meth:`ReportWriter.sync` takes the full set of results and
deletes archwarden's reports in namespaces that no longer have any.

Bounded: at most ``MAX_RESULTS`` results per report (failures first; the number left out is
recorded in an annotation) and ``MESSAGE_MAX`` characters per message, so a report stays far
below etcd's 1.5 MiB object limit.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import kubernetes

__all__ = [
    "MAX_RESULTS",
    "POLICY",
    "PolicyResult",
    "ReportWriteError",
    "ReportWriter",
    "Result",
    "SyncSummary",
    "report_body",
]

GROUP = "openreports.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
POLICY = "archwarden-architecture"
SOURCE = "archwarden"
REPORT_NAME = "archwarden-architecture"
MANAGED_BY = ("app.kubernetes.io/managed-by", "archwarden")
ANNOTATION_DROPPED = "archwarden.io/results-dropped"
# 1,000 results of at most 1 KiB of message and a few hundred bytes of reference: ~1.4 MB at
# worst, under etcd's 1.5 MiB request limit; real namespaces hold far fewer workloads.
MAX_RESULTS = 1000
MESSAGE_MAX = 1024
MAX_REPORT_BYTES = 1024 * 1024
"""The results of one Report, as the API server stores them, at most: under etcd's 1.5 MiB
request limit with room for metadata. Measured as Go encodes JSON, where each ``<``, ``>`` and
``&`` takes six bytes (a registry error of ``<`` characters grows sixfold), never by count
alone."""


class Result(enum.StrEnum):
    PASS = "pass"  # noqa: S105 (a result name, not a password)
    FAIL = "fail"
    WARN = "warn"
    ERROR = "error"


# Which results survive the cap: what needs attention first.
_KEEP_ORDER = {Result.FAIL: 0, Result.ERROR: 1, Result.WARN: 2, Result.PASS: 3}


@dataclasses.dataclass(frozen=True)
class PolicyResult:
    """One workload's outcome; ``namespace`` '' for a cluster-scoped object."""

    api_version: str
    kind: str
    name: str
    result: Result
    message: str
    namespace: str = ""
    uid: str = ""

    @property
    def subject(self) -> dict[str, str]:
        ref = {"apiVersion": self.api_version, "kind": self.kind, "name": self.name}
        if self.namespace:
            ref["namespace"] = self.namespace
        if self.uid:
            ref["uid"] = self.uid
        return ref


@dataclasses.dataclass
class SyncSummary:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    failed: dict[str, int] = dataclasses.field(default_factory=dict)
    """Reports not written, by reason (``HTTP 403``, ``HTTP 422``, ``ConnectionError``)."""
    errors: list[str] = dataclasses.field(default_factory=list)
    """One line per report not written."""


class ReportWriteError(RuntimeError):
    """The API server refused or failed a report write; the message is one line."""

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason or "error"
        """Short and bounded, for counting: ``HTTP 403``, or the exception's type."""


def _stored_size(value: Any) -> int:
    """Bytes of ``value`` as Go's encoding/json writes it (HTML characters escaped)."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return len(text.encode()) + 5 * sum(text.count(c) for c in "<>&")


def _entry(result: PolicyResult, timestamp: Mapping[str, int]) -> dict[str, Any]:
    return {
        "source": SOURCE,
        "policy": POLICY,
        "result": str(result.result),
        "message": result.message[:MESSAGE_MAX],
        "resources": [result.subject],
        "timestamp": dict(timestamp),
    }


def _same_finding(entry: Mapping[str, Any]) -> str:
    """What a result says, timestamp left out: equal keys mean nothing changed."""
    return json.dumps({k: v for k, v in entry.items() if k != "timestamp"}, sort_keys=True)


def report_body(
    namespace: str,
    results: Sequence[PolicyResult],
    previous: Mapping[str, Any] | None,
    now: float,
) -> dict[str, Any]:
    """The Report (``namespace`` set) or ClusterReport for ``results``. Pure.

    Results unchanged since ``previous`` keep their timestamp; the others get ``now``.
    """
    kept = sorted(
        results,
        key=lambda r: (_KEEP_ORDER[r.result], r.kind, r.namespace, r.name, r.uid),
    )
    dropped = max(0, len(kept) - MAX_RESULTS)
    kept = kept[:MAX_RESULTS]
    # Then by size, most important first, as it will be stored: a count alone lets a tenant's
    # registry texts make a Report etcd refuses.
    size = 0
    for count, result in enumerate(kept):
        size += _stored_size(_entry(result, {"seconds": 0, "nanos": 0})) + 1
        if size > MAX_REPORT_BYTES:
            dropped += len(kept) - count
            kept = kept[:count]
            break
    kept = sorted(kept, key=lambda r: (r.kind, r.namespace, r.name, r.uid))
    old_times: dict[str, Mapping[str, int]] = {}
    for old in (previous or {}).get("results") or []:
        if isinstance(old, Mapping) and isinstance(old.get("timestamp"), Mapping):
            old_times[_same_finding(old)] = old["timestamp"]
    stamp = {"seconds": int(now), "nanos": 0}
    entries = []
    for result in kept:
        entry = _entry(result, stamp)
        entry["timestamp"] = dict(old_times.get(_same_finding(entry), stamp))
        entries.append(entry)
    summary = {str(r): 0 for r in Result} | {"skip": 0}
    for result in kept:
        summary[str(result.result)] += 1
    metadata: dict[str, Any] = {"name": REPORT_NAME, "labels": dict([MANAGED_BY])}
    if namespace:
        metadata["namespace"] = namespace
    if dropped:
        metadata["annotations"] = {ANNOTATION_DROPPED: str(dropped)}
    return {
        "apiVersion": API_VERSION,
        "kind": "Report" if namespace else "ClusterReport",
        "metadata": metadata,
        "source": SOURCE,
        "configuration": {"limits": {"maxResults": MAX_RESULTS}},
        "summary": summary,
        "results": entries,
    }


def _content(body: Mapping[str, Any]) -> str:
    """What decides whether a write is needed: our labels and annotation, and the payload."""
    meta = body.get("metadata") or {}
    labels = meta.get("labels") or {}
    annotations = meta.get("annotations") or {}
    return json.dumps(
        {
            "managed": labels.get(MANAGED_BY[0]),
            "dropped": annotations.get(ANNOTATION_DROPPED),
            **{k: body.get(k) for k in ("source", "configuration", "summary", "results")},
        },
        sort_keys=True,
    )


class ReportWriter:
    """Writes archwarden's reports with the kubernetes client (calls run in a thread)."""

    def __init__(self, api_client: Any, *, clock: Callable[[], float] = time.time) -> None:
        self._api = kubernetes.client.CustomObjectsApi(api_client)
        self._clock = clock

    async def _call(
        self,
        what: str,
        fn: Callable[..., Any],
        *args: Any,
        passthrough: tuple[int, ...] = (),
        **kwargs: Any,
    ) -> Any:
        """One API call off the event loop; failures become one-line ReportWriteErrors, but
        for the statuses in ``passthrough``, which the caller handles."""
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except kubernetes.client.exceptions.ApiException as exc:
            if exc.status in passthrough:
                raise
            raise ReportWriteError(
                f"{what}: HTTP {exc.status} {exc.reason}", f"HTTP {exc.status}"
            ) from None
        except Exception as exc:  # urllib3 and socket errors: named, no traceback
            raise ReportWriteError(f"{what}: {type(exc).__name__}", type(exc).__name__) from None

    async def available(self) -> bool:
        """Whether the API server serves the OpenReports CRDs (reports are off otherwise)."""
        try:
            await self._call(
                "list reports",
                self._api.list_cluster_custom_object,
                GROUP,
                VERSION,
                "reports",
                limit=1,
                passthrough=(404,),
            )
        except kubernetes.client.exceptions.ApiException:
            return False
        return True

    async def sync(self, results: Iterable[PolicyResult], *, prune: bool = True) -> SyncSummary:
        """Make archwarden's reports say exactly ``results``; ``prune`` deletes the reports of
        namespaces (and the ClusterReport) that no longer have any."""
        by_namespace: dict[str, list[PolicyResult]] = {}
        for result in results:
            by_namespace.setdefault(result.namespace, []).append(result)
        summary = SyncSummary()
        for namespace, found in sorted(by_namespace.items()):
            # Each namespace on its own: one stuck Terminating (403) or refused must not
            # silence every namespace after it.
            try:
                outcome = await self._write(namespace, found)
            except ReportWriteError as exc:
                summary.failed[exc.reason] = summary.failed.get(exc.reason, 0) + 1
                summary.errors.append(str(exc))
                continue
            setattr(summary, outcome, getattr(summary, outcome) + 1)
        if prune:
            summary.deleted = await self._prune(set(by_namespace))
        return summary

    def _target(self, namespace: str) -> tuple[str, tuple[Any, ...]]:
        if namespace:
            return "reports", (GROUP, VERSION, namespace, "reports")
        return "clusterreports", (GROUP, VERSION, "clusterreports")

    async def _read(self, namespace: str) -> Mapping[str, Any] | None:
        plural, where = self._target(namespace)
        get = (
            self._api.get_namespaced_custom_object
            if namespace
            else self._api.get_cluster_custom_object
        )
        try:
            found: Mapping[str, Any] = await self._call(
                f"get {plural} {namespace}/{REPORT_NAME}",
                get,
                *where,
                REPORT_NAME,
                passthrough=(404,),
            )
        except kubernetes.client.exceptions.ApiException:
            return None
        return found

    async def _write(self, namespace: str, results: Sequence[PolicyResult]) -> str:
        plural, where = self._target(namespace)
        what = f"{plural} {namespace + '/' if namespace else ''}{REPORT_NAME}"
        create: Callable[..., Any]
        replace: Callable[..., Any]
        if namespace:
            create = self._api.create_namespaced_custom_object
            replace = self._api.replace_namespaced_custom_object
        else:
            create = self._api.create_cluster_custom_object
            replace = self._api.replace_cluster_custom_object
        # Two rounds: a conflict (someone wrote in between, or created it first) re-reads once.
        for attempt in range(2):
            current = await self._read(namespace)
            body = report_body(namespace, results, current, self._clock())
            try:
                if current is None:
                    await self._call(f"create {what}", create, *where, body, passthrough=(409,))
                    return "created"
                if _content(current) == _content(body):
                    return "unchanged"
                meta = current.get("metadata") or {}
                body["metadata"] = {
                    **meta,
                    "labels": {**(meta.get("labels") or {}), **body["metadata"]["labels"]},
                    "annotations": _annotations(meta, body["metadata"]),
                }
                await self._call(
                    f"update {what}", replace, *where, REPORT_NAME, body, passthrough=(409,)
                )
                return "updated"
            except kubernetes.client.exceptions.ApiException as exc:
                if attempt == 0:
                    continue  # 409: re-read and try once more
                raise ReportWriteError(
                    f"write {what}: HTTP {exc.status} {exc.reason}", f"HTTP {exc.status}"
                ) from None
        raise AssertionError("unreachable: the second round returns or raises")

    async def _prune(self, keep: set[str]) -> int:
        deleted = 0
        selector = "=".join(MANAGED_BY)
        for plural in ("reports", "clusterreports"):
            listed = await self._call(
                f"list {plural}",
                self._api.list_cluster_custom_object,
                GROUP,
                VERSION,
                plural,
                label_selector=selector,
            )
            for item in listed.get("items") or []:
                meta = item.get("metadata") or {}
                namespace = str(meta.get("namespace") or "")
                if meta.get("name") != REPORT_NAME or namespace in keep:
                    continue
                _, where = self._target(namespace)
                delete = (
                    self._api.delete_namespaced_custom_object
                    if namespace
                    else self._api.delete_cluster_custom_object
                )
                try:
                    await self._call(
                        f"delete {plural}", delete, *where, REPORT_NAME, passthrough=(404,)
                    )
                except kubernetes.client.exceptions.ApiException:
                    continue  # already gone is what we wanted
                deleted += 1
        return deleted


def _annotations(current: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, str]:
    """The object's annotations with ours set, or removed when nothing was dropped."""
    merged = dict(current.get("annotations") or {})
    merged.pop(ANNOTATION_DROPPED, None)
    merged.update(desired.get("annotations") or {})
    return merged
