"""The CLI's exit codes and messages for bad input and an absent engine (no engine needed)."""

from __future__ import annotations

import gc
import subprocess
import sys
from pathlib import Path

import pytest

from supervisor.cli import main


def test_bad_settings_exit_78_with_one_line_each_and_no_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`run` with a bad port and a relative dir names both and exits EX_CONFIG."""
    env_file = tmp_path / "bad.env"
    env_file.write_text("MY_REG_PORT=abc\nMY_REG_DIR=relative\n")
    assert main(["run", "--env-file", str(env_file)]) == 78
    err = capsys.readouterr().err
    assert err.splitlines() == [
        "registry-supervisor: MY_REG_DIR='relative': expected an absolute path",
        "registry-supervisor: MY_REG_PORT='abc': expected a TCP port number from 1 to 65535",
    ]


def test_a_required_variable_left_unset_exits_78_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`check` with ${DATA:?message} and DATA unset prints that one line and exits EX_CONFIG."""
    env_file = tmp_path / "required.env"
    env_file.write_text("MY_REG_DIR=${DATA:?set DATA to the data dir}\n")
    assert main(["check", "--env-file", str(env_file)]) == 78
    assert [
        f"registry-supervisor: --env-file {env_file}: line 1: MY_REG_DIR: "
        "${DATA:?set DATA to the data dir}: set DATA to the data dir"
    ] == capsys.readouterr().err.splitlines()


def test_missing_env_file_exits_78(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An --env-file that does not exist is bad settings, for every command."""
    for command in ("run", "check", "status"):
        assert main([command, "--env-file", str(tmp_path / "none.env")]) == 78
    assert "--env-file" in capsys.readouterr().err


def test_env_file_option_is_accepted_before_the_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`registry-supervisor --env-file F check` works like `check --env-file F`."""
    env_file = tmp_path / "bad.env"
    env_file.write_text("MY_REG_PULL=perhaps\n")
    assert main(["--env-file", str(env_file), "check"]) == 78


# docker-py's unix socket transport does not close a socket whose connect()
# failed; collect it here so the warning lands on this test, not a later one.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("command", [["check"], ["status"], ["status", "--json"]])
def test_unreachable_engine_exits_69(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    command: list[str],
) -> None:
    """No Docker engine at DOCKER_HOST: EX_UNAVAILABLE with a one-line reason."""
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")
    monkeypatch.setenv("MY_REG_PORT", "1")  # never bound: the engine is checked first
    assert main(command) == 69
    gc.collect()
    err = capsys.readouterr().err
    assert err.startswith("registry-supervisor: Docker engine unreachable")
    assert "Traceback" not in err


def test_python_dash_m_supervisor_runs_the_cli() -> None:
    """`python -m supervisor` is the same program as the console script."""
    result = subprocess.run(
        [sys.executable, "-m", "supervisor", "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == "registry-supervisor 0.1.0"
