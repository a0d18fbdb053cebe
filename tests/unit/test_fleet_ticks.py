"""Fleet mode, tick by tick: one member's loop against a fake engine and an in-memory
FleetStore (tests/support/fake_fleet.py). The fleet link's thread is not started: each
test runs its rounds (heartbeat and looks) where it wants them.

What is asserted is what the fleet and the load balancer see: the member's record in the
store, the rolling slot, its `/ready`, and the registry container's environment (read-only
or not).
"""

from __future__ import annotations

import signal
from pathlib import Path

from support.fake_fleet import FakeFleetStore
from support.fleet_rig import (
    DRAIN_S,
    hold_read_only,
    read_only,
    reload_behind_another_member,
    round_,
    start,
)
from support.rig import Rig

from supervisor import ready
from supervisor.fleet import Hold
from supervisor.statedir import fleet_hold


def ready_now(rig: Rig) -> ready.Ready:
    return ready.verdict(rig.sup.phase, rig.sup.reconciler.degraded)


def test_a_member_heartbeats_its_state_into_the_fleet(rig: Rig, store: FakeFleetStore) -> None:
    start(rig)
    round_(rig)
    first = store.record("m1")
    assert first is not None and not first.ready  # not joined until this round landed
    round_(rig)
    record = store.record("m1")
    assert record is not None
    assert (record.phase, record.ready, record.read_only_for) == ("healthy", True, None)
    assert record.spec_hash == rig.sup.spec.spec_hash
    assert record.http_secret is not None and record.storage is not None
    assert "REGISTRY_HTTP_SECRET" not in record.to_json()  # a fingerprint, never the secret


def test_a_gc_lease_makes_the_registry_read_only_after_a_drain_then_confirms(
    rig: Rig, store: FakeFleetStore
) -> None:
    """Lease seen -> slot -> /ready 503 for the drain, the old registry still serving ->
    read-only twin -> healthy -> refuses an upload -> confirmed; the slot is handed on."""
    start(rig)
    lease = store.take_lease("m2", 60.0, "now")
    assert lease is not None
    round_(rig)  # seen: the slot asked for (taken at the next round)
    assert (rig.sup.phase.value, store.slot_holder()) == ("healthy", None)
    round_(rig)  # slot taken, replacement scheduled after the drain
    assert store.slot_holder() is not None and store.slot_holder().startswith("m1:read-only")  # type: ignore[union-attr]
    assert (rig.sup.phase.value, ready_now(rig).ready) == ("restarting", False)
    assert not read_only(rig)  # the old one serves through the drain
    rig.step(DRAIN_S)
    hold_read_only(rig, store, lease)
    assert read_only(rig)
    assert ready_now(rig).ready  # a read-only registry serves pulls: in the balancer
    line = rig.sup.status_line(rig.clock())
    assert line.startswith("healthy: up") and "read-only for the fleet's gc (confirmed" in line
    round_(rig)
    assert store.slot_holder() is None  # handed on once healthy
    assert fleet_hold.read(fleet_hold.hold_path(rig.sup.settings)) is not None


def test_a_released_lease_brings_the_registry_back_to_normal_through_the_slot(
    rig: Rig, store: FakeFleetStore
) -> None:
    start(rig)
    lease = store.take_lease("m2", 60.0, "now")
    assert lease is not None
    hold_read_only(rig, store, lease)
    store.release(lease)
    round_(rig)  # released: the slot is asked for again
    round_(rig)  # taken: drain, then the normal container
    assert rig.sup.phase.value == "restarting"
    rig.step(DRAIN_S)
    rig.until("healthy", every=0.5)
    assert not read_only(rig)
    # Writable again: handed on only after its push canary's round (it can push again).
    assert store.slot_holder() is not None and store.slot_holder().startswith("m1:normal")  # type: ignore[union-attr]
    round_(rig)  # the canary's round
    round_(rig)  # the slot given back
    record = store.record("m1")
    assert record is not None and (record.read_only_for, record.confirmed) == (None, None)
    assert store.slot_holder() is None
    done = rig.new_events("fleet.planned_restart_done")
    assert [("normal", True)] == [(e["why"], e.get("canary_passed")) for e in done][-1:]
    assert fleet_hold.read(fleet_hold.hold_path(rig.sup.settings)) is None


