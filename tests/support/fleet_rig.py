"""Fleet mode on the tick rig (tests/support/rig.py): one member, its fleet an in-memory
FleetStore, the fleet link's thread kept off (each test runs its rounds)."""

from __future__ import annotations

import signal

from supervisor.fleet import GcLease
from supervisor.spec import READONLY_VARIABLE
from support.fake_fleet import FakeFleetStore
from support.rig import Rig

PORT = 5001  # the default MY_REG_PORT, where the fake registry answers
DRAIN_S = 2.0


def join(rig: Rig, store: FakeFleetStore) -> None:
    """Make ``rig`` member m1 of ``store``'s fleet (before its supervisor is built)."""
    rig.write_env(
        MY_REG_FLEET_REDIS="redis://fake:6379/0",
        MY_REG_FLEET_MEMBER="m1",
        MY_REG_FLEET_SHARED_DIR="true",
        MY_REG_READY_DRAIN=str(DRAIN_S),
    )
    rig._supervisor_kwargs["fleet_store_factory"] = lambda url, name: store


def start(rig: Rig) -> None:
    """Start healthy with the link's thread kept off (the test runs its rounds)."""
    link = rig.sup.fleet_link
    assert link is not None
    link.start = lambda: None  # type: ignore[method-assign]
    rig.start_healthy()


def round_(rig: Rig, seconds: float = 0.0) -> None:
    """One round of the fleet link, then one turn of the loop to take in what it posted."""
    link = rig.sup.fleet_link
    assert link is not None
    rig.clock.advance(seconds)
    rig.sup._heartbeat(rig.clock())  # the record the round writes is the loop's latest
    link.round()
    rig.step()


def reload_behind_another_member(rig: Rig, store: FakeFleetStore) -> str:
    """m2 holds the rolling slot (an update); m1 gets a SIGHUP whose settings change its
    container's spec (MY_REG_STOP_TIMEOUT=25), so its restart must wait. m2's slot token."""
    other = store.take_slot("m2", "update", 15.0)
    assert other is not None
    rig.write_env(MY_REG_STOP_TIMEOUT="25")
    rig.put(signal.SIGHUP)
    rig.step()
    return other


def read_only(rig: Rig) -> bool:
    """Whether the registry answering at the port runs in read-only maintenance mode."""
    return any(e.startswith(READONLY_VARIABLE + "=") for e in rig.engine.serving_env(PORT))


def hold_read_only(rig: Rig, store: FakeFleetStore, lease: GcLease) -> None:
    """From a lease seen to the read-only registry confirmed in the member's record."""
    round_(rig)  # the lease is seen, the slot asked for
    round_(rig)  # the slot is taken: drain, then the read-only twin
    for _ in range(40):
        record = store.record("m1")
        if record is not None and record.confirmed == lease.token:
            return
        round_(rig, 0.5)
    raise AssertionError(f"not confirmed: {store.record('m1')}, phases {rig.phases}")
