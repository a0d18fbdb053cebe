"""End to end under a real systemd: the .deb installed, the unit driven as an admin would.

Each test starts from the unit stopped with the base settings (`service`), or started and
healthy (`running`: `systemctl start` returns once the unit is active). The systemd
container and the package install are shared by the module (conftest.py).
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from pathlib import Path

import pytest
from support.net import free_port

pytestmark = pytest.mark.systemd

SHIPPED_ENV = Path(__file__).resolve().parents[2] / "packaging" / "registry.env"
UNIT = "registry-supervisor"


def test_installed_unit_passes_systemd_analyze_verify(service):
    """The unit as installed on the target passes `systemd-analyze verify` without a word."""
    result = service.machine.run("systemd-analyze", "verify", f"{UNIT}.service", check=False)

    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_env_file_is_a_conffile_and_shows_every_setting_with_its_default(service):
    """The shipped env file is a conffile, and its commented lines are the effective defaults."""
    machine = service.machine
    machine.write("/root/shipped.env", SHIPPED_ENV.read_text())

    # The default port may be busy here: the process environment wins over the file.
    check = machine.run(
        "env", f"MY_REG_PORT={free_port()}",
        "registry-supervisor", "check", "--env-file", "/root/shipped.env",
    )  # fmt: skip

    conffiles = machine.run("dpkg-query", "-W", "-f", "${Conffiles}", UNIT).stdout
    shipped_md5 = hashlib.md5(SHIPPED_ENV.read_bytes()).hexdigest()  # noqa: S324 (dpkg's hash)
    assert f"{service.env_file} {shipped_md5}" in conffiles
    effective = dict(re.findall(r"^(MY_REG_\w+)=(.*)$", check.stdout, re.MULTILINE))
    documented = dict(re.findall(r"^#(MY_REG_\w+)=(.*)$", SHIPPED_ENV.read_text(), re.MULTILINE))
    del effective["MY_REG_PORT"]
    assert set(effective) <= set(documented), "settings missing from packaging/registry.env"
    # Its default is the host's name, which the file documents as empty ("this host's name").
    del effective["MY_REG_FLEET_MEMBER"]
    for name, value in effective.items():
        assert _same_setting(value, documented[name]), f"{name}: {documented[name]} != {value}"


def _same_setting(actual: str, documented: str) -> bool:
    try:
        return float(actual) == float(documented)
    except ValueError:
        return actual.lower() == documented.lower()


def test_enable_now_returns_once_the_registry_answers_and_status_says_healthy(service):
    """`systemctl enable --now` returns with the unit active, /v2/ answering, STATUS healthy."""
    machine = service.machine

    machine.systemctl("enable", "--now", UNIT)

    # Asked once, no retry: READY=1 came only after the registry answered.
    assert service.http_status(service.url) == 200
    state = machine.show("ActiveState", "SubState", "UnitFileState", "StatusText")
    assert state["StatusText"].startswith("healthy: up "), state["StatusText"]
    del state["StatusText"]
    assert state == {"ActiveState": "active", "SubState": "running", "UnitFileState": "enabled"}


def test_unit_stays_activating_while_the_registry_does_not_answer(service, wait_for):
    """A registry that never answers /v2/ keeps the unit activating, never active."""
    machine = service.machine
    # The registry listens on another port inside its container: the published one is dead.
    # (REGISTRY_HTTP_ADDR=:5999 is refused as a setting; a config.yml is the registry's own.)
    config = service.data_dir.parent / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "storage:\n  filesystem:\n    rootdirectory: /var/lib/registry\n"
        "http:\n  addr: :5999\n"
    )
    config.chmod(0o644)
    service.configure(MY_REG_CONF=str(config))

    machine.systemctl("start", "--no-block", UNIT)
    wait_for(service.registry_running, "the registry container to run")
    time.sleep(3)

    state = machine.show("ActiveState", "StatusText")
    assert state["ActiveState"] == "activating"
    assert state["StatusText"].startswith("starting"), state["StatusText"]
    assert service.http_status(service.url) is None


def test_pushed_image_is_pullable(running, tiny_image):
    """An image pushed with the docker CLI can be pulled back from the supervised registry."""
    ref = f"127.0.0.1:{running.port}/e2e/tiny:latest"
    running.host("docker", "tag", tiny_image, ref)
    try:
        running.host("docker", "push", ref)
        running.host("docker", "image", "rm", ref)

        running.host("docker", "pull", ref)

        pulled = running.host("docker", "image", "inspect", "-f", "{{.Id}}", ref).stdout
        pushed = running.host("docker", "image", "inspect", "-f", "{{.Id}}", tiny_image).stdout
        assert pulled == pushed
    finally:
        running.host("docker", "image", "rm", "-f", ref, check=False)


def test_watchdog_restarts_a_frozen_supervisor_which_adopts_the_registry(running, wait_for):
    """SIGSTOP of the supervisor: systemd's watchdog kills and restarts it; the registry runs on."""
    machine = running.machine
    before = machine.show("MainPID", "NRestarts")
    registry = running.identity()

    machine.run("kill", "-STOP", before["MainPID"])
    wait_for(
        lambda: (
            machine.show("NRestarts", "ActiveState")
            == {"NRestarts": str(int(before["NRestarts"]) + 1), "ActiveState": "active"}
        ),
        "systemd's watchdog to restart the supervisor",
        timeout=30,
    )

    assert running.identity() == registry
    assert machine.prop("MainPID") != before["MainPID"]
    assert any("Watchdog timeout" in line for line in machine.journal())
    events = [event["event"] for event in machine.events(machine.prop("InvocationID"))]
    assert "container.adopted" in events
    assert machine.prop("StatusText").startswith("healthy")
    assert running.http_status(running.url) == 200


