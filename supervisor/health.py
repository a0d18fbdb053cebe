"""Health verdicts (pure): what a probe's answer means, and the failure count.

``GET /v2/`` answers 200, or 401 when auth is on: both mean the registry is serving.
The probe itself (HTTP) is supervisor/adapters/probe.py.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum

HEALTHY_STATUSES = frozenset({200, 401})


def is_healthy(status: int) -> bool:
    """Whether an HTTP status from ``/v2/`` means the registry is serving."""
    return status in HEALTHY_STATUSES


@dataclass
class FailureCount:
    """Consecutive probe failures; ``retries`` of them in a row mean unhealthy."""

    retries: int
    failures: int = 0

    def record(self, healthy: bool) -> bool:
        """Count one probe result; True once the registry must be restarted."""
        self.failures = 0 if healthy else self.failures + 1
        return self.failures >= self.retries

    def reset(self) -> None:
        """Forget the failures counted so far (a healthy answer, a new container)."""
        self.failures = 0


class FailureClass(StrEnum):
    """What kind of failure a probe saw; each has its own remedy (loop/health_watch.py)."""

    REFUSED = "refused"  # nothing listens on the published port
    TIMEOUT = "timeout"  # connected (docker-proxy accepts), no answer in time: a hang
    RESET = "reset"  # the connection was dropped before an answer
    DEPENDENCY = "dependency"  # 503 from the registry's own health check: storage and the like
    TLS = "tls"  # the TLS handshake failed, or the certificate is not the one pinned
    HTTP = "http"  # an HTTP answer that is neither serving nor a dependency failure


# The registry's 503 when one of its own health checks fails (distribution `health.Handler`,
# 2.8 and 3.x alike, on every path): errcode UNAVAILABLE with this detail. Which check
# failed is only at /debug/health on the registry's debug address (http.debug.addr).
DEPENDENCY_STATUS = 503
DEPENDENCY_CODE = "UNAVAILABLE"
DEPENDENCY_DETAIL = "health check failed"


def registry_error(body: bytes) -> str | None:
    """The first error of a registry's JSON error body as ``CODE: detail``; None if none."""
    try:
        errors = json.loads(body.decode("utf-8", "replace")).get("errors")
        first = errors[0]
        code = str(first.get("code", "")).strip()
        detail = first.get("detail") or first.get("message") or ""
    except (ValueError, AttributeError, IndexError, KeyError, TypeError):
        return None
    detail = " ".join(str(detail).split())[:ERROR_PHRASE_MAX]
    return f"{code}: {detail}" if code and detail else (code or detail or None)


ERROR_PHRASE_MAX = 120


def http_failure(status: int, error: str | None) -> tuple[FailureClass, str]:
    """The class and the one phrase of an HTTP answer that is not serving."""
    phrase = f"HTTP {status}: {error}" if error else f"HTTP {status}"
    if (
        status == DEPENDENCY_STATUS
        and error is not None
        and error.startswith(f"{DEPENDENCY_CODE}:")
        and DEPENDENCY_DETAIL in error
    ):
        return FailureClass.DEPENDENCY, phrase
    return FailureClass.HTTP, phrase


@dataclass
class DependencyBackoff:
    """When a registry whose own health check keeps failing is restarted anyway.

    A restart cannot mend a full disk or a storage outage, so it is rare: the first after
    ``first_s`` of failing, then each ``first_s`` x 2^n after the one before, at most
    ``max_s`` apart. It can help where the container holds a stale view of its storage
    (a remount of the data dir under a running container). A restarted registry answers
    200 until its check has failed again (threshold x interval: 30 to 40 s in the
    official config), so the doubling is forgotten only after ``first_s`` of health.
    """

    first_s: float
    max_s: float
    failing_since: float | None = None
    next_at: float | None = None
    restarts: int = 0
    healthy_since: float | None = None

    def failing(self, now: float) -> bool:
        """A dependency failure at ``now``; True when a restart is due now."""
        self.healthy_since = None
        if self.failing_since is None:
            self.failing_since = now
        if self.next_at is None:
            self.next_at = now + min(self.max_s, self.first_s * 2**self.restarts)
        if now < self.next_at:
            return False
        self.restarts += 1
        self.next_at = None  # set from the next failure seen after the restart
        return True

    def healthy(self, now: float) -> None:
        """The registry served at ``now``; after ``first_s`` in a row, all is forgotten."""
        self.failing_since = self.next_at = None
        if self.healthy_since is None:
            self.healthy_since = now
        if now - self.healthy_since >= self.first_s:
            self.restarts = 0
