"""One journal: the registry container's own log lines, re-emitted as structured events.

``parse_line`` (pure) reads one line: the registry's logfmt lines become ``registry.log``
events with their fields as keys (dots become underscores); access-log lines (and the
"response completed" line the registry writes for each request) are counted into a
``RequestSummary`` emitted as one ``registry.requests`` event per interval; failed
requests are ``registry.request_failed``, except HEAD (existence checks: a push asks for
each blob before uploading it, and most answers are 404). Our own health probes are left
out of the counts, and under auth the line the registry logs for each of them (the probe
sends no credentials: a 401 challenge) is not forwarded either (``Line.is_probe_challenge``).

``LogFollower`` (I/O) is a daemon thread following one container's log stream. It only
logs: it decides nothing, so it does not go through the loop's queue. The loop starts a
new one when the container changes or the stream ended (the container stopped, or the
engine's read timeout on a quiet stream), from the last line already forwarded.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import docker
import docker.errors
import requests

from supervisor import canary

# Keys every registry line carries that say nothing about the event.
DROPPED_KEYS = frozenset({"time", "go.version", "instance.id", "service", "version"})
LEVELS = {
    "debug": "debug",
    "info": "info",
    "warn": "warning",
    "warning": "warning",
    "error": "error",
    "fatal": "error",
    "panic": "error",
}
SUMMARY_EVERY_S = 60.0
# What our health probe looks like in the registry's access log (GET /v2/ via requests).
PROBE_PATH = "/v2/"
PROBE_AGENT_PREFIX = "python-requests/"
# What the registry logs when a request without credentials is answered 401 (captured from
# the test images under htpasswd auth, 2.8 and 3.0, level warning):
#   msg="error authorizing context: basic authentication challenge for realm \"r\":
#   invalid authorization credential" http.request.method=GET http.request.uri=/v2/
#   http.request.useragent=python-requests/2.34.2
# and, with token auth, "...: authorization token required". A wrong password says
# "authentication failure" instead (with an error line naming the user): a real failure,
# always forwarded, whoever the client is.
AUTH_CHALLENGE_PREFIX = "error authorizing context:"
NO_CREDENTIALS = ("invalid authorization credential", "authorization token required")
# Logged (at debug, 3.x) for every request under auth, the probe's too.
AUTHORIZING = "authorizing request"
# The push canary's requests (supervisor/canary.py) are ours too: counted with the probes.
CANARY_PATH_PREFIX = f"/v2/{canary.REPOSITORY}/"

_LOGFMT = re.compile(r'([A-Za-z_][\w.\-]*)=("(?:[^"\\]|\\.)*"|\S*)')
_ACCESS = re.compile(
    r'^(?P<client>\S+) \S+ (?P<user>\S+) \[[^\]]+\] "(?P<method>[A-Z]+) (?P<path>\S+)[^"]*" '
    r'(?P<status>\d{3}) (?P<bytes>\d+|-) "[^"]*" "(?P<agent>[^"]*)"'
)


@dataclass(frozen=True)
class Access:
    """One access-log line of the registry: request, answer, client."""

    method: str
    path: str
    status: int
    size: int
    agent: str

    @property
    def is_probe(self) -> bool:
        """Whether it is our own health probe, or a push canary request (counted apart,
        never forwarded)."""
        ours = (self.method == "GET" and self.path == PROBE_PATH) or self.path.startswith(
            CANARY_PATH_PREFIX
        )
        return ours and self.agent.startswith(PROBE_AGENT_PREFIX)


@dataclass(frozen=True)
class Line:
    """A logfmt line: its level (ours), message and remaining fields."""

    level: str
    msg: str
    fields: dict[str, str]
    plain: bool = False  # not logfmt: a banner, or a Go panic and its goroutine trace

    @property
    def from_probe(self) -> bool:
        """Whether the line is about a request of our health probe (GET /v2/, its agent)."""
        return (
            self.fields.get("http_request_method") == "GET"
            and self.fields.get("http_request_uri") == PROBE_PATH
            and self.fields.get("http_request_useragent", "").startswith(PROBE_AGENT_PREFIX)
        )

    @property
    def is_probe_challenge(self) -> bool:
        """Whether it is the registry's 401 to our probe, which has no credentials: the
        challenge every probe gets under auth, not a failure (never forwarded)."""
        if not self.from_probe:
            return False
        if self.msg == AUTHORIZING:
            return True
        return self.msg.startswith(AUTH_CHALLENGE_PREFIX) and self.msg.endswith(NO_CREDENTIALS)


# How a Go program's fatal plain output begins; the trace after it is part of it.
_FATAL_STARTS = ("panic:", "fatal error:")


def parse_logfmt(text: str) -> dict[str, str]:
    """key=value and key="quoted value" pairs of a logfmt line (pure)."""
    pairs = {}
    for key, raw in _LOGFMT.findall(text):
        value = raw
        if raw.startswith('"') and raw.endswith('"') and len(raw) >= 2:
            value = raw[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        pairs[key] = value
    return pairs


def parse_line(text: str) -> Access | Line | None:
    """One line of the registry's output; None for a blank one (pure)."""
    text = text.strip()
    if not text:
        return None
    access = _ACCESS.match(text)
    if access is not None:
        size = access["bytes"]
        return Access(
            method=access["method"],
            path=access["path"],
            status=int(access["status"]),
            size=int(size) if size.isdigit() else 0,
            agent=access["agent"],
        )
    pairs = parse_logfmt(text)
    if "msg" not in pairs or "level" not in pairs:
        # Plain output: a banner (info), or the start of a crash (error).
        level = "error" if text.startswith(_FATAL_STARTS) else "info"
        return Line(level=level, msg=text, fields={}, plain=True)
    fields = {
        key.replace(".", "_"): value
        for key, value in pairs.items()
        if key not in DROPPED_KEYS and key not in ("msg", "level")
    }
    return Line(level=LEVELS.get(pairs["level"].lower(), "info"), msg=pairs["msg"], fields=fields)


