"""Client settings: small dataclasses with named defaults."""

from __future__ import annotations

import dataclasses

from archwarden import reference

__all__ = [
    "DEFAULT_SETTINGS",
    "ClientSettings",
    "RegistrySettings",
    "api_host",
    "canonical_host",
]

# distribution rejects manifest PUTs over 4 MiB, and the distribution-spec tells clients to expect
# at least 4 MB, so nothing legitimate is larger. The cap keeps a hostile registry from making the
# webhook buffer an unbounded body.
MANIFEST_MAX_BYTES = 4 * 1024 * 1024
# Image configs carry history and environment; real ones are kilobytes, a few reach a megabyte.
CONFIG_MAX_BYTES = 8 * 1024 * 1024
# Error bodies are only quoted for their code and message; a short cap keeps echoed request
# data (which could include credentials on a broken server) out of logs.
ERROR_BODY_MAX_BYTES = 16 * 1024
# Real indexes nest once (an index of indexes is rare); deeper trees are hostile or broken.
MAX_INDEX_DEPTH = 4
# Children fetched per index at most; a real index lists a few dozen platforms.
MAX_INDEX_CHILDREN = 256
MAX_REDIRECTS = 5
# A real multi-arch resolution reads tens of kilobytes; this allows several full-size
# documents while an index of 256 children x 4 MiB (1 GiB) is stopped early.
RESOLUTION_MAX_BYTES = 16 * 1024 * 1024
# A cold resolution is a handful of requests; 30 s covers retries and backoff against a slow
# but honest registry, and ends whatever a hostile one trickles.
DEADLINE = 30.0
# Enough for an index's children fetched in parallel by several lookups at once.
MAX_CONNECTIONS_PER_REGISTRY = 16

# The metric label of every registry nobody configured.
OTHER_LABEL = "other"

# Docker Hub is a naming domain; its API lives elsewhere.
DOCKER_HUB_API_HOST = "registry-1.docker.io"
DOCKER_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})


def canonical_host(host: str) -> str:
    """The key a registry is known by in settings and credentials (Docker Hub aliases fold)."""
    host = host.strip().lower()
    for prefix in ("https://", "http://"):
        if host.startswith(prefix):
            host = host[len(prefix) :]
    host = host.split("/", 1)[0]
    return reference.DEFAULT_DOMAIN if host in DOCKER_HUB_ALIASES else host


def api_host(host: str) -> str:
    """Where a naming domain's API is served."""
    return DOCKER_HUB_API_HOST if canonical_host(host) == reference.DEFAULT_DOMAIN else host


@dataclasses.dataclass(frozen=True)
class RegistrySettings:
    """Settings for one registry host (``host[:port]``)."""

    insecure: bool = False
    """Talk plain HTTP to this registry."""
    ca_file: str | None = None
    """A PEM bundle to trust for this registry's TLS certificate, instead of the system store."""
    mirrors: tuple[str, ...] = ()
    """Hosts (``host[:port]``, or URLs with a scheme) tried in order before the registry itself."""
    timeout: float | None = None
    """Per-request timeout in seconds; the client-wide one when unset."""


@dataclasses.dataclass(frozen=True)
class ClientSettings:
    """Settings for a :class:`RegistryClient`."""

    registries: dict[str, RegistrySettings] = dataclasses.field(default_factory=dict)
    """Per-host settings keyed by ``host[:port]``. A configured host is also trusted to live on
    a link-local address (the SSRF guard refuses those for hosts nobody configured)."""
    timeout: float = 10.0
    """Seconds for each connect, read or write."""
    max_retries: int = 2
    """Retries after a 429, 5xx or timeout, with exponential backoff."""
    backoff: float = 0.2
    """First backoff in seconds; doubled on each retry, with jitter."""
    max_retry_after: float = 10.0
    """A ``Retry-After`` longer than this is not waited for: the request fails at once."""
    manifest_max_bytes: int = MANIFEST_MAX_BYTES
    config_max_bytes: int = CONFIG_MAX_BYTES
    max_index_depth: int = MAX_INDEX_DEPTH
    max_redirects: int = MAX_REDIRECTS
    resolution_max_bytes: int = RESOLUTION_MAX_BYTES
    """Bytes one resolution may read over all its documents (index, children, configs)."""
    deadline: float = DEADLINE
    """Seconds one lookup (a whole resolution, every request and retry in it) may take.
    ``timeout`` bounds each read, so without this a registry sending a byte a second would
    keep a lookup alive indefinitely."""
    request_deadline: float | None = None
    """Seconds one request may take whole (connecting, headers, body, and the redirects and
    token exchange of its auth flow), each retry afresh; ``None``: bounded only by ``timeout``
    per read and ``deadline`` per lookup. A command line user asking for ``--timeout 2``
    means the request, not each byte of a trickled body."""
    max_connections_per_registry: int = MAX_CONNECTIONS_PER_REGISTRY
    """Connections open to one registry endpoint at most; each has its own pool, so a slow
    registry queues its own lookups and never takes connections from the others."""
    ca_file: str | None = None
    """A PEM bundle trusted for every registry without its own ``ca_file``."""

    def for_host(self, host: str) -> RegistrySettings:
        key = canonical_host(host)
        for name, value in self.registries.items():
            if canonical_host(name) == key:
                return value
        return RegistrySettings()

    def metric_label(self, host: str) -> str:
        """``host`` when it is a configured registry (or its API host, or a mirror), else
        ``"other"``: hosts in images are chosen by whoever writes a pod spec, and a metric
        label per host would grow without bound."""
        key = canonical_host(host)
        for name, value in self.registries.items():
            known = (name, api_host(name), *(m.rpartition("://")[2] for m in value.mirrors))
            if key in {canonical_host(k) for k in known}:
                return host
        return OTHER_LABEL

    def is_configured(self, host: str) -> bool:
        key = canonical_host(host)
        return any(canonical_host(name) == key for name in self.registries)


DEFAULT_SETTINGS = ClientSettings()
