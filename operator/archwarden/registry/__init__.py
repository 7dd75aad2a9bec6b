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
    CredentialProviderFailed,
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
from archwarden.registry._provider_config import (
    InvalidProviderConfig,
    Provider,
    ProviderConfig,
    TokenAttributes,
    load_provider_config,
    parse_provider_config,
)
from archwarden.registry._providers import (
    CredentialProviders,
    Provided,
    ProviderLimits,
    ServiceAccount,
    ServiceAccountSource,
)

__all__ = [
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
