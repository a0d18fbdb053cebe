"""The command line against a real engine: bad settings, `check`, `status`, exit codes."""

from __future__ import annotations

import json
import re
import signal

import pytest
from support.docker import docker_cli
from support.process import EX_CONFIG, EX_OK, EX_UNAVAILABLE

pytestmark = pytest.mark.integration

# `status` exits 3 when the registry is absent or not answering, as LSB's "not running".
STATUS_NOT_RUNNING = 3
NO_ENGINE = {"DOCKER_HOST": "unix:///nonexistent/rs-it/docker.sock"}

BAD_SETTINGS = [
    ("MY_REG_PORT", "abc"),
    ("MY_REG_PORT", "70000"),
    ("MY_REG_DIR", "relative/data"),
    ("MY_REG_CONF", "/nonexistent/rs-it/config.yml"),
    ("MY_REG_TLS_DIR", "/nonexistent/rs-it/tls"),
    ("MY_REG_HEALTH_INTERVAL", "0"),
    ("MY_REG_HEALTH_TIMEOUT", "-1"),
    ("MY_REG_PULL", "sometimes"),
    ("MY_REG_LOG_FORMAT", "xml"),
]


def config_lines(stderr, variable, value=None):
    """The stderr lines that name `variable` (and its `value`, quoted or not)."""
    if value is None:
        return [line for line in stderr.splitlines() if variable in line]
    pattern = re.compile(rf"{variable}=(['\"]?){re.escape(value)}\1(\W|$)")
    return [line for line in stderr.splitlines() if pattern.search(line)]


@pytest.mark.parametrize(
    ("variable", "value"), BAD_SETTINGS, ids=[f"{k}={v}" for k, v in BAD_SETTINGS]
)
def test_run_with_a_bad_setting_exits_78_and_touches_nothing(deployment, variable, value):
    """`run` with one bad setting exits 78 with a line naming the variable and its value, no
    traceback, and leaves the container of that name as it was."""
    existing = deployment.run_foreign()
    deployment.write_env(**{variable: value})

    done = deployment.cli("run", "--env-file", str(deployment.env_file))

    assert done.returncode == EX_CONFIG, done.stderr
    assert len(config_lines(done.stderr, variable, value)) == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert existing == deployment.observe()


def test_every_bad_setting_gets_its_own_line(deployment):
    """Two bad settings give two lines on stderr, one naming each variable."""
    deployment.write_env(MY_REG_PORT="abc", MY_REG_PULL="sometimes")

    done = deployment.cli("run", "--env-file", str(deployment.env_file))

    assert done.returncode == EX_CONFIG, done.stderr
    assert len(config_lines(done.stderr, "MY_REG_PORT", "abc")) == 1, done.stderr
    assert len(config_lines(done.stderr, "MY_REG_PULL", "sometimes")) == 1, done.stderr
    assert deployment.observe() is None


def test_missing_env_file_exits_78_and_creates_nothing(deployment):
    """`run --env-file` naming a file that does not exist exits 78 naming the file."""
    missing = deployment.root / "absent.env"

    done = deployment.cli("run", "--env-file", str(missing), env={"MY_REG_NAME": deployment.name})

    assert done.returncode == EX_CONFIG, done.stderr
    assert str(missing) in done.stderr
    assert "Traceback" not in done.stderr
    assert deployment.observe() is None


def test_tls_dir_without_certificate_is_rejected(deployment):
    """A TLS dir that lacks the certificate file is a bad setting (exit 78)."""
    tls_dir = deployment.root / "tls"
    tls_dir.mkdir()
    (tls_dir / "key.pem").write_text("not really a key\n")
    deployment.write_env(MY_REG_TLS_DIR=str(tls_dir))

    done = deployment.cli("check", "--env-file", str(deployment.env_file))

    assert done.returncode == EX_CONFIG, done.stderr
    assert config_lines(done.stderr, "MY_REG_TLS"), done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("module", [False, True], ids=["console-script", "python-m"])
