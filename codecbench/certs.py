"""A private CA and certificates for a quick start with mutual TLS (``codecbench-orchestrator certs``).

Built with ``cryptography``'s X.509 builder: ECDSA P-256 keys, SHA-256 signatures, a CA with
``BasicConstraints(ca=True, path_length=0)`` and key-cert-sign usage; leaf certificates with
subject alternative names for ``localhost``, ``127.0.0.1``, ``::1`` and the given hosts, and both
the server-auth and client-auth extended key usages (the orchestrator is a server to users and
workers and a client of workers; a worker is a server to the orchestrator and its client).

For production, certificates from the organisation's own CA serve the same flags.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# The certificates that make_quickstart writes, besides the CA.
LEAVES = ("orchestrator", "worker", "client")
DEFAULT_HOSTS = ("localhost", "127.0.0.1", "::1")


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "codecbench"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _san(hosts: Sequence[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys(hosts):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def make_quickstart(folder: Path, hosts: Sequence[str] = (), days: int = 365) -> list[Path]:
    """Writes ``ca.pem``/``ca-key.pem`` and ``NAME.pem``/``NAME-key.pem`` for each of :data:`LEAVES`.

    Args:
        folder: where to write (created 0700); keys are 0600, certificates 0644.
        hosts: DNS names or IP addresses the services are reached at, besides :data:`DEFAULT_HOSTS`.
        days: validity of every certificate.

    Returns:
        The paths written, CA first.

    Raises:
        FileExistsError: a file to write exists already (nothing is overwritten).
    """
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    for name in ("ca", *LEAVES):
        for path in (folder / f"{name}.pem", folder / f"{name}-key.pem"):
            if path.exists():
                raise FileExistsError(0, "exists", str(path))
    now = dt.datetime.now(dt.UTC)
    start, end = now - dt.timedelta(minutes=5), now + dt.timedelta(days=days)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("codecbench private CA")
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    written = [folder / "ca.pem", folder / "ca-key.pem"]
    (folder / "ca.pem").write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    _write_private(folder / "ca-key.pem", _key_pem(ca_key))
    for leaf in LEAVES:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(f"codecbench {leaf}")).issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_san([*DEFAULT_HOSTS, *hosts]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        (folder / f"{leaf}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_private(folder / f"{leaf}-key.pem", _key_pem(key))
        written += [folder / f"{leaf}.pem", folder / f"{leaf}-key.pem"]
    return written


__all__ = ["DEFAULT_HOSTS", "LEAVES", "make_quickstart"]
