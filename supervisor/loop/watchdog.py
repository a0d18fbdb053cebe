"""Blocking calls that may outlast systemd's watchdog period: where they run, and how.

A call whose bound ends before the next WATCHDOG=1 is due runs inline (the fast path: a
probe every 50 ms after a restart). One that fits in a fresh period runs inline after an
early ping. Any longer call (a probe with a long MY_REG_HEALTH_TIMEOUT, a `docker stop`
waiting out MY_REG_STOP_TIMEOUT) runs on a helper thread while the calling thread only
pings on schedule; the caller gets its result or its exception once it returns, so the
caller is still the one thread that decides. ``placement`` is pure; ``call_feeding`` knows
nothing of the loop or of systemd: it is given what to call and how to ping.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, wait
from enum import StrEnum
from typing import Any, TypeVar

T = TypeVar("T")

# What a call returns to the loop with, after its own bound: the work around it (inspect,
# logging, the heartbeat) before the loop can ping again.
SLACK_S = 0.25


class Placement(StrEnum):
    """Where a blocking call runs, relative to the next WATCHDOG=1."""

    INLINE = "inline"  # ends before the next ping is due
    PING_THEN_INLINE = "ping-then-inline"  # fits in a fresh period
    OFF_LOOP = "off-loop"  # longer than a period: the caller pings while it runs


def placement(bound_s: float, now: float, ping_due: float, every_s: float | None) -> Placement:
    """Where a call that may block ``bound_s`` seconds runs (pure).

    ``ping_due`` is when the next WATCHDOG=1 is due; ``every_s`` the period (None: no
    watchdog, so nothing to keep fed).
    """
    if every_s is None or now + bound_s + SLACK_S <= ping_due:
        return Placement.INLINE
    if bound_s + SLACK_S <= every_s:
        return Placement.PING_THEN_INLINE
    return Placement.OFF_LOOP


def call_feeding(
    call: Callable[[], T],
    *,
    ping: Callable[[], None],
    ping_due: Callable[[], float],
    clock: Callable[[], float],
    name: str = "blocking-call",
) -> T:
    """``call()`` on a helper thread; meanwhile ``ping()`` whenever ``clock()`` reaches
    ``ping_due()`` (which a ping moves on). Returns what the call returned, or raises what
    it raised.

    The helper is a daemon thread: a call that is still running when the process exits
    (it is bounded by its own timeout) does not hold the exit up.
    """
    done: Future[T] = Future()

    def run() -> None:
        try:
            result = call()
        except BaseException as err:  # noqa: BLE001 (handed to the caller, who re-raises it)
            done.set_exception(err)
        else:
            done.set_result(result)

    threading.Thread(target=run, name=name, daemon=True).start()
    # Not done.result(timeout): a call that raises TimeoutError (a socket's) would look
    # like a wait that timed out, for ever.
    while not wait([done], timeout=max(0.0, ping_due() - clock())).done:
        ping()
    return done.result()


class WatchdogFeeder:
    """Sends WATCHDOG=1 on schedule, and runs blocking calls where the schedule allows.

    The loop's one way to feed systemd's watchdog: the heartbeat pings when due, an engine
    call that could outlast the period pings first (``before_engine_call``), and a longer
    call runs off the loop while this keeps pinging (``blocking``).
    """

    def __init__(
        self,
        every_s: float | None,
        ping: Callable[[], None],
        clock: Callable[[], float],
        engine_call_bound_s: float,
    ) -> None:
        self.every_s = every_s
        self._ping = ping
        self._clock = clock
        self._engine_call_bound_s = engine_call_bound_s
        self.due_at = 0.0

    @property
    def enabled(self) -> bool:
        """Whether systemd asked for a watchdog (WatchdogSec= on the unit)."""
        return self.every_s is not None

    def warn_if_too_short(self, log: Any) -> None:
        """Warn when one engine call (a hung engine: its whole API timeout) may outlast a
        period: probes and stops are fed off the loop whatever their length, one engine
        call is not."""
        every = self.every_s
        if every is not None and every < self._engine_call_bound_s + SLACK_S:
            log.warning(
                "watchdog.shorter_than_engine_timeout",
                watchdog_sec=round(2 * every, 3),
                engine_timeout_s=self._engine_call_bound_s,
                hint=f"WatchdogSec={2 * (self._engine_call_bound_s + 1):g}s or more "
                "(the unit ships 30s)",
            )

    def deadline(self) -> float:
        """When the next WATCHDOG=1 is due (infinity without a watchdog)."""
        return self.due_at if self.every_s is not None else float("inf")

    def kick(self) -> None:
        """WATCHDOG=1 now; the next one is due a period from now."""
        if self.every_s is not None:
            self._ping()
            self.due_at = self._clock() + self.every_s

    def kick_if_due(self, now: float) -> None:
        """WATCHDOG=1 if it is due."""
        if self.every_s is not None and now >= self.due_at:
            self.kick()

    def before_engine_call(self) -> None:
        """A fresh period if one engine call (a hung engine: its whole API timeout) could
        run past the next ping: a tick of several calls never adds up to more."""
        if (
            self.every_s is not None
            and self._clock() + self._engine_call_bound_s + SLACK_S > self.due_at
        ):
            self.kick()

    def blocking(self, name: str, bound_s: float, call: Callable[[], T]) -> T:
        """``call()``, which may block up to ``bound_s`` seconds, with the watchdog fed.

        Longer than what is left of the period, it runs on a helper thread while this
        thread sends WATCHDOG=1 on schedule and nothing else; its result (or error) comes
        back here, so the loop still decides, after the call, alone.
        """
        where = placement(bound_s, self._clock(), self.due_at, self.every_s)
        if where is Placement.OFF_LOOP:
            return call_feeding(
                call, ping=self.kick, ping_due=lambda: self.due_at, clock=self._clock, name=name
            )
        if where is Placement.PING_THEN_INLINE:
            self.kick()
        return call()
