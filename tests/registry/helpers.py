"""Client construction for each real-registry mode, shared by the registry tests."""

from __future__ import annotations

from archwarden import registry
from tests.support.registry import RegistryServer


def settings_for(server: RegistryServer, **overrides: object) -> registry.ClientSettings:
    per_host = registry.RegistrySettings(
        insecure=not server.tls,
        ca_file=str(server.ca_file) if server.ca_file else None,
    )
    registries = {server.host: per_host}
    if server.token_server is not None:
        # The test token server is plain HTTP on another port: credentials go there only
        # because it is configured as an insecure registry (another origin otherwise).
        realm_host = f"127.0.0.1:{server.token_server.port}"
        registries[realm_host] = registry.RegistrySettings(insecure=True)
    values: dict[str, object] = {"registries": registries, "timeout": 5.0}
    values.update(overrides)
    return registry.ClientSettings(**values)  # type: ignore[arg-type]


def credentials_for(
    server: RegistryServer, *, password: str | None = None
) -> registry.CredentialStore:
    if server.username is None:
        return registry.CredentialStore()
    secret = password if password is not None else server.password or ""
    return registry.CredentialStore(
        {server.host: registry.Credential(username=server.username, password=secret)}
    )


def client_for(server: RegistryServer, **kwargs: object) -> registry.RegistryClient:
    password = kwargs.pop("password", None)
    observer = kwargs.pop("observer", None)
    return registry.RegistryClient(
        settings_for(server, **kwargs),
        credentials_for(server, password=password),  # type: ignore[arg-type]
        observer=observer,  # type: ignore[arg-type]
    )
