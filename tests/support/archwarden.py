"""Run ``archwarden run --dev`` as a real process against the local cluster (tests and demo)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.support.registry import free_port

ROOT = Path(__file__).resolve().parents[2]
ARCHWARDEN = ROOT / ".venv" / "bin" / "archwarden"


class ArchwardenProcess:
    """One archwarden, with its own config, ports, certificates and log file."""

    def __init__(
        self,
        workdir: Path,
        kubeconfig: Path,
        config: dict[str, Any],
        *,
        dev_name: str = "archwarden.io",
        dev: bool = True,
        uid: int | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.dev = dev
        self.env = dict(env or {})
        """Added to this process's environment (POD_NAME, to tell replicas apart)."""
        # Run as this UID/GID (no passwd entry, no USER/LOGNAME), as the image does in a pod.
        self.uid = uid
        self.workdir = workdir
        self.dev_name = dev_name
        self.kubeconfig = kubeconfig
        self.webhook_port = free_port()
        self.metrics_port = free_port()
        self.config = {
            **config,
            "webhook": {"port": self.webhook_port, **config.get("webhook", {})},
            "metrics": {"port": self.metrics_port, "address": "127.0.0.1"},
        }
        self.log_file = workdir / "archwarden.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}"

    def start(self, timeout: float = 60) -> ArchwardenProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config_file = self.workdir / "config.yaml"
        config_file.write_text(yaml.safe_dump(self.config))
        command = [
            str(ARCHWARDEN) if ARCHWARDEN.exists() else sys.executable,
            *([] if ARCHWARDEN.exists() else ["-m", "archwarden.cli"]),
            "run",
            *(["--dev", "--dev-dir", str(self.workdir / "dev")] if self.dev else []),
            "--config",
            str(config_file),
            "--kubeconfig",
            str(self.kubeconfig),
            *(["--dev-name", self.dev_name] if self.dev else []),
        ]
        env = {**os.environ, **self.env}
        if self.uid is not None:
            # A user namespace where this process is UID/GID `uid` with no passwd entry and no
            # USER/LOGNAME, as the image's process is in a pod. (A real setuid would also lose
            # access to the virtualenv's interpreter under a private home directory.)
            for name in ("USER", "LOGNAME", "LNAME", "USERNAME"):
                env.pop(name, None)
            command = [
                "unshare",
                "--user",
                f"--map-user={self.uid}",
                f"--map-group={self.uid}",
                *command,
            ]
        log = self.log_file.open("ab")
        self._process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"archwarden exited early:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.metrics_url}/readyz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"archwarden not ready within {timeout}s:\n{self.log_tail()}")

    def stop(self, timeout: float = 20) -> None:
        if self._process is None or self._process.poll() is not None:
            return
        # SIGTERM lets kopf remove the webhook configurations it registered.
        os.killpg(self._process.pid, signal.SIGTERM)
        try:
            self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self._process.pid, signal.SIGKILL)
            self._process.wait(5)

    def kill(self) -> None:
        """SIGKILL, as a lost node or the OOM killer: no clean-up runs."""
        if self._process is None or self._process.poll() is not None:
            return
        os.killpg(self._process.pid, signal.SIGKILL)
        self._process.wait(10)

    def metrics(self) -> str:
        return httpx.get(f"{self.metrics_url}/metrics", timeout=5).text

    def metric(self, name: str, **labels: str) -> float:
        """The value of one sample (0 when absent)."""
        for line in self.metrics().splitlines():
            if not line.startswith(name + "{") and not line.startswith(name + " "):
                continue
            head, _, value = line.rpartition(" ")
            if all(f'{k}="{v}"' in head for k, v in labels.items()):
                return float(value)
        return 0.0

    def log_tail(self, lines: int = 60) -> str:
        if not self.log_file.exists():
            return "(no log)"
        return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
