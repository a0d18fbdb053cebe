"""A real fleet (MY_REG_FLEET_REDIS) on one machine: three members over one S3 store, one
Redis, HAProxy in front and real docker clients pulling and pushing through it
(tests/support/fleet.py), while members, Redis and the fleet's own commands fail or run.

The members are given no REGISTRY_HTTP_SECRET: the fleet makes one and every member uses
it (an upload begun on one member goes on on another). Their image comes from a source
registry on loopback, so that `update` has a new image to roll out. The figures (failed
pulls, pushes refused while the gc held the fleet read-only, acknowledged pushes missing
afterwards) are printed at the end of the run.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from support.fleet import (
    FIGURES,
    Attempt,
    ClientLoad,
    HAProxy,
    Member,
    RedisServer,
    S3Server,
    SourceRegistry,
    StatusWatch,
    dump_logs,
    fleet_id,
    image_id,
    tiny_image,
    wait_until,
)
from support.process import SupervisorProcess

pytestmark = pytest.mark.integration

MEMBERS = ("m1", "m2", "m3")
MANIFEST_TYPES = ", ".join(
    (
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
    )
)
STEADY_S = 3.0  # load between faults
RECOVERY_TIMEOUT = 30.0
COMMAND_TIMEOUT = 150.0  # one update or gc of the whole fleet
# What the registry's env says in read-only maintenance mode (supervisor/spec.py).
READONLY_VARIABLE = "REGISTRY_STORAGE_MAINTENANCE_READONLY"
MEMBER_TTL_S = 5.0  # supervisor/fleet.py
GC_FAILED = 1
UPDATE_FAILED = 1


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


# --- the fleet ----------------------------------------------------------------------------------


@dataclass
class Fleet:
    name: str
    s3: S3Server
    redis: RedisServer
    source: SourceRegistry
    members: list[Member]
    lb: HAProxy
    origin: float = 0.0
    timeline: list[str] | None = None

    def key(self, *parts: str) -> str:
        """A key of this fleet in Redis (supervisor/fleet.py, keys_prefix)."""
        return f"registry-supervisor:{self.name}:" + ":".join(parts)

    def record(self, member: str) -> dict[str, Any] | None:
        """A member's live heartbeat record, None when it has expired (or Redis lost it)."""
        with self.redis.client() as client:
            body = client.get(self.key("member", member))
        return None if body is None else dict(json.loads(body))

    def known_for(self) -> float | None:
        """Seconds since this Redis made the fleet's epoch (a gc waits for MEMBER_TTL_S)."""
        with self.redis.client() as client:
            epoch = client.get(self.key("epoch"))
            seconds, micros = client.time()
        return None if epoch is None else seconds + micros / 1e6 - float(epoch)

    def gc_allowed(self) -> bool | None:
        """Redis has known the fleet long enough for a gc to start."""
        return _true((self.known_for() or 0.0) > MEMBER_TTL_S + 0.5)

    def note(self, what: str) -> None:
        if self.timeline is not None:
            self.timeline.append(f"{time.monotonic() - self.origin:6.2f} s  {what}")

    def all_normal(self) -> bool | None:
        """Every member writable again, ready, and UP in HAProxy."""
        status = self.lb.status()
        for m in self.members:
            if READONLY_VARIABLE in m.registry_env() or m.ready() != 200:
                return None
            if status.get(m.member) != "UP":
                return None
        return True


