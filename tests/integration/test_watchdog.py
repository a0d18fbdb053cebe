"""systemd's watchdog is fed while the loop waits on a hung registry: a probe that times out,
a `docker stop` that waits out MY_REG_STOP_TIMEOUT.

The supervisor runs with NOTIFY_SOCKET pointing at a real datagram socket bound here and
WATCHDOG_USEC=6000000: it must send WATCHDOG=1 every 3 s (half of WATCHDOG_USEC), however long
the call it waits on. The gaps between arrivals are compared with that budget.
"""

from __future__ import annotations

import itertools
import os
import signal
import time
from collections.abc import Iterator

import pytest
from support.docker import docker_cli
from support.notify import NotifySocket
from support.process import EX_OK

pytestmark = pytest.mark.integration

WATCHDOG_USEC = 6_000_000
BUDGET_S = WATCHDOG_USEC / 1_000_000 / 2  # the supervisor pings every half of WATCHDOG_USEC
# Scheduling noise on two shared cores; systemd itself would wait twice the budget.
ALLOWANCE_S = 0.5
# Both calls below block far longer than the budget.
LONG_PROBE_TIMEOUT_S = 8
LONG_STOP_TIMEOUT_S = 8


def watchdog_env(notify: NotifySocket) -> dict[str, str]:
    """NOTIFY_SOCKET and WATCHDOG_USEC for the supervisor (WATCHDOG_PID unset: it is ours)."""
    return {"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": str(WATCHDOG_USEC)}


@pytest.fixture
def notify_socket() -> Iterator[NotifySocket]:
    """A NOTIFY_SOCKET recording each datagram's time.monotonic() of arrival."""
    sock = NotifySocket()
    try:
        yield sock
    finally:
        sock.close()


def widest_gap(start: float, pings: list[float], end: float) -> float:
    """The longest time without a WATCHDOG=1 from ``start`` to ``end``."""
    moments = [start, *pings, end]
    return max(later - earlier for earlier, later in itertools.pairwise(moments))


def test_the_watchdog_is_fed_while_a_probe_waits_on_a_hung_registry(deployment, notify_socket):
    """While probes of 8 s time out on a SIGSTOPped registry, WATCHDOG=1 keeps coming every
    half of WATCHDOG_USEC, and the hang is repaired."""
    deployment.write_env(
        MY_REG_HEALTH_TIMEOUT=LONG_PROBE_TIMEOUT_S,
        MY_REG_HEALTH_INTERVAL="0.5",
        MY_REG_HEALTH_RETRIES="2",
        MY_REG_STARTUP_GRACE="1",
    )
    sup = deployment.start(env=watchdog_env(notify_socket))
    hung = deployment.running()

    since = sup.mark()
    start = time.monotonic()
    os.kill(hung.pid, signal.SIGSTOP)
    sup.wait_for_event("container.restarting", 60, since=since, reason="unhealthy")
    sup.wait_for_event("registry.healthy", since=since)
    end = time.monotonic()

    pings = notify_socket.arrivals("WATCHDOG=1", start, end)
    gap = widest_gap(start, pings, end)
    print(f"hang: {len(pings)} pings over {end - start:.1f} s, widest gap {gap:.3f} s")
    assert gap <= BUDGET_S + ALLOWANCE_S, f"{len(pings)} pings, widest gap {gap:.3f} s"
    assert 200 == deployment.v2_status()
    assert hung.pid != deployment.running().pid


def test_the_watchdog_is_fed_while_a_stop_waits_on_a_registry_ignoring_sigterm(
    deployment, notify_socket
):
    """On SIGTERM, while `docker stop` waits MY_REG_STOP_TIMEOUT (8 s) for a SIGSTOPped
    registry, WATCHDOG=1 keeps coming every half of WATCHDOG_USEC, until a clean exit."""
    deployment.write_env(MY_REG_STOP_TIMEOUT=LONG_STOP_TIMEOUT_S, MY_REG_HEALTH_INTERVAL="60")
    sup = deployment.start(env=watchdog_env(notify_socket))
    stuck = deployment.running()

    os.kill(stuck.pid, signal.SIGSTOP)
    start = time.monotonic()
    sup.send(signal.SIGTERM)
    code = sup.wait_exit(timeout=LONG_STOP_TIMEOUT_S + 30)
    end = time.monotonic()

    pings = notify_socket.arrivals("WATCHDOG=1", start, end)
    gap = widest_gap(start, pings, end)
    print(f"stop: {len(pings)} pings over {end - start:.1f} s, widest gap {gap:.3f} s")
    assert gap <= BUDGET_S + ALLOWANCE_S, f"{len(pings)} pings, widest gap {gap:.3f} s"
    assert EX_OK == code
    assert [deployment.name, deployment.holder_name] == [
        event["name"] for event in sup.find("container.stopped")
    ]
    # 137: killed once MY_REG_STOP_TIMEOUT was over, so the stop did wait that long.
    state = docker_cli(
        "inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", deployment.name
    )
    assert "exited 137" == state
