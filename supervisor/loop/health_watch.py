"""The health watch: probes ``/v2/`` on its cadence and says what the answer means.

It never changes the phase or reaches the container: ``probe`` reports an answer,
``judge`` a verdict, and the loop acts on it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from supervisor import tls
from supervisor.adapters.metrics import Metrics
from supervisor.adapters.probe import Probe, ProbeFailed
from supervisor.health import (
    DependencyBackoff,
    FailureClass,
    FailureCount,
    http_failure,
    is_healthy,
)
from supervisor.loop.watchdog import WatchdogFeeder
from supervisor.settings import Settings

# Right after a (re)start, probe this often until /v2/ answers: recovery time is
# what users feel, and a refused connection costs microseconds.
FAST_PROBE_S = 0.05

# A registry whose own health check fails (503, a dependency) is restarted anyway first
# after this long, then at doubling intervals up to the cap (supervisor/health.py).
DEPENDENCY_FIRST_RESTART_S = 300.0
DEPENDENCY_MAX_RESTART_S = 3600.0

ProbeFactory = Callable[[str, Path | None], Probe]


@dataclass(frozen=True)
class ProbeAnswer:
    """One probe: whether the registry served, what it said (one phrase), when the probe
    began; for a failure its class and, after a TLS failure, the served certificate."""

    healthy: bool
    detail: str
    started: float
    failure: FailureClass | None = None
    served: str | None = None


class Verdict(StrEnum):
    """What a failed probe means, given the phase and the container."""

    DOWN = "down"  # the container (or its holder) is not running: a repair, not probes
    IN_GRACE = "in-grace"  # still starting: probe again soon, count nothing
    FAILED = "failed"  # counted; confirmed soon (MY_REG_HEALTH_CONFIRM_INTERVAL)
    MUST_RESTART = "must-restart"  # MY_REG_HEALTH_RETRIES failures in a row
    DEPENDENCY = "dependency"  # serving 503 for its own health check: degraded, no restart
    DEPENDENCY_RESTART = "dependency-restart"  # degraded so long that a restart is tried
    TLS_FAILED = "tls-failed"  # a handshake a restart cannot fix: reported, not counted
    REPINNED = "repinned"  # the probe's pin was older than the certificate served: ask again


class HealthWatch:
    """Probe cadence, the consecutive-failure count, and since when the registry is up."""

    def __init__(
        self,
        settings: Settings,
        probe_factory: ProbeFactory,
        metrics: Metrics,
        feeder: WatchdogFeeder,
        clock: Callable[[], float],
        *,
        log: Any,
    ) -> None:
        self._probe_factory = probe_factory
        self.log = log
        self.metrics = metrics
        self._feeder = feeder
        self._clock = clock
        self.settings = settings
        self.probe_http = probe_factory(settings.probe_url, settings.tls_certificate)
        self.failures = FailureCount(settings.health_retries)
        self.dependency = DependencyBackoff(DEPENDENCY_FIRST_RESTART_S, DEPENDENCY_MAX_RESTART_S)
        self.probe_at = 0.0
        self.started_at = 0.0
        self.healthy_since: float | None = None
        self.healthy_since_wall: datetime | None = None
        self.last_ok_at: float | None = None
        # The last failure's phrase (STATUS), until a probe succeeds.
        self.last_error: str | None = None
        # The certificate file's fingerprint a TLS mismatch already restarted for: a
        # second restart for the same file could not fix what the first did not.
        self._tls_restarted_for: str | None = None
        self._tls_reported: str | None = None  # logged once per phrase

    def configure(self, settings: Settings) -> None:
        """New settings: a new probe (URL, certificate) and failure threshold."""
        self.settings = settings
        self.probe_http.close()
        self.probe_http = self._probe_factory(settings.probe_url, settings.tls_certificate)
        self.failures = FailureCount(settings.health_retries)

    def due(self, now: float) -> bool:
        """Whether the next probe is due."""
        return now >= self.probe_at

    def starting(self, now: float) -> None:
        """A container was just (re)started or adopted: probe fast, grace from now."""
        self.failures.reset()
        self.started_at = now
        self.probe_at = now

    def probe(self, now: float) -> ProbeAnswer:
        """``GET /v2/`` once, bounded by MY_REG_HEALTH_TIMEOUT for connect and for read."""
        timeout, probe = self.settings.health_timeout, self.probe_http
        failure: FailureClass | None = None
        served = None
        try:
            response = self._feeder.blocking("probe", 2 * timeout, lambda: probe.ask(timeout))
            healthy = is_healthy(response.status)
            detail = f"HTTP {response.status}"
            if not healthy:
                failure, detail = http_failure(response.status, response.error)
        except ProbeFailed as err:
            healthy, detail, failure, served = False, str(err), err.failure, err.served
        self.metrics.probe_seconds.observe(max(0.0, self._clock() - now))
        return ProbeAnswer(healthy, detail, now, failure, served)

    def in_grace(self, now: float) -> bool:
        """Whether a starting registry is still within MY_REG_STARTUP_GRACE."""
        return now - self.started_at < self.settings.startup_grace

    def judge(self, answer: ProbeAnswer, now: float, *, starting: bool, running: bool) -> Verdict:
        """What a failed probe means; counts it when it counts, and sets the next probe."""
        if answer.failure is FailureClass.DEPENDENCY:
            return self._dependency(answer, now)
        if not running:
            self._failed(answer)
            return Verdict.DOWN
        if starting and self.in_grace(now):
            self.probe_at = now + FAST_PROBE_S
            return Verdict.IN_GRACE
        self._failed(answer)
        if answer.failure is FailureClass.TLS:
            verdict = self._tls(answer, now)
            if verdict is not None:
                return verdict
        must_restart = self.failures.record(False)
        self.log.warning(
            "probe.failed",
            failures=self.failures.failures,
            retries=self.settings.health_retries,
            error=answer.detail,
            failure=str(answer.failure),
        )
        if must_restart:
            return Verdict.MUST_RESTART
        # Confirm soon, start to start: a failed probe already spent its time (a hang, its
        # timeout), so the next one starts as soon as this one ended if that is later.
        self.probe_at = answer.started + self.settings.health_confirm_interval
        return Verdict.FAILED

    def _failed(self, answer: ProbeAnswer) -> None:
        self.last_error = answer.detail
        failure = str(answer.failure or FailureClass.HTTP)
        self.metrics.probe_failures.labels(**{"class": failure}).inc()

    def _dependency(self, answer: ProbeAnswer, now: float) -> Verdict:
        """The registry answers, and says its own health check fails: not a hang. The
        count starts over (it answers) and the cadence is the normal one."""
        self._failed(answer)
        self.failures.reset()
        self.probe_at = answer.started + self.settings.health_interval
        if not self.dependency.failing(now):
            return Verdict.DEPENDENCY
        failing_s = now - (self.dependency.failing_since or now)
        self.log.warning(
            "health.dependency_restart",
            error=answer.detail,
            failing_s=round(failing_s, 1),
            attempt=self.dependency.restarts,
        )
        return Verdict.DEPENDENCY_RESTART

    def _tls(self, answer: ProbeAnswer, now: float) -> Verdict | None:
        """A failed handshake: None to count it (a restart can fix it: the registry
        presents a certificate other than the file's, read once at its start); otherwise
        re-pin to the file, or report it without a restart."""
        current = self._current_certificate()
        served, pinned = answer.served, self.probe_http.pinned
        if served is not None and served == current and pinned != current:
            # The file changed and the registry serves it already: the pin was stale.
            self.log.info("probe.repinned", sha256=current)
            self._repin()
            self.probe_at = now
            return Verdict.REPINNED
        fixable = served is not None and current is not None and served != current
        if fixable and self._tls_restarted_for != current:
            self._tls_restarted_for = current
            if pinned != current:
                self._repin()  # the restarted registry will serve the file's
            return None
        if self._tls_reported != answer.detail:
            self._tls_reported = answer.detail
            self.log.warning(
                "probe.tls_failed",
                error=answer.detail,
                restart=False,
                why="a restart would serve the same certificate files",
            )
        self.failures.reset()
        self.probe_at = answer.started + self.settings.health_interval
        return Verdict.TLS_FAILED

    def _repin(self) -> None:
        self.probe_http.close()
        self.probe_http = self._probe_factory(
            self.settings.probe_url, self.settings.tls_certificate
        )

    def _current_certificate(self) -> str | None:
        """The SHA-256 of MY_REG_TLS_CERT as the file is now; None if it cannot be read."""
        path = self.settings.tls_certificate
        if path is None:
            return None
        try:
            return tls.load_certificate(path).sha256
        except (OSError, ValueError):
            return None

    def served(self, now: float, *, newly: bool) -> None:
        """A probe succeeded; ``newly``: the registry was not healthy before (up since now)."""
        if newly:
            self.healthy_since = now
            self.healthy_since_wall = datetime.now(UTC)
        self.failures.reset()
        self.dependency.healthy(now)
        self.last_error = self._tls_reported = None
        self.last_ok_at = now
        self.probe_at = now + self.settings.health_interval

    def close(self) -> None:
        """Close the probe's HTTP session."""
        self.probe_http.close()
