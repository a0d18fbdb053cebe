"""Readiness for a load balancer: which phases are ready (pure), and `/ready` served beside
the metrics on one real loopback port."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests
from support.net import free_port

from supervisor.adapters.metrics import Metrics
from supervisor.phase import Phase
from supervisor.ready import NOT_YET, Ready, verdict

NOT_READY = [p for p in Phase if p not in (Phase.HEALTHY, Phase.DEGRADED)]


def test_healthy_is_ready() -> None:
    """A healthy registry is ready: 200 `ready`."""
    assert Ready(True, "ready") == verdict(Phase.HEALTHY)
    assert 200 == verdict(Phase.HEALTHY).status


@pytest.mark.parametrize("phase", NOT_READY, ids=str)
def test_every_other_phase_is_not_ready_and_says_which(phase: Phase) -> None:
    """Starting, unhealthy, restarting, maintenance, stopping...: 503 with the phase."""
    assert Ready(False, phase.value) == verdict(phase)
    assert 503 == verdict(phase).status


def test_degraded_by_failing_pushes_only_is_ready() -> None:
    """The canary failing leaves pulls working: the member stays in the pool."""
    assert Ready(True, "ready") == verdict(Phase.DEGRADED, ["canary"])


def test_degraded_by_its_own_storage_check_is_not_ready() -> None:
    """The registry's health check failing (it answers 503 everywhere) is not ready."""
    assert Ready(False, "degraded: dependency") == verdict(Phase.DEGRADED, ["canary", "dependency"])


def test_nothing_is_ready_before_the_first_heartbeat() -> None:
    """A fresh endpoint says 503 `starting` until the loop publishes a verdict."""
    assert Ready(False, "starting") == Metrics(enabled=True).ready == NOT_YET


@pytest.fixture
def served() -> Iterator[tuple[Metrics, str]]:
    metrics = Metrics(enabled=True)
    port = free_port()
    metrics.serve("127.0.0.1", port)
    try:
        yield metrics, f"http://127.0.0.1:{port}"
    finally:
        metrics.close()


def test_ready_answers_what_the_loop_published_last(served: tuple[Metrics, str]) -> None:
    """GET /ready: 503 with the phase, then 200 `ready` once the loop publishes that."""
    metrics, url = served
    metrics.publish_ready(verdict(Phase.RESTARTING))
    before = requests.get(f"{url}/ready", timeout=5)
    metrics.publish_ready(verdict(Phase.HEALTHY))
    after = requests.get(f"{url}/ready", timeout=5)
    assert [(503, "restarting\n"), (200, "ready\n")] == [
        (before.status_code, before.text),
        (after.status_code, after.text),
    ]
    assert "no-store" == after.headers["Cache-Control"]


def test_head_ready_has_the_status_and_no_body(served: tuple[Metrics, str]) -> None:
    """HEAD /ready: the same status code, an empty body."""
    metrics, url = served
    metrics.publish_ready(verdict(Phase.MAINTENANCE))
    answer = requests.head(f"{url}/ready", timeout=5)
    assert (503, b"") == (answer.status_code, answer.content)


def test_ready_refuses_other_methods(served: tuple[Metrics, str]) -> None:
    """POST /ready: 405, allowing GET and HEAD."""
    _metrics, url = served
    answer = requests.post(f"{url}/ready", timeout=5)
    assert (405, "GET, HEAD") == (answer.status_code, answer.headers["Allow"])


def test_metrics_are_still_served_on_the_same_port(served: tuple[Metrics, str]) -> None:
    """/metrics on the same server is prometheus_client's exposition, as before."""
    metrics, url = served
    metrics.up.set(1)
    text = requests.get(f"{url}/metrics", timeout=5).text
    assert "registry_up 1.0" in text.splitlines()
