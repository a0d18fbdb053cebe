"""Prometheus metrics of the supervisor (MY_REG_METRICS_ADDR; off by default).

The loop sets every value; the exporter's HTTP thread only reads them when scraped.
Metrics live in a registry of their own (not prometheus_client's global one), so one
process can hold several supervisors (tests) without name clashes.
"""

from __future__ import annotations

from threading import Thread
from typing import TYPE_CHECKING, Any

from supervisor.errors import for_os_error
from supervisor.settings import parse_metrics_address

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from prometheus_client import CollectorRegistry

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

    def serve(self, host: str, port: int) -> None:
        """Start the exporter's HTTP thread; OSError if the address cannot be bound."""
        from prometheus_client import start_http_server

        if self.registry is None:
            raise RuntimeError("metrics are disabled")
        self._server, self._thread = start_http_server(port, addr=host, registry=self.registry)

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
