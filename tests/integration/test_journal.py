"""One journal: the registry's own lines arrive as the supervisor's structured events."""

from __future__ import annotations

import signal

import pytest
import requests
from support.process import EX_OK

pytestmark = pytest.mark.integration


def test_registry_lines_are_reemitted_and_requests_summarised(deployment, tmp_path):
    """The registry's startup line, a failed request and a request summary reach the
    supervisor's log as events; our probes are not counted as requests."""
    deployment.write_env(MY_REG_STATE_DIR=str(tmp_path / "state"))
    sup = deployment.start()
    sup.wait_for_event("registry.log", msg="listening on [::]:5000", source="registry")

    missing = f"http://127.0.0.1:{deployment.port}/v2/none/manifests/latest"
    assert 404 == requests.get(missing, timeout=5).status_code
    failed = sup.wait_for_event("registry.request_failed")
    assert ("/v2/none/manifests/latest", "manifest unknown") == (
        failed["http_request_uri"],
        failed["err_code"],
    )

    sup.send(signal.SIGTERM)
    assert EX_OK == sup.wait_exit()
    summaries = sup.find("registry.requests")
    assert 1 == len(summaries), sup.tail()
    assert ({"4xx": 1}, 1) == (summaries[0]["by_status"], summaries[0]["requests"])
    assert summaries[0]["probes"] >= 1


def test_forwarding_can_be_turned_off(deployment, tmp_path):
    """MY_REG_FORWARD_LOGS=false: no registry line in the supervisor's log."""
    deployment.write_env(MY_REG_STATE_DIR=str(tmp_path / "state"), MY_REG_FORWARD_LOGS="false")
    sup = deployment.start()
    assert 404 == requests.get(deployment.url + "x/manifests/y", timeout=5).status_code
    sup.send(signal.SIGTERM)
    assert EX_OK == sup.wait_exit()
    assert [] == [
        e
        for e in sup.events()
        if e["event"].startswith("registry.") and e["event"] not in ("registry.healthy",)
    ]
