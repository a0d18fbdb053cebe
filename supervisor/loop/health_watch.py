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

from supervisor.adapters.metrics import Metrics
from supervisor.adapters.probe import Probe, ProbeFailed
from supervisor.health import FailureCount, is_healthy
from supervisor.loop.watchdog import WatchdogFeeder
from supervisor.settings import Settings

# Right after a (re)start, probe this often until /v2/ answers: recovery time is
# what users feel, and a refused connection costs microseconds.
FAST_PROBE_S = 0.05

ProbeFactory = Callable[[str, Path | None], Probe]


@dataclass(frozen=True)
class ProbeAnswer:
    """One probe: whether the registry served, what it said, when the probe began."""

    healthy: bool
    detail: str
    started: float


class Verdict(StrEnum):
    """What a failed probe means, given the phase and the container."""

    DOWN = "down"  # the container (or its holder) is not running: a repair, not probes
    IN_GRACE = "in-grace"  # still starting: probe again soon, count nothing
    FAILED = "failed"  # counted; probe again at the normal cadence
    MUST_RESTART = "must-restart"  # MY_REG_HEALTH_RETRIES failures in a row


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
        self._metrics = metrics
        self._feeder = feeder
        self._clock = clock
        self.settings = settings
        self.probe_http = probe_factory(settings.probe_url, settings.tls_certificate)
        self.failures = FailureCount(settings.health_retries)
        self.probe_at = 0.0
        self.started_at = 0.0
        self.healthy_since: float | None = None
        self.healthy_since_wall: datetime | None = None
        self.last_ok_at: float | None = None

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
        try:
            status = self._feeder.blocking("probe", 2 * timeout, lambda: probe(timeout))
            healthy, detail = is_healthy(status), f"HTTP {status}"
        except ProbeFailed as err:
            healthy, detail = False, str(err)
        self._metrics.probe_seconds.observe(max(0.0, self._clock() - now))
        return ProbeAnswer(healthy, detail, now)

    def in_grace(self, now: float) -> bool:
        """Whether a starting registry is still within MY_REG_STARTUP_GRACE."""
        return now - self.started_at < self.settings.startup_grace

    def judge(self, answer: ProbeAnswer, now: float, *, starting: bool, running: bool) -> Verdict:
        """What a failed probe means; counts it when it counts, and sets the next probe."""
        if not running:
            return Verdict.DOWN
        if starting and self.in_grace(now):
            self.probe_at = now + FAST_PROBE_S
            return Verdict.IN_GRACE
        must_restart = self.failures.record(False)
        self.log.warning(
            "probe.failed",
            failures=self.failures.failures,
            retries=self.settings.health_retries,
            error=answer.detail,
        )
        if must_restart:
            return Verdict.MUST_RESTART
        # Start to start: a failed probe already spent its timeout, and counting the
        # interval from its end would stretch hang detection by retries x timeout.
        self.probe_at = answer.started + self.settings.health_interval
        return Verdict.FAILED

    def served(self, now: float, *, newly: bool) -> None:
        """A probe succeeded; ``newly``: the registry was not healthy before (up since now)."""
        if newly:
            self.healthy_since = now
            self.healthy_since_wall = datetime.now(UTC)
        self.failures.reset()
        self.last_ok_at = now
        self.probe_at = now + self.settings.health_interval

    def close(self) -> None:
        """Close the probe's HTTP session."""
        self.probe_http.close()