def _reload_event(machine, invocation: str) -> dict[str, object] | None:
    """The supervisor's first `supervisor.reloaded` event of this invocation, once logged."""
    done = [e for e in machine.events(invocation) if e["event"] == "supervisor.reloaded"]
    return done[0] if done else None


def test_reload_with_unchanged_settings_keeps_the_container(running, wait_for):
    """`systemctl reload` with the same env file leaves the container as it is."""
    machine = running.machine
    invocation = machine.prop("InvocationID")
    registry = running.identity()

    machine.systemctl("reload", UNIT)
    event = wait_for(lambda: _reload_event(machine, invocation), "the supervisor to reload")

    assert event["spec_changed"] is False
    assert running.identity() == registry
    assert machine.prop("ActiveState") == "active"
    assert running.http_status(running.url) == 200


def test_reload_with_a_changed_port_recreates_the_container(running, wait_for):
    """`systemctl reload` after a port change replaces the container; the unit stays up."""
    machine = running.machine
    invocation = machine.prop("InvocationID")
    old_url, (old_id, _) = running.url, running.identity()
    running.port = free_port()
    running.configure()

    machine.systemctl("reload", UNIT)
    wait_for(lambda: running.http_status(running.url) == 200, f"{running.url} to answer")

    new_id, _ = running.identity()
    assert new_id != old_id
    assert running.http_status(old_url) is None
    assert _reload_event(machine, invocation)["spec_changed"] is True
    state = machine.show("ActiveState", "NRestarts", "InvocationID")
    assert state == {"ActiveState": "active", "NRestarts": "0", "InvocationID": invocation}


def test_stop_stops_the_registry_and_leaves_the_unit_inactive(running):
    """`systemctl stop` stops the registry container; the unit is inactive, not failed."""
    machine = running.machine

    machine.systemctl("stop", UNIT)

    state = machine.show("ActiveState", "Result", "ExecMainStatus")
    assert state == {"ActiveState": "inactive", "Result": "success", "ExecMainStatus": "0"}
    assert running.container() is not None
    assert not running.registry_running()
    assert running.http_status(running.url) is None


