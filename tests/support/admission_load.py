"""A steady stream of admission requests through the API server, each one classified.

Every request is a server-side dry run of a pod create (nothing is stored, kwok schedules
nothing). Half of the pods archwarden must deny (an amd64-only image pinned to arm64 nodes),
half it must admit and mutate (a multi-arch image: the answer carries archwarden's
``archwarden.io/platforms`` annotation). A request counts as *answered* only when the API server's
response shows archwarden's own verdict; everything else (the API server failing to reach the
webhook, a timeout, an answer without archwarden's mark) is a *failure*, kept with its text.
Requests are sent open-loop at a fixed rate from a thread pool, so a slow answer never slows the
offered load.
"""

from __future__ import annotations

import base64
import concurrent.futures
import dataclasses
import ssl
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

__all__ = ["AdmissionLoad", "LoadReport"]

PLATFORMS_ANNOTATION = "archwarden.io/platforms"


@dataclasses.dataclass
class LoadReport:
    sent: int = 0
    denied: int = 0
    admitted: int = 0
    failures: list[str] = dataclasses.field(default_factory=list)
    latencies: list[float] = dataclasses.field(default_factory=list)
    action: tuple[float, float] = (0.0, 0.0)
    """When the action under test ran, in seconds after the load began."""
    processes: list[str] = dataclasses.field(default_factory=list)
    """What the server processes did meanwhile, as the test sampled them."""

    @property
    def answered(self) -> int:
        return self.denied + self.admitted

    def summary(self) -> str:
        lat = sorted(self.latencies) or [0.0]
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
        return (
            f"sent {self.sent}, answered by archwarden {self.answered} "
            f"(denied {self.denied}, admitted {self.admitted}), failed {len(self.failures)}; "
            f"p50 {lat[len(lat) // 2] * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms"
        )


def api_client(kubeconfig: Path, tmp: Path, **options: Any) -> httpx.Client:
    """An httpx client for the API server as the kubeconfig's user (its client certificate,
    written into ``tmp``)."""
    config = yaml.safe_load(kubeconfig.read_text())
    cluster = config["clusters"][0]["cluster"]
    user = config["users"][0]["user"]
    files = {}
    for key, name in (
        ("certificate-authority-data", "ca.crt"),
        ("client-certificate-data", "client.crt"),
        ("client-key-data", "client.key"),
    ):
        data = cluster.get(key) or user.get(key)
        (tmp / name).write_bytes(base64.b64decode(data))
        files[name] = str(tmp / name)
    context = ssl.create_default_context(cafile=files["ca.crt"])
    context.load_cert_chain(files["client.crt"], files["client.key"])
    settings: dict[str, Any] = {
        "timeout": httpx.Timeout(15.0),
        "limits": httpx.Limits(max_connections=32, max_keepalive_connections=32),
        **options,
    }
    return httpx.Client(base_url=cluster["server"], verify=context, **settings)


class AdmissionLoad:
    """``with AdmissionLoad(...) as load: ...`` then ``load.report``."""

    def __init__(
        self,
        kubeconfig: Path,
        namespace: str,
        *,
        deny_image: str,
        admit_image: str,
        rate: float = 10.0,
        workers: int = 16,
    ) -> None:
        self.namespace = namespace
        self.deny_image = deny_image
        self.admit_image = admit_image
        self.rate = rate
        self.report = LoadReport()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._pool = concurrent.futures.ThreadPoolExecutor(workers)
        self._thread = threading.Thread(target=self._run, name="admission-load", daemon=True)
        self._tmp = tempfile.TemporaryDirectory(prefix="admission-load-")
        self._client = self._client_from(kubeconfig)
        self.started = time.monotonic()
        """When the load began (time.monotonic())."""

    def _client_from(self, kubeconfig: Path) -> httpx.Client:
        return api_client(kubeconfig, Path(self._tmp.name))

    def _pod(self, deny: bool) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "containers": [{"name": "c", "image": self.deny_image if deny else self.admit_image}]
        }
        if deny:
            spec["nodeSelector"] = {"kubernetes.io/arch": "arm64"}
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"generateName": "load-", "namespace": self.namespace},
            "spec": spec,
        }

    def _one(self, deny: bool) -> None:
        started = time.monotonic()
        offset = started - self.started
        try:
            response = self._client.post(
                f"/api/v1/namespaces/{self.namespace}/pods",
                params={"dryRun": "All"},
                json=self._pod(deny),
            )
            outcome = self._classify(deny, response)
        except httpx.HTTPError as exc:
            outcome = f"client error: {type(exc).__name__}: {exc}"
        elapsed = time.monotonic() - started
        with self._lock:
            self.report.latencies.append(elapsed)
            if outcome == "denied":
                self.report.denied += 1
            elif outcome == "admitted":
                self.report.admitted += 1
            else:
                # When it happened (seconds after the load began) tells an outage from a blip.
                self.report.failures.append(f"+{offset:.1f}s {outcome}")

    @staticmethod
    def _classify(deny: bool, response: httpx.Response) -> str:
        text = response.text
        if (
            deny
            and response.status_code == 403
            and "denied the request" in text
            and "supports linux/amd64 only" in text
        ):
            return "denied"
        if not deny and response.status_code == 201:
            annotations = (response.json().get("metadata") or {}).get("annotations") or {}
            if PLATFORMS_ANNOTATION in annotations:
                return "admitted"
        try:
            message = str(response.json().get("message", text))
        except ValueError:
            message = text
        # The API server's reason comes last ("...: context deadline exceeded").
        shown = message if len(message) <= 300 else f"{message[:100]} ... {message[-200:]}"
        return f"HTTP {response.status_code}: {shown}"

    def _run(self) -> None:
        interval = 1.0 / self.rate
        next_at = time.monotonic()
        n = 0
        while not self._stop.is_set():
            self._pool.submit(self._one, n % 2 == 0)
            n += 1
            with self._lock:
                self.report.sent += 1
            next_at += interval
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def __enter__(self) -> AdmissionLoad:
        self.started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        self._pool.shutdown(wait=True)
        self._client.close()
        self._tmp.cleanup()