@pytest.fixture
def fleet(docker_client, tmp_path: Path) -> Iterator[Fleet]:
    """Three fleet-mode members (one Redis, one S3 store, no HTTP secret given), their
    image from a source registry on loopback, and HAProxy with every server UP."""
    name = fleet_id()
    with contextlib.ExitStack() as stack:
        s3 = stack.enter_context(S3Server(tmp_path / "s3"))
        redis_server = stack.enter_context(RedisServer(tmp_path / "redis"))
        source = stack.enter_context(SourceRegistry(f"{name}-src"))
        source.publish("registry:2")
        env = {
            **s3.registry_env(rootdirectory=f"/{name}"),
            "MY_REG_FLEET_REDIS": redis_server.url,
            "MY_REG_FLEET_NAME": name,
            # A manifest deleted before the gc leaves it something to collect.
            "REGISTRY_STORAGE_DELETE_ENABLED": "true",
        }
        members = [
            stack.enter_context(
                Member(
                    tmp_path,
                    name,
                    m,
                    {**env, "MY_REG_FLEET_MEMBER": m},
                    image=source.image,
                    tag=source.tag,
                )
            )
            for m in MEMBERS
        ]
        for member in members:
            member.start(wait_healthy=False)
        for member in members:
            member.wait_healthy()
        lb = stack.enter_context(HAProxy(tmp_path / "lb", members))
        lb.wait_all("UP")
        yield Fleet(name, s3, redis_server, source, members, lb)


def fleet_status(member: Member) -> dict[str, Any]:
    """`status --fleet --json` from ``member``'s settings."""
    done = member.cli("status", "--fleet", "--json")
    assert done.returncode in (0, 3), done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def wall(event: dict[str, Any]) -> float:
    """Epoch seconds of a log event's timestamp."""
    return datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()


def events_of(sup: SupervisorProcess, name: str, **fields: Any) -> list[dict[str, Any]]:
    return sup.find(name, **fields)


def result_of(sup: SupervisorProcess, what: str) -> dict[str, Any]:
    """The JSON a background command printed, once it exited 0."""
    code = sup.wait_exit(COMMAND_TIMEOUT)
    out = sup.stdout_path.read_text()
    assert 0 == code, f"{what} exited {code}\n{sup.tail(30)}"
    result: dict[str, Any] = json.loads(out)
    return result


def overlap(a: Attempt, start: float, end: float) -> bool:
    return a.started < end and a.ended > start


# --- one run through every fault ----------------------------------------------------------------


