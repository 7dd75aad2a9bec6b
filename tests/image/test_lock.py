"""requirements/image*.txt, the image's hash-locked requirements, are fresh (hack/image/lock.py).

Offline: the locks record a digest of what they were compiled from (pyproject.toml's runtime
dependencies, requirements/image-build.in), so a dependency changed without `make lock` fails
here. Nothing here asks a package index: whether today's PyPI still resolves to the same locks is
`make lock-check` (hack/image/lock.py --recompile-check), an explicit online command, because a
file uploaded to PyPI after the lock was made must not fail the suite.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load_lock_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "archwarden_image_lock", ROOT / "hack/image/lock.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


lock = _load_lock_module()


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of what the locks depend on, to be broken in the tests."""
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    shutil.copytree(ROOT / "requirements", tmp_path / "requirements")
    return tmp_path


def test_committed_locks_are_fresh() -> None:
    assert lock.check(ROOT / "requirements", ROOT) == []


def test_a_dependency_added_without_make_lock_is_caught(tree: Path) -> None:
    pyproject = tree / "pyproject.toml"
    text = pyproject.read_text()
    pyproject.write_text(text.replace('"PyYAML>=6",', '"PyYAML>=6",\n    "rich>=13",', 1))
    problems = lock.check(tree / "requirements", tree)
    assert "image.txt: compiled from other inputs than the current ones" in problems
    assert "image.txt: rich is not pinned" in problems


def test_a_pin_that_no_longer_satisfies_pyproject_is_caught(tree: Path) -> None:
    locked = tree / "requirements" / "image.txt"
    locked.write_text(locked.read_text().replace("\nkopf==1.45.2 ", "\nkopf==1.44.0 ", 1))
    assert lock.check(tree / "requirements", tree) == [
        "image.txt: kopf==1.44.0 does not satisfy kopf>=1.45,<2"
    ]


def test_a_missing_package_and_a_pin_without_hashes_are_caught(tree: Path) -> None:
    locked = tree / "requirements" / "image.txt"
    lines = locked.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("aiohttp=="))
    end = next(i for i in range(start + 1, len(lines)) if not lines[i].startswith("    --hash"))
    # aiohttp's pin and hashes disappear: multidict, yarl, ... still name it as their reason.
    locked.write_text("\n".join(lines[:start] + lines[end:]) + "\n")
    assert lock.check(tree / "requirements", tree) == [
        "image.txt: aiohttp is named as a reason but not pinned"
    ]
    build = tree / "requirements" / "image-build.txt"
    text = build.read_text().splitlines()
    build.write_text("\n".join(line for line in text if "--hash" not in line) + "\n")
    assert "image-build.txt: setuptools has no --hash" in lock.check(tree / "requirements", tree)


def test_the_image_lock_leaves_the_dev_extra_out() -> None:
    # cryptography has no s390x wheel on PyPI; the image must not need it (run --dev only).
    pins, _, _, _ = lock._parse((ROOT / "requirements" / "image.txt").read_text())
    assert "cryptography" not in pins
    assert {"kopf", "httpx", "kubernetes", "pyyaml"} <= set(pins)


def test_a_pin_that_leaves_out_a_target_platform_is_caught(tree: Path) -> None:
    locked = tree / "requirements" / "image.txt"
    text = locked.read_text()
    locked.write_text(
        text.replace("\nhttpx==0.28.1 \\", "\nhttpx==0.28.1 ; platform_machine != 's390x' \\", 1)
    )
    assert lock.check(tree / "requirements", tree) == [
        'image.txt: httpx is not installed on linux/s390x (marker platform_machine != "s390x")'
    ]
