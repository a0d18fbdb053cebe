"""The fleet flow: what the loop does about the fleet's gc lease and the rolling slot.

Part of the reconciler (supervisor/loop/reconciler.py), split out by concern. The fleet
link (supervisor/loop/fleet.py) reports; this decides:

- A gc lease seen: hold read-only for it (``Hold``, supervisor/fleet.py). Once the rolling
  slot is ours, the registry is replaced by its read-only twin (a planned replacement: it
  drains first, MY_REG_READY_DRAIN), and once that answers and refuses an upload, the
  heartbeat confirms the lease's token. Reloads wait while the hold lasts.
- The lease released (or the hold's time up): the slot again, and back to normal.
- A reload that changes the spec of a serving registry takes the slot before it drains.

The slot is given back once the replacement answers healthy, or after SLOT_GIVE_UP_S if
it never does (a member whose registry cannot start must not hold up the fleet).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from supervisor.adapters.registry_api import writes_refused
from supervisor.fleet import GcLease, Hold, hold_ended, hold_for
from supervisor.loop.fleet import FleetLink
from supervisor.loop.keeper import RepairNeeded
from supervisor.loop.watchdog import WatchdogFeeder
from supervisor.phase import Phase
from supervisor.reconcile import Reason
from supervisor.settings import Settings
from supervisor.spec import READONLY_VALUE, READONLY_VARIABLE
from supervisor.statedir import fleet_hold

if TYPE_CHECKING:
    from supervisor.loop.reconciler import Reconciler

READ_ONLY = "read-only"  # the slot's uses
NORMAL = "normal"
RELOAD = "reload"
# A planned replacement that has not answered healthy this long after its start gives
# the slot back anyway.
SLOT_GIVE_UP_S = 120.0
# A read-only registry that does not refuse an upload yet is asked again this often.
REFUSAL_RETRY_S = 1.0


def read_only_settings(settings: Settings) -> Settings:
    """``settings`` with the registry's storage in read-only maintenance mode (pure)."""
    registry_env = {**settings.registry_env, READONLY_VARIABLE: READONLY_VALUE}
    return settings.model_copy(update={"registry_env": registry_env})


def writable_settings(settings: Settings) -> Settings:
    """``settings`` without the read-only mode a hold added (pure)."""
    registry_env = {k: v for k, v in settings.registry_env.items() if k != READONLY_VARIABLE}
    return settings.model_copy(update={"registry_env": registry_env})


def _ended_why(hold: Hold, released: set[str]) -> str | None:
    """Why ``hold`` has ended by now on this host's clocks, or None."""
    return hold_ended(
        hold, released, fleet_hold.boottime(), fleet_hold.boot_id(), fleet_hold.wall()
    )


def _new_hold(lease: GcLease, previous: Hold | None = None, *, released: bool = False) -> Hold:
    return hold_for(
        lease,
        fleet_hold.boottime(),
        fleet_hold.boot_id(),
        fleet_hold.wall(),
        previous,
        previous_released=released,
    )


