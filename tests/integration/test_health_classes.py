"""Failure classes against the real engine: a short stall is not a hang, and a storage
failure (the registry's own health check answering 503) degrades instead of restarting."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import tempfile
import time
from pathlib import Path

from support.notify import statuses

STORAGE_503 = "HTTP 503: UNAVAILABLE: health check failed: please see /debug/health"


def test_a_registry_stalled_for_two_seconds_is_not_restarted(deployment):
    """SIGSTOP for 2 s, then SIGCONT: the probes that time out are confirmed 0.5 s apart
    (start to start, each after the one before ended) and the third one is answered, so
    the same container is healthy again without a restart."""
    # The canary's first round (right after the start) would meet the stall instead of
    # the probes: this test is the probe's confirmation alone.
    deployment.write_env(
        MY_REG_HEALTH_INTERVAL="1", MY_REG_HEALTH_TIMEOUT="1", MY_REG_CANARY_INTERVAL="0"
    )
    sup = deployment.start()
    old = deployment.running()

    since = sup.mark()
    os.kill(old.pid, signal.SIGSTOP)
    try:
        time.sleep(2.0)
    finally:
        os.kill(old.pid, signal.SIGCONT)
    sup.wait_for_event("registry.healthy", since=since)

    failed = sup.find("probe.failed", since=since)
    assert 1 <= len(failed) < 3, failed  # the stall was seen, and not taken for a hang
    assert {"timed out after 1s"} == {e["error"] for e in failed}
    assert [] == sup.find("container.restarting", since=since)
    new = deployment.running()
    assert (old.id, old.started_at, old.pid) == (new.id, new.started_at, new.pid)
    assert 200 == deployment.v2_status()


def test_storage_failure_degrades_names_the_error_and_recovers_by_itself(deployment):
    """The data dir made unreadable to the capability-less registry: its storage check
    fails and /v2/ answers 503 with its own error. The phase is degraded, the log and
    STATUS name the error, nothing is restarted; permissions back, it recovers alone."""
    deployment.write_env(
        # Stat("/") of the filesystem driver is its root directory: with the default root
        # (the mount point itself) a chmod 000 still lets stat succeed. One level down it
        # needs search permission on the mount point, which the registry then lacks.
        REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY="/var/lib/registry/store",
        # The image's config checks every 10 s, 3 failures in a row: 30 to 40 s to 503.
        REGISTRY_HEALTH_STORAGEDRIVER_INTERVAL="1s",
        REGISTRY_HEALTH_STORAGEDRIVER_THRESHOLD="1",
        # The push canary would see the same outage first (pushes failing): this test is
        # the probe's class alone (test_canary.py has the canary's).
        MY_REG_CANARY_INTERVAL="0",
    )
    notify_dir = Path(tempfile.mkdtemp(prefix="rs-notify-"))  # AF_UNIX: 108 bytes at most
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
            notify.bind(str(notify_dir / "notify"))
            notify.setblocking(False)
            sup = deployment.start(env={"NOTIFY_SOCKET": str(notify_dir / "notify")})
            old = deployment.running()
            mode = deployment.data_dir.stat().st_mode & 0o7777

            since = sup.mark()
            deployment.data_dir.chmod(0)
            try:
                degraded = sup.wait_for_event("registry.degraded", since=since)
                time.sleep(6.0)  # a dozen probes of 503 at 0.5 s
                during = statuses(notify)
                restarted = sup.find("container.restarting", since=since)
                counted = sup.find("probe.failed", since=since)
            finally:
                deployment.data_dir.chmod(mode)
            recovered = sup.wait_for_event("registry.recovered", since=since)
    finally:
        shutil.rmtree(notify_dir, ignore_errors=True)

    assert ("dependency", STORAGE_503) == (degraded["source"], degraded["detail"])
    assert f"degraded: {STORAGE_503} (answering, serving nothing)" in during
    assert ([], []) == (restarted, counted)
    assert "dependency" == recovered["source"]
    assert [] == sup.find("container.restarting", since=since)
    new = deployment.running()
    assert (old.id, old.started_at) == (new.id, new.started_at)
    assert 200 == deployment.v2_status()
