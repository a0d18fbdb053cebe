"""Whole scenarios, tick by tick, against a fake engine and a fake clock.

Each test drives the real Supervisor as its main loop would (handle the queued messages,
then tick), with time moving only when the test says. What it asserts is only what the
loop shows outside: its phase, its STATUS line and what it told systemd, its log events,
and the calls it made to the engine.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import pytest
from support.fake_engine import FakeEngine
from support.fakes import RecordingNotifier
from support.rig import HEALTH_INTERVAL_S, HOLDER, REGISTRY, Rig, in_order

from supervisor.engine.client import API_TIMEOUT_S
from supervisor.loop.watchdog import SLACK_S
from supervisor.settings import load_settings
from supervisor.statedir import maintenance

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
    """Probes that time out: the first at the normal cadence, the confirmations as soon as
    the one before ended (each spends its 1 s timeout, more than the 0.5 s confirm
    interval), three in a row (MY_REG_HEALTH_RETRIES): killed and started again."""
    rig.start_healthy()
    hung_at = rig.clock()

    rig.engine.hang(REGISTRY)
    rig.step(HEALTH_INTERVAL_S)
    rig.step()
    rig.step()

    assert [hung_at + 5.0, hung_at + 6.0, hung_at + 7.0] == rig.new_probe_times()
    assert [1, 2, 3] == [e["failures"] for e in rig.new_events("probe.failed")]
    assert ["timed out after 1s"] * 3 == [e["error"] for e in rig.new_events("probe.failed")]
    assert ["healthy", "unhealthy", "restarting"] == rig.new_phases()
    assert ["unhealthy"] == [e["reason"] for e in rig.new_events("container.restarting")]

    rig.until("healthy")
    assert [("restart", REGISTRY)] == rig.new_mutations()
    assert "healthy: up 0s, 1 restart (last: unhealthy)" == rig.sup.status_line(rig.clock())


def test_failed_probes_are_confirmed_at_the_confirm_interval(rig: Rig) -> None:
    """A running registry that refuses connections: the first failed probe at the normal
    cadence, then confirmations 0.5 s apart (MY_REG_HEALTH_CONFIRM_INTERVAL), start to
    start; the third failure restarts it."""
    rig.start_healthy()
    deaf_at = rig.clock()

    rig.engine.stop_listening(REGISTRY)
    rig.step(HEALTH_INTERVAL_S)
    status = rig.sup.status_line(rig.clock())
    rig.step(0.25)  # not yet due
    rig.step(0.25)
    rig.step(0.5)

    assert [deaf_at + 5.0, deaf_at + 5.5, deaf_at + 6.0] == rig.new_probe_times()
    failed = rig.new_events("probe.failed")
    assert [("connection refused", "refused")] * 3 == [(e["error"], e["failure"]) for e in failed]
    assert "unhealthy: 1/3 probes failed (connection refused)" == status
    assert ["unhealthy"] == [e["reason"] for e in rig.new_events("container.restarting")]


def test_one_success_returns_to_the_normal_cadence(rig: Rig) -> None:
    """Two failed probes 0.5 s apart, then one that succeeds: healthy again, no restart,
    and the next probe one health interval later."""
    rig.start_healthy()
    deaf_at = rig.clock()

    rig.engine.stop_listening(REGISTRY)
    rig.step(HEALTH_INTERVAL_S)
    rig.step(0.5)
    rig.engine.resume(REGISTRY)
    rig.step(0.5)
    rig.step(HEALTH_INTERVAL_S - 0.5)  # not yet due
    rig.step(0.5)

    assert [deaf_at + 5.0, deaf_at + 5.5, deaf_at + 6.0, deaf_at + 11.0] == rig.new_probe_times()
    assert ["healthy", "unhealthy", "healthy"] == rig.new_phases()
    assert [] == rig.new_mutations()


def test_storage_failure_degrades_without_a_restart_loop(rig: Rig) -> None:
    """The registry's own health check answers 503: phase degraded, STATUS and log name
    its error, probes keep the normal cadence, and no restart for 300 s of it."""
    rig.start_healthy()
    rig.engine.fail_storage()

    rig.step(HEALTH_INTERVAL_S)
    degraded = rig.new_events("registry.degraded")
    status = rig.sup.status_line(rig.clock())
    for _ in range(58):
        rig.step(HEALTH_INTERVAL_S)

    error = "HTTP 503: UNAVAILABLE: health check failed: please see /debug/health"
    assert [("dependency", error)] == [(e["source"], e["detail"]) for e in degraded]
    assert f"degraded: {error} (answering, serving nothing)" == status
    assert ["healthy", "degraded"] == rig.new_phases()
    assert 59 == len(rig.new_probe_times())
    assert [] == rig.new_mutations()
    assert [] == rig.new_events("probe.failed")  # not counted toward a restart


def test_storage_failure_restarts_rarely_with_a_doubling_backoff(rig: Rig) -> None:
    """Still failing 300 s after its first 503: one restart; after it, the next one only
    600 s later."""
    rig.start_healthy()
    rig.engine.fail_storage()
    first_at = rig.clock() + HEALTH_INTERVAL_S

    for _ in range(61):
        rig.step(HEALTH_INTERVAL_S)
    restarting = rig.new_events("health.dependency_restart")
    rig.until("degraded")
    rig.mark()
    for _ in range(119):
        rig.step(HEALTH_INTERVAL_S)
    waited = rig.new_mutations()  # 595 s more of 503: not yet the second
    rig.step(HEALTH_INTERVAL_S)
    rig.until("degraded", every=0.5)  # (the restart budget's own backoff first)

    assert [(300.0, 1)] == [(e["failing_s"], e["attempt"]) for e in restarting]
    assert first_at + 300.0 <= rig.clock()
    assert [] == waited
    assert [2] == [e["attempt"] for e in rig.new_events("health.dependency_restart")]
    assert [("restart", REGISTRY)] == rig.new_mutations()


def test_storage_mended_recovers_by_itself(rig: Rig) -> None:
    """Once /v2/ answers 200 again: healthy, `registry.recovered`, no restart."""
    rig.start_healthy()
    rig.engine.fail_storage()
    rig.step(HEALTH_INTERVAL_S)
    rig.engine.mend_storage()
    rig.step(HEALTH_INTERVAL_S)

    assert ["healthy", "degraded", "healthy"] == rig.new_phases()
    assert ["dependency"] == [e["source"] for e in rig.new_events("registry.recovered")]
    assert "healthy: up 0s, 0 restarts" == rig.sup.status_line(rig.clock())
    assert [] == rig.new_mutations()


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


def update_recreates(rig: Rig, image_id: str) -> None:
    """What `registry-supervisor update` does under the lock: the tag moved to ``image_id``
    (its pull), the registry recreated by the tag in the same holder."""
    ref = rig.sup.desired.spec.image
    rig.engine.add_image(ref, image_id=image_id)
    old = rig.engine.container(REGISTRY)
    holder = rig.engine.container(HOLDER)
    assert old is not None and holder is not None
    rig.engine.stop(old.id, 1)
    rig.engine.remove(old.id)
    created = rig.engine.create(rig.sup.desired.spec, holder.id)
    rig.engine.start(created.id)
    rig.mark()  # from here on, what the supervisor does


def test_container_update_left_on_a_new_image_is_adopted_after_maintenance(rig: Rig) -> None:
    """`update` moved the tag and recreated the registry on the new image: once the lock is
    released the tag is resolved again and the container adopted, not put back."""
    rig.start_healthy()
    path, lock = hold_lock(rig)
    rig.step(1.0)
    new_id = "sha256:" + "c" * 64
    update_recreates(rig, new_id)
    rig.step(1.0)

    maintenance.release(path, lock)
    rig.until("healthy", every=0.5)

    assert ([], []) == (rig.new_mutations(), rig.new_events("container.restarting"))
    assert new_id == rig.sup.images.image_id


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


# -- review of issue 12: behaviour kept from the one-class loop -------------------------


def test_a_probe_that_finds_the_registry_down_lets_the_loop_wait_once_the_engine_is_gone(
    rig: Rig,
) -> None:
    """The registry dies while it is probed, then the engine goes away: the loop waits for
    its next reconnect try instead of turning without a pause."""
    rig.start_healthy()
    rig.clock.advance(HEALTH_INTERVAL_S)
    rig.engine.crash(REGISTRY)  # its `die` is queued while the probe runs
    rig.engine.settle()
    rig.sup.tick()  # the probe: refused, and the registry is not running
    rig.engine.go_down()
    rig.step()
    assert "engine-down" == rig.sup.phase.value

    waits = []
    for _ in range(3):
        rig.step()
        waits.append(rig.sup._next_deadline() - rig.clock())

    assert all(wait > 0 for wait in waits), f"the loop would not wait: {waits}"


class _PingTimes(RecordingNotifier):
    """A notifier that also notes when each WATCHDOG=1 was sent, on the test's clock."""

    def __init__(self, clock: Any, watchdog_every_s: float) -> None:
        super().__init__(watchdog_every_s=watchdog_every_s)
        self.clock = clock
        self.pings: list[float] = []

    def _send(self, *fields: str) -> None:
        if "WATCHDOG=1" in fields:
            self.pings.append(self.clock())
        super()._send(*fields)


