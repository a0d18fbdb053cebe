"""The maintenance file `gc` holds, and gc's pure parts: specs, commands, its summary."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from supervisor.layout import V2_LAYOUT
from supervisor.observed import ContainerState, observe
from supervisor.ops.gc import (
    READONLY_VARIABLE,
    blobs_bytes,
    collector_command,
    collector_config,
    eligible_blobs,
    nothing_stored,
    parse_summary,
    readonly_spec,
)
from supervisor.settings import load_settings
from supervisor.spec import derive_spec
from supervisor.statedir import maintenance

COLLECTOR = "my_registry-gc"


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


class CollectorAnswers:
    """What the engine says about the collector container, with the names asked about."""

    def __init__(self, running: bool) -> None:
        self.running = running
        self.asked: list[str] = []

    def __call__(self, name: str) -> bool:
        self.asked.append(name)
        return self.running


def acquire(
    path: Path, collector_running: Callable[[str], bool] | None = None
) -> maintenance.Maintenance:
    return maintenance.acquire(
        path, "garbage collection", COLLECTOR, collector_running or CollectorAnswers(False)
    )


def my_lock(**changes: Any) -> maintenance.Maintenance:
    """A lock naming this very process, as acquire writes it."""
    stat = maintenance.read_stat(os.getpid())
    assert stat is not None
    lock = maintenance.Maintenance(
        task="garbage collection",
        pid=os.getpid(),
        started=time.time(),
        start_ticks=stat.start_ticks,
        boot_id=maintenance.boot_id(),
        collector=COLLECTOR,
    )
    return dataclasses.replace(lock, **changes)


def write_lock(path: Path, lock: maintenance.Maintenance) -> None:
    path.write_text(json.dumps(dataclasses.asdict(lock)))


def test_acquire_then_read_then_release(tmp_path: Path) -> None:
    """The file names this process by pid, start time and boot, and its collector, until
    release removes it."""
    path = tmp_path / "maintenance-x"
    mine = acquire(path)
    assert my_lock(started=mine.started) == maintenance.read(path)
    maintenance.release(path, mine)
    assert (None, False) == (maintenance.read(path), path.exists())


def test_a_live_holder_keeps_others_out(tmp_path: Path) -> None:
    """A second acquire while the holder lives fails naming it, without asking the engine."""
    path = tmp_path / "maintenance-x"
    acquire(path)
    engine = CollectorAnswers(False)
    with pytest.raises(maintenance.MaintenanceBusy, match=f"pid {os.getpid()}"):
        acquire(path, engine)
    assert [] == engine.asked


def test_a_dead_holder_whose_collector_ended_is_stale_and_replaced(tmp_path: Path) -> None:
    """A file left by a process that died, whose collector has ended, is taken over."""
    path = tmp_path / "maintenance-x"
    write_lock(path, my_lock(pid=dead_pid()))
    engine = CollectorAnswers(False)
    assert os.getpid() == acquire(path, engine).pid
    assert [COLLECTOR] == engine.asked


def test_a_dead_holder_whose_collector_runs_keeps_others_out(tmp_path: Path) -> None:
    """A gc that died while its collector sweeps still holds the lock through the collector."""
    path = tmp_path / "maintenance-x"
    dead = dead_pid()
    write_lock(path, my_lock(pid=dead))
    with pytest.raises(maintenance.MaintenanceBusy) as busy:
        acquire(path, CollectorAnswers(True))
    assert (
        f"the garbage collection of pid {dead} ended, but its collector {COLLECTOR} still "
        "runs; wait for it to end"
    ) == str(busy.value)


def test_current_holds_through_the_collector_of_a_dead_holder(tmp_path: Path) -> None:
    """current(): the lock of a dead holder holds exactly while its collector runs."""
    path = tmp_path / "maintenance-x"
    lock = my_lock(pid=dead_pid())
    write_lock(path, lock)
    assert (lock, None) == (
        maintenance.current(path, CollectorAnswers(True)),
        maintenance.current(path, CollectorAnswers(False)),
    )


def test_the_holder_lives_whatever_its_wall_clock_start_says() -> None:
    """No age limit: a lock started a year ago, or in the future, holds while its holder
    lives (a clock step, a collection longer than any limit)."""
    year = 365 * 86400.0
    assert (True, True) == (
        maintenance.holder_lives(my_lock(started=time.time() - year)),
        maintenance.holder_lives(my_lock(started=time.time() + year)),
    )


def test_a_reused_pid_is_not_the_holder() -> None:
    """The pid lives but started at another time: another process, so the holder is dead."""
    lock = my_lock()
    assert lock.start_ticks is not None
    assert maintenance.holder_lives(lock)
    assert not maintenance.holder_lives(dataclasses.replace(lock, start_ticks=lock.start_ticks - 1))


def test_a_pid_from_another_boot_is_not_the_holder() -> None:
    """Start ticks count from boot: after a reboot the same pid and ticks prove nothing."""
    stat = maintenance.ProcessStat("S", 4242)
    lock = maintenance.Maintenance("gc", 7, 0.0, start_ticks=4242, boot_id="boot-1")
    assert (True, False) == (
        maintenance.is_holder(lock, stat, exists=True, current_boot="boot-1"),
        maintenance.is_holder(lock, stat, exists=True, current_boot="boot-2"),
    )


def test_an_unreaped_holder_holds_nothing() -> None:
    """A SIGKILLed gc whose parent has not reaped it yet (a zombie) has died."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 10
    while (stat := maintenance.read_stat(child.pid)) is None or stat.state != "Z":
        assert time.monotonic() < deadline, f"pid {child.pid} did not become a zombie"
        time.sleep(0.01)
    try:
        lock = my_lock(pid=child.pid, start_ticks=stat.start_ticks)
        assert (True, False) == (maintenance.alive(child.pid), maintenance.holder_lives(lock))
    finally:
        child.wait()


