"""Health of the registry: the HTTP probe (I/O) and the failure count (pure).

The probe returns the status code or raises ProbeFailed; the caller owns the
verdict. ``GET /v2/`` answers 200, or 401 when auth is on: both mean the
registry is serving.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import requests
import urllib3

from supervisor.errors import SupervisorError

HEALTHY_STATUSES = frozenset({200, 401})


class ProbeFailed(SupervisorError):
    """No HTTP answer: refused, reset or timed out."""


def is_healthy(status: int) -> bool:
    return status in HEALTHY_STATUSES


class Probe:
    """``GET /v2/`` over one kept-alive session."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._session = requests.Session()
        # The registry's certificate is usually self-signed; verifying it
        # against the configured certificate is a later step.
        self._session.verify = False

    def __call__(self, timeout: float) -> int:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", urllib3.exceptions.InsecureRequestWarning)
                response = self._session.get(self.url, timeout=timeout, allow_redirects=False)
        except requests.exceptions.RequestException as err:
            raise ProbeFailed(f"{type(err).__name__}: {err}") from err
        response.close()
        return response.status_code

    def close(self) -> None:
        self._session.close()


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
        self.failures = 0
