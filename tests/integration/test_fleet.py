"""Several supervisors over one S3 store behind HAProxy (tests/support/fleet.py), with real
docker clients pulling and pushing through the load balancer while members fail.

The members here are plain supervisors (no MY_REG_FLEET_*): one registry each, all on the
same S3 bucket and root directory with one REGISTRY_HTTP_SECRET, so any member can go on
with an upload another one started. The figures (pulls and pushes ok and failed, acknowledged
pushes missing afterwards) are printed at the end of the run.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.fleet import (
    FIGURES,
    ClientLoad,
    HAProxy,
    Member,
    RedisServer,
    S3Server,
    dump_logs,
    fleet_id,
    wait_until,
)

pytestmark = pytest.mark.integration

MEMBERS = ("m1", "m2", "m3")
STEADY_S = 4.0  # load between faults
RECOVERY_TIMEOUT = 30.0


def test_the_harness_redis_restarts_with_or_without_its_data(tmp_path: Path):
    """RedisServer.restart: keep_data comes back with every key (SHUTDOWN SAVE), without it
    Redis lost everything (kill -9, dump removed); same URL throughout."""
    with RedisServer(tmp_path / "redis") as server:
        url = server.url
        with server.client() as client:
            client.set("kept", "1")
        server.restart(keep_data=True)
        assert url == server.url
        with server.client() as client:
            assert b"1" == client.get("kept")
        server.restart(keep_data=False)
        with server.client() as client:
            assert client.get("kept") is None and 0 == client.dbsize()
        pid = server.proc.pid if server.proc else None
    assert server.proc is None and pid is not None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


@pytest.fixture
def fleet(docker_client, tmp_path: Path) -> Iterator[tuple[str, S3Server, list[Member], HAProxy]]:
    """Three healthy members on one S3 store, and HAProxy with every server UP."""
    name = fleet_id()
    with contextlib.ExitStack() as stack:
        s3 = stack.enter_context(S3Server(tmp_path / "s3"))
        env = {
            **s3.registry_env(rootdirectory=f"/{name}"),
            "REGISTRY_HTTP_SECRET": f"fleet-secret-{secrets.token_hex(8)}",
        }
        members = [stack.enter_context(Member(tmp_path, name, m, env)) for m in MEMBERS]
        for member in members:
            member.start(wait_healthy=False)
        for member in members:
            member.wait_healthy()
        lb = stack.enter_context(HAProxy(tmp_path / "lb", members))
        lb.wait_all("UP")
        yield name, s3, members, lb


def test_pulls_never_fail_through_a_registry_crash_and_a_supervisor_kill(fleet):
    """Under load through HAProxy: one member's registry is `docker kill`ed (its supervisor
    starts it again) and another member's supervisor is SIGKILLed (its registry goes on
    serving; a new supervisor adopts it). No pull fails, every acknowledged push pulls
    back by digest, and uploads were served by more than one member."""
    name, s3, members, lb = fleet
    crashed, orphaned, _third = members

    with ClientLoad(lb.address, f"{name}/load", pullers=2, pushers=1) as load:
        origin = load.started
        events: list[str] = []

        def note(what: str) -> None:
            events.append(f"{time.monotonic() - origin:6.2f} s  {what}")

        time.sleep(STEADY_S)

        # 1. The registry of one member crashes; its supervisor repairs it.
        since = crashed.sup.mark()
        before = crashed.inspect()
        assert before is not None
        note(f"docker kill {crashed.registry}")
        crashed.docker_kill()
        crashed.wait_healthy(since=since, timeout=RECOVERY_TIMEOUT)
        note(f"{crashed.member} healthy again")
        lb.wait_status(crashed.member, "UP", RECOVERY_TIMEOUT)
        note(f"{crashed.member} UP in HAProxy")
        time.sleep(STEADY_S)

        # 2. One member's supervisor dies; its registry keeps serving, HAProxy takes the
        # member out (its /ready is gone), a new supervisor adopts the registry.
        before = orphaned.inspect()
        assert before is not None
        note(f"kill -9 the supervisor of {orphaned.member}")
        orphaned.kill()
        lb.wait_status(orphaned.member, "DOWN", RECOVERY_TIMEOUT)
        note(f"{orphaned.member} DOWN in HAProxy")
        assert 200 == orphaned.v2_status(), "the orphaned registry stopped serving"
        time.sleep(1.0)
        sup = orphaned.start(wait_healthy=False)
        sup.wait_for_event("container.adopted", RECOVERY_TIMEOUT)
        orphaned.wait_healthy(timeout=RECOVERY_TIMEOUT)
        note(f"{orphaned.member} adopted its registry")
        lb.wait_status(orphaned.member, "UP", RECOVERY_TIMEOUT)
        note(f"{orphaned.member} UP in HAProxy")
        after = orphaned.inspect()
        assert after is not None and before["Id"] == after["Id"], "the registry was replaced"
        assert before["State"]["StartedAt"] == after["State"]["StartedAt"], "it was restarted"
        time.sleep(STEADY_S)

    summary = load.summary()
    missing = load.verify_acknowledged()
    spans = lb.upload_servers()
    spanning = sum(len(servers) > 1 for servers in spans.values())
    logged = lb.requests()
    retried = [line for line in logged if line.retries]
    report = "\n".join(
        [
            f"fleet {name}: {len(members)} members, {load.ended - origin:.1f} s of load",
            summary.describe(origin),
            f"acknowledged pushes missing afterwards: {len(missing)}",
            *(f"  {m}" for m in missing),
            f"upload sessions: {len(spans)}, served by more than one member: {spanning}",
            f"HAProxy: {len(logged)} requests, {len(retried)} retried "
            f"({sum(line.redispatched for line in retried)} redispatched), "
            f"{sum(line.status >= 500 or line.status < 0 for line in logged)} answered 5xx or none",
            *(f"  {line}" for line in retried[:10]),
            "timeline:",
            *(f"  {e}" for e in events),
        ]
    )
    FIGURES.append(("test_fleet: registry crash + supervisor kill", report))
    print(report)

    assert summary.pulls_ok > 0 and summary.pushes_ok > 0, report
    assert 0 == summary.pulls_failed, f"{report}\n{dump_logs(members)}"
    assert [] == missing, report
    assert spanning > 0, f"no upload was served by more than one member\n{report}"
    # What the members stored is in the one bucket, under the fleet's root.
    assert any("/repositories/" in key for key in s3.keys(prefix=f"/{name}/")), report
    wait_until(lambda: True if all(m.ready() == 200 for m in members) else None,
               "every member ready", 10)  # fmt: skip
