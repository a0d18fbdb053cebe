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


def _over(hold: Hold) -> bool:
    """Whether ``hold``'s time is up on this boot's clock."""
    return hold_ended(hold, set(), fleet_hold.boottime(), fleet_hold.boot_id()) is not None


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
        self._want: str | None = None  # what the slot is wanted for
        self._in_flight: str | None = None  # the planned replacement the slot is held for
        self._in_flight_since = 0.0
        self._refusal_at: float | None = None  # when to ask for the upload refusal

    @property
    def log(self) -> Any:
        """The reconciler's logger (rebound on reload)."""
        return self._r.log

    @property
    def busy(self) -> bool:
        """Whether a hold or a planned replacement is under way (reloads wait)."""
        return self.hold is not None or self.read_only or self._in_flight is not None

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
        path = fleet_hold.hold_path(settings)
        hold = fleet_hold.read(path)
        if hold is not None and _over(hold):
            fleet_hold.remove(path)
            self.log.info("fleet.hold_expired", lease=hold.token)
            hold = None
        if hold is None:
            lease = self.link.lease_at_start()
            if lease is None:
                return
            hold = hold_for(lease, fleet_hold.boottime(), fleet_hold.boot_id())
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
        if self.hold is not None:
            # A new lease means the old one ended (it is never renewed past its time).
            self._end("superseded")
        self.hold = hold_for(lease, fleet_hold.boottime(), fleet_hold.boot_id())
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
            self._keep_hold(self._r.desired.settings)
            self._refusal_at = self._r.clock()
        else:
            self._ask_slot(READ_ONLY)

    def on_released(self, token: str) -> None:
        """The initiator released the lease: its collector is gone."""
        if self.hold is not None and self.hold.token == token:
            self._end("released")

    def on_slot(self, why: str) -> None:
        """The rolling slot is ours: do what it was wanted for."""
        want, self._want = self._want, None
        if want is None:
            self.link.want_slot(None)
            return
        now = self._r.clock()
        settings = self._r.desired.settings
        if want == READ_ONLY and self.hold is not None:
            self._keep_hold(settings)
            self.read_only = True
            self._r.apply_settings(read_only_settings(settings))
        elif want == NORMAL:
            self.read_only = False
            self._r.apply_settings(writable_settings(settings))
            fleet_hold.remove(fleet_hold.hold_path(settings))
        elif want != RELOAD:
            self.link.want_slot(None)
            return
        self._in_flight, self._in_flight_since = want, now
        self.log.info("fleet.planned_restart", why=want)
        serving = self._r.phase in (Phase.HEALTHY, Phase.DEGRADED)
        self._r.keeper.cancel()
        self._r.schedule_repair(
            now,
            RepairNeeded(Reason.SPEC_CHANGED),
            drain_s=self._r.desired.settings.ready_drain if serving else 0.0,
        )

    def _keep_hold(self, settings: Settings) -> None:
        """The hold file for ``self.hold``: a supervisor restarted now goes on holding."""
        if self.hold is None:
            return
        try:
            fleet_hold.write(fleet_hold.hold_path(settings), self.hold)
        except OSError as err:
            # Without the file a restarted supervisor would not know it holds: go on
            # anyway (the registry must refuse writes now), and say so.
            self.log.error("fleet.hold_not_kept", error=str(err))

    def planned_reload(self) -> None:
        """A reload changed the spec of a serving registry: replace it when the slot is ours."""
        self._ask_slot(RELOAD)

    # -- what the loop sees --------------------------------------------------------------

    def tick(self, now: float) -> None:
        """The hold's time, the refusal check, a slot held too long."""
        hold = self.hold
        if hold is not None and _over(hold):
            self._end("expired")
        if self._refusal_at is not None and now >= self._refusal_at:
            self._check_refusal(now)
        if self._in_flight is not None and now - self._in_flight_since > SLOT_GIVE_UP_S:
            self.log.warning("fleet.slot_given_up", why=self._in_flight, after_s=SLOT_GIVE_UP_S)
            self._done()

    def healthy(self, now: float) -> None:
        """The registry answered healthy after a start: a planned replacement is done."""
        if self._in_flight is None:
            return
        if self._in_flight == READ_ONLY:
            self._refusal_at = now  # confirmed once it refuses an upload
        self.log.info("fleet.planned_restart_done", why=self._in_flight)
        self._done()

    def _done(self) -> None:
        self._in_flight = None
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
        elif self._want == READ_ONLY:
            self._want = None
            if self._in_flight is None:
                self.link.want_slot(None)

    def _ask_slot(self, why: str) -> None:
        self._want = why
        self.link.want_slot(why)
