"""TLS files: each broken case is exit 78 naming the file; expiry warns; the probe pins.

Certificates are real (made by the `make_tls` fixture with `cryptography`); the pinned
probe talks to a real TLS server on loopback.
"""

from __future__ import annotations

import gc
import ssl
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from support.certs import MakeTls
from support.http import V2Handler, serving
from support.process import EX_CONFIG

from supervisor import tls
from supervisor.adapters.notify import Notifier
from supervisor.adapters.probe import Probe, ProbeFailed
from supervisor.cli import main
from supervisor.loop.supervisor import Supervisor
from supervisor.settings import load_settings


def tls_env(tmp_path: Path, tls_dir: Path, extra: str = "") -> Path:
    env_file = tmp_path / "tls.env"
    env_file.write_text(f"MY_REG_TLS_DIR={tls_dir}\nMY_REG_BIND=127.0.0.1\n{extra}")
    return env_file


def run_fails(env_file: Path, capsys: pytest.CaptureFixture[str]) -> list[str]:
    """`run` exits 78; the stderr lines, without the program prefix."""
    assert main(["run", "--env-file", str(env_file)]) == EX_CONFIG
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return [line.removeprefix("registry-supervisor: ") for line in err.splitlines()]


def test_a_valid_pair_loads(tmp_path: Path, make_tls: MakeTls) -> None:
    """A self-signed certificate and its key are accepted; the probe speaks https."""
    make_tls(tmp_path / "tls")
    settings = load_settings(tls_env(tmp_path, tmp_path / "tls"))
    assert settings.tls_certificate == tmp_path / "tls" / "certificate.pem"
    assert settings.probe_url == "https://127.0.0.1:5001/v2/"


def test_missing_key_names_it(
    tmp_path: Path, make_tls: MakeTls, capsys: pytest.CaptureFixture[str]
) -> None:
    """No key file in the TLS dir: one line naming MY_REG_TLS_KEY and the dir."""
    make_tls(tmp_path / "tls")[1].unlink()
    assert run_fails(tls_env(tmp_path, tmp_path / "tls"), capsys) == [
        f"MY_REG_TLS_KEY='key.pem': expected a readable file in {tmp_path / 'tls'}"
    ]


def test_a_directory_instead_of_the_certificate_is_unreadable(
    tmp_path: Path, make_tls: MakeTls, capsys: pytest.CaptureFixture[str]
) -> None:
    """A directory where the certificate should be is reported (root reads any file)."""
    crt, _key = make_tls(tmp_path / "tls")
    crt.unlink()
    crt.mkdir()
    assert run_fails(tls_env(tmp_path, tmp_path / "tls"), capsys) == [
        f"MY_REG_TLS_CRT='certificate.pem': expected a readable file in {tmp_path / 'tls'}"
    ]


def test_a_dangling_symlink_is_unreadable(
    tmp_path: Path, make_tls: MakeTls, capsys: pytest.CaptureFixture[str]
) -> None:
    """A key symlinked to a file that is gone (a half-done renewal) is reported."""
    _crt, key = make_tls(tmp_path / "tls")
    key.unlink()
    key.symlink_to(tmp_path / "gone.pem")
    assert run_fails(tls_env(tmp_path, tmp_path / "tls"), capsys) == [
        f"MY_REG_TLS_KEY='key.pem': expected a readable file in {tmp_path / 'tls'}"
    ]


def test_a_mismatched_pair_names_both_files(
    tmp_path: Path, make_tls: MakeTls, capsys: pytest.CaptureFixture[str]
) -> None:
    """The key of another certificate: the line names the key and the certificate."""
    make_tls(tmp_path / "tls")
    make_tls(tmp_path / "tls", crt="other.pem", key="key.pem")  # replaces the key only
    crt, key = tmp_path / "tls" / "certificate.pem", tmp_path / "tls" / "key.pem"
    assert run_fails(tls_env(tmp_path, tmp_path / "tls"), capsys) == [
        f"MY_REG_TLS_KEY='key.pem': expected the private key of the certificate "
        f"({key} does not match {crt})"
    ]


def test_an_expired_certificate_names_the_file(
    tmp_path: Path, make_tls: MakeTls, capsys: pytest.CaptureFixture[str]
) -> None:
    """A certificate past its notAfter is refused at start, with the date."""
    crt, _key = make_tls(tmp_path / "tls", days=-1)
    [line] = run_fails(tls_env(tmp_path, tmp_path / "tls"), capsys)
    assert line.startswith(
        f"MY_REG_TLS_CRT='certificate.pem': expected a certificate that has not expired ({crt} "
        "expired "
    )


def test_a_file_that_is_not_pem_names_the_file(
    tmp_path: Path, make_tls: MakeTls, capsys: pytest.CaptureFixture[str]
) -> None:
    """Garbage where the certificate should be."""
    crt, _key = make_tls(tmp_path / "tls")
    crt.write_text("not a certificate\n")
    assert run_fails(tls_env(tmp_path, tmp_path / "tls"), capsys) == [
        f"MY_REG_TLS_CRT='certificate.pem': expected a PEM certificate ({crt} holds none)"
    ]


