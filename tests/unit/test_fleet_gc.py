"""The fleet gc's protocol (supervisor/ops/fleet_gc.py) against a fake engine and an
in-memory FleetStore, on a fake clock: who must confirm, when the collector may start,
and what kills it. Each ``sleep`` of the gc is a moment where the fleet acts (members
confirm, the collector ends, Redis fails), as a script the test writes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from support.fake_engine import FakeEngine
from support.fake_fleet import FakeFleetStore
from support.fakes import FakeClock

from supervisor.errors import EngineUnavailable, MaintenanceFailed
from supervisor.fleet import MEMBER_TTL_S, BlobCache, MemberRecord
from supervisor.ops.fleet_gc import UNCONFIRMED_GRACE_S, FleetGarbageCollection
from supervisor.settings import load_settings

COLLECTOR = "my_registry-gc"
SUMMARY = "3 blobs marked, 2 blobs and 1 manifests eligible for deletion\n"


def record(name: str, confirmed: str | None = None, holding: str | None = None) -> MemberRecord:
    return MemberRecord(
        name=name,
        phase="healthy",
        ready=True,
        registry_version="2.8.2",
        spec_hash="0" * 16,
        last_health="ok",
        storage="s",
        http_secret="h",
        read_only_for=confirmed or holding,
        confirmed=confirmed,
        pid=1,
        updated="now",
    )


class Fleet:
    """Members m1..m3 heartbeating into ``store``; ``script`` runs at every gc sleep."""

    def __init__(self, clock: FakeClock, store: FakeFleetStore, engine: FakeEngine) -> None:
        self.clock, self.store, self.engine = clock, store, engine
        self.members = ["m1", "m2", "m3"]
        self.confirming: set[str] = set()  # members that confirm whatever lease is in force
        self.holding: set[str] = set()  # members that hold for it, not confirmed (yet)
        self.script: list[Callable[[], None]] = []
        self.sleeps = 0
        self.beat()
        clock.advance(MEMBER_TTL_S + 1)  # the epoch is old enough
        self.beat()

    def beat(self) -> None:
        lease = self.store.lease() if not self.store.down else None
        for name in self.members:
            token = lease.token if lease and name in self.confirming else None
            held = lease.token if lease and name in self.holding else None
            if not self.store.down:
                self.store.heartbeat(record(name, token, held))

    def sleep(self, seconds: float) -> None:
        self.sleeps += 1
        self.clock.advance(seconds)
        if self.script:
            self.script.pop(0)()
        self.beat()

    def collector_running(self) -> bool:
        observed = self.engine.container(COLLECTOR)
        return observed is not None and observed.running


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Fleet, Callable[..., FleetGarbageCollection]]:
    clock = FakeClock()
    engine = FakeEngine(clock)
    store = FakeFleetStore(clock)
    fleet = Fleet(clock, store, engine)
    env = tmp_path / "env"
    env.write_text(
        f"MY_REG_DIR={tmp_path / 'data'}\nMY_REG_STATE_DIR={tmp_path / 'state'}\n"
        "MY_REG_FLEET_REDIS=redis://fake:6379/0\nMY_REG_FLEET_MEMBER=m1\n"
        "REGISTRY_STORAGE=s3\nREGISTRY_STORAGE_S3_BUCKET=b\nREGISTRY_STORAGE_S3_REGION=r\n"
        "REGISTRY_STORAGE_CACHE_BLOBDESCRIPTOR=redis\nREGISTRY_REDIS_ADDR=cache:6379\n"
    )
    settings = load_settings(env)

    def make(**kwargs: float) -> FleetGarbageCollection:
        gc = FleetGarbageCollection(
            settings,
            engine,  # type: ignore[arg-type]
            store,  # type: ignore[arg-type]
            delete_untagged=False,
            clock=clock,
            sleep=fleet.sleep,
            **kwargs,  # type: ignore[arg-type]
        )
        gc.clear_cache = lambda cache: fleet.cleared.append((cache, list(store.calls))) or 7  # type: ignore[func-returns-value]
        return gc

    fleet.cleared = []  # type: ignore[attr-defined]
    return fleet, make


def test_the_collector_starts_only_once_every_member_confirms(setup) -> None:
    fleet, make = setup
    gc = make(confirm_timeout_s=60, collect_timeout_s=300)
    fleet.script = [
        lambda: fleet.confirming.add("m1"),
        lambda: fleet.confirming.add("m2"),
        lambda: None,
        lambda: fleet.confirming.add("m3"),
    ]
    started: list[int] = []

    def at_start() -> None:
        started.append(fleet.sleeps)
        fleet.engine.end_once(COLLECTOR, 0, SUMMARY)

    fleet.script += [at_start] * 5
    result = gc.run()
    assert result.outcome == "ok" and (result.blobs_eligible, result.manifests_eligible) == (2, 1)
    assert started and started[0] >= 4  # not before m3 confirmed
    config = next(iter(fleet.engine.once_configs.values()))
    assert config["entrypoint"][:3] == ["timeout", "-s", "KILL"]
    assert int(config["entrypoint"][3]) < 60 + 300 + 10  # ends before the lease does
    assert config["host_config"]["init"] is True
    assert fleet.store.lease() is None and fleet.store.released(result.lease)
    assert fleet.engine.container(COLLECTOR) is None  # removed afterwards


def test_a_member_that_does_not_confirm_aborts_before_anything_is_collected(setup) -> None:
    fleet, make = setup
    fleet.confirming |= {"m1", "m2"}
    gc = make(confirm_timeout_s=10, collect_timeout_s=300)
    with pytest.raises(MaintenanceFailed, match=r"m3 did not confirm read-only within 10 s"):
        gc.run()
    assert [] == fleet.engine.calls_to("start_once")
    assert fleet.store.lease() is None  # released: everyone goes back to normal
    assert any(c == "release" for c in fleet.store.calls)


def test_a_silent_member_refuses_the_gc_and_names_it(setup) -> None:
    fleet, make = setup
    fleet.members = ["m1", "m2"]  # m3 stops heartbeating
    fleet.clock.advance(MEMBER_TTL_S + 1)
    fleet.beat()
    with pytest.raises(MaintenanceFailed, match=r"m3 not heartbeating.*forget-member m3"):
        make().run()
    assert fleet.store.lease() is None and "take_lease" not in fleet.store.calls


def test_a_redis_that_just_lost_its_data_refuses_the_gc(setup) -> None:
    fleet, make = setup
    fleet.store.lose_data()
    fleet.beat()  # members re-register at once, but others may not have yet
    with pytest.raises(MaintenanceFailed, match="less than 5 s"):
        make().run()


def test_a_second_gc_is_refused_while_the_lease_is_held(setup) -> None:
    fleet, make = setup
    assert fleet.store.take_lease("m2", 600, "earlier") is not None
    with pytest.raises(MaintenanceFailed, match=r"another fleet gc holds the lease \(m2's"):
        make().run()


def test_a_lost_lease_kills_the_collector_at_once(setup) -> None:
    """Redis restarted without its data mid-collection: members still hold read-only on
    their own clocks, but a new member could join writable: the collector goes."""
    fleet, make = setup
    fleet.confirming |= set(fleet.members)
    gc = make(confirm_timeout_s=60, collect_timeout_s=300)
    running: list[bool] = []

    def lose() -> None:
        running.append(fleet.collector_running())
        fleet.store.lose_data()

    fleet.script = [lambda: None, lose]
    with pytest.raises(MaintenanceFailed, match="collector killed: the lease was lost"):
        gc.run()
    assert running == [True]
    assert fleet.engine.container(COLLECTOR) is None
    assert [] == fleet.cleared  # type: ignore[attr-defined]


def test_a_member_that_stops_confirming_kills_the_collector_after_a_grace(setup) -> None:
    fleet, make = setup
    fleet.confirming |= set(fleet.members)
    gc = make(confirm_timeout_s=60, collect_timeout_s=300)

    def unconfirm() -> None:
        # still holding (a supervisor restarted mid-gc, or another process under the
        # maintenance lock): it confirms again once its registry refuses an upload
        fleet.confirming.discard("m2")
        fleet.holding.add("m2")

    fleet.script = [lambda: None, unconfirm]
    with pytest.raises(MaintenanceFailed, match="m2 no longer confirm"):
        gc.run()
    assert fleet.engine.container(COLLECTOR) is None
    # Not at the first unconfirmed look: a restarted member confirms again within the grace.
    assert fleet.sleeps * 0.5 > UNCONFIRMED_GRACE_S


def test_redis_silent_too_long_kills_the_collector(setup) -> None:
    fleet, make = setup
    fleet.confirming |= set(fleet.members)
    gc = make(confirm_timeout_s=60, collect_timeout_s=300)

    def down() -> None:
        fleet.store.down = True

    fleet.script = [lambda: None, down]
    with pytest.raises(MaintenanceFailed, match="Redis has not answered for 5 s"):
        gc.run()
    assert fleet.engine.container(COLLECTOR) is None


def test_the_blob_cache_is_cleared_before_the_lease_is_released(setup) -> None:
    fleet, make = setup
    fleet.confirming |= set(fleet.members)
    gc = make(confirm_timeout_s=60, collect_timeout_s=300)
    fleet.script = [lambda: None, lambda: fleet.engine.end_once(COLLECTOR, 0, SUMMARY)]
    gc.run()
    [(cache, calls_before)] = fleet.cleared  # type: ignore[attr-defined]
    assert cache == BlobCache("cache:6379", None, 0, False)
    assert "release" not in calls_before  # members were still read-only


def test_a_collector_that_fails_is_reported_and_the_lease_released(setup) -> None:
    fleet, make = setup
    fleet.confirming |= set(fleet.members)
    gc = make(confirm_timeout_s=60, collect_timeout_s=300)
    fleet.script = [lambda: None, lambda: fleet.engine.end_once(COLLECTOR, 1, "s3: denied\n")]
    with pytest.raises(MaintenanceFailed, match="the collector exited 1: s3: denied"):
        gc.run()
    assert fleet.store.lease() is None


def test_the_collector_bound_follows_our_clock_not_only_redis_ttl(setup) -> None:
    """Redis expires keys by its host's wall clock: stepped back 10 minutes, its PTTL
    says the lease has 10 minutes more than members hold for (from when they saw it, on
    their boot-time clocks). The collector's `timeout` must still end before they do."""
    fleet, make = setup
    fleet.confirming |= set(fleet.members)
    gc = make(confirm_timeout_s=60, collect_timeout_s=300)
    real = fleet.store.lease_remaining_s
    fleet.store.lease_remaining_s = lambda lease: (  # type: ignore[method-assign]
        None if (left := real(lease)) is None else left + 600.0
    )
    began = fleet.clock()
    fleet.script = [lambda: None] * 3 + [lambda: fleet.engine.end_once(COLLECTOR, 0, SUMMARY)]
    gc.run()
    config = next(iter(fleet.engine.once_configs.values()))
    hold_s = 60 + 300 + 10
    assert int(config["entrypoint"][3]) <= hold_s - 5  # not 600 s past the members' holds
    assert fleet.clock() - began < hold_s


