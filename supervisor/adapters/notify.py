"""systemd's notify protocol over sdnotify; every call is a no-op without NOTIFY_SOCKET.

Hazards of sdnotify: it swallows every error, encodes Latin-1 and connects once.
So STATUS is kept ASCII here and MONOTONIC_USEC is added by us.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping

import sdnotify


def watchdog_interval(environ: Mapping[str, str], pid: int) -> float | None:
    """Half of WATCHDOG_USEC in seconds, when the watchdog is meant for this process."""
    usec = environ.get("WATCHDOG_USEC", "")
    owner = environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if owner and owner != str(pid):
        return None
    return int(usec) / 1_000_000 / 2


class Notifier:
    """READY, STATUS, WATCHDOG, EXTEND_TIMEOUT, RELOADING and STOPPING for systemd."""

    def __init__(self) -> None:
        # sdnotify reads NOTIFY_SOCKET from the process environment itself.
        self.enabled = bool(os.environ.get("NOTIFY_SOCKET"))
        self.watchdog_every_s = watchdog_interval(os.environ, os.getpid()) if self.enabled else None
        self._notifier = sdnotify.SystemdNotifier() if self.enabled else None
        self._last_status = ""

    def close(self) -> None:
        """Close the notification socket, if one was opened."""
        sock = getattr(self._notifier, "socket", None)
        if sock is not None:
            sock.close()

    def _send(self, *fields: str) -> None:
        if self._notifier is not None:
            self._notifier.notify("\n".join(fields))

    def status(self, text: str) -> None:
        """STATUS=, as ASCII on one line, sent only when it changed."""
        text = text.encode("ascii", "replace").decode("ascii").replace("\n", " ")
        if text != self._last_status:
            self._last_status = text
            self._send(f"STATUS={text}")

    def ready(self) -> None:
        """READY=1: start-up is done (Type=notify)."""
        self._send("READY=1")

    def watchdog(self) -> None:
        """WATCHDOG=1: the loop is alive."""
        self._send("WATCHDOG=1")

    def extend_timeout(self, seconds: float) -> None:
        """EXTEND_TIMEOUT_USEC=: a start or stop step needs ``seconds`` more."""
        self._send(f"EXTEND_TIMEOUT_USEC={int(seconds * 1_000_000)}")

    def reloading(self) -> None:
        """RELOADING=1 with MONOTONIC_USEC (Type=notify-reload wants both)."""
        monotonic_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self._send("RELOADING=1", f"MONOTONIC_USEC={monotonic_usec}")

    def stopping(self) -> None:
        """STOPPING=1: shutdown has begun."""
        self._send("STOPPING=1")
