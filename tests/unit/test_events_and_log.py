"""Engine event parsing and log redaction (pure)."""

from __future__ import annotations

import json

import pytest
import structlog
from docker.utils import convert_filters

from supervisor import log
from supervisor.engine.events import WATCHED_ACTIONS, ContainerEvent, event_filters, parse_event
from supervisor.settings import LogFormat, LogLevel


def test_a_die_event_carries_exit_code() -> None:
    """The engine's die event, as docker-py decodes it."""
    raw = {
        "status": "die",
        "id": "abc",
        "Type": "container",
        "Action": "die",
        "Actor": {"ID": "abc", "Attributes": {"exitCode": "137", "name": "my_registry"}},
        "time": 1,
    }
    assert parse_event(raw) == ContainerEvent(
        "die", "abc", name="my_registry", exit_code=137, time_ns=1_000_000_000
    )


def test_an_event_keeps_the_engines_nanosecond_time() -> None:
    """timeNano, when the engine sends it, is what orders an event against StartedAt."""
    raw = {"Action": "stop", "Actor": {"ID": "abc"}, "time": 1, "timeNano": 1_500_000_123}
    assert parse_event(raw).time_ns == 1_500_000_123


def test_event_filter_reaches_the_engine_as_one_value_per_action() -> None:
    """docker-py must send each watched action and name separately, or nothing matches."""
    encoded = json.loads(convert_filters(event_filters(("my_registry", "my_registry-net"))))
    assert {
        "type": ["container"],
        "container": ["my_registry", "my_registry-net"],
        "event": list(WATCHED_ACTIONS),
    } == encoded


def test_a_kill_event_carries_the_signal() -> None:
    """`docker stop` shows as kill with signal 15 before the die."""
    raw = {"Action": "kill", "Actor": {"ID": "abc", "Attributes": {"signal": "15"}}}
    assert parse_event(raw) == ContainerEvent("kill", "abc", signal=15)


def test_redaction_masks_secret_keys_at_any_depth() -> None:
    """Secret-named keys and KEY=value strings are masked, others untouched."""
    event = {
        "event": "x",
        "REGISTRY_HTTP_SECRET": "s",
        "env": {"REGISTRY_PROXY_PASSWORD": "p", "REGISTRY_LOG_LEVEL": "info"},
        "args": ["REGISTRY_AUTH_TOKEN_X=t", "PLAIN=v"],
    }
    assert log.redact_secrets(None, "info", event) == {
        "event": "x",
        "REGISTRY_HTTP_SECRET": "********",
        "env": {"REGISTRY_PROXY_PASSWORD": "********", "REGISTRY_LOG_LEVEL": "info"},
        "args": ["REGISTRY_AUTH_TOKEN_X=********", "PLAIN=v"],
    }


def test_redaction_masks_secrets_inside_values_at_any_depth() -> None:
    """URL passwords and Authorization values go, in nested dicts, lists and KEY=value."""
    event = {
        "event": "x",
        "url": "https://u:pw@host/v2/",
        "env": {"REGISTRY_PROXY_REMOTEURL": "https://u:pw@hub"},
        "args": ["REGISTRY_PROXY_REMOTEURL=https://u:pw@hub", ("Authorization: Basic abc",)],
        "count": 3,
    }
    assert {
        "event": "x",
        "url": "https://u:********@host/v2/",
        "env": {"REGISTRY_PROXY_REMOTEURL": "https://u:********@hub"},
        "args": ["REGISTRY_PROXY_REMOTEURL=https://u:********@hub", ("Authorization: ********",)],
        "count": 3,
    } == log.redact_secrets(None, "info", event)


def test_json_logs_redact_an_exceptions_message(capsys: pytest.CaptureFixture[str]) -> None:
    """The traceback is text before redaction: a password in the exception's message goes."""
    log.configure(LogFormat.JSON, LogLevel.INFO)
    try:
        raise ConnectionError("cannot reach https://u:hunter2@hub/v2/")
    except ConnectionError:
        structlog.get_logger().exception("proxy.unreachable")
    line = json.loads(capsys.readouterr().err)
    assert "https://u:********@hub/v2/" in line["exception"]
    assert "hunter2" not in line["exception"]


def test_json_logs_have_timestamp_level_event_and_no_secret(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """One JSON object per line on stderr, ISO UTC timestamp, secrets redacted."""
    log.configure(LogFormat.JSON, LogLevel.INFO)
    structlog.get_logger().info("container.created", container_id="abc", password="hunter2")
    line = json.loads(capsys.readouterr().err)
    assert line["event"] == "container.created"
    assert line["level"] == "info"
    assert line["timestamp"].endswith("Z")
    assert line["password"] == "********"
