"""The container keeper: what is down and why, when the repair runs, and its outcome.

It keeps the repair's bookkeeping (the backoff budget, the counts, the last reason, the
port wait) and reports outcomes; the loop moves the phase and decides what a reload or a
maintenance window means for a repair.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from supervisor.adapters.metrics import Metrics
from supervisor.backoff import BackoffPolicy, RestartBudget
from supervisor.engine.events import ContainerEvent
from supervisor.errors import ContainerActionFailed, ContainerGone, ImageUnavailable, PortBusy
from supervisor.loop.container_actions import ContainerActions, Desired, Tracked
from supervisor.observed import Observed
from supervisor.reconcile import Action, Decision, Reason, classify, decide

# `docker rm -f` in progress: look again this soon for the container to be gone.
REMOVAL_RECHECK_S = 0.05
# A host port held by something we may not take over: looked at again this often. Freeing
# it is someone's deliberate act, so the wait stays short.
PORT_RETRY = BackoffPolicy(base_s=0.5, factor=2.0, cap_s=10.0)
# Replacements the supervisor chooses to make, the old container working: a reload whose
# spec changed, a new image under the same tag, a container `gc` left read-only. They are
# counted apart from the failures (`restarts`), which say what happened to the registry.
# Not planned, though not the registry's fault either: `engine-restarted` (the engine
# stopped it: an outage we neither chose nor could drain; we cannot tell an upgrade of
# Docker from a crash of dockerd), `removed`, `stopped`, `foreign` and `network-lost`
# (someone else's act on our containers). `port-busy` is a wait, never a restart: it is in
# neither count, only in the last reason.
PLANNED_REASONS = frozenset({Reason.SPEC_CHANGED})


@dataclass(frozen=True)
class RepairNeeded:
    """The container is down (or wrong): repair it, counted as ``reason``."""

    reason: Reason
    exit_code: int | None = None
    part: str | None = None  # the holder's name when it is the holder that is down


@dataclass(frozen=True)
class Repaired:
    """The containers are in place: the registry starts now."""


@dataclass(frozen=True)
class RepairLater:
    """Not done: a removal is in progress, or the engine refused; ``retry`` the repair."""

    retry: RepairNeeded | None = None  # None: the same repair, shortly


@dataclass(frozen=True)
class ImageGone:
    """The image went away mid-repair: look for it again first."""

    detail: str


@dataclass(frozen=True)
class PortHeld:
    """The host port is held by something we may not take over."""

    error: PortBusy


RepairOutcome = Repaired | RepairLater | ImageGone | PortHeld


class ContainerKeeper:
    """Keeps the registry and its holder matching the spec, with backoff and counts."""

    def __init__(
        self,
        actions: ContainerActions,
        desired: Desired,
        tracked: Tracked,
        metrics: Metrics,
        log: Any,
    ) -> None:
        self.actions = actions
        self._desired = desired
        self.tracked = tracked
        self._metrics = metrics
        self.log = log
        # Engine events per container name since its last `start` event: why it went down.
        self.recent_actions: defaultdict[str, list[str]] = defaultdict(list)
        self.repair_at: float | None = None
        self.pending_reason: Reason | None = None
        self.failed_starts = 0
        # What holds the host port while we wait for it (PORT_BUSY), and the tries so far.
        self.port_busy_by: str | None = None
        self.port_attempt = 0
        self.budget = RestartBudget(BackoffPolicy())
        # Failures (what the registry went through) and planned replacements, by reason.
        self.restarts: Counter[Reason] = Counter()
        self.planned: Counter[Reason] = Counter()
        self.last_reason: Reason | None = None
        self.last_reason_wall: datetime | None = None

    @property
    def repairing(self) -> bool:
        """Whether a repair is pending."""
        return self.repair_at is not None

    def repair_due(self, now: float) -> bool:
        """Whether the pending repair's time has come."""
        return self.repair_at is not None and now >= self.repair_at

    def record_event(self, event: ContainerEvent) -> None:
        """Remember what the engine did to a container since its last start."""
        if event.action == "start":
            # Events before a start say nothing about the next time it goes down.
            self.recent_actions[event.name].clear()
            return
        self.recent_actions[event.name].append(event.action)
        self.log.debug(
            "container.event", name=event.name, action=event.action, exit_code=event.exit_code
        )

    def forget_events(self) -> None:
        """A fresh start (or a fresh look after an engine loss): no history counts."""
        self.recent_actions.clear()

    def check(self, image_id: str | None, down_reason: Reason | None = None) -> RepairNeeded | None:
        """Look at the holder and the registry; what repair they need, if any."""
        holder, held = self.actions.observe_holder()
        if held.action is not Action.ADOPT or holder is None:
            # Without its holder the registry has no network: the repair covers both.
            reason = self._down_reason(holder, held, down_reason)
            return RepairNeeded(reason, part=self._desired.holder.name)
        observed = self.actions.inspect_registry()
        decision = decide(
            observed,
            self._desired.spec,
            image_id,
            holder=holder,
            in_holder_network=self.actions.in_holder_network(observed, holder),
        )
        if decision.action is Action.ADOPT:
            if observed is not None and observed.id != self.tracked.container_id:
                self.tracked.container_id = observed.id
                # First sight (ours restarted, or `gc` recreated it in the same holder): the
                # namespace it joined is taken to be the holder's now; the probe says if not.
                self.tracked.joined_holder_pid = holder.pid
                self.log.info("container.adopted", container_id=observed.short_id)
            # Events from our own restart, or a die that is already repaired.
            self.recent_actions.clear()
            return None
        reason = self._down_reason(observed, decision, down_reason)
        exit_code = observed.exit_code if observed is not None and not observed.running else None
        return RepairNeeded(reason, exit_code=exit_code)

    def _down_reason(
        self, observed: Observed | None, decision: Decision, down_reason: Reason | None
    ) -> Reason:
        if decision.action is Action.REPLACE:
            return decision.reason or Reason.SPEC_CHANGED
        if decision.action is Action.RESTART and decision.reason is Reason.NETWORK_LOST:
            # Running, but in a namespace its holder no longer has: not a crash.
            return Reason.NETWORK_LOST
        name = observed.name if observed is not None else ""
        # Only what happened since its last `start` event (see record_event): the `stop` of
        # our own repair, seen after the `die` that was already handled, must not name
        # the next crash.
        reason = classify(observed, self.recent_actions[name])
        if down_reason is not None and reason is Reason.CRASHED:
            return down_reason
        return reason

    def count(self, reason: Reason) -> None:
        """One more restart for ``reason`` (the status line, the state file, metrics): a
        planned replacement (PLANNED_REASONS) or a failure."""
        if reason in PLANNED_REASONS:
            self.planned[reason] += 1
            self._metrics.replacements.labels(reason=reason.value).inc()
        else:
            self.restarts[reason] += 1
            self._metrics.restarts.labels(reason=reason.value).inc()

    def resume(
        self,
        restarts: Counter[Reason],
        planned: Counter[Reason],
        last_reason: Reason | None,
        last_reason_wall: datetime | None,
    ) -> None:
        """Continue the counts of the supervisor before us (its state file). The metrics
        counters start from zero: a new process is a counter reset to Prometheus."""
        self.restarts = Counter(restarts)
        self.planned = Counter(planned)
        self.last_reason = last_reason
        self.last_reason_wall = last_reason_wall

    def schedule(
        self, now: float, need: RepairNeeded, *, after_failure: bool = False, drain_s: float = 0.0
    ) -> None:
        """Count a restart, log it once, and set when it happens (backoff). ``drain_s``: a
        planned replacement waits that long first (`/ready` says 503 meanwhile)."""
        reason = need.reason
        if reason in (Reason.SPEC_CHANGED, Reason.ENGINE_RESTARTED) and not after_failure:
            # A change, or the engine's own restart: not the registry failing. A repair
            # that failed backs off whatever its reason: never a busy loop.
            attempt = self.budget.attempt
            delay = drain_s if reason is Reason.SPEC_CHANGED else 0.0
        else:
            attempt, delay = self.budget.next_restart()
        self.count(reason)
        self.last_reason = reason
        self.last_reason_wall = datetime.now(UTC)
        self.pending_reason = reason
        self.repair_at = now + delay
        self.log.warning(
            "container.restarting",
            reason=reason.value,
            exit_code=need.exit_code,
            attempt=attempt,
            delay_s=round(delay, 3),
            **({"down": need.part} if need.part else {}),
        )

    def reconcile_now(self, now: float) -> None:
        """The first reconcile: create, adopt, start or replace, not counted as a restart."""
        self.repair_at = now

    def observe_unhealthy(self) -> None:
        """A probe failed: the restart budget hears of it."""
        self.budget.observe_unhealthy()

    def observe_healthy(self, now: float) -> None:
        """A probe succeeded: the restart budget recovers."""
        self.budget.observe_healthy(now)

    def engine_restarted(self) -> None:
        """Restarts that failed while the engine went down were not the registry's."""
        self.budget = RestartBudget(self.budget.policy)

    def cancel(self) -> None:
        """No repair pending any more (the engine is gone, or `gc` took over)."""
        self.repair_at = None
        self.pending_reason = None

    def repair(self, now: float, image_id: str | None) -> RepairOutcome:
        """Run the pending repair; what came of it."""
        reason = self.pending_reason
        try:
            if not self.actions.apply_repair(reason, image_id, self.failed_starts):
                self.repair_at = now + REMOVAL_RECHECK_S
                return RepairLater()
        except ContainerGone:
            # Removed under our feet (`docker rm -f` races): look again shortly.
            self.repair_at = now + REMOVAL_RECHECK_S
            return RepairLater()
        except ImageUnavailable as err:
            self.log.error("image.unavailable", error=str(err))
            self.repair_at = None
            return ImageGone(str(err))
        except PortBusy as err:
            return PortHeld(err)
        except ContainerActionFailed as err:
            self.repair_at = None
            self.failed_starts += 1
            self.log.error(
                "container.start_failed",
                error=str(err),
                failures=self.failed_starts,
                **({"for_reason": reason.value} if reason else {}),
            )
            # Counted as what it is: the registry never ran, so it did not crash.
            return RepairLater(retry=RepairNeeded(Reason.START_FAILED))
        settings = self._desired.settings
        if self.port_busy_by is not None:
            self.log.info("port.freed", address=f"{settings.bind}:{settings.port}")
        self.port_busy_by = None
        self.port_attempt = 0
        self.failed_starts = 0
        self.cancel()
        return Repaired()

    def wait_for_port(self, now: float, err: PortBusy) -> float:
        """Wait for the host port with backoff: no holder is created or replaced meanwhile,
        and the log says what holds it once per change, not once per try. The delay."""
        settings = self._desired.settings
        by = err.by or (f"no container: a host process (see `ss -ltnp 'sport = :{settings.port}'`)")
        self.port_attempt += 1
        delay = PORT_RETRY.delay(self.port_attempt + 1)
        if by != self.port_busy_by:
            self.log.warning(
                "port.busy",
                address=f"{settings.bind}:{settings.port}",
                held_by=by,
                error=str(err),
                retry_in_s=delay,
            )
            self.port_busy_by = by
            self.last_reason = Reason.PORT_BUSY
            self.last_reason_wall = datetime.now(UTC)
        else:
            self.log.debug("port.still_busy", attempt=self.port_attempt, retry_in_s=delay)
        self.pending_reason = Reason.PORT_BUSY
        self.repair_at = now + delay
        return delay
