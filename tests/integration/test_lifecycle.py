"""The supervisor's own lifecycle: killed and restarted, told to stop, told to reload."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest
from support.net import free_port
from support.process import EX_OK

pytestmark = pytest.mark.integration

# How long a test watches for something that must NOT happen (a restart, a recreation).
QUIET_PERIOD = 1.5
CONTAINER_EVENTS = (
    "container.created",
    "container.replaced",
    "container.restarting",
    "container.started",
    "container.stopped",
)


def container_events(sup, since):
    return [e for e in sup.events()[since:] if e["event"] in CONTAINER_EVENTS]


@pytest.mark.both_layouts
def test_killed_supervisor_is_restarted_and_adopts_the_running_registry(deployment):
    """After a SIGKILL of the supervisor the registry keeps serving and the next supervisor
    adopts the same container without restarting it."""
    first = deployment.start()
    image = deployment.push_image()
    before = deployment.running()

    with deployment.serving_watch() as watch:
        first.send(signal.SIGKILL)
        assert first.wait_exit() == -signal.SIGKILL
        assert before == deployment.running()
        second = deployment.start()
        adopted = second.wait_for_event("container.adopted")

    assert before.id.startswith(adopted["container_id"][:12])
    after = deployment.running()
    assert before.id == after.id
    assert before.started_at == after.started_at
    assert container_events(second, 0) == []
    assert watch.answers, "the watch never polled"
    assert {200} == set(watch.answers), f"registry stopped answering: {watch.answers}"
    deployment.assert_pullable(image)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_stop_signal_stops_the_registry_and_exits_zero(deployment, signum):
    """SIGTERM or SIGINT stops the registry container (MY_REG_STOP_ON_EXIT defaults to true)
    and the supervisor exits 0, the data dir untouched."""
    sup = deployment.start()
    deployment.push_image()
    before = deployment.data_snapshot()
    running = deployment.running()

    sup.send(signum)

    assert sup.wait_exit() == EX_OK
    steps = [
        (e["event"], e.get("name"))
        for e in sup.events()
        if e["event"] in ("supervisor.stopping", "container.stopped", "supervisor.stopped")
    ]
    # The registry first, gracefully; then its network holder.
    assert steps == [
        ("supervisor.stopping", None),
        ("container.stopped", deployment.name),
        ("container.stopped", deployment.holder_name),
        ("supervisor.stopped", None),
    ]
    stopped = deployment.observe()
    assert stopped is not None, "the container was removed, not stopped"
    assert running.id == stopped.id
    assert stopped.status == "exited"
    holder = deployment.observe(deployment.holder_name)
    assert holder is not None and holder.status == "exited"
    assert deployment.v2_status() is None
    deployment.assert_data_kept(before)


def test_stop_signal_leaves_the_registry_running_when_asked(deployment):
    """With MY_REG_STOP_ON_EXIT=false, SIGTERM makes the supervisor exit 0 and leaves the
    registry running untouched."""
    deployment.write_env(MY_REG_STOP_ON_EXIT="false")
    sup = deployment.start()
    before = deployment.running()

    sup.send(signal.SIGTERM)

    assert sup.wait_exit() == EX_OK
    assert before == deployment.running()
    assert deployment.v2_status() == 200


def test_stopped_container_left_behind_is_started_by_the_next_supervisor(deployment):
    """A container stopped by a SIGTERMed supervisor is started again by the next one, with
    what was pushed before still there."""
    first = deployment.start()
    image = deployment.push_image()
    old = deployment.running()
    first.send(signal.SIGTERM)
    assert first.wait_exit() == EX_OK

    deployment.start()

    new = deployment.running()
    assert old.id == new.id
    deployment.assert_pullable(image)


def test_sighup_with_a_changed_port_recreates_the_container_on_it(deployment):
    """SIGHUP after MY_REG_PORT changed in the env file recreates the container on the new
    port; the data dir carries over, so the image pushed before pulls from the new port."""
    sup = deployment.start()
    image = deployment.push_image()
    before = deployment.data_snapshot()
    old = deployment.running()
    old_port = deployment.port
    new_port = free_port()
    deployment.write_env(MY_REG_PORT=new_port)

    since = sup.mark()
    fault_at = time.time()
    sup.send(signal.SIGHUP)

    sup.wait_for_event("supervisor.reloading", since=since)
    sup.wait_for_event("container.created", since=since)
    deployment.record_recovery("SIGHUP with a new port (recreated)", sup, since, fault_at)
    reasons = {e.get("reason") or e.get("why") for e in container_events(sup, since)}
    assert "spec-changed" in reasons
    new = deployment.running()
    holder = deployment.running(deployment.holder_name)
    assert old.id != new.id
    assert new.network_mode == f"container:{holder.id}"
    assert (f"127.0.0.1:{new_port}",) == holder.host_ports
    assert deployment.v2_status(port=old_port) is None
    deployment.assert_data_kept(before)
    deployment.assert_pullable(image, port=new_port)


@pytest.mark.both_layouts
def test_sighup_with_unchanged_settings_keeps_the_container(deployment):
    """SIGHUP with the env file unchanged re-reads it and leaves the container alone."""
    sup = deployment.start()
    before = deployment.running()

    since = sup.mark()
    sup.send(signal.SIGHUP)

    sup.wait_for_event("supervisor.reloading", since=since)
    sup.wait_for_event("supervisor.reloaded", since=since, spec_changed=False)
    time.sleep(QUIET_PERIOD)
    assert sup.running
    assert container_events(sup, since) == []
    assert before == deployment.running()
    assert deployment.v2_status() == 200


def test_sighup_with_invalid_settings_keeps_the_running_registry(deployment):
    """SIGHUP after the env file became invalid logs the rejection and changes nothing."""
    sup = deployment.start()
    before = deployment.running()
    deployment.write_env(MY_REG_PORT="abc")

    since = sup.mark()
    sup.send(signal.SIGHUP)

    rejected = sup.wait_for_event("settings.reload_rejected", since=since)
    assert "MY_REG_PORT" in str(rejected)
    time.sleep(QUIET_PERIOD)
    assert sup.running
    assert container_events(sup, since) == []
    assert before == deployment.running()
    assert deployment.v2_status() == 200


# -- what `status` says about the supervisor ------------------------------------------------

STATUS_TIMEOUT = 20.0


def status(deployment, *, as_json=False):
    args = ("status", "--json") if as_json else ("status",)
    done = deployment.cli(*args, "--env-file", str(deployment.env_file))
    return done.returncode, json.loads(done.stdout) if as_json else done.stdout


def wait_for_status(deployment, predicate, what):
    """Poll `status --json` until predicate(report) holds; fail saying what was awaited."""
    deadline = time.monotonic() + STATUS_TIMEOUT
    while True:
        _code, report = status(deployment, as_json=True)
        if predicate(report):
            return report
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {STATUS_TIMEOUT} s waiting for {what}; last: {report}")
        time.sleep(0.25)


def test_status_after_a_clean_stop_says_stopped(deployment, tmp_path):
    """After SIGTERM the state file says `stopped` and names no pid: `status` says the
    supervisor stopped, not the `healthy` it was."""
    deployment.write_env(MY_REG_STATE_DIR=str(tmp_path / "state"))
    sup = deployment.start()
    wait_for_status(
        deployment, lambda r: (r["supervisor"] or {}).get("phase") == "healthy", "healthy"
    )

    sup.send(signal.SIGTERM)
    assert sup.wait_exit() == EX_OK

    code, report = status(deployment, as_json=True)
    supervised = report["supervisor"]
    assert (3, "stopped", None, False) == (
        code,
        supervised["phase"],
        supervised["pid"],
        supervised["running"],
    )
    _code, human = status(deployment)
    assert f"supervisor: stopped (at {supervised['stopped_at']})" in human.splitlines()


def test_counts_and_the_last_reason_survive_a_supervisor_restart(deployment, tmp_path):
    """A crash (a failure) and a reload (planned), then a new supervisor: it continues both
    counts and the last reason, and `status` shows them apart."""
    deployment.write_env(MY_REG_STATE_DIR=str(tmp_path / "state"))
    first = deployment.start()
    since = first.mark()
    os.kill(deployment.running().pid, signal.SIGKILL)
    first.wait_for_event("registry.healthy", since=since)
    deployment.write_env(MY_REG_STOP_TIMEOUT="3")
    since = first.mark()
    first.send(signal.SIGHUP)
    first.wait_for_event("settings.reload_confirmed", since=since)
    first.send(signal.SIGTERM)
    assert first.wait_exit() == EX_OK

    second = deployment.start()

    resumed = second.wait_for_event("state.resumed")
    assert (1, 1, "spec-changed") == (
        resumed["restarts"],
        resumed["planned"],
        resumed["last_reason"],
    )
    report = wait_for_status(
        deployment, lambda r: (r["supervisor"] or {}).get("running"), "the second supervisor"
    )
    assert ({"crashed": 1}, {"spec-changed": 1}, "spec-changed") == (
        report["restarts"],
        report["planned"],
        report["last_reason"],
    )
    _code, human = status(deployment)
    assert "restarts:  1 (crashed 1)" in human.splitlines()
    assert "planned:   1 (spec-changed 1); last: spec-changed at " in human
