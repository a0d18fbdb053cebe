"""The reload flow: apply a checked reload plan, gate a new image, roll back what failed.

Part of the reconciler (supervisor/loop/reconciler.py), split out by concern. The
reloader (supervisor/loop/reload.py) plans and checks; this applies the plan to the
reconciler's components and, when the new container fails (or its new image fails the
gate), puts back the settings and the image that worked.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from supervisor.errors import ImageUnavailable
from supervisor.loop import canary as canary_loop
from supervisor.loop.fleet_flow import read_only_settings
from supervisor.loop.keeper import RepairNeeded
from supervisor.loop.reload import Deferred, ReloadPlan, RollBack
from supervisor.phase import Phase
from supervisor.reconcile import Reason
from supervisor.settings import PullPolicy

if TYPE_CHECKING:
    from supervisor.loop.reconciler import Reconciler


class ReloadFlow:
    """SIGHUP's effects on the running registry, and their undoing."""

    def __init__(self, reconciler: Reconciler) -> None:
        self._r = reconciler

    @property
    def log(self) -> Any:
        """The reconciler's logger (rebound on reload)."""
        return self._r.log

    def fails_gate(self, now: float) -> bool:
        """A reload's new image answers /v2/: it stays only if the gate's checks pass
        (supervisor/adapters/manifests.py); else back to what worked. Whether it failed."""
        why = self._r.reloader.gate_failure(self._r.desired.settings)
        if why is None:
            return False
        rollback = self._r.reloader.roll_back_now(
            Reason.SPEC_CHANGED, self._r.desired.spec.spec_hash, failed_check=why
        )
        if rollback is None:
            return False
        self.roll_back(rollback)
        self._r.keeper.cancel()
        self._r.schedule_repair(now, RepairNeeded(Reason.SPEC_CHANGED))
        return True

    def reload(self) -> None:
        """SIGHUP: re-read settings; replace the container only if its spec changed
        (supervisor/loop/reload.py says what a reload never does)."""
        with self._r.readiness.reloading():
            self.log.info("supervisor.reloading")
            if self._r.fleet is not None and self._r.fleet.busy:
                # A fleet gc holds this registry read-only (or a planned restart runs):
                # the reload would make it writable. Taken up once that is over.
                self._r.reloader.defer("fleet")
                return
            in_maintenance = self._r.look_at_gate(self._r.clock())
            plan = self._r.reloader.plan(self._r.desired, in_maintenance=in_maintenance)
            if isinstance(plan, Deferred) and plan.engine_error is not None:
                self._r.engine_lost(plan.engine_error)
                self._r.reloader.defer("maintenance" if self._r.gate.active else "engine-down")
            elif isinstance(plan, ReloadPlan):
                self.apply(plan)

    def apply(self, plan: ReloadPlan) -> None:
        """Make a checked plan the settings in force; replace the container if its spec
        changed (kept for rollback until the new one was healthy, its image gated)."""
        old_settings, old_spec = self._r.desired.settings, self._r.desired.spec
        old_image_id, old_info = self._r.images.image_id, self._r.images.info
        new = plan.settings
        changed = plan.spec.spec_hash != old_spec.spec_hash
        self._r.images.use(plan.info)
        self._r.apply_settings(new)
        if self._r.canary is not None and not self._r.canary.on:
            self._r.serving.recover(canary_loop.SOURCE)  # turned off: it no longer says anything
        if plan.image_id is not None:
            self._r.images.image_id = plan.image_id
        elif new.image_ref != old_settings.image_ref or new.pull is PullPolicy.ALWAYS:
            self._r.images.forget()  # looked at anew (_ensure_image)
            if self._r.readiness.sent:  # a new image id found then is gated (_ensure_image)
                self._r.reloader.remember_image_before(old_settings, old_image_id, old_info)
        if self._r.link.connected and new.name != old_settings.name:
            self._r.actions.retire_all(old_spec)
        self.log.info("supervisor.reloaded", spec_changed=changed, spec_hash=plan.spec.spec_hash)
        self._r.warn_risks()
        if changed and self._r.link.connected and self._r.images.image_id is not None:
            if self._r.readiness.sent:
                self._r.reloader.keep_for_rollback(old_settings, old_image_id, old_info)
                if old_image_id not in (None, self._r.images.image_id):
                    # A new image id: kept only if it also passes the gate (_healthy).
                    self._r.reloader.gate_new_image(old_settings)
            # A serving registry drains first: the load balancer's checks see `/ready` 503
            # (RESTARTING) for MY_REG_READY_DRAIN seconds before the old one is stopped.
            serving = self._r.phase in (Phase.HEALTHY, Phase.DEGRADED)
            if serving and self._r.fleet is not None:
                # One member at a time across the fleet: drained once the slot is ours.
                self._r.fleet.planned_reload()
                return
            self._r.keeper.cancel()
            self._r.schedule_repair(
                self._r.clock(),
                RepairNeeded(Reason.SPEC_CHANGED),
                drain_s=new.ready_drain if serving else 0.0,
            )

    def roll_back(self, rollback: RollBack) -> None:
        """The reloaded spec did not work: back to the settings that did."""
        failed_spec = self._r.desired.spec
        image_id = rollback.image_id
        if image_id is not None and image_id != self._r.images.image_id:
            self._retag(rollback.settings.image_ref, image_id)
        if self._r.images.info is not None and self._r.images.info.id != image_id:
            if rollback.info is not None and rollback.info.id == image_id:
                # Back to the image that worked as it was known: no new look, and no pull
                # (MY_REG_PULL=always would fetch the refused image again).
                self._r.images.use(rollback.info)
            else:
                # The old image's layout is looked up again with it (_ensure_image).
                self._r.images.forget()
                image_id = None
        settings = rollback.settings
        if self._r.fleet is not None and self._r.fleet.read_only:
            # A fleet gc holds this registry read-only: the settings that worked, but
            # still read-only (supervisor/loop/fleet_flow.py).
            settings = read_only_settings(settings)
        self._r.apply_settings(settings)
        self._r.images.image_id = image_id
        self._r.keeper.failed_starts = 0
        if self._r.link.connected and failed_spec.name != rollback.settings.name:
            self._r.actions.retire_all(failed_spec)

    def _retag(self, ref: str, image_id: str) -> None:
        """Point ``ref`` at the image that worked again: the container is created by the
        tag, and a supervisor started afresh resolves it (never the refused image)."""
        try:
            if self._r.link.docker.image_id(ref) != image_id:
                self._r.link.docker.tag(image_id, ref)
                self.log.warning("image.retagged", image_id=image_id, ref=ref)
        except ImageUnavailable as err:
            self.log.warning("image.retag_failed", image_id=image_id, ref=ref, error=str(err))
