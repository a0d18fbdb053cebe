"""The installed `registry-supervisor`, run as a subprocess by the tests and the benchmarks.

Waits poll with a deadline and fail the test (``pytest.fail``) saying what they waited for.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

# The supervisor's exit codes (its contract, spelled out here rather than imported).
EX_OK = 0
EX_UNAVAILABLE = 69
EX_TEMPFAIL = 75
EX_CONFIG = 78

# Deadlines, in seconds. Generous: two shared cores, other suites on the same engine.
RECOVERY_TIMEOUT = 45.0
EXIT_TIMEOUT = 30.0

# The installed console script beside the interpreter running the tests (.venv/bin).
CONSOLE_SCRIPT = Path(sys.executable).parent / "registry-supervisor"


def supervisor_argv(*, module: bool = False) -> list[str]:
    """Command that runs the installed supervisor: its console script, or `python -m`."""
    if module or not CONSOLE_SCRIPT.exists():
        return [sys.executable, "-m", "supervisor"]
    return [str(CONSOLE_SCRIPT)]


def child_env(**overrides: str) -> dict[str, str]:
    """This process's environment without anything that would steer the supervisor.

    The process environment wins over the env file, so a stray MY_REG_* or REGISTRY_* here
    would silently override what a test wrote; NOTIFY_SOCKET would reach a real systemd.
    """
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("MY_REG_", "REGISTRY_", "NOTIFY_SOCKET", "WATCHDOG_"))
    }
    env.update(overrides)
    return env


class SupervisorProcess:
    """One supervisor subprocess (`run`, or a subcommand run in the background); its stdout
    and stderr (JSON lines) go to files in ``log_dir``, which must be its own."""

    def __init__(self, argv: list[str], *, env: dict[str, str], cwd: Path, log_dir: Path):
        log_dir.mkdir(parents=True, exist_ok=True)
        self.argv = argv
        self.stderr_path = log_dir / "stderr.log"
        self.stdout_path = log_dir / "stdout.log"
        self._stderr = self.stderr_path.open("wb")
        self._stdout = self.stdout_path.open("wb")
        # time.perf_counter() right before the exec: where a start-to-READY time begins.
        self.started_at = time.perf_counter()
        self.proc = subprocess.Popen(
            argv,
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=self._stdout,
            stderr=self._stderr,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def lines(self) -> list[str]:
        """Complete stderr lines so far (a line still being written is left out)."""
        data = self.stderr_path.read_bytes().decode(errors="replace")
        return data.split("\n")[:-1]

    def events(self) -> list[dict[str, Any]]:
        """Every JSON log line with an `event` key, in order."""
        found = []
        for line in self.lines():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict) and "event" in record:
                    found.append(record)
        return found

    def mark(self) -> int:
        """A position in the event list: pass it as `since` to wait only for later events."""
        return len(self.events())

    def tail(self, count: int = 25) -> str:
        return "\n".join(self.lines()[-count:])

    def find(self, event: str, *, since: int = 0, **fields: Any) -> list[dict[str, Any]]:
        """Events named `event` after `since` whose fields equal `fields`."""
        return [
            record
            for record in self.events()[since:]
            if record["event"] == event
            and all(record.get(key) == value for key, value in fields.items())
        ]

    def wait_for_event(
        self, event: str, timeout: float = RECOVERY_TIMEOUT, *, since: int = 0, **fields: Any
    ) -> dict[str, Any]:
        """The first event named `event` (after `since`) with these fields; fail on timeout
        or when the supervisor exits first."""
        what = f"event {event!r}" + (f" with {fields}" if fields else "")
        deadline = time.monotonic() + timeout
        while True:
            exited = self.proc.poll()
            matches = self.find(event, since=since, **fields)
            if matches:
                return matches[0]
            if exited is not None:
                pytest.fail(
                    f"supervisor exited {exited} while waiting for {what}; stderr:\n{self.tail()}"
                )
            if time.monotonic() > deadline:
                pytest.fail(
                    f"timed out after {timeout} s waiting for {what}; stderr:\n{self.tail()}"
                )
            time.sleep(0.05)

    def send(self, signum: signal.Signals) -> None:
        os.kill(self.proc.pid, signum)

    def wait_exit(self, timeout: float = EXIT_TIMEOUT) -> int:
        """The exit code; fail if the process is still running after `timeout` seconds."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"supervisor still running {timeout} s later; stderr:\n{self.tail()}")

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = EXIT_TIMEOUT) -> int:
        """SIGTERM (if still running) and reap, SIGKILL if it outlives ``timeout``; close the
        log files. The exit code."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self._reap()

    def kill(self) -> None:
        """SIGKILL (if still running), reap, close the log files."""
        if self.proc.poll() is None:
            self.proc.kill()
        self._reap()

    def _reap(self) -> int:
        code = self.proc.wait(timeout=EXIT_TIMEOUT)
        self._stderr.close()
        self._stdout.close()
        return code
