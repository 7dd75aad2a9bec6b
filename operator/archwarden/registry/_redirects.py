"""Redirect rules: where a registry may send us, and what may travel along. Pure code.

Redirects are followed by hand, never by httpx: httpx keeps a 307/308 body on a cross-origin
redirect (a token request's ``refresh_token`` would follow it) and keeps ``Authorization``
on an http -> https upgrade to the same host. Here anything secret stays with its origin:
``Authorization`` is dropped whenever the origin (scheme, host, port) changes, and a request
that carries a body is never redirected to another origin at all.
"""

from __future__ import annotations

import dataclasses

import httpx

__all__ = ["Hop", "RedirectRefused", "next_hop", "origin"]

PORT_MAX = 65535


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
