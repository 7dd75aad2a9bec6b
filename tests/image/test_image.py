"""The container image as `make image` builds it: four platforms, one OCI index, no emulation.

Builds with hack/image/build.sh (buildah; Debian bases from mmdebstrap, cached in
~/.cache/archwarden/images) into a throw-away local registry, reads the pushed index with
archwarden's own CLI, and starts the linux/amd64 image with podman as an arbitrary UID on a
read-only root filesystem. Then every platform's own interpreter runs under qemu-user (Debian's
qemu-user-static, started directly: no binfmt_misc handler), on that platform's root filesystem
as pulled from the registry: it imports every module of archwarden, every top-level package and
every shared object in /opt/archwarden/lib (a wheel of the wrong ABI fails here, not on a user's
node), prints the version and checks a sample manifest against the local registry. Marker
``image``; about 12 minutes with no base cache on two cores, about 6 with it (docs/image.md).
podman runs in a private, temporary storage with no network; everything it, qemu and the build
create is removed at the end.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pkgutil
import posixpath
import re
import shutil
import subprocess
import tarfile
import tomllib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.images import Seeder, unique_repo
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


# --- every platform under qemu-user ------------------------------------------------------------
#
# The image's own interpreter of each platform, run as `qemu-ARCH-static -L ROOTFS
# ROOTFS/usr/bin/python3 -S ...` on the root filesystem pulled from the registry. The emulator is
# started directly, so nothing is registered with binfmt_misc (test_no_emulator_is_registered
# stays true); hack/image/deps.sh unpacks the emulators from Debian's qemu-user-static.
#
# What -L does (qemu's util/path.c): the guest's ELF interpreter, and every absolute path the
# guest opens, is looked up under ROOTFS first and on the host only when ROOTFS has no such file.
# So the image's PYTHONPATH=/opt/archwarden/lib, the dynamic loader's /usr/lib/<triplet>/*.so and
# the guest's /tmp all resolve inside the image. The interpreter is given by its host path, so
# python derives sys.prefix = ROOTFS/usr from it and finds the image's standard library without
# PYTHONHOME. The fallback to the host is why the probe also checks that every shared object it
# mapped came from ROOTFS: under qemu-x86_64 a library missing from the image would otherwise
# load from this (amd64) machine unnoticed. (It did: libstdc++.so.6 for frozenlist, before the
# runtime base had libstdc++6.) Locale data (/usr/lib/locale, absent from the image) may still
# come from the host; it is not code.

# OCI architecture -> qemu's name for it, which is also what the guest's uname says.
QEMU_ARCH = {"amd64": "x86_64", "arm64": "aarch64", "ppc64le": "ppc64le", "s390x": "s390x"}
QEMU_TIMEOUT = 300  # the import probe takes about 10 s per platform on two cores
LIB = "/opt/archwarden/lib"
# What the image lacks on purpose (docs/image.md): cryptography, only for `run --dev`; PyYAML is
# built without libyaml, and its _yaml shim then raises exactly this.
EXPECTED_IMPORT_FAILURES = {
    "archwarden.certs": "ModuleNotFoundError: No module named 'cryptography'",
    "_yaml": "ModuleNotFoundError: No module named '_yaml'",
}
SHARED_OBJECT = r"\.so(\.\d+)*$"

# Runs in the guest with the image's interpreter and environment; prints one JSON object.
# Extension modules (a name python's import system accepts: package path of identifiers plus one
# of this interpreter's EXTENSION_SUFFIXES) are imported; any other shared object (a wheel's
# vendored *.libs/, or an extension tagged for another platform) is loaded with ctypes.
PROBE = r"""
import ctypes, importlib, importlib.machinery, json, os, pkgutil, re, sys

lib = sys.argv[1]
result = {"modules": [], "extensions": [], "libraries": [], "failed": {}}

def load(kind, name, action):
    try:
        action()
    except BaseException as exc:
        result["failed"][name] = f"{type(exc).__name__}: {exc}"
    else:
        result[kind].append(name)

import archwarden
for info in pkgutil.walk_packages(archwarden.__path__, "archwarden."):
    if info.name != "archwarden.__main__":  # runs the CLI when imported
        load("modules", info.name, lambda n=info.name: importlib.import_module(n))
for info in pkgutil.iter_modules([lib]):
    load("modules", info.name, lambda n=info.name: importlib.import_module(n))
suffixes = sorted(importlib.machinery.EXTENSION_SUFFIXES, key=len, reverse=True)
for top, dirs, files in os.walk(lib):
    dirs.sort()
    for file in sorted(files):
        if not re.search(sys.argv[2], file):
            continue
        rel = os.path.relpath(os.path.join(top, file), lib)
        stem = next((rel[: -len(s)] for s in suffixes if rel.endswith(s)), "")
        parts = stem.split(os.sep)
        if all(part.isidentifier() for part in parts):
            load("extensions", rel, lambda n=".".join(parts): importlib.import_module(n))
        else:
            load("libraries", rel, lambda p=os.path.join(top, file): ctypes.CDLL(p))
