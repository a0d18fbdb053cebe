"""The fleet's Redis adapter (supervisor/adapters/fleet_store.py) against a real
redis-server of the test's own: the compare-and-delete and compare-and-expire scripts,
expiry, the roster, and the blob cache clear. No Docker engine needed.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from support.fleet import RedisServer

from supervisor.adapters.fleet_store import FleetStore, clear_blob_cache
from supervisor.errors import FleetUnavailable
from supervisor.fleet import BlobCache, MemberRecord

pytestmark = pytest.mark.integration


def record(name: str) -> MemberRecord:
    return MemberRecord(
        name, "healthy", True, "2.8.2", "0" * 16, "ok", "s", "h", None, None, 1, "t"
    )


def test_the_lease_is_one_at_a_time_and_only_its_holder_releases_it(tmp_path: Path) -> None:
    with RedisServer(tmp_path / "redis") as server:
        store = FleetStore(server.url, "t")
        first = store.take_lease("m1", 0.5, "now")
        assert first is not None
        assert store.take_lease("m2", 60, "now") is None
        remaining = store.lease_remaining_s(first)
        assert remaining is not None and 0 < remaining <= 0.5
        time.sleep(0.6)  # fixed length, never renewed: it expires by itself
        assert store.lease() is None and store.lease_remaining_s(first) is None
        second = store.take_lease("m2", 60, "now")
        assert second is not None
        store.release(first)  # a late release of the old lease leaves the new one alone
        assert store.lease() == second and store.released(first.token)
        store.release(second)
        assert store.lease() is None and store.released(second.token)
        store.close()


def test_the_slot_is_renewed_only_by_its_holder_and_lost_by_expiry(tmp_path: Path) -> None:
    with RedisServer(tmp_path / "redis") as server:
        store = FleetStore(server.url, "t")
        token = store.take_slot("m1", "update", 0.5)
        assert token is not None and token.startswith("m1:update:")
        assert store.take_slot("m2", "reload", 15) is None
        assert store.renew_slot(token, 0.5)
        assert not store.renew_slot("m2:reload:x", 15)
        time.sleep(0.6)
        assert not store.renew_slot(token, 15) and store.slot_holder() is None
        other = store.take_slot("m2", "reload", 15)
        store.release_slot(token)  # not ours any more: nothing happens
        assert store.slot_holder() == other
        store.close()


def test_members_roster_and_epoch_and_one_shared_secret(tmp_path: Path) -> None:
    with RedisServer(tmp_path / "redis") as server:
        store = FleetStore(server.url, "t")
        store.heartbeat(record("m1"))
        store.heartbeat(record("m2"))
        with server.client() as client:
            client.delete("registry-supervisor:t:member:m2")  # as its expiry would
        members = store.members()
        assert [(m.name, m.alive) for m in members] == [("m1", True), ("m2", False)]
        assert members[1].record == record("m2")  # the roster keeps the last heartbeat
        age = store.epoch_age_s()
        assert age is not None and age < 5
        assert store.forget("m2") and not store.forget("m2")
        assert store.shared_secret("a") == "a" and store.shared_secret("b") == "a"
        assert FleetStore(server.url, "other").shared_secret("c") == "c"  # fleets apart
        store.close()


def test_a_redis_that_does_not_answer_is_fleet_unavailable_in_one_phrase(tmp_path: Path) -> None:
    with RedisServer(tmp_path / "redis") as server:
        url = server.url.replace("redis://", "redis://:hunter2@")
    store = FleetStore(url, "t", timeout=0.3)
    with pytest.raises(FleetUnavailable) as raised:
        store.heartbeat(record("m1"))
    assert "hunter2" not in str(raised.value) and "\n" not in str(raised.value)
    store.close()


def test_clearing_the_blob_cache_deletes_only_its_keys(tmp_path: Path) -> None:
    with RedisServer(tmp_path / "redis") as server:
        with server.client() as client:
            client.set("blobs::sha256:" + "a" * 64, "x")
            client.set("repository::library/x::blobs::sha256:" + "a" * 64, "x")
            client.sadd("repository::library/x::blobs", "sha256:" + "a" * 64)
            client.set("registry-supervisor:t:member:m1", "kept")
            client.set("session:abc", "kept")
        deleted = clear_blob_cache(BlobCache(f"127.0.0.1:{server.port}", None, 0, False))
        assert deleted == 3
        with server.client() as client:
            assert sorted(client.keys("*")) == [b"registry-supervisor:t:member:m1", b"session:abc"]


def test_check_says_who_is_in_the_fleet_and_warns_of_other_storage(
    tmp_path: Path, deployment
) -> None:
    """`check` in fleet mode reads the fleet (never writes): members seen, and a warning
    when another member's storage fingerprint differs from this one's."""
    with RedisServer(tmp_path / "redis") as server:
        store = FleetStore(server.url, "registry")
        store.shared_secret("fleet-secret")
        store.heartbeat(record("m2"))  # storage fingerprint "s": not this member's
        deployment.write_env(
            REGISTRY_HTTP_SECRET=None,
            MY_REG_FLEET_REDIS=server.url,
            MY_REG_FLEET_MEMBER="m1",
            MY_REG_FLEET_SHARED_DIR="true",
        )
        done = deployment.cli("check", "--env-file", str(deployment.env_file))
        assert done.returncode == 0, done.stderr
        assert "# fleet registry: Redis answers; this member m1; others: m2 (alive)" in done.stdout
        assert "storage settings differ from m2's" in done.stdout
        assert "m2 run with another HTTP secret" in done.stdout
        assert [m.name for m in store.members()] == ["m2"]  # check registered nothing
        store.close()
    done = deployment.cli("check", "--env-file", str(deployment.env_file))
    assert done.returncode == 0, done.stderr
    assert "# WARNING: fleet: redis at" in done.stdout


def test_a_fleet_member_on_this_hosts_own_disk_is_refused(deployment) -> None:
    deployment.write_env(MY_REG_FLEET_REDIS="redis://127.0.0.1:1/0")
    for command in ("check", "run"):
        done = deployment.cli(command, "--env-file", str(deployment.env_file), timeout=20)
        assert done.returncode == 78, (command, done.stderr)
        assert "MY_REG_FLEET_REDIS is set (fleet mode), but the registry stores on this host" in (
            done.stderr
        )
        assert "Traceback" not in done.stderr and 1 == len(done.stderr.splitlines())
    assert deployment.client.containers.list(all=True, filters={"name": deployment.name}) == []
