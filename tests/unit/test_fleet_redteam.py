"""Fleet mode: interleavings found in a hostile review (one member's loop, tick by tick,
against a fake engine and an in-memory FleetStore, as tests/unit/test_fleet_ticks.py).

Each test is one scenario where a member could accept a push while a collector may run,
or leak the read-only overlay, or hold up the fleet.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import structlog
from support.fake_fleet import FakeFleetStore
from support.fakes import FakeClock
from support.fleet_rig import (
    DRAIN_S,
    hold_read_only,
    read_only,
    reload_behind_another_member,
    round_,
    start,
)
from support.rig import Rig

from supervisor.errors import MaintenanceFailed
from supervisor.fleet import GcLease, Hold
from supervisor.loop.fleet_flow import writable_settings
from supervisor.ops import rolling
from supervisor.settings import load_settings
from supervisor.spec import READONLY_VARIABLE, derive_spec
from supervisor.statedir import fleet_hold, maintenance


def desired_read_only(rig: Rig) -> bool:
    return READONLY_VARIABLE in rig.sup.settings.registry_env


def confirmed(store: FakeFleetStore, lease: GcLease) -> bool:
    record = store.record("m1")
    return record is not None and record.confirmed == lease.token


def test_a_new_lease_while_waiting_for_the_slot_back_to_normal_keeps_it_read_only(
    rig: Rig, store: FakeFleetStore
) -> None:
    """Lease 1 released; m1 (still read-only) waits for the slot to go back to normal
    while m2 holds it. A second gc takes lease 2: m1, still read-only, confirms it at
    once. Then the slot frees up: m1 must not go writable under lease 2's collector."""
    start(rig)
    first = store.take_lease("m2", 60.0, "now")
    assert first is not None
    hold_read_only(rig, store, first)
    round_(rig)  # the slot handed on
    other = store.take_slot("m2", "normal", 15.0)  # m2 goes back to normal first
    assert other is not None
    store.release(first)
    round_(rig)  # released: m1 wants the slot back to normal, m2 has it
    second = store.take_lease("m3", 60.0, "now")
    assert second is not None
    for _ in range(4):
        round_(rig, 0.5)
    assert confirmed(store, second)  # read-only all along: confirmed for the new gc
    store.release_slot(other)  # m2 is back: the slot is free
    for _ in range(6):
        round_(rig, 0.5)
    rig.step(DRAIN_S)
    for _ in range(10):
        round_(rig, 0.5)
    assert store.lease() == second  # the second gc's collector may run now
    assert desired_read_only(rig), "the loop made the registry writable under lease 2"
    assert read_only(rig), "a writable registry serves while a confirmed collector runs"
    assert confirmed(store, second)
    kept = fleet_hold.read(fleet_hold.hold_path(rig.sup.settings))
    assert kept is not None and kept.token == second.token  # a restart goes on holding it


def test_a_lease_superseding_a_hold_still_in_force_keeps_it_read_only(
    rig: Rig, store: FakeFleetStore
) -> None:
    """The initiator of lease 1 was killed: lease 1 ends in Redis by its TTL, but m1 saw
    it later and still holds. A new gc takes lease 2 right away. m1 ends the old hold
    ("superseded"), which asks for the slot back to normal, takes up the new hold,
    confirms it while still read-only, then takes the slot and goes writable."""
    start(rig)
    first = store.take_lease("m2", 30.0, "now")
    assert first is not None
    rig.clock.advance(3.0)  # m1 sees it a few seconds after it was taken
    hold_read_only(rig, store, first)
    round_(rig)  # the slot handed on
    rig.clock.advance(30.0 - 3.0 - rig.clock() % 1 + 0.5)  # past lease 1's TTL, not m1's hold
    assert store.lease() is None
    second = store.take_lease("m3", 60.0, "now")
    assert second is not None
    for _ in range(10):
        round_(rig, 0.5)
    rig.step(DRAIN_S)
    for _ in range(10):
        round_(rig, 0.5)
    assert store.lease() == second
    assert desired_read_only(rig), "the loop made the registry writable under lease 2"
    assert read_only(rig), "a writable registry serves while lease 2's collector may run"
    assert confirmed(store, second)


def test_a_confirmed_member_stops_confirming_while_another_process_has_its_registry(
    rig: Rig, store: FakeFleetStore
) -> None:
    """`update` (fleet mode: the rolling slot, then the maintenance lock) does not look at
    the gc lease: once the collector runs, the slot is free, and `update` recreates the
    registry from the env file's settings, writable. The loop stands aside (MAINTENANCE)
    but its heartbeat went on saying `confirmed`: the collector kept running beside a
    registry that accepts pushes."""

    start(rig)
    lease = store.take_lease("m2", 60.0, "now")
    assert lease is not None
    hold_read_only(rig, store, lease)
    round_(rig)
    path = maintenance.maintenance_path(rig.sup.settings)
    lock = maintenance.acquire(path, "update", "my_registry-update", lambda _name: False)
    rig.step(1.0)
    assert rig.sup.phase.value == "maintenance"
    # what Update._recreate does: the spec of the settings it loaded (no read-only mode)
    old = rig.engine.container("my_registry")
    holder = rig.engine.container("my_registry-net")
    assert old is not None and holder is not None
    rig.engine.stop(old.id, 1)
    rig.engine.remove(old.id)
    spec = derive_spec(writable_settings(rig.sup.settings), rig.sup.images.layout)
    created = rig.engine.create(spec, holder.id)
    rig.engine.start(created.id)
    for _ in range(3):
        round_(rig, 1.0)
    assert not read_only(rig)
    assert not confirmed(store, lease), "confirms read-only while `update` runs it writable"
    maintenance.release(path, lock)
    for _ in range(12):
        round_(rig, 0.5)
    rig.step(DRAIN_S)
    for _ in range(12):
        round_(rig, 0.5)
    assert read_only(rig)  # put back as the hold wants it
    assert confirmed(store, lease)  # and confirmed again once it refuses an upload


