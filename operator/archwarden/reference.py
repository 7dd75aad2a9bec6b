"""Image references, parsed and normalised as distribution/reference and containerd do.

``parse("nginx")`` gives ``docker.io/library/nginx:latest``; ``parse("127.0.0.1:5000/team/web:1")``
keeps the host and port. A reference with both a tag and a digest is resolved by the digest;
the tag is kept only for display.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re

__all__ = [
    "DEFAULT_DOMAIN",
    "DIGEST_ALGORITHMS",
    "InvalidReference",
    "Reference",
    "parse",
]

DEFAULT_DOMAIN = "docker.io"
LEGACY_DEFAULT_DOMAIN = "index.docker.io"
OFFICIAL_REPO_PREFIX = "library/"
DEFAULT_TAG = "latest"

# distribution/reference v0.6 counts only the path; 2.8 counted domain + path. Checking the
# path keeps us in step with containerd, which uses the newer package.
NAME_PATH_MAX = 255
# An upper bound checked before any regular expression runs, so hostile input is cheap to refuse.
# 255 of path, a long DNS name and port, a 128-character tag and a sha512 digest fit well below it.
REFERENCE_MAX = 1024

# Registered algorithms and the length of their lowercase hex encoding (OCI image-spec and
# go-digest). blake3 is registered by OCI but hashlib cannot verify it, so we refuse it by name.
DIGEST_ALGORITHMS: dict[str, int] = {"sha256": 64, "sha384": 96, "sha512": 128}

_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|-+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_NAME = rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*"
_IPV6 = r"\[[a-fA-F0-9:]+\]"
_DOMAIN = rf"(?:{_DOMAIN_NAME}|{_IPV6})(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"

_PATH_RE = re.compile(rf"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*", re.ASCII)
_DOMAIN_RE = re.compile(_DOMAIN, re.ASCII)
_TAG_RE = re.compile(_TAG, re.ASCII)
_DIGEST_RE = re.compile(_DIGEST, re.ASCII)
_IDENTIFIER_RE = re.compile(r"[a-f0-9]{64}", re.ASCII)
# A name whose last label is a number (decimal or 0x-hex) is an IPv4 address to URL parsers and
# to inet_aton, never a DNS name; only the canonical dotted quad means one address everywhere.
_NUMERIC_LABEL_RE = re.compile(r"[0-9]+|0[xX][0-9a-fA-F]*", re.ASCII)
PORT_MAX = 65535


class InvalidReference(ValueError):
    """An image reference that does not parse; the message names the reference and the rule."""

    def __init__(self, reference: str, problem: str) -> None:
        shown = reference if len(reference) <= 120 else reference[:117] + "..."
        super().__init__(f"invalid image reference {shown!r}: {problem}")
        self.reference = reference
        self.problem = problem


@dataclasses.dataclass(frozen=True)
class Reference:
    """A fully normalised image reference."""

    domain: str
    """The naming domain: ``docker.io``, ``127.0.0.1:5000``, ``[::1]:5000``."""
    path: str
    """The repository path inside the domain, e.g. ``library/nginx``."""
    tag: str | None = None
    """The tag, if one was written (``latest`` when neither tag nor digest was)."""
    digest: str | None = None
    """The digest, if one was written; it wins over the tag."""

    @property
    def name(self) -> str:
        return f"{self.domain}/{self.path}"

    @property
    def target(self) -> str:
        """What to ask the registry for: the digest when there is one, else the tag."""
        return self.digest or self.tag or DEFAULT_TAG

    def with_digest(self, digest: str) -> Reference:
        return dataclasses.replace(self, digest=digest)

    def __str__(self) -> str:
        text = self.name
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text

    @property
    def short(self) -> str:
        """The repository and what was asked for, as error messages show it: ``team/web:9.9``."""
        if self.digest:
            return f"{self.path}@{self.digest}"
        return f"{self.path}:{self.target}"


def _split_domain(name: str) -> tuple[str, str]:
    """Split off the domain exactly as ``splitDockerDomain`` does."""
    first, slash, rest = name.partition("/")
    if not slash or (
        "." not in first and ":" not in first and first != "localhost" and first.lower() == first
    ):
        domain, remainder = DEFAULT_DOMAIN, name
    else:
        domain, remainder = first, rest
    if domain == LEGACY_DEFAULT_DOMAIN:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in remainder:
        remainder = OFFICIAL_REPO_PREFIX + remainder
    return domain, remainder


def _host_problem(domain: str) -> str | None:
    """Why a domain that matches the grammar still names no host httpx can connect to."""
    if domain.startswith("["):
        literal, _, port = domain[1:].partition("]")
        port = port.removeprefix(":")
        try:
            ipaddress.IPv6Address(literal)
        except ValueError:
            return f"invalid IPv6 address {literal[:60]!r}"
    else:
        host, _, port = domain.partition(":")
        if _NUMERIC_LABEL_RE.fullmatch(host.rsplit(".", 1)[-1]):
            try:
                ipaddress.IPv4Address(host)  # refuses leading zeros (octal to inet_aton)
            except ValueError:
                return (
                    f"invalid IPv4 address {host[:60]!r} (only a dotted quad without leading zeros)"
                )
    if port and int(port) > PORT_MAX:
        return f"port {port[:10]} is out of range"
    return None


def _clip(text: str, limit: int = 80) -> str:
    """Digests also come from registries (headers, index entries): quoted at most this long."""
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def validate_digest(digest: str, *, reference: str | None = None) -> str:
    """Check that ``digest`` is well formed and uses an algorithm we can verify."""
    shown = reference if reference is not None else digest
    if not _DIGEST_RE.fullmatch(digest):
        raise InvalidReference(shown, f"malformed digest {_clip(digest)!r}")
    algorithm, _, encoded = digest.partition(":")
    if algorithm not in DIGEST_ALGORITHMS:
        raise InvalidReference(
            shown,
            f"unsupported digest algorithm {_clip(algorithm)!r} "
            f"(supported: {', '.join(sorted(DIGEST_ALGORITHMS))})",
        )
    if len(encoded) != DIGEST_ALGORITHMS[algorithm]:
        raise InvalidReference(
            shown,
            f"{algorithm} digest must have {DIGEST_ALGORITHMS[algorithm]} hex characters, "
            f"not {len(encoded)}",
        )
    if encoded != encoded.lower():
        raise InvalidReference(shown, "digest hex must be lowercase")
    return digest


def parse(text: str) -> Reference:
    """Parse and normalise an image reference; raise :class:`InvalidReference` if it is not one."""
    if not isinstance(text, str):
        raise InvalidReference(repr(text), "not a string")
    if not text:
        raise InvalidReference(text, "empty reference")
    if len(text) > REFERENCE_MAX:
        raise InvalidReference(text, f"longer than {REFERENCE_MAX} characters")
    if text != text.strip() or any(c.isspace() for c in text):
        raise InvalidReference(text, "contains whitespace")
    if _IDENTIFIER_RE.fullmatch(text):
        raise InvalidReference(
            text, "a 64-character hexadecimal string is an image ID, not a repository name"
        )

    rest, at, digest = text.partition("@")
    if at and not digest:
        raise InvalidReference(text, "empty digest after '@'")
    domain, remainder = _split_domain(rest)

    # A tag is whatever follows the last ':' that comes after the last '/'.
    slash = remainder.rfind("/")
    colon = remainder.rfind(":")
    tag: str | None = None
    path = remainder
    if colon > slash:
        path, tag = remainder[:colon], remainder[colon + 1 :]
        if not tag:
            raise InvalidReference(text, "empty tag after ':'")
        if not _TAG_RE.fullmatch(tag):
            raise InvalidReference(
                text, f"invalid tag {tag[:40]!r} (letters, digits, '_', '.', '-'; at most 128)"
            )

    if not _DOMAIN_RE.fullmatch(domain):
        problem = f"invalid registry host {domain[:80]!r}"
        if domain.startswith("[") and "%" in domain:
            problem += " (IPv6 zone IDs are not allowed)"
        raise InvalidReference(text, problem)
    host_problem = _host_problem(domain)
    if host_problem is not None:
        raise InvalidReference(text, f"invalid registry host {domain[:80]!r}: {host_problem}")
    if not path:
        raise InvalidReference(text, "empty repository name")
    if path.lower() != path:
        raise InvalidReference(text, f"repository name {path!r} must be lowercase")
    if not _PATH_RE.fullmatch(path):
        raise InvalidReference(
            text,
            f"invalid repository name {path[:80]!r} (lowercase letters and digits, separated "
            "by '.', '_', '__' or '-', components joined by '/')",
        )
    if len(path) > NAME_PATH_MAX:
        raise InvalidReference(text, f"repository name longer than {NAME_PATH_MAX} characters")
    if at:
        validate_digest(digest, reference=text)

    if tag is None and not at:
        tag = DEFAULT_TAG
    return Reference(domain=domain, path=path, tag=tag, digest=digest or None)
