"""The supervision loop: startup() -> main_loop() -> shutdown(), one tick() at a time.

One thread decides: this one. Signal handlers, the engine's event watcher and the
gc-estimate thread only post messages (supervisor/loop/signals.py); the loop takes them
in, then ticks: reconnect to the engine, make sure the image is there, repair the
container when a repair is due, probe when a probe is due, then housekeeping and the
heartbeat. The components (engine link, image keeper, container keeper, health watch,
maintenance gate, reloader, housekeeping) report what they found; only the loop moves
the phase, through ``change_phase``. Every wait is bounded by the next deadline, so the
loop itself feeds the watchdog; a call that may block longer runs off the loop while the
loop only pings (supervisor/loop/watchdog.py).
"""

from __future__ import annotations

import os
import queue
import signal
import time
from collections.abc import Callable
from contextlib import suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from supervisor import fleet, ready, risks
from supervisor import log as logging_setup
from supervisor.adapters import metrics
from supervisor.adapters.notify import Notifier
from supervisor.adapters.probe import Probe
from supervisor.adapters.registry_api import RegistryApi, writes_refused
from supervisor.engine.client import API_TIMEOUT_S, Engine
from supervisor.engine.events import ContainerEvent, EngineLost
from supervisor.loop import status
from supervisor.loop.canary import ApiFactory, Canary
from supervisor.loop.container_actions import ContainerActions, Desired, Tracked
from supervisor.loop.data_dir import make_data_dir
from supervisor.loop.engine_link import EngineLink
from supervisor.loop.fleet import FleetLink, LeaseReleased, LeaseSeen, SlotGranted
from supervisor.loop.fleet_flow import FleetFlow
from supervisor.loop.health_watch import HealthWatch
from supervisor.loop.housekeeping import GcEstimate, Housekeeping
from supervisor.loop.image import ImageKeeper
from supervisor.loop.keeper import ContainerKeeper
from supervisor.loop.maintenance_gate import MaintenanceGate
from supervisor.loop.reconciler import Reconciler
from supervisor.loop.reload import Reloader
from supervisor.loop.signals import Inbox, Message, captured_signals
from supervisor.loop.startup import Readiness
from supervisor.loop.watchdog import WatchdogFeeder
from supervisor.phase import Phase
from supervisor.settings import Settings
from supervisor.spec import ContainerSpec, HolderSpec, derive_spec, holder_spec
from supervisor.statedir.maintenance import maintenance_path

if TYPE_CHECKING:
    from supervisor.adapters.fleet_store import FleetStore

# The state file is not written while a repair is due this soon (or right after a
# start, while probes run fast): recovery never waits on the disk.
STATE_QUIET_S = 1.0


def _fingerprints(settings: Settings) -> tuple[str | None, str | None]:
    """(storage, HTTP secret) fingerprints a fleet member publishes; none outside a fleet."""
    if settings.fleet_redis is None:
        return None, None
    return fleet.storage_fingerprint(settings), fleet.secret_fingerprint(settings)


