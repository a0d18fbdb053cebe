"""sd_notify messages, read back from a real datagram socket."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from supervisor.adapters.notify import Notifier, watchdog_interval


@pytest.fixture
def notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    sock.settimeout(1.0)
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
    yield sock
    sock.close()


@pytest.fixture
def notifier(notify_socket: socket.socket) -> Iterator[Notifier]:
    notifier = Notifier()
    yield notifier
    notifier.close()


def test_ready_status_and_stopping_reach_the_socket(
    notify_socket: socket.socket, notifier: Notifier
) -> None:
    """Each call sends one datagram in the protocol's KEY=value form."""
    notifier.status("healthy: up 3s, 0 restarts")
    notifier.ready()
    notifier.stopping()
    received = [notify_socket.recv(4096).decode() for _ in range(3)]
    assert received == ["STATUS=healthy: up 3s, 0 restarts", "READY=1", "STOPPING=1"]


def test_status_is_ascii_and_sent_only_when_it_changes(
    notify_socket: socket.socket, notifier: Notifier
) -> None:
    """sdnotify encodes Latin-1; we send ASCII, once per change."""
    notifier.status("caf\u00e9 \u2713")
    notifier.status("caf\u00e9 \u2713")
    notifier.status("next")
    assert notify_socket.recv(4096) == b"STATUS=caf? ?"
    assert notify_socket.recv(4096) == b"STATUS=next"


def test_reloading_carries_monotonic_usec(notify_socket: socket.socket, notifier: Notifier) -> None:
    """RELOADING=1 comes with MONOTONIC_USEC, as systemd requires."""
    notifier.reloading()
    fields = notify_socket.recv(4096).decode().split("\n")
    assert fields[0] == "RELOADING=1"
    key, _, value = fields[1].partition("=")
    assert key == "MONOTONIC_USEC" and int(value) > 0


def test_extend_timeout_is_in_microseconds(
    notify_socket: socket.socket, notifier: Notifier
) -> None:
    """EXTEND_TIMEOUT_USEC tells systemd to wait longer while pulling."""
    notifier.extend_timeout(90)
    assert notify_socket.recv(4096) == b"EXTEND_TIMEOUT_USEC=90000000"


def test_everything_is_a_no_op_without_notify_socket() -> None:
    """Outside systemd, nothing is sent and nothing fails."""
    notifier = Notifier()
    notifier.ready()
    notifier.watchdog()
    assert not notifier.enabled and notifier.watchdog_every_s is None


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"WATCHDOG_USEC": "20000000"}, 10.0),
        ({"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": str(os.getpid())}, 10.0),
        ({"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": "1"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({}, None),
    ],
)
def test_watchdog_pings_at_half_the_interval_for_this_process(
    environ: dict[str, str], expected: float | None
) -> None:
    """WATCHDOG_USEC/2, only when WATCHDOG_PID is unset or ours."""
    assert watchdog_interval(environ, os.getpid()) == expected
