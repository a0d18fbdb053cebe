"""The STATUS line systemd shows, for each phase of the loop (no I/O)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from structlog.testing import capture_logs

from supervisor.adapters.notify import Notifier
from supervisor.errors import PortBusy
from supervisor.loop.keeper import RepairNeeded
from supervisor.loop.status import format_duration
from supervisor.loop.supervisor import Supervisor
from supervisor.phase import Phase
from supervisor.reconcile import Reason
from supervisor.settings import load_settings


@pytest.fixture
def supervisor() -> Iterator[Supervisor]:
    sup = Supervisor(load_settings(None), None, Notifier(), clock=lambda: 1000.0)
    yield sup
    sup.health.close()


def test_healthy_shows_uptime_and_restart_count(supervisor: Supervisor) -> None:
    """Healthy: uptime since it last became healthy, and how many restarts so far."""
    supervisor.reconciler.phase, supervisor.health.healthy_since = Phase.HEALTHY, 1000.0 - 192
    assert supervisor.status_line(1000.0) == "healthy: up 3m12s, 0 restarts"


def test_healthy_after_a_restart_names_the_last_reason(supervisor: Supervisor) -> None:
    """One restart reads in the singular and says why."""
    supervisor.reconciler.phase, supervisor.health.healthy_since = Phase.HEALTHY, 990.0
    supervisor.keeper.restarts[Reason.CRASHED] += 1
    supervisor.keeper.last_reason = Reason.CRASHED
    assert supervisor.status_line(1000.0) == "healthy: up 10s, 1 restart (last: crashed)"


def test_restarting_shows_reason_attempt_and_next_delay(supervisor: Supervisor) -> None:
    """A scheduled restart says why, which attempt, and how long until it."""
    supervisor.reconciler.schedule_repair(1000.0, RepairNeeded(Reason.CRASHED))
    supervisor.reconciler.schedule_repair(
        1000.0, RepairNeeded(Reason.CRASHED)
    )  # already scheduled: ignored
    supervisor.keeper.repair_at = 1000.5
    assert supervisor.status_line(1000.0) == "restarting: crashed, attempt 1, next in 0.5s"


def test_waiting_for_the_engine(supervisor: Supervisor) -> None:
    """Before the engine answers, the status says so."""
    assert supervisor.status_line(1000.0) == "waiting for Docker engine"


@pytest.mark.parametrize(
    ("seconds", "text"), [(5, "5s"), (65, "1m5s"), (3700, "1h1m"), (90000, "1d1h")]
)
def test_durations_are_short(seconds: float, text: str) -> None:
    """Uptime is printed at the two largest units."""
    assert format_duration(seconds) == text


def test_waiting_for_the_port_names_what_holds_it(supervisor: Supervisor) -> None:
    """A port held by something run may not take over: what holds it and the next try, once
    per change in the log (one port.busy for two tries by the same holder)."""
    with capture_logs() as logs:
        supervisor.reconciler._port_busy(1000.0, PortBusy("held", by="container web (1a2b3c)"))
        supervisor.reconciler._port_busy(1000.0, PortBusy("held", by="container web (1a2b3c)"))

    assert supervisor.status_line(1000.0) == (
        "waiting for port 0.0.0.0:5001: held by container web (1a2b3c); next try in 1.0s"
    )
    assert ["port.busy"] == [e["event"] for e in logs if e["log_level"] == "warning"]
    assert (Phase.PORT_BUSY, Reason.PORT_BUSY) == (
        supervisor.phase,
        supervisor.keeper.pending_reason,
    )


def test_degraded_names_what_fails_and_recovers(supervisor: Supervisor) -> None:
    """A serving registry whose pushes fail is degraded (STATUS says what fails), and healthy
    again once every source has recovered."""
    supervisor.reconciler.phase, supervisor.health.healthy_since = Phase.HEALTHY, 990.0
    supervisor.reconciler.degrade("canary", "pushes failing (HTTP 500)")
    assert Phase.DEGRADED == supervisor.phase
    assert supervisor.status_line(1000.0) == "degraded: pushes failing (HTTP 500) (serving, up 10s)"
    supervisor.reconciler.recover("canary")
    assert Phase.HEALTHY == supervisor.phase
