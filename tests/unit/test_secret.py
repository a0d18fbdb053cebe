"""The registry's HTTP secret: made once, kept 0600, the same at every start, never shown."""

from __future__ import annotations

import gc
import stat
from pathlib import Path

import pytest

from supervisor.cli import main
from supervisor.errors import ConfigError
from supervisor.layout import V2_LAYOUT
from supervisor.settings import Settings, load_settings
from supervisor.spec import derive_spec
from supervisor.statedir.http_secret import with_http_secret


def settings_with_state(tmp_path: Path, extra: str = "") -> Settings:
    env_file = tmp_path / "secret.env"
    env_file.write_text(f"MY_REG_STATE_DIR={tmp_path / 'state'}\n{extra}")
    return load_settings(env_file)


def test_a_secret_is_made_once_and_kept_0600_in_a_0700_state_dir(tmp_path: Path) -> None:
    """The first start writes it; the file is root's alone, and so is the directory."""
    settings = with_http_secret(settings_with_state(tmp_path))
    path = tmp_path / "state" / "http-secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert path.read_text().strip() == settings.registry_env["REGISTRY_HTTP_SECRET"]
    assert len(settings.registry_env["REGISTRY_HTTP_SECRET"]) >= 43


def test_the_spec_hash_is_the_same_at_every_start(tmp_path: Path) -> None:
    """Read back from the file, the secret gives the container the same spec each time:
    a supervisor restart adopts the registry instead of replacing it."""
    first = derive_spec(with_http_secret(settings_with_state(tmp_path)), V2_LAYOUT)
    second = derive_spec(with_http_secret(settings_with_state(tmp_path)), V2_LAYOUT)
    assert first.spec_hash == second.spec_hash
    assert "REGISTRY_HTTP_SECRET" in dict(first.environment)


def test_a_secret_the_user_sets_wins_and_nothing_is_written(tmp_path: Path) -> None:
    """REGISTRY_HTTP_SECRET in the env file is passed as it is; no state file appears."""
    settings = with_http_secret(settings_with_state(tmp_path, "REGISTRY_HTTP_SECRET=mine\n"))
    assert settings.registry_env["REGISTRY_HTTP_SECRET"] == "mine"
    assert not (tmp_path / "state").exists()


def test_a_loosened_secret_file_is_tightened(tmp_path: Path) -> None:
    """A secret file someone made world-readable goes back to 0600 when read."""
    settings = settings_with_state(tmp_path)
    with_http_secret(settings)
    path = tmp_path / "state" / "http-secret"
    path.chmod(0o644)
    with_http_secret(settings)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_loose_existing_state_dir_is_tightened_to_0700(tmp_path: Path) -> None:
    """mkdir's mode applies only to a new directory: an existing 0755 one becomes 0700."""
    (tmp_path / "state").mkdir(mode=0o755)
    (tmp_path / "state").chmod(0o755)
    with_http_secret(settings_with_state(tmp_path))
    assert 0o700 == stat.S_IMODE((tmp_path / "state").stat().st_mode)


def test_an_unusable_state_dir_is_a_config_error_naming_it(tmp_path: Path) -> None:
    """MY_REG_STATE_DIR naming a file: exit-78 material, with the variable's name."""
    (tmp_path / "state").write_text("not a directory")
    with pytest.raises(ConfigError) as caught:
        with_http_secret(settings_with_state(tmp_path))
    [line] = caught.value.problems
    assert line.startswith(f"MY_REG_STATE_DIR='{tmp_path / 'state'}': expected a directory")


def test_a_relative_state_dir_is_refused(tmp_path: Path) -> None:
    """Like MY_REG_DIR, the state dir must be an absolute path."""
    env_file = tmp_path / "secret.env"
    env_file.write_text("MY_REG_STATE_DIR=state\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(env_file)
    assert caught.value.problems == ["MY_REG_STATE_DIR='state': expected an absolute path"]


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_check_says_where_the_secret_is_and_never_shows_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`check` names the file and its mode; the value appears nowhere in its output."""
    secret = with_http_secret(settings_with_state(tmp_path)).registry_env["REGISTRY_HTTP_SECRET"]
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")
    assert main(["check", "--env-file", str(tmp_path / "secret.env")]) == 69
    gc.collect()  # docker-py leaves the socket whose connect() failed to the collector
    out, err = capsys.readouterr()
    assert f"# http secret: kept in {tmp_path / 'state' / 'http-secret'} (mode 0600)\n" in out
    assert secret not in out + err
