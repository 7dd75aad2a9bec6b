#!/usr/bin/env python3
"""The container image's hash-locked requirements: compile them (`make lock`) and check them.

    lock.py                         compile requirements/image.txt (pyproject.toml's runtime
                                    dependencies) and requirements/image-build.txt
                                    (requirements/image-build.in) with uv, from PyPI
    lock.py --check                 offline: both locks were compiled from the current inputs,
                                    pin every direct requirement with a matching version, carry
                                    hashes, and every package they name as a reason is pinned
    lock.py --out DIR --exclude-newer TS
                                    recompile into DIR with a given cutoff
    lock.py --recompile-check       online (`make lock-check`): recompile with each lock's recorded
                                    cutoff and report any difference from the committed files

`--check` is what `make test` runs: it reads nothing but the repository, so a package index that
has changed since (a new release, a file uploaded later to an old one) cannot fail the suite.
`--recompile-check` asks PyPI and answers a different question (does today's index still give
these locks?), so it is an explicit command of its own, never part of the tests.

The locks are universal (`uv pip compile --universal`): one pinned version per package for every
target platform, with the hashes of all of that version's files (every platform's wheels and the
sdist), so pip can verify whatever it picks for linux/amd64, arm64, ppc64le or s390x. Each lock
records the resolution cutoff (`--exclude-newer`) and a digest of its inputs: the same inputs and
cutoff compile to the same file, and a change of the inputs without `make lock` is caught offline.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
PYTHON_VERSION = "3.11"  # the image's interpreter (the wheels are cp311)
# The image's target platforms (hack/image/build.sh, PLATFORMS): a pin whose environment marker
# excludes one of them leaves that platform's image without the package.
TARGET_MACHINES = ("x86_64", "aarch64", "ppc64le", "s390x")
RUNTIME_LOCK = "image.txt"
BUILD_LOCK = "image-build.txt"
BUILD_INPUT = "image-build.in"
STAMP = re.compile(r"^# inputs-sha256: (?P<digest>[0-9a-f]{64}) exclude-newer: (?P<cutoff>\S+)$")
PIN = re.compile(
    r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[^\s;\\]+)\s*(?:;(?P<marker>[^\\]*))?"
)


class LockError(Exception):
    """A lock is missing, stale or inconsistent; the message says which and why."""


def _inputs(root: Path) -> dict[str, object]:
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    return {
        "python": PYTHON_VERSION,
        "requires-python": project.get("requires-python"),
        "dependencies": sorted(project["dependencies"]),
        "build": (root / "requirements" / BUILD_INPUT).read_text(),
    }


def inputs_digest(root: Path = ROOT) -> str:
    """sha256 of everything a lock is compiled from (not of the resolution, which is PyPI's)."""
    canonical = json.dumps(_inputs(root), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _uv() -> str:
    # The venv's uv (test extras) first, so `make lock` needs nothing installed by hand.
    beside = Path(sys.executable).with_name("uv")
    found = str(beside) if beside.exists() else shutil.which("uv")
    if found is None:
        raise LockError("uv not found: pip install uv (it is in the [test] extras)")
    return found


def compile_locks(out: Path, cutoff: str, root: Path = ROOT) -> None:
    stamp = f"# inputs-sha256: {inputs_digest(root)} exclude-newer: {cutoff}\n"
    jobs = [
        (root / "pyproject.toml", RUNTIME_LOCK),
        (root / "requirements" / BUILD_INPUT, BUILD_LOCK),
    ]
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        for source, name in jobs:
            raw = Path(scratch) / name
            subprocess.run(
                [
                    _uv(),
                    "pip",
                    "compile",
                    "--no-config",
                    "--quiet",
                    "--universal",
                    "--python-version",
                    PYTHON_VERSION,
                    "--generate-hashes",
                    "--exclude-newer",
                    cutoff,
                    "--custom-compile-command",
                    "make lock",
                    "--output-file",
                    str(raw),
                    # Relative, so that the lock's "via" comments name no machine's paths.
                    str(source.relative_to(root)),
                ],
                cwd=root,
                check=True,
            )
            (out / name).write_text(stamp + raw.read_text())


def _parse(text: str) -> tuple[dict[str, str], dict[str, int], set[str], dict[str, Marker]]:
    """Pins (name -> version), hash counts per pin, every name given as a reason ("via"), and
    the environment marker of each pin that has one."""
    pins: dict[str, str] = {}
    markers: dict[str, Marker] = {}
    hashes: dict[str, int] = {}
    vias: set[str] = set()
    current: str | None = None
    in_via = False
    for line in text.splitlines():
        pin = PIN.match(line)
        if pin:
            current = canonicalize_name(pin["name"])
            pins[current] = pin["version"]
            hashes[current] = 0
            if pin["marker"] and pin["marker"].strip():
                markers[current] = Marker(pin["marker"].strip())
            in_via = False
            continue
        stripped = line.strip()
        if current is not None and stripped.startswith("--hash=sha256:"):
            hashes[current] += 1
        elif stripped.startswith("# via"):
            rest = stripped.removeprefix("# via").strip()
            in_via = not rest
            if rest:
                vias.add(rest)
        elif in_via and stripped.startswith("#   "):
            vias.add(stripped.removeprefix("#").strip())
        elif not stripped.startswith("#"):
            in_via = False
    return pins, hashes, vias, markers


def _environments() -> list[dict[str, str]]:
    """The marker environment of the image's interpreter on each target platform."""
    return [
        {
            "python_version": PYTHON_VERSION,
            "python_full_version": f"{PYTHON_VERSION}.0",
            "implementation_name": "cpython",
            "platform_python_implementation": "CPython",
            "sys_platform": "linux",
            "platform_system": "Linux",
            "os_name": "posix",
            "platform_machine": machine,
        }
        for machine in TARGET_MACHINES
    ]


def _check_one(path: Path, requirements: list[str], digest: str) -> list[str]:
    if not path.exists():
        return [f"{path.name}: missing"]
    text = path.read_text()
    problems = []
    stamp = STAMP.match(text.splitlines()[0] if text else "")
    if stamp is None:
        problems.append(f"{path.name}: no '# inputs-sha256: ... exclude-newer: ...' first line")
    elif stamp["digest"] != digest:
        problems.append(f"{path.name}: compiled from other inputs than the current ones")
    pins, hashes, vias, markers = _parse(text)
    for spec in requirements:
        req = Requirement(spec)
        name = canonicalize_name(req.name)
        for env in _environments():
            needed = req.marker is None or req.marker.evaluate(env)
            if needed and name in markers and not markers[name].evaluate(env):
                problems.append(
                    f"{path.name}: {name} is not installed on linux/{env['platform_machine']} "
                    f"(marker {markers[name]})"
                )
        if name not in pins:
            problems.append(f"{path.name}: {req.name} is not pinned")
        elif not req.specifier.contains(pins[name], prereleases=True):
            problems.append(f"{path.name}: {name}=={pins[name]} does not satisfy {spec}")
    problems += [f"{path.name}: {name} has no --hash" for name, n in hashes.items() if n == 0]
    for reason in sorted(vias):
        if reason.startswith("-r ") or reason.endswith("(pyproject.toml)"):
            continue
        if canonicalize_name(reason) not in pins:
            problems.append(f"{path.name}: {reason} is named as a reason but not pinned")
    return problems


def check(lock_dir: Path, root: Path = ROOT) -> list[str]:
    """Every problem found, empty when both locks are fresh for the current inputs."""
    digest = inputs_digest(root)
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    build = [
        line.strip()
        for line in (root / "requirements" / BUILD_INPUT).read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    return _check_one(lock_dir / RUNTIME_LOCK, project["dependencies"], digest) + _check_one(
        lock_dir / BUILD_LOCK, build, digest
    )


def recompile_check(lock_dir: Path, root: Path = ROOT) -> list[str]:
    """Recompile with the committed lock's cutoff; the names of the locks that came out other.

    Online and dependent on PyPI's present state (a file uploaded later to an old release changes
    the result), so it is `make lock-check`, never a test."""
    first = (lock_dir / RUNTIME_LOCK).read_text().splitlines()[:1]
    stamp = STAMP.match(first[0]) if first else None
    if stamp is None:
        raise LockError(f"{RUNTIME_LOCK}: no '# inputs-sha256: ... exclude-newer: ...' first line")
    with tempfile.TemporaryDirectory() as scratch:
        compile_locks(Path(scratch), stamp["cutoff"], root)
        return [
            f"{name}: recompiling with cutoff {stamp['cutoff']} gives another lock"
            for name in (RUNTIME_LOCK, BUILD_LOCK)
            if (Path(scratch) / name).read_text() != (lock_dir / name).read_text()
        ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="offline freshness check only")
    parser.add_argument(
        "--recompile-check",
        action="store_true",
        help="online: recompile with the recorded cutoffs and diff against the committed locks",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "requirements", metavar="DIR")
    parser.add_argument(
        "--exclude-newer",
        metavar="TIMESTAMP",
        help="resolution cutoff (RFC 3339, default: now); the same cutoff gives the same locks",
    )
    args = parser.parse_args(argv)
    if args.check:
        problems = check(args.out)
        for problem in problems:
            print(f"lock: {problem}", file=sys.stderr)
        if problems:
            print("lock: run `make lock` and commit requirements/", file=sys.stderr)
        return 1 if problems else 0
    if args.recompile_check:
        try:
            differences = recompile_check(args.out)
        except (LockError, subprocess.CalledProcessError) as exc:
            print(f"lock: {exc}", file=sys.stderr)
            return 1
        for difference in differences:
            print(f"lock: {difference}", file=sys.stderr)
        return 1 if differences else 0
    cutoff = args.exclude_newer or dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    try:
        compile_locks(args.out, cutoff)
    except (LockError, subprocess.CalledProcessError) as exc:
        print(f"lock: {exc}", file=sys.stderr)
        return 1
    print(f"lock: wrote {args.out / RUNTIME_LOCK} and {args.out / BUILD_LOCK} (cutoff {cutoff})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
