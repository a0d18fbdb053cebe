"""The supervision loop: startup() -> main_loop() -> shutdown(), one tick() at a time.

One thread decides. Signal handlers and the Docker event thread only put
messages on a SimpleQueue; the loop drains it, then ticks: reconnect to the
engine, make sure the image is there, repair the container when a repair is
due, probe when a probe is due, and tell systemd. Every wait is bounded by the
next deadline, so the watchdog is fed by the loop itself; a call that may block
longer than the watchdog period allows (a long probe, a `docker stop`) runs on a
helper thread while the loop only feeds the watchdog, and decides once it returns.
"""

from __future__ import annotations

import os
import queue
import signal
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager, suppress
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import structlog

from supervisor import log, risks, takeover, tls
from supervisor.adapters import disk, metrics
from supervisor.adapters.notify import Notifier
from supervisor.adapters.probe import Probe, ProbeFailed
from supervisor.backoff import BackoffPolicy, RestartBudget
from supervisor.engine import image_info as images
from supervisor.engine import logs
from supervisor.engine.client import API_TIMEOUT_S, VERSION_TIMEOUT_S, Engine, network_namespace
from supervisor.engine.events import ContainerEvent, EngineLost, EventWatcher
from supervisor.errors import (
    ConfigError,
    ContainerActionFailed,
    ContainerGone,
    EngineRefused,
    EngineUnavailable,
    ImageUnavailable,
    PortBusy,
    SupervisorError,
    TransientError,
    for_os_error,
)
from supervisor.health import FailureCount, is_healthy
from supervisor.layout import ImageLayout, version_findings
from supervisor.loop import watchdog
from supervisor.observed import ContainerState, Observed
from supervisor.reconcile import Action, Decision, Reason, classify, decide
from supervisor.settings import PullPolicy, Settings, load_settings, parse_metrics_address
from supervisor.spec import ContainerSpec, HolderSpec, derive_spec, holder_spec
from supervisor.statedir import maintenance, state_file
from supervisor.statedir.http_secret import with_http_secret

# Right after a (re)start, probe this often until /v2/ answers: recovery time is
# what users feel, and a refused connection costs microseconds.
FAST_PROBE_S = 0.05
# `docker rm -f` in progress: look again this soon for the container to be gone.
REMOVAL_RECHECK_S = 0.05
# A container the engine refused to start this many times in a row is replaced: a new
# container has a new id, free of what an engine stopped mid-start leaves behind (a
# containerd task that "already exists", a stale network endpoint).
REPLACE_AFTER_FAILED_STARTS = 2
# An engine restart takes a couple of seconds: look often, but not hot.
ENGINE_RETRY = BackoffPolicy(base_s=0.25, factor=1.3, cap_s=2.0)
# A reloaded container that goes down for one of these before it was once healthy is
# rolled back to the previous settings.
ROLLBACK_REASONS = frozenset(
    {
        Reason.START_FAILED,
        Reason.CRASHED,
        Reason.OOM,
        Reason.UNHEALTHY,
        Reason.UNSTARTABLE,
    }
)
# An engine that answers a ping and then fails us again (or refuses what we ask) is
# reconnected to no sooner than this, and later ever more slowly, until the registry is
# healthy again: every retry path has a minimum delay, none loops hot.
ENGINE_MIN_RETRY_S = 0.1
IMAGE_RETRY = BackoffPolicy(base_s=1.0, factor=2.0, cap_s=60.0)
# A host port held by something we may not take over: looked at again this often. Freeing
# it is someone's deliberate act, so the wait stays short.
PORT_RETRY = BackoffPolicy(base_s=0.5, factor=2.0, cap_s=10.0)
# How much longer systemd should wait for READY while we pull or wait for the engine.
START_EXTENSION_S = 90.0
HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
# Free space on the data dir's file system is looked at this often (MY_REG_MIN_FREE).
DISK_CHECK_S = 60.0
# While `gc` holds the maintenance file, look for its end this often.
MAINTENANCE_POLL_S = 0.5
# A lock whose `gc` died holds while its collector container runs: the engine is asked
# about that container at most this often (and never while the holder lives).
COLLECTOR_CHECK_S = 1.0
# The state file is not written while a repair is due this soon (or right after a
# start, while probes run fast): recovery never waits on the disk.
STATE_QUIET_S = 1.0
# The data dir walk for registry_data_dir_bytes runs on the loop: keep it short.
METRICS_WALK_MAX_S = 0.2
T = TypeVar("T")

# A registry log stream that ended (container stopped, read timeout) is followed again
# no sooner than this.
FOLLOW_RETRY_S = 1.0


class Phase(StrEnum):
    ENGINE_DOWN = "engine-down"
    PULLING = "pulling"
    STARTING = "starting"
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"
    RESTARTING = "restarting"
    STOPPING = "stopping"
    MAINTENANCE = "maintenance"  # `gc` restarts the registry on purpose; we stand aside
    PORT_BUSY = "port-busy"  # the host port is held by something we may not take over


Message = int | ContainerEvent | EngineLost


