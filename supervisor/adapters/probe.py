"""The HTTP probe of the registry's ``/v2/`` (requests): a status code, or ProbeFailed.

The caller owns the verdict (supervisor/health.py).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import requests
import urllib3

from supervisor.adapters.pinned_tls import loopback_session
from supervisor.errors import SupervisorError


class ProbeFailed(SupervisorError):
    """No HTTP answer: refused, reset or timed out."""


class Probe:
    """``GET /v2/`` over one kept-alive session.

    With ``certificate`` (TLS on) the server must present exactly that certificate,
    pinned by its SHA-256 fingerprint, rather than one a CA signed for the host name
    asked: the probe asks 127.0.0.1, a name real certificates rarely carry, and a
    self-signed certificate has no CA. Dates are not checked here: an expiring
    certificate is reported (log, `check`, STATUS), never a reason to restart.
    """

    def __init__(self, url: str, certificate: Path | None = None) -> None:
        self.url = url
        self._session, self._unpinned = loopback_session(certificate)

    def __call__(self, timeout: float) -> int:
        if self._unpinned is not None:
            raise ProbeFailed(self._unpinned)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", urllib3.exceptions.InsecureRequestWarning)
                response = self._session.get(self.url, timeout=timeout, allow_redirects=False)
        except requests.exceptions.RequestException as err:
            raise ProbeFailed(f"{type(err).__name__}: {err}") from err
        response.close()
        return response.status_code

    def close(self) -> None:
        """Close the probe's HTTP session and its connection."""
        self._session.close()