class _HungCreateEngine(FakeEngine):
    """An engine whose create answers only at the API timeout (a hung engine); it notes
    the WATCHDOG=1 times sent before each start of the registry."""

    def __init__(self, clock: Any, notifier: _PingTimes) -> None:
        super().__init__(clock)
        self.notifier = notifier
        self.starts: list[tuple[float, list[float]]] = []

    def create(self, spec: Any, holder_id: str) -> Any:
        created = super().create(spec, holder_id)
        self.clock.advance(API_TIMEOUT_S)
        return created

    def start(self, container_id: str) -> None:
        if container_id.startswith(
            tuple(c.id for c in self._containers.values() if c.name == REGISTRY)
        ):
            self.starts.append((self.clock(), list(self.notifier.pings)))
        super().start(container_id)


def test_the_registry_start_after_a_slow_create_has_a_whole_engine_timeout_of_watchdog_left(
    rig: Rig,
) -> None:
    """Every engine call that may block API_TIMEOUT_S begins with that much (and the
    slack) left before WATCHDOG=1 is due: the start that follows a create too."""
    every = API_TIMEOUT_S + SLACK_S + 0.5  # no startup warning: one engine call fits
    rig.notifier = _PingTimes(rig.clock, every)
    rig.engine = _HungCreateEngine(rig.clock, rig.notifier)
    rig.sup.startup()
    rig.until("healthy")

    (start, pings), *_ = rig.engine.starts
    assert start + API_TIMEOUT_S + SLACK_S <= max(pings) + every, (start, pings)