def test_bad_setting_fails_with_78_without_restarting_and_names_it_in_the_journal(
    running, wait_for
):
    """MY_REG_PORT=abc: the unit fails with status 78, is not restarted, the journal says why."""
    machine = running.machine
    machine.systemctl("stop", UNIT)
    registry = running.identity()
    running.configure(MY_REG_PORT="abc")

    start = machine.systemctl("start", UNIT, check=False)
    time.sleep(3)  # three times the test's RestartSec: a restart would have happened

    assert start.returncode != 0
    state = machine.show("ActiveState", "Result", "ExecMainStatus", "NRestarts")
    assert state == {
        "ActiveState": "failed", "Result": "exit-code", "ExecMainStatus": "78", "NRestarts": "0",
    }  # fmt: skip
    invocation = machine.prop("InvocationID")
    errors = wait_for(
        lambda: [line for line in machine.journal(invocation) if "MY_REG_PORT" in line],
        "the journal to show the bad setting",
        timeout=5,
    )
    assert len(errors) == 1, errors
    assert "MY_REG_PORT='abc': expected" in errors[0], errors[0]
    assert running.identity() == registry


def test_upgrade_keeps_the_edited_env_file_and_the_registry_answering(running):
    """Installing the package again keeps the admin's env file and never stops the registry."""
    machine = running.machine
    edited = running.env_text() + "# edited by the admin\n"
    machine.write(running.env_file, edited)
    before = machine.prop("MainPID")
    registry = running.identity()
    answers: list[int | None] = []
    done = threading.Event()

    def probe() -> None:
        while not done.is_set():
            # A generous timeout: a slow answer on a busy machine is not downtime.
            answers.append(running.http_status(running.url, timeout=5.0))
            time.sleep(0.05)

    prober = threading.Thread(target=probe)
    prober.start()
    try:
        machine.run("dpkg", "-i", running.deb_path, timeout=180)
    finally:
        done.set()
        prober.join()

    assert machine.read(running.env_file) == edited
    assert machine.prop("ActiveState") == "active"
    assert machine.prop("MainPID") != before
    assert running.identity() == registry
    assert set(answers) == {200}, f"{answers.count(200)} of {len(answers)} probes answered 200"
    venvs = machine.run("sh", "-c", "ls -d /opt/registry-supervisor/venv.*").stdout.split()
    assert len(venvs) == 1, venvs


def test_python_upgrade_trigger_remakes_a_broken_venv_without_stopping_the_registry(running):
    """A python3 upgrade that breaks the venv (new minor version) gets it remade, no downtime."""
    machine = running.machine
    old_venv = machine.run("readlink", "/opt/registry-supervisor/current").stdout.strip()
    # What a new Python minor version does to a venv: the application no longer imports.
    machine.run("sh", "-c", f"mv /opt/registry-supervisor/{old_venv}/lib /opt/lib.off")
    registry = running.identity()

    machine.run("dpkg-trigger", "--no-await", "/usr/share/python3/debian_defaults")
    machine.run("dpkg", "--triggers-only", "--pending", timeout=180)

    new_venv = machine.run("readlink", "/opt/registry-supervisor/current").stdout.strip()
    assert new_venv != old_venv
    assert not machine.exists(f"/opt/registry-supervisor/{old_venv}")
    assert machine.run("registry-supervisor", "--version").stdout.startswith(UNIT)
    assert machine.prop("ActiveState") == "active"
    assert running.identity() == registry
    machine.run("rm", "-rf", "/opt/lib.off")


def test_remove_stops_the_service_and_purge_keeps_the_registry_data(running):
    """dpkg -r stops the service and drops the venv; dpkg -P drops the env file, never data."""
    machine = running.machine

    machine.run("dpkg", "-r", UNIT, timeout=120)

    assert machine.prop("ActiveState") in ("inactive", "")
    assert not running.registry_running()
    assert not machine.exists("/opt/registry-supervisor")
    assert machine.exists(running.env_file)

    machine.run("dpkg", "-P", UNIT, timeout=120)

    assert not machine.exists(running.env_file)
    assert running.data_dir.is_dir()
    assert machine.exists("/var/lib/my_registry")
    assert running.container() is not None