def test_a_fleet_serves_through_faults_a_rolling_update_and_a_gc(fleet: Fleet):
    """Under load through HAProxy, one after the other: a member's registry is killed
    (repaired), a member's supervisor is SIGKILLed (a new one adopts the registry, its
    heartbeat is back), Redis restarts with nothing (members re-register; serving never
    stops), `update` runs on all three members at once (one at a time, all on the new
    image), a reload that changes the spec is sent to all three at once (one restart at a
    time, never two members out of HAProxy), and a fleet gc runs with pushes in flight (the collector only once all three
    confirmed read-only; pushes meanwhile refused, none acknowledged and then lost; every
    member back to normal). No pull fails; every acknowledged push pulls back by digest."""
    members, lb = fleet.members, fleet.lb
    m1, m2, m3 = members
    fleet.timeline = []
    note = fleet.note

    # The fleet made one HTTP secret and every member runs with it.
    report = fleet_status(m1)
    secrets_seen = {m["name"]: m.get("http_secret") for m in report["members"]}
    assert set(MEMBERS) == set(secrets_seen), report
    assert None not in secrets_seen.values() and 1 == len(set(secrets_seen.values())), report
    assert [] == report["warnings"], report

    with ClientLoad(lb.address, f"{fleet.name}/load", pullers=2, pushers=1) as load:
        fleet.origin = origin = load.started
        time.sleep(STEADY_S)

        # 1. A member's registry crashes; its supervisor repairs it.
        since = m1.sup.mark()
        note(f"docker kill {m1.registry}")
        m1.docker_kill()
        m1.wait_healthy(since=since, timeout=RECOVERY_TIMEOUT)
        lb.wait_status(m1.member, "UP", RECOVERY_TIMEOUT)
        note("m1 healthy and UP again")
        time.sleep(STEADY_S)

        # 2. A member's supervisor dies; a new one adopts the registry and heartbeats.
        before = m2.inspect()
        assert before is not None
        note("kill -9 the supervisor of m2")
        m2.kill()
        lb.wait_status(m2.member, "DOWN", RECOVERY_TIMEOUT)
        assert 200 == m2.v2_status(), "the orphaned registry stopped serving"
        sup = m2.start(wait_healthy=False)
        sup.wait_for_event("container.adopted", RECOVERY_TIMEOUT)
        m2.wait_healthy(timeout=RECOVERY_TIMEOUT)
        wait_until(lambda: _true((fleet.record("m2") or {}).get("pid") == sup.pid),
                   "m2's new supervisor to heartbeat", RECOVERY_TIMEOUT,
                   last=lambda: fleet.record("m2"))  # fmt: skip
        lb.wait_status(m2.member, "UP", RECOVERY_TIMEOUT)
        after = m2.inspect()
        assert after is not None and before["Id"] == after["Id"], "the registry was replaced"
        note("m2 adopted its registry, heartbeats, UP")
        time.sleep(STEADY_S)

        # 3. Redis restarts having lost everything: members re-register by heartbeat.
        note("Redis restarts without its data")
        fleet.redis.restart(keep_data=False)
        wait_until(lambda: _true(all(fleet.record(m) for m in MEMBERS)),
                   "every member to heartbeat into the new Redis", RECOVERY_TIMEOUT,
                   last=lambda: {m: fleet.record(m) for m in MEMBERS})  # fmt: skip
        with fleet.redis.client() as client:
            assert set(MEMBERS) == {k.decode() for k in client.hkeys(fleet.key("roster"))}
        assert {"UP"} == set(lb.status().values()), lb.status()
        note("every member re-registered")
        time.sleep(STEADY_S)

        # 4. A rolling update: a new image under the members' tag, `update` on all three
        # members at the same time.
        built = fleet.source.build(
            f"FROM registry:2\nLABEL fleet-test.rebuilt={secrets.token_hex(4)}\n"
        )
        old = image_id(fleet.source.ref)
        new = fleet.source.publish(built, then_local="registry:2")
        assert new != old == image_id(fleet.source.ref)
        note("update on m1, m2, m3 at once")
        with StatusWatch(lb) as watch:
            updates = [m.background("update", "update", "--json") for m in members]
            results = [
                result_of(u, f"update on {m.member}") for u, m in zip(updates, members, strict=True)
            ]
            wait_until(fleet.all_normal, "every member UP after the update", RECOVERY_TIMEOUT,
                       last=lb.status)  # fmt: skip
        note("update done")
        assert ["updated"] * 3 == [r["outcome"] for r in results], results
        for m in members:
            attrs = m.inspect()
            assert attrs is not None and new == attrs["Image"], f"{m.member} not on the new image"
        slots = sorted(
            (
                wall(events_of(u, "fleet.slot_taken")[0]),
                wall(events_of(u, "fleet.slot_released")[0]),
            )
            for u in updates
        )
        for (_taken, released), (taken_next, _released) in itertools.pairwise(slots):
            assert released <= taken_next, f"two updates held the rolling slot at once: {slots}"
        most, which = watch.most_down()
        assert most <= 1, f"members {which} were out of HAProxy at once"
        assert watch.ever_down() == set(MEMBERS), "an update restarted no member?"
        time.sleep(STEADY_S)

        # 4b. A reload that changes the spec, on all three members at once: one at a time.
        marks = {m.member: m.sup.mark() for m in members}
        for m in members:
            m.write_env(MY_REG_STOP_TIMEOUT="3")
        note("SIGHUP m1, m2, m3 at once (MY_REG_STOP_TIMEOUT changed)")
        with StatusWatch(lb) as watch:
            for m in members:
                m.sup.send(signal.SIGHUP)
            for m in members:
                m.sup.wait_for_event("fleet.planned_restart_done", RECOVERY_TIMEOUT,
                                     since=marks[m.member], why="reload")  # fmt: skip
            wait_until(fleet.all_normal, "every member UP after the reload", RECOVERY_TIMEOUT,
                       last=lb.status)  # fmt: skip
        note("reload done")
        reloads = sorted(
            (
                wall(m.sup.find("fleet.planned_restart", since=marks[m.member], why="reload")[0]),
                wall(m.sup.find("fleet.planned_restart_done", since=marks[m.member],
                                why="reload")[0]),
            )
            for m in members
        )  # fmt: skip
        for (_began, done), (began_next, _done) in itertools.pairwise(reloads):
            assert done <= began_next, f"two reloads restarted at once: {reloads}"
        most, which = watch.most_down()
        assert most <= 1, f"members {which} were out of HAProxy at once during the reload"
        assert watch.ever_down() == set(MEMBERS), "a reload restarted no member?"
        time.sleep(STEADY_S)

        # 5. A fleet gc with pushes in flight, with something to collect: an image pushed
        # through the load balancer, then its manifest deleted on another member.
        doomed = f"{lb.address}/{fleet.name}/doomed:1"
        tiny_image(doomed, size=64 * 1024)
        pushed = subprocess.run(["docker", "push", doomed], capture_output=True, text=True,
                                timeout=60, check=False)  # fmt: skip
        subprocess.run(["docker", "rmi", doomed], capture_output=True, check=False)
        assert pushed.returncode == 0, pushed.stderr
        manifest = f"{m1.registry_url}{fleet.name}/doomed/manifests/1"
        digest = requests.head(manifest, headers={"Accept": MANIFEST_TYPES},
                               timeout=5).headers["Docker-Content-Digest"]  # fmt: skip
        deleted = requests.delete(f"{m2.registry_url}{fleet.name}/doomed/manifests/{digest}",
                                  timeout=5)  # fmt: skip
        assert deleted.status_code == 202, deleted.text
        wait_until(fleet.gc_allowed, "Redis to know the fleet long enough", MEMBER_TTL_S + 5)
        note("gc from m3")
        gc = m3.background("gc", "gc", "--json", "--confirm-timeout", "60",
                           "--collect-timeout", "60")  # fmt: skip
        gc_started = time.monotonic()
        result = result_of(gc, "gc")
        gc_ended = time.monotonic()
        note(f"gc done ({result['outcome']}, confirmed after {result['confirmed_after_s']} s)")
        wait_until(fleet.all_normal, "every member back to normal after the gc", 60,
                   last=lambda: {m.member: (READONLY_VARIABLE in m.registry_env(), m.ready())
                                 for m in members})  # fmt: skip
        normal_again = time.monotonic()
        note("every member back to normal")
        time.sleep(STEADY_S)

    # The gc: the collector started only once all three had confirmed read-only.
    token = result["lease"]
    assert "ok" == result["outcome"] and sorted(MEMBERS) == sorted(result["members"]), result
    assert result["blobs_eligible"] >= 1, f"the deleted image's blobs were not collected: {result}"
    collecting = wall(events_of(gc, "fleet_gc.collecting")[0])
    confirmed = {
        m.member: [wall(e) for sup in m.processes for e in sup.find("fleet.read_only_confirmed",
                                                                    lease=token)]
        for m in members
    }  # fmt: skip
    assert all(confirmed.values()), f"not every member confirmed: {confirmed}"
    assert max(min(times) for times in confirmed.values()) <= collecting, (confirmed, collecting)
    for m in members:
        ended = [e for sup in m.processes for e in sup.find("fleet.gc_hold_ended", lease=token)]
        assert ["released"] == [e["why"] for e in ended], f"{m.member}: {ended}"

    summary = load.summary()
    missing = load.verify_acknowledged()
    pushes = list(load.pushes)
    in_gc = [p for p in pushes if overlap(p, gc_started, normal_again)]
    refused = [p for p in in_gc if not p.ok]
    # While every member was read-only (the collector's run), no push can have worked.
    collect_began = gc_started + result["confirmed_after_s"]
    collect_ended = collect_began + result["collect_s"]
    inside = [p for p in pushes if collect_began <= p.started and p.ended <= collect_ended]
    report_text = "\n".join(
        [
            f"fleet {fleet.name}: {len(members)} fleet-mode members, "
            f"{load.ended - origin:.1f} s of load",
            summary.describe(origin, limit=8),
            f"failed pulls: {summary.pulls_failed}",
            f"pushes refused during the gc's read-only window: {len(refused)} "
            f"(of {len(in_gc)} attempted in it; {len(inside)} wholly while collecting)",
            f"acknowledged pushes missing afterwards: {len(missing)}",
            *(f"  {m}" for m in missing),
            f"gc: confirmed after {result['confirmed_after_s']} s, collected in "
            f"{result['collect_s']} s, {result['blobs_eligible']} blobs eligible; "
            f"{gc_ended - gc_started:.1f} s",
            "update slots (epoch s): " + ", ".join(f"{a:.1f}-{b:.1f}" for a, b in slots),
            "reload restarts (epoch s): " + ", ".join(f"{a:.1f}-{b:.1f}" for a, b in reloads),
            "timeline:",
            *(f"  {e}" for e in fleet.timeline),
        ]
    )
    FIGURES.append(("test_fleet: fleet mode through faults, a rolling update and a gc",
                    report_text))  # fmt: skip
    print(report_text)

    assert summary.pulls_ok > 0 and summary.pushes_ok > 0, report_text
    assert 0 == summary.pulls_failed, f"{report_text}\n{dump_logs(members)}"
    assert [] == missing, report_text
    assert refused, f"no push was refused while the gc held the fleet read-only\n{report_text}"
    assert not [p for p in inside if p.ok], f"a push worked during the collection\n{report_text}"
    assert any("/repositories/" in key for key in fleet.s3.keys(prefix=f"/{fleet.name}/"))