# -- phase paths that must not meet IllegalTransition ------------------------------------


def test_engine_lost_during_maintenance_and_back_after_it_is_started_again(rig: Rig) -> None:
    """The engine goes away (stopping the containers) while `gc` holds the lock and comes
    back after the lock is released: engine-down, then the containers are started again."""
    rig.start_healthy()
    path, lock = hold_lock(rig)
    assert "maintenance" == rig.step(0.5)
    rig.engine.go_down(stop_containers=True)
    assert "engine-down" == rig.step(0.5)
    for _ in range(4):
        assert "engine-down" == rig.step(0.5)
    maintenance.release(path, lock)
    rig.step(0.5)
    rig.engine.come_back()
    rig.until("healthy", every=0.5)

    assert ["healthy", "maintenance", "engine-down", "restarting", "starting", "healthy"] == (
        rig.new_phases()
    )


def test_engine_back_while_maintenance_still_holds_is_reconnected_after_it(rig: Rig) -> None:
    """The engine goes away and comes back while `gc` holds the lock: reconnected once
    the lock is released, the running registry adopted."""
    rig.start_healthy()
    path, lock = hold_lock(rig)
    rig.step(0.5)
    rig.engine.go_down()
    rig.step(0.5)
    rig.engine.come_back()
    rig.step(0.5)
    maintenance.release(path, lock)
    rig.until("healthy", every=0.5)

    assert [] == rig.new_mutations()
    assert in_order(["maintenance", "engine-down", "starting", "healthy"], rig.new_phases())


