"""The maintenance file `gc` holds, and gc's pure parts: specs, commands, its summary."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from supervisor import maintenance
from supervisor.gc import (
    READONLY_VARIABLE,
    blobs_bytes,
    collector_command,
    collector_config,
    eligible_blobs,
    parse_summary,
    readonly_spec,
)
from supervisor.settings import load_settings
from supervisor.spec import derive_spec


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_acquire_then_read_then_release(tmp_path: Path) -> None:
    """The holder is seen while the file exists, and not after release."""
    path = tmp_path / "maintenance-x"
    mine = maintenance.acquire(path, "garbage collection")
    assert mine == maintenance.read(path)
    maintenance.release(path, mine)
    assert (None, False) == (maintenance.read(path), path.exists())


def test_a_live_holder_keeps_others_out(tmp_path: Path) -> None:
    """A second acquire while the holder lives fails naming it."""
    path = tmp_path / "maintenance-x"
    maintenance.acquire(path, "garbage collection")
    with pytest.raises(maintenance.MaintenanceBusy, match=f"pid {os.getpid()}"):
        maintenance.acquire(path, "garbage collection")


def test_a_dead_holder_is_stale_and_replaced(tmp_path: Path) -> None:
    """A file left by a process that died counts as absent and is taken over."""
    path = tmp_path / "maintenance-x"
    path.write_text(json.dumps({"task": "gc", "pid": dead_pid(), "started": time.time()}))
    assert maintenance.read(path) is None
    assert os.getpid() == maintenance.acquire(path, "garbage collection").pid


def test_an_old_file_is_stale_even_if_its_pid_lives() -> None:
    """Past MAX_AGE_S the file no longer silences the supervisor (pid reuse)."""
    holder = maintenance.Maintenance("gc", 1, started=0.0)
    assert maintenance.is_fresh(holder, maintenance.MAX_AGE_S - 1, holder_alive=True)
    assert not maintenance.is_fresh(holder, maintenance.MAX_AGE_S + 1, holder_alive=True)


def test_readonly_spec_adds_the_maintenance_variable_and_changes_the_hash() -> None:
    """The read-only container differs only by REGISTRY_STORAGE_MAINTENANCE_READONLY."""
    spec = derive_spec(load_settings(None))
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
    assert expected == collector_command(dry_run=dry_run, delete_untagged=untagged)


def test_collector_shares_mounts_and_env_but_publishes_nothing() -> None:
    """The one-shot collector: same data mount and env, no port, /bin/registry, -gc name."""
    spec = derive_spec(load_settings(None))
    config = collector_config(spec, ["garbage-collect", "/etc/docker/registry/config.yml"])
    assert "ports" not in config
    assert "port_bindings" not in config["host_config"]
    assert [("/var/lib/my_registry", "/var/lib/registry", False)] == [
        (m["Source"], m["Target"], m["ReadOnly"]) for m in config["host_config"]["mounts"]
    ]
    assert (["/bin/registry"], "my_registry-gc") == (config["entrypoint"], config["name"])
    assert dict(spec.environment) == config["environment"]
    assert "registry-supervisor.spec-hash" not in config["labels"]
    dry_run = collector_config(spec, ["garbage-collect", "--dry-run", "/x.yml"])
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
