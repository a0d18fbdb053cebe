"""The loop's side of status at a glance, disk guard and maintenance (no engine, no I/O
beyond a tmp state dir)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from supervisor.adapters.notify import Notifier
from supervisor.errors import ConfigError
from supervisor.loop.keeper import RepairNeeded
from supervisor.loop.supervisor import Supervisor
from supervisor.ops.status_report import count_lines, glance_lines, planned, supervisor_line
from supervisor.phase import Phase
from supervisor.reconcile import Reason
from supervisor.settings import load_settings
from supervisor.statedir import maintenance, state_file


@pytest.fixture
def supervisor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Supervisor]:
    monkeypatch.setenv("MY_REG_STATE_DIR", str(tmp_path / "state"))
    sup = Supervisor(load_settings(None), None, Notifier(), clock=lambda: 1000.0)
    yield sup
    sup.health.close()


def hold_maintenance(sup: Supervisor) -> None:
    """Take the lock as gc does, for this process (its collector is never asked about)."""
    maintenance.acquire(
        sup.gate.path, maintenance.GARBAGE_COLLECTION, "my_registry-gc", lambda _: False
    )


def test_min_free_defaults_to_5_percent() -> None:
    """MY_REG_MIN_FREE is 5 unless set."""
    assert 5.0 == load_settings(None).min_free


def test_min_free_out_of_range_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """A percentage above 100 is refused with the expected range."""
    monkeypatch.setenv("MY_REG_MIN_FREE", "150")
    with pytest.raises(ConfigError) as caught:
        load_settings(None)
    assert [
        "MY_REG_MIN_FREE='150': expected a percentage of free disk space from 0 to 100 "
        "(0: no warning)"
    ] == caught.value.problems


def test_low_disk_shows_in_the_status_line(supervisor: Supervisor) -> None:
    """While space is low, STATUS says so after the phase."""
    supervisor.reconciler.phase, supervisor.health.healthy_since = Phase.HEALTHY, 990.0
    supervisor.house.disk_guard.update(2.0)
    assert supervisor.status_line(1000.0) == (
        "healthy: up 10s, 0 restarts; disk low: 2.0% free (< 5%), consider registry-supervisor gc"
    )


def test_maintenance_file_puts_the_loop_in_maintenance(supervisor: Supervisor) -> None:
    """A fresh maintenance file: phase MAINTENANCE, STATUS names the task."""
    hold_maintenance(supervisor)
    assert supervisor.reconciler.look_at_gate(1000.0) is True
    assert supervisor.status_line(1000.0) == "maintenance: garbage collection"


def test_no_restart_is_counted_during_maintenance(supervisor: Supervisor) -> None:
    """Restarts that gc causes are not failures: schedule_repair does nothing."""
    hold_maintenance(supervisor)
    assert supervisor.reconciler.look_at_gate(1000.0)
    supervisor.reconciler.schedule_repair(1000.0, RepairNeeded(Reason.CRASHED))
    assert (None, 0) == (supervisor.keeper.repair_at, sum(supervisor.keeper.restarts.values()))


def test_end_of_maintenance_returns_to_starting(supervisor: Supervisor) -> None:
    """When the file goes away the loop probes again (STARTING), counting nothing."""
    hold_maintenance(supervisor)
    supervisor.reconciler.look_at_gate(1000.0)
    supervisor.gate.path.unlink()
    assert supervisor.reconciler.look_at_gate(1000.0) is False
    assert Phase.ENGINE_DOWN == supervisor.phase  # no engine in this test: it reconnects first


def test_a_stale_maintenance_file_is_ignored(supervisor: Supervisor) -> None:
    """A file whose holder died (and names no collector) does not silence the supervisor."""
    child_pid = os.fork()
    if child_pid == 0:
        os._exit(0)
    os.waitpid(child_pid, 0)
    supervisor.gate.path.parent.mkdir(parents=True, exist_ok=True)
    supervisor.gate.path.write_text(
        json.dumps({"task": "gc", "pid": child_pid, "started": time.time()})
    )
    lock = maintenance.read(supervisor.gate.path)
    assert lock is not None and not maintenance.holder_lives(lock)
    assert supervisor.reconciler.look_at_gate(1000.0) is False


def test_state_content_counts_restarts_by_reason(supervisor: Supervisor) -> None:
    """The state file holds restarts by reason, the last one, and the phase."""
    supervisor.reconciler.schedule_repair(1000.0, RepairNeeded(Reason.UNHEALTHY))
    content = supervisor.state_content()
    assert ({"unhealthy": 1}, "unhealthy", "restarting") == (
        content["restarts"],
        content["last_reason"],
        content["phase"],
    )
    assert content["last_reason_at"] is not None


def test_state_is_not_written_while_a_restart_is_imminent(supervisor: Supervisor) -> None:
    """A repair due within a second keeps the disk off the hot path."""
    supervisor.reconciler.schedule_repair(1000.0, RepairNeeded(Reason.CRASHED))
    supervisor._save_state(1000.0)
    assert not supervisor.house.state_file.path.exists()
    supervisor.keeper.repair_at = 1010.0
    supervisor._save_state(1000.0)
    assert supervisor.house.state_file.path.exists()


def test_glance_lines_for_a_human() -> None:
    """`status` prints uptime, restarts by reason, disk, TLS and the last gc."""
    report = {
        "uptime_s": 192.0,
        "image_id": "sha256:abc",
        "restarts": {"crashed": 2, "unhealthy": 1},
        "last_reason": "crashed",
        "last_reason_at": "2026-01-01T00:00:00+00:00",
        "data_dir": {
            "path": "/var/lib/my_registry",
            "size_bytes": 1536,
            "files": 3,
            "size_complete": True,
            "free_bytes": 1 << 30,
            "total_bytes": 4 << 30,
            "free_percent": 25.0,
            "low": False,
            "min_free_percent": 5.0,
        },
        "certificate": None,
        "last_gc": {
            "finished_at": "2026-01-01T01:00:00+00:00",
            "dry_run": False,
            "freed_bytes": 2048,
            "outcome": "ok",
        },
        "supervisor": None,
        "maintenance": None,
    }
    assert [
        "uptime:    3m12s",
        "image id:  sha256:abc",
        "restarts:  3 (crashed 2, unhealthy 1); last: crashed at 2026-01-01T00:00:00+00:00",
        "data dir:  /var/lib/my_registry: 1.5 KiB in 3 files; 1.0 GiB free of 4.0 GiB (25.0%)",
        "tls:       off",
        "last gc:   2026-01-01T01:00:00+00:00: freed 2.0 KiB (ok)",
        "supervisor: no state file yet",
    ] == glance_lines(report)


@pytest.mark.parametrize(
    ("given", "effective"),
    [("9341", "127.0.0.1:9341"), ("127.0.0.1:9341", "127.0.0.1:9341"), ("[::1]:80", "[::1]:80")],
)
def test_metrics_address_forms(monkeypatch: pytest.MonkeyPatch, given: str, effective: str) -> None:
    """A port alone means loopback; an address and port are taken as given."""
    monkeypatch.setenv("MY_REG_METRICS_ADDR", given)
    assert effective == load_settings(None).metrics_addr


@pytest.mark.parametrize("given", ["localhost:9341", "127.0.0.1:0", "127.0.0.1:x", "99999"])
def test_bad_metrics_address_is_one_line(monkeypatch: pytest.MonkeyPatch, given: str) -> None:
    """Host names, port 0 and non-numbers are refused with the expected form."""
    monkeypatch.setenv("MY_REG_METRICS_ADDR", given)
    with pytest.raises(ConfigError) as caught:
        load_settings(None)
    assert [
        f"MY_REG_METRICS_ADDR={given!r}: expected a port, or an address and port such as "
        "127.0.0.1:9341"
    ] == caught.value.problems


def test_metrics_are_off_by_default() -> None:
    """Without MY_REG_METRICS_ADDR nothing listens."""
    assert load_settings(None).metrics_addr is None


def test_restart_counts_reach_the_metrics(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the endpoint on, a counted restart increments registry_restarts_total for its reason."""
    monkeypatch.setenv("MY_REG_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("MY_REG_METRICS_ADDR", "9341")  # never served: serve() is not called
    supervisor = Supervisor(load_settings(None), None, Notifier(), clock=lambda: 1000.0)
    supervisor.health.close()
    supervisor.reconciler.schedule_repair(1000.0, RepairNeeded(Reason.OOM))
    assert supervisor.metrics.registry is not None
    value = supervisor.metrics.registry.get_sample_value(
        "registry_restarts_total", {"reason": "oom"}
    )
    assert 1.0 == value


def test_planned_replacements_are_their_own_line_with_gcs_mode_switches() -> None:
    """`status` shows failures and planned replacements apart (gc's recreations among the
    planned), the last reason on the line of its kind."""
    supervised = {"planned": {"spec-changed": 2}}
    report = {
        "restarts": {"crashed": 1},
        "planned": planned(supervised, {"mode_switches": 2, "mode_switches_total": 4}),
        "last_reason": "spec-changed",
        "last_reason_at": "2026-01-01T00:00:00+00:00",
    }
    assert [
        "restarts:  1 (crashed 1)",
        "planned:   6 (gc-mode-switch 4, spec-changed 2); last: spec-changed at "
        "2026-01-01T00:00:00+00:00",
    ] == count_lines(report)


def test_no_planned_line_without_planned_replacements() -> None:
    """Without a reload or a gc, `status` prints the restarts line alone, as before."""
    report = {"restarts": {}, "planned": planned(None, None), "last_reason": "port-busy"}
    assert ["restarts:  0; last: port-busy at None"] == count_lines(report)


def test_a_cleanly_stopped_supervisor_says_stopped() -> None:
    """The last state of a clean stop: `stopped`, not the phase it had before."""
    supervised = {
        "running": False,
        "pid": None,
        "phase": "stopped",
        "stopped_at": "2026-01-01T00:00:00+00:00",
    }
    assert "supervisor: stopped (at 2026-01-01T00:00:00+00:00)" == supervisor_line(supervised)


def test_a_dead_supervisors_last_phase_is_not_shown_as_current() -> None:
    """A state file whose writer died (SIGKILL) says so, and when its phase was seen."""
    supervised = {
        "running": False,
        "pid": 4242,
        "phase": "healthy",
        "updated_at": "2026-01-01T00:00:00+00:00",
    }
    assert (
        "supervisor: not running (pid 4242 gone without stopping; last seen healthy at "
        "2026-01-01T00:00:00+00:00)"
    ) == supervisor_line(supervised)


def test_the_state_file_names_its_writer_by_pid_and_start_time() -> None:
    """This process is the writer of its own evidence; the same pid with another start
    time (a reused pid) is not, nor a state file without a pid."""
    mine = state_file.writer_evidence()
    assert (True, False, False) == (
        state_file.writer_lives(mine),
        state_file.writer_lives({**mine, "start_ticks": (mine["start_ticks"] or 0) + 1}),
        state_file.writer_lives({**mine, "pid": None}),
    )


def test_planned_replacements_reach_their_own_metric(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reload's replacement counts in registry_replacements_total, not in the restarts."""
    monkeypatch.setenv("MY_REG_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("MY_REG_METRICS_ADDR", "9341")  # never served: serve() is not called
    supervisor = Supervisor(load_settings(None), None, Notifier(), clock=lambda: 1000.0)
    supervisor.health.close()
    supervisor.reconciler.schedule_repair(1000.0, RepairNeeded(Reason.SPEC_CHANGED))
    registry = supervisor.metrics.registry
    assert registry is not None
    assert (1.0, None) == (
        registry.get_sample_value("registry_replacements_total", {"reason": "spec-changed"}),
        registry.get_sample_value("registry_restarts_total", {"reason": "spec-changed"}),
    )


def test_a_reload_that_turns_log_forwarding_off_stops_the_follower(
    supervisor: Supervisor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MY_REG_FORWARD_LOGS=false on SIGHUP ends the current follower, not only the next."""
    closed = []

    class Follower:
        def close(self) -> None:
            closed.append(True)

    supervisor.house._follower = Follower()  # type: ignore[assignment]
    monkeypatch.setenv("MY_REG_FORWARD_LOGS", "false")
    supervisor.apply_settings(load_settings(None))
    assert ([True], None) == (closed, supervisor.house._follower)
