"""One journal: the registry's log lines parsed and re-emitted (pure; a list logger)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from supervisor.engine.logs import Access, Forwarder, Line, docker_timestamp, parse_line

LISTENING = (
    'time="2026-11-29T09:48:00.825091279Z" level=info msg="listening on [::]:5000" '
    "go.version=go1.19.8 instance.id=9065d561 service=registry version=2.8.2+ds1"
)
FAILED = (
    'time="2026-11-29T09:48:01.85Z" level=error msg="response completed with error" '
    'err.code="manifest unknown" err.detail="unknown tag=x" http.request.method=GET '
    "http.request.uri=/v2/nope/manifests/x http.response.status=404"
)
ACCESS = '172.17.0.1 - - [29/Nov/2026:09:48:01 +0000] "GET /v2/a/blobs/sha256:ab HTTP/1.1" 200 4096 "" "docker/20.10"'
PROBE = '172.17.0.1 - - [29/Nov/2026:09:48:01 +0000] "GET /v2/ HTTP/1.1" 200 2 "" "python-requests/2.31.0"'


class ListLogger:
    """Records (level, event, fields) like a structlog bound logger would log them."""

    def __init__(self) -> None:
        self.records: list[tuple[str, str, dict[str, Any]]] = []

    def __getattr__(self, level: str) -> Any:
        def record(event: str, **fields: Any) -> None:
            self.records.append((level, event, fields))

        return record


def test_logfmt_line_keeps_its_fields_without_the_noise() -> None:
    """msg and level are read; time, go.version, instance.id, service, version dropped."""
    assert Line("info", "listening on [::]:5000", {}) == parse_line(LISTENING)


def test_quoted_values_and_dotted_keys() -> None:
    """Quoted values are unquoted; dots in keys become underscores."""
    line = parse_line(FAILED)
    assert isinstance(line, Line)
    assert ("error", "unknown tag=x") == (line.level, line.fields["err_detail"])


def test_access_line_is_read() -> None:
    """An access-log line gives method, path, status, size and agent."""
    assert Access("GET", "/v2/a/blobs/sha256:ab", 200, 4096, "docker/20.10") == parse_line(ACCESS)


def test_plain_output_is_kept_as_the_message() -> None:
    """A line that is not logfmt (a panic) is forwarded whole."""
    assert Line("error", "panic: boom", {}, plain=True) == parse_line("panic: boom")


def test_forwarder_emits_lines_and_summarises_requests() -> None:
    """Lines become registry.log; requests one summary per interval, probes apart."""
    logger = ListLogger()
    forwarder = Forwarder(logger, every_s=60.0)
    start = forwarder.summary.started
    for text in (LISTENING, ACCESS, PROBE, PROBE, FAILED, ""):
        forwarder.feed(text, start + 1)
    forwarder.feed(ACCESS, start + 61)
    assert [
        ("info", "registry.log", {"msg": "listening on [::]:5000"}),
        (
            "warning",
            "registry.request_failed",
            {
                "err_code": "manifest unknown",
                "err_detail": "unknown tag=x",
                "http_request_method": "GET",
                "http_request_uri": "/v2/nope/manifests/x",
            },
        ),
        (
            "info",
            "registry.requests",
            {
                "requests": 2,
                "bytes_sent": 8192,
                "by_status": {"2xx": 2},
                "by_method": {"GET": 2},
                "probes": 2,
                "interval_s": 61.0,
            },
        ),
    ] == logger.records


def test_flush_without_requests_says_nothing() -> None:
    """No summary is logged for an interval with only probes."""
    logger = ListLogger()
    forwarder = Forwarder(logger)
    forwarder.feed(PROBE, forwarder.summary.started)
    forwarder.flush(forwarder.summary.started + 1)
    assert [] == logger.records


def test_docker_timestamps_with_nanoseconds() -> None:
    """Docker's RFC 3339 timestamps with nanoseconds parse; garbage does not."""
    expected = datetime(2026, 11, 29, 9, 48, 0, 825091, tzinfo=UTC).timestamp()
    assert expected == docker_timestamp("2026-11-29T09:48:00.825091279Z")
    assert docker_timestamp("nope") is None


def test_failed_existence_checks_are_only_counted() -> None:
    """A HEAD answered 404 (a push asking whether a blob exists) is not a warning."""
    logger = ListLogger()
    Forwarder(logger).feed(FAILED.replace("method=GET", "method=HEAD"), 0.0)
    assert [] == logger.records


def test_a_panic_and_its_trace_are_errors_until_the_registry_logs_again() -> None:
    """A Go panic is plain output: its first line and the goroutine trace after it are
    forwarded at error (not info), and the next logfmt line has its own level again."""
    logger = ListLogger()
    forwarder = Forwarder(logger, every_s=60.0)
    for text in ("a banner", "panic: open /etc/registry: read-only file system", "",
                 "goroutine 1 [running]:", "main.main()", LISTENING):  # fmt: skip
        forwarder.feed(text, 0.0)
    assert ["info", "error", "error", "error", "info"] == [level for level, _, _ in logger.records]


def test_push_canary_requests_are_counted_with_the_probes() -> None:
    """The canary's uploads to its reserved repository are ours, not client traffic."""
    ours = Access("PATCH", "/v2/registry-supervisor-canary/blobs/uploads/x", 202, 0, "python-requests/2.31.0")
    client = Access("PATCH", "/v2/registry-supervisor-canary/blobs/uploads/x", 202, 0, "docker/20.10")
    assert (True, False) == (ours.is_probe, client.is_probe)
