"""Exit 78 means "edit your settings" and nothing else: what may clear by itself (a full disk,
a port still taken) exits 75, which the unit restarts.

The full disks are real: small tmpfs mounts (the tests run as root), unmounted afterwards.
"""

from __future__ import annotations

import contextlib
import errno
import signal
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support.process import EX_CONFIG, EX_TEMPFAIL

pytestmark = pytest.mark.integration

PROG = "registry-supervisor"
TEMPORARY = "temporary: exit 75, systemd tries again"


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Callable[..., Path]]:
    """Mount a 16 KiB tmpfs (mode 0700) under tmp_path; every mount is undone after."""
    mounted: list[Path] = []

    def mount(name: str, *options: str) -> Path:
        point = tmp_path / name
        point.mkdir()
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", ",".join(["size=16k", "mode=0700", *options]),
             "tmpfs", str(point)],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        assert 0 == done.returncode, f"mount failed (the suite runs as root): {done.stderr}"
        mounted.append(point)
        return point

    yield mount
    for point in reversed(mounted):
        subprocess.run(["umount", "-l", str(point)], capture_output=True, timeout=30, check=False)


def fill(directory: Path) -> None:
    """Write zeros into ``directory`` until its file system says it is full."""
    with (directory / "filler").open("wb", buffering=0) as file:
        try:
            while True:
                file.write(b"\0" * 4096)
        except OSError as err:
            assert errno.ENOSPC == err.errno


def problems(stderr: str) -> list[str]:
    """The human lines of stderr (the JSON log lines left out)."""
    return [line for line in stderr.splitlines() if line.startswith(f"{PROG}: ")]


def run(deployment) -> subprocess.CompletedProcess[str]:
    return deployment.cli("run", "--env-file", str(deployment.env_file))


def test_a_full_state_dir_at_the_first_start_exits_75_naming_it(deployment, tiny_tmpfs):
    """The HTTP secret cannot be written on a full file system: exit 75 (restarted), one line
    naming MY_REG_STATE_DIR and the cause, and no container."""
    state = tiny_tmpfs("state")
    fill(state)
    deployment.write_env(REGISTRY_HTTP_SECRET=None, MY_REG_STATE_DIR=str(state))

    done = run(deployment)

    expected = (
        f"{PROG}: MY_REG_STATE_DIR='{state}': http-secret cannot be kept there now "
        f"(No space left on device: {state / 'http-secret'}); {TEMPORARY}"
    )
    assert (EX_TEMPFAIL, [expected]) == (done.returncode, done.stderr.splitlines())
    assert deployment.observe() is None


def test_a_state_dir_under_a_file_still_exits_78_naming_it(deployment):
    """MY_REG_STATE_DIR below a regular file (ENOTDIR) is for the settings to fix: exit 78."""
    blocker = deployment.root / "a-file"
    blocker.write_text("")
    state = blocker / "state"
    deployment.write_env(REGISTRY_HTTP_SECRET=None, MY_REG_STATE_DIR=str(state))

    done = run(deployment)

    expected = (
        f"{PROG}: MY_REG_STATE_DIR='{state}': expected a directory where http-secret can be "
        f"kept (Not a directory: {state})"
    )
    assert (EX_CONFIG, [expected]) == (done.returncode, done.stderr.splitlines())


def test_a_data_dir_that_cannot_be_created_on_a_full_disk_exits_75(deployment, tiny_tmpfs):
    """MY_REG_DIR on a file system with no inode left: exit 75 with one line naming it."""
    full = tiny_tmpfs("full", "nr_inodes=1")
    data = full / "data"
    deployment.write_env(MY_REG_DIR=str(data))

    done = run(deployment)

    expected = f"{PROG}: MY_REG_DIR='{data}': cannot be created now (No space left on device)"
    assert (EX_TEMPFAIL, [f"{expected}; {TEMPORARY}"]) == (
        done.returncode,
        problems(done.stderr),
    )


def test_a_metrics_port_in_use_exits_75(deployment):
    """A MY_REG_METRICS_ADDR someone still listens on (an old supervisor exiting) is
    transient: exit 75, one line naming it."""
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        address = f"127.0.0.1:{holder.getsockname()[1]}"
        deployment.write_env(MY_REG_METRICS_ADDR=address)

        done = run(deployment)

    expected = f"{PROG}: MY_REG_METRICS_ADDR='{address}': cannot listen there now"
    assert (EX_TEMPFAIL, [f"{expected} (Address already in use); {TEMPORARY}"]) == (
        done.returncode,
        problems(done.stderr),
    )


def test_a_metrics_address_not_on_this_host_exits_78(deployment):
    """An address no interface has (EADDRNOTAVAIL) is for the settings to fix: exit 78."""
    address = "192.0.2.1:9341"  # TEST-NET-1: never assigned
    deployment.write_env(MY_REG_METRICS_ADDR=address)

    done = run(deployment)

    expected = (
        f"{PROG}: MY_REG_METRICS_ADDR='{address}': expected an address we can listen on "
        "(Cannot assign requested address)"
    )
    assert (EX_CONFIG, [expected]) == (done.returncode, problems(done.stderr))


def test_a_full_state_dir_on_reload_is_logged_and_the_registry_kept(deployment, tiny_tmpfs):
    """SIGHUP with a new MY_REG_STATE_DIR on a full file system is rejected with the line
    naming it; the supervisor and the registry it runs go on unchanged."""
    sup = deployment.start()
    before = deployment.running()
    state = tiny_tmpfs("state")
    fill(state)
    since = sup.mark()
    deployment.write_env(REGISTRY_HTTP_SECRET=None, MY_REG_STATE_DIR=str(state))

    sup.send(signal.SIGHUP)

    rejected = sup.wait_for_event("settings.reload_rejected", since=since)
    expected = (
        f"MY_REG_STATE_DIR='{state}': http-secret cannot be kept there now "
        f"(No space left on device: {state / 'http-secret'})"
    )
    assert [expected] == rejected["problems"]
    assert sup.running
    assert before == deployment.running()
