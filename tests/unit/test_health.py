"""The /v2/ probe against real loopback servers, and the failure count."""

from __future__ import annotations

import http.server
import socket
from collections.abc import Iterator

import pytest
from support.http import V2Handler, serving

from supervisor.adapters.probe import Probe, ProbeFailed
from supervisor.health import (
    DependencyBackoff,
    FailureClass,
    FailureCount,
    http_failure,
    is_healthy,
    registry_error,
)

# What distribution's health.Handler (2.8.2 and 3.x) answers on every path while one of its
# checks fails, byte for byte as the test image's registry sent it.
REGISTRY_503 = (
    b'{"errors":[{"code":"UNAVAILABLE","message":"service unavailable",'
    b'"detail":"health check failed: please see /debug/health"}]}\n'
)


class _Handler(V2Handler):
    """/v2/ answering the status (and body) a test sets."""


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
    with pytest.raises(ProbeFailed) as failed:
        Probe(f"http://127.0.0.1:{port}/v2/")(0.5)
    assert ("connection refused", FailureClass.REFUSED) == (str(failed.value), failed.value.failure)


def test_a_server_that_accepts_but_never_answers_times_out() -> None:
    """Like a SIGSTOPped registry behind docker-proxy: the timeout detects it."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with pytest.raises(ProbeFailed) as failed:
            Probe(f"http://127.0.0.1:{port}/v2/")(0.2)
    assert ("timed out after 0.2s", FailureClass.TIMEOUT) == (
        str(failed.value),
        failed.value.failure,
    )


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


def test_the_registry_503_is_read_with_its_own_error(
    http_server: http.server.HTTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 503 answer carries the registry's own error, CODE: detail, from its JSON body."""
    monkeypatch.setattr(_Handler, "status", 503)
    monkeypatch.setattr(_Handler, "body", REGISTRY_503)
    probe = Probe(f"http://127.0.0.1:{http_server.server_port}/v2/")
    try:
        response = probe.ask(1.0)
    finally:
        probe.close()
    assert (503, "UNAVAILABLE: health check failed: please see /debug/health") == (
        response.status,
        response.error,
    )


def test_a_registry_health_check_503_is_a_dependency_failure() -> None:
    """503 with the health check's UNAVAILABLE error: the dependency class, its phrase."""
    error = registry_error(REGISTRY_503)
    assert (
        FailureClass.DEPENDENCY,
        "HTTP 503: UNAVAILABLE: health check failed: please see /debug/health",
    ) == http_failure(503, error)


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (503, b"", (FailureClass.HTTP, "HTTP 503")),  # a proxy's 503, not the registry's
        (500, b"oops", (FailureClass.HTTP, "HTTP 500")),
        (
            503,
            b'{"errors":[{"code":"UNAVAILABLE","message":"service unavailable"}]}',
            (FailureClass.HTTP, "HTTP 503: UNAVAILABLE: service unavailable"),
        ),
        (404, b'{"errors":[{"code":"NOT_FOUND"}]}', (FailureClass.HTTP, "HTTP 404: NOT_FOUND")),
    ],
)
def test_other_answers_are_plain_http_failures(
    status: int, body: bytes, expected: tuple[FailureClass, str]
) -> None:
    """Any other failing answer is counted like a hang (class http), named by status."""
    assert expected == http_failure(status, registry_error(body))


def test_dependency_restarts_are_rare_and_double() -> None:
    """First after first_s of failing, then 2x, 4x... apart (capped), never in between."""
    backoff = DependencyBackoff(first_s=300, max_s=1000)
    due = [t for t in range(0, 3000, 5) if backoff.failing(float(t))]
    assert [300, 905, 1910, 2915] == due  # +300, +600, then +1000 (capped) from the next probe


def test_dependency_backoff_is_forgotten_only_after_first_s_of_health() -> None:
    """A restarted registry answers 200 until its own check fails again: that short health
    keeps the doubling; first_s of health in a row forgets it."""
    backoff = DependencyBackoff(first_s=300, max_s=3600)
    backoff.failing(0.0)
    assert backoff.failing(300.0)
    backoff.healthy(310.0)
    backoff.healthy(340.0)
    backoff.failing(350.0)
    assert (1, 950.0) == (backoff.restarts, backoff.next_at)
    backoff.healthy(400.0)
    backoff.healthy(700.0)
    assert 0 == backoff.restarts
