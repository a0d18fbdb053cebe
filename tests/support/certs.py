"""Real self-signed certificates (PEM) made with `cryptography`, for every suite."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

# What the unit suite's `make_tls` fixture hands out: write_self_signed.
MakeTls = Callable[..., tuple[Path, Path]]


def self_signed_pem(
    *,
    names: tuple[str, ...] = ("localhost", "127.0.0.1"),
    days: float = 365,
    common_name: str | None = None,
    ca: bool = False,
) -> tuple[bytes, bytes]:
    """A self-signed certificate and its private key, PEM encoded.

    ``names`` become the subject alternative names (IP addresses where they parse as one);
    the common name is ``common_name`` or the first name. The certificate expires ``days``
    from now (negative: it expired that long ago) and was valid from a day before it was
    made, or from before its expiry. ``ca`` marks it a CA (BasicConstraints, critical).
    """
    private = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name or names[0])])
    now = datetime.now(UTC)
    alt_names: list[x509.GeneralName] = [
        x509.IPAddress(ipaddress.ip_address(n)) if n[0].isdigit() else x509.DNSName(n)
        for n in names
    ]
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1 + max(0.0, -days)))
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
    )
    if ca:
        builder = builder.add_extension(
            x509.BasicConstraints(ca=True, path_length=None), critical=True
        )
    certificate = builder.sign(private, hashes.SHA256())
    return (
        certificate.public_bytes(serialization.Encoding.PEM),
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )


def write_self_signed(
    directory: Path,
    *,
    crt: str = "certificate.pem",
    key: str = "key.pem",
    names: tuple[str, ...] = ("localhost", "127.0.0.1"),
    days: float = 365,
    common_name: str | None = None,
    ca: bool = False,
) -> tuple[Path, Path]:
    """Write a self-signed pair (see self_signed_pem) into ``directory``, created if need be;
    the key file is 0600, as a private key should be. Returns (certificate, key) paths."""
    directory.mkdir(parents=True, exist_ok=True)
    certificate, private = self_signed_pem(names=names, days=days, common_name=common_name, ca=ca)
    crt_path, key_path = directory / crt, directory / key
    crt_path.write_bytes(certificate)
    key_path.write_bytes(private)
    key_path.chmod(0o600)
    return crt_path, key_path
