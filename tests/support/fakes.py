"""A fake monotonic clock and a notifier that records what it would tell systemd."""

from __future__ import annotations

from supervisor.adapters.notify import Notifier


class FakeClock:
    """A monotonic clock that moves only when told: ``clock()`` reads it, ``advance`` moves it."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError(f"a monotonic clock does not go back ({seconds} s)")
        self.now += seconds


class RecordingNotifier(Notifier):
    """The real Notifier (STATUS kept ASCII and sent once per change, RELOADING with its
    MONOTONIC_USEC) with each datagram recorded in ``sent`` instead of sent to systemd.

    Only the one method that writes to the socket is replaced: a real datagram socket
    would do too, but its queue holds 10 datagrams (net.unix.max_dgram_qlen) and a full
    queue blocks the sender, which would hang a test instead of failing it.
    """

    def __init__(self, watchdog_every_s: float | None = None) -> None:
        super().__init__()  # unit tests run without NOTIFY_SOCKET: nothing is opened
        self.enabled = True
        self.watchdog_every_s = watchdog_every_s
        self.sent: list[str] = []

    def _send(self, *fields: str) -> None:
        self.sent.append("\n".join(fields))

    def count(self, message: str) -> int:
        """How many datagrams were exactly ``message`` (``READY=1``, ``WATCHDOG=1``)."""
        return self.sent.count(message)

    def statuses(self) -> list[str]:
        """The STATUS texts sent, in order."""
        return [m.removeprefix("STATUS=") for m in self.sent if m.startswith("STATUS=")]
