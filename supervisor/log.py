"""structlog configuration: JSON lines off a terminal, console on one, secrets redacted."""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from supervisor.redaction import REDACTED, is_secret, redact_text
from supervisor.settings import LogFormat, LogLevel


def redact(value: Any) -> Any:
    """Mask secret-looking keys at any depth, KEY=value strings, and secrets inside text
    (URL passwords, Authorization values: supervisor.redaction)."""
    if isinstance(value, dict):
        return {k: REDACTED if is_secret(str(k)) else redact(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(redact(v) for v in value)
    if isinstance(value, str):
        key, equals, _ = value.partition("=")
        if equals and is_secret(key):
            return f"{key}={REDACTED}"
        return redact_text(value)
    return value


def redact_secrets(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: no event ever carries a secret value."""
    return {k: REDACTED if is_secret(k) else redact(v) for k, v in event_dict.items()}


def configure(fmt: LogFormat = LogFormat.AUTO, level: LogLevel = LogLevel.INFO) -> None:
    """Configure structlog for the whole process; safe to call again on reload."""
    json_output = fmt is LogFormat.JSON or (fmt is LogFormat.AUTO and not sys.stderr.isatty())
    # JSON: the traceback becomes text before redaction, so an exception's message (a URL
    # with its password) is redacted too. ConsoleRenderer, for a person at a terminal,
    # formats exceptions itself and warns if format_exc_info ran.
    output: list[Any] = (
        [structlog.processors.format_exc_info, redact_secrets, structlog.processors.JSONRenderer()]
        if json_output
        else [redact_secrets, structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())]
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            *output,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.value.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
