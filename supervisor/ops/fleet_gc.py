"""Fleet-safe garbage collection (`registry-supervisor gc` with MY_REG_FLEET_REDIS set).

On shared storage every member's registry must refuse writes while the one collector
runs, or a push in flight on any of them loses its blobs. So (supervisor/fleet.py has
the protocol):

1. Refused unless Redis has known the fleet for MEMBER_TTL_S (after a data loss, every
   live member must have re-registered) and every rostered member heartbeats (a silent
   one may still run a writable registry).
2. The fleet's gc lease is taken for a fixed time: the confirmation timeout plus the
   collection timeout plus a margin. Members see it within a heartbeat and switch to
   read-only one at a time (the rolling slot: the load balancer keeps the others).
3. Once every rostered member is alive and has confirmed that its registry refuses an
   upload, the collector starts here on the shared storage, in a one-shot container
   whose own `timeout -s KILL` ends it before the lease does, whatever happens to us.
4. While it runs, the lease is looked at every second: lost (Redis restarted, or lost
   it), Redis silent for MEMBER_TTL_S, or a member no longer confirming (a new one
   joined) kills the collector at once.
5. The lease is released: every member goes back to normal, one at a time, with fresh
   caches (each registry is recreated).

Members hold read-only until the release, or until the lease's time is up on their own
clocks: a killed `gc` or a Redis that lost everything leaves them read-only for that long
at most, never writable under a running collector.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import structlog

from supervisor import fleet
from supervisor.adapters.fleet_store import FleetStore, clear_blob_cache
from supervisor.engine.client import Engine
from supervisor.errors import ContainerGone, EngineUnavailable, FleetUnavailable, MaintenanceFailed
from supervisor.ops.gc import (
    ENGINE_REFUSALS,
    collector_command,
    collector_config,
    collector_image,
    nothing_stored,
    parse_summary,
)
from supervisor.settings import Settings

CONFIRM_TIMEOUT_S = 120.0
COLLECT_TIMEOUT_S = 3600.0
POLL_S = 0.5
# A live member may be unconfirmed this long while the collector runs (a supervisor
# restarted mid-gc resumes its hold and confirms again) before the collector is killed.
UNCONFIRMED_GRACE_S = 5.0
RELEASE_ATTEMPTS = 10


@dataclass(frozen=True)
class FleetGcResult:
    """What one fleet gc did; printed by `gc` (and `gc --json`)."""

    lease: str
    members: list[str]
    confirmed_after_s: float
    collect_s: float
    blobs_marked: int | None
    blobs_eligible: int | None
    manifests_eligible: int | None
    delete_untagged: bool
    started_at: str
    finished_at: str
    outcome: str  # "ok" or "failed: ..."

    def as_dict(self) -> dict[str, Any]:
        """The result as `gc --json` prints it."""
        return asdict(self)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class FleetGarbageCollection:
    """One fleet-wide collection, started from this member's host."""

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        store: FleetStore,
        *,
        delete_untagged: bool,
        confirm_timeout_s: float = CONFIRM_TIMEOUT_S,
        collect_timeout_s: float = COLLECT_TIMEOUT_S,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.store = store
        self.delete_untagged = delete_untagged
        self.confirm_timeout_s = confirm_timeout_s
        self.collect_timeout_s = collect_timeout_s
        self.clock = clock
        self.sleep = sleep
        self.layout, self.spec = collector_image(settings, engine)
        self.log = structlog.get_logger().bind(
            member=settings.fleet_member, fleet=settings.fleet_name
        )
        self.collector_id: str | None = None
        self.collector_name: str | None = None  # set before the collector is started
        self.clear_cache: Callable[[fleet.BlobCache], int] = clear_blob_cache

    def run(self) -> FleetGcResult:
        """Collect once every member refuses writes; MaintenanceFailed when it did not (the
        lease is released then: everyone goes back to normal)."""
        try:
            return self._run()
        except FleetUnavailable as err:
            raise MaintenanceFailed(f"the fleet's Redis failed: {err}") from None
        except ENGINE_REFUSALS as err:
            raise MaintenanceFailed(f"the Docker engine refused: {err}") from None

    def _run(self) -> FleetGcResult:
        members = self._preconditions()
        hold_s = self.confirm_timeout_s + self.collect_timeout_s + 2 * fleet.COLLECTOR_MARGIN_S
        started_at = _now()
        # Members hold from when they see the lease, on their own boot-time clocks: after
        # this. Redis's PTTL alone is no bound (its expiry follows its host's wall clock).
        taken_at = self.clock()
        lease = self.store.take_lease(self.settings.fleet_member, hold_s, started_at)
        if lease is None:
            holder = self.store.lease()
            who = "" if holder is None else f" ({holder.holder}'s, since {holder.started})"
            raise MaintenanceFailed(f"another fleet gc holds the lease{who}; wait for it")
        self.log.info("fleet_gc.lease_taken", lease=lease.token, hold_s=hold_s, members=members)
        try:
            return self._collect(lease, started_at, taken_at)
        finally:
            if self._kill_collector():
                self._release(lease)
            else:
                # Released, every member would go writable beside a collector that runs
                # on until its own `timeout`: the lease ends by itself instead.
                self.log.error(
                    "fleet_gc.not_released",
                    lease=lease.token,
                    detail="the collector may still run: members hold read-only until the "
                    f"lease's time is up ({lease.hold_s:g} s)",
                )

    def _preconditions(self) -> list[str]:
        age = self.store.epoch_age_s()
        if age is None or age < fleet.MEMBER_TTL_S:
            raise MaintenanceFailed(
                "the fleet's Redis has known its members for less than "
                f"{fleet.MEMBER_TTL_S:g} s (new, or it lost its data): members re-register "
                "within that; run gc again then"
            )
        members = self.store.members()
        silent = fleet.silent(members)
        if silent:
            raise MaintenanceFailed(
                f"member(s) {', '.join(silent)} not heartbeating: a silent member may still "
                "run a writable registry. Start its supervisor, or, if that host is gone for "
                f"good, `registry-supervisor forget-member {silent[0]}`"
            )
        if not members:
            raise MaintenanceFailed("no member heartbeats in this fleet")
        return [m.name for m in members]

    def _collect(self, lease: fleet.GcLease, started_at: str, taken_at: float) -> FleetGcResult:
        began = self.clock()
        names = self._await_confirmations(lease)
        confirmed_after = round(self.clock() - began, 3)
        remaining = self.store.lease_remaining_s(lease)
        if remaining is not None:
            remaining = min(remaining, lease.hold_s - (self.clock() - taken_at))
        if remaining is None or remaining <= 2 * fleet.COLLECTOR_MARGIN_S:
            raise MaintenanceFailed("the lease ended before the collector could start")
        seconds = fleet.collector_seconds(remaining)
        command = collector_command(
            self.layout, dry_run=False, delete_untagged=self.delete_untagged
        )
        config = collector_config(self.spec, self.layout, command)
        # The engine ends it before the lease ends, whatever becomes of this process. The
        # image's busybox `timeout` cannot kill what runs as PID 1 (the kernel ignores a
        # signal PID 1 has no handler for): Docker's init is PID 1, `timeout` its child.
        config["entrypoint"] = ["timeout", "-s", "KILL", str(seconds), self.layout.binary]
        config["host_config"]["init"] = True
        self._remove_leftover(config["name"])
        collect_began = self.clock()
        # Named before it is started: a start whose answer is lost may still have run it.
        self.collector_name = str(config["name"])
        self.collector_id = self.engine.start_once(config)
        self.log.info("fleet_gc.collecting", lease=lease.token, members=names, bound_s=seconds)
        code = self._watch_collector(lease, self.collector_id)
        output = self.engine.output(self.collector_id)
        collect_s = round(self.clock() - collect_began, 3)
        summary = parse_summary(output)
        outcome = "ok"
        if code == 137 and summary == (None, None, None):
            outcome = f"failed: the collector outlived its bound ({seconds} s) and was killed"
        elif code != 0 and not nothing_stored(output):
            tail = " | ".join(output.strip().splitlines()[-3:])
            outcome = f"failed: the collector exited {code}: {tail}"
        result = FleetGcResult(
            lease=lease.token,
            members=names,
            confirmed_after_s=confirmed_after,
            collect_s=collect_s,
            blobs_marked=summary[0],
            blobs_eligible=summary[1],
            manifests_eligible=summary[2],
            delete_untagged=self.delete_untagged,
            started_at=started_at,
            finished_at=_now(),
            outcome=outcome,
        )
        if outcome != "ok":
            self.log.error("fleet_gc.failed", error=outcome)
            raise MaintenanceFailed(outcome)
        self._clear_blob_cache()
        self.log.info(
            "fleet_gc.finished",
            blobs_eligible=result.blobs_eligible,
            manifests_eligible=result.manifests_eligible,
            collect_s=collect_s,
        )
        return result

    def _await_confirmations(self, lease: fleet.GcLease) -> list[str]:
        """Wait until every rostered member is alive and confirms read-only for ``lease``."""
        deadline = self.clock() + self.confirm_timeout_s
        missing: list[str] = []
        last_error = ""
        while self.clock() < deadline:
            try:
                members = self.store.members()
            except FleetUnavailable as err:
                last_error = f" (Redis: {err})"
            else:
                missing = fleet.unconfirmed(members, lease)
                if not missing:
                    return [m.name for m in members]
            self.sleep(POLL_S)
        raise MaintenanceFailed(
            f"member(s) {', '.join(missing) or '?'} did not confirm read-only within "
            f"{self.confirm_timeout_s:g} s{last_error}: nothing collected; every member goes "
            "back to normal"
        )

    def _watch_collector(self, lease: fleet.GcLease, collector_id: str) -> int:
        """Until the collector exits: its exit code. It is killed (MaintenanceFailed) when
        the lease is lost, Redis stays silent, or a member stops confirming."""
        silent_since: float | None = None
        unconfirmed_since: float | None = None
        while True:
            observed = self.engine.inspect(collector_id)
            if observed is None:
                raise MaintenanceFailed("the collector container vanished (removed by hand?)")
            if not observed.running:
                return observed.exit_code if observed.exit_code is not None else -1
            now = self.clock()
            why: str | None = None
            try:
                if self.store.lease_remaining_s(lease) is None:
                    why = "the lease was lost (Redis restarted without its data, or expired)"
                members = self.store.members()
                missing = fleet.unconfirmed(members, lease)
                writable = fleet.not_holding(members, lease)
                if writable and why is None:
                    # No grace: it is not a member resuming its hold, it accepts pushes.
                    why = f"member(s) {', '.join(writable)} joined writable (not holding)"
                silent_since = None
            except FleetUnavailable as err:
                missing = []
                silent_since = now if silent_since is None else silent_since
                if now - silent_since > fleet.MEMBER_TTL_S:
                    why = f"Redis has not answered for {fleet.MEMBER_TTL_S:g} s ({err})"
            if missing:
                unconfirmed_since = now if unconfirmed_since is None else unconfirmed_since
                if now - unconfirmed_since > UNCONFIRMED_GRACE_S:
                    why = f"member(s) {', '.join(missing)} no longer confirm read-only"
            else:
                unconfirmed_since = None
            if why is not None:
                self._kill_collector()
                self.log.error("fleet_gc.collector_killed", why=why)
                raise MaintenanceFailed(f"collector killed: {why}")
            self.sleep(POLL_S)

    def _clear_blob_cache(self) -> None:
        """Before members go writable again: a shared Redis blob cache may name deleted
        blobs as present (a push would then skip uploading them)."""
        cache = fleet.blob_cache(self.settings.registry_env)
        if cache is None:
            return
        try:
            deleted = self.clear_cache(cache)
        except FleetUnavailable as err:
            # Members are recreated on release (their in-memory caches go); this one stays.
            self.log.error(
                "fleet_gc.blob_cache_not_cleared",
                error=str(err),
                detail="clear its blobs::* and repository::* keys by hand",
            )
            return
        self.log.info("fleet_gc.blob_cache_cleared", address=cache.address, keys=deleted)

    def _remove_leftover(self, name: str) -> None:
        leftover = self.engine.inspect(name)
        if leftover is None:
            return
        if not leftover.managed or leftover.running:
            raise MaintenanceFailed(
                f"container {name} exists (a collector still running, or not ours); "
                "wait for it or remove it"
            )
        self.engine.remove(leftover.id)

    def _kill_collector(self) -> bool:
        """Kill and remove the collector, if one was started (idempotent); whether none
        runs now (False: the engine did not answer, it may run until its own `timeout`)."""
        target = self.collector_id or self.collector_name
        self.collector_id = None
        if target is None:
            return True
        try:
            observed = self.engine.inspect(target)
            if observed is not None and observed.running:
                self.engine.kill(observed.id)
        except ContainerGone:
            pass
        except (EngineUnavailable, *ENGINE_REFUSALS) as err:
            # It ends by its own timeout before the lease does; members hold until then.
            self.log.error("fleet_gc.collector_not_killed", error=str(err))
            return False
        self.collector_name = None
        if observed is not None:
            try:
                self.engine.remove(observed.id)
            except ContainerGone:
                pass
            except (EngineUnavailable, *ENGINE_REFUSALS) as err:
                # Stopped: only the container is left (the next gc removes it).
                self.log.warning("fleet_gc.collector_not_removed", error=str(err))
        return True

    def _release(self, lease: fleet.GcLease) -> None:
        for _ in range(RELEASE_ATTEMPTS):
            try:
                self.store.release(lease)
            except FleetUnavailable as err:
                self.log.warning("fleet_gc.release_failed", error=str(err))
                self.sleep(1.0)
                continue
            self.log.info("fleet_gc.released", lease=lease.token)
            return
        self.log.error(
            "fleet_gc.not_released",
            lease=lease.token,
            detail=f"members hold read-only until the lease's time is up ({lease.hold_s:g} s)",
        )