class Supervisor:
    """Keeps one registry container matching its spec, running and answering."""

    def __init__(
        self,
        settings: Settings,
        env_file: Path | None,
        notifier: Notifier,
        clock: Callable[[], float] = time.monotonic,
        *,
        engine_factory: Callable[[], Engine] = Engine,
        probe_factory: Callable[[str, Path | None], Probe] = Probe,
        registry_api_factory: ApiFactory = RegistryApi,
        fleet_store_factory: Callable[[str, str], FleetStore] | None = None,
        fleet_secret: str | None = None,
    ) -> None:
        # The factories are injected so that tests drive whole ticks with fakes.
        spec = derive_spec(settings, None)
        self.desired = Desired(settings, spec, holder_spec(spec))
        self.notifier = notifier
        self.clock = clock
        self.messages: Inbox = queue.SimpleQueue()
        self.log = self._bind_log()
        self.metrics = metrics.Metrics(enabled=settings.metrics_addr is not None)
        self.feeder = WatchdogFeeder(
            notifier.watchdog_every_s, notifier.watchdog, clock, API_TIMEOUT_S
        )
        self.link = EngineLink(
            engine_factory, self.messages.put, self.feeder.before_engine_call, clock, self.log
        )
        self.images = ImageKeeper(
            self.link,
            self.feeder,
            self.metrics,
            self.log,
            on_pulling=self._pulling,
            on_pull_progress=self._pull_progress,
        )
        tracked = Tracked()
        actions = ContainerActions(self.link, self.feeder, self.desired, tracked, self.log)
        self.keeper = ContainerKeeper(actions, self.desired, tracked, self.metrics, self.log)
        self.health = HealthWatch(
            settings, probe_factory, self.metrics, self.feeder, clock, log=self.log
        )
        self.canary = Canary(
            settings, registry_api_factory, self.metrics, self.feeder, clock, log=self.log
        )
        self.gate = MaintenanceGate(maintenance_path(settings), self.link, self.log)
        self.house = Housekeeping(settings, self.link, self.metrics, self.messages.put, self.log)
        self.readiness = Readiness(notifier, self.status_line)
        self.reconciler = Reconciler(
            desired=self.desired,
            link=self.link,
            images=self.images,
            keeper=self.keeper,
            health=self.health,
            gate=self.gate,
            reloader=Reloader(env_file, self.link, self.images, self.log, self.feeder),
            readiness=self.readiness,
            clock=clock,
            apply_settings=self.apply_settings,
            warn_risks=self._warn_risks,
            canary=self.canary,
        )
        self.fleet_link: FleetLink | None = None
        if settings.fleet_redis is not None:
            if fleet_store_factory is None:
                # redis-py (about 6 MiB) is loaded in fleet mode only.
                from supervisor.adapters.fleet_store import FleetStore  # noqa: PLC0415

                fleet_store_factory = FleetStore
            store = fleet_store_factory(settings.fleet_redis, settings.fleet_name)
            self.fleet_link = FleetLink(
                store,
                settings.fleet_member,
                self.messages.put,
                self.log,
                secret=fleet_secret,
            )
            self.reconciler.fleet = FleetFlow(
                self.reconciler,
                self.fleet_link,
                self.feeder,
                lambda s, timeout: writes_refused(s, timeout, registry_api_factory),
            )
        self.certificate = risks.certificate(settings)
        self._fingerprints = _fingerprints(settings)
        self.exit_signal: int | None = None
        self.started_wall = datetime.now(UTC)
        self.boot_at = clock()

    @property
    def settings(self) -> Settings:
        """The settings in force (a reload replaces them)."""
        return self.desired.settings

    @property
    def spec(self) -> ContainerSpec:
        """The registry container's spec, from the settings and the image's layout."""
        return self.desired.spec

    @property
    def holder(self) -> HolderSpec:
        """The network holder's spec."""
        return self.desired.holder

    def _bind_log(self) -> Any:
        settings = self.desired.settings
        return structlog.get_logger().bind(
            container=settings.name, image=self.desired.spec.image, port=settings.port
        )

    @property
    def phase(self) -> Phase:
        """The reconciler's phase."""
        return self.reconciler.phase

    def apply_settings(self, new: Settings) -> None:
        """Make ``new`` the settings every component works from (no engine calls)."""
        logging_setup.configure(new.log_format, new.log_level)
        renamed = new.name != self.settings.name
        desired = self.desired
        desired.settings = new
        desired.spec = derive_spec(new, self.images.layout)
        desired.holder = holder_spec(desired.spec)
        self.log = self._bind_log()
        parts = (self.images, self.keeper, self.keeper.actions, self.gate, self.house)
        for part in (*parts, self.link, self.health, self.reconciler, self.reconciler.reloader):
            part.log = self.log
        self.canary.log = self.log
        self.health.configure(new)
        self.canary.configure(new)
        self.certificate = risks.certificate(new)
        self._fingerprints = _fingerprints(new)
        self.house.configure(new)
        self.gate.path = maintenance_path(new)
        if renamed:
            self.keeper.tracked.container_id = None
            self.keeper.tracked.joined_holder_pid = None
            if self.link.connected:
                self.link.watch((new.name, desired.holder.name))

    # -- lifecycle -------------------------------------------------------------------

    def run(self) -> None:
        """Supervise until SIGTERM or SIGINT.

        Raises ConfigError or TransientError if the data dir or metrics address fails.
        """
        with captured_signals(self.messages):
            self.startup()
            try:
                self.main_loop()
            except BaseException:
                # A bug or an interrupt: leave the registry serving; the next
                # start adopts it. Only a requested stop stops the registry.
                self._close()
                raise
            self.shutdown()

    def startup(self) -> None:
        """Say what we run with, warn of risks, make the data dir, serve metrics."""
        settings, every = self.settings, self.feeder.every_s
        self.log.info(
            "supervisor.starting",
            data_dir=str(settings.dir),
            bind=settings.bind,
            pull=settings.pull.value,
            notify=self.notifier.enabled,
            watchdog_s=every,
        )
        self.feeder.warn_if_too_short(self.log)
        self._warn_risks()
        self._resume_counts()
        make_data_dir(settings)
        self._serve_metrics()
        self._join_fleet()
        self.notifier.status("starting")

    def _resume_counts(self) -> None:
        """Continue the counts of the supervisor before us (its state file), if any."""
        counts = self.house.previous_counts()
        if counts is not None:
            self.keeper.resume(
                counts.restarts, counts.planned, counts.last_reason, counts.last_reason_wall
            )

    def _join_fleet(self) -> None:
        """Fleet mode: go on holding a gc's read-only state if we did, then heartbeat."""
        flow, link = self.reconciler.fleet, self.fleet_link
        if flow is None or link is None:
            return
        flow.resume()
        self.log.info(
            "fleet.joining", member=self.settings.fleet_member, fleet=self.settings.fleet_name
        )
        link.publish(self.member_record(self.clock()))
        link.start()

    def member_record(self, now: float) -> fleet.MemberRecord:
        """What this member's next heartbeat says (supervisor/fleet.py)."""
        settings, flow = self.settings, self.reconciler.fleet
        info = self.images.info
        verdict = self._ready()
        return fleet.MemberRecord(
            name=settings.fleet_member,
            phase=self.phase.value,
            ready=verdict.ready,
            registry_version=None if info is None else info.label,
            spec_hash=self.spec.spec_hash,
            last_health=self.health.last_error or ("ok" if self.health.last_ok_at else "none yet"),
            storage=self._fingerprints[0],
            http_secret=self._fingerprints[1],
            read_only_for=None if flow is None or flow.hold is None else flow.hold.token,
            confirmed=None if flow is None else flow.confirmed,
            pid=os.getpid(),
            updated=datetime.now(UTC).isoformat(timespec="seconds"),
        )

    def _serve_metrics(self) -> None:
        address = self.settings.metrics_addr
        if address is not None:
            self.metrics.serve_at(address)
            self.log.info("metrics.serving", url=f"http://{address}/metrics")

    def main_loop(self) -> None:
        """Take in messages and tick until a stop signal; never longer than a deadline."""
        while self.exit_signal is None:
            timeout = max(0.0, self._next_deadline() - self.clock())
            with suppress(queue.Empty):
                self._handle(self.messages.get(timeout=timeout))
            self.handle_pending()
            if self.exit_signal is None:
                self.tick()

    def handle_pending(self) -> None:
        """Act on every message already queued."""
        while True:
            try:
                self._handle(self.messages.get_nowait())
            except queue.Empty:
                return

    def shutdown(self) -> None:
        """Stop the registry (MY_REG_STOP_ON_EXIT) and its holder; leave nothing idle."""
        waiting_for_port = self.phase is Phase.PORT_BUSY
        self.reconciler.change_phase(Phase.STOPPING)
        self._publish_ready()  # out of the load balancer before the registry stops
        self.notifier.stopping()
        self.notifier.status("stopping")
        signame = signal.Signals(self.exit_signal).name if self.exit_signal else None
        self.log.info(
            "supervisor.stopping", signal=signame, stop_registry=self.settings.stop_on_exit
        )
        self.link.stop_watching()
        # The registry first (gracefully), then its network holder (killed); a failure
        # with one does not leave the other running.
        names = (self.settings.name, self.holder.name)
        for name in names:
            if self.link.connected:
                self.keeper.actions.stop_on_exit(name)
        if self.link.connected:
            self.keeper.actions.remove_idle(names, waiting_for_port)
        self._close()
        self._save_final_state()
        self.log.info("supervisor.stopped")

    def _save_final_state(self) -> None:
        """The last state: phase `stopped`, no pid (`status` must not show a stale
        `healthy`), the counts kept for the next supervisor. Written now, due or not."""
        view = self.view(self.clock())
        self.house.save_final_state(
            self.clock(), status.state_content(view, datetime.now(UTC), stopped=True)
        )

    def _close(self) -> None:
        if self.fleet_link is not None:
            self.fleet_link.close()
        self.link.close()
        self.health.close()
        self.canary.close()
        self.metrics.close()
        self.house.stop_following()

    # -- messages ----------------------------------------------------------------------

    def _handle(self, message: Message) -> None:
        if isinstance(message, ContainerEvent):
            self.reconciler.on_event(message)
        elif isinstance(message, EngineLost):
            self.reconciler.engine_lost(message.detail)
        elif isinstance(message, GcEstimate):
            self.house.gc_estimated(message)
        elif isinstance(message, LeaseSeen | LeaseReleased | SlotGranted):
            self._fleet_message(message)
        elif message == signal.SIGHUP:
            self.reconciler.reload()
        else:
            self.exit_signal = message

    def _fleet_message(self, message: LeaseSeen | LeaseReleased | SlotGranted) -> None:
        flow = self.reconciler.fleet
        if flow is None:
            return
        if isinstance(message, LeaseSeen):
            flow.on_lease(message.lease)
        elif isinstance(message, LeaseReleased):
            flow.on_released(message.token)
        else:
            flow.on_slot(message.why)

    # -- the tick ------------------------------------------------------------------------

    def _next_deadline(self) -> float:
        now = self.clock()
        # Keep the STATUS uptime roughly current even between slow probes.
        return min(self.reconciler.next_deadline(now), self.feeder.deadline(), now + 1.0)

    def tick(self) -> None:
        """The reconciler's step, then housekeeping and the heartbeat."""
        now = self.clock()
        if not self.reconciler.tick(now):
            self._heartbeat(now)  # `gc` holds the registry: only the heartbeat
            return
        # A repair is due, or a container found down is about to be looked at.
        repairing = self.keeper.repairing or self.reconciler.look_again
        self.house.check_disk(self.clock(), quiet=repairing)
        self.house.follow_logs(
            self.clock(),
            self.keeper.tracked.container_id,
            self.started_wall.timestamp(),
            changing=repairing or self.gate.active,
        )
        self._heartbeat(self.clock())

    def _heartbeat(self, now: float) -> None:
        self.feeder.kick_if_due(now)
        if self.fleet_link is not None:
            self.fleet_link.publish(self.member_record(now))
        self.notifier.status(self.status_line(now))
        self._save_state(now)
        self._update_metrics(now)

    def _pulling(self) -> None:
        """The image keeper pulls: PULLING, with a heartbeat before the pull blocks."""
        self.reconciler.change_phase(Phase.PULLING)
        self._heartbeat(self.clock())

    def _pull_progress(self) -> None:
        self.readiness.extend(0.0)
        self._heartbeat(self.clock())

    def _warn_risks(self) -> None:
        """Log what is risky about the settings (exposure, an expiring certificate)."""
        for warning in risks.warnings(self.settings, self.certificate, datetime.now(UTC)):
            self.log.warning(warning.event, detail=warning.text, **warning.fields)

    # -- what we say about ourselves -----------------------------------------------------

    def view(self, now: float) -> status.StatusView:
        """A snapshot of the facts the status line and the state file show."""
        return status.snapshot(
            now,
            self.phase,
            self.desired,
            keeper=self.keeper,
            health=self.health,
            images=self.images,
            gate=self.gate,
            house=self.house,
            certificate=self.certificate,
            started_wall=self.started_wall,
            degraded=tuple(self.reconciler.degraded.values()),
            fleet_note=None if self.reconciler.fleet is None else self.reconciler.fleet.note,
        )

    def status_line(self, now: float) -> str:
        """The one human line systemd shows as the unit's status, with any warning."""
        return status.status_line(self.view(now))

    def state_content(self) -> dict[str, Any]:
        """What the state file holds now."""
        return status.state_content(self.view(self.clock()), datetime.now(UTC))

    def _save_state(self, now: float) -> None:
        """Offer the state file a new content, off the hot path of a restart."""
        phase, repair_at = self.phase, self.keeper.repair_at
        waiting = phase is Phase.PORT_BUSY  # not a recovery: nothing to keep fast
        quiet = (not waiting and repair_at is not None and repair_at - now < STATE_QUIET_S) or (
            phase is Phase.STARTING and now - self.health.started_at < STATE_QUIET_S
        )
        if not quiet:
            self.house.save_state(now, self.state_content(), quiet=False)

    def _publish_ready(self) -> None:
        """What `GET /ready` answers from now (supervisor/ready.py)."""
        self.metrics.publish_ready(self._ready())

    def _ready(self) -> ready.Ready:
        flow = self.reconciler.fleet
        held = None if flow is None else flow.not_ready
        return ready.verdict(self.phase, self.reconciler.degraded, held)

    def _update_metrics(self, now: float) -> None:
        """The gauges that follow the phase, and the readiness (cheap: no I/O)."""
        self._publish_ready()
        healthy = self.phase is Phase.HEALTHY
        self.metrics.up.set(1 if healthy else 0)
        self.metrics.maintenance.set(1 if self.phase is Phase.MAINTENANCE else 0)
        last_ok = self.health.last_ok_at
        since = last_ok if last_ok is not None else self.boot_at
        self.metrics.since_healthy.set(0.0 if healthy else max(0.0, now - since))