with open("/proc/self/maps") as maps:
    mapped = {line.split(None, 5)[5].strip() for line in maps if len(line.split(None, 5)) > 5}
result["mapped"] = sorted(m for m in mapped if re.search(sys.argv[2], m))
result["machine"] = os.uname().machine
print(json.dumps(result))
"""


@dataclass(frozen=True)
class Guest:
    """One platform of the pushed image, unpacked, with its entry point under qemu-user."""

    platform: str
    rootfs: Path
    qemu: str
    python: Path  # the entry point's python3, found on the image's PATH, as a host path
    flags: list[str]  # the entry point's interpreter flags (-S)
    env: dict[str, str]
    workdir: Path

    @property
    def machine(self) -> str:
        return QEMU_ARCH[self.platform.split("/")[1]]

    def python3(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.qemu, "-L", str(self.rootfs), str(self.python), *args],
            env=self.env,
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=QEMU_TIMEOUT,
            check=False,
        )

    def archwarden(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.python3(*self.flags, "-m", "archwarden", *args)


@pytest.fixture(scope="module")
def emulators() -> dict[str, str]:
    """OCI architecture -> qemu-user emulator; hack/image/deps.sh unpacks missing ones."""
    subprocess.run([str(ROOT / "hack/image/deps.sh")], check=True, timeout=600)
    cache = Path(os.environ.get("ARCHWARDEN_CACHE", Path.home() / ".cache/archwarden"))
    found = {}
    for arch, name in QEMU_ARCH.items():
        binary = shutil.which(f"qemu-{name}-static") or str(cache / f"qemu/bin/qemu-{name}-static")
        assert os.access(binary, os.X_OK), binary
        found[arch] = binary
    return found


def _unpack(layer: bytes, rootfs: Path) -> None:
    """One image layer onto rootfs, unprivileged semantics: no device nodes; whiteouts applied;
    absolute symlinks made relative, so that the host kernel (which follows them when qemu opens
    a path) stays inside rootfs instead of reaching this machine's own files."""

    def keep(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo | None:
        if member.isdev():
            return None
        name = member.name.lstrip("/")
        if member.issym() and member.linkname.startswith("/"):
            link = posixpath.relpath(member.linkname, "/" + posixpath.dirname(name))
            member = member.replace(linkname=link, deep=False)
        return tarfile.data_filter(member, dest)

    with tarfile.open(fileobj=io.BytesIO(layer)) as tar:
        members = []
        for member in tar.getmembers():
            directory, _, base = member.name.lstrip("/").rpartition("/")
            if base == ".wh..wh..opq":
                opaque = rootfs / directory
                for child in opaque.iterdir() if opaque.is_dir() else ():
                    if child.is_dir() and not child.is_symlink():
                        shutil.rmtree(child)
                    else:
                        child.unlink()
            elif base.startswith(".wh."):
                gone = rootfs / directory / base.removeprefix(".wh.")
                if gone.is_dir() and not gone.is_symlink():
                    shutil.rmtree(gone)
                elif gone.exists() or gone.is_symlink():
                    gone.unlink()
            else:
                members.append(member)
        tar.extractall(rootfs, members=members, filter=keep)  # noqa: S202 (data_filter)


@pytest.fixture(scope="module", params=PLATFORMS)
def guest(
    request: pytest.FixtureRequest,
    pushed: Pushed,
    emulators: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Guest]:
    platform: str = request.param
    repository, _, tag = pushed.reference.partition("/")[2].rpartition(":")
    index = _registry_json(pushed, f"{repository}/manifests/{tag}")
    (entry,) = [
        e
        for e in index["manifests"]
        if f"{e['platform']['os']}/{e['platform']['architecture']}" == platform
    ]
    manifest = _registry_json(pushed, f"{repository}/manifests/{entry['digest']}")
    config = _registry_json(pushed, f"{repository}/blobs/{manifest['config']['digest']}")
    assert config["architecture"] == platform.split("/")[1]
    rootfs = tmp_path_factory.mktemp(f"rootfs-{platform.split('/')[1]}")
    try:
        with httpx.Client(base_url=pushed.registry.url, timeout=60) as client:
            for layer in manifest["layers"]:
                response = client.get(
                    f"/v2/{repository}/blobs/{layer['digest']}", follow_redirects=True
                )
                response.raise_for_status()
                _unpack(response.content, rootfs)
        image = config["config"]
        env = dict(item.partition("=")[::2] for item in image["Env"])
        command, *flags, module, name = image["Entrypoint"]
        assert (flags, module, name) == (["-S"], "-m", "archwarden"), image["Entrypoint"]
        candidates = [rootfs / d.lstrip("/") / command for d in env["PATH"].split(":")]
        python = next(c for c in candidates if c.exists())
        assert python.resolve().is_relative_to(rootfs), python.resolve()
        workdir = rootfs / image.get("WorkingDir", "/").lstrip("/")
        qemu = emulators[config["architecture"]]
        yield Guest(platform, rootfs, qemu, python, flags, env, workdir)
    finally:
        shutil.rmtree(rootfs, ignore_errors=True)


def _host_modules(package: Path, prefix: str) -> set[str]:
    return {info.name for info in pkgutil.walk_packages([str(package)], prefix)}


def test_every_module_and_shared_object_loads_under_qemu(guest: Guest) -> None:
    lib = guest.rootfs / LIB.lstrip("/")
    shared = {str(p.relative_to(lib)) for p in lib.rglob("*") if re.search(SHARED_OBJECT, p.name)}
    assert shared, "no compiled extension in the image: the probe would prove nothing"
    result = guest.python3(*guest.flags, "-c", PROBE, LIB, SHARED_OBJECT)
    assert result.returncode == 0, result.stderr[-4000:]
    probe = json.loads(result.stdout)
    assert probe["machine"] == guest.machine
    assert probe["failed"] == EXPECTED_IMPORT_FAILURES
    # Everything the guest saw is what the image has: every archwarden module (but the two the
    # probe skips or expects to fail), and every shared object, each loaded.
    modules = _host_modules(ROOT / "operator/archwarden", "archwarden.")
    modules -= {"archwarden.__main__", "archwarden.certs"}
    assert modules <= set(probe["modules"]), sorted(modules - set(probe["modules"]))
    assert set(probe["extensions"]) | set(probe["libraries"]) == shared
    # ... and each came from the image, not from this machine.
    outside = [m for m in probe["mapped"] if not Path(m).is_relative_to(guest.rootfs)]
    assert not outside, outside
    assert any(m.startswith(str(lib)) for m in probe["mapped"])


def test_every_platform_prints_its_version_under_qemu(guest: Guest) -> None:
    result = guest.archwarden("--version")
    assert (result.returncode, result.stderr) == (0, ""), result.stderr
    assert result.stdout == f"archwarden {VERSION}\n"


SAMPLE = """
apiVersion: apps/v1
kind: Deployment
metadata: {{name: legacy, namespace: team}}
spec:
  selector: {{matchLabels: {{app: legacy}}}}
  template:
    metadata: {{labels: {{app: legacy}}}}
    spec:
      containers: [{{name: app, image: "{legacy}"}}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: multi, namespace: team}}
spec:
  selector: {{matchLabels: {{app: multi}}}}
  template:
    metadata: {{labels: {{app: multi}}}}
    spec:
      containers: [{{name: app, image: "{multi}"}}]
"""


@pytest.fixture(scope="module")
def sample(pushed: Pushed) -> tuple[str, str]:
    """An amd64-only image and a four-platform one in the test's registry; (legacy, multi)."""
    legacy_repo, multi_repo = unique_repo("legacy"), unique_repo("multi")
    with Seeder(pushed.registry) as seeder:
        seeder.push_image(legacy_repo, "2.3", "linux/amd64")
        seeder.push_multiarch(multi_repo, "1", PLATFORMS)
        return seeder.ref(legacy_repo, "2.3"), seeder.ref(multi_repo, "1")


def test_every_platform_checks_a_manifest_against_the_registry_under_qemu(
    guest: Guest, pushed: Pushed, sample: tuple[str, str]
) -> None:
    legacy, multi = sample
    # In the guest's /tmp (the image's working directory), as a user would mount it.
    (guest.rootfs / "tmp/sample.yaml").write_text(SAMPLE.format(legacy=legacy, multi=multi))
    host = pushed.registry.host
    args = ["check", "-f", "/tmp/sample.yaml", "--insecure-registry", host]

    result = guest.archwarden(*args, "--platforms", "linux/arm64")
    assert (result.returncode, result.stderr) == (1, ""), result.stderr[-4000:]
    assert result.stdout.splitlines() == [
        f"DENY  team/Deployment/legacy: image {legacy} supports linux/amd64 only; the node this "
        "pod can use is linux/arm64 (1); publish a multi-arch image or select amd64 nodes",
        "OK    team/Deployment/multi",
    ]

    result = guest.archwarden(*args, "--platforms", ",".join(PLATFORMS))
    assert (result.returncode, result.stderr) == (0, ""), result.stderr[-4000:]
    assert result.stdout.splitlines() == [
        "OK    team/Deployment/legacy",
        "OK    team/Deployment/multi",
    ]


def test_no_emulator_is_registered() -> None:
    # The build must not have needed (or registered) binfmt_misc handlers such as qemu-*.
    binfmt = Path("/proc/sys/fs/binfmt_misc")
    registered = [p.name for p in binfmt.iterdir()] if binfmt.is_dir() else []
    assert not [name for name in registered if name.startswith("qemu")], registered
