"""Whole scenarios, tick by tick, against a fake engine and a fake clock.

Each test drives the real Supervisor as its main loop would (handle the queued messages,
then tick), with time moving only when the test says. What it asserts is only what the
loop shows outside: its phase, its STATUS line and what it told systemd, its log events,
and the calls it made to the engine.
"""

from __future__ import annotations

import functools
import json
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.fake_engine import FakeEngine
from support.fakes import FakeClock, RecordingNotifier

from supervisor import log
from supervisor.loop.supervisor import Supervisor
from supervisor.settings import load_settings
from supervisor.statedir import maintenance
from supervisor.statedir.http_secret import with_http_secret

REGISTRY, HOLDER = "my_registry", "my_registry-net"
# Long enough that no engine call or probe is moved off the loop onto a helper thread.
WATCHDOG_EVERY_S = 60.0
HEALTH_INTERVAL_S = 5.0  # the default MY_REG_HEALTH_INTERVAL


class Rig:
    """One Supervisor wired to a FakeEngine, a FakeClock and a RecordingNotifier."""

    def __init__(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self._capsys = capsys
        self.env_file = tmp_path / "supervisor.env"
        self.settings = {
            "MY_REG_DIR": str(tmp_path / "data"),
            "MY_REG_STATE_DIR": str(tmp_path / "state"),
            "MY_REG_FORWARD_LOGS": "false",  # no log follower thread
            "MY_REG_MIN_FREE": "0",  # no disk guard (nor its gc estimate thread)
            "MY_REG_LOG_FORMAT": "json",  # read back from stderr, across reloads
            "MY_REG_LOG_LEVEL": "debug",
        }
        self.write_env()
        self.clock = FakeClock()
        self.engine = FakeEngine(self.clock)
        self.notifier = RecordingNotifier(watchdog_every_s=WATCHDOG_EVERY_S)
        self.phases: list[str] = []
        self.log: list[dict[str, Any]] = []
        self._marks = (0, 0, 0, 0)

    @functools.cached_property
    def sup(self) -> Supervisor:
        """Built on first use, in the test's own phase: structlog prints to the sys.stderr
        of the moment it is configured, and pytest swaps (and closes) the captured one
        between a fixture's setup and the test."""
        settings = with_http_secret(load_settings(self.env_file))
        log.configure(settings.log_format, settings.log_level)
        return Supervisor(
            settings,
            self.env_file,
            self.notifier,
            clock=self.clock,
            engine_factory=lambda: self.engine,
            probe_factory=self.engine.probe_factory(self.clock),
            registry_api_factory=self.engine.registry_api_factory(self.clock),
        )

    def write_env(self, **changes: str) -> None:
        self.settings.update(changes)
        self.env_file.write_text("".join(f"{k}={v}\n" for k, v in self.settings.items()))

    # -- driving ------------------------------------------------------------------------

    def _seen(self) -> None:
        phase = self.sup.phase.value
        if not self.phases or self.phases[-1] != phase:
            self.phases.append(phase)

    def step(self, seconds: float = 0.0) -> str:
        """Move the clock, then one turn of the main loop: messages, then a tick."""
        self.clock.advance(seconds)
        self.engine.settle()
        self.sup.handle_pending()
        self._seen()
        self.sup.tick()
        self._seen()
        return self.sup.phase.value

    def until(self, phase: str, *, every: float = 0.0, limit: int = 50) -> None:
        """Step (``every`` seconds apart) until the loop's phase is ``phase`` (its value)."""
        for _ in range(limit):
            if self.step(every) == phase:
                return
        raise AssertionError(f"not {phase} after {limit} ticks: {self.phases}")

    def start_healthy(self) -> None:
        self.sup.startup()
        self._seen()
        self.until("healthy")
        self.step()  # the push canary's first round, once the registry serves
        self.mark()

    def put(self, message: Any) -> None:
        self.sup.messages.put(message)

    # -- what happened since the last mark -----------------------------------------------

    def mark(self) -> None:
        self.events()
        self._marks = (
            len(self.phases) - 1,
            len(self.log),
            len(self.engine.calls),
            len(self.engine.probe_times),
        )

    def events(self) -> list[dict[str, Any]]:
        """Every log event so far (the JSON lines on stderr)."""
        lines = self._capsys.readouterr().err.splitlines()
        self.log += [json.loads(line) for line in lines if line.startswith("{")]
        return self.log

    def new_phases(self) -> list[str]:
        return self.phases[self._marks[0] :]

    def new_events(self, name: str | None = None) -> list[dict[str, Any]]:
        new = self.events()[self._marks[1] :]
        return [e for e in new if name is None or e["event"] == name]

    def new_event_names(self) -> list[str]:
        return [e["event"] for e in self.new_events() if e["level"] != "debug"]

    def new_mutations(self) -> list[tuple[str, str]]:
        return self.engine.mutations(since=self._marks[2])

    def new_calls(self, method: str) -> list[float]:
        return [c.at for c in self.engine.calls[self._marks[2] :] if c.method == method]

    def new_probe_times(self) -> list[float]:
        return self.engine.probe_times[self._marks[3] :]


@pytest.fixture
def rig(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Iterator[Rig]:
    rig = Rig(tmp_path, capsys)
    yield rig
    rig.engine.close_streams()  # the loop's event watcher thread ends with its stream
    left = [t.name for t in threading.enumerate() if t.name == "docker-events"]
    assert [] == left, "an event watcher thread outlived its test"


def in_order(expected: list[str], actual: list[str]) -> bool:
    """Whether ``expected`` occurs in ``actual`` in this order (other items between)."""
    remaining = iter(actual)
    return all(any(item == seen for seen in remaining) for item in expected)


# -- (1) first start ------------------------------------------------------------------


def test_first_start_creates_holder_then_registry_and_becomes_healthy(rig: Rig) -> None:
    """From nothing: holder created and started, registry created in its network, probed."""
    rig.sup.startup()
    rig.until("healthy")

    assert ["engine-down", "starting", "healthy"] == rig.phases
    assert [
        ("create_holder", HOLDER),
        ("start", HOLDER),
        ("create", REGISTRY),
        ("start", REGISTRY),
    ] == rig.engine.mutations()
    holder, registry = rig.engine.container(HOLDER), rig.engine.container(REGISTRY)
    assert holder is not None and registry is not None
    assert (True, True, f"container:{holder.id}") == (
        holder.running,
        registry.running,
        registry.network_mode,
    )
    assert in_order(
        [
            "supervisor.starting",
            "engine.connected",
            "image.inspected",
            "holder.created",
            "container.created",
            "registry.healthy",
        ],
        rig.new_event_names(),
    )
    created = rig.new_events("container.created")[0]
    assert registry.spec_hash == created["spec_hash"]


def test_ready_is_sent_once_after_the_first_healthy_probe(rig: Rig) -> None:
    """READY=1 follows the first healthy STATUS, and later probes never send it again."""
    rig.start_healthy()
    for _ in range(5):
        assert "healthy" == rig.step(HEALTH_INTERVAL_S)

    sent = rig.notifier.sent
    assert 1 == rig.notifier.count("READY=1")
    assert sent[sent.index("READY=1") - 1].startswith("STATUS=healthy: up 0s, 0 restarts")
    assert 6 == len(rig.engine.probe_times)
    assert rig.notifier.count("WATCHDOG=1") >= 1


# -- (2) to (4): the registry goes down -------------------------------------------------


def test_crash_is_repaired_by_starting_the_same_container(rig: Rig) -> None:
    """A registry that exits on its own is started again at once, counted as crashed."""
    rig.start_healthy()
    before = rig.engine.container(REGISTRY)

    rig.engine.crash(REGISTRY, exit_code=2)
    rig.until("healthy")

    assert ["healthy", "restarting", "starting", "healthy"] == rig.new_phases()
    restarting = rig.new_events("container.restarting")
    assert [("crashed", 2, 1)] == [(e["reason"], e["exit_code"], e["attempt"]) for e in restarting]
    assert [("start", REGISTRY)] == rig.new_mutations()
    after = rig.engine.container(REGISTRY)
    assert before is not None and after is not None and before.id == after.id
    assert "healthy: up 0s, 1 restart (last: crashed)" == rig.sup.status_line(rig.clock())


def test_removed_registry_is_created_again(rig: Rig) -> None:
    """`docker rm -f` of the registry: a new container in the same holder, reason removed."""
    rig.start_healthy()
    before = rig.engine.container(REGISTRY)

    rig.engine.docker_rm_f(REGISTRY)
    rig.until("healthy")

    assert ["removed"] == [e["reason"] for e in rig.new_events("container.restarting")]
    assert [("create", REGISTRY), ("start", REGISTRY)] == rig.new_mutations()
    after, holder = rig.engine.container(REGISTRY), rig.engine.container(HOLDER)
    assert before is not None and after is not None and holder is not None
    assert before.id != after.id
    assert f"container:{holder.id}" == after.network_mode
    assert "healthy: up 0s, 1 restart (last: removed)" == rig.sup.status_line(rig.clock())


def test_docker_stop_is_repaired_with_reason_stopped(rig: Rig) -> None:
    """kill, die, stop from the engine: someone stopped it, not a crash."""
    rig.start_healthy()

    rig.engine.docker_stop(REGISTRY)
    rig.until("healthy")

    assert ["stopped"] == [e["reason"] for e in rig.new_events("container.restarting")]
    assert [("start", REGISTRY)] == rig.new_mutations()


# -- (5) hang ------------------------------------------------------------------------


def test_hung_registry_is_restarted_after_health_retries_failed_probes(rig: Rig) -> None:
    """Probes that time out, one health interval apart (start to start), three in a row
    (MY_REG_HEALTH_RETRIES): killed and started again, reason unhealthy."""
    rig.start_healthy()
    hung_at = rig.clock()

    rig.engine.hang(REGISTRY)
    rig.until("restarting", every=0.5)

    assert [hung_at + 5.0, hung_at + 10.0, hung_at + 15.0] == rig.new_probe_times()
    assert [1, 2, 3] == [e["failures"] for e in rig.new_events("probe.failed")]
    assert ["healthy", "unhealthy", "restarting"] == rig.new_phases()
    assert ["unhealthy"] == [e["reason"] for e in rig.new_events("container.restarting")]

    rig.until("healthy")
    assert [("restart", REGISTRY)] == rig.new_mutations()
    assert "healthy: up 0s, 1 restart (last: unhealthy)" == rig.sup.status_line(rig.clock())


# -- (6) engine loss -----------------------------------------------------------------


def test_engine_loss_reconnects_with_backoff_and_adopts_the_running_registry(rig: Rig) -> None:
    """The event stream ends: engine-down; pings back off; once the engine answers, the
    registry that kept running is adopted, not restarted."""
    rig.start_healthy()
    before = rig.engine.container(REGISTRY)
    lost_at = rig.clock()

    rig.engine.go_down()
    assert "engine-down" == rig.step()
    for _ in range(3):  # no time passes: no retry yet, however often the loop turns
        rig.step()
    assert [] == rig.new_calls("ping")
    for _ in range(20):  # one second
        rig.step(0.05)
    pings = rig.new_calls("ping")
    gaps = [later - earlier for earlier, later in zip([lost_at, *pings], pings, strict=False)]
    assert 2 <= len(pings) <= 6, pings
    assert gaps == sorted(gaps), f"retries should slow down: {gaps}"

    rig.engine.come_back()
    rig.until("healthy", every=0.05)

    assert ["healthy", "engine-down", "starting", "healthy"] == rig.new_phases()
    assert in_order(["engine.unreachable", "engine.reconnected"], rig.new_event_names())
    assert [] == rig.new_mutations()
    after = rig.engine.container(REGISTRY)
    assert before is not None and after is not None and before.id == after.id
    assert "healthy: up 0s, 0 restarts" == rig.sup.status_line(rig.clock())


def test_engine_restart_that_stopped_the_containers_starts_them_again(rig: Rig) -> None:
    """An engine restart without live restore: holder, then registry, started again,
    reason engine-restarted."""
    rig.start_healthy()

    rig.engine.go_down(stop_containers=True)
    rig.step()
    rig.engine.come_back()
    rig.until("healthy", every=0.5)

    assert ["engine-restarted"] == [e["reason"] for e in rig.new_events("container.restarting")]
    assert [("start", HOLDER), ("start", REGISTRY)] == rig.new_mutations()


# -- (7) reload ----------------------------------------------------------------------


def test_reload_with_a_changed_spec_replaces_the_registry(rig: Rig) -> None:
    """SIGHUP after MY_REG_STOP_TIMEOUT changed: checked, then the registry (not its
    holder) is stopped, removed and created anew; kept once it is healthy."""
    rig.start_healthy()
    before = rig.engine.container(REGISTRY)

    rig.write_env(MY_REG_STOP_TIMEOUT="20")
    rig.put(signal.SIGHUP)
    rig.until("healthy")

    reloaded = rig.new_events("supervisor.reloaded")
    assert [True] == [e["spec_changed"] for e in reloaded]
    assert 1 == len(rig.new_calls("check_creatable"))
    assert [
        ("stop", REGISTRY),
        ("remove", REGISTRY),
        ("create", REGISTRY),
        ("start", REGISTRY),
    ] == rig.new_mutations()
    after = rig.engine.container(REGISTRY)
    assert before is not None and after is not None
    assert (reloaded[0]["spec_hash"], True) == (
        after.spec_hash,
        after.spec_hash != before.spec_hash,
    )
    assert in_order(
        ["supervisor.reloading", "supervisor.reloaded", "container.replaced", "container.created"],
        rig.new_event_names(),
    )
    assert ["settings.reload_confirmed"] == [
        e["event"] for e in rig.new_events("settings.reload_confirmed")
    ]
    assert in_order(["RELOADING=1", "READY=1"], [m.split("\n")[0] for m in rig.notifier.sent])


def test_reload_without_a_spec_change_replaces_nothing(rig: Rig) -> None:
    """SIGHUP after a setting outside the container's spec changed: nothing touched."""
    rig.start_healthy()

    rig.write_env(MY_REG_HEALTH_INTERVAL="7")
    rig.put(signal.SIGHUP)
    for _ in range(3):
        assert "healthy" == rig.step(HEALTH_INTERVAL_S)

    assert [False] == [e["spec_changed"] for e in rig.new_events("supervisor.reloaded")]
    assert ([], []) == (rig.new_mutations(), rig.new_calls("check_creatable"))
    assert ["healthy"] == rig.new_phases()
    assert 2 == rig.notifier.count("READY=1")  # the first start's, and the reload's end


# -- (8) maintenance -----------------------------------------------------------------


def hold_lock(rig: Rig) -> tuple[Path, maintenance.Maintenance]:
    """Take the maintenance lock as `registry-supervisor gc` does, held by this process."""
    settings = load_settings(rig.env_file)
    path = maintenance.maintenance_path(settings)
    lock = maintenance.acquire(
        path, maintenance.GARBAGE_COLLECTION, f"{REGISTRY}-gc", lambda _name: False
    )
    return path, lock


def test_maintenance_stands_aside_while_gc_has_the_registry_down(rig: Rig) -> None:
    """While `gc` holds the lock, a stopped registry is neither repaired nor probed."""
    rig.start_healthy()

    path, lock = hold_lock(rig)
    rig.engine.docker_stop(REGISTRY)
    for _ in range(20):
        assert "maintenance" == rig.step(1.0)

    assert ["healthy", "maintenance"] == rig.new_phases()
    assert ([], [], []) == (
        rig.new_mutations(),
        rig.new_probe_times(),
        rig.new_events("container.restarting"),
    )
    assert "maintenance: garbage collection" == rig.sup.status_line(rig.clock())
    maintenance.release(path, lock)


def test_registry_left_down_after_maintenance_is_started(rig: Rig) -> None:
    """The lock is released with the registry still stopped: started again, healthy."""
    rig.start_healthy()
    path, lock = hold_lock(rig)
    rig.engine.docker_stop(REGISTRY)
    rig.step(1.0)

    maintenance.release(path, lock)
    rig.until("healthy", every=0.5)

    assert in_order(["maintenance.started", "maintenance.ended"], rig.new_event_names())
    assert [("start", REGISTRY)] == rig.new_mutations()


def test_registry_restarted_by_gc_is_adopted_after_maintenance(rig: Rig) -> None:
    """`gc` started the registry again before releasing the lock: adopted, not touched."""
    rig.start_healthy()
    path, lock = hold_lock(rig)
    rig.engine.docker_stop(REGISTRY)
    rig.step(1.0)
    rig.engine.docker_start(REGISTRY)
    rig.step(1.0)

    maintenance.release(path, lock)
    rig.until("healthy", every=0.5)

    assert in_order(["maintenance", "healthy"], rig.new_phases())
    assert ([], []) == (rig.new_mutations(), rig.new_events("container.restarting"))
    assert "healthy: up 0s, 0 restarts" == rig.sup.status_line(rig.clock())


# -- shutdown ------------------------------------------------------------------------


def test_sigterm_stops_the_registry_then_its_holder(rig: Rig) -> None:
    """SIGTERM, then shutdown(): STOPPING=1, the registry stopped before its holder."""
    rig.start_healthy()

    rig.put(signal.SIGTERM)
    rig.sup.handle_pending()
    rig.sup.shutdown()

    assert "stopping" == rig.sup.phase.value
    assert [("stop", REGISTRY), ("stop", HOLDER)] == rig.new_mutations()
    assert 1 == rig.notifier.count("STOPPING=1")
    assert ["SIGTERM"] == [e["signal"] for e in rig.new_events("supervisor.stopping")]


# -- the push canary -------------------------------------------------------------------------

# Steps between probes, so that a due canary round gets its tick (a probe due goes first).
CANARY_STEP_S = HEALTH_INTERVAL_S / 2


def test_a_failing_canary_degrades_the_registry_without_a_restart(rig: Rig) -> None:
    """Pushes fail while /v2/ answers: degraded, STATUS says what fails, nothing restarted;
    the canary tries again sooner (30 s) than its interval (300 s)."""
    rig.start_healthy()
    rig.engine.push_fault = ("PATCH upload", 500)

    rig.until("degraded", every=CANARY_STEP_S, limit=200)
    failed_at = rig.engine.canary_rounds[-1][0]
    for _ in range(16):
        rig.step(CANARY_STEP_S)

    assert "degraded: pushes failing (HTTP 500 on PATCH upload)" in rig.notifier.statuses()[-1]
    retried_at = next(at for at, _ in rig.engine.canary_rounds if at > failed_at)
    assert failed_at + 30.0 <= retried_at < failed_at + 30.0 + 2 * CANARY_STEP_S
    assert [] == rig.new_mutations()
    assert "registry.degraded" in rig.new_event_names()


def test_a_canary_that_passes_again_recovers_by_itself(rig: Rig) -> None:
    """Once pushes work again, the next round makes the registry healthy."""
    rig.start_healthy()
    rig.engine.push_fault = ("POST upload", 500)
    rig.until("degraded", every=CANARY_STEP_S, limit=200)

    rig.engine.push_fault = None
    rig.until("healthy", every=CANARY_STEP_S, limit=20)

    assert ["healthy", "degraded", "healthy"] == rig.new_phases()
    assert 1 == len(rig.new_events("registry.recovered"))
    assert [] == rig.new_mutations()


def test_a_registry_on_3x_gets_commit_rounds(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The mode follows the version the image's registry reports."""
    rig = Rig(tmp_path, capsys)
    rig.engine = FakeEngine(rig.clock, major=3)
    try:
        rig.start_healthy()
        assert "commit" == rig.engine.canary_rounds[-1][1]
    finally:
        rig.engine.close_streams()


def test_the_canary_is_not_run_while_a_repair_is_due(rig: Rig) -> None:
    """A crashed registry is repaired first; the canary runs only once it serves again."""
    rig.start_healthy()
    rounds = len(rig.engine.canary_rounds)
    rig.engine.crash(REGISTRY)

    rig.until("healthy", limit=20)

    starts = rig.new_calls("start")
    assert starts, "no repair"
    assert all(at >= starts[-1] for at, _ in rig.engine.canary_rounds[rounds:])
