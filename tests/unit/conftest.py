"""Unit tests see no ambient settings: no MY_REG_*/REGISTRY_* variables, no stray .env."""

from __future__ import annotations

import ipaddress
import json
import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import structlog
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

DATA = Path(__file__).parent / "data"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    for key in list(os.environ):
        if key.startswith(("MY_REG_", "REGISTRY_", "NOTIFY_SOCKET", "WATCHDOG_")):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    yield
    structlog.reset_defaults()


@pytest.fixture
def inspect_data() -> Callable[[str], dict[str, Any]]:
    """Load a `docker inspect` dict captured from a real engine running the registry."""

    def load(name: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((DATA / f"{name}.json").read_text())
        return data

    return load


@pytest.fixture
def make_tls() -> Callable[..., tuple[Path, Path]]:
    """Write a real self-signed certificate and its key (PEM) into a directory."""

    def make(
        directory: Path,
        *,
        days: float = 365,
        crt: str = "certificate.pem",
        key: str = "key.pem",
        names: tuple[str, ...] = ("localhost", "127.0.0.1"),
    ) -> tuple[Path, Path]:
        directory.mkdir(parents=True, exist_ok=True)
        private = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
        now = datetime.now(UTC)
        alt_names: list[x509.GeneralName] = [
            x509.IPAddress(ipaddress.ip_address(n)) if n[0].isdigit() else x509.DNSName(n)
            for n in names
        ]
        certificate = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(private.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1 + max(0.0, -days)))
            .not_valid_after(now + timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
            .sign(private, hashes.SHA256())
        )
        crt_path, key_path = directory / crt, directory / key
        crt_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(
            private.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return crt_path, key_path

    return make
