"""The Prometheus endpoint, scraped while faults are injected into a real registry."""

from __future__ import annotations

import os
import signal
import time

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from support.net import free_port

pytestmark = pytest.mark.integration

SCRAPE_TIMEOUT = 30.0


def scrape(port):
    """Every sample of /metrics as {(name, sorted labels): value}."""
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def wait_for_metrics(port, predicate, what, timeout=SCRAPE_TIMEOUT):
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(port)
        if predicate(samples):
            return samples
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}; last: {samples}")
        time.sleep(0.1)


def test_metrics_follow_a_hang_and_its_repair(deployment, tmp_path):
    """Scraped during a hang: registry_up 0 and seconds since healthy growing; after the
    repair: up again, one restart counted as unhealthy, probes timed, data dir sized."""
    metrics_port = free_port()
    deployment.write_env(
        MY_REG_STATE_DIR=str(tmp_path / "state"), MY_REG_METRICS_ADDR=f"127.0.0.1:{metrics_port}"
    )
    sup = deployment.start()
    healthy = wait_for_metrics(
        metrics_port, lambda m: m.get(("registry_up", ())) == 1.0, "registry_up 1"
    )
    assert healthy[("registry_probe_duration_seconds_count", ())] >= 1
    since = sup.mark()

    # The repair (kill and start) ends the stopped process; teardown removes it otherwise.
    os.kill(deployment.running().pid, signal.SIGSTOP)
    hung = wait_for_metrics(
        metrics_port, lambda m: m.get(("registry_up", ())) == 0.0, "registry_up 0"
    )
    assert hung[("registry_seconds_since_healthy", ())] > 0
    sup.wait_for_event("registry.healthy", since=since)
    after = wait_for_metrics(
        metrics_port,
        lambda m: (
            m.get(("registry_restarts_total", (("reason", "unhealthy"),))) == 1.0
            and m.get(("registry_up", ())) == 1.0
        ),
        "one unhealthy restart and registry_up 1",
    )
    assert 0.0 == after[("registry_seconds_since_healthy", ())]
    assert after[("registry_data_dir_free_bytes", ())] > 0
    assert ("registry_data_dir_bytes", ()) in after
    assert 0.0 == after[("registry_maintenance", ())]


def test_metrics_are_off_unless_asked(deployment):
    """Without MY_REG_METRICS_ADDR the supervisor listens on no port of its own."""
    sup = deployment.start()
    assert [] == sup.find("metrics.serving")
