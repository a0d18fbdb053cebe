"""A real datagram socket standing in for systemd's NOTIFY_SOCKET."""

from __future__ import annotations

import contextlib
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path


def statuses(sock: socket.socket) -> list[str]:
    """The STATUS= values the supervisor sent to our NOTIFY_SOCKET so far."""
    found = []
    with contextlib.suppress(BlockingIOError):
        while True:
            for line in sock.recv(4096).decode().split("\n"):
                if line.startswith("STATUS="):
                    found.append(line.removeprefix("STATUS="))
    return found


class NotifySocket:
    """An AF_UNIX datagram socket, bound as systemd binds it, drained by a thread that
    records each datagram with its arrival time on ``clock``.

    Draining matters: a full datagram queue would block the sender's sends. Without
    ``path``, the socket lives in a new short temporary directory (AF_UNIX paths are
    limited to 108 bytes; pytest's tmp_path can be longer).
    """

    def __init__(
        self, path: Path | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._dir: Path | None = None
        if path is None:
            self._dir = Path(tempfile.mkdtemp(prefix="rs-notify-"))
            path = self._dir / "notify"
        else:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        self.path = path
        self._clock = clock
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(path))
        self._sock.settimeout(0.1)
        self._messages: list[tuple[float, str]] = []
        self._arrived = threading.Condition()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._receive, name="notify", daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._closed.is_set():
            try:
                data = self._sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            at = self._clock()
            # sdnotify encodes to Latin-1: decoding never fails.
            with self._arrived:
                self._messages.append((at, data.decode("latin-1")))
                self._arrived.notify_all()

    @property
    def messages(self) -> list[tuple[float, str]]:
        """Every datagram so far, with its arrival time, in order."""
        with self._arrived:
            return list(self._messages)

    def arrivals(
        self, line: str, start: float = float("-inf"), end: float = float("inf")
    ) -> list[float]:
        """Arrival times, from ``start`` to ``end``, of the datagrams holding ``line``
        (``WATCHDOG=1``, ``READY=1``)."""
        return _holding(self.messages, line, start, end)

    def wait_for(self, line: str, timeout: float) -> float:
        """The arrival time of the first datagram holding ``line``; TimeoutError after
        ``timeout`` seconds without one."""
        with self._arrived:
            if not self._arrived.wait_for(lambda: _holding(self._messages, line), timeout):
                raise TimeoutError(f"no {line} on {self.path} within {timeout} s")
            return _holding(self._messages, line)[0]

    def close(self) -> None:
        self._closed.set()
        self._thread.join(timeout=5)
        self._sock.close()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()


def _holding(
    messages: list[tuple[float, str]],
    line: str,
    start: float = float("-inf"),
    end: float = float("inf"),
) -> list[float]:
    return [at for at, text in messages if line in text.split("\n") and start <= at <= end]