def test_port_held_on_the_very_first_start_is_waited_for(rig: Rig) -> None:
    """A host process holds the port at the first start: port-busy until it goes."""
    port = rig.sup.settings.port
    rig.engine.occupy_port(port)
    rig.sup.startup()
    rig.until("port-busy")
    for _ in range(3):
        assert "port-busy" == rig.step(1.0)

    rig.engine.host_ports.clear()
    rig.until("healthy", every=1.0)
    assert ["engine-down", "port-busy", "starting", "healthy"] == rig.phases


def test_sighup_while_waiting_for_the_port_then_a_free_port(rig: Rig) -> None:
    """SIGHUP while port-busy: an unchanged spec keeps waiting; a port that is free then
    gets the registry running there."""
    port = rig.sup.settings.port
    rig.engine.occupy_port(port)
    rig.sup.startup()
    rig.until("port-busy")

    rig.put(signal.SIGHUP)
    assert "port-busy" == rig.step()
    rig.write_env(MY_REG_PORT=str(port + 1))
    rig.put(signal.SIGHUP)
    rig.until("healthy", every=0.5)
    assert port + 1 == rig.sup.settings.port


def test_image_missing_at_the_first_start_then_present(rig: Rig) -> None:
    """No image and none to pull: pulling (retrying); once it is there, created, healthy."""
    ref = "registry:latest"  # what the settings name (FakeEngine's own image)
    rig.engine = FakeEngine(rig.clock, image="something-else:1")
    rig.sup.startup()
    rig.until("pulling")
    rig.engine.add_image(ref)
    rig.until("healthy", every=1.0)
    assert ["engine-down", "pulling", "starting", "healthy"] == rig.phases


def test_start_refused_during_the_first_start_is_retried(rig: Rig) -> None:
    """The engine refuses the first start: restarting with backoff, then healthy."""
    rig.engine.refuse("start", "OCI runtime create failed")
    rig.sup.startup()
    rig.until("restarting")
    rig.engine.faults.refuse.clear()
    rig.until("healthy", every=1.0)
    assert ["start-failed"] == [e["reason"] for e in rig.new_events("container.restarting")][:1]


def test_reload_onto_a_held_port_is_rolled_back(rig: Rig) -> None:
    """SIGHUP with a new port that a host process holds: back to the old port, healthy."""
    rig.start_healthy()
    port = rig.sup.settings.port
    rig.engine.occupy_port(port + 1)
    rig.write_env(MY_REG_PORT=str(port + 1))
    rig.put(signal.SIGHUP)
    rig.until("healthy", every=0.5)

    assert port == rig.sup.settings.port
    assert 1 == len(rig.new_events("settings.reload_rejected"))


