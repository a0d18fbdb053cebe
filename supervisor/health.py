"""Health verdicts (pure): what a probe's answer means, and the failure count.

``GET /v2/`` answers 200, or 401 when auth is on: both mean the registry is serving.
The probe itself (HTTP) is supervisor/adapters/probe.py.
"""

from __future__ import annotations

from dataclasses import dataclass

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
