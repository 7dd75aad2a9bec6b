"""Package layout: ``operator/`` is a source root, never a package shadowing the stdlib."""

from __future__ import annotations

import importlib
import operator
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest

import archwarden
import archwarden.registry

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_import_operator_is_the_standard_library() -> None:
    assert operator.add(2, 3) == 5
    assert operator.itemgetter(1)("ab") == "b"
    assert operator.__file__ is not None
    assert not Path(operator.__file__).resolve().is_relative_to(REPO_ROOT)


def test_import_operator_from_the_repo_root_is_the_standard_library() -> None:
    # With the repository root first on sys.path (python -c from the root, pytest rootdir
    # insertion), `operator/` must not shadow the standard library module.
    code = (
        "import sys; sys.modules.pop('operator', None); import operator; "
        "print(operator.__file__); print(operator.add(1, 2))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    file, total = result.stdout.split()
    assert total == "3"
    assert not Path(file).resolve().is_relative_to(REPO_ROOT)


def test_operator_source_root_is_not_a_package() -> None:
    assert not (REPO_ROOT / "operator" / "__init__.py").exists()
    assert (REPO_ROOT / "operator" / "archwarden" / "__init__.py").exists()


def test_archwarden_is_imported_from_the_source_root() -> None:
    assert Path(archwarden.__file__).resolve() == (
        REPO_ROOT / "operator" / "archwarden" / "__init__.py"
    )


def test_registry_exports_exactly() -> None:
    assert sorted(archwarden.registry.__all__) == [
        "AccessDenied",
        "AuthenticationFailed",
        "CacheSettings",
        "ClientSettings",
        "Credential",
        "CredentialProviderFailed",
        "CredentialProviders",
        "CredentialStore",
        "DigestMismatch",
        "EntryCheck",
        "ForbiddenAddress",
        "Holds",
        "ImageNotFound",
        "ImagePlatforms",
        "InvalidDockerConfig",
        "InvalidManifest",
        "InvalidProviderConfig",
        "ManifestHead",
        "ManifestTooLarge",
        "Pacer",
        "Provided",
        "Provider",
        "ProviderConfig",
        "ProviderLimits",
        "RateLimited",
        "RegistryClient",
        "RegistryError",
        "RegistryHeld",
        "RegistryServerError",
        "RegistrySettings",
        "RegistryTimeout",
        "RegistryUnavailable",
        "RequestObserver",
        "Resolver",
        "ServiceAccount",
        "ServiceAccountSource",
        "TokenAttributes",
        "Verification",
        "load_provider_config",
        "paced",
        "parse_provider_config",
    ]
    assert len(set(archwarden.registry.__all__)) == len(archwarden.registry.__all__)
    for name in archwarden.registry.__all__:
        assert hasattr(archwarden.registry, name), name


def test_error_hierarchy() -> None:
    r = archwarden.registry
    for name in (
        "RegistryUnavailable",
        "AuthenticationFailed",
        "AccessDenied",
        "ImageNotFound",
        "RateLimited",
        "RegistryServerError",
        "ForbiddenAddress",
        "InvalidManifest",
    ):
        assert issubclass(getattr(r, name), r.RegistryError), name
    assert issubclass(r.RegistryTimeout, r.RegistryUnavailable)
    assert issubclass(r.RegistryHeld, r.RateLimited)
    assert issubclass(r.DigestMismatch, r.InvalidManifest)
    assert issubclass(r.ManifestTooLarge, r.InvalidManifest)
    assert str(r.ImageNotFound("h", "manifest unknown", "a/b:c")) == (
        "registry h: manifest unknown: a/b:c"
    )
    assert str(r.RegistryUnavailable("h", "connection refused")) == (
        "registry h: connection refused"
    )


MODULES = sorted(
    info.name
    for info in pkgutil.walk_packages(archwarden.__path__, prefix="archwarden.")
    if not info.name.rsplit(".", 1)[-1].startswith("__")
)


def test_the_package_has_the_expected_modules() -> None:
    for name in (
        "archwarden.reference",
        "archwarden.platforms",
        "archwarden.registry",
        "archwarden.registry._auth",
        "archwarden.registry._cache",
        "archwarden.registry._client",
        "archwarden.registry._credentials",
        "archwarden.registry._manifests",
    ):
        assert name in MODULES


@pytest.mark.parametrize("name", ["archwarden", *MODULES])
def test_every_module_declares_all(name: str) -> None:
    module = importlib.import_module(name)
    exported = module.__dict__.get("__all__")
    assert isinstance(exported, list | tuple), f"{name} has no __all__"
    assert all(isinstance(n, str) for n in exported)
    assert len(set(exported)) == len(exported), f"{name}.__all__ has duplicates"
    missing = [n for n in exported if not hasattr(module, n)]
    assert missing == [], f"{name}.__all__ names missing attributes: {missing}"


def test_test_fixtures_live_in_the_repository() -> None:
    # A user's clone has nothing beside it: every fixture a test reads must be vendored, and
    # every file INDEX.md describes must be there with its provenance.
    from tests import fixtures
    from tests.unit import fakes

    for directory in (fixtures.MANIFESTS, fakes.FIXTURES):
        assert directory.resolve().is_relative_to(REPO_ROOT)
    index = (fixtures.MANIFESTS / "INDEX.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"`([a-z0-9_]+\.json)`", index))
    assert listed == {p.name for p in fixtures.MANIFESTS.glob("*.json")}
    assert "Apache-2.0" in index


def test_the_cli_does_not_import_the_kubernetes_client_before_run() -> None:
    # `archwarden run --kubeconfig` sets KUBECONFIG before importing the handlers: the
    # kubernetes client (and kopf through it) reads the variable when first imported.
    code = "import sys, archwarden.cli; print('kubernetes' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "False"
