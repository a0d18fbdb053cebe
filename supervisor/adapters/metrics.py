"""Prometheus metrics of the supervisor, and its readiness (MY_REG_METRICS_ADDR; off by
default).

One HTTP server on one port: `/ready` answers the load balancer (supervisor/ready.py),
every other path the metrics (`/metrics`, as prometheus_client serves them). The loop sets
every value and publishes the readiness; the HTTP threads only read them when asked.
Metrics live in a registry of their own (not prometheus_client's global one), so one
process can hold several supervisors (tests) without name clashes.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from threading import Thread
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from supervisor.errors import for_os_error
from supervisor.ready import NOT_YET, Ready
from supervisor.settings import parse_metrics_address

if TYPE_CHECKING:
    from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

    from prometheus_client import CollectorRegistry

READY_PATH = "/ready"

PROBE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class _Off:
    """Stands in for every metric while the endpoint is off."""

    def set(self, value: float) -> None:
        pass

    def inc(self, amount: float = 1) -> None:
        pass

    def observe(self, value: float) -> None:
        pass

    def labels(self, **labels: str) -> _Off:
        return self

    def clear(self) -> None:
        pass


class Metrics:
    """The gauges, counters and the histogram the loop keeps current.

    Disabled (the default), every metric is a no-op and prometheus_client is never
    imported: it costs about 10 MiB of RSS that an idle supervisor should not carry.
    """

    up: Any
    restarts: Any
    replacements: Any
    probe_seconds: Any
    since_healthy: Any
    data_dir_bytes: Any
    data_dir_free_bytes: Any
    maintenance: Any
    info: Any
    probe_failures: Any
    degraded: Any
    canary_ok: Any
    canary_failures: Any
    canary_rounds: Any

    def __init__(self, enabled: bool = True) -> None:
        # Replaced whole by the loop (publish_ready), read by the HTTP threads: one
        # reference assignment, so a reader sees the old value or the new, never half.
        self.ready: Ready = NOT_YET
        self._server: WSGIServer | None = None
        self._thread: Thread | None = None
        self.registry: CollectorRegistry | None = None
        if not enabled:
            off = _Off()
            self.up = self.restarts = self.probe_seconds = self.since_healthy = off
            self.replacements = off
            self.data_dir_bytes = self.data_dir_free_bytes = self.maintenance = off
            self.info = self.probe_failures = self.degraded = off
            self.canary_ok = self.canary_failures = self.canary_rounds = off
            return
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry(auto_describe=True)
        self.up = Gauge(
            "registry_up",
            "1 while the registry answers its health probe, else 0",
            registry=self.registry,
        )
        self.restarts = Counter(
            "registry_restarts",
            "Restarts of the registry container, by reason (failures: crashed, unhealthy...)",
            ["reason"],
            registry=self.registry,
        )
        self.replacements = Counter(
            "registry_replacements",
            "Planned replacements of the registry container (a reload's new spec), by reason",
            ["reason"],
            registry=self.registry,
        )
        self.probe_seconds = Histogram(
            "registry_probe_duration_seconds",
            "Duration of GET /v2/ health probes (failed ones included)",
            buckets=PROBE_BUCKETS,
            registry=self.registry,
        )
        self.since_healthy = Gauge(
            "registry_seconds_since_healthy",
            "Seconds since the registry last answered a probe (0 while healthy)",
            registry=self.registry,
        )
        self.data_dir_bytes = Gauge(
            "registry_data_dir_bytes",
            "Bytes allocated under the data dir (a lower bound for a very large one)",
            registry=self.registry,
        )
        self.data_dir_free_bytes = Gauge(
            "registry_data_dir_free_bytes",
            "Free bytes on the data dir's file system",
            registry=self.registry,
        )
        self.maintenance = Gauge(
            "registry_maintenance",
            "1 while a maintenance task (garbage collection) holds the registry",
            registry=self.registry,
        )
        self.probe_failures = Counter(
            "registry_probe_failures",
            "Failed health probes, by class: refused, timeout, reset, dependency (the "
            "registry's own health check answered 503), tls, http (another status)",
            ["class"],
            registry=self.registry,
        )
        self.degraded = Gauge(
            "registry_degraded",
            "1 while the registry serves but a source fails (dependency: its own health "
            "check), by source",
            ["source"],
            registry=self.registry,
        )
        self.canary_ok = Gauge(
            "registry_canary_ok",
            "1 after the push canary's last round worked, 0 after it failed; NaN before the"
            " first round or while the canary is off",
            registry=self.registry,
        )
        self.canary_failures = Counter(
            "registry_canary_failures",
            "Push canary rounds where the registry answered and the write did not work",
            registry=self.registry,
        )
        self.canary_rounds = Counter(
            "registry_canary_rounds",
            "Push canary rounds, by result (passed, failed, inconclusive)",
            ["result"],
            registry=self.registry,
        )

        self.info = Gauge(
            "registry_info",
            "1, labelled with the registry's version (`registry --version` in its image)",
            ["version"],
            registry=self.registry,
        )

    def publish_ready(self, ready: Ready) -> None:
        """The loop's latest readiness verdict, for `GET /ready` (the loop's thread only)."""
        self.ready = ready

    def serve(self, host: str, port: int) -> None:
        """Start the endpoint's HTTP thread; OSError if the address cannot be bound."""
        from prometheus_client import make_wsgi_app

        if self.registry is None:
            raise RuntimeError("metrics are disabled")
        app = _dispatch(make_wsgi_app(self.registry), lambda: self.ready)
        self._server = _make_server(host, port, app)
        self._thread = Thread(target=self._server.serve_forever, name="metrics-http", daemon=True)
        self._thread.start()

    def serve_at(self, address: str) -> None:
        """Serve MY_REG_METRICS_ADDR: ConfigError, or TransientError for an address that may
        free itself (a port in use: most often the supervisor we replace has not let go yet,
        and exit 78 would leave the registry unsupervised until someone looks)."""
        host, port = parse_metrics_address(address)
        try:
            self.serve(host, port)
        except OSError as err:
            setting = f"MY_REG_METRICS_ADDR={address!r}"
            raise for_os_error(
                err,
                config=f"{setting}: expected an address we can listen on ({err.strerror})",
                transient=f"{setting}: cannot listen there now ({err.strerror})",
            ) from None

    def close(self) -> None:
        """Stop serving the endpoint, if it was serving."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None


def _dispatch(metrics_app: WSGIApplication, ready: Callable[[], Ready]) -> WSGIApplication:
    """`/ready` (GET or HEAD) from the published verdict; anything else to prometheus_client."""

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != READY_PATH:
            return metrics_app(environ, start_response)
        method = environ.get("REQUEST_METHOD")
        if method not in ("GET", "HEAD"):
            start_response("405 Method Not Allowed", [("Allow", "GET, HEAD")])
            return [b""]
        verdict = ready()  # read once: the loop may publish a new one meanwhile
        body = f"{verdict.reason}\n".encode("ascii", "replace")
        status = "200 OK" if verdict.ready else "503 Service Unavailable"
        start_response(
            status,
            [
                ("Content-Type", "text/plain; charset=ascii"),
                ("Content-Length", str(len(body))),
                ("Cache-Control", "no-store"),
            ],
        )
        return [b""] if method == "HEAD" else [body]

    return app


class _Server(ThreadingMixIn, WSGIServer):
    """A thread per request (a slow scrape never holds up a health check)."""

    daemon_threads = True  # not joined at close: an abandoned request dies with us


class _Quiet(WSGIRequestHandler):
    """No access log on stderr: a load balancer checks every second."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _make_server(host: str, port: int, app: WSGIApplication) -> WSGIServer:
    """Bind ``host:port`` (IPv4 or IPv6, as the address says), as prometheus_client's own
    start_http_server does; OSError if it cannot."""
    family, _, _, _, sockaddr = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]

    class Server(_Server):
        address_family = family

    return make_server(str(sockaddr[0]), port, app, Server, handler_class=_Quiet)
