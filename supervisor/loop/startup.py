"""Readiness for systemd: READY=1 once, when the registry first answers; until then, more
time asked for while we pull or wait (EXTEND_TIMEOUT_USEC); RELOADING=1 around a reload."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from supervisor.adapters.notify import Notifier

# How much longer systemd should wait for READY while we pull or wait for the engine.
START_EXTENSION_S = 90.0


class Readiness:
    """What systemd has been told about our start."""

    def __init__(self, notifier: Notifier, status_line: Callable[[float], str]) -> None:
        self._notifier = notifier
        self._status_line = status_line
        self.sent = False

    def extend(self, wait_s: float) -> None:
        """Before READY: ask systemd to wait ``wait_s`` more than the usual extension."""
        if not self.sent:
            self._notifier.extend_timeout(wait_s + START_EXTENSION_S)

    def ready(self, now: float) -> None:
        """READY=1, the first time the registry answers (with the status line first)."""
        if not self.sent:
            self.sent = True
            self._notifier.status(self._status_line(now))
            self._notifier.ready()

    @contextmanager
    def reloading(self) -> Iterator[None]:
        """RELOADING=1 ... READY=1 around a reload, once started; before the first READY,
        systemd is still waiting for the registry and must not be told we are ready."""
        started = self.sent
        if started:
            self._notifier.reloading()
        try:
            yield
        finally:
            if started:
                self._notifier.ready()
