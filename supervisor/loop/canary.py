"""The push canary's cadence and state: when a round is due, and what it came to.

A round runs only when the reconciler asks (the registry serving, nothing else due), off
the loop's hot path through the watchdog feeder; it reports Passed, Failed (the registry
answered and the write did not work) or Inconclusive (no connection: the probe's
business). It never changes the phase: the reconciler degrades or recovers on its report.
What a round writes, and what it proves, is supervisor/canary.py's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from supervisor import canary, credentials_file
from supervisor.adapters.metrics import Metrics
from supervisor.adapters.registry_api import (
    CanaryUnreachable,
    PushFailed,
    PushTimedOut,
    RegistryApi,
    remove_cancelled_session,
)
from supervisor.credentials_file import Credentials
from supervisor.layout import RegistryVersion
from supervisor.loop.watchdog import WatchdogFeeder
from supervisor.settings import Settings

ApiFactory = Callable[[str, Path | None, Credentials | None], RegistryApi]
# The source name under which a failing canary degrades the registry.
SOURCE = "canary"
# Rounds in a row that time out before the canary calls it a failure.
TIMEOUTS_TO_FAIL = 2
# Where a 2.x registry keeps the canary's upload sessions, under MY_REG_DIR.


@dataclass(frozen=True)
class Passed:
    """The write worked (and read back, in commit mode)."""


@dataclass(frozen=True)
class Failed:
    """The registry answered and the write did not work; ``reason``: one short phrase."""

    reason: str


@dataclass(frozen=True)
class Inconclusive:
    """No connection, or the canary just turned itself off: nothing to conclude."""

    detail: str


Outcome = Passed | Failed | Inconclusive


class Canary:
    """Runs a round when due; counts failures; retries sooner while failing."""

    def __init__(
        self,
        settings: Settings,
        api_factory: ApiFactory,
        metrics: Metrics,
        feeder: WatchdogFeeder,
        clock: Callable[[], float],
        *,
        log: Any,
    ) -> None:
        self._api_factory = api_factory
        self._metrics = metrics
        self._feeder = feeder
        self._clock = clock
        self.log = log
        self.api: RegistryApi | None = None
        self.failures = 0
        self.passed = 0
        self.timeouts = 0  # rounds in a row that timed out
        self.next_at = 0.0
        self.configure(settings)

    def configure(self, settings: Settings) -> None:
        """New settings: on or off, a new API session; a round as soon as it may run."""
        self.close()
        self.settings = settings
        self.off_reason = canary.off_reason(settings)
        self._credentials: Credentials | None = None
        if self.off_reason is None and settings.canary_credentials is not None:
            try:
                self._credentials = credentials_file.read(settings.canary_credentials)
            except credentials_file.CredentialsError as err:  # changed since it was loaded
                self.off_reason = f"MY_REG_CANARY_CREDENTIALS: {err}"
        if self.off_reason is None:
            self.api = self._api_factory(
                settings.probe_url, settings.tls_certificate, self._credentials
            )
        self.failures = 0
        self.next_at = 0.0
        self._metrics.canary_ok.set(float("nan"))

    @property
    def on(self) -> bool:
        """Whether rounds run with the settings in force."""
        return self.api is not None

    def due(self, now: float) -> bool:
        """Whether a round is due (never while off)."""
        return self.on and now >= self.next_at

    def starting(self, now: float) -> None:
        """A registry was (re)started or adopted: a round once it serves (a timeout before
        was the hang the restart repaired)."""
        self.next_at = now
        self.timeouts = 0

    def run(self, now: float, version: RegistryVersion | None) -> Outcome:
        """One round, each request bounded by MY_REG_HEALTH_TIMEOUT; sets the next one."""
        api = self.api
        if api is None:
            return Inconclusive(self.off_reason or "off")
        mode = canary.mode_for(version)
        # Each request as long as a probe may take: a round that meets a hung registry
        # holds the loop no longer than one probe would, so it delays a repair by no more.
        timeout = self.settings.health_timeout

        def call() -> None:
            if mode is canary.Mode.COMMIT:
                api.commit(canary.REPOSITORY, canary.BLOB, canary.DIGEST, timeout)
            else:
                api.session(canary.REPOSITORY, canary.BLOB, timeout)

        outcome: Outcome
        try:
            # At most four requests, and a cancel after a failed one.
            self._feeder.blocking("canary", 5 * timeout, call)
        except (PushFailed, CanaryUnreachable) as err:
            outcome = self._not_passed(err, mode)
        else:
            outcome = self._passed(mode)
        finally:
            if mode is canary.Mode.SESSION:
                self._remove_cancelled_session(api.upload_id)
        result = type(outcome).__name__.lower()
        self._metrics.canary_rounds.labels(result=result).inc()
        self.log.debug("canary.round", result=result, mode=mode.value)
        return outcome

    def _not_passed(self, err: PushFailed | CanaryUnreachable, mode: canary.Mode) -> Outcome:
        retry_s = min(canary.RETRY_S, self.settings.canary_interval)
        if isinstance(err, CanaryUnreachable):
            self.next_at = self._clock() + retry_s
            return Inconclusive(str(err))
        if isinstance(err, PushTimedOut):
            # A hung registry times out writes too, and its probes fail within seconds:
            # only a second round in a row that times out, with the registry serving in
            # between (a round runs only then), says that writes hang.
            self.timeouts += 1
            if self.timeouts < TIMEOUTS_TO_FAIL:
                self.next_at = self._clock() + retry_s
                return Inconclusive(err.reason)
        else:
            self.timeouts = 0
        if err.status in (401, 403) and self._credentials is None:
            return self._needs_credentials(err)
        return self._failed(err.reason, mode, retry_s)

    def _passed(self, mode: canary.Mode) -> Passed:
        self.timeouts = 0
        if self.failures or not self.passed:
            self.log.info("canary.passed", mode=mode.value, after_failures=self.failures)
        self.failures = 0
        self.passed += 1
        self._metrics.canary_ok.set(1)
        self.next_at = self._clock() + self.settings.canary_interval
        return Passed()

    def _failed(self, reason: str, mode: canary.Mode, retry_s: float) -> Failed:
        self.failures += 1
        self._metrics.canary_ok.set(0)
        self._metrics.canary_failures.inc()
        self.log.warning(
            "canary.failed",
            reason=reason,
            mode=mode.value,
            failures=self.failures,
            retry_s=retry_s,
        )
        self.next_at = self._clock() + retry_s
        return Failed(reason)

    def _needs_credentials(self, err: PushFailed) -> Inconclusive:
        """Auth the settings do not show (MY_REG_CONF): off until the settings change."""
        self.off_reason = (
            f"the registry asks for credentials ({err.reason}) and MY_REG_CANARY_CREDENTIALS "
            "is not set"
        )
        self.log.warning("canary.off", reason=self.off_reason)
        self.close()
        return Inconclusive(self.off_reason)

    def _remove_cancelled_session(self, upload_id: str | None) -> None:
        """2.x leaves a cancelled upload's directory (its hash state, no ``startedat``),
        which its upload purger never removes: remove that one directory, ours, from
        MY_REG_DIR. One with ``startedat`` was not cancelled: the purger's (a week)."""
        error = remove_cancelled_session(self.settings.dir, upload_id)
        if error is not None:
            self.log.debug("canary.session_left", error=error)

    def close(self) -> None:
        """Close the API session (the canary is off until configured again)."""
        if self.api is not None:
            self.api.close()
            self.api = None
