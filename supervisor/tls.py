"""The registry's TLS files: parse them, match the pair, read the expiry (file reads only).

Settings validation calls ``check_certificate`` and ``check_key``; each raises
ValueError whose text is the "expected ..." part of a bad-settings line, naming the
file. ``expiry_note`` is pure: it turns an expiry date into the warning shown at start,
in ``check`` and in systemd's STATUS line.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

# cryptography is imported inside the functions: it only matters with TLS on, and
# costs about 10 MiB of RSS that a supervisor without TLS should not carry.

# A certificate expiring sooner than this is warned about everywhere we can.
EXPIRY_WARNING_DAYS = 30


@dataclass(frozen=True)
class Certificate:
    """What we report about the registry's (leaf) certificate."""

    path: Path
    subject: str
    names: tuple[str, ...]
    not_after: datetime
    sha256: str  # fingerprint of the DER encoding, hex, as urllib3's assert_fingerprint wants

    def days_left(self, now: datetime) -> float:
        """Days from ``now`` until it expires (negative once it has)."""
        return (self.not_after - now).total_seconds() / 86400


def load_certificate(path: Path) -> Certificate:
    """The first (leaf) certificate of a PEM file; ValueError naming the file if none."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        data = path.read_bytes()
    except OSError as err:
        raise ValueError(f"a readable PEM certificate ({path}: {err.strerror})") from None
    try:
        leaf = x509.load_pem_x509_certificates(data)[0]
    except ValueError:
        raise ValueError(f"a PEM certificate ({path} holds none)") from None
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = tuple(
            [*san.get_values_for_type(x509.DNSName)]
            + [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
        )
    except (x509.ExtensionNotFound, ValueError):
        names = ()
    return Certificate(
        path=path,
        subject=leaf.subject.rfc4514_string(),
        names=names,
        not_after=leaf.not_valid_after_utc,
        sha256=hashlib.sha256(leaf.public_bytes(serialization.Encoding.DER)).hexdigest(),
    )


def check_certificate(path: Path, now: datetime) -> Certificate:
    """A PEM certificate that has not expired, or ValueError naming the file."""
    certificate = load_certificate(path)
    if certificate.not_after <= now:
        expired = certificate.not_after.strftime("%Y-%m-%d %H:%M UTC")
        raise ValueError(f"a certificate that has not expired ({path} expired {expired})")
    return certificate


def check_key(key_path: Path, certificate_path: Path | None) -> None:
    """An unencrypted PEM private key matching the certificate, or ValueError naming it.

    ``certificate_path`` None: the certificate is bad already; only the key is parsed.
    """
    from cryptography import x509
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization

    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except OSError as err:
        raise ValueError(f"a readable PEM private key ({key_path}: {err.strerror})") from None
    except TypeError:
        # The registry cannot ask for a passphrase.
        raise ValueError(f"an unencrypted PEM private key ({key_path} is encrypted)") from None
    except (ValueError, UnsupportedAlgorithm):
        raise ValueError(f"a PEM private key ({key_path} holds none)") from None
    if certificate_path is None:
        return
    try:
        leaf = x509.load_pem_x509_certificates(certificate_path.read_bytes())[0]
    except (OSError, ValueError):
        return  # reported against the certificate
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(*spki) != leaf.public_key().public_bytes(*spki):
        raise ValueError(
            f"the private key of the certificate ({key_path} does not match {certificate_path})"
        )


def expiry_note(certificate: Certificate | None, now: datetime) -> str | None:
    """A short warning when the certificate expires within EXPIRY_WARNING_DAYS, else None."""
    if certificate is None:
        return None
    days = certificate.days_left(now)
    if days <= 0:
        return "TLS certificate EXPIRED"
    if days < 1:
        return "TLS certificate expires within a day"
    if days < EXPIRY_WARNING_DAYS:
        return f"TLS certificate expires in {int(days)} days"
    return None