def test_an_engine_that_stops_answering_mid_collection_does_not_release_the_lease(setup) -> None:
    """Second review. The engine stops answering while the collector runs (dockerd
    restarting with live-restore, a hung socket): `gc` can neither watch nor kill its
    collector, which goes on running until its own `timeout`. Releasing the lease then
    sends every member back to normal, writable, beside a running collector: the lease
    must be left to end by itself (members hold until their own time is up)."""
    fleet, make = setup
    fleet.confirming |= set(fleet.members)
    gc = make(confirm_timeout_s=60, collect_timeout_s=300)
    seen: list[str] = []

    def engine_down() -> None:
        lease = fleet.store.lease()
        assert lease is not None
        seen.append(lease.token)
        fleet.engine.go_down()  # live restore: the collector keeps running

    fleet.script = [lambda: None, engine_down]
    with pytest.raises((MaintenanceFailed, EngineUnavailable)):
        gc.run()
    fleet.engine.come_back()
    assert fleet.collector_running()  # nobody could kill it
    assert not fleet.store.released(seen[0]), "released while its collector still runs"
    lease = fleet.store.lease()
    assert lease is not None and lease.token == seen[0]


def test_a_writable_member_joining_mid_collection_kills_the_collector_at_once(setup) -> None:
    """Second review. A member that joins the fleet while the collector runs (a new host,
    or one whose Redis was unreachable at its first start) is writable and says nothing
    of the lease in its first heartbeats; its `/ready` turns 200 once that heartbeat
    lands. The 5 s grace is for a member restarted mid-gc, which resumes its hold (its
    record names the lease in `read_only_for`): one that does not hold at all must stop
    the collector at the first look."""
    fleet, make = setup
    fleet.confirming |= set(fleet.members)
    gc = make(confirm_timeout_s=60, collect_timeout_s=300)
    looks: list[int] = []

    def m4_joins() -> None:
        fleet.members.append("m4")  # writable: heartbeats with neither hold nor confirmation
        looks.append(fleet.sleeps)

    fleet.script = [lambda: None, m4_joins]
    with pytest.raises(MaintenanceFailed, match="m4"):
        gc.run()
    assert fleet.engine.container(COLLECTOR) is None
    assert fleet.sleeps - looks[0] <= 1, f"collector ran {fleet.sleeps - looks[0]} looks beside m4"
