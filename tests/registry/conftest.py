from tests.support.fixtures import (
    basic_registry,
    plain_registry,
    registry_factory,
    registry_workdir,
    seeder_for,
    tls_registry,
    token_registry,
)

__all__ = [
    "basic_registry",
    "plain_registry",
    "registry_factory",
    "registry_workdir",
    "seeder_for",
    "tls_registry",
    "token_registry",
]