def test_gc_taking_the_lock_as_a_deferred_reload_runs_does_not_crash_the_loop(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reload deferred while the engine was away runs on the tick after the reconnect;
    `gc` takes the lock at that moment: the loop stands aside, it does not raise."""
    rig.start_healthy()
    rig.engine.go_down()
    rig.step()
    rig.put(signal.SIGHUP)  # deferred: engine-down
    rig.step()
    rig.engine.come_back()
    rig.until("starting", every=0.5)

    reloader = rig.sup.reconciler.reloader
    take_pending = reloader.take_pending
    held: list[Any] = []

    def gc_takes_the_lock() -> bool:
        pending = take_pending()
        if pending:
            held.append(hold_lock(rig))
        return pending

    monkeypatch.setattr(reloader, "take_pending", gc_takes_the_lock)
    rig.step()  # today: IllegalTransition (maintenance -> healthy); before issue 12: healthy
    assert "maintenance" == rig.sup.phase.value
    maintenance.release(*held[0])


# -- honest counts ---------------------------------------------------------------------


def state(rig: Rig) -> dict[str, Any]:
    """The state file as `status` reads it."""
    path = Path(rig.settings["MY_REG_STATE_DIR"]) / f"state-{REGISTRY}.json"
    content: dict[str, Any] = json.loads(path.read_text())
    return content


def reload_with(rig: Rig, **changes: str) -> None:
    rig.write_env(**changes)
    rig.put(signal.SIGHUP)
    rig.until("healthy")


def test_reloads_are_counted_as_planned_not_as_restarts(rig: Rig) -> None:
    """Two SIGHUPs that change the spec: 0 restarts, 2 planned, in STATUS and the state file."""
    rig.start_healthy()

    reload_with(rig, MY_REG_STOP_TIMEOUT="20")
    reload_with(rig, MY_REG_STOP_TIMEOUT="21")
    rig.step(60.0)  # past the state file's rate limit
    rig.until("healthy")

    line = rig.sup.status_line(rig.clock())
    assert line.startswith("healthy: up ") and line.endswith(
        ", 0 restarts, 2 planned (last: spec-changed)"
    ), line
    content = state(rig)
    assert ({}, {"spec-changed": 2}, "spec-changed") == (
        content["restarts"],
        content["planned"],
        content["last_reason"],
    )


def test_failures_and_planned_replacements_are_shown_apart(rig: Rig) -> None:
    """A crash after a reload: 1 restart, 1 planned, the last reason the crash."""
    rig.start_healthy()

    reload_with(rig, MY_REG_STOP_TIMEOUT="20")
    rig.engine.crash(REGISTRY, exit_code=2)
    rig.until("healthy")

    assert "healthy: up 0s, 1 restart, 1 planned (last: crashed)" == rig.sup.status_line(
        rig.clock()
    )


def test_counts_and_the_last_reason_survive_a_supervisor_restart(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A new supervisor on the same state dir continues the counts of the one before it."""
    first = Rig(tmp_path, capsys)
    first.start_healthy()
    first.engine.crash(REGISTRY, exit_code=2)
    first.until("healthy")
    reload_with(first, MY_REG_STOP_TIMEOUT="20")
    first.sup.shutdown()
    first.engine.close_streams()

    second = Rig(tmp_path, capsys)
    second.engine = first.engine  # the same containers, stopped by the first
    second.start_healthy()

    resumed = [e for e in second.events() if e["event"] == "state.resumed"]
    assert [(1, 1, "spec-changed")] == [
        (e["restarts"], e["planned"], e["last_reason"]) for e in resumed
    ]
    # The first supervisor stopped the registry: starting it again is no restart.
    assert "healthy: up 0s, 1 restart, 1 planned (last: spec-changed)" == (
        second.sup.status_line(second.clock())
    )
    second.engine.close_streams()


@pytest.mark.parametrize("text", ["", "{not json", "[]", '{"version": 2, "container": "other"}'])
def test_a_corrupt_or_foreign_state_file_is_a_fresh_start(rig: Rig, text: str) -> None:
    """An unreadable state file, or another container's: counts from zero, one warning."""
    path = Path(rig.settings["MY_REG_STATE_DIR"]) / f"state-{REGISTRY}.json"
    path.parent.mkdir(mode=0o700)
    path.write_text(text)

    rig.start_healthy()

    assert "healthy: up 0s, 0 restarts" == rig.sup.status_line(rig.clock())
    assert [("warning", str(path))] == [
        (e["level"], e["path"]) for e in rig.events() if e["event"] == "state.not_resumed"
    ]


def test_a_version_1_state_file_has_its_reloads_moved_to_planned(rig: Rig) -> None:
    """A file of an earlier release counted spec-changed among the restarts."""
    path = Path(rig.settings["MY_REG_STATE_DIR"]) / f"state-{REGISTRY}.json"
    path.parent.mkdir(mode=0o700)
    path.write_text(
        json.dumps(
            {
                "version": 1,
                "container": REGISTRY,
                "restarts": {"spec-changed": 2, "crashed": 1, "bogus": 4},
                "last_reason": "crashed",
                "last_reason_at": "2026-01-01T00:00:00+00:00",
            }
        )
    )

    rig.start_healthy()

    assert "healthy: up 0s, 1 restart, 2 planned (last: crashed)" == rig.sup.status_line(
        rig.clock()
    )


def test_a_clean_stop_leaves_the_state_stopped_without_a_pid(rig: Rig) -> None:
    """SIGTERM: the last state says `stopped`, names no pid, and keeps the counts."""
    rig.start_healthy()
    rig.engine.docker_stop(REGISTRY)
    rig.until("healthy")

    rig.put(signal.SIGTERM)
    rig.sup.handle_pending()
    rig.sup.shutdown()

    content = state(rig)
    assert ("stopped", None, None, {"stopped": 1}) == (
        content["phase"],
        content["pid"],
        content["healthy_since"],
        content["restarts"],
    )
    assert content["stopped_at"] is not None


# -- read-at-start settings ----------------------------------------------------------


def test_a_reload_of_the_metrics_address_says_it_needs_a_restart(rig: Rig) -> None:
    """MY_REG_METRICS_ADDR is read at start: a SIGHUP that changes it keeps the one in
    force and says so, naming the setting, the old and the new value."""
    rig.start_healthy()

    rig.write_env(MY_REG_METRICS_ADDR="127.0.0.1:9999")
    rig.put(signal.SIGHUP)
    rig.step()

    assert [("warning", "MY_REG_METRICS_ADDR", None, "127.0.0.1:9999")] == [
        (e["level"], e["setting"], e["old"], e["new"])
        for e in rig.new_events("settings.reload_needs_restart")
    ]
    assert rig.sup.settings.metrics_addr is None
    assert [False] == [e["spec_changed"] for e in rig.new_events("supervisor.reloaded")]


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


def test_a_registry_on_3x_gets_commit_rounds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
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


# -- readiness for a load balancer (supervisor/ready.py) -----------------------------------


def test_a_planned_replacement_is_not_ready_for_the_drain_before_the_old_one_stops(
    rig: Rig,
) -> None:
    """MY_REG_READY_DRAIN=3: a reload with a new spec makes `/ready` 503 (restarting) at
    once, and the old registry is stopped only 3 s later; ready again once healthy."""
    rig.write_env(MY_REG_READY_DRAIN="3")
    rig.start_healthy()
    assert rig.sup.metrics.ready.ready

    rig.write_env(MY_REG_STOP_TIMEOUT="20")
    rig.put(signal.SIGHUP)
    assert "restarting" == rig.step()
    assert (False, "restarting") == (rig.sup.metrics.ready.ready, rig.sup.metrics.ready.reason)
    assert "restarting" == rig.step(2.9)
    assert [] == rig.new_mutations()
    rig.step(0.1)
    assert [("stop", REGISTRY), ("remove", REGISTRY)] == rig.new_mutations()[:2]
    assert [3.0] == [e["delay_s"] for e in rig.new_events("container.restarting")]
    rig.until("healthy")
    assert rig.sup.metrics.ready.ready


def test_a_crash_is_repaired_at_once_whatever_the_drain(rig: Rig) -> None:
    """MY_REG_READY_DRAIN applies to planned replacements only: a crash is started again
    in the same turn of the loop."""
    rig.write_env(MY_REG_READY_DRAIN="3")
    rig.start_healthy()

    rig.engine.crash(REGISTRY, exit_code=2)
    rig.step()

    assert [("start", REGISTRY)] == rig.new_mutations()
    assert not rig.sup.metrics.ready.ready  # starting until a probe says healthy
    rig.until("healthy")
    assert rig.sup.metrics.ready.ready


def test_maintenance_is_not_ready(rig: Rig) -> None:
    """While `gc` holds the lock, `/ready` says 503 maintenance."""
    rig.start_healthy()

    path, lock = hold_lock(rig)
    assert "maintenance" == rig.step(1.0)
    assert (False, "maintenance") == (rig.sup.metrics.ready.ready, rig.sup.metrics.ready.reason)
    maintenance.release(path, lock)


def test_a_stop_is_not_ready(rig: Rig) -> None:
    """SIGTERM: `/ready` says 503 stopping (published as shutdown begins)."""
    rig.start_healthy()

    rig.sup.shutdown()

    assert (False, "stopping") == (rig.sup.metrics.ready.ready, rig.sup.metrics.ready.reason)
