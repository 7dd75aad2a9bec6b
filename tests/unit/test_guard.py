"""The SSRF guard's address check: metadata and link-local addresses in every spelling."""

from __future__ import annotations

import pytest

from archwarden.registry import _guard

FORBIDDEN = [
    "169.254.169.254",  # AWS, GCP, Azure IMDS
    "169.254.0.1",
    "fe80::1",
    "fd00:ec2::254",  # AWS IMDS over IPv6
    "0.0.0.0",  # noqa: S104 (an address to refuse, not to bind)
    "::",
    "100.100.100.200",  # Alibaba Cloud metadata
    "fd20:ce::254",  # GCP metadata over IPv6
    "168.63.129.16",  # Azure WireServer
    "::ffff:169.254.169.254",  # IPv4-mapped
    "::169.254.169.254",  # IPv4-compatible (deprecated, still routed by some stacks)
    "64:ff9b::169.254.169.254",  # NAT64 well-known prefix
    "64:ff9b::a9fe:a9fe",
    "2002:a9fe:a9fe::1",  # 6to4 of 169.254.169.254
    "64:ff9b::100.100.100.200",
    "::ffff:168.63.129.16",
    "fe80::1%eth0",
]

ALLOWED = [
    "10.0.0.1",
    "172.16.5.4",
    "172.31.255.254",
    "192.168.1.10",
    "127.0.0.1",
    "::1",
    "::ffff:10.0.0.1",
    "::ffff:127.0.0.1",
    "64:ff9b::10.0.0.1",
    "2002:c0a8:0101::1",  # 6to4 of 192.168.1.1
    "fd12:3456::1",  # unique local, in-cluster IPv6
    "100.100.100.199",
    "168.63.129.17",
    "8.8.8.8",
    "2001:db8::1",
]


@pytest.mark.parametrize("address", FORBIDDEN)
def test_metadata_and_link_local_addresses_are_forbidden(address: str) -> None:
    assert _guard.is_forbidden(address)


@pytest.mark.parametrize("address", ALLOWED)
def test_private_and_loopback_addresses_stay_allowed(address: str) -> None:
    assert not _guard.is_forbidden(address)
