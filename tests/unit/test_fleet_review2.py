"""Fleet mode: interleavings found in a second hostile review (one member's loop, tick by
tick, against a fake engine and an in-memory FleetStore, as tests/unit/test_fleet_redteam.py).
"""

from __future__ import annotations

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

from supervisor.fleet import GcLease, hold_ended, hold_for


def test_the_slot_is_kept_through_a_switch_granted_for_a_reload_the_lease_overtook(
    rig: Rig, store: FakeFleetStore
) -> None:
    """A reload waits for the slot. In one round of the fleet link a gc lease appears
    (posted first) and the slot comes free (taken for the reload, posted second). The
    loop takes up the lease (the slot is wanted for read-only now), then the grant: the
    read-only switch starts, drain and all. Next round the link, granted for `reload`
    and now wanted for `read-only`, posts a grant again; the loop wants nothing more and
    must not give the slot back while its own restart is under way (another member
    would drain at the same time)."""
    start(rig)
    other = reload_behind_another_member(rig, store)
    round_(rig, 1.0)  # the reload waits for the slot
    store.release_slot(other)
    lease = store.take_lease("m3", 600.0, "now")
    assert lease is not None
    round_(rig, 1.0)  # one round: the lease seen, then the slot taken for the reload
    assert rig.sup.phase.value == "restarting"  # the switch drains
    round_(rig, 0.5)
    round_(rig, 0.5)
    holder = store.slot_holder()
    assert rig.sup.phase.value == "restarting"
    assert holder is not None and holder.startswith("m1:"), (
        f"slot given back mid-drain (holder {holder}): another member may drain too"
    )
    rig.step(DRAIN_S)
    hold_read_only(rig, store, lease)
    assert read_only(rig)


def test_a_hold_taken_over_after_a_released_one_keeps_only_the_unreleased_floor() -> None:
    """Lease A (its gc killed, then lost with Redis's data) is held until 600. Lease B,
    seen at 100, takes it over (floor 600, until 100 + 3700). B is released at 200:
    deferred to 600. Lease C, a third gc, is seen at 300: B's collector is gone (its
    release was seen), only A's may still run. C, released at 400, must end the hold at
    A's 600, not at B's 3800 (an hour more of refused pushes for a collector that ended)."""
    a = GcLease("a", "m2", 600.0, "t")
    b = GcLease("b", "m2", 3700.0, "t")
    c = GcLease("c", "m3", 900.0, "t")
    hold_a = hold_for(a, 0.0, "boot", 0.0)
    hold_b = hold_for(b, 100.0, "boot", 100.0, hold_a)
    assert (hold_b.floor, hold_b.until) == (600.0, 3800.0)
    assert hold_ended(hold_b, {"b"}, 200.0, "boot") is None  # deferred: A's may run
    hold_c = hold_for(c, 300.0, "boot", 300.0, hold_b, previous_released=True)
    assert hold_ended(hold_c, {"b", "c"}, 601.0, "boot") == "released"
    # Not released, B's hold counts whole: its collector may still run.
    unreleased = hold_for(c, 300.0, "boot", 300.0, hold_b)
    assert hold_ended(unreleased, {"b", "c"}, 601.0, "boot") is None
