"""The grammar of single setting values, and how a value shows in an error line (pure).

Each rule here is one the engine or the registry applies itself: checked at load, a value
it would refuse is a bad setting with one line, not a failure in the middle of `run`.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import urllib.parse
from enum import StrEnum
from typing import Annotated

from pydantic import Field

from supervisor.redaction import REDACTED, is_secret, redact_value

# A memory limit: bytes, or a number with a k, m or g suffix (binary units, as Docker's).
_MEMORY = re.compile(r"([0-9]{1,13})([bkmg]?)", re.IGNORECASE | re.ASCII)
_MEMORY_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
MEMORY_MIN = 6 << 20  # Docker refuses less than 6 MiB
MEMORY_MAX = 1 << 40
MEMORY_EXPECTED = "a memory size from 6m to 1024g, such as 512m or 2g"
# Docker's own rule for container names (daemon/names: RestrictedNamePattern): note the `+`,
# a one-character name is refused (400 "Invalid container name").
CONTAINER_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]+")
# A fleet member's or a fleet's name: it becomes part of Redis keys and of log lines.
FLEET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
FLEET_NAME_EXPECTED = "1 to 63 letters, digits, '_', '.' or '-', starting with a letter or digit"
REDIS_SCHEMES = ("redis", "rediss")


def default_member() -> str:
    """This host's name, as a fleet member's default name (its first label if too long)."""
    name = socket.gethostname()
    return name if FLEET_NAME.fullmatch(name) else name.split(".")[0][:63]


def redis_url_problem(value: str) -> str | None:
    """What is wrong with a Redis URL (pure), or None: a redis:// or rediss:// URL with a
    host, an optional port and an optional database number."""
    expected = "a redis:// or rediss:// URL such as redis://10.0.0.5:6379/0"
    try:
        url = urllib.parse.urlsplit(value.strip())
        port = url.port
    except ValueError:
        return expected
    if url.scheme not in REDIS_SCHEMES or not url.hostname:
        return expected
    if port == 0:
        return f"{expected} (port 0 is not a port)"
    database = url.path.lstrip("/")
    if database and not database.isdigit():
        return f"{expected} (the path is a database number)"
    if url.query or url.fragment:
        return f"{expected} (no query or fragment)"
    return None


NAME_EXPECTED = "a container name of at least 2 characters ([a-zA-Z0-9][a-zA-Z0-9_.-]+)"
# MY_REG_METRICS_ADDR given as a bare port listens here.
METRICS_DEFAULT_HOST = "127.0.0.1"
# Capped: a socket timeout beyond about 1e9 s raises OverflowError at the first probe.
MAX_SECONDS = 86400
Seconds = Annotated[float, Field(gt=0, le=MAX_SECONDS, allow_inf_nan=False)]
SECONDS_ABOVE_0 = "a number of seconds above 0, at most 86400"
# A Go duration (time.ParseDuration), as the registry reads REGISTRY_HTTP_DRAINTIMEOUT:
# "5s", "1m30s", "250ms", "1.5s"; "0" alone may go without a unit.
_GO_DURATION_PART = re.compile(r"([0-9]*(?:\.[0-9]*)?)(ns|us|\u00b5s|\u03bcs|ms|s|m|h)", re.ASCII)
_GO_DURATION_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "\u00b5s": 1e-6,
    "\u03bcs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
# Values longer than this are shortened in error lines (a 5000-character path helps nobody).
SHOWN_VALUE_MAX = 80


class PullPolicy(StrEnum):
    """MY_REG_PULL: when `run` pulls the image (missing: only when it is not local)."""

    MISSING = "missing"
    ALWAYS = "always"
    NEVER = "never"


class LogFormat(StrEnum):
    """MY_REG_LOG_FORMAT: auto is JSON off a terminal, console on one."""

    AUTO = "auto"
    JSON = "json"
    CONSOLE = "console"


class LogLevel(StrEnum):
    """MY_REG_LOG_LEVEL: the lowest level logged (and forwarded from the registry)."""

    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


def parse_metrics_address(text: str) -> tuple[str, int]:
    """'9341' (loopback), '127.0.0.1:9341' or '[::1]:9341' -> (host, port); ValueError."""
    host, sep, port = text.strip().rpartition(":")
    if not sep:
        host = METRICS_DEFAULT_HOST
    host = host.removeprefix("[").removesuffix("]")
    address = str(ipaddress.ip_address(host))
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(port)
    return address, int(port)


def memory_size_bytes(text: str) -> int | None:
    """A memory size as Docker reads it (``512m``: 512 MiB) in bytes; None if not one."""
    match = _MEMORY.fullmatch(text.strip())
    if match is None:
        return None
    return int(match[1]) * _MEMORY_UNITS[match[2].lower()]


def go_duration_seconds(text: str) -> float | None:
    """A Go duration (``5s``, ``1m30s``, ``0``) in seconds; None if it is not one.

    A bare number other than 0 is not one: the registry's YAML decoder reads it as
    nanoseconds (``5`` is 5 ns), which is never what was meant.
    """
    value = text.strip()
    sign = -1.0 if value.startswith("-") else 1.0
    value = value.removeprefix("-").removeprefix("+")
    if value == "0":
        return 0.0
    total, position = 0.0, 0
    while position < len(value):
        match = _GO_DURATION_PART.match(value, position)
        if match is None or match[1] in ("", "."):
            return None
        total += float(match[1]) * _GO_DURATION_UNITS[match[2]]
        position = match.end()
    return sign * total if value else None


def shown(variable: str, value: object) -> object:
    """A bad value as an error line shows it: secrets redacted, then shortened.

    In that order: shortening first could cut a URL before its '@' and leave the
    password where redact_text no longer recognises it.
    """
    if isinstance(value, str):
        return _shorten(redact_value(variable, value))
    return REDACTED if is_secret(variable) else value


def _shorten(value: str) -> str:
    if len(value) > SHOWN_VALUE_MAX:
        return f"{value[: SHOWN_VALUE_MAX - 20]}...({len(value)} characters)"
    return value
