"""The SSRF guard: a network backend that refuses link-local and cloud-metadata addresses.

The webhook fetches registries named in pod specs, i.e. by anyone who may create a pod. Without
this guard ``image: 169.254.169.254/latest/meta-data`` would make archwarden query the node's
cloud metadata service. Metadata addresses count in every spelling that reaches them: IPv4-mapped,
IPv4-compatible, NAT64 (64:ff9b::/96) and 6to4 (2002::/16) forms are judged by the IPv4 address
they embed. The check runs where connections are made (every hop: registry, mirror,
token realm, redirect target), on the addresses the name actually resolves to, and the socket
is then opened to the very address that was checked, so a DNS answer cannot change in between.
Loopback and private ranges stay allowed: in-cluster registries live there.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import typing
from collections.abc import Awaitable, Callable, Iterable

import httpcore

__all__ = ["AddressRefused", "GuardedBackend", "Resolver", "is_forbidden"]

Resolver = Callable[[str, int], Awaitable[list[str]]]

FORBIDDEN_NETWORKS = (
    ipaddress.ip_network("169.254.0.0/16"),  # IPv4 link-local, incl. 169.254.169.254 metadata
    ipaddress.ip_network("fe80::/10"),  # IPv6 link-local
    ipaddress.ip_network("fd00:ec2::254/128"),  # AWS IMDS over IPv6
    ipaddress.ip_network("fd20:ce::254/128"),  # GCP metadata over IPv6
    ipaddress.ip_network("100.100.100.200/32"),  # Alibaba Cloud metadata
    ipaddress.ip_network("168.63.129.16/32"),  # Azure WireServer (and its DNS, health probes)
    ipaddress.ip_network("0.0.0.0/8"),  # "this host": reaches local services on Linux
    ipaddress.ip_network("::/128"),
)

# IPv6 forms that carry an IPv4 address a gateway or the kernel may deliver to: checked by the
# address they embed, so ordinary private targets (NAT64 of 10.0.0.1) stay allowed.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64 or (ip in _IPV4_COMPATIBLE and int(ip) > 1):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


class AddressRefused(httpcore.ConnectError):
    """Raised inside httpcore so that httpx unwinds normally; the client translates it."""

    def __init__(self, host: str, address: str) -> None:
        super().__init__(f"{host} resolves to {address}, a link-local or metadata address")
        self.host = host
        self.address = address


def is_forbidden(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    candidates: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = [ip]
    if isinstance(ip, ipaddress.IPv6Address) and (embedded := _embedded_ipv4(ip)) is not None:
        candidates.append(embedded)
    return any(c in net for c in candidates for net in FORBIDDEN_NETWORKS)


async def system_resolver(host: str, port: int) -> list[str]:
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """Wraps httpcore's default backend; ``allowed`` hosts skip the address check."""

    def __init__(
        self,
        allowed: Callable[[str], bool],
        resolver: Resolver = system_resolver,
        inner: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self._allowed = allowed
        self._resolver = resolver
        self._inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        if self._allowed(host):
            return await self._inner.connect_tcp(host, port, timeout, local_address, socket_options)
        try:
            async with asyncio.timeout(timeout):
                addresses = await self._resolver(host, port)
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"resolving {host} timed out") from None
        except OSError as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from None
        for address in addresses:
            if is_forbidden(address):
                raise AddressRefused(host, address)
        return await self._connect_any(addresses, port, timeout, local_address, socket_options)

    async def _connect_any(
        self,
        addresses: Iterable[str],
        port: int,
        timeout: float | None,
        local_address: str | None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None,
    ) -> httpcore.AsyncNetworkStream:
        last: Exception | None = None
        for address in dict.fromkeys(addresses):
            try:
                return await self._inner.connect_tcp(
                    address, port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        if last is not None:
            raise last
        raise httpcore.ConnectError("no addresses")

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("unix sockets are not registries")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)
