"""The registry client: which platforms can an image run on?

Usable on its own::

    async with registry.RegistryClient() as client:
        answer = await client.resolve("nginx:1.27")
        print(answer.canonical)   # ['linux/386', 'linux/amd64', 'linux/arm/v5', ...]
        checked = await client.verify("nginx:1.27")
        print(checked.mismatches)  # index entries whose config names another platform
"""

from archwarden.registry._cache import CacheSettings, Resolver
from archwarden.registry._client import RegistryClient, RequestObserver
from archwarden.registry._config import ClientSettings, RegistrySettings
from archwarden.registry._credentials import Credential, CredentialStore, InvalidDockerConfig
from archwarden.registry._exceptions import (
    AccessDenied,
    AuthenticationFailed,
    DigestMismatch,
    ForbiddenAddress,
    ImageNotFound,
    InvalidManifest,
    ManifestTooLarge,
    RateLimited,
    RegistryError,
    RegistryHeld,
    RegistryServerError,
    RegistryTimeout,
    RegistryUnavailable,
)
from archwarden.registry._holds import Holds
from archwarden.registry._models import EntryCheck, ImagePlatforms, ManifestHead, Verification
from archwarden.registry._pacing import Pacer, paced

__all__ = [
    "AccessDenied",
    "AuthenticationFailed",
    "CacheSettings",
    "ClientSettings",
    "Credential",
    "CredentialStore",
    "DigestMismatch",
    "EntryCheck",
    "ForbiddenAddress",
    "Holds",
    "ImageNotFound",
    "ImagePlatforms",
    "InvalidDockerConfig",
    "InvalidManifest",
    "ManifestHead",
    "ManifestTooLarge",
    "Pacer",
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
    "Verification",
    "paced",
]
