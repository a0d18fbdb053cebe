"""The loop's inbox: signals and background threads only put messages on one queue.

Signal handlers record the signal (SimpleQueue.put is reentrant); the engine's event
watcher posts container events and its own end; the gc-estimate thread posts its result.
The loop alone acts on them, between ticks.
"""

from __future__ import annotations

import queue
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from supervisor.engine.events import ContainerEvent, EngineLost
from supervisor.loop.housekeeping import GcEstimate

HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

Message = int | ContainerEvent | EngineLost | GcEstimate
Inbox = queue.SimpleQueue[Message]


@contextmanager
def captured_signals(messages: Inbox) -> Iterator[None]:
    """While inside: SIGTERM, SIGINT and SIGHUP become messages on ``messages``."""

    def record(signum: int, _frame: FrameType | None) -> None:
        messages.put(signum)

    previous = {sig: signal.signal(sig, record) for sig in HANDLED_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
