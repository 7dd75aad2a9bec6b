"""Tiny test PKI built on ``cryptography``.

Generic helpers to make a CA, issue serving certificates (by default for ``127.0.0.1`` and
``localhost``) and write them as PEM files. Used for the TLS registry, the token server's signing
certificate and (later) webhook TLS tests.

All keys are ECDSA P-256: fast to generate and accepted by Go's TLS stack and by distribution's
token verifier (ES256).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "CertificateAuthority",
    "IssuedCert",
    "TLSFiles",
    "cert_pem",
    "issue_cert",
    "key_pem",
    "make_ca",
    "self_signed",
    "write_tls_files",
]

_VALIDITY = dt.timedelta(days=7)
_BACKDATE = dt.timedelta(hours=1)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """Unencrypted PKCS#8 PEM of a private key."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True)
class CertificateAuthority:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @property
    def pem(self) -> bytes:
        return cert_pem(self.cert)


@dataclass(frozen=True)
class IssuedCert:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @property
    def cert_pem(self) -> bytes:
        return cert_pem(self.cert)

    @property
    def key_pem(self) -> bytes:
        return key_pem(self.key)


@dataclass(frozen=True)
class TLSFiles:
    """Paths of the PEM files written by :func:`write_tls_files`."""

    ca_file: Path
    cert_file: Path
    key_file: Path


def make_ca(common_name: str = "archwarden test CA") -> CertificateAuthority:
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return CertificateAuthority(key=key, cert=cert)


def issue_cert(
    ca: CertificateAuthority,
    *,
    common_name: str = "localhost",
    dns_names: Sequence[str] = ("localhost",),
    ip_addresses: Sequence[str] = ("127.0.0.1",),
    client: bool = False,
) -> IssuedCert:
    """Issue a leaf certificate signed by ``ca`` (server auth; plus client auth if ``client``)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
    usages = [ExtendedKeyUsageOID.SERVER_AUTH]
    if client:
        usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return IssuedCert(key=key, cert=builder.sign(ca.key, hashes.SHA256()))


def self_signed(common_name: str) -> IssuedCert:
    """A self-signed certificate for signing (e.g. the token server's JWT key)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + _VALIDITY)
        .sign(key, hashes.SHA256())
    )
    return IssuedCert(key=key, cert=cert)


def write_tls_files(
    directory: Path,
    *,
    prefix: str = "",
    ca: CertificateAuthority | None = None,
    dns_names: Sequence[str] = ("localhost",),
    ip_addresses: Sequence[str] = ("127.0.0.1",),
) -> TLSFiles:
    """Write ``{prefix}ca.pem``, ``{prefix}cert.pem``, ``{prefix}key.pem`` into ``directory``.

    A fresh CA is made unless one is given. The key file is created with mode 0600.
    """
    directory.mkdir(parents=True, exist_ok=True)
    ca = ca or make_ca()
    leaf = issue_cert(ca, dns_names=dns_names, ip_addresses=ip_addresses)
    files = TLSFiles(
        ca_file=directory / f"{prefix}ca.pem",
        cert_file=directory / f"{prefix}cert.pem",
        key_file=directory / f"{prefix}key.pem",
    )
    files.ca_file.write_bytes(ca.pem)
    files.cert_file.write_bytes(leaf.cert_pem)
    files.key_file.touch(mode=0o600)
    files.key_file.write_bytes(leaf.key_pem)
    return files
