"""The tick-level rig: the real Supervisor driven tick by tick against a fake engine,
a fake clock and a recording notifier (tests/unit/test_ticks.py, test_fleet_ticks.py)."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import pytest

from supervisor import log
from supervisor.loop.supervisor import Supervisor
from supervisor.settings import load_settings
from supervisor.statedir.http_secret import with_http_secret
from support.fake_engine import FakeEngine
from support.fakes import FakeClock, RecordingNotifier

REGISTRY, HOLDER = "my_registry", "my_registry-net"
# Long enough that no engine call or probe is moved off the loop onto a helper thread.
WATCHDOG_EVERY_S = 60.0
HEALTH_INTERVAL_S = 5.0  # the default MY_REG_HEALTH_INTERVAL


class Rig:
    """One Supervisor wired to a FakeEngine, a FakeClock and a RecordingNotifier."""

    def __init__(
        self,
        tmp_path: Path,
        capsys: pytest.CaptureFixture[str],
        clock: FakeClock | None = None,
        **supervisor_kwargs: Any,
    ) -> None:
        self._capsys = capsys
        self._supervisor_kwargs = supervisor_kwargs
        self.env_file = tmp_path / "supervisor.env"
        self.settings = {
            "MY_REG_DIR": str(tmp_path / "data"),
            "MY_REG_STATE_DIR": str(tmp_path / "state"),
            "MY_REG_FORWARD_LOGS": "false",  # no log follower thread
            "MY_REG_MIN_FREE": "0",  # no disk guard (nor its gc estimate thread)
            "MY_REG_LOG_FORMAT": "json",  # read back from stderr, across reloads
            "MY_REG_LOG_LEVEL": "debug",
        }
        self.write_env()
        self.clock = clock or FakeClock()
        self.engine = FakeEngine(self.clock)
        self.notifier = RecordingNotifier(watchdog_every_s=WATCHDOG_EVERY_S)
        self.phases: list[str] = []
        self.log: list[dict[str, Any]] = []
        self._marks = (0, 0, 0, 0)

    @functools.cached_property
    def sup(self) -> Supervisor:
        """Built on first use, in the test's own phase: structlog prints to the sys.stderr
        of the moment it is configured, and pytest swaps (and closes) the captured one
        between a fixture's setup and the test."""
        settings = with_http_secret(load_settings(self.env_file))
        log.configure(settings.log_format, settings.log_level)
        return Supervisor(
            settings,
            self.env_file,
            self.notifier,
            clock=self.clock,
            engine_factory=lambda: self.engine,
            probe_factory=self.engine.probe_factory(self.clock),
            registry_api_factory=self.engine.registry_api_factory(self.clock),
            **self._supervisor_kwargs,
        )

    def write_env(self, **changes: str) -> None:
        self.settings.update(changes)
        self.env_file.write_text("".join(f"{k}={v}\n" for k, v in self.settings.items()))

    # -- driving ------------------------------------------------------------------------

    def _seen(self) -> None:
        phase = self.sup.phase.value
        if not self.phases or self.phases[-1] != phase:
            self.phases.append(phase)

    def step(self, seconds: float = 0.0) -> str:
        """Move the clock, then one turn of the main loop: messages, then a tick."""
        self.clock.advance(seconds)
        self.engine.settle()
        self.sup.handle_pending()
        self._seen()
        self.sup.tick()
        self._seen()
        return self.sup.phase.value

    def until(self, phase: str, *, every: float = 0.0, limit: int = 50) -> None:
        """Step (``every`` seconds apart) until the loop's phase is ``phase`` (its value)."""
        for _ in range(limit):
            if self.step(every) == phase:
                return
        raise AssertionError(f"not {phase} after {limit} ticks: {self.phases}")

    def start_healthy(self) -> None:
        self.sup.startup()
        self._seen()
        self.until("healthy")
        self.step()  # the push canary's first round, once the registry serves
        self.mark()

    def put(self, message: Any) -> None:
        self.sup.messages.put(message)

    # -- what happened since the last mark -----------------------------------------------

    def mark(self) -> None:
        self.events()
        self._marks = (
            len(self.phases) - 1,
            len(self.log),
            len(self.engine.calls),
            len(self.engine.probe_times),
        )

    def events(self) -> list[dict[str, Any]]:
        """Every log event so far (the JSON lines on stderr)."""
        lines = self._capsys.readouterr().err.splitlines()
        self.log += [json.loads(line) for line in lines if line.startswith("{")]
        return self.log

    def new_phases(self) -> list[str]:
        return self.phases[self._marks[0] :]

    def new_events(self, name: str | None = None) -> list[dict[str, Any]]:
        new = self.events()[self._marks[1] :]
        return [e for e in new if name is None or e["event"] == name]

    def new_event_names(self) -> list[str]:
        return [e["event"] for e in self.new_events() if e["level"] != "debug"]

    def new_mutations(self) -> list[tuple[str, str]]:
        return self.engine.mutations(since=self._marks[2])

    def new_calls(self, method: str) -> list[float]:
        return [c.at for c in self.engine.calls[self._marks[2] :] if c.method == method]

    def new_probe_times(self) -> list[float]:
        return self.engine.probe_times[self._marks[3] :]


def in_order(expected: list[str], actual: list[str]) -> bool:
    """Whether ``expected`` occurs in ``actual`` in this order (other items between)."""
    remaining = iter(actual)
    return all(any(item == seen for seen in remaining) for item in expected)