def _true(ok: bool) -> bool | None:
    return True if ok else None


# --- a gc killed mid-collection, a gc refused ---------------------------------------------------


def test_a_killed_gc_leaves_no_collector_and_no_writable_member_then_a_silent_member_stops_gc(
    fleet: Fleet,
):
    """`gc` is SIGKILLed once its collector runs, on a store that answers nothing (the
    collection hangs): the collector is killed by its own bound before the lease ends, no
    member accepts an upload while it exists, and every member goes back to normal once
    its hold's time is up. Then a member's supervisor stops: gc refuses, naming it, until
    `forget-member` removes it; the next gc goes ahead with the other two. Meanwhile
    `update` refuses to replace a registry the gc holds read-only."""
    members = fleet.members
    m1, m2, m3 = members
    confirm_s, collect_s = 30, 10
    hold_s = confirm_s + collect_s + 10
    collector = f"{m1.name}-gc"

    def collector_runs() -> bool | None:
        if not gc.running:
            pytest.fail(f"gc exited before its collector ran:\n{gc.tail(10)}")
        return _true(((m1.inspect(collector) or {}).get("State") or {}).get("Running"))

    # A new image for `update` to try while the gc holds the fleet read-only.
    old = image_id(fleet.source.ref)
    built = fleet.source.build(f"FROM registry:2\nLABEL fleet-test.held={secrets.token_hex(4)}\n")
    assert old != fleet.source.publish(built, then_local="registry:2")

    # 6. The store stops answering; gc from m1; SIGKILL it once its collector runs.
    wait_until(fleet.gc_allowed, "Redis to know the fleet long enough", MEMBER_TTL_S + 5)
    fleet.s3.pause()
    try:
        gc = m1.background("gc", "gc", "--confirm-timeout", str(confirm_s),
                           "--collect-timeout", str(collect_s))  # fmt: skip
        lease_at = time.monotonic()
        wait_until(collector_runs, "the collector to run", confirm_s + 10)
        gc.kill()
        running_seen = time.monotonic()
        with fleet.redis.client() as client:
            lease_left = client.pttl(fleet.key("gc", "lease")) / 1000.0
        assert lease_left > 0, "no lease in force while the collector runs"
        lease_ends = running_seen + lease_left
        # `update` must not replace a registry a gc holds: the new one would be writable.
        held = m2.cli("update", timeout=COMMAND_TIMEOUT)
        assert UPDATE_FAILED == held.returncode, held.stderr
        assert "a fleet gc is under way" in held.stderr, held.stderr
        assert old == (m2.inspect() or {}).get("Image") == image_id(fleet.source.ref)
        answers: dict[str, list[int | None]] = {m.member: [] for m in members}
        stopped_at = None
        while stopped_at is None:
            state = (m1.inspect(collector) or {}).get("State") or {}
            if not state.get("Running"):
                stopped_at = time.monotonic()
                exit_code = state.get("ExitCode")
                break
            for m in members:
                answers[m.member].append(m.upload_status(timeout=1.0))
            assert time.monotonic() < lease_ends + 5, "the collector outlived its lease"
            time.sleep(0.2)
    finally:
        fleet.s3.resume()
    writable = {name: [a for a in seen if a != 405] for name, seen in answers.items()}
    killed = (
        f"collector ran {stopped_at - running_seen:.1f} s after the gc was killed, exit "
        f"{exit_code}, stopped {lease_ends - stopped_at:.1f} s before the lease's end\n"
        "uploads tried straight at each member meanwhile: "
        + ", ".join(f"{n}: {len(a)} ({len(writable[n])} not 405)" for n, a in answers.items())
    )
    assert stopped_at < lease_ends, (
        f"the collector stopped {stopped_at - lease_ends:.1f} s after the lease's end"
    )
    assert 137 == exit_code, f"the collector exited {exit_code}, not killed"
    assert all(answers.values()), answers
    assert not any(writable.values()), f"members answered uploads otherwise than 405: {writable}"

    # Members hold read-only until their hold's time is up, then go back to normal.
    wait_until(fleet.all_normal, "every member back to normal after the hold", hold_s + 40,
               last=lambda: {m.member: (READONLY_VARIABLE in m.registry_env(), m.ready())
                             for m in members})  # fmt: skip
    normal_at = time.monotonic()
    FIGURES.append(
        (
            "test_fleet: a gc SIGKILLed mid-collection",
            f"{killed}\nevery member back to normal {normal_at - lease_at:.1f} s after the "
            f"lease was taken (hold_s {hold_s} s)",
        )
    )
    assert normal_at >= lease_at + hold_s - 2, "a member went back to normal before its hold ended"
    for m in members:
        ended = [e["why"] for sup in m.processes for e in sup.find("fleet.gc_hold_ended")]
        assert ["expired"] == ended, f"{m.member}: {ended}"
        assert 202 == m.upload_status(), f"{m.member} does not take uploads again"

    # 7. A member's supervisor stops: its heartbeat expires, gc refuses, naming it.
    assert 0 == m3.stop()
    wait_until(lambda: _true(fleet.record("m3") is None), "m3's heartbeat to expire",
               MEMBER_TTL_S + 5)  # fmt: skip
    refused = m1.cli("gc", "--confirm-timeout", "30", "--collect-timeout", "30")
    assert GC_FAILED == refused.returncode, refused.stderr
    assert "m3" in refused.stderr and "not heartbeating" in refused.stderr, refused.stderr
    forgot = m1.cli("forget-member", "m3")
    assert (0, "m3 removed from the roster") == (forgot.returncode, forgot.stdout.strip())
    fleet.members = members[:2]
    done = m1.cli("gc", "--json", "--confirm-timeout", "30", "--collect-timeout", "30",
                  timeout=COMMAND_TIMEOUT)  # fmt: skip
    assert 0 == done.returncode, done.stderr
    result = json.loads(done.stdout)
    assert ("ok", ["m1", "m2"]) == (result["outcome"], sorted(result["members"])), result
    wait_until(fleet.all_normal, "m1 and m2 back to normal", 60)
