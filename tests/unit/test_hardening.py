"""Container hardening (each on by default, each with an opt-out) and the exposure warnings."""

from __future__ import annotations

import gc
from datetime import UTC, datetime
from pathlib import Path

import pytest
import structlog
from support.certs import MakeTls
from support.settings import settings_from, spec_hash

from supervisor import risks
from supervisor.adapters.notify import Notifier
from supervisor.cli import main
from supervisor.engine.configs import create_config
from supervisor.errors import ConfigError
from supervisor.layout import V2_LAYOUT
from supervisor.loop.supervisor import Supervisor
from supervisor.ops import htpasswd
from supervisor.spec import derive_spec


def host_config(tmp_path: Path, text: str = "") -> dict[str, object]:
    spec = derive_spec(settings_from(tmp_path, text), V2_LAYOUT)
    config: dict[str, object] = create_config(spec, holder_id="f00d")["host_config"]
    return config


def test_by_default_the_container_is_read_only_unprivileged_and_capability_free(
    tmp_path: Path,
) -> None:
    """Read-only root with a tmpfs /tmp, no-new-privileges, every capability dropped."""
    config = host_config(tmp_path)
    assert config["read_only"] is True
    assert config["tmpfs"] == {"/tmp": "rw,noexec,nosuid,nodev,size=64m"}
    assert config["security_opt"] == ["no-new-privileges:true"]
    assert config["cap_drop"] == ["ALL"]
    assert "mem_limit" not in config


@pytest.mark.parametrize(
    ("line", "gone"),
    [
        ("MY_REG_READ_ONLY=false", {"read_only", "tmpfs"}),
        ("MY_REG_NO_NEW_PRIVILEGES=false", {"security_opt"}),
        ("MY_REG_CAP_DROP_ALL=false", {"cap_drop"}),
    ],
)
def test_each_hardening_has_an_opt_out(tmp_path: Path, line: str, gone: set[str]) -> None:
    """Switching one off removes exactly its host config keys."""
    assert set(host_config(tmp_path)) - set(host_config(tmp_path, line + "\n")) == gone


@pytest.mark.parametrize(
    ("value", "size"), [("512m", 512 << 20), ("2G", 2 << 30), ("6291456", 6 << 20)]
)
def test_memory_limit_in_docker_units(tmp_path: Path, value: str, size: int) -> None:
    """MY_REG_MEMORY takes bytes or k/m/g (binary) and becomes the container's limit."""
    assert host_config(tmp_path, f"MY_REG_MEMORY={value}\n")["mem_limit"] == size


@pytest.mark.parametrize("value", ["5m", "1x", "-1g", "2048g", "1.5g", "\u0665\u0661\u0662m"])
def test_memory_limits_docker_would_refuse_are_config_errors(tmp_path: Path, value: str) -> None:
    """Below Docker's 6 MiB minimum, above 1024g, or not a size: one line naming it."""
    with pytest.raises(ConfigError) as caught:
        settings_from(tmp_path, f"MY_REG_MEMORY={value}\n")
    assert caught.value.problems == [
        f"MY_REG_MEMORY={value!r}: expected a memory size from 6m to 1024g, such as 512m or 2g"
    ]


@pytest.mark.parametrize(
    "line",
    [
        "MY_REG_READ_ONLY=false",
        "MY_REG_NO_NEW_PRIVILEGES=false",
        "MY_REG_CAP_DROP_ALL=false",
        "MY_REG_MEMORY=1g",
    ],
)
def test_hardening_settings_change_the_spec_hash(tmp_path: Path, line: str) -> None:
    """A changed hardening setting recreates the container on reload."""
    base = spec_hash(tmp_path)
    assert spec_hash(tmp_path, line + "\n") != base


# --- exposure --------------------------------------------------------------------------


def exposure_events(tmp_path: Path, make_tls: MakeTls, *, tls: bool, auth: bool) -> list[str]:
    lines = "MY_REG_BIND=0.0.0.0\n"
    if tls:
        make_tls(tmp_path / "tls")
        lines += f"MY_REG_TLS_DIR={tmp_path / 'tls'}\n"
    if auth:
        htpasswd.set_password(tmp_path / "htpasswd", "alice", "pw", cost=4)
        lines += f"MY_REG_AUTH_HTPASSWD={tmp_path / 'htpasswd'}\n"
    found = risks.exposure(settings_from(tmp_path, lines))
    return [warning.event for warning in found]


@pytest.mark.parametrize(
    ("tls", "auth", "events"),
    [
        (False, False, ["security.exposed"]),
        (False, True, ["security.cleartext_credentials"]),
        (True, False, ["security.no_authentication"]),
        (True, True, []),
    ],
)
def test_a_published_registry_without_tls_or_auth_is_warned_about(
    tmp_path: Path, make_tls: MakeTls, tls: bool, auth: bool, events: list[str]
) -> None:
    """On every interface: no TLS and no auth is the loud one; half of it still warns."""
    assert events == exposure_events(tmp_path, make_tls, tls=tls, auth=auth)


@pytest.mark.parametrize("bind", ["127.0.0.1", "::1"])
def test_a_loopback_registry_is_not_warned_about(tmp_path: Path, bind: str) -> None:
    """Only this host can reach it: no warning."""
    assert [] == risks.exposure(settings_from(tmp_path, f"MY_REG_BIND={bind}\n"))


def test_the_exposure_warning_is_logged_at_start(tmp_path: Path) -> None:
    """startup() logs risks.exposed with the bind address, before anything else runs."""
    settings = settings_from(tmp_path, f"MY_REG_DIR={tmp_path / 'data'}\n")
    supervisor = Supervisor(settings, None, Notifier())
    try:
        with structlog.testing.capture_logs() as logs:
            supervisor.startup()
    finally:
        supervisor.health.close()
    [exposed] = [entry for entry in logs if entry["event"] == "security.exposed"]
    assert exposed["log_level"] == "warning"
    assert (exposed["bind"], exposed["tls"], exposed["auth"]) == ("0.0.0.0", False, False)
    assert "anyone who can reach it can push and pull images" in exposed["detail"]


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_check_prints_the_exposure_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The seed's setup (0.0.0.0, no TLS, no auth) gets a WARNING line from `check`."""
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")
    (tmp_path / "seed.env").write_text("MY_REG_PORT=5001\n")
    assert main(["check", "--env-file", str(tmp_path / "seed.env")]) == 69
    gc.collect()  # docker-py leaves the socket whose connect() failed to the collector
    out = capsys.readouterr().out
    assert (
        "# WARNING: MY_REG_BIND=0.0.0.0 publishes the registry on port 5001 of every "
        "interface with neither TLS nor authentication" in out
    )


def test_warnings_are_pure_and_include_an_expiring_certificate(
    tmp_path: Path, make_tls: MakeTls
) -> None:
    """warnings() = exposure + certificate expiry, from the values given."""
    make_tls(tmp_path / "tls", days=5.5)
    settings = settings_from(
        tmp_path, f"MY_REG_BIND=127.0.0.1\nMY_REG_TLS_DIR={tmp_path / 'tls'}\n"
    )
    found = risks.warnings(settings, risks.certificate(settings), datetime.now(UTC))
    assert ["tls.certificate_expiring"] == [warning.event for warning in found]
    assert found[0].fields["days_left"] == pytest.approx(5.5, abs=0.1)