@contextmanager
def captured_signals(messages: queue.SimpleQueue[Message]) -> Iterator[None]:
    """Handlers only record the signal (SimpleQueue.put is reentrant); the loop acts."""

    def record(signum: int, _frame: FrameType | None) -> None:
        messages.put(signum)

    previous = {sig: signal.signal(sig, record) for sig in HANDLED_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def data_dirs(settings: Settings) -> tuple[str, str]:
    """MY_REG_DIR as given and with symlinks resolved: how another container may mount it."""
    return str(settings.dir), os.path.realpath(settings.dir)


def make_data_dir(settings: Settings) -> None:
    """MY_REG_DIR, created if missing (never deleted or moved by us); ConfigError or, for
    what may clear by itself (a full disk), TransientError naming it."""
    try:
        settings.dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        setting = f"MY_REG_DIR={str(settings.dir)!r}"
        raise for_os_error(
            err,
            config=f"{setting}: expected a directory we can create ({err.strerror})",
            transient=f"{setting}: cannot be created now ({err.strerror})",
        ) from None


def format_duration(seconds: float) -> str:
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h"
    if hours:
        return f"{hours}h{minutes}m"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


class Supervisor:
    """Keeps one registry container matching its spec, running and answering."""

    def __init__(  # noqa: PLR0915 (one line per field; issue 12 splits the class)
        self,
        settings: Settings,
        env_file: Path | None,
        notifier: Notifier,
        clock: Callable[[], float] = time.monotonic,
        *,
        engine_factory: Callable[[], Engine] = Engine,
        probe_factory: Callable[[str, Path | None], Probe] = Probe,
    ) -> None:
        # Both injected so that tests drive whole ticks against a fake engine and probe.
        self.engine_factory = engine_factory
        self.probe_factory = probe_factory
        self.settings = settings
        # The image's layout and version, once the engine told us (supervisor/engine/image_info.py);
        # until then the spec only names things (see derive_spec).
        self.image: images.ImageInfo | None = None
        self.spec: ContainerSpec = derive_spec(settings, None)
        self.holder: HolderSpec = holder_spec(self.spec)
        self.env_file = env_file
        self.notifier = notifier
        self.clock = clock
        self.messages: queue.SimpleQueue[Message] = queue.SimpleQueue()
        self.log = self._bind_log()

        self.engine: Engine | None = None
        self.watcher: EventWatcher | None = None
        self.engine_attempt = 0
        self.engine_retry_at = 0.0
        self.engine_was_lost = False
        # Losses since the registry was last healthy: the reconnect backoff's attempt.
        self.engine_losses = 0

        self.image_id: str | None = None
        self.image_attempt = 0
        self.image_retry_at = 0.0

        self.phase = Phase.ENGINE_DOWN
        self.container_id: str | None = None
        # Engine events per container name since its last `start` event: why it went down.
        self.recent_actions: defaultdict[str, list[str]] = defaultdict(list)
        # The holder's pid when the registry last started in its namespace (see decide()).
        self.joined_holder_pid: int | None = None
        # After a reload that changed the spec: the settings (and image id) to go back to
        # if the new container fails before it was once healthy.
        self.rollback_to: tuple[Settings, str | None] | None = None
        # A SIGHUP that came while it could not be checked (engine down, `gc` running).
        self.reload_pending = False
        self.repair_at: float | None = None
        self.pending_reason: Reason | None = None
        self.failed_starts = 0
        # What holds the host port while we wait for it (PORT_BUSY), and the tries so far.
        self.port_busy_by: str | None = None
        self.port_attempt = 0
        self.budget = RestartBudget(BackoffPolicy())
        self.failures = FailureCount(settings.health_retries)
        self.probe = probe_factory(settings.probe_url, settings.tls_certificate)
        self.certificate = risks.certificate(settings)
        self.probe_at = 0.0
        self.started_at = 0.0
        self.healthy_since: float | None = None
        self.restarts: Counter[Reason] = Counter()
        self.last_reason: Reason | None = None

        self.ready_sent = False
        self.watchdog_at = 0.0
        self.exit_signal: int | None = None

        # Status at a glance (supervisor/statedir/state_file.py), disk guard, maintenance by `gc`.
        self.started_wall = datetime.now(UTC)
        self.healthy_since_wall: datetime | None = None
        self.last_reason_wall: datetime | None = None
        self.state_file = state_file.StateFile(state_file.state_path(settings))
        self.state_failed = False
        self.disk_guard = disk.DiskGuard(settings.min_free)
        self.disk_check_at = 0.0
        self.maintenance_path = maintenance.maintenance_path(settings)
        self.maintenance: maintenance.Maintenance | None = None
        self.collector_seen: maintenance.CollectorSeen | None = None
        self.metrics = metrics.Metrics(enabled=settings.metrics_addr is not None)
        self.last_ok_at: float | None = None
        self.boot_at = clock()
        self.log_follower: logs.LogFollower | None = None
        self.follow_retry_at = 0.0

    def _bind_log(self) -> Any:
        return structlog.get_logger().bind(
            container=self.settings.name, image=self.spec.image, port=self.settings.port
        )

    # -- lifecycle -------------------------------------------------------------

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
        self.log.info(
            "supervisor.starting",
            data_dir=str(self.settings.dir),
            bind=self.settings.bind,
            pull=self.settings.pull.value,
            notify=self.notifier.enabled,
            watchdog_s=self.notifier.watchdog_every_s,
        )
        every = self.notifier.watchdog_every_s
        if every is not None and every < API_TIMEOUT_S + watchdog.SLACK_S:
            # Probes and stops are fed off the loop whatever their length; one engine call
            # is not, and a hung engine may take API_TIMEOUT_S to give up.
            self.log.warning(
                "watchdog.shorter_than_engine_timeout",
                watchdog_sec=round(2 * every, 3),
                engine_timeout_s=API_TIMEOUT_S,
                hint=f"WatchdogSec={2 * (API_TIMEOUT_S + 1)}s or more (the unit ships 30s)",
            )
        self._warn_risks()
        make_data_dir(self.settings)
        self._serve_metrics()
        self.notifier.status("starting")

    def _serve_metrics(self) -> None:
        if self.settings.metrics_addr is None:
            return
        host, port = parse_metrics_address(self.settings.metrics_addr)
        try:
            self.metrics.serve(host, port)
        except OSError as err:
            # A port in use is transient: most often the supervisor we replace has not let
            # go yet, and exit 78 would leave the registry unsupervised until someone looks.
            setting = f"MY_REG_METRICS_ADDR={self.settings.metrics_addr!r}"
            raise for_os_error(
                err,
                config=f"{setting}: expected an address we can listen on ({err.strerror})",
                transient=f"{setting}: cannot listen there now ({err.strerror})",
            ) from None
        self.log.info("metrics.serving", url=f"http://{self.settings.metrics_addr}/metrics")

    def main_loop(self) -> None:
        while self.exit_signal is None:
            timeout = max(0.0, self._next_deadline() - self.clock())
            with suppress(queue.Empty):
                self._handle(self.messages.get(timeout=timeout))
            self._drain_messages()
            if self.exit_signal is None:
                self.tick()

    def _drain_messages(self) -> None:
        while True:
            try:
                self._handle(self.messages.get_nowait())
            except queue.Empty:
                return

    def shutdown(self) -> None:
        waiting_for_port = self.phase is Phase.PORT_BUSY
        # RUNNING -> STOPPING
        self.phase = Phase.STOPPING
        self.notifier.stopping()
        self.notifier.status("stopping")
        signame = signal.Signals(self.exit_signal).name if self.exit_signal else None
        self.log.info(
            "supervisor.stopping", signal=signame, stop_registry=self.settings.stop_on_exit
        )
        if self.watcher is not None:
            self.watcher.close()
            self.watcher = None
        # The registry first (gracefully), then its network holder (killed); a failure
        # with one does not leave the other running.
        for name in (self.settings.name, self.holder.name):
            if self.engine is not None:
                self._stop_on_exit(name)
        if self.engine is not None:
            self._remove_idle(waiting_for_port)
        self._close()
        self.log.info("supervisor.stopped")

    def _stop_on_exit(self, name: str) -> None:
        try:
            observed = self.docker.inspect(name)
            if observed is None or not observed.managed or not observed.running:
                return
            if self.settings.stop_on_exit:
                self._stop(observed.id)
                self.log.info("container.stopped", name=name, container_id=observed.short_id)
            else:
                self.log.info("container.left_running", name=name, container_id=observed.short_id)
        except SupervisorError as err:
            self.log.warning("container.stop_failed", name=name, error=str(err))

    def _remove_idle(self, waiting_for_port: bool) -> None:
        """Remove our containers that never ran (created, then the port was held or the
        engine went away), so that a stopped supervisor leaves nothing behind; while it
        waited for the port, any of ours that is not running. Never data."""
        for name in (self.settings.name, self.holder.name):
            try:
                observed = self.docker.inspect(name)
                idle = observed is not None and (
                    observed.state is ContainerState.CREATED
                    or (waiting_for_port and not observed.running)
                )
                if observed is not None and observed.managed and idle:
                    self.docker.remove(observed.id)
                    self.log.info("container.removed", name=name, container_id=observed.short_id)
            except SupervisorError as err:
                self.log.warning("container.remove_failed", name=name, error=str(err))

    def _close(self) -> None:
        if self.watcher is not None:
            self.watcher.close()
            self.watcher = None
        if self.engine is not None:
            self.docker.close()
            self.engine = None
        self.probe.close()
        self.metrics.close()
        self._stop_following()

    # -- messages ----------------------------------------------------------------

    def _handle(self, message: Message) -> None:
        if isinstance(message, ContainerEvent):
            self._on_event(message)
        elif isinstance(message, EngineLost):
            self._engine_lost(message.detail)
        elif message == signal.SIGHUP:
            self.reload()
        else:
            self.exit_signal = message

    def _on_event(self, event: ContainerEvent) -> None:
        if self.engine is None or self._in_maintenance(self.clock()):
            return
        if event.action == "start":
            # Events before a start say nothing about the next time it goes down.
            self.recent_actions[event.name].clear()
            return
        self.recent_actions[event.name].append(event.action)
        self.log.debug(
            "container.event", name=event.name, action=event.action, exit_code=event.exit_code
        )
        if event.action in ("die", "destroy"):
            try:
                self._check_container(self.clock())
            except EngineUnavailable as err:
                self._engine_lost(str(err))

    # -- the tick -----------------------------------------------------------------

    @property
    def docker(self) -> Engine:
        """The connected engine; only called on paths that run while connected.

        Every engine call may block up to API_TIMEOUT_S (a hung engine): one that could
        run past the next WATCHDOG=1 starts with a fresh period, so a tick of several
        calls never adds up to more than the watchdog allows.
        """
        if self.engine is None:
            raise EngineUnavailable("not connected")
        every = self.notifier.watchdog_every_s
        if every is not None and self.clock() + API_TIMEOUT_S + watchdog.SLACK_S > self.watchdog_at:
            self._kick_watchdog()
        return self.engine

    @property
    def probing(self) -> bool:
        """Probes run once a container is in place and no repair is pending."""
        return self.engine is not None and self.image_id is not None and self.repair_at is None

    def _next_deadline(self) -> float:
        if self.maintenance is not None:
            return min(self.clock() + MAINTENANCE_POLL_S, self._watchdog_deadline())
        deadlines = [self.probe_at if self.probing else float("inf")]
        if self.engine is None:
            deadlines.append(self.engine_retry_at)
        elif self.image_id is None:
            deadlines.append(self.image_retry_at)
        if self.repair_at is not None:
            deadlines.append(self.repair_at)
        if self.notifier.watchdog_every_s is not None:
            deadlines.append(self.watchdog_at)
        # Keep the STATUS uptime roughly current even between slow probes.
        deadlines.append(self.clock() + 1.0)
        return min(deadlines)

    def _watchdog_deadline(self) -> float:
        return self.watchdog_at if self.notifier.watchdog_every_s is not None else float("inf")

    def tick(self) -> None:
        now = self.clock()
        if self._in_maintenance(now):
            self._heartbeat(now)
            return
        if self.reload_pending and self.engine is not None:
            self.reload_pending = False
            self.reload()
        try:
            if self.engine is None:
                self._connect(now)
            elif self.image_id is None:
                self._ensure_image(now)
            elif self.repair_at is not None and now >= self.repair_at:
                self._repair(now)
            elif self.probing and now >= self.probe_at:
                self._probe(now)
        except (EngineUnavailable, EngineRefused) as err:
            # A refusal here is a bug of ours or an engine we do not know: reconnect with
            # the backoff rather than repeat the request in a hot loop.
            self._engine_lost(str(err))
        self._check_disk(self.clock())
        self._follow_logs(self.clock())
        self._heartbeat(self.clock())

    def _heartbeat(self, now: float) -> None:
        if self.notifier.watchdog_every_s is not None and now >= self.watchdog_at:
            self._kick_watchdog()
        self.notifier.status(self.status_line(now))
        self._save_state(now)
        self._update_metrics(now)

    def _kick_watchdog(self) -> None:
        every = self.notifier.watchdog_every_s
        if every is not None:
            self.notifier.watchdog()
            self.watchdog_at = self.clock() + every

    def _blocking(self, name: str, bound_s: float, call: Callable[[], T]) -> T:
        """``call()``, which may block up to ``bound_s`` seconds, with the watchdog fed.

        Longer than what is left of the watchdog period, it runs on a helper thread while
        this thread sends WATCHDOG=1 on schedule and nothing else; its result (or error)
        comes back here, so the loop still decides, after the call, alone.
        """
        where = watchdog.placement(
            bound_s, self.clock(), self.watchdog_at, self.notifier.watchdog_every_s
        )
        if where is watchdog.Placement.OFF_LOOP:
            return watchdog.call_feeding(
                call,
                ping=self._kick_watchdog,
                ping_due=lambda: self.watchdog_at,
                clock=self.clock,
                name=name,
            )
        if where is watchdog.Placement.PING_THEN_INLINE:
            self._kick_watchdog()
        return call()

    def _stop(self, container_id: str) -> None:
        """`docker stop`: SIGTERM, then SIGKILL after MY_REG_STOP_TIMEOUT."""
        timeout, docker = self.settings.stop_timeout, self.docker
        # docker-py waits `timeout` beyond its API timeout for this call.
        self._blocking(
            "docker-stop", timeout + API_TIMEOUT_S, lambda: docker.stop(container_id, timeout)
        )

    def _restart(self, container_id: str) -> None:
        """`docker restart -t 0`: an engine call, bounded by the API timeout."""
        docker = self.docker
        self._blocking("docker-restart", API_TIMEOUT_S, lambda: docker.restart(container_id))

    def _warn_risks(self) -> None:
        """Log what is risky about the settings (exposure, an expiring certificate)."""
        for warning in risks.warnings(self.settings, self.certificate, datetime.now(UTC)):
            self.log.warning(warning.event, detail=warning.text, **warning.fields)

    def status_line(self, now: float) -> str:
        """The one human line systemd shows as the unit's status, with any TLS warning."""
        line = self._phase_line(now)
        note = tls.expiry_note(self.certificate, datetime.now(UTC))
        line = f"{line}; {note}" if note else line
        disk_note = self.disk_guard.note()
        return f"{line}; {disk_note}" if disk_note else line

    def _phase_line(self, now: float) -> str:  # noqa: PLR0911 (one return per phase)
        restarts = sum(self.restarts.values())
        if self.phase is Phase.HEALTHY and self.healthy_since is not None:
            counted = f"{restarts} restart" + ("" if restarts == 1 else "s")
            line = f"healthy: up {format_duration(now - self.healthy_since)}, {counted}"
            return f"{line} (last: {self.last_reason})" if self.last_reason else line
        if self.phase is Phase.RESTARTING:
            wait = max(0.0, (self.repair_at or now) - now)
            return (
                f"restarting: {self.pending_reason}, attempt {self.budget.attempt}, "
                f"next in {wait:.1f}s"
            )
        if self.phase is Phase.ENGINE_DOWN:
            return "waiting for Docker engine"
        if self.phase is Phase.PORT_BUSY:
            wait = max(0.0, (self.repair_at or now) - now)
            return (
                f"waiting for port {self.settings.bind}:{self.settings.port}: held by "
                f"{self.port_busy_by}; next try in {wait:.1f}s"
            )
        if self.phase is Phase.PULLING:
            return f"pulling {self.spec.image}"
        if self.phase is Phase.UNHEALTHY:
            failed = f"{self.failures.failures}/{self.settings.health_retries}"
            return f"unhealthy: {failed} probes failed"
        if self.phase is Phase.STARTING:
            return f"starting: waiting for {self.settings.probe_url} to answer"
        if self.phase is Phase.MAINTENANCE and self.maintenance is not None:
            return f"maintenance: {self.maintenance.task}"
        return str(self.phase)

    # -- engine --------------------------------------------------------------------

    def _connect(self, now: float) -> None:
        if now < self.engine_retry_at:
            return
        try:
            engine = self.engine_factory()
            engine.ping()
        except EngineUnavailable as err:
            self.engine_attempt += 1
            delay = ENGINE_RETRY.delay(self.engine_attempt + 1)
            if self.engine_attempt == 1 and not self.engine_was_lost:
                # (a lost engine was already reported by _engine_lost)
                self.log.warning("engine.unreachable", error=str(err), retry_in_s=delay)
            self.phase = Phase.ENGINE_DOWN
            self.engine_retry_at = now + delay
            if not self.ready_sent:
                self.notifier.extend_timeout(START_EXTENSION_S)
            return
        self.engine = engine
        self.log.info(
            "engine.reconnected" if self.engine_was_lost else "engine.connected",
            after_attempts=self.engine_attempt,
        )
        self.engine_attempt = 0
        if self.engine_was_lost:
            # Restarts that failed while the engine went down were not the registry's.
            self.budget = RestartBudget(self.budget.policy)
        # Subscribe before looking, so nothing happens unseen in between.
        self._watch()
        if self.image_id is not None:
            self._reconcile_again(self.clock())

    def _watch(self) -> None:
        if self.watcher is not None:
            self.watcher.close()
        names = (self.settings.name, self.holder.name)
        self.watcher = EventWatcher(self.docker.api, names, self.messages.put)
        self.watcher.start()

    def _engine_lost(self, detail: str) -> None:
        if self.engine is None:
            return
        self.log.warning("engine.unreachable", error=detail)
        if self.watcher is not None:
            self.watcher.close()
            self.watcher = None
        self.docker.close()
        self.engine = None
        self.engine_was_lost = True
        self.engine_losses += 1
        delay = max(ENGINE_MIN_RETRY_S, ENGINE_RETRY.delay(self.engine_losses))
        self.engine_retry_at = self.clock() + delay
        self.repair_at = None
        self.phase = Phase.ENGINE_DOWN

    def _reconcile_again(self, now: float) -> None:
        """After an engine loss or a new image: adopt what is fine, repair the rest."""
        self.recent_actions.clear()
        self._check_container(now, down_reason=Reason.ENGINE_RESTARTED)
        if self.repair_at is None:
            self._enter_starting(now)

    # -- image ---------------------------------------------------------------------

    def _ensure_image(self, now: float) -> None:
        if now < self.image_retry_at:
            return
        ref = self.spec.image
        try:
            present = self._local_image(ref, self.settings.pull, announce=True)
        except ImageUnavailable as err:
            self._image_missing(now, str(err))
            return
        info = self._inspect_image(self.settings, present)
        if info is None:
            self._image_missing(now, f"{ref} went away while it was inspected")
            return
        self._use_image(info)
        self.spec = derive_spec(self.settings, self.layout)
        self.image_id = present
        self.image_attempt = 0
        first = self.container_id is None
        if first:
            # The first reconcile: create, adopt, start or replace, without
            # counting it as a restart.
            self.repair_at = self.clock()
        else:
            self._reconcile_again(self.clock())

    def _local_image(self, ref: str, policy: PullPolicy, *, announce: bool) -> str:
        """The local id of ``ref``, pulled first as ``policy`` says (a failed pull falls back
        to a local copy). ImageUnavailable naming why there is none: the engine refuses the
        reference, the pull failed, or it is absent and MY_REG_PULL=never. ``announce``: the
        phase says PULLING while it pulls (not for a reload's check)."""
        present = self.docker.image_id(ref)
        if policy is PullPolicy.ALWAYS or (policy is PullPolicy.MISSING and present is None):
            if announce:
                self.phase = Phase.PULLING
                self._heartbeat(self.clock())
            self.log.info("image.pulling", policy=policy.value, image=ref)
            try:
                self.docker.pull(ref, progress=self._pull_progress)
                present = self.docker.image_id(ref)
                self.log.info("image.pulled", image_id=present, image=ref)
            except ImageUnavailable as err:
                if present is None:
                    raise
                self.log.warning("image.pull_failed_using_local", error=str(err))
        if present is None:
            raise ImageUnavailable(f"{ref} is not present locally and MY_REG_PULL=never")
        return present

    @property
    def layout(self) -> ImageLayout | None:
        return self.image.layout if self.image is not None else None

    def _inspect_image(self, settings: Settings, image_id: str) -> images.ImageInfo | None:
        """The image's layout and registry version (cached per image id), with ``settings``
        checked against that version; None if the image is gone. ConfigError when its
        layout cannot be read or a setting would do nothing on this version."""
        if self.image is not None and self.image.id == image_id:
            info: images.ImageInfo | None = self.image
        else:
            docker = self.docker
            info = self._blocking(
                "registry-version",
                API_TIMEOUT_S + VERSION_TIMEOUT_S,
                lambda: images.describe(settings, docker, image_id),
            )
        if info is not None:
            self._check_version(settings, info)
        return info

    def _use_image(self, info: images.ImageInfo | None) -> None:
        if info is not None and info != self.image:
            self.log.info(
                "image.inspected",
                image_id=info.id,
                registry_version=info.label,
                config=info.layout.config_path,
                binary=info.layout.binary,
            )
            self.metrics.info.clear()  # one version at a time: the image's
            self.metrics.info.labels(version=info.label).set(1)
        self.image = info

    def _check_version(self, settings: Settings, info: images.ImageInfo) -> None:
        findings = version_findings(settings.registry_env, info.version)
        errors = [finding.text for finding in findings if finding.error]
        if errors:
            raise ConfigError(errors)
        for finding in findings:
            self.log.warning("settings.version_mismatch", detail=finding.text, version=info.label)

    def _pull_progress(self) -> None:
        now = self.clock()
        if not self.ready_sent:
            self.notifier.extend_timeout(START_EXTENSION_S)
        self._heartbeat(now)

    def _image_missing(self, now: float, detail: str) -> None:
        self.image_attempt += 1
        delay = IMAGE_RETRY.delay(self.image_attempt + 1)
        self.log.error(
            "image.unavailable", error=detail, attempt=self.image_attempt, retry_in_s=delay
        )
        self.phase = Phase.PULLING
        self.image_retry_at = now + delay
        if not self.ready_sent:
            self.notifier.extend_timeout(delay + START_EXTENSION_S)

    # -- container -------------------------------------------------------------------

    def _check_container(self, now: float, down_reason: Reason | None = None) -> None:
        """Look at the container after an event or a failed probe; repair if it is down."""
        if self.repair_at is not None or self._in_maintenance(now) or self.image is None:
            # (without the image's layout there is no spec to compare with: _ensure_image
            # reconciles once it has one)
            return
        holder, held = self._observe_holder()
        if held.action is not Action.ADOPT or holder is None:
            # Without its holder the registry has no network: the repair covers both.
            reason = self._down_reason(holder, held, down_reason)
            self.schedule_repair(now, reason, part=self.holder.name)
            return
        observed = self.docker.inspect(self.settings.name)
        decision = decide(
            observed,
            self.spec,
            self.image_id,
            holder=holder,
            in_holder_network=self._in_holder_network(observed, holder),
        )
        if decision.action is Action.ADOPT:
            if observed is not None and observed.id != self.container_id:
                self.container_id = observed.id
                # First sight (ours restarted, or `gc` recreated it in the same holder): the
                # namespace it joined is taken to be the holder's now; the probe says if not.
                self.joined_holder_pid = holder.pid
                self.log.info("container.adopted", container_id=observed.short_id)
            # Events from our own restart, or a die that is already repaired.
            self.recent_actions.clear()
            return
        reason = self._down_reason(observed, decision, down_reason)
        exit_code = observed.exit_code if observed is not None and not observed.running else None
        self.schedule_repair(now, reason, exit_code=exit_code)

    def _in_holder_network(self, registry: Observed | None, holder: Observed) -> bool | None:
        """Whether the running registry shares the holder's network namespace (see decide()).

        The processes' namespaces are the truth when /proc shows them; else the holder's
        pid when this supervisor last started the registry in it (a restarted holder has
        another). None: no evidence either way (the probe then tells).
        """
        if registry is None or not registry.running or not holder.running:
            return None
        mine, its = network_namespace(registry), network_namespace(holder)
        if mine is not None and its is not None:
            return mine == its
        if self.joined_holder_pid is not None and registry.id == self.container_id:
            return holder.pid == self.joined_holder_pid
        return None

    def _observe_holder(self) -> tuple[Observed | None, Decision]:
        """The network holder as the engine shows it, and what it needs."""
        holder = self.docker.inspect(self.holder.name)
        # The holder only runs `sleep`: a new image id is no reason to rebuild its network.
        return holder, decide(holder, self.holder, None)

    def _down_reason(
        self, observed: Observed | None, decision: Decision, down_reason: Reason | None
    ) -> Reason:
        if decision.action is Action.REPLACE:
            return decision.reason or Reason.SPEC_CHANGED
        if decision.action is Action.RESTART and decision.reason is Reason.NETWORK_LOST:
            # Running, but in a namespace its holder no longer has: not a crash.
            return Reason.NETWORK_LOST
        name = observed.name if observed is not None else ""
        # Only what happened since its last `start` event (see _on_event): the `stop` of
        # our own repair, seen after the `die` that was already handled, must not name
        # the next crash.
        reason = classify(observed, self.recent_actions[name])
        if down_reason is not None and reason is Reason.CRASHED:
            return down_reason
        return reason

    def schedule_repair(
        self,
        now: float,
        reason: Reason,
        exit_code: int | None = None,
        part: str | None = None,
        *,
        after_failure: bool = False,
    ) -> None:
        """Count a restart, log it once, and set when it happens (backoff)."""
        if self._in_maintenance(now) or self.repair_at is not None:
            return
        if self.rollback_to is not None and reason in ROLLBACK_REASONS:
            # The reloaded container failed before it ever served: the old spec did.
            self.restarts[reason] += 1
            self.metrics.restarts.labels(reason=reason.value).inc()
            self._roll_back(reason)
            reason, after_failure = Reason.SPEC_CHANGED, False
        if reason in (Reason.SPEC_CHANGED, Reason.ENGINE_RESTARTED) and not after_failure:
            # A change, or the engine's own restart: not the registry failing. A repair
            # that failed backs off whatever its reason: never a busy loop.
            attempt, delay = self.budget.attempt, 0.0
        else:
            attempt, delay = self.budget.next_restart()
        self.restarts[reason] += 1
        self.metrics.restarts.labels(reason=reason.value).inc()
        self.last_reason = reason
        self.last_reason_wall = datetime.now(UTC)
        self.pending_reason = reason
        self.repair_at = now + delay
        # HEALTHY | STARTING | UNHEALTHY -> RESTARTING
        self.phase = Phase.RESTARTING
        self.log.warning(
            "container.restarting",
            reason=reason.value,
            exit_code=exit_code,
            attempt=attempt,
            delay_s=round(delay, 3),
            **({"down": part} if part else {}),
        )

    def _repair(self, now: float) -> None:
        reason = self.pending_reason
        try:
            if not self._apply_repair(reason):
                self.repair_at = now + REMOVAL_RECHECK_S
                return
        except ContainerGone:
            # Removed under our feet (`docker rm -f` races): look again shortly.
            self.repair_at = now + REMOVAL_RECHECK_S
            return
        except ImageUnavailable as err:
            self.log.error("image.unavailable", error=str(err))
            self.image_id = None
            self.repair_at = None
            return
        except PortBusy as err:
            self._port_busy(self.clock(), err)
            return
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
            self.schedule_repair(self.clock(), Reason.START_FAILED, after_failure=True)
            return
        if self.port_busy_by is not None:
            self.log.info("port.freed", address=f"{self.settings.bind}:{self.settings.port}")
        self.port_busy_by = None
        self.port_attempt = 0
        # RESTARTING | PORT_BUSY -> STARTING
        self.failed_starts = 0
        self.repair_at = None
        self.pending_reason = None
        self._enter_starting(self.clock())

    def _apply_repair(self, reason: Reason | None) -> bool:
        """Holder first, then the registry in its namespace; False: look again shortly."""
        holder, held = self._observe_holder()
        held = self._unless_unstartable(held)
        observed = self.docker.inspect(self.settings.name)
        if held.action is Action.WAIT:
            return False
        if held.action is not Action.ADOPT or holder is None:
            holder = self._repair_holder(holder, held, observed)
            observed = self.docker.inspect(self.settings.name)
        holder_id = holder.id
        unhealthy = reason is Reason.UNHEALTHY
        decision = self._unless_unstartable(
            decide(
                observed,
                self.spec,
                self.image_id,
                unhealthy=unhealthy,
                holder=holder,
                in_holder_network=self._in_holder_network(observed, holder),
            )
        )
        if decision.action is Action.WAIT:
            return False
        # Whatever happens below, the registry (re)joins the namespace of this holder.
        self.joined_holder_pid = holder.pid
        if decision.action is Action.ADOPT and observed is not None:
            if observed.id != self.container_id:
                self.log.info("container.adopted", container_id=observed.short_id)
            self.container_id = observed.id
        elif decision.action is Action.START and observed is not None:
            self.docker.start(observed.id)
            self.container_id = observed.id
            self.log.info("container.started", container_id=observed.short_id, reason=reason)
        elif decision.action is Action.RESTART and observed is not None:
            self._restart(observed.id)
            self.container_id = observed.id
            self.log.info("container.started", container_id=observed.short_id, reason=reason)
        elif decision.action is Action.REPLACE and observed is not None:
            self._retire(observed, decision.reason)
            self._create(holder_id)
        else:  # Action.CREATE
            self._create(holder_id)
        return True

    def _port_busy(self, now: float, err: PortBusy) -> None:
        """Wait for the host port with backoff: no holder is created or replaced meanwhile,
        and the log says what holds it once per change, not once per try."""
        if self.rollback_to is not None:
            # A reload onto a port that is taken: the settings that worked had one.
            self._roll_back(Reason.PORT_BUSY)
            self.repair_at = None
            self.schedule_repair(now, Reason.SPEC_CHANGED)
            return
        by = err.by or (
            f"no container: a host process (see `ss -ltnp 'sport = :{self.settings.port}'`)"
        )
        self.port_attempt += 1
        delay = PORT_RETRY.delay(self.port_attempt + 1)
        if by != self.port_busy_by:
            self.log.warning(
                "port.busy",
                address=f"{self.settings.bind}:{self.settings.port}",
                held_by=by,
                error=str(err),
                retry_in_s=delay,
            )
            self.port_busy_by = by
            self.last_reason = Reason.PORT_BUSY
            self.last_reason_wall = datetime.now(UTC)
        else:
            self.log.debug("port.still_busy", attempt=self.port_attempt, retry_in_s=delay)
        # RESTARTING -> PORT_BUSY
        self.phase = Phase.PORT_BUSY
        self.pending_reason = Reason.PORT_BUSY
        self.repair_at = now + delay
        if not self.ready_sent:
            self.notifier.extend_timeout(delay + START_EXTENSION_S)

    def _free_port(self) -> None:
        """Before our holder publishes the port: take over the same registry run another
        way (supervisor/takeover.py); PortBusy if anything else holds the port."""
        settings = self.settings
        claim = takeover.claim_port(
            self.docker.publishing(settings.port),
            settings.name,
            settings.bind,
            settings.port,
            data_dirs(settings),
        )
        for old in claim.take_over:
            self._take_over(old)
        if claim.blockers:
            by = "; ".join(takeover.blocker_line(b, str(settings.dir)) for b in claim.blockers)
            raise PortBusy(f"{settings.bind}:{settings.port} is held", by=by)

    def _take_over(self, old: Observed) -> None:
        """Stop the same registry run another way, for good; never remove it or its data."""
        # The policy first: Docker starts a stopped `restart: always` container again when
        # the engine restarts, and it would take the port before our holder.
        if old.restart_policy != "no":
            self.docker.disable_restart(old.id)
        if old.running or old.state is ContainerState.PAUSED:
            self._stop(old.id)
        self.log.warning(
            "takeover.done",
            name=old.name,
            container_id=old.short_id,
            image=old.image,
            was_running=old.running,
            restart_policy_was=old.restart_policy,
            compose_project=old.compose_project,
            compose_service=old.compose_service,
            data_dir=str(self.settings.dir),
            undo=takeover.undo(old),
        )

    def _enter_starting(self, now: float) -> None:
        """A container was just (re)started or adopted: probe fast, grace from now."""
        self.recent_actions.clear()
        self.failures.reset()
        self.phase = Phase.STARTING
        self.started_at = now
        self.probe_at = now

    def _unless_unstartable(self, decision: Decision) -> Decision:
        """START or RESTART becomes REPLACE once the engine has refused too many starts."""
        if self.failed_starts >= REPLACE_AFTER_FAILED_STARTS and decision.action in (
            Action.START,
            Action.RESTART,
        ):
            return Decision(Action.REPLACE, Reason.UNSTARTABLE)
        return decision

    def _repair_holder(
        self, holder: Observed | None, held: Decision, registry: Observed | None
    ) -> Observed:
        """Bring the network holder back, running.

        The registry's network went with the holder, so a running registry is stopped
        first (started again by the caller), and retired if the holder is replaced:
        Docker names the holder by id. A registry to be replaced anyway (foreign, or
        from an earlier release) may hold the port, so it goes before a new holder.
        """
        if registry is not None:
            own = decide(registry, self.spec, self.image_id)
            if own.action is Action.REPLACE:
                self._retire(registry, own.reason)
            elif held.action in (Action.CREATE, Action.REPLACE):
                self._retire(registry, Reason.NETWORK_LOST)
            elif registry.running:
                self._stop(registry.id)
        if held.action is Action.REPLACE and holder is not None:
            self._retire(holder, held.reason)
        # Whatever else publishes the port goes, or we wait, before a holder is created.
        self._free_port()
        if held.action in (Action.CREATE, Action.REPLACE) or holder is None:
            holder = self.docker.create_holder(self.holder)
            self.log.info("holder.created", name=self.holder.name, container_id=holder.short_id)
            # A host process on the port fails this (PortBusy): the holder stays, to be
            # started once the port is free, never created again meanwhile.
            self.docker.start(holder.id)
        else:
            if held.action is Action.RESTART:  # paused
                self._restart(holder.id)
            else:
                self.docker.start(holder.id)
            self.log.info("holder.started", name=self.holder.name, container_id=holder.short_id)
        # Its new StartedAt tells a registry started before it (one without a network).
        started = self.docker.inspect(holder.id)
        if started is None:
            raise ContainerGone(f"{self.holder.name}: removed while starting")
        return started

    def _create(self, holder_id: str) -> None:
        created = self.docker.create(self.spec, holder_id)
        self.container_id = created.id
        self.docker.start(created.id)
        self.log.info(
            "container.created",
            container_id=created.short_id,
            spec_hash=self.spec.spec_hash,
            data_dir=str(self.settings.dir),
        )

    def _retire(self, observed: Observed, reason: Reason | None) -> None:
        """Stop and remove a container we replace; its volumes and data stay."""
        if observed.running:
            self._stop(observed.id)
        with suppress(ContainerGone):  # `docker run --rm`: its stop removed it
            self.docker.remove(observed.id)
        self.log.warning(
            "container.replaced",
            name=observed.name,
            old_id=observed.short_id,
            old_image=observed.image,
            why=(reason or Reason.SPEC_CHANGED).value,
        )

    # -- health ------------------------------------------------------------------------

    def _probe(self, now: float) -> None:
        started = now
        timeout, probe = self.settings.health_timeout, self.probe
        try:
            # Connect and read are each bounded by the timeout.
            status = self._blocking("probe", 2 * timeout, lambda: probe(timeout))
            healthy, detail = is_healthy(status), f"HTTP {status}"
        except ProbeFailed as err:
            healthy, detail = False, str(err)
        self.metrics.probe_seconds.observe(max(0.0, self.clock() - now))
        now = self.clock()
        if healthy:
            self._healthy(now)
            return
        if self._in_maintenance(now):
            return  # `gc` stopped it on purpose while we asked
        self.budget.observe_unhealthy()
        in_grace = (
            self.phase is Phase.STARTING and now - self.started_at < self.settings.startup_grace
        )
        # A container that is not running needs a repair, not more probes. Take
        # in the events already queued first: a `kill` before the `die` is what
        # tells a `docker stop` from a crash.
        observed = self.docker.inspect(self.settings.name)
        holder = self.docker.inspect(self.holder.name)
        if observed is None or not observed.running or holder is None or not holder.running:
            self._drain_messages()
            self._check_container(now)
            return
        if in_grace:
            self.probe_at = now + FAST_PROBE_S
            return
        must_restart = self.failures.record(False)
        self.log.warning(
            "probe.failed",
            failures=self.failures.failures,
            retries=self.settings.health_retries,
            error=detail,
        )
        if must_restart:
            self.schedule_repair(now, Reason.UNHEALTHY)
            return
        # HEALTHY | STARTING -> UNHEALTHY
        self.phase = Phase.UNHEALTHY
        # Start to start: a failed probe already spent its timeout, and counting the
        # interval from its end would stretch hang detection by retries x timeout.
        self.probe_at = started + self.settings.health_interval

    def _healthy(self, now: float) -> None:
        if self.phase is not Phase.HEALTHY:
            # STARTING | UNHEALTHY -> HEALTHY
            self.log.info(
                "registry.healthy",
                container_id=(self.container_id or "")[:12],
                after_s=round(now - self.started_at, 3),
                restarts=sum(self.restarts.values()),
            )
            self.phase = Phase.HEALTHY
            self.healthy_since = now
            self.healthy_since_wall = datetime.now(UTC)
        self.failures.reset()
        self.last_ok_at = now
        self.engine_losses = 0
        self.budget.observe_healthy(now)
        if self.rollback_to is not None:
            self.rollback_to = None
            self.log.info("settings.reload_confirmed", spec_hash=self.spec.spec_hash)
        if not self.ready_sent:
            self.ready_sent = True
            self.notifier.status(self.status_line(now))
            self.notifier.ready()
        self.probe_at = now + self.settings.health_interval

    # -- reload ------------------------------------------------------------------------

    def reload(self) -> None:
        """SIGHUP: re-read settings; replace the container only if its spec changed.

        A reload never takes down a working registry: settings that do not validate, an
        image that is not there, or a container the engine refuses to create are rejected
        before anything is touched (``settings.reload_rejected``); a new container that
        then fails to start, crashes or fails its probes before it was once healthy is
        rolled back to the previous settings (see ``schedule_repair``).
        """
        # Before the first READY, systemd is still waiting for the registry to answer:
        # a reload then must not tell it we are ready.
        started = self.ready_sent
        if started:
            self.notifier.reloading()
        self.log.info("supervisor.reloading")
        try:
            self._reload()
        finally:
            if started:
                self.notifier.ready()

    def _reload(self) -> None:
        try:
            new = with_http_secret(load_settings(self.env_file))
            new_spec = derive_spec(new, self.layout)
            if self._defer_reload():
                return
            if new.dir != self.settings.dir:
                make_data_dir(new)  # before the check: the Mounts API wants a source
            image_id = self._preflight(new, new_spec)
            info = self._reload_image(new, image_id)
            new_spec = derive_spec(new, info.layout if info is not None else None)
        except (ConfigError, TransientError) as err:
            self.log.error("settings.reload_rejected", problems=err.problems)
            return
        except EngineUnavailable as err:
            # Lost mid-check: nothing changed; check again once it is back.
            self._engine_lost(str(err))
            self._defer_reload()
            return
        old_settings, old_spec, old_image_id = self.settings, self.spec, self.image_id
        changed = new_spec.spec_hash != old_spec.spec_hash
        self._use_image(info)
        self._apply_settings(new)
        if image_id is not None:
            self.image_id = image_id
        elif new.image_ref != old_settings.image_ref or new.pull is PullPolicy.ALWAYS:
            self.image_id = self.image = None  # both looked at anew (_ensure_image)
        if self.engine is not None and new.name != old_settings.name:
            self._retire_all(old_spec)
        self.log.info("supervisor.reloaded", spec_changed=changed, spec_hash=new_spec.spec_hash)
        self._warn_risks()
        if changed and self.engine is not None and self.image_id is not None:
            if self.ready_sent and self.rollback_to is None:
                # Kept only once the new container has been healthy. A second reload before
                # that keeps the settings known to work as the ones to go back to.
                self.rollback_to = (old_settings, old_image_id)
            self.repair_at = None
            self.schedule_repair(self.clock(), Reason.SPEC_CHANGED)

    def _reload_image(self, new: Settings, image_id: str | None) -> images.ImageInfo | None:
        """The image the reloaded settings run, checked against them: the new one the
        preflight found, or the current one. ConfigError."""
        if image_id is None:
            if self.image is not None:
                self._check_version(new, self.image)
            return self.image
        info = self._inspect_image(new, image_id)
        if info is None:
            raise ConfigError([f"image {new.image_ref}: removed while it was checked"])
        return info

    def _defer_reload(self) -> bool:
        """Whether the reload must wait: with the engine away it cannot be checked (nor
        rolled back), and during `gc` the registry is not ours to change. It runs again from
        the start (re-reading the settings) once the engine is back and `gc` has ended."""
        why = "engine-down" if self.engine is None else None
        if self._in_maintenance(self.clock()):
            why = "maintenance"
        if why is None:
            return False
        self.reload_pending = True
        self.log.warning("supervisor.reload_deferred", until=why)
        return True

    def _apply_settings(self, new: Settings) -> None:
        """Make ``new`` the settings everything works from (no engine calls)."""
        log.configure(new.log_format, new.log_level)
        renamed = new.name != self.settings.name
        self.settings, self.spec = new, derive_spec(new, self.layout)
        self.holder = holder_spec(self.spec)
        self.log = self._bind_log()
        self.probe.close()
        self.probe = self.probe_factory(new.probe_url, new.tls_certificate)
        self.certificate = risks.certificate(new)
        self.failures = FailureCount(new.health_retries)
        self.disk_guard.min_free_percent = new.min_free
        self.disk_check_at = 0.0
        self.state_file = state_file.StateFile(state_file.state_path(new))
        self.maintenance_path = maintenance.maintenance_path(new)
        if renamed:
            self.container_id = None
            self.joined_holder_pid = None
            if self.engine is not None:
                self._watch()

    def _preflight(self, new: Settings, new_spec: ContainerSpec) -> str | None:
        """Make sure the engine will take the new spec before the old container goes.

        Returns the new image's id when it was looked up (None: nothing to check now,
        e.g. the engine is down: the normal repair path then applies the spec). Raises
        ConfigError naming why the new settings cannot be applied.
        """
        if self.engine is None or self.maintenance is not None:
            return None
        new_holder = holder_spec(new_spec)
        if new_spec.spec_hash == self.spec.spec_hash and new_holder == self.holder:
            return None
        where = f"MY_REG_IMAGE={new.image} MY_REG_TAG={new.tag}"
        try:
            try:
                present = self._local_image(new_spec.image, new.pull, announce=False)
            except ImageUnavailable as err:
                raise ConfigError(
                    [f"{where}: expected an image present or pullable ({err})"]
                ) from None
            holder = self.docker.inspect(self.holder.name)
            same_holder = new_holder.spec_hash == self.holder.spec_hash and holder is not None
            self.docker.check_creatable(
                new_spec, new_holder, holder.id if same_holder and holder else None
            )
        except (ContainerActionFailed, ImageUnavailable) as err:
            raise ConfigError([f"the engine refuses the new container: {err}"]) from None
        except EngineRefused as err:
            raise ConfigError([f"the engine could not check the new container: {err}"]) from None
        return present

    def _retire_all(self, spec: ContainerSpec) -> None:
        """Retire the registry and holder of ``spec`` (a rename leaves them behind)."""
        for name in (spec.name, spec.holder_name):
            try:
                old = self.docker.inspect(name)
                if old is not None and old.managed:
                    self._retire(old, Reason.SPEC_CHANGED)
            except SupervisorError as err:
                self.log.warning("container.retire_failed", name=name, error=str(err))

    def _roll_back(self, reason: Reason) -> None:
        """The reloaded spec did not work: back to the settings that did."""
        if self.rollback_to is None:
            return
        old_settings, old_image_id = self.rollback_to
        self.rollback_to = None
        failed_spec = self.spec
        self.log.error(
            "settings.reload_rejected",
            problems=[
                f"the new container did not work ({reason.value}); back to the previous settings"
            ],
            spec_hash=failed_spec.spec_hash,
        )
        if self.image is not None and self.image.id != old_image_id:
            # The old image's layout is looked up again with it (_ensure_image).
            self.image, old_image_id = None, None
        self._apply_settings(old_settings)
        self.image_id = old_image_id
        self.failed_starts = 0
        if self.engine is not None and failed_spec.name != old_settings.name:
            self._retire_all(failed_spec)

    # -- maintenance, disk guard, state file ---------------------------------------------

    def _in_maintenance(self, now: float) -> bool:
        """Whether the maintenance lock holds (supervisor/statedir/maintenance.py: `gc` lives, or
        the collector it left runs); notices its start and its end. No wall clock."""
        current = maintenance.read(self.maintenance_path)
        if current is not None and not (
            maintenance.holder_lives(current) or self._collector_holds(current, now)
        ):
            current = None  # stale
        if current is not None and self.maintenance is None:
            # any phase -> MAINTENANCE
            self.maintenance = current
            self.phase = Phase.MAINTENANCE
            self.repair_at = None
            self.pending_reason = None
            self.log.info("maintenance.started", task=current.task, pid=current.pid)
        elif current is None and self.maintenance is not None:
            self.maintenance = None
            self.log.info("maintenance.ended")
            self._after_maintenance(now)
        return self.maintenance is not None

    def _collector_holds(self, lock: maintenance.Maintenance, now: float) -> bool:
        """With its `gc` dead, whether the lock's collector still runs: the engine is asked
        at most every COLLECTOR_CHECK_S, and never again once it has ended."""
        seen = self.collector_seen
        if seen is not None and not maintenance.collector_look_due(
            seen, lock, now, COLLECTOR_CHECK_S
        ):
            return seen.holds
        if lock.collector is None:  # a file from before the lock named its collector
            holds = False
        else:
            try:
                if self.engine is not None:
                    observed = self.engine.inspect(lock.collector)
                else:
                    # The loop reconnects only once maintenance ends: ask on the side.
                    with closing(self.engine_factory()) as engine:
                        observed = engine.inspect(lock.collector)
                holds = maintenance.collector_holds(observed)
            except EngineUnavailable as err:
                self._engine_lost(str(err))
                holds = True  # unknown: the collector may be sweeping
        if seen is None or seen.lock != lock:
            self.log.warning(
                "maintenance.holder_dead",
                task=lock.task,
                pid=lock.pid,
                collector=lock.collector,
                collector_running=holds,
            )
        self.collector_seen = maintenance.CollectorSeen(lock, now, holds)
        return holds

    def _after_maintenance(self, now: float) -> None:
        """Adopt what `gc` left (the normal container); repair it if it left none."""
        # MAINTENANCE -> STARTING (or RESTARTING)
        self._enter_starting(now)
        if self.engine is None:
            self.phase = Phase.ENGINE_DOWN
        if self.engine is None or self.image_id is None:
            return
        try:
            self._check_container(now)
        except EngineUnavailable as err:
            self._engine_lost(str(err))

    def _check_disk(self, now: float) -> None:
        """At most every DISK_CHECK_S: warn once when free space crosses MY_REG_MIN_FREE."""
        if not self.disk_guard.enabled and not self.disk_guard.low and not self.metrics_on:
            return
        if now < self.disk_check_at or self.repair_at is not None:
            return
        self.disk_check_at = now + DISK_CHECK_S
        try:
            usage = disk.usage(self.settings.dir)
        except OSError as err:
            self.log.warning("disk.usage_failed", error=str(err))
            return
        crossing = self.disk_guard.update(usage.free_percent)
        self.metrics.data_dir_free_bytes.set(usage.free)
        if self.metrics_on:
            size = disk.tree_size(self.settings.dir, max_seconds=METRICS_WALK_MAX_S)
            self.metrics.data_dir_bytes.set(size.bytes)
        fields = {
            "data_dir": str(self.settings.dir),
            "free_percent": round(usage.free_percent, 2),
            "free_bytes": usage.free,
            "min_free_percent": self.settings.min_free,
        }
        if crossing is disk.Crossing.LOW:
            self.log.warning("disk.low", hint="registry-supervisor gc --dry-run", **fields)
            # The collector's dry run takes a container start and a walk of the
            # registry's metadata: off the loop, so probes and the watchdog go on.
            threading.Thread(
                target=self._estimate_reclaimable, name="gc-estimate", daemon=True
            ).start()
        elif crossing is disk.Crossing.RECOVERED:
            self.log.info("disk.ok", **fields)

    def _estimate_reclaimable(self) -> None:
        """Say how much a garbage collection would free (thread: logs, decides nothing)."""
        from supervisor.ops import gc

        guard = self.disk_guard
        try:
            with closing(self.engine_factory()) as engine:
                reclaimable = gc.estimate_reclaimable(self.settings, engine)
        except (SupervisorError, OSError) as err:
            self.log.warning("disk.gc_estimate_failed", error=str(err))
            return
        if guard.low:
            guard.reclaimable = reclaimable
        self.log.warning(
            "disk.gc_estimate",
            gc_would_free_bytes=reclaimable,
            gc_would_free=None if reclaimable is None else disk.human_bytes(reclaimable),
        )

    def state_content(self) -> dict[str, Any]:
        """What the state file holds (pure: no I/O)."""

        def iso(moment: datetime | None) -> str | None:
            return moment.isoformat(timespec="seconds") if moment is not None else None

        return {
            "version": state_file.STATE_VERSION,
            "pid": os.getpid(),
            "container": self.settings.name,
            "container_id": self.container_id,
            "phase": self.phase.value,
            "supervisor_started_at": iso(self.started_wall),
            "healthy_since": iso(self.healthy_since_wall) if self.phase is Phase.HEALTHY else None,
            "restarts": {reason.value: count for reason, count in sorted(self.restarts.items())},
            "last_reason": self.last_reason.value if self.last_reason else None,
            "last_reason_at": iso(self.last_reason_wall),
            "image_id": self.image_id,
            "registry_version": self.image.label if self.image is not None else None,
            "disk_low": self.disk_guard.low,
            "disk_free_percent": (
                None
                if self.disk_guard.free_percent is None
                else round(self.disk_guard.free_percent, 2)
            ),
            "updated_at": iso(datetime.now(UTC)),
        }

    def _save_state(self, now: float) -> None:
        """Offer the state file a new content, off the hot path of a restart."""
        waiting = self.phase is Phase.PORT_BUSY  # not a recovery: nothing to keep fast
        if not waiting and self.repair_at is not None and self.repair_at - now < STATE_QUIET_S:
            return
        if self.phase is Phase.STARTING and now - self.started_at < STATE_QUIET_S:
            return
        try:
            self.state_file.offer(now, self.state_content())
        except OSError as err:
            if not self.state_failed:
                self.log.warning(
                    "state.write_failed", path=str(self.state_file.path), error=str(err)
                )
            self.state_failed = True
        else:
            self.state_failed = False

    @property
    def metrics_on(self) -> bool:
        return self.settings.metrics_addr is not None

    def _update_metrics(self, now: float) -> None:
        """The gauges that follow the phase (cheap: no I/O)."""
        healthy = self.phase is Phase.HEALTHY
        self.metrics.up.set(1 if healthy else 0)
        self.metrics.maintenance.set(1 if self.phase is Phase.MAINTENANCE else 0)
        since = self.last_ok_at if self.last_ok_at is not None else self.boot_at
        self.metrics.since_healthy.set(0.0 if healthy else max(0.0, now - since))

    # -- one journal ----------------------------------------------------------------------

    def _follow_logs(self, now: float) -> None:
        """Keep one LogFollower on the current container (MY_REG_FORWARD_LOGS)."""
        if not self.settings.forward_logs or self.engine is None or self.container_id is None:
            return
        follower = self.log_follower
        same = follower is not None and follower.container_id == self.container_id
        if same and follower is not None and follower.alive:
            return
        if self.repair_at is not None or self.maintenance is not None:
            return  # the container is about to change
        if now < self.follow_retry_at:
            return
        self.follow_retry_at = now + FOLLOW_RETRY_S
        # Lines from before this supervisor started were someone else's to read.
        since = self.started_wall.timestamp()
        if same and follower is not None:
            since = max(since, follower.last_seen)
        self._stop_following()
        try:
            api = self.docker.stream_client()
        except EngineUnavailable as err:
            self.log.warning("registry.logs_unavailable", error=str(err))
            return
        self.log_follower = logs.LogFollower(
            api,
            self.container_id,
            since,
            self.log.bind(source="registry"),
        )
        self.log_follower.start()

    def _stop_following(self) -> None:
        if self.log_follower is not None:
            self.log_follower.close()
            self.log_follower = None
