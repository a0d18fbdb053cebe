"""The registry drains on a planned stop: REGISTRY_HTTP_DRAINTIMEOUT by default, below
MY_REG_STOP_TIMEOUT, outside the spec hash; a user's value hashed and checked."""

from __future__ import annotations

from dataclasses import replace
from itertools import takewhile
from pathlib import Path

import pytest

from supervisor.cli import main
from supervisor.engine.configs import create_config
from supervisor.errors import ConfigError
from supervisor.layout import V2_LAYOUT, V3_LAYOUT, ImageLayout
from supervisor.ops.check import check
from supervisor.settings import load_settings
from supervisor.settings.values import go_duration_seconds
from supervisor.spec import derive_spec
from supervisor.spec import spec_hash as compute_hash
from tests.support.settings import settings_from, spec_hash

DRAIN = "REGISTRY_HTTP_DRAINTIMEOUT"


def container_env(tmp_path: Path, text: str = "") -> dict[str, str]:
    """The environment the engine is asked to give the registry for the settings ``text``."""
    spec = derive_spec(settings_from(tmp_path, text), V2_LAYOUT)
    environment: dict[str, str] = create_config(spec, "holder-id")["environment"]
    return environment


def test_the_registry_drains_5_s_by_default(tmp_path: Path) -> None:
    """Nothing set: the container gets REGISTRY_HTTP_DRAINTIMEOUT=5s."""
    assert "5s" == container_env(tmp_path).get(DRAIN)


@pytest.mark.parametrize(
    ("stop_timeout", "drain"),
    [("10", "5s"), ("8", "5s"), ("7", "5s"), ("6", "4s"), ("3", "1s"), ("2", None), ("0", None)],
)
def test_the_default_drain_ends_2_s_before_the_stop_timeout(
    tmp_path: Path, stop_timeout: str, drain: str | None
) -> None:
    """The default is min(5 s, MY_REG_STOP_TIMEOUT - 2 s), and none when that is not above 0."""
    assert drain == container_env(tmp_path, f"MY_REG_STOP_TIMEOUT={stop_timeout}\n").get(DRAIN)


@pytest.mark.parametrize(
    "name", [DRAIN, "REGISTRY_http_draintimeout", "REGISTRY_HTTP_drainTimeout"]
)
def test_a_drain_the_user_sets_is_passed_as_given(tmp_path: Path, name: str) -> None:
    """A user's REGISTRY_HTTP_DRAINTIMEOUT, in any case, replaces the default."""
    environment = container_env(tmp_path, f"{name}=3s\n")
    assert {name: "3s"} == {k: v for k, v in environment.items() if k.upper() == DRAIN}


def test_no_default_drain_with_a_config_file(tmp_path: Path) -> None:
    """MY_REG_CONF may set http.draintimeout itself, which a variable would override."""
    conf = tmp_path / "config.yml"
    conf.write_text("version: 0.1\nhttp:\n  addr: :5000\n  draintimeout: 8s\n")
    conf.chmod(0o644)
    assert DRAIN not in container_env(tmp_path, f"MY_REG_CONF={conf}\n")


@pytest.mark.parametrize("layout", [V2_LAYOUT, V3_LAYOUT], ids=["v2", "v3"])
def test_the_default_drain_is_not_in_the_spec_hash(tmp_path: Path, layout: ImageLayout) -> None:
    """A container of the previous release (no drain variable) is adopted, not replaced."""
    spec = derive_spec(settings_from(tmp_path), layout)
    assert ((DRAIN, "5s"),) == spec.default_environment
    assert spec.spec_hash == compute_hash(replace(spec, default_environment=()))


def test_a_drain_the_user_sets_is_in_the_spec_hash(tmp_path: Path) -> None:
    """Setting REGISTRY_HTTP_DRAINTIMEOUT (even to the default's value) is a changed spec."""
    assert spec_hash(tmp_path) != spec_hash(tmp_path, f"{DRAIN}=5s\n")
    assert spec_hash(tmp_path, f"{DRAIN}=4s\n") != spec_hash(tmp_path, f"{DRAIN}=3s\n")


@pytest.mark.parametrize(
    ("lines", "shown"),
    [
        (f"{DRAIN}=10s\n", "10s"),
        (f"{DRAIN}=15s\n", "15s"),
        (f"{DRAIN}=1m\n", "1m"),
        (f"MY_REG_STOP_TIMEOUT=3\n{DRAIN}=3000ms\n", "3000ms"),
        (f"MY_REG_STOP_TIMEOUT=0\n{DRAIN}=1s\n", "1s"),
    ],
)
def test_a_drain_not_below_the_stop_timeout_is_refused(
    tmp_path: Path, lines: str, shown: str
) -> None:
    """`docker stop` would SIGKILL the registry mid-drain: one line naming both settings."""
    env_file = tmp_path / "test.env"
    env_file.write_text(lines)
    with pytest.raises(ConfigError) as caught:
        load_settings(env_file)
    [problem] = caught.value.problems
    assert problem.startswith(
        f"{DRAIN}={shown!r}: expected a drain shorter than MY_REG_STOP_TIMEOUT="
    )


def test_a_drain_not_below_the_stop_timeout_exits_78(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`run` and `check` refuse it with exit 78 and one line on stderr."""
    env_file = tmp_path / "test.env"
    env_file.write_text(f"MY_REG_STOP_TIMEOUT=5\n{DRAIN}=5s\n")
    assert main(["check", "--env-file", str(env_file)]) == 78
    [line] = capsys.readouterr().err.strip().splitlines()
    assert "REGISTRY_HTTP_DRAINTIMEOUT='5s'" in line
    assert "MY_REG_STOP_TIMEOUT=5" in line


@pytest.mark.parametrize("value", ["5", "five", "5 s", "-1s", "s", "1.s."])
def test_a_drain_that_is_not_a_go_duration_is_refused(tmp_path: Path, value: str) -> None:
    """A bare 5 is 5 ns to the registry: refused, as is anything it cannot parse."""
    env_file = tmp_path / "test.env"
    env_file.write_text(f"{DRAIN}='{value}'\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(env_file)
    [problem] = caught.value.problems
    assert "expected a Go duration such as 5s" in problem


@pytest.mark.parametrize("value", ["0", "0s"])
def test_a_drain_of_0_turns_draining_off(tmp_path: Path, value: str) -> None:
    """0 is accepted with any stop timeout, and no default replaces it."""
    environment = container_env(tmp_path, f"MY_REG_STOP_TIMEOUT=0\n{DRAIN}={value}\n")
    assert value == environment[DRAIN]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("5s", 5.0),
        ("1m30s", 90.0),
        ("250ms", 0.25),
        ("1.5s", 1.5),
        ("2h", 7200.0),
        ("0", 0.0),
        ("+3s", 3.0),
        ("-2s", -2.0),
        ("1us", 1e-6),
        ("5", None),
        ("", None),
        ("5x", None),
    ],
)
def test_go_durations_read_as_the_registry_reads_them(text: str, seconds: float | None) -> None:
    """time.ParseDuration's grammar; a bare number is not a duration."""
    assert seconds == go_duration_seconds(text)


def test_check_prints_the_default_drain(tmp_path: Path) -> None:
    """`check` shows the environment the container gets, the default drain included."""
    settings = settings_from(tmp_path, f"MY_REG_STATE_DIR={tmp_path / 'state'}\n")
    lines = list(takewhile(lambda line: not line.startswith("#"), check(settings)))
    assert f"{DRAIN}=5s" in lines