def test_update_refuses_while_a_fleet_gc_lease_is_in_force(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`update` takes the slot (free once every member confirmed), then recreates the
    registry writable: with a lease in force (or this member's hold file) it must not."""

    clock = FakeClock()
    fake = FakeFleetStore(clock)
    monkeypatch.setattr(rolling, "FleetStore", lambda url, name: fake)
    env = tmp_path / "registry.env"
    env.write_text(
        f"MY_REG_DIR={tmp_path / 'data'}\nMY_REG_STATE_DIR={tmp_path / 'state'}\n"
        "MY_REG_FLEET_REDIS=redis://fake:6379/0\nMY_REG_FLEET_MEMBER=m1\n"
        "MY_REG_FLEET_SHARED_DIR=true\n"
    )
    settings = load_settings(env)
    log = structlog.get_logger()
    ran = []
    lease = fake.take_lease("m2", 60.0, "now")
    assert lease is not None
    with (
        pytest.raises(MaintenanceFailed, match="fleet gc is under way"),
        rolling.rolling_slot(settings, "update", log, sleep=lambda _s: None),
    ):
        ran.append("update")
    assert ([], None) == (ran, fake.slot_holder())  # nothing done, the slot given back
    fake.release(lease)
    fleet_hold.write(fleet_hold.hold_path(settings), Hold("lease-x", 1e9, "boot-1"))
    with (
        pytest.raises(MaintenanceFailed, match="lease-x"),
        rolling.rolling_slot(settings, "update", log, sleep=lambda _s: None),
    ):
        ran.append("update")
    fleet_hold.remove(fleet_hold.hold_path(settings))
    with rolling.rolling_slot(settings, "update", log, sleep=lambda _s: None):
        ran.append("update")
    assert ["update"] == ran


def test_a_second_gc_after_redis_lost_its_data_does_not_shorten_the_first_hold(
    rig: Rig, store: FakeFleetStore
) -> None:
    """gc 1 (`gc` SIGKILLed mid-collection: its collector runs on, to its own bound of
    about hold_s) and Redis restarted empty. 5 s later a second gc may start (the epoch is
    old enough, every member re-registered); it takes lease 2, collects for a minute and
    releases it. m1 must go on holding until lease 1's time is up on its own clock."""
    start(rig)
    first = store.take_lease("m2", 600.0, "now")
    assert first is not None
    hold_read_only(rig, store, first)
    round_(rig)
    store.lose_data()  # lease 1 gone, never released
    for _ in range(6):
        round_(rig, 1.0)
    second = store.take_lease("m3", 120.0, "now")
    assert second is not None
    for _ in range(4):
        round_(rig, 0.5)
    assert confirmed(store, second)
    store.release(second)  # gc 2 done after a short while
    for _ in range(6):
        round_(rig, 0.5)
    rig.step(DRAIN_S)
    for _ in range(6):
        round_(rig, 0.5)
    assert read_only(rig), "writable ~20 s into lease 1's 600 s: its collector may still run"


def test_a_reload_waiting_for_the_slot_survives_a_lease_that_ends_before_the_slot(
    rig: Rig, store: FakeFleetStore
) -> None:
    """A reload changed the spec and waits for the slot; a gc lease comes, so the slot is
    wanted for read-only first; that gc gives up before m1's turn: the reload must still
    replace the container (its settings are in force already; only the restart waits)."""
    start(rig)
    other = reload_behind_another_member(rig, store)
    round_(rig, 1.0)  # the reload waits for the slot
    lease = store.take_lease("m3", 60.0, "now")
    assert lease is not None
    round_(rig, 1.0)  # seen: now the slot is wanted for read-only instead
    store.release(lease)  # that gc gave up before m1's turn came
    round_(rig, 1.0)
    store.release_slot(other)
    for _ in range(6):
        round_(rig, 1.0)
    rig.step(DRAIN_S)
    for _ in range(10):
        round_(rig, 0.5)
    running = rig.engine.container("my_registry")
    assert running is not None
    assert rig.sup.settings.stop_timeout == 25
    assert rig.sup.phase.value == "healthy"
    assert "restarting" in rig.new_phases(), "the reload's restart never happened"


def test_a_crash_of_the_read_only_twin_before_it_served_brings_back_a_read_only_registry(
    rig: Rig, store: FakeFleetStore
) -> None:
    """A reload waits for the slot; a lease comes first, so the read-only twin runs the new
    settings; it crashes before it was ever healthy. Whatever is started next (repaired,
    or rolled back to the settings that worked) is read-only, and confirms again."""
    start(rig)
    other = reload_behind_another_member(rig, store)
    lease = store.take_lease("m3", 600.0, "now")
    assert lease is not None
    round_(rig, 1.0)  # seen: the slot is wanted for read-only
    store.release_slot(other)
    round_(rig, 1.0)  # granted: drain, then the read-only twin on the new settings
    rig.step(DRAIN_S)  # replaced; not probed yet
    assert read_only(rig) and rig.sup.phase.value == "starting"
    rig.engine.crash("my_registry")  # before its first healthy probe
    for _ in range(20):
        round_(rig, 0.5)
    assert read_only(rig) and desired_read_only(rig)
    assert rig.sup.phase.value == "healthy"
    assert confirmed(store, lease)
