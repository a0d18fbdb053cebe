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
    ConfigError,
    EngineRefused,
    EngineUnavailable,
    ImageUnavailable,
    PortBusy,
)
from supervisor.loop import canary as canary_loop
from supervisor.loop.container_actions import ContainerActions, Desired, Tracked
from supervisor.loop.engine_link import EngineLink, Unreachable
from supervisor.loop.health_watch import HealthWatch, Verdict
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
from supervisor.loop.reload import Deferred, Reloader, ReloadPlan, RollBack
from supervisor.loop.startup import Readiness
from supervisor.phase import Phase, check_transition
from supervisor.reconcile import Reason
from supervisor.settings import PullPolicy, Settings
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
        self._apply_settings = apply_settings
        self._warn_risks = warn_risks
        self.phase = Phase.ENGINE_DOWN
        # A failed probe found the container down: look at it once queued events are in.
        self.look_again = False
        # What makes a serving registry degraded, by source (the probe's dependency check,
        # the push canary): a detail each, shown in STATUS; empty while all is well.
        self.degraded: dict[str, str] = {}
        self.log: Any = keeper.log

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
        runnable = self._runnable_canary()
        if runnable is not None:
            deadlines.append(runnable.next_at)
        return min(deadlines)

    def tick(self, now: float) -> bool:
        """The first due of reconnect, image, repair, look, probe. False: `gc` holds the
        registry, and the loop stands aside."""
        if self.look_at_gate(now):
            return False
        if self.link.connected and self.reloader.take_pending():
            self.reload()
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
                self._probe(now)
            elif (runnable := self._runnable_canary()) is not None and runnable.due(now):
                self._run_canary(now, runnable)
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
        self, now: float, need: RepairNeeded, *, after_failure: bool = False
    ) -> None:
        """Count a restart, log it once, and set when it happens (backoff); nothing while
        `gc` holds the registry or a repair is already pending."""
        if self.gate.active or self.keeper.repairing:
            return
        rollback = self.reloader.roll_back_for(need.reason, self.desired.spec.spec_hash)
        if rollback is not None:
            # The reloaded container failed before it ever served: the old spec did.
            self.keeper.count(need.reason)
            self._roll_back(rollback)
            need = RepairNeeded(Reason.SPEC_CHANGED, need.exit_code, need.part)
            after_failure = False
        self.keeper.schedule(now, need, after_failure=after_failure)
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
            self._roll_back(rollback)
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

    # -- health --------------------------------------------------------------------------

    def _probe(self, now: float) -> None:
        answer = self.health.probe(now)
        now = self.clock()
        if answer.healthy:
            self._healthy(now)
            return
        if self.look_at_gate(now):
            return  # `gc` stopped it on purpose while we asked
        verdict = self.health.judge(
            answer, now, starting=self.phase is Phase.STARTING, running=self.actions.both_running()
        )
        if verdict in (Verdict.DEPENDENCY, Verdict.DEPENDENCY_RESTART):
            restart = verdict is Verdict.DEPENDENCY_RESTART
            self._dependency_failed(now, answer.detail, restart=restart)
            return
        if verdict is Verdict.REPINNED:
            return
        self.keeper.observe_unhealthy()
        if verdict is Verdict.DOWN:
            # A container that is not running needs a repair, not more probes. The events
            # already queued come first: a `kill` before the `die` tells a stop from a crash.
            self.look_again = True
            return
        if verdict is Verdict.MUST_RESTART:
            self.schedule_repair(now, RepairNeeded(Reason.UNHEALTHY))
        elif verdict is not Verdict.IN_GRACE:
            self.change_phase(Phase.UNHEALTHY)

    def _dependency_failed(self, now: float, detail: str, *, restart: bool) -> None:
        """The registry answers 503 for its own health check (its storage, most often):
        degraded, not hung. It serves no request meanwhile, but a restart cannot mend a
        storage outage: only the health watch's long backoff restarts it (``restart``)."""
        self.degrade("dependency", detail)
        if restart:
            self.schedule_repair(now, RepairNeeded(Reason.UNHEALTHY))
            return
        if self.phase is not Phase.DEGRADED:
            # STARTING or UNHEALTHY: the process is up and answering, so startup is over
            # (READY: systemd must not time the unit out over a storage outage).
            self.change_phase(Phase.DEGRADED)
            self.readiness.ready(now)

    # -- push canary ---------------------------------------------------------------------

    def _runnable_canary(self) -> canary_loop.Canary | None:
        """The canary, if it may run: only while the registry serves and nothing else
        degrades it (a failing storage check fails pushes anyway), with no repair pending,
        so that a round never delays one."""
        may = (
            self.canary is not None
            and self.canary.on
            and self.phase in (Phase.HEALTHY, Phase.DEGRADED)
            and set(self.degraded) <= {canary_loop.SOURCE}
            and self.probing
            and self.keeper.repair_at is None
            and not self.look_again
        )
        return self.canary if may else None

    def _run_canary(self, now: float, canary: canary_loop.Canary) -> None:
        info = self.images.info
        outcome = canary.run(now, info.version if info is not None else None)
        if self.look_at_gate(self.clock()):
            return  # `gc` made the registry read-only while we wrote: no verdict
        if isinstance(outcome, canary_loop.Failed):
            # Never a restart: a restart cannot fix storage that refuses writes.
            self.degrade(canary_loop.SOURCE, f"pushes failing ({outcome.reason})")
        elif isinstance(outcome, canary_loop.Passed) or not canary.on:
            self.recover(canary_loop.SOURCE)

    def degrade(self, source: str, detail: str) -> None:
        """``source`` says the serving registry cannot do its job (``detail``, one phrase)."""
        if self.degraded.get(source) != detail:
            self.log.warning("registry.degraded", source=source, detail=detail)
        self.degraded[source] = detail
        self.health.metrics.degraded.labels(source=source).set(1)
        if self.phase is Phase.HEALTHY:
            self.change_phase(Phase.DEGRADED)

    def recover(self, source: str) -> None:
        """``source`` works again; the registry is healthy once no source is degraded."""
        if self.degraded.pop(source, None) is not None:
            self.log.info("registry.recovered", source=source)
            self.health.metrics.degraded.labels(source=source).set(0)
        if not self.degraded and self.phase is Phase.DEGRADED:
            self.change_phase(Phase.HEALTHY)

    def _healthy(self, now: float) -> None:
        if self.reloader.gate_pending and self._fails_gate(now):
            return
        # A registry degraded by its own health check served nothing: up from now on.
        newly = self.phase not in (Phase.HEALTHY, Phase.DEGRADED) or "dependency" in self.degraded
        self.recover("dependency")  # it answers 200/401: its own health check passes
        if newly:
            self.log.info(
                "registry.healthy",
                container_id=(self.tracked.container_id or "")[:12],
                after_s=round(now - self.health.started_at, 3),
                restarts=sum(self.keeper.restarts.values()),
            )
            self.change_phase(Phase.DEGRADED if self.degraded else Phase.HEALTHY)
        self.health.served(now, newly=newly)
        self.link.registry_healthy()
        self.keeper.observe_healthy(now)
        self.reloader.confirm(self.desired.spec.spec_hash)
        self.readiness.ready(now)

    def _fails_gate(self, now: float) -> bool:
        """A reload's new image answers /v2/: it stays only if the gate's checks pass
        (supervisor/adapters/manifests.py); else back to what worked. Whether it failed."""
        why = self.reloader.gate_failure(self.desired.settings)
        if why is None:
            return False
        rollback = self.reloader.roll_back_now(
            Reason.SPEC_CHANGED, self.desired.spec.spec_hash, failed_check=why
        )
        if rollback is None:
            return False
        self._roll_back(rollback)
        self.keeper.cancel()
        self.schedule_repair(now, RepairNeeded(Reason.SPEC_CHANGED))
        return True

    # -- reload --------------------------------------------------------------------------

    def reload(self) -> None:
        """SIGHUP: re-read settings; replace the container only if its spec changed
        (supervisor/loop/reload.py says what a reload never does)."""
        with self.readiness.reloading():
            self.log.info("supervisor.reloading")
            in_maintenance = self.look_at_gate(self.clock())
            plan = self.reloader.plan(self.desired, in_maintenance=in_maintenance)
            if isinstance(plan, Deferred) and plan.engine_error is not None:
                self.engine_lost(plan.engine_error)
                self.reloader.defer("maintenance" if self.gate.active else "engine-down")
            elif isinstance(plan, ReloadPlan):
                self._apply(plan)

    def _apply(self, plan: ReloadPlan) -> None:
        old_settings, old_spec = self.desired.settings, self.desired.spec
        old_image_id, old_info = self.images.image_id, self.images.info
        new = plan.settings
        changed = plan.spec.spec_hash != old_spec.spec_hash
        self.images.use(plan.info)
        self._apply_settings(new)
        if self.canary is not None and not self.canary.on:
            self.recover(canary_loop.SOURCE)  # turned off: it no longer says anything
        if plan.image_id is not None:
            self.images.image_id = plan.image_id
        elif new.image_ref != old_settings.image_ref or new.pull is PullPolicy.ALWAYS:
            self.images.forget()  # looked at anew (_ensure_image)
            if self.readiness.sent:  # a new image id found then is gated (_ensure_image)
                self.reloader.remember_image_before(old_settings, old_image_id, old_info)
        if self.link.connected and new.name != old_settings.name:
            self.actions.retire_all(old_spec)
        self.log.info("supervisor.reloaded", spec_changed=changed, spec_hash=plan.spec.spec_hash)
        self._warn_risks()
        if changed and self.link.connected and self.images.image_id is not None:
            if self.readiness.sent:
                self.reloader.keep_for_rollback(old_settings, old_image_id, old_info)
                if old_image_id not in (None, self.images.image_id):
                    # A new image id: kept only if it also passes the gate (_healthy).
                    self.reloader.gate_new_image(old_settings)
            self.keeper.cancel()
            self.schedule_repair(self.clock(), RepairNeeded(Reason.SPEC_CHANGED))

    def _roll_back(self, rollback: RollBack) -> None:
        """The reloaded spec did not work: back to the settings that did."""
        failed_spec = self.desired.spec
        image_id = rollback.image_id
        if image_id is not None and image_id != self.images.image_id:
            self._retag(rollback.settings.image_ref, image_id)
        if self.images.info is not None and self.images.info.id != image_id:
            if rollback.info is not None and rollback.info.id == image_id:
                # Back to the image that worked as it was known: no new look, and no pull
                # (MY_REG_PULL=always would fetch the refused image again).
                self.images.use(rollback.info)
            else:
                # The old image's layout is looked up again with it (_ensure_image).
                self.images.forget()
                image_id = None
        self._apply_settings(rollback.settings)
        self.images.image_id = image_id
        self.keeper.failed_starts = 0
        if self.link.connected and failed_spec.name != rollback.settings.name:
            self.actions.retire_all(failed_spec)

    def _retag(self, ref: str, image_id: str) -> None:
        """Point ``ref`` at the image that worked again: the container is created by the
        tag, and a supervisor started afresh resolves it (never the refused image)."""
        try:
            if self.link.docker.image_id(ref) != image_id:
                self.link.docker.tag(image_id, ref)
                self.log.warning("image.retagged", image_id=image_id, ref=ref)
        except ImageUnavailable as err:
            self.log.warning("image.retag_failed", image_id=image_id, ref=ref, error=str(err))

    # -- maintenance ---------------------------------------------------------------------

    def look_at_gate(self, now: float) -> bool:
        """Look at the maintenance lock and act on a start or an end; whether it holds."""
        look = self.gate.look(now)
        if look.engine_error is not None:
            self.engine_lost(look.engine_error)
        if look.change is Change.STARTED:
            self.change_phase(Phase.MAINTENANCE)
            self.keeper.cancel()
        elif look.change is Change.ENDED:
            self._after_maintenance(now)
        return self.gate.active

    def _after_maintenance(self, now: float) -> None:
        """Adopt what `gc` left (the normal container); repair it if it left none."""
        self._enter_starting(now)
        if not self.link.connected:
            self.change_phase(Phase.ENGINE_DOWN)
        if not self.link.connected or self.images.image_id is None:
            return
        try:
            self._resolve_tag_again()
            self.check_container(now)
        except EngineUnavailable as err:
            self.engine_lost(str(err))

    def _resolve_tag_again(self) -> None:
        """`registry-supervisor update` may have moved the tag (to the new image, or back
        after a rollback): take the image it names now, looked up locally, never pulled,
        so that the container `update` left is adopted rather than "repaired" back to the
        image id resolved before."""
        settings, ref = self.desired.settings, self.desired.spec.image
        try:
            present = self.link.docker.image_id(ref)
        except ImageUnavailable:
            present = None
        if present == self.images.image_id:
            return
        try:
            info = None if present is None else self.images.inspect(settings, present)
        except ConfigError as err:
            self.log.error("image.unusable", image_id=present, problems=err.problems)
            info = None
        if present is None or info is None:
            self.images.forget()  # looked for again, per MY_REG_PULL (_ensure_image)
            return
        self.images.use(info)
        self.images.image_id = present
        self.desired.spec = derive_spec(settings, self.images.layout)