def test_the_switch_waits_while_another_member_holds_the_slot(
    rig: Rig, store: FakeFleetStore
) -> None:
    """One member at a time: m2 drains and restarts, so m1 keeps serving as it is."""
    start(rig)
    other = store.take_slot("m2", "read-only", 15.0)
    lease = store.take_lease("m2", 60.0, "now")
    assert other is not None and lease is not None
    for _ in range(5):
        round_(rig, 1.0)
    assert (rig.sup.phase.value, read_only(rig)) == ("healthy", False)
    store.release_slot(other)
    round_(rig, 1.0)
    assert rig.sup.phase.value == "restarting"
    rig.step(DRAIN_S)
    hold_read_only(rig, store, lease)


def test_a_hold_ends_by_its_own_time_when_no_release_comes(rig: Rig, store: FakeFleetStore) -> None:
    """The initiator died, or Redis lost the lease: the member holds for the lease's whole
    length on its own clock, then goes back to normal by itself."""
    start(rig)
    lease = store.take_lease("m2", 30.0, "now")
    assert lease is not None
    hold_read_only(rig, store, lease)
    store.lose_data()  # Redis restarted empty: no lease, no release ever
    round_(rig, 10.0)
    assert read_only(rig)  # still held: the collector may run up to the lease's end
    round_(rig, 25.0)  # past the lease's length since it was seen
    round_(rig)
    rig.step(DRAIN_S)
    rig.until("healthy", every=0.5)
    assert not read_only(rig)
    assert "expired" in [e.get("why") for e in rig.new_events("fleet.gc_hold_ended")]


def test_a_supervisor_restarted_mid_hold_goes_on_holding_read_only(
    rig: Rig, store: FakeFleetStore
) -> None:
    """The hold file: a supervisor that starts finds it and runs the registry read-only
    from its first container on, whatever Redis says (here it lost the lease)."""
    settings_dir = Path(rig.settings["MY_REG_STATE_DIR"])
    settings_dir.mkdir(parents=True, exist_ok=True)
    path = settings_dir / "fleet-hold-my_registry"
    fleet_hold.write(path, Hold("lease-old", rig.clock() + 60.0, "boot-1"))
    start(rig)
    assert read_only(rig)
    assert ["fleet.gc_hold_at_start"] == [
        e["event"] for e in rig.events() if e["event"] == "fleet.gc_hold_at_start"
    ]
    round_(rig)
    record = store.record("m1")
    assert record is not None and record.read_only_for == "lease-old"


def test_a_member_that_starts_during_a_fleet_gc_starts_read_only(
    rig: Rig, store: FakeFleetStore
) -> None:
    """Its registry never accepts a push while the collector may run."""
    lease = store.take_lease("m2", 60.0, "now")
    assert lease is not None
    start(rig)
    assert read_only(rig)
    assert [] == [c for c in store.calls if c == "take_slot"]  # no slot: it served nobody
    for _ in range(4):
        round_(rig, 0.5)
    record = store.record("m1")
    assert record is not None and record.confirmed == lease.token


def test_a_reload_waits_while_the_registry_is_held_read_only(
    rig: Rig, store: FakeFleetStore
) -> None:
    """A reload would make it writable: deferred, and taken up once back to normal."""
    start(rig)
    lease = store.take_lease("m2", 60.0, "now")
    assert lease is not None
    hold_read_only(rig, store, lease)
    rig.write_env(MY_REG_STOP_TIMEOUT="25")
    rig.put(signal.SIGHUP)
    rig.step()
    assert read_only(rig)
    assert ["fleet"] == [e["until"] for e in rig.new_events("supervisor.reload_deferred")]
    store.release(lease)
    round_(rig)
    round_(rig)
    rig.step(DRAIN_S)
    rig.until("healthy", every=0.5)
    assert not read_only(rig)
    round_(rig)  # slot released, the reload taken up: it needs the slot for itself
    for _ in range(6):
        round_(rig, 0.5)
    rig.step(DRAIN_S)
    rig.until("healthy", every=0.5)
    assert rig.sup.settings.stop_timeout == 25


