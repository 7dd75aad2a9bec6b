"""Pytest fixtures for real registries. Import them into a conftest::

    from tests.support.fixtures import plain_registry, seeder_for  # re-exported fixtures

    __all__ = ["plain_registry", "seeder_for"]

(``pytest_plugins`` only works in the rootdir conftest, which other teams own.)

Session-scoped: ``registry_workdir``, ``plain_registry``, ``tls_registry``, ``basic_registry``,
``token_registry`` (each started lazily on first use, stopped at session end) and ``seeder_for``
(a factory ``seeder_for(server) -> Seeder``; seeders are closed at session end).
Function-scoped: ``registry_factory(mode="plain", **kwargs)`` for registries a test may stop,
restart or reconfigure; all are stopped after the test.

Tests sharing a session registry should use unique repositories
(:func:`tests.support.images.unique_repo`). If no ``docker-registry`` binary is found the fixtures
skip the test.
"""

from __future__ import annotations

import contextlib
import itertools
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.images import RegistryTarget, Seeder
from tests.support.registry import RegistryServer, find_registry_binary, start_registry

__all__ = [
    "basic_registry",
    "plain_registry",
    "registry_factory",
    "registry_workdir",
    "seeder_for",
    "tls_registry",
    "token_registry",
]

RegistryFactory = Callable[..., RegistryServer]
SeederFactory = Callable[[RegistryTarget], Seeder]


def _require_binary() -> None:
    if find_registry_binary() is None:
        pytest.skip("docker-registry (distribution 2.8) not installed")


@pytest.fixture(scope="session")
def registry_workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("registries")


@contextlib.contextmanager
def _data_dir() -> Iterator[Path | None]:
    """Registry storage on tmpfs when available (blob commits fsync; ~4x faster), else None."""
    shm = Path("/dev/shm")
    if not (shm.is_dir() and shutil.disk_usage(shm).free > 256 << 20):
        yield None
        return
    path = Path(tempfile.mkdtemp(prefix="archwarden-registry-", dir=shm))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _session_registry(workdir: Path, mode: str) -> Iterator[RegistryServer]:
    _require_binary()
    with _data_dir() as data_dir:
        server = start_registry(workdir / mode, mode, data_dir=data_dir)
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture(scope="session")
def plain_registry(registry_workdir: Path) -> Iterator[RegistryServer]:
    yield from _session_registry(registry_workdir, "plain")


@pytest.fixture(scope="session")
def tls_registry(registry_workdir: Path) -> Iterator[RegistryServer]:
    yield from _session_registry(registry_workdir, "tls")


@pytest.fixture(scope="session")
def basic_registry(registry_workdir: Path) -> Iterator[RegistryServer]:
    yield from _session_registry(registry_workdir, "basic")


@pytest.fixture(scope="session")
def token_registry(registry_workdir: Path) -> Iterator[RegistryServer]:
    yield from _session_registry(registry_workdir, "token")


@pytest.fixture(scope="session")
def seeder_for() -> Iterator[SeederFactory]:
    seeders: list[Seeder] = []

    def make(server: RegistryTarget) -> Seeder:
        seeder = Seeder(server)
        seeders.append(seeder)
        return seeder

    yield make
    for seeder in seeders:
        seeder.close()


@pytest.fixture
def registry_factory(tmp_path: Path) -> Iterator[RegistryFactory]:
    _require_binary()
    servers: list[RegistryServer] = []
    numbers = itertools.count()

    def make(mode: str = "plain", **kwargs: Any) -> RegistryServer:
        server = start_registry(tmp_path / f"registry-{next(numbers)}-{mode}", mode, **kwargs)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()