def test_check_accepts_good_settings(deployment, module):
    """`check` exits 0 for good settings, by the console script and by `python -m supervisor`,
    and prints the effective settings without the secret."""
    done = deployment.cli("check", "--env-file", str(deployment.env_file), module=module)

    assert done.returncode == EX_OK, done.stderr
    output = done.stdout + done.stderr
    assert deployment.name in output
    assert deployment.secret not in output
    assert deployment.observe() is None


def test_check_accepts_the_port_held_by_our_own_container(deployment):
    """`check` exits 0 while our running container holds the configured port."""
    deployment.start()

    done = deployment.cli("check", "--env-file", str(deployment.env_file))

    assert done.returncode == EX_OK, done.stderr


def test_check_rejects_bad_settings(deployment):
    """`check` exits 78 for bad settings, naming the variable."""
    deployment.write_env(MY_REG_PORT="abc")

    done = deployment.cli("check", "--env-file", str(deployment.env_file))

    assert done.returncode == EX_CONFIG, done.stderr
    assert config_lines(done.stderr, "MY_REG_PORT", "abc"), done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    "command", [["check"], ["status"], ["status", "--json"]], ids=["check", "status", "status-json"]
)
def test_unreachable_engine_exits_69(deployment, command):
    """`check` and `status` exit 69 when the Docker engine cannot be reached."""
    done = deployment.cli(*command, "--env-file", str(deployment.env_file), env=NO_ENGINE)

    assert done.returncode == EX_UNAVAILABLE, done.stderr
    assert "Traceback" not in done.stderr


def test_run_waits_for_an_unreachable_engine(deployment):
    """`run` does not exit when the engine cannot be reached: it logs and keeps trying, and
    still stops cleanly on SIGTERM."""
    sup = deployment.start(wait_healthy=False, env=NO_ENGINE)

    sup.wait_for_event("engine.unreachable")
    assert sup.running
    sup.send(signal.SIGTERM)

    assert sup.wait_exit() == EX_OK
    assert deployment.observe() is None


def test_status_json_without_a_container(deployment):
    """`status --json` with no container reports it as null and the health as absent, and
    exits 3 (LSB "not running")."""
    done = deployment.cli("status", "--json", "--env-file", str(deployment.env_file))

    assert done.returncode == STATUS_NOT_RUNNING, done.stderr
    report = json.loads(done.stdout)
    assert report["container"] is None
    assert report["health"] == "absent"


def test_status_json_reports_the_running_container(deployment):
    """`status --json` reports the container's id, name, state, image and start time, and the
    registry as healthy."""
    deployment.start()
    observed = deployment.running()

    done = deployment.cli("status", "--json", "--env-file", str(deployment.env_file))

    assert done.returncode == EX_OK, done.stderr
    report = json.loads(done.stdout)
    container = report["container"]
    assert observed.id.startswith(container["id"][:12])
    assert deployment.name == container["name"]
    assert container["state"] == "running"
    assert "registry" in container["image"]
    assert container["started_at"]
    assert report["health"] == "healthy"


def test_human_status_names_the_container(deployment):
    """Plain `status` prints something a human can read, naming the container."""
    deployment.start()

    done = deployment.cli("status", "--env-file", str(deployment.env_file))

    assert done.returncode == EX_OK, done.stderr
    assert deployment.name in done.stdout


def test_secrets_are_never_logged(deployment):
    """REGISTRY_HTTP_SECRET reaches the container but never any output of the supervisor."""
    sup = deployment.start()
    deployment.push_image()
    outputs = [
        deployment.cli(*command, "--env-file", str(deployment.env_file))
        for command in (["check"], ["status"], ["status", "--json"])
    ]
    sup.send(signal.SIGTERM)
    assert sup.wait_exit() == EX_OK

    env = docker_cli("inspect", "--format", "{{json .Config.Env}}", deployment.name)
    assert f"REGISTRY_HTTP_SECRET={deployment.secret}" in json.loads(env)
    for done in outputs:
        assert deployment.secret not in done.stdout + done.stderr
    assert deployment.secret not in sup.stderr_path.read_text()
    assert deployment.secret not in sup.stdout_path.read_text()