def test_a_spec_changing_reload_restarts_only_once_the_slot_is_ours(
    rig: Rig, store: FakeFleetStore
) -> None:
    start(rig)
    other = reload_behind_another_member(rig, store)
    for _ in range(3):
        round_(rig, 1.0)
    assert rig.sup.phase.value == "healthy"  # still the old container, serving
    store.release_slot(other)
    round_(rig, 1.0)
    assert rig.sup.phase.value == "restarting"
    assert store.slot_holder() is not None and store.slot_holder().startswith("m1:reload")  # type: ignore[union-attr]


def test_redis_down_leaves_the_registry_serving_and_is_said_once(
    rig: Rig, store: FakeFleetStore
) -> None:
    start(rig)
    store.down = True
    for _ in range(5):
        round_(rig, 1.0)
    assert (rig.sup.phase.value, ready_now(rig).ready) == ("healthy", True)
    assert 1 == len(rig.new_events("fleet.unreachable"))
    assert "fleet: Redis unreachable" in rig.sup.status_line(rig.clock())
    store.down = False
    round_(rig, 1.0)
    assert 1 == len(rig.new_events("fleet.reachable"))
    assert store.record("m1") is not None


def test_a_member_that_never_reached_its_fleet_gets_no_clients_until_it_does(
    rig: Rig, store: FakeFleetStore
) -> None:
    """Never in the roster, a fleet gc could not know of it: `/ready` 503 until its first
    heartbeat lands. Once joined (kept in the state dir), Redis down changes nothing."""
    store.down = True
    start(rig)
    round_(rig, 1.0)
    assert rig.sup._ready() == ready.Ready(False, "fleet: not joined yet (its Redis not reached)")
    store.down = False
    round_(rig, 1.0)
    round_(rig, 1.0)
    assert rig.sup._ready().ready
    assert (Path(rig.settings["MY_REG_STATE_DIR"]) / "fleet-joined-my_registry").exists()
    assert ["fleet.joined"] == [e["event"] for e in rig.new_events("fleet.joined")]


def test_a_member_that_joined_before_is_ready_with_its_redis_down(
    rig: Rig, store: FakeFleetStore
) -> None:
    state = Path(rig.settings["MY_REG_STATE_DIR"])
    state.mkdir(parents=True, exist_ok=True)
    fleet_hold.mark_joined(state / "fleet-joined-my_registry")
    store.down = True
    start(rig)
    round_(rig, 1.0)
    assert rig.sup._ready().ready


def test_the_fleet_secret_is_put_back_when_redis_lost_it(rig: Rig, store: FakeFleetStore) -> None:
    """A member that joins after Redis lost everything must find the fleet's secret, not
    make its own (uploads spanning members would fail): the secret Redis confirmed at
    `run`'s start is put back by every heartbeat."""
    rig.write_env(REGISTRY_HTTP_SECRET="the-fleets-secret")
    rig._supervisor_kwargs["fleet_secret"] = "the-fleets-secret"
    start(rig)
    store.lose_data()
    round_(rig, 1.0)
    assert store.shared_secret("a newcomer's own") == "the-fleets-secret"


def test_a_secret_redis_never_confirmed_is_not_put_into_the_fleet(
    rig: Rig, store: FakeFleetStore
) -> None:
    """Made up here while Redis did not answer (or set by the user): never the fleet's."""
    start(rig)
    store.lose_data()
    round_(rig, 1.0)
    assert store.shared_secret("a newcomer's own") == "a newcomer's own"
