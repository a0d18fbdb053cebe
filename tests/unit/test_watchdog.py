"""Blocking calls and the watchdog: where a call runs (pure), and pings while one runs."""

from __future__ import annotations

import threading
import time

import pytest

from supervisor.loop.watchdog import Placement, call_feeding, placement

# Long enough for any thread to be scheduled; a test that waits this long has failed.
HANG_S = 10.0


def test_a_call_that_ends_before_the_next_ping_runs_inline() -> None:
    """A 1 s probe with 5 s left of the period needs no help."""
    assert Placement.INLINE == placement(1.0, now=100.0, ping_due=105.0, every_s=15.0)


def test_a_call_that_fits_in_a_fresh_period_runs_inline_after_an_early_ping() -> None:
    """A 1 s probe with 0.5 s left of the period goes after a WATCHDOG=1 sent early."""
    assert Placement.PING_THEN_INLINE == placement(1.0, now=100.0, ping_due=100.5, every_s=15.0)


def test_a_call_longer_than_a_period_runs_off_the_loop() -> None:
    """An 8 s probe timeout against a 3 s period cannot run on the loop thread."""
    assert Placement.OFF_LOOP == placement(16.0, now=100.0, ping_due=103.0, every_s=3.0)


def test_without_a_watchdog_every_call_runs_inline() -> None:
    """No WATCHDOG_USEC: nothing to keep fed, so even an hour-long stop runs inline."""
    assert Placement.INLINE == placement(3610.0, now=100.0, ping_due=0.0, every_s=None)


class Pinger:
    """A watchdog whose period is 10 ms of the monotonic clock, counting its pings."""

    def __init__(self) -> None:
        self.count = 0
        self.due = time.monotonic() + 0.01
        self.third = threading.Event()

    def ping(self) -> None:
        self.count += 1
        self.due = time.monotonic() + 0.01
        if self.count == 3:
            self.third.set()


def test_the_caller_pings_while_the_call_blocks() -> None:
    """A call that returns only after the third ping gets its pings, then its result."""
    pinger = Pinger()

    def call() -> str:
        assert pinger.third.wait(HANG_S), "no third ping while the call blocked"
        return "done"

    result = call_feeding(call, ping=pinger.ping, ping_due=lambda: pinger.due, clock=time.monotonic)
    assert ("done", True) == (result, pinger.count >= 3)


def test_a_call_that_returns_before_the_ping_is_due_is_not_pinged_for() -> None:
    """Nothing is sent when the call is done within the period."""
    pinger = Pinger()
    pinger.due = time.monotonic() + HANG_S
    call_feeding(lambda: None, ping=pinger.ping, ping_due=lambda: pinger.due, clock=time.monotonic)
    assert 0 == pinger.count


def test_the_calls_error_reaches_the_caller() -> None:
    """An error raised on the helper thread is raised to the caller, even a TimeoutError
    (which must not pass for a wait on the call that timed out)."""
    pinger = Pinger()

    def call() -> None:
        raise TimeoutError("read timed out")

    with pytest.raises(TimeoutError, match="read timed out"):
        call_feeding(call, ping=pinger.ping, ping_due=lambda: pinger.due, clock=time.monotonic)


def test_the_call_runs_on_another_thread() -> None:
    """The caller's thread stays free to ping: the call runs elsewhere."""
    pinger = Pinger()
    ran_on = call_feeding(
        threading.get_ident, ping=pinger.ping, ping_due=lambda: pinger.due, clock=time.monotonic
    )
    assert threading.get_ident() != ran_on
