"""Running helm on charts/archwarden from tests (not a test module).

helm is the real binary, built from Go modules by ``hack/cluster/build.sh`` (``make test`` builds
it first). It is found, in order, at ``$ARCHWARDEN_HELM``, ``.cluster/bin/helm`` (linked by
``hack/cluster/up.sh``) and ``~/.cache/archwarden/bin/helm-*/helm`` (the build cache; newest
version first), the same order as ``deploy/generate.sh``. Rendering is offline (``helm template``):
no cluster is needed.
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "CHART",
    "MUTATING_POLICY_API",
    "REPO_ROOT",
    "HelmError",
    "find_helm",
    "find_tool",
    "helm",
    "render",
    "set_args",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART = REPO_ROOT / "charts" / "archwarden"
RELEASE = "aw"
NAMESPACE = "archwarden-system"
# helm template is offline and fast; a generous bound still catches a hung binary.
TIMEOUT = 60
# The API the chart's scheduling-gate policy needs (schedulingGates.mode auto picks the policy
# when the cluster serves it); offline renders see it only through --api-versions.
MUTATING_POLICY_API = "admissionregistration.k8s.io/v1/MutatingAdmissionPolicy"


class HelmError(AssertionError):
    """helm exited non-zero; the message carries its stderr."""

    def __init__(self, args: list[str], returncode: int, stderr: str) -> None:
        super().__init__(f"helm {' '.join(args)} exited {returncode}:\n{stderr}")
        self.returncode = returncode
        self.stderr = stderr


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", path.parent.name))


def find_tool(name: str, variable: str) -> Path | None:
    """A Go-built tool: ``$<variable>``, else the newest ``<cache>/bin/<name>-v*/<name>``."""
    explicit = os.environ.get(variable)
    if explicit:
        return Path(explicit)
    cache = Path(os.environ.get("ARCHWARDEN_CACHE", Path.home() / ".cache" / "archwarden"))
    built = sorted(
        (p for p in (cache / "bin").glob(f"{name}-v*/{name}") if os.access(p, os.X_OK)),
        key=_version_key,
    )
    return built[-1] if built else None


def find_helm() -> Path | None:
    explicit = os.environ.get("ARCHWARDEN_HELM")
    if explicit:
        return Path(explicit)
    linked = REPO_ROOT / ".cluster" / "bin" / "helm"
    if os.access(linked, os.X_OK):
        return linked
    cache = Path(os.environ.get("ARCHWARDEN_CACHE", Path.home() / ".cache" / "archwarden"))
    built = sorted(
        (p for p in (cache / "bin").glob("helm-*/helm") if os.access(p, os.X_OK)),
        key=_version_key,
    )
    return built[-1] if built else None


def helm(*args: str, cwd: Path = REPO_ROOT) -> str:
    """Run helm; return stdout, raise :class:`HelmError` on a non-zero exit."""
    binary = find_helm()
    assert binary is not None, "helm not found (the tests skip before getting here)"
    # No kubeconfig: nothing here may talk to a cluster.
    env = {**os.environ, "KUBECONFIG": os.devnull}
    result = subprocess.run(
        [str(binary), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    if result.returncode != 0:
        raise HelmError(list(args), result.returncode, result.stderr)
    return result.stdout


def set_args(values: Mapping[str, Any]) -> list[str]:
    args = []
    for key, value in values.items():
        if isinstance(value, list | tuple) and not value:
            # `--set key={}` would be a list holding one empty string.
            args += ["--set-json", f"{key}=[]"]
            continue
        if isinstance(value, dict):
            args += ["--set-json", f"{key}={json.dumps(value)}"]
            continue
        if isinstance(value, bool):
            text = str(value).lower()
        elif isinstance(value, list | tuple):
            text = "{" + ",".join(str(item) for item in value) + "}"
        elif value is None:
            text = "null"
        else:
            text = str(value)
        args += ["--set", f"{key}={text}"]
    return args


# Renders are pure functions of their arguments (apart from generated key material): tests that
# render the same values share one helm run. Callers get copies, so they may modify them.
_RENDERED: dict[tuple[str, ...], list[dict[str, Any]]] = {}


def render(
    values: Mapping[str, Any] | None = None,
    *,
    chart: Path = CHART,
    show_only: Iterable[str] = (),
    release: str = RELEASE,
    namespace: str = NAMESPACE,
    api_versions: Iterable[str] = (),
) -> list[dict[str, Any]]:
    """``helm template`` with ``--set key=value`` per item; the parsed objects, in order.

    ``api_versions`` are added to what helm assumes the cluster serves (``--api-versions``, as
    ``.Capabilities.APIVersions`` sees them), e.g. ``group/version/Kind``.
    """
    args = ["template", release, str(chart), "--namespace", namespace]
    args += set_args(values or {})
    for api_version in api_versions:
        args += ["--api-versions", api_version]
    for template in show_only:
        args += ["--show-only", template]
    key = tuple(args)
    if key not in _RENDERED:
        _RENDERED[key] = [doc for doc in yaml.safe_load_all(helm(*args)) if doc]
    return copy.deepcopy(_RENDERED[key])
