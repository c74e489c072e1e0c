"""``mepm certs init DIR``: a private CA and the certificates Mm5's mutual TLS needs.

Writes six PEM files::

    ca.crt  ca.key          the CA (10 years); only ca.crt leaves this directory
    server.crt  server.key  for every MEP (mm5.tls.cert / mm5.tls.key), with the
                            subject alternative names given (--san), serverAuth
    client.crt  client.key  for MEPM (mepm host add --cert/--key), clientAuth

A MEP configured with ``mm5.tls.ca: ca.crt`` accepts only clients whose
certificate this CA signed; MEPM verifies the MEP's certificate against the
same CA. Keys are ECDSA P-256, written with mode 0600; existing files are
never overwritten.
"""
from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mep.errors import InvalidInput, MepError

__all__ = ["CertPaths", "init_certs", "DEFAULT_SANS"]

DEFAULT_SANS = ("localhost", "127.0.0.1", "::1")
_CA_DAYS = 3650
_LEAF_DAYS = 825  # the longest lifetime common TLS clients accept for a leaf


@dataclass(frozen=True)
class CertPaths:
    """Where ``init_certs`` wrote each file."""

    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    @classmethod
    def under(cls, directory: Path) -> "CertPaths":
        """The file names ``init_certs`` uses in ``directory``."""
        return cls(*(directory / name for name in (
            "ca.crt", "ca.key", "server.crt", "server.key", "client.crt", "client.key"
        )))

    def all(self) -> tuple[Path, ...]:
        """Every path, CA first."""
        return (self.ca_cert, self.ca_key, self.server_cert, self.server_key, self.client_cert, self.client_key)


def _san(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        pass
    labels = name.rstrip(".").split(".")
    if not name or len(name) > 253 or not all(
        0 < len(label) < 64 and all(c.isascii() and (c.isalnum() or c in "-*") for c in label) for label in labels
    ):
        raise InvalidInput(f"'{name}' is neither an IP address nor a DNS name", field="--san")
    return x509.DNSName(name)


def _name(common_name: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "MEP"),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])


def _write(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _leaf(
    common_name: str,
    usage: x509.ObjectIdentifier,
    sans: Sequence[x509.GeneralName],
    ca_key: ec.EllipticCurvePrivateKey,
    ca_name: x509.Name,
    now: datetime.datetime,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=_LEAF_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=True, key_cert_sign=False, crl_sign=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def init_certs(
    directory: Path, *, sans: Sequence[str] = DEFAULT_SANS, client_name: str = "mepm"
) -> CertPaths:
    """Make the CA, server and client certificates in ``directory`` (created if missing).

    InvalidInput for a bad SAN; MepError if any of the files exists already.
    """
    names = [_san(s) for s in sans]
    paths = CertPaths.under(directory)
    directory.mkdir(parents=True, exist_ok=True)
    existing = [str(p) for p in paths.all() if p.exists()]
    if existing:
        raise MepError(f"refusing to overwrite {', '.join(existing)}; choose another directory")
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("MEP Mm5 CA")
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=_CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    server_cert, server_key = _leaf("mep", ExtendedKeyUsageOID.SERVER_AUTH, names, ca_key, ca_name, now)
    client_cert, client_key = _leaf(client_name, ExtendedKeyUsageOID.CLIENT_AUTH, (), ca_key, ca_name, now)
    pem = serialization.Encoding.PEM
    _write(paths.ca_cert, ca_cert.public_bytes(pem), 0o644)
    _write(paths.ca_key, _key_pem(ca_key), 0o600)
    _write(paths.server_cert, server_cert.public_bytes(pem), 0o644)
    _write(paths.server_key, _key_pem(server_key), 0o600)
    _write(paths.client_cert, client_cert.public_bytes(pem), 0o644)
    _write(paths.client_key, _key_pem(client_key), 0o600)
    return paths
