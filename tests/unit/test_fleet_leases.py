"""A fleet member's gc holds at tick level (tests/support/rig.py with the in-memory
FleetStore): the fleet link's rounds are driven by hand, no thread."""

from __future__ import annotations

import pytest
from support.fake_fleet import FakeFleetStore
from support.rig import Rig

from supervisor.fleet import Hold
from supervisor.loop.fleet import FleetLink
from supervisor.ops.update import refusal_while_held
from supervisor.spec import READONLY_VARIABLE


@pytest.fixture
def member(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> Rig:
    """The conftest's rig (it ends the event watcher) as fleet member "a"."""
    monkeypatch.setattr(FleetLink, "start", lambda self: None)  # rounds by hand
    store = FakeFleetStore(rig.clock)
    rig.store = store  # type: ignore[attr-defined]
    rig._supervisor_kwargs["fleet_store_factory"] = lambda _url, _name: store
    rig.write_env(
        MY_REG_FLEET_REDIS="redis://127.0.0.1:6399/0",
        MY_REG_FLEET_MEMBER="a",
        MY_REG_FLEET_NAME="f",
        MY_REG_FLEET_SHARED_DIR="true",
        MY_REG_READY_DRAIN="0",
    )
    return rig  # started by the test: structlog prints to the stderr of its own phase


def _round(rig: Rig, steps: int = 3) -> None:
    """One heartbeat round of the link, then a few turns of the loop."""
    assert rig.sup.fleet_link is not None
    rig.sup.fleet_link.round()
    for _ in range(steps):
        rig.step(0.5)


def _read_only(rig: Rig) -> bool:
    env = rig.engine.serving_env(rig.sup.settings.port)
    return any(e.startswith(READONLY_VARIABLE + "=") for e in env)


def _until_confirmed(rig: Rig, token: str) -> None:
    flow = rig.sup.reconciler.fleet
    assert flow is not None
    for _ in range(30):
        _round(rig)
        if flow.confirmed == token:
            return
    raise AssertionError(f"not confirmed for {token}: {rig.new_event_names()}")


def test_a_new_lease_while_waiting_to_go_back_to_normal_keeps_the_member_read_only(
    member: Rig,
):
    """A gc's lease released, the member waits for the rolling slot to go back to normal
    (another member holds it), and the next gc's lease comes first: it confirms read-only
    for the new lease at once, so it must not go writable when the slot comes after."""
    member.start_healthy()
    store: FakeFleetStore = member.store  # type: ignore[attr-defined]
    flow = member.sup.reconciler.fleet
    assert flow is not None
    first = store.take_lease("b", 120.0, "now")
    assert first is not None
    _until_confirmed(member, first.token)
    assert _read_only(member)
    _round(member)  # the slot is given back

    store.release(first)
    _round(member)  # the release seen: back to normal wanted, the slot free...
    other = store.take_slot("b", "normal", 15.0)  # ...but another member takes it first
    assert other is not None
    _round(member)
    second = store.take_lease("b", 120.0, "now")
    assert second is not None
    _until_confirmed(member, second.token)

    store.release_slot(other)
    for _ in range(5):
        _round(member)

    assert _read_only(member), "writable while it confirms read-only for the next gc"
    assert flow.confirmed == second.token and flow.read_only


def test_update_refuses_a_member_a_gc_holds_read_only() -> None:
    """Its new registry would be writable under the collector: refused, naming the lease."""
    assert refusal_while_held(None) is None
    refused = refusal_while_held(Hold("abc123", 100.0, "boot"))
    assert refused is not None and "abc123" in refused and "read-only" in refused
