"""The reconciler: one tick at a time, the registry moves toward its spec.

It owns the phase and moves it only through ``change_phase``. Its components report (the
engine link: connected or lost; the image keeper: ready or missing; the container keeper:
what is down and what a repair came to; the health watch: a verdict; the maintenance gate:
a start or an end; the reloader: a plan), and the reconciler decides what each report
means for the others. It never waits: every step is bounded (supervisor/loop/watchdog.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from supervisor.engine.events import ContainerEvent
from supervisor.errors import (
    EngineRefused,
    EngineUnavailable,
    PortBusy,
)
from supervisor.loop import canary as canary_loop
from supervisor.loop.container_actions import ContainerActions, Desired, Tracked
from supervisor.loop.engine_link import EngineLink, Unreachable
from supervisor.loop.fleet_flow import FleetFlow
from supervisor.loop.health_watch import HealthWatch
from supervisor.loop.image import ImageKeeper, ImageMissing
from supervisor.loop.keeper import (
    ContainerKeeper,
    ImageGone,
    PortHeld,
    Repaired,
    RepairLater,
    RepairNeeded,
)
from supervisor.loop.maintenance_gate import MAINTENANCE_POLL_S, Change, MaintenanceGate
from supervisor.loop.reload import Reloader
from supervisor.loop.reload_flow import ReloadFlow
from supervisor.loop.serving import Serving
from supervisor.loop.startup import Readiness
from supervisor.phase import Phase, check_transition
from supervisor.reconcile import Reason
from supervisor.settings import Settings
from supervisor.spec import derive_spec


class Reconciler:
    """Decides, tick by tick, what the registry and its holder need; owns the phase."""

    def __init__(
        self,
        *,
        desired: Desired,
        link: EngineLink,
        images: ImageKeeper,
        keeper: ContainerKeeper,
        health: HealthWatch,
        gate: MaintenanceGate,
        reloader: Reloader,
        readiness: Readiness,
        clock: Callable[[], float],
        apply_settings: Callable[[Settings], None],
        warn_risks: Callable[[], None],
        canary: canary_loop.Canary | None = None,
    ) -> None:
        self.desired = desired
        self.link = link
        self.images = images
        self.keeper = keeper
        self.actions: ContainerActions = keeper.actions
        self.tracked: Tracked = keeper.tracked
        self.health = health
        self.gate = gate
        self.reloader = reloader
        self.readiness = readiness
        self.canary = canary
        self.clock = clock
        # Settings reach every component through the supervisor, which built them.
        self.apply_settings = apply_settings
        self.warn_risks = warn_risks
        self.phase = Phase.ENGINE_DOWN
        # A failed probe found the container down: look at it once queued events are in.
        self.look_again = False
        self.log: Any = keeper.log
        # The reconciler's two flows, split out by concern (each calls back into this).
        self.serving = Serving(self)
        self.reloads = ReloadFlow(self)
        # Fleet mode only (MY_REG_FLEET_REDIS): set by the supervisor, which has the link.
        self.fleet: FleetFlow | None = None

    def change_phase(self, new: Phase) -> None:
        """The one way the phase moves; an illegal transition is a bug (IllegalTransition)."""
        self.phase = check_transition(self.phase, new)

    @property
    def probing(self) -> bool:
        """Probes run once a container is in place and no repair is pending."""
        return (
            self.link.connected and self.images.image_id is not None and not self.keeper.repairing
        )

    def next_deadline(self, now: float) -> float:
        """When the next step of the reconciler is due."""
        if self.gate.active:
            return now + MAINTENANCE_POLL_S
        deadlines = [self.health.probe_at if self.probing else float("inf")]
        if self.look_again and self.link.connected and self.images.image_id is not None:
            deadlines.append(now)
        if not self.link.connected:
            deadlines.append(self.link.retry_at)
        elif self.images.image_id is None:
            deadlines.append(self.images.retry_at)
        if self.keeper.repair_at is not None:
            deadlines.append(self.keeper.repair_at)
        runnable = self.serving.runnable_canary()
        if runnable is not None:
            deadlines.append(runnable.next_at)
        if self.fleet is not None:
            deadlines.append(self.fleet.next_deadline(now))
        return min(deadlines)

    def tick(self, now: float) -> bool:
        """The first due of reconnect, image, repair, look, probe. False: `gc` holds the
        registry, and the loop stands aside."""
        if self.look_at_gate(now):
            return False
        fleet_busy = False
        if self.fleet is not None:
            self.fleet.tick(now)
            fleet_busy = self.fleet.busy
        if self.link.connected and not fleet_busy and self.reloader.take_pending():
            self.reloads.reload()
            if self.gate.active:
                return False  # `gc` took the lock while the reload looked
        try:
            if not self.link.connected:
                self._connect(now)
            elif self.images.image_id is None:
                self._ensure_image(now)
            elif self.look_again:
                self.look_again = False
                self.check_container(now)
            elif self.keeper.repair_due(now):
                self._repair(now)
            elif self.probing and self.health.due(now):
                self.serving.probe(now)
            elif (runnable := self.serving.runnable_canary()) is not None and runnable.due(now):
                self.serving.run_canary(now, runnable)
        except (EngineUnavailable, EngineRefused) as err:
            # A refusal here is a bug of ours or an engine we do not know: reconnect with
            # the backoff rather than repeat the request in a hot loop.
            self.engine_lost(str(err))
        return True

    def on_event(self, event: ContainerEvent) -> None:
        """An engine event for the registry or its holder: a die or destroy is looked at."""
        if not self.link.connected or self.look_at_gate(self.clock()):
            return
        self.keeper.record_event(event)
        if event.action in ("die", "destroy"):
            try:
                self.check_container(self.clock())
            except EngineUnavailable as err:
                self.engine_lost(str(err))

    # -- engine --------------------------------------------------------------------------

    def _connect(self, now: float) -> None:
        result = self.link.connect(now, (self.desired.settings.name, self.desired.holder.name))
        if result is None:
            return
        if isinstance(result, Unreachable):
            self.change_phase(Phase.ENGINE_DOWN)
            self.readiness.extend(0.0)
            return
        if result.after_loss:
            self.keeper.engine_restarted()
        if self.images.image_id is not None:
            self._reconcile_again(self.clock())

    def engine_lost(self, detail: str) -> None:
        """The engine failed us: drop the link, forget the pending repair, back off."""
        if not self.link.lose(detail):
            return
        self.look_again = False  # reconnecting looks at everything anyway
        self.keeper.cancel()
        self.change_phase(Phase.ENGINE_DOWN)

    def _reconcile_again(self, now: float) -> None:
        """After an engine loss or a new image: adopt what is fine, repair the rest."""
        self.keeper.forget_events()
        self.check_container(now, down_reason=Reason.ENGINE_RESTARTED)
        if not self.keeper.repairing:
            self._enter_starting(now)

    # -- image ---------------------------------------------------------------------------

    def _ensure_image(self, now: float) -> None:
        outcome = self.images.ensure(now, self.desired.settings, self.desired.spec.image)
        if outcome is None:
            return
        if isinstance(outcome, ImageMissing):
            self.change_phase(Phase.PULLING)
            self.readiness.extend(outcome.delay_s)
            return
        self.desired.spec = derive_spec(self.desired.settings, self.images.layout)
        before = self.reloader.take_image_before()
        if before is not None and before.image_id not in (None, outcome.image_id):
            # A reload (MY_REG_PULL=always) found a new image id: kept only if it passes
            # the gate, like a reload with new settings (see _apply).
            self.reloader.keep_for_rollback(before.settings, before.image_id, before.info)
            self.reloader.gate_new_image(before.settings)
        if self.tracked.container_id is None:
            self.keeper.reconcile_now(self.clock())
        else:
            self._reconcile_again(self.clock())

    # -- container -----------------------------------------------------------------------

    def check_container(self, now: float, down_reason: Reason | None = None) -> None:
        """Look at the container after an event or a failed probe; repair if it is down."""
        if self.keeper.repairing or self.gate.active or self.images.info is None:
            # (without the image's layout there is no spec to compare with: _ensure_image
            # reconciles once it has one)
            return
        need = self.keeper.check(self.images.image_id, down_reason)
        if need is not None:
            self.schedule_repair(now, need)

    def schedule_repair(
        self, now: float, need: RepairNeeded, *, after_failure: bool = False, drain_s: float = 0.0
    ) -> None:
        """Count a restart, log it once, and set when it happens (backoff); nothing while
        `gc` holds the registry or a repair is already pending. ``drain_s``: the planned
        replacement of a serving registry waits that long, `/ready` saying 503 (the phase
        is RESTARTING from now)."""
        if self.gate.active or self.keeper.repairing:
            return
        rollback = self.reloader.roll_back_for(need.reason, self.desired.spec.spec_hash)
        if rollback is not None:
            # The reloaded container failed before it ever served: the old spec did.
            self.keeper.count(need.reason)
            self.reloads.roll_back(rollback)
            need = RepairNeeded(Reason.SPEC_CHANGED, need.exit_code, need.part)
            after_failure, drain_s = False, 0.0  # the failed container serves nobody
        self.keeper.schedule(now, need, after_failure=after_failure, drain_s=drain_s)
        self.change_phase(Phase.RESTARTING)

    def _repair(self, now: float) -> None:
        outcome = self.keeper.repair(now, self.images.image_id)
        if isinstance(outcome, Repaired):
            self._enter_starting(self.clock())
        elif isinstance(outcome, RepairLater) and outcome.retry is not None:
            self.schedule_repair(self.clock(), outcome.retry, after_failure=True)
        elif isinstance(outcome, ImageGone):
            self.images.image_id = None
        elif isinstance(outcome, PortHeld):
            self._port_busy(self.clock(), outcome.error)

    def _port_busy(self, now: float, err: PortBusy) -> None:
        rollback = self.reloader.roll_back_now(Reason.PORT_BUSY, self.desired.spec.spec_hash)
        if rollback is not None:
            # A reload onto a port that is taken: the settings that worked had one.
            self.reloads.roll_back(rollback)
            self.keeper.cancel()
            self.schedule_repair(now, RepairNeeded(Reason.SPEC_CHANGED))
            return
        delay = self.keeper.wait_for_port(now, err)
        self.change_phase(Phase.PORT_BUSY)
        self.readiness.extend(delay)

    def _enter_starting(self, now: float) -> None:
        """A container was just (re)started or adopted: probe fast, grace from now."""
        self.keeper.forget_events()
        self.health.starting(now)
        if self.canary is not None:
            self.canary.starting(now)
        self.change_phase(Phase.STARTING)

    # -- the flows' faces ---------------------------------------------------------------

    @property
    def degraded(self) -> dict[str, str]:
        """What degrades the serving registry, by source (supervisor/loop/serving.py)."""
        return self.serving.degraded

    def degrade(self, source: str, detail: str) -> None:
        """``source`` says the serving registry cannot do its job (``detail``)."""
        self.serving.degrade(source, detail)

    def recover(self, source: str) -> None:
        """``source`` works again."""
        self.serving.recover(source)

    def reload(self) -> None:
        """SIGHUP (supervisor/loop/reload_flow.py)."""
        self.reloads.reload()

    # -- maintenance ---------------------------------------------------------------------

    def look_at_gate(self, now: float) -> bool:
        """Look at the maintenance lock and act on a start or an end; whether it holds."""
        look = self.gate.look(now)
        if look.engine_error is not None:
            self.engine_lost(look.engine_error)
        if look.change is Change.STARTED:
            self.change_phase(Phase.MAINTENANCE)
            self.keeper.cancel()
            if self.fleet is not None:
                self.fleet.stand_aside()
        elif look.change is Change.ENDED:
            self._after_maintenance(now)
            if self.fleet is not None:
                self.fleet.take_back(now)
        return self.gate.active

    def _after_maintenance(self, now: float) -> None:
        """Adopt what `gc` left (the normal container); repair it if it left none."""
        self._enter_starting(now)
        if not self.link.connected:
            self.change_phase(Phase.ENGINE_DOWN)
        if not self.link.connected or self.images.image_id is None:
            return
        try:
            if self.images.resolve_again(self.desired.settings, self.desired.spec.image):
                self.desired.spec = derive_spec(self.desired.settings, self.images.layout)
            self.check_container(now)
        except EngineUnavailable as err:
            self.engine_lost(str(err))