def test_a_process_proc_hides_is_judged_by_its_pid_alone() -> None:
    """Under hidepid /proc shows no stat for a live pid: it counts as the holder."""
    lock = maintenance.Maintenance("gc", 7, 0.0, start_ticks=4242, boot_id="boot-1")
    assert (True, False) == (
        maintenance.is_holder(lock, None, exists=True, current_boot="boot-1"),
        maintenance.is_holder(lock, None, exists=False, current_boot="boot-1"),
    )


def test_a_file_of_an_earlier_release_holds_while_its_pid_lives(tmp_path: Path) -> None:
    """A lock without start time, boot or collector (an older gc) holds by its pid alone."""
    path = tmp_path / "maintenance-x"
    path.write_text(json.dumps({"task": "gc", "pid": os.getpid(), "started": 0.0}))
    lock = maintenance.read(path)
    assert maintenance.Maintenance("gc", os.getpid(), 0.0) == lock
    assert maintenance.holder_lives(lock)


@pytest.mark.parametrize("text", ["", "not json", "[]", '{"task": "gc"}', '{"pid": "x"}'])
def test_an_unreadable_file_is_no_lock(tmp_path: Path, text: str) -> None:
    """Whatever cannot be read as a lock counts as no lock."""
    path = tmp_path / "maintenance-x"
    path.write_text(text)
    assert maintenance.read(path) is None


def test_stat_fields_are_counted_from_the_last_parenthesis() -> None:
    """A command name with spaces and parentheses does not shift field 22."""
    fields = " ".join(str(n) for n in range(4, 53))
    line = f"4321 (gc (x) y) S {fields}\n"
    assert maintenance.ProcessStat("S", 22) == maintenance.parse_stat(line)
    assert maintenance.parse_stat("4321 (gc) S 1 2") is None


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("running", True),
        ("paused", True),
        ("restarting", True),
        ("created", False),
        ("exited", False),
        ("dead", False),
        ("removing", False),
    ],
)
def test_a_collector_holds_while_it_may_sweep(
    inspect_data: Callable[[str], dict[str, Any]], status: str, expected: bool
) -> None:
    """Running, paused or restarting: it may still delete blobs; otherwise it has ended."""
    attrs = inspect_data("inspect-running")
    attrs["State"]["Status"] = status
    observed = observe(attrs)
    assert ContainerState(status) is observed.state
    assert expected == maintenance.collector_holds(observed)


def test_a_foreign_or_absent_collector_holds_nothing(
    inspect_data: Callable[[str], dict[str, Any]],
) -> None:
    """A running container of that name we did not create, or none, is no collector."""
    attrs = inspect_data("inspect-running")
    attrs["Config"]["Labels"] = {}
    assert (False, False) == (
        maintenance.collector_holds(observe(attrs)),
        maintenance.collector_holds(None),
    )


def test_a_running_collector_is_looked_at_again_after_the_interval() -> None:
    """While the collector runs, the engine is asked again only every_s later."""
    lock = maintenance.Maintenance("gc", 7, 0.0, collector=COLLECTOR)
    seen = maintenance.CollectorSeen(lock, at=100.0, holds=True)
    assert (False, True) == (
        maintenance.collector_look_due(seen, lock, 100.9, every_s=1.0),
        maintenance.collector_look_due(seen, lock, 101.0, every_s=1.0),
    )


def test_a_stale_lock_is_not_looked_at_again() -> None:
    """Once the collector of a dead holder has ended, that file never holds again."""
    lock = maintenance.Maintenance("gc", 7, 0.0, collector=COLLECTOR)
    seen = maintenance.CollectorSeen(lock, at=100.0, holds=False)
    assert not maintenance.collector_look_due(seen, lock, 1e9, every_s=1.0)


