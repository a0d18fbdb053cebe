"""The /v2/ probe against real loopback servers, and the failure count."""

from __future__ import annotations

import http.server
import socket
from collections.abc import Iterator

import pytest
from support.http import V2Handler, serving

from supervisor.adapters.probe import Probe, ProbeFailed
from supervisor.health import FailureCount, is_healthy


class _Handler(V2Handler):
    """/v2/ answering the status a test sets."""


@pytest.fixture
def http_server() -> Iterator[http.server.HTTPServer]:
    with serving(_Handler) as server:
        yield server


@pytest.mark.parametrize("status", [200, 401, 503])
def test_probe_returns_the_status_code(http_server: http.server.HTTPServer, status: int) -> None:
    """The probe reports what /v2/ answered; the verdict is the caller's."""
    _Handler.status = status
    probe = Probe(f"http://127.0.0.1:{http_server.server_port}/v2/")
    try:
        assert probe(1.0) == status
    finally:
        probe.close()
        _Handler.status = 200


def test_200_and_401_are_healthy_everything_else_is_not() -> None:
    """401 is the registry's answer with auth on: it is serving."""
    assert [is_healthy(s) for s in (200, 401, 404, 500, 503)] == [True, True, False, False, False]


def test_refused_connection_raises() -> None:
    """Nothing listening: ProbeFailed."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(ProbeFailed):
        Probe(f"http://127.0.0.1:{port}/v2/")(0.5)


def test_a_server_that_accepts_but_never_answers_times_out() -> None:
    """Like a SIGSTOPped registry behind docker-proxy: the timeout detects it."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with pytest.raises(ProbeFailed, match="Timeout"):
            Probe(f"http://127.0.0.1:{port}/v2/")(0.2)


def test_restart_after_this_many_consecutive_failures() -> None:
    """retries failures in a row trigger; a success in between resets the count."""
    count = FailureCount(retries=3)
    assert [count.record(h) for h in (False, False, True, False, False, False)] == [
        False,
        False,
        False,
        False,
        False,
        True,
    ]