class FleetFlow:
    """This member's part in fleet gc and rolling restarts."""

    def __init__(
        self,
        reconciler: Reconciler,
        link: FleetLink,
        feeder: WatchdogFeeder,
        refuses: Callable[[Settings, float], str | None] = writes_refused,
    ) -> None:
        self._r = reconciler
        self.link = link
        self._feeder = feeder
        self._refuses = refuses
        self.hold: Hold | None = None
        self.read_only = False  # the read-only twin is the desired container
        self.confirmed: str | None = None  # the token whose read-only state we confirmed
        self._ended: set[str] = set()  # tokens whose hold has ended: never again
        self._released: set[str] = set()  # tokens the initiator released
        self._want: str | None = None  # what the slot is wanted for
        self._in_flight: str | None = None  # the planned replacement the slot is held for
        self._in_flight_since = 0.0
        self._refusal_at: float | None = None  # when to ask for the upload refusal
        # A reload's new spec waits for the slot (a read-only switch may ask it first):
        # any planned restart from now on runs it.
        self._reload_waiting = False
        self._canary_pending = False  # a planned restart waits for its canary round
        # Whether this member has ever reached its fleet (the joined file): one that never
        # has is in no roster, so a fleet gc could not know of it; the load balancer sends
        # it nobody until it has (`/ready` 503).
        self.joined = True

    @property
    def log(self) -> Any:
        """The reconciler's logger (rebound on reload)."""
        return self._r.log

    @property
    def busy(self) -> bool:
        """Whether a hold or a planned replacement is under way (reloads wait)."""
        return self.hold is not None or self.read_only or self._in_flight is not None

    @property
    def note(self) -> str | None:
        """What STATUS says of the fleet, if anything: a hold, a wait for the slot, or a
        Redis that does not answer."""
        if self.read_only and self.hold is not None:
            done = "confirmed" if self.confirmed == self.hold.token else "not confirmed yet"
            return f"read-only for the fleet's gc ({done}; pushes get 405)"
        if self.read_only:
            return "read-only, going back to normal (the fleet's gc ended)"
        if self._want is not None and self._in_flight is None:
            return f"waiting for the fleet's rolling slot ({self._want})"
        if self.link.reachable is False:
            return "fleet: Redis unreachable (serving as usual)"
        return None

    @property
    def not_ready(self) -> str | None:
        """Why `/ready` says 503 whatever the phase, if the fleet says so."""
        return None if self.joined else "fleet: not joined yet (its Redis not reached)"

    def next_deadline(self, now: float) -> float:
        """When the flow next needs a tick."""
        deadlines = [now + 1.0] if self.hold is not None or self._in_flight else []
        if self._refusal_at is not None:
            deadlines.append(self._refusal_at)
        return min(deadlines, default=float("inf"))

    # -- start ---------------------------------------------------------------------------

    def resume(self) -> None:
        """Before the first tick: go on holding read-only if the supervisor before us did
        (the hold file), or start read-only if a fleet gc is under way now. No slot: the
        registry is not serving from this supervisor yet."""
        settings = self._r.desired.settings
        self.joined = fleet_hold.joined_path(settings).exists()
        path = fleet_hold.hold_path(settings)
        hold = fleet_hold.read(path)
        if hold is not None and _ended_why(hold, set()) is not None:
            fleet_hold.remove(path)
            self.log.info("fleet.hold_expired", lease=hold.token)
            hold = None
        if hold is None:
            lease = self.link.lease_at_start()
            if lease is None:
                return
            hold = _new_hold(lease)
            try:
                fleet_hold.write(path, hold)
            except OSError as err:
                self.log.error("fleet.hold_not_kept", error=str(err))
        self.hold, self.read_only = hold, True
        self._r.apply_settings(read_only_settings(settings))
        self.link.watch_release(hold.token)
        self._refusal_at = self._r.clock()  # confirmed once the registry refuses an upload
        self.log.warning("fleet.gc_hold_at_start", lease=hold.token)

    # -- what the link reports -----------------------------------------------------------

    def on_lease(self, lease: GcLease) -> None:
        """A gc lease is in force: hold read-only for it, unless we already do or did."""
        if lease.token in self._ended or (self.hold is not None and self.hold.token == lease.token):
            return
        previous = self.hold
        if previous is not None:
            # The old lease is gone from Redis (expired, or Redis lost it) without a release
            # we saw: its collector may still run, so the new hold lasts at least as long.
            self._ended.add(previous.token)
            self.confirmed = None
            self.log.info("fleet.gc_hold_superseded", lease=previous.token)
        released = previous is not None and previous.token in self._released
        self.hold = _new_hold(lease, previous, released=released)
        self.link.watch_release(lease.token)
        self.log.warning(
            "fleet.gc_hold", lease=lease.token, holder=lease.holder, hold_s=lease.hold_s
        )
        if self.read_only:
            # Still read-only from the last hold: confirm again once it refuses writes, and
            # stay so. A switch back to normal still waiting for the slot is off: granted
            # after this confirms, it would make the registry writable under the new
            # lease's collector while the heartbeat goes on confirming.
            if self._want == NORMAL:
                self._want = None
                if self._in_flight is None:
                    self.link.want_slot(None)
            self._keep(self.hold)
            self._refusal_at = self._r.clock()
        else:
            self._ask_slot(READ_ONLY)

    def on_released(self, token: str) -> None:
        """The initiator released the lease: its collector is gone. The hold ends now,
        unless it took over an older one that was never released (then at its floor)."""
        if self.hold is None or self.hold.token != token or token in self._released:
            return
        self._released.add(token)
        why = _ended_why(self.hold, self._released)
        if why is not None:
            self._end(why)
        else:
            self.log.info("fleet.release_deferred", lease=token, why="an older hold it took over")

    def on_slot(self, why: str) -> None:
        """The rolling slot is ours: do what it was wanted for."""
        want, self._want = self._want, None
        if want is None:
            if self._in_flight is None:
                # (else a grant again for what runs now: kept until it is done)
                self.link.want_slot(None)
            return
        now = self._r.clock()
        settings = self._r.desired.settings
        if want == READ_ONLY and self.hold is not None:
            self._keep(self.hold)
            self.read_only = True
            self._r.apply_settings(read_only_settings(settings))
        elif want == NORMAL and self.hold is not None:
            # A hold began while the slot was on its way: stay read-only.
            if self._in_flight is None:
                self.link.want_slot(None)
            return
        elif want == NORMAL:
            self.read_only = False
            self._r.apply_settings(writable_settings(settings))
            fleet_hold.remove(fleet_hold.hold_path(settings))
        elif want != RELOAD:
            self.link.want_slot(None)
            return
        self._in_flight, self._in_flight_since = want, now
        self._reload_waiting = False  # the restart runs the settings in force
        self.log.info("fleet.planned_restart", why=want)
        serving = self._r.phase in (Phase.HEALTHY, Phase.DEGRADED)
        self._r.keeper.cancel()
        self._r.schedule_repair(
            now,
            RepairNeeded(Reason.SPEC_CHANGED),
            drain_s=self._r.desired.settings.ready_drain if serving else 0.0,
        )

    def planned_reload(self) -> None:
        """A reload changed the spec of a serving registry: replace it when the slot is ours."""
        self._reload_waiting = True
        if self._want is None:
            self._ask_slot(RELOAD)

    def stand_aside(self) -> None:
        """Another process took the maintenance lock (`update`, `gc`): it may recreate the
        registry as it likes (writable: `update` knows nothing of the hold). No
        confirmation is ours to give until the registry refuses an upload again."""
        if self.confirmed is not None:
            self.log.warning("fleet.read_only_unconfirmed", lease=self.confirmed, why="maintenance")
        self.confirmed, self._refusal_at = None, None

    def take_back(self, now: float) -> None:
        """The maintenance lock is gone: confirm again once the registry refuses writes."""
        if self.hold is not None and self.read_only:
            self._refusal_at = now

    # -- what the loop sees --------------------------------------------------------------

    def tick(self, now: float) -> None:
        """The hold's time, the refusal check, a slot held too long, the first join."""
        if not self.joined and self.link.reachable:
            self._join()
        hold = self.hold
        if hold is not None:
            why = _ended_why(hold, self._released)
            if why is not None:
                self._end(why)
        if self._refusal_at is not None and now >= self._refusal_at:
            self._check_refusal(now)
        if self._in_flight is not None and now - self._in_flight_since > SLOT_GIVE_UP_S:
            self.log.warning("fleet.slot_given_up", why=self._in_flight, after_s=SLOT_GIVE_UP_S)
            self._done()

    def healthy(self, now: float) -> None:
        """The registry answered healthy after a start: a planned replacement is done,
        once the push canary has had its round too (where it runs: not read-only)."""
        if self._in_flight is None:
            return
        if self._in_flight == READ_ONLY:
            self._refusal_at = now  # confirmed once it refuses an upload
        elif self._r.canary is not None and self._r.canary.on:
            self._canary_pending = True  # the slot is handed on after that round
            return
        self.log.info("fleet.planned_restart_done", why=self._in_flight)
        self._done()

    def canary_done(self, passed: bool) -> None:
        """A canary round ended: a planned replacement that waited for it is done."""
        if not self._canary_pending or self._in_flight is None:
            return
        self._canary_pending = False
        self.log.info("fleet.planned_restart_done", why=self._in_flight, canary_passed=passed)
        self._done()

    def _done(self) -> None:
        self._in_flight, self._canary_pending = None, False
        if self._want is None:
            self.link.want_slot(None)
        # else: wanted again meanwhile (the hold ended): the link grants it anew

    def _check_refusal(self, now: float) -> None:
        hold = self.hold
        if hold is None or not self.read_only:
            self._refusal_at = None
            return
        settings = self._r.desired.settings
        timeout = settings.health_timeout
        why = self._feeder.blocking(
            "fleet-refusal", 2 * timeout, lambda: self._refuses(settings, timeout)
        )
        if why is None:
            self._refusal_at = None
            if self.confirmed != hold.token:
                self.confirmed = hold.token
                self.log.info("fleet.read_only_confirmed", lease=hold.token)
            return
        self.log.warning("fleet.read_only_not_yet", lease=hold.token, detail=why)
        self._refusal_at = now + REFUSAL_RETRY_S

    # -- ends ----------------------------------------------------------------------------

    def _end(self, why: str) -> None:
        hold = self.hold
        if hold is None:
            return
        self._ended.add(hold.token)
        self.hold, self.confirmed, self._refusal_at = None, None, None
        self.link.watch_release(None)
        self.log.info("fleet.gc_hold_ended", lease=hold.token, why=why)
        if self.read_only:
            self._ask_slot(NORMAL)
        elif self._want == READ_ONLY and self._reload_waiting:
            self._ask_slot(RELOAD)  # the reload it stood in front of
        elif self._want == READ_ONLY:
            self._want = None
            if self._in_flight is None:
                self.link.want_slot(None)

    def _join(self) -> None:
        """The first heartbeat reached the fleet: in its roster from now on."""
        self.joined = True
        self.log.info("fleet.joined", member=self._r.desired.settings.fleet_member)
        try:
            fleet_hold.mark_joined(fleet_hold.joined_path(self._r.desired.settings))
        except OSError as err:
            self.log.warning("fleet.joined_not_kept", error=str(err))

    def _keep(self, hold: Hold) -> None:
        """Keep ``hold`` in the hold file: a restarted supervisor goes on holding it."""
        try:
            fleet_hold.write(fleet_hold.hold_path(self._r.desired.settings), hold)
        except OSError as err:
            # Without the file a restarted supervisor would not know it holds: go on
            # anyway (the registry must refuse writes now), and say so.
            self.log.error("fleet.hold_not_kept", error=str(err))

    def _ask_slot(self, why: str) -> None:
        self._want = why
        self.link.want_slot(why)