@dataclass
class RequestSummary:
    """Requests counted since the last summary (our probes apart)."""

    started: float
    total: int = 0
    bytes: int = 0
    probes: int = 0
    by_status: Counter[str] = field(default_factory=Counter)
    by_method: Counter[str] = field(default_factory=Counter)

    def add(self, access: Access) -> None:
        """Count one request in the summary."""
        if access.is_probe:
            self.probes += 1
            return
        self.total += 1
        self.bytes += access.size
        self.by_status[f"{access.status // 100}xx"] += 1
        self.by_method[access.method] += 1

    def fields(self, now: float) -> dict[str, Any]:
        """The summary as the fields of its log event, ``interval_s`` ending ``now``."""
        return {
            "requests": self.total,
            "bytes_sent": self.bytes,
            "by_status": dict(sorted(self.by_status.items())),
            "by_method": dict(sorted(self.by_method.items())),
            "probes": self.probes,
            "interval_s": round(now - self.started, 1),
        }


class Forwarder:
    """Turns lines into log events on ``log``; the summary is flushed every ``every_s``."""

    def __init__(self, log: Any, every_s: float = SUMMARY_EVERY_S) -> None:
        self.log = log
        self.every_s = every_s
        self.summary = RequestSummary(time.monotonic())
        # After a `panic:` line, the plain lines that follow (its goroutine trace) are
        # errors too, until the registry logs normally again.
        self.crashing = False

    def feed(self, text: str, now: float) -> None:
        """Take one line of the registry's log: an access line is counted in the summary
        (flushed once ``every_s`` has passed), any other is logged as a ``registry.*``
        event at its level (what an access line counts already is dropped)."""
        parsed = parse_line(text)
        if isinstance(parsed, Access):
            self.summary.add(parsed)
        elif isinstance(parsed, Line):
            self._emit(parsed)
        if now - self.summary.started >= self.every_s:
            self.flush(now)

    def _emit(self, line: Line) -> None:
        if line.msg == "response completed":
            return  # counted through its access-log line
        if line.is_probe_challenge:
            return  # our probe's own 401 under auth: its access line is counted
        if line.msg == "response completed with error":
            if line.fields.get("http_request_method") == "HEAD":
                return  # an existence check (every push asks for blobs it may skip): counted
            fields = {k: v for k, v in line.fields.items() if not k.startswith("http_response_")}
            self.log.warning("registry.request_failed", **fields)
            return
        level = line.level
        if line.plain:
            self.crashing = self.crashing or level == "error"
            level = "error" if self.crashing else level
        else:
            self.crashing = False
        getattr(self.log, level)("registry.log", msg=line.msg, **line.fields)

    def flush(self, now: float) -> None:
        """Emit the request summary if anything was counted; start a new interval."""
        if self.summary.total:
            self.log.info("registry.requests", **self.summary.fields(now))
        self.summary = RequestSummary(now)


def docker_timestamp(text: str) -> float | None:
    """Epoch seconds of a Docker log timestamp (RFC 3339, nanoseconds), or None (pure)."""
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


class LogFollower:
    """A daemon thread forwarding one container's log lines from ``since`` (epoch s).

    ``api`` is the follower's own (``Engine.stream_client``): ``close()`` closes it.
    """

    def __init__(self, api: docker.APIClient, container_id: str, since: float, log: Any) -> None:
        self.api = api
        self.container_id = container_id
        self.last_seen = since
        self.forwarder = Forwarder(log)
        self._stream: Any = None
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="registry-logs", daemon=True)

    def start(self) -> None:
        """Start following the container's log in a thread of its own."""
        self._thread.start()

    @property
    def alive(self) -> bool:
        """Whether the stream is still followed (it ends with the container)."""
        return self._thread.is_alive()

    def _run(self) -> None:
        buffer = b""
        try:
            self._stream = self.api.logs(
                self.container_id,
                stream=True,
                follow=True,
                timestamps=True,
                since=self.last_seen,
            )
            if self._closed.is_set():
                return
            for chunk in self._stream:
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for raw in lines:
                    self._line(raw.decode(errors="replace"))
        except (requests.exceptions.RequestException, docker.errors.DockerException, OSError):
            pass  # the container went away, the engine restarted, or a read timeout
        finally:
            if buffer:
                self._line(buffer.decode(errors="replace"))
            self.forwarder.flush(time.monotonic())

    def _line(self, text: str) -> None:
        stamp, _, rest = text.partition(" ")
        moment = docker_timestamp(stamp)
        if moment is None:
            rest = text
        else:
            self.last_seen = max(self.last_seen, moment + 1e-6)
        self.forwarder.feed(rest, time.monotonic())

    def close(self) -> None:
        """End the stream and its thread (waiting up to 5 s), and close its client."""
        self._closed.set()
        stream = self._stream
        if stream is not None:
            with contextlib.suppress(OSError, AttributeError):
                stream.close()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self.api.close()
