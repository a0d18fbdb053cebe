"""Serving: whether the running registry does its job, from the probe and the push canary.

Part of the reconciler (supervisor/loop/reconciler.py), split out by concern: it turns the
health watch's verdicts and the canary's rounds into the registry's state (healthy,
degraded by a source, unhealthy, a repair), through the reconciler's own ``change_phase``
and ``schedule_repair``; it keeps what degrades the registry, by source.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from supervisor.loop import canary as canary_loop
from supervisor.loop.health_watch import Verdict
from supervisor.loop.keeper import RepairNeeded
from supervisor.phase import Phase
from supervisor.reconcile import Reason

if TYPE_CHECKING:
    from supervisor.loop.reconciler import Reconciler


class Serving:
    """The probe's and the canary's verdicts, applied; what degrades the registry."""

    def __init__(self, reconciler: Reconciler) -> None:
        self._r = reconciler
        # What makes a serving registry degraded, by source (the probe's dependency check,
        # the push canary): a detail each, shown in STATUS; empty while all is well.
        self.degraded: dict[str, str] = {}

    @property
    def log(self) -> Any:
        """The reconciler's logger (rebound on reload)."""
        return self._r.log

    def probe(self, now: float) -> None:
        """Probe once and act on the verdict: healthy, degraded, counted, or a repair."""
        answer = self._r.health.probe(now)
        now = self._r.clock()
        if answer.healthy:
            self.healthy(now)
            return
        if self._r.look_at_gate(now):
            return  # `gc` stopped it on purpose while we asked
        verdict = self._r.health.judge(
            answer,
            now,
            starting=self._r.phase is Phase.STARTING,
            running=self._r.actions.both_running(),
        )
        if verdict in (Verdict.DEPENDENCY, Verdict.DEPENDENCY_RESTART):
            restart = verdict is Verdict.DEPENDENCY_RESTART
            self._dependency_failed(now, answer.detail, restart=restart)
            return
        if verdict is Verdict.REPINNED:
            return
        self._r.keeper.observe_unhealthy()
        if verdict is Verdict.DOWN:
            # A container that is not running needs a repair, not more probes. The events
            # already queued come first: a `kill` before the `die` tells a stop from a crash.
            self._r.look_again = True
            return
        if verdict is Verdict.MUST_RESTART:
            self._r.schedule_repair(now, RepairNeeded(Reason.UNHEALTHY))
        elif verdict is not Verdict.IN_GRACE:
            self._r.change_phase(Phase.UNHEALTHY)

    def _dependency_failed(self, now: float, detail: str, *, restart: bool) -> None:
        """The registry answers 503 for its own health check (its storage, most often):
        degraded, not hung. It serves no request meanwhile, but a restart cannot mend a
        storage outage: only the health watch's long backoff restarts it (``restart``)."""
        self.degrade("dependency", detail)
        if restart:
            self._r.schedule_repair(now, RepairNeeded(Reason.UNHEALTHY))
            return
        if self._r.phase is not Phase.DEGRADED:
            # STARTING or UNHEALTHY: the process is up and answering, so startup is over
            # (READY: systemd must not time the unit out over a storage outage).
            self._r.change_phase(Phase.DEGRADED)
            self._r.readiness.ready(now)

    # -- push canary ---------------------------------------------------------------------

    def runnable_canary(self) -> canary_loop.Canary | None:
        """The canary, if it may run: only while the registry serves and nothing else
        degrades it (a failing storage check fails pushes anyway), with no repair pending,
        so that a round never delays one."""
        may = (
            self._r.canary is not None
            and self._r.canary.on
            and self._r.phase in (Phase.HEALTHY, Phase.DEGRADED)
            and set(self.degraded) <= {canary_loop.SOURCE}
            and self._r.probing
            and self._r.keeper.repair_at is None
            and not self._r.look_again
            # Read-only for a fleet gc: pushes fail there on purpose.
            and not (self._r.fleet is not None and self._r.fleet.read_only)
        )
        return self._r.canary if may else None

    def run_canary(self, now: float, canary: canary_loop.Canary) -> None:
        """One canary round: pushes failing degrade the registry, passing recovers it."""
        info = self._r.images.info
        outcome = canary.run(now, info.version if info is not None else None)
        if self._r.look_at_gate(self._r.clock()):
            return  # `gc` made the registry read-only while we wrote: no verdict
        if isinstance(outcome, canary_loop.Failed):
            # Never a restart: a restart cannot fix storage that refuses writes.
            self.degrade(canary_loop.SOURCE, f"pushes failing ({outcome.reason})")
        elif isinstance(outcome, canary_loop.Passed) or not canary.on:
            self.recover(canary_loop.SOURCE)
        if self._r.fleet is not None:
            self._r.fleet.canary_done(isinstance(outcome, canary_loop.Passed))

    def degrade(self, source: str, detail: str) -> None:
        """``source`` says the serving registry cannot do its job (``detail``, one phrase)."""
        if self.degraded.get(source) != detail:
            self.log.warning("registry.degraded", source=source, detail=detail)
        self.degraded[source] = detail
        self._r.health.metrics.degraded.labels(source=source).set(1)
        if self._r.phase is Phase.HEALTHY:
            self._r.change_phase(Phase.DEGRADED)

    def recover(self, source: str) -> None:
        """``source`` works again; the registry is healthy once no source is degraded."""
        if self.degraded.pop(source, None) is not None:
            self.log.info("registry.recovered", source=source)
            self._r.health.metrics.degraded.labels(source=source).set(0)
        if not self.degraded and self._r.phase is Phase.DEGRADED:
            self._r.change_phase(Phase.HEALTHY)

    def healthy(self, now: float) -> None:
        """The registry answered: healthy (or degraded by a source), READY once, a
        pending reload confirmed or its new image gated."""
        if self._r.reloader.gate_pending and self._r.reloads.fails_gate(now):
            return
        # A registry degraded by its own health check served nothing: up from now on.
        newly = (
            self._r.phase not in (Phase.HEALTHY, Phase.DEGRADED) or "dependency" in self.degraded
        )
        self.recover("dependency")  # it answers 200/401: its own health check passes
        if newly:
            self.log.info(
                "registry.healthy",
                container_id=(self._r.tracked.container_id or "")[:12],
                after_s=round(now - self._r.health.started_at, 3),
                restarts=sum(self._r.keeper.restarts.values()),
            )
            self._r.change_phase(Phase.DEGRADED if self.degraded else Phase.HEALTHY)
            if self._r.fleet is not None:
                self._r.fleet.healthy(now)
        self._r.health.served(now, newly=newly)
        self._r.link.registry_healthy()
        self._r.keeper.observe_healthy(now)
        self._r.reloader.confirm(self._r.desired.spec.spec_hash)
        self._r.readiness.ready(now)
