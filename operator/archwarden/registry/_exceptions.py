"""The registry client's errors: one small tree, never httpx's own exceptions.

    RegistryError                 anything that stopped a resolution
    ├── RegistryUnavailable       connection refused, reset, TLS failure
    │   └── RegistryTimeout       no answer within the timeout
    ├── AuthenticationFailed      401 after credentials or a token were tried; token server errors
    ├── AccessDenied              403 DENIED, insufficient_scope
    ├── ImageNotFound             MANIFEST_UNKNOWN, NAME_UNKNOWN, BLOB_UNKNOWN, 404
    ├── RateLimited               429 still answered after the retries
    │   └── RegistryHeld          not asked: the host answered 429 and its hold has not ended
    ├── RegistryServerError       5xx still answered after the retries, or another odd status
    ├── ForbiddenAddress          the registry resolves to a link-local or cloud-metadata address
    ├── CredentialProviderFailed  a kubelet credential provider plugin gave no usable answer
    └── InvalidManifest           unparseable, unsupported, oversize or cyclic documents
        ├── DigestMismatch        content that does not hash to the digest it was fetched by
        └── ManifestTooLarge      a document larger than its cap

Every message reads ``registry HOST: what went wrong: repository:reference``, e.g.
``registry 127.0.0.1:5000: manifest unknown: team/web:9.9``. Messages never carry credentials:
error bodies are cut short, only the registry's ``code``/``message`` fields are quoted, and the
client redacts every credential in use (a registry may echo our Authorization header).
"""

from __future__ import annotations

import time
from collections.abc import Iterable

__all__ = [
    "AccessDenied",
    "AuthenticationFailed",
    "CredentialProviderFailed",
    "DigestMismatch",
    "ForbiddenAddress",
    "ImageNotFound",
    "InvalidManifest",
    "ManifestTooLarge",
    "RateLimited",
    "RegistryError",
    "RegistryHeld",
    "RegistryServerError",
    "RegistryTimeout",
    "RegistryUnavailable",
]


REDACTED = "[redacted]"


class RegistryError(Exception):
    """Base of every error the registry client raises."""

    def __init__(self, registry: str, problem: str, subject: str = "") -> None:
        self.registry = registry
        self.problem = problem
        self.subject = subject
        text = f"registry {registry}: {problem}"
        if subject:
            text += f": {subject}"
        super().__init__(text)

    @property
    def message(self) -> str:
        return str(self)

    def redact(self, secrets: Iterable[str]) -> None:
        """Replace every secret in the problem text (the part that may quote a registry, which
        may echo our Authorization header) with ``[redacted]``; longest secrets first, so a
        secret inside another is not half-replaced."""
        problem = self.problem
        for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
            problem = problem.replace(secret, REDACTED)
        if problem != self.problem:
            self.problem = problem
            text = f"registry {self.registry}: {problem}"
            self.args = (text + f": {self.subject}" if self.subject else text,)


class RegistryUnavailable(RegistryError):
    pass


class RegistryTimeout(RegistryUnavailable):
    pass


class AuthenticationFailed(RegistryError):
    pass


class AccessDenied(RegistryError):
    pass


class ImageNotFound(RegistryError):
    pass


class RateLimited(RegistryError):
    def __init__(
        self, registry: str, problem: str, subject: str = "", retry_after: float | None = None
    ) -> None:
        super().__init__(registry, problem, subject)
        self.retry_after = retry_after


class RegistryHeld(RateLimited):
    """Refused without a request: ``host`` answered 429 and asked us to wait until
    ``wall_until`` (Unix time); ``retry_after`` is what was left of the hold when refused.

    ``host`` is the host as contacted (a mirror, or a registry's API host), named in the text
    when it is not ``registry`` itself.
    """

    def __init__(
        self,
        registry: str,
        host: str,
        asked: float | None,
        wall_until: float,
        remaining: float,
        subject: str = "",
    ) -> None:
        self.host = host
        self.asked = asked
        self.wall_until = wall_until
        until = time.strftime("%H:%M:%SZ", time.gmtime(wall_until))
        who = "" if host == registry else f"{host} "
        if asked is None:
            why = f"{who}answered 429 without Retry-After"
        else:
            # Retry-After of 16 digits or more is read as infinity (``_wire.retry_after``).
            wait = f"{asked:.0f}s" if asked < 1e15 else "over 10^15s"
            why = f"{who}asked to wait {wait} (Retry-After)"
        super().__init__(
            registry, f"{why}; not asked again until {until}", subject, retry_after=remaining
        )

    def about(self, registry: str, subject: str) -> RegistryHeld:
        """The same hold, told about the lookup it refused."""
        return RegistryHeld(
            registry, self.host, self.asked, self.wall_until, self.retry_after or 0.0, subject
        )


class RegistryServerError(RegistryError):
    def __init__(self, registry: str, problem: str, subject: str = "", status: int = 0) -> None:
        super().__init__(registry, problem, subject)
        self.status = status


class ForbiddenAddress(RegistryError):
    pass


class CredentialProviderFailed(RegistryError):
    """A credential provider plugin failed: missing, timed out, exited non-zero, or answered
    too much or something unreadable. ``provider`` names it; the text never quotes the
    plugin's output (stdout holds credentials, stderr may)."""

    def __init__(self, registry: str, provider: str, problem: str, subject: str = "") -> None:
        self.provider = provider
        super().__init__(registry, f"credential provider {provider}: {problem}", subject)


class InvalidManifest(RegistryError):
    pass


class DigestMismatch(InvalidManifest):
    pass


class ManifestTooLarge(InvalidManifest):
    pass