def test_a_new_lock_is_looked_at_at_once() -> None:
    """A lock not seen before (none, or another gc's file) is looked at now."""
    old = maintenance.Maintenance("gc", 7, 0.0, collector=COLLECTOR)
    seen = maintenance.CollectorSeen(old, at=100.0, holds=False)
    new = dataclasses.replace(old, pid=8)
    assert (True, True) == (
        maintenance.collector_look_due(None, new, 100.0, every_s=1.0),
        maintenance.collector_look_due(seen, new, 100.0, every_s=1.0),
    )


def test_readonly_spec_adds_the_maintenance_variable_and_changes_the_hash() -> None:
    """The read-only container differs only by REGISTRY_STORAGE_MAINTENANCE_READONLY."""
    spec = derive_spec(load_settings(None), V2_LAYOUT)
    readonly = readonly_spec(spec)
    added = set(readonly.environment) - set(spec.environment)
    assert {(READONLY_VARIABLE, '{"enabled": true}')} == added
    assert readonly.spec_hash != spec.spec_hash
    assert (readonly.mounts, readonly.image) == (spec.mounts, spec.image)


@pytest.mark.parametrize(
    ("dry_run", "untagged", "flags"),
    [
        (False, False, []),
        (True, False, ["--dry-run"]),
        (False, True, ["--delete-untagged"]),
        (True, True, ["--dry-run", "--delete-untagged"]),
    ],
)
def test_collector_command(dry_run: bool, untagged: bool, flags: list[str]) -> None:
    """The collector reads the registry's own config.yml; flags pass through."""
    expected = ["garbage-collect", *flags, "/etc/docker/registry/config.yml"]
    assert expected == collector_command(V2_LAYOUT, dry_run=dry_run, delete_untagged=untagged)


def test_collector_shares_mounts_and_env_but_publishes_nothing() -> None:
    """The one-shot collector: same data mount and env, no port, /bin/registry, -gc name."""
    spec = derive_spec(load_settings(None), V2_LAYOUT)
    config = collector_config(
        spec, V2_LAYOUT, ["garbage-collect", "/etc/docker/registry/config.yml"]
    )
    assert "ports" not in config
    assert "port_bindings" not in config["host_config"]
    assert [("/var/lib/my_registry", "/var/lib/registry", False)] == [
        (m["Source"], m["Target"], m["ReadOnly"]) for m in config["host_config"]["mounts"]
    ]
    assert (["/bin/registry"], "my_registry-gc") == (config["entrypoint"], config["name"])
    assert spec.container_environment == config["environment"]
    assert "registry-supervisor.spec-hash" not in config["labels"]
    dry_run = collector_config(spec, V2_LAYOUT, ["garbage-collect", "--dry-run", "/x.yml"])
    assert "my_registry-gc-dry" == dry_run["name"]  # may run beside a real collection


def test_parse_summary_of_registry_2_8_output() -> None:
    """The counts come from the collector's last line."""
    output = (
        "demo/b\ndemo/b: marking manifest sha256:ab\n"
        "3 blobs marked, 3 blobs and 0 manifests eligible for deletion\n"
        "blob eligible for deletion: sha256:cd\n"
    )
    assert (3, 3, 0) == parse_summary(output)
    assert (None, None, None) == parse_summary("something else")


def test_nothing_stored_covers_a_store_with_upload_sessions_and_no_blob() -> None:
    """No repository at all (filesystem), or repositories but no blob ever committed (an
    S3 store that saw only refused or cancelled uploads): nothing to collect."""
    assert nothing_stored("Path not found: /docker/registry/v2/repositories")
    assert nothing_stored(
        "failed to garbage collect: error enumerating blobs: s3aws: Path not found: "
        "/docker/registry/v2/blobs"
    )
    assert not nothing_stored("failed to garbage collect: s3aws: AccessDenied")


def test_eligible_blobs_are_sized_from_the_data_dir(tmp_path: Path) -> None:
    """A dry run's estimate: the allocated size of each named blob's data file."""
    digest = "sha256:" + "ab" * 32
    blob = tmp_path / "docker/registry/v2/blobs/sha256/ab" / digest[7:] / "data"
    blob.parent.mkdir(parents=True)
    blob.write_bytes(b"x" * 8192)
    output = (
        f"blob eligible for deletion: {digest}\nblob eligible for deletion: sha256:{'cd' * 32}\n"
    )
    digests = eligible_blobs(output)
    assert [digest, "sha256:" + "cd" * 32] == digests
    assert blob.stat().st_blocks * 512 == blobs_bytes(tmp_path, digests)
    assert 0 == blobs_bytes(tmp_path, [])
    assert blobs_bytes(tmp_path / "elsewhere", digests) is None
