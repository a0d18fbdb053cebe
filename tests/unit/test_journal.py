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


# Lines the test images (2.8 and 3.0) log under htpasswd auth, captured from a real
# registry: the probe's challenge (no credentials), then a docker login with a wrong
# password (its challenge, then the failure and its error).
PROBE_CHALLENGE = (
    'time="2026-12-02T00:32:32.668328099Z" level=warning msg="error authorizing context: '
    'basic authentication challenge for realm \\"r\\": invalid authorization credential" '
    'go.version=go1.19.8 http.request.host="127.0.0.1:32768" '
    "http.request.id=efd444ef-7215-4c15-bbc7-8255dfeae7d5 http.request.method=GET "
    'http.request.remoteaddr="172.17.0.1:45700" http.request.uri=/v2/ '
    "http.request.useragent=python-requests/2.34.2"
)
PROBE_AUTHORIZING = (
    'time="2026-12-02T00:32:33.057610588Z" level=debug msg="authorizing request" '
    'go.version=go1.19.8 http.request.host="127.0.0.1:32769" '
    "http.request.id=efbd72a6-1494-4c96-847f-c29b6f2bebb2 http.request.method=GET "
    'http.request.remoteaddr="172.17.0.1:57840" http.request.uri=/v2/ '
    "http.request.useragent=python-requests/2.34.2"
)
DOCKER_AGENT = 'http.request.useragent="docker/20.10.24+dfsg1 go/go1.19.8 os/linux arch/amd64"'
LOGIN_CHALLENGE = (
    'time="2026-12-02T00:32:32.800662088Z" level=warning msg="error authorizing context: '
    'basic authentication challenge for realm \\"r\\": invalid authorization credential" '
    "http.request.method=GET http.request.uri=/v2/ " + DOCKER_AGENT
)
LOGIN_FAILED = (
    'time="2026-12-02T00:32:32.861923666Z" level=error msg="error authenticating user '
    '\\"alice\\": authentication failure" http.request.method=GET http.request.uri=/v2/ '
    + DOCKER_AGENT
)
LOGIN_CONTEXT = (
    'time="2026-12-02T00:32:32.86203964Z" level=warning msg="error authorizing context: '
    'basic authentication challenge for realm \\"r\\": authentication failure" '
    "http.request.method=GET http.request.uri=/v2/ " + DOCKER_AGENT
)


def forwarded(*lines: str) -> list[tuple[str, str]]:
    logger = ListLogger()
    forwarder = Forwarder(logger, every_s=3600)
    for line in lines:
        forwarder.feed(line, 0.0)
    return [(level, fields.get("msg", "")[:40]) for level, _event, fields in logger.records]


def test_the_probes_own_401_under_auth_is_not_forwarded() -> None:
    """The registry's challenge to our credential-less probe (and its 3.x debug line) is
    not a registry warning: nothing is forwarded for it."""
    assert [] == forwarded(PROBE_CHALLENGE, PROBE_AUTHORIZING, PROBE_CHALLENGE)


def test_a_wrong_password_of_a_real_client_is_still_forwarded() -> None:
    """A docker login's challenge and its failed authentication are forwarded as before."""
    assert [
        ("warning", "error authorizing context: basic authent"),
        ("error", 'error authenticating user "alice": authe'),
        ("warning", "error authorizing context: basic authent"),
    ] == forwarded(LOGIN_CHALLENGE, LOGIN_FAILED, LOGIN_CONTEXT)


def test_a_python_client_with_wrong_credentials_is_forwarded() -> None:
    """The probe's user agent alone does not hide a failure: only the no-credential
    challenge on GET /v2/ is the probe's."""
    line = LOGIN_CONTEXT.replace(DOCKER_AGENT, "http.request.useragent=python-requests/2.34.2")
    assert [("warning", "error authorizing context: basic authent")] == forwarded(line)


def test_a_challenge_on_another_path_is_forwarded() -> None:
    """A credential-less request for a repository is a client's, not the probe's."""
    line = PROBE_CHALLENGE.replace("http.request.uri=/v2/", "http.request.uri=/v2/_catalog")
    assert [("warning", "error authorizing context: basic authent")] == forwarded(line)


def test_push_canary_requests_are_counted_with_the_probes() -> None:
    """The canary's uploads to its reserved repository are ours, not client traffic."""
    ours = Access(
        "PATCH", "/v2/registry-supervisor-canary/blobs/uploads/x", 202, 0, "python-requests/2.31.0"
    )
    client = Access(
        "PATCH", "/v2/registry-supervisor-canary/blobs/uploads/x", 202, 0, "docker/20.10"
    )
    assert (True, False) == (ours.is_probe, client.is_probe)
