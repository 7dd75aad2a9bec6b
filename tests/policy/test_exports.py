from __future__ import annotations

import importlib
import pkgutil

from archwarden import policy


def test_public_surface_is_curated() -> None:
    assert sorted(policy.__all__) == sorted(set(policy.__all__))
    for name in policy.__all__:
        value = getattr(policy, name)
        module = getattr(value, "__module__", "archwarden.policy._")
        assert (
            module.startswith("archwarden.policy._")
            or name.isupper()
            or name in ("ImageAnswer", "Nodes", "Provisionable")
        )


def test_every_private_module_declares_all() -> None:
    for info in pkgutil.iter_modules(policy.__path__):
        module = importlib.import_module(f"archwarden.policy.{info.name}")
        assert info.name.startswith("_"), info.name
        assert set(module.__all__) <= set(vars(module)), info.name


def test_policy_imports_no_io_libraries() -> None:
    import sys

    for info in pkgutil.iter_modules(policy.__path__):
        source = importlib.import_module(f"archwarden.policy.{info.name}").__file__
        assert source is not None
        with open(source, encoding="utf-8") as handle:
            text = handle.read()
        for banned in ("import kopf", "import httpx", "archwarden.registry", "import kubernetes"):
            assert banned not in text, (info.name, banned)
    assert "archwarden.policy" in sys.modules
