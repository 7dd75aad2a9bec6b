"""The container image as `make image` builds it: four platforms, one OCI index, no emulation.

Builds with hack/image/build.sh (buildah; Debian bases from mmdebstrap, cached in
~/.cache/archwarden/images) into a throw-away local registry, reads the pushed index with
archwarden's own CLI, and starts the linux/amd64 image with podman as an arbitrary UID on a
read-only root filesystem. Marker ``image``; about 12 minutes with no base cache on two cores,
about 6 with it (docs/image.md). podman runs in a private, temporary storage with no network;
everything it and the build create is removed at the end.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tomllib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.registry import RegistryServer, start_registry

pytestmark = pytest.mark.image

ROOT = Path(__file__).resolve().parents[2]
ARCHWARDEN = str(ROOT / ".venv/bin/archwarden")
PLATFORMS = ["linux/amd64", "linux/arm64", "linux/ppc64le", "linux/s390x"]
BUILD_TIMEOUT = 30 * 60  # a cold build (four bases from Debian, four platforms) is ~12 min
RUN_TIMEOUT = 120
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


@dataclass(frozen=True)
class Pushed:
    registry: RegistryServer
    reference: str


@pytest.fixture(scope="module")
def pushed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pushed]:
    workdir = tmp_path_factory.mktemp("image-registry")
    server = start_registry(workdir, "plain")
    reference = f"{server.host}/archwarden/test:{uuid.uuid4().hex[:12]}"
    try:
        result = subprocess.run(
            [str(ROOT / "hack/image/build.sh"), reference],
            env={**os.environ, "PLATFORMS": ",".join(PLATFORMS)},
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT,
            check=False,
        )
        assert result.returncode == 0, f"build failed:\n{result.stderr[-6000:]}"
        yield Pushed(server, reference)
    finally:
        server.stop()


def _registry_json(pushed: Pushed, path: str) -> Any:
    accept = "application/vnd.oci.image.index.v1+json,application/vnd.oci.image.manifest.v1+json"
    response = httpx.get(f"{pushed.registry.url}/v2/{path}", headers={"Accept": accept}, timeout=10)
    response.raise_for_status()
    return response.json()


def _configs(pushed: Pushed) -> dict[str, dict[str, Any]]:
    """platform -> image config, read from the pushed index."""
    repository, _, tag = pushed.reference.partition("/")[2].rpartition(":")
    index = _registry_json(pushed, f"{repository}/manifests/{tag}")
    configs = {}
    for entry in index["manifests"]:
        manifest = _registry_json(pushed, f"{repository}/manifests/{entry['digest']}")
        config = _registry_json(pushed, f"{repository}/blobs/{manifest['config']['digest']}")
        configs[f"{entry['platform']['os']}/{entry['platform']['architecture']}"] = config
    return configs


def test_one_index_with_exactly_the_four_platforms(pushed: Pushed) -> None:
    result = subprocess.run(
        [
            ARCHWARDEN,
            "inspect",
            "--json",
            "--insecure-registry",
            pushed.registry.host,
            pushed.reference,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    (answer,) = json.loads(result.stdout)
    assert answer["mediaType"] == "application/vnd.oci.image.index.v1+json"
    assert answer["platforms"] == PLATFORMS


def test_each_platform_is_labelled_and_runs_as_65532(pushed: Pushed) -> None:
    revision = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    configs = _configs(pushed)
    assert sorted(configs) == PLATFORMS
    for platform, config in configs.items():
        assert config["architecture"] == platform.split("/")[1]
        labels = config["config"]["Labels"]
        assert labels["org.opencontainers.image.version"] == VERSION
        assert labels["org.opencontainers.image.revision"].removesuffix("-dirty") == revision
        assert "org.opencontainers.image.source" in labels
        assert config["config"]["User"] == "65532:65532"
        assert config["config"]["Entrypoint"] == ["python3", "-S", "-m", "archwarden"]
        # The runtime stage only copies: every history step after the Debian base (made by
        # hack/image/base.sh) is metadata or the COPY, never a RUN on the target architecture.
        steps = [h.get("created_by", "") for h in config["history"]]
        assert steps[0].startswith("hack/image/base.sh runtime"), steps[0]
        assert all("#(nop)" in step for step in steps[1:]), steps


@pytest.fixture(scope="module")
def podman(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    """podman with a private, temporary store, no events log, removed afterwards."""
    if shutil.which("podman") is None:
        subprocess.run([str(ROOT / "hack/image/deps.sh")], check=True, timeout=600)
    state = tmp_path_factory.mktemp("podman")
    command = [
        "podman",
        "--root", str(state / "root"),
        "--runroot", str(state / "run"),
        "--tmpdir", str(state / "tmp"),
        "--storage-driver", "overlay",
        "--cgroup-manager", "cgroupfs",
        "--events-backend", "none",
    ]  # fmt: skip
    try:
        yield command
    finally:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            subprocess.run([*command, "rm", "--all", "--force"], capture_output=True, timeout=60)
            subprocess.run([*command, "rmi", "--all", "--force"], capture_output=True, timeout=60)
        mounts = Path("/proc/mounts").read_text().split()
        for mount in sorted({m for m in mounts if m.startswith(str(state))}, reverse=True):
            subprocess.run(["umount", "-l", mount], capture_output=True, check=False)
        shutil.rmtree(state, ignore_errors=True)


def _run(podman: list[str], pushed: Pushed, *args: str) -> subprocess.CompletedProcess[str]:
    # As the chart runs it: an arbitrary UID with no passwd entry, read-only root filesystem.
    # --network none: the container needs no network, and podman then touches no firewall.
    return subprocess.run(
        [
            *podman, "run", "--rm", "--runtime", "runc", "--network", "none",
            "--ulimit", "nofile=20000:20000", "--ulimit", "nproc=32768:32768",
            "--user", "65532:65532", "--read-only", "--tls-verify=false",
            "--platform", "linux/amd64", *args,
        ],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )  # fmt: skip


def test_the_amd64_image_starts_as_an_arbitrary_uid_on_a_read_only_root(
    pushed: Pushed, podman: list[str]
) -> None:
    result = _run(podman, pushed, pushed.reference, "--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"archwarden {VERSION}\n"


def test_pip_is_not_importable_in_the_runtime_image(pushed: Pushed, podman: list[str]) -> None:
    probe = "import importlib.util, sys; sys.exit(importlib.util.find_spec('pip') is not None)"
    for flags in (["-S"], []):  # the entry point's interpreter flags, and plain python3
        result = _run(
            podman, pushed, "--entrypoint", "python3", pushed.reference, *flags, "-c", probe
        )
        assert result.returncode == 0, (flags, result.stderr)
    # ... while the locked packages are: the probe itself is meaningful.
    result = _run(
        podman, pushed, "--entrypoint", "python3", pushed.reference, "-S", "-c",
        "import kopf, yaml, httpx; print(yaml.__with_libyaml__)",
    )  # fmt: skip
    assert (result.returncode, result.stdout) == (0, "False\n"), result.stderr


def test_run_dev_in_the_image_says_cryptography_is_missing(
    pushed: Pushed, podman: list[str]
) -> None:
    result = _run(podman, pushed, pushed.reference, "run", "--dev")
    assert result.returncode == 2
    assert result.stderr == (
        "archwarden: error: run --dev needs the cryptography package: "
        "pip install 'archwarden[dev]'\n"
    )


def test_no_emulator_is_registered() -> None:
    # The build must not have needed (or registered) binfmt_misc handlers such as qemu-*.
    binfmt = Path("/proc/sys/fs/binfmt_misc")
    registered = [p.name for p in binfmt.iterdir()] if binfmt.is_dir() else []
    assert not [name for name in registered if name.startswith("qemu")], registered
