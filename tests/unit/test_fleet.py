"""supervisor/fleet.py: the fleet's pure decisions (holds, confirmations, fingerprints)."""

from __future__ import annotations

import pytest

from supervisor.fleet import (
    COLLECTOR_MARGIN_S,
    BlobCache,
    GcLease,
    Hold,
    Member,
    MemberRecord,
    blob_cache,
    collector_seconds,
    differing,
    hold_ended,
    hold_for,
    silent,
    unconfirmed,
)

LEASE = GcLease("t1", "m2", 100.0, "now")


def record(name: str, confirmed: str | None = None, storage: str = "s") -> MemberRecord:
    return MemberRecord(
        name, "healthy", True, "2.8", "h", "ok", storage, "x", None, confirmed, 1, ""
    )


def test_a_hold_lasts_the_lease_length_from_when_it_was_seen() -> None:
    hold = hold_for(LEASE, 50.0, "b", 1_000.0)
    assert (hold.until, hold.floor, hold.until_wall, hold.hold_s) == (150.0, 0.0, 1_100.0, 100.0)
    assert hold_ended(hold, set(), 149.9, "b") is None
    assert hold_ended(hold, set(), 150.0, "b") == "expired"
    assert hold_ended(hold, {"t1"}, 60.0, "b") == "released"
    assert hold_ended(hold, {"other"}, 60.0, "b") is None


def test_a_hold_taken_over_by_a_new_lease_is_never_cut_short() -> None:
    """gc 1's `gc` died and Redis lost its lease: gc 2's release must not end what gc 1's
    collector may still need."""
    first = hold_for(GcLease("t1", "m2", 3_600.0, "now"), 0.0, "b", 0.0)
    second = hold_for(GcLease("t2", "m3", 60.0, "now"), 100.0, "b", 100.0, first)
    assert (second.floor, second.until) == (3_600.0, 3_600.0)
    assert hold_ended(second, {"t2"}, 200.0, "b") is None  # released, but before the floor
    assert hold_ended(second, {"t2"}, 3_600.0, "b") == "expired"
    third = hold_for(GcLease("t3", "m3", 60.0, "now"), 4_000.0, "b", 4_000.0, second)
    assert third.floor == 3_600.0 and third.until == 4_060.0  # an old floor long past
    assert hold_ended(third, {"t3"}, 4_001.0, "b") == "released"


def test_a_previous_hold_of_another_boot_sets_no_floor() -> None:
    first = hold_for(LEASE, 0.0, "boot-1", 0.0)
    assert hold_for(LEASE, 5.0, "boot-2", 5.0, first).floor == 0.0


def test_across_a_reboot_a_hold_ends_by_release_or_a_lease_length_past_its_wall_end() -> None:
    hold = hold_for(LEASE, 50.0, "boot-1", 1_000.0)  # until_wall 1_100
    assert hold_ended(hold, set(), 0.0, "boot-2", 1_150.0) is None  # the boot clock says nothing
    assert hold_ended(hold, set(), 0.0, "boot-2", 1_200.0) == "expired"
    assert hold_ended(hold, {"t1"}, 0.0, "boot-2", 1_000.0) == "released"
    over = Hold("t2", 10.0, "boot-1", floor=5.0, until_wall=None, hold_s=0.0)
    assert hold_ended(over, {"t2"}, 0.0, "boot-2", 1e12) is None  # no wall end: held
    assert hold_ended(Hold("t", 1.0, None), set(), 1e9, None, 1e12) is None


def test_confirmations_silence_and_differences() -> None:
    members = [
        Member("m1", True, record("m1", "t1")),
        Member("m2", True, record("m2", None, storage="other")),
        Member("m3", False, record("m3", "t1")),
    ]
    assert unconfirmed(members, LEASE) == ["m2", "m3"]  # a silent member never confirms
    assert silent(members) == ["m3"]
    assert differing(members, "storage") == {"s": ["m1"], "other": ["m2"]}
    assert differing(members[:1], "storage") == {}


def test_the_collector_bound_leaves_the_margin() -> None:
    assert collector_seconds(100.9) == int(100.9 - COLLECTOR_MARGIN_S)
    assert collector_seconds(2.0) == 1


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        ({"REGISTRY_REDIS_ADDR": "r:6379"}, None),  # a Redis, but not the blob cache
        (
            {"REGISTRY_STORAGE_CACHE_BLOBDESCRIPTOR": "redis", "REGISTRY_REDIS_ADDR": "r:6379"},
            BlobCache("r:6379", None, 0, False),
        ),
        (
            {
                "registry_storage_cache_blobdescriptor": "Redis",
                "REGISTRY_REDIS_ADDRS": "[r1:6379, r2:6379]",
                "REGISTRY_REDIS_DB": "2",
                "REGISTRY_REDIS_PASSWORD": "pw",
                "REGISTRY_REDIS_TLS_ENABLED": "true",
            },
            BlobCache("r1:6379", "pw", 2, True),
        ),
        ({"REGISTRY_STORAGE_CACHE_BLOBDESCRIPTOR": "redis"}, None),
    ],
)
def test_the_shared_blob_cache_is_read_from_the_registry_settings(
    env: dict[str, str], expected: BlobCache | None
) -> None:
    assert blob_cache(env) == expected


@pytest.mark.parametrize("text", [None, "", "{", "[]", '{"name": "x"}', "null"])
def test_a_record_that_is_not_one_is_none(text: str | None) -> None:
    assert MemberRecord.from_json(text) is None
    assert GcLease.from_json(text) is None


def test_a_record_round_trips_and_ignores_unknown_fields() -> None:
    body = record("m1", "t1").to_json()
    assert MemberRecord.from_json(body) == record("m1", "t1")
    assert MemberRecord.from_json(body[:-1] + ', "new_field": 1}') == record("m1", "t1")