def test_an_encrypted_key_is_refused(
    tmp_path: Path, make_tls: MakeTls, capsys: pytest.CaptureFixture[str]
) -> None:
    """The registry cannot ask for a passphrase, so an encrypted key cannot work."""
    _crt, key = make_tls(tmp_path / "tls")
    private = serialization.load_pem_private_key(key.read_bytes(), password=None)
    key.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"passphrase"),
        )
    )
    assert run_fails(tls_env(tmp_path, tmp_path / "tls"), capsys) == [
        f"MY_REG_TLS_KEY='key.pem': expected an unencrypted PEM private key ({key} is encrypted)"
    ]


@pytest.mark.parametrize(
    ("days", "note"),
    [
        (365, None),
        (31, None),
        (10.5, "TLS certificate expires in 10 days"),
        (0.5, "TLS certificate expires within a day"),
    ],
)
def test_expiry_note_within_30_days(
    tmp_path: Path, make_tls: MakeTls, days: float, note: str | None
) -> None:
    """Under 30 days left is a warning; more is silence."""
    crt, _key = make_tls(tmp_path / "tls", days=days)
    assert note == tls.expiry_note(tls.load_certificate(crt), datetime.now(UTC))


def test_an_expiring_certificate_is_in_the_status_line(tmp_path: Path, make_tls: MakeTls) -> None:
    """systemd's STATUS line carries the expiry warning after the phase."""
    make_tls(tmp_path / "tls", days=10.5)
    settings = load_settings(tls_env(tmp_path, tmp_path / "tls"))
    supervisor = Supervisor(settings, None, Notifier())
    try:
        line = supervisor.status_line(0.0)
    finally:
        supervisor.health.close()
    assert line == "waiting for Docker engine; TLS certificate expires in 10 days"


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_check_warns_about_an_expiring_certificate(
    tmp_path: Path,
    make_tls: MakeTls,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`check` prints the certificate's details and a WARNING line before contacting Docker."""
    crt, _key = make_tls(tmp_path / "tls", days=10.5)
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")
    assert main(["check", "--env-file", str(tls_env(tmp_path, tmp_path / "tls"))]) == 69
    gc.collect()  # docker-py leaves the socket whose connect() failed to the collector
    out = capsys.readouterr().out
    assert f"# tls: certificate {crt} (CN=localhost; names localhost, 127.0.0.1)" in out
    assert f"# WARNING: TLS certificate expires in 10 days: {crt} is valid until" in out


# --- the pinned probe, against a real TLS server on loopback ----------------------------


@pytest.fixture
def tls_server(tmp_path: Path, make_tls: MakeTls) -> Iterator[tuple[int, Path]]:
    """An HTTPS server on 127.0.0.1 whose certificate names only registry.example.com."""
    crt, key = make_tls(tmp_path / "server", names=("registry.example.com",))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(crt, key)
    with serving(V2Handler, context) as server:
        yield server.server_port, crt


def test_the_probe_trusts_the_configured_certificate_whatever_its_names(
    tls_server: tuple[int, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pinned: 127.0.0.1 is not in the certificate and no CA signed it, yet it verifies;
    a CA bundle from the environment (REQUESTS_CA_BUNDLE) does not get in the way."""
    port, crt = tls_server
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    probe = Probe(f"https://127.0.0.1:{port}/v2/", crt)
    try:
        assert probe(2.0) == 200
    finally:
        probe.close()


def test_the_probe_refuses_any_other_certificate(
    tls_server: tuple[int, Path], tmp_path: Path, make_tls: MakeTls
) -> None:
    """A server presenting a different certificate than the configured one fails the probe."""
    port, _crt = tls_server
    other, _key = make_tls(tmp_path / "other", names=("registry.example.com",))
    probe = Probe(f"https://127.0.0.1:{port}/v2/", other)
    try:
        with pytest.raises(ProbeFailed) as failed:
            probe(2.0)
    finally:
        probe.close()
    served = tls.load_certificate(_crt).sha256
    assert ("TLS handshake failed: certificate is not the pinned one", "tls", served) == (
        str(failed.value),
        failed.value.failure,
        failed.value.served,
    )


def test_a_plain_http_server_fails_the_tls_handshake(tmp_path: Path, make_tls: MakeTls) -> None:
    """HTTP where HTTPS is expected: OpenSSL's reason in a few words, no certificate."""
    crt, _key = make_tls(tmp_path / "tls", names=("registry.example.com",))
    with serving(V2Handler) as server:
        probe = Probe(f"https://127.0.0.1:{server.server_port}/v2/", crt)
        try:
            with pytest.raises(ProbeFailed) as failed:
                probe(2.0)
        finally:
            probe.close()
    assert ("TLS handshake failed: wrong version number", "tls", None) == (
        str(failed.value),
        failed.value.failure,
        failed.value.served,
    )
