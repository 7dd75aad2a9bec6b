"""Redirect rules: where a registry may send us, and what may travel along. Pure code.

Redirects are followed by an auth flow (:class:`Follow`, or the registry's own flow in
``_auth``), never by httpx: httpx keeps a 307/308 body on a cross-origin redirect (a token
request's ``refresh_token`` would follow it) and keeps ``Authorization`` on an http -> https
upgrade to the same host. Here anything secret stays with its origin: ``Authorization`` is
dropped whenever the origin (scheme, host, port) changes, and a request that carries a body is
never redirected to another origin at all. An auth flow is the place for this because httpx
sends whatever a flow yields, and the flow sees every response, redirects included.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Generator

import httpx

__all__ = [
    "REDIRECT_STATUSES",
    "Build",
    "Chain",
    "Follow",
    "Hop",
    "RedirectRefused",
    "next_hop",
    "origin",
]

PORT_MAX = 65535
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})


class RedirectRefused(ValueError):
    """A redirect not followed; the message names why, never the target's secrets."""


def origin(url: httpx.URL) -> tuple[str, str, int | None]:
    """(scheme, host, port) with the default port made explicit, so :80 equals no port."""
    default = {"http": 80, "https": 443}.get(url.scheme)
    return url.scheme, url.host, url.port or default


@dataclasses.dataclass(frozen=True)
class Hop:
    """One request of a redirect chain."""

    method: str
    url: httpx.URL
    headers: dict[str, str]
    data: dict[str, str] | None = None


def next_hop(hop: Hop, first: httpx.URL, status: int, location: str) -> Hop:
    """The request a ``status`` redirect to ``location`` asks for, or :class:`RedirectRefused`.

    ``first`` is the URL the chain started at: credentials belong to its origin only.
    """
    try:
        target = hop.url.join(location)
    except httpx.InvalidURL:
        raise RedirectRefused("redirect to an invalid URL") from None
    if target.scheme not in ("http", "https"):
        raise RedirectRefused("redirect to a non-HTTP URL")
    if not target.host or (target.port is not None and not 0 < target.port <= PORT_MAX):
        raise RedirectRefused("redirect to an invalid URL")
    method, data = hop.method, hop.data
    if status == 303 or (status in (301, 302) and method == "POST"):
        method, data = "GET", None  # as browsers and httpx do
    headers = dict(hop.headers)
    if origin(target) != origin(first):
        headers.pop("Authorization", None)
        if data is not None:
            raise RedirectRefused("redirect of a request with a body to another origin refused")
    return Hop(method, target, headers, data)


Build = Callable[[Hop], httpx.Request]
"""Makes the request for a hop; the client's ``build_request``, so every hop gets the client's
headers and timeouts."""


class Chain:
    """One request and the redirects it is sent through: :meth:`follow` answers each response
    with the next request, or None when the response is the answer."""

    def __init__(
        self, first: Hop, build: Build, max_redirects: int, request: httpx.Request | None = None
    ) -> None:
        self.first = first
        self.hop = first
        self.request = request if request is not None else build(first)
        self._build = build
        self._max_redirects = max_redirects
        self._followed = 0

    def follow(self, response: httpx.Response) -> httpx.Request | None:
        """The next request, or :class:`RedirectRefused` (a refused target, too many hops)."""
        if response.status_code not in REDIRECT_STATUSES or "location" not in response.headers:
            return None
        hop = next_hop(self.hop, self.first.url, response.status_code, response.headers["location"])
        if self._followed >= self._max_redirects:
            raise RedirectRefused(f"more than {self._max_redirects} redirects")
        self._followed += 1
        self.hop = hop
        self.request = self._build(hop)
        return self.request


class Follow(httpx.Auth):
    """The flow of a request that authenticates by itself (a token request): redirects only."""

    def __init__(self, first: Hop, build: Build, max_redirects: int) -> None:
        self._first = first
        self._build = build
        self._max_redirects = max_redirects

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        chain = Chain(self._first, self._build, self._max_redirects, request)
        response = yield request
        while (following := chain.follow(response)) is not None:
            response = yield following
