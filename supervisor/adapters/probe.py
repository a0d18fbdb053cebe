"""The HTTP probe of the registry's ``/v2/`` (requests): an answer, or ProbeFailed.

The caller owns the verdict (supervisor/health.py). What went wrong is one short phrase
(``connection refused``, ``timed out after 1s``, ``TLS handshake failed: ...``), never the
text of requests' exception chain, and a class the loop acts on.
"""

from __future__ import annotations

import hashlib
import http.client
import ssl
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import requests
import requests.adapters
import urllib3

from supervisor import tls
from supervisor.adapters.pinned_tls import PinnedAdapter
from supervisor.errors import SupervisorError
from supervisor.health import FailureClass, registry_error

# Enough for any registry error body; a larger one is cut (it is only shown).
BODY_MAX = 4096


class ProbeFailed(SupervisorError):
    """No HTTP answer: refused, reset, timed out, or the TLS handshake failed.

    ``str()`` is one short phrase. For a TLS failure, ``served`` is the SHA-256 of the
    certificate the server presented (hex), when an unverified handshake could get one.
    """

    def __init__(
        self, phrase: str, failure: FailureClass = FailureClass.RESET, served: str | None = None
    ) -> None:
        super().__init__(phrase)
        self.failure = failure
        self.served = served


@dataclass(frozen=True)
class ProbeResponse:
    """An HTTP answer: its status and, for an error, the registry's own words
    (``UNAVAILABLE: health check failed: ...``) from its JSON error body."""

    status: int
    error: str | None = None


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
        self._session = requests.Session()
        # The environment must not steer a loopback probe: HTTPS_PROXY would send it
        # elsewhere, and REQUESTS_CA_BUNDLE silently overrides `verify` below.
        self._session.trust_env = False
        self._unpinned: str | None = None
        self.pinned: str | None = None  # the SHA-256 the server's certificate must have
        # Without a pin there is no TLS to verify (http), or nothing to verify it against.
        self._session.verify = False
        if certificate is not None:
            try:
                self.pinned = tls.load_certificate(certificate).sha256
            except ValueError as err:
                self._unpinned = f"TLS certificate cannot be pinned: {err}"
            else:
                self._session.mount("https://", PinnedAdapter(self.pinned))

    def __call__(self, timeout: float) -> int:
        """The status code of ``GET /v2/``; ProbeFailed without an answer."""
        return self.ask(timeout).status

    def ask(self, timeout: float) -> ProbeResponse:
        """``GET /v2/`` once, ``timeout`` for connect and for read; ProbeFailed without
        an answer."""
        if self._unpinned is not None:
            raise ProbeFailed(f"TLS handshake failed: {self._unpinned}", FailureClass.TLS)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", urllib3.exceptions.InsecureRequestWarning)
                response = self._session.get(self.url, timeout=timeout, allow_redirects=False)
        except requests.exceptions.RequestException as err:
            raise self._failed(err, timeout) from err
        error = None if response.ok else registry_error(response.content[:BODY_MAX])
        response.close()
        return ProbeResponse(response.status_code, error)

    def _failed(  # noqa: PLR0911 (one return per class of failure)
        self, err: requests.exceptions.RequestException, timeout: float
    ) -> ProbeFailed:
        # A stalled TLS handshake is a read timeout too (urllib3 2): a hang, not TLS.
        if isinstance(err, requests.exceptions.Timeout):
            return ProbeFailed(f"timed out after {timeout:g}s", FailureClass.TIMEOUT)
        if isinstance(err, requests.exceptions.SSLError):
            reason = _tls_reason(err)
            return ProbeFailed(
                f"TLS handshake failed: {reason}", FailureClass.TLS, self._served(timeout)
            )
        causes = list(_causes(err))
        if any(isinstance(c, ConnectionRefusedError) for c in causes):
            return ProbeFailed("connection refused", FailureClass.REFUSED)
        if any(isinstance(c, http.client.RemoteDisconnected) for c in causes):
            return ProbeFailed("connection closed without an answer", FailureClass.RESET)
        if any(isinstance(c, ConnectionResetError) for c in causes):
            return ProbeFailed("connection reset", FailureClass.RESET)
        if any(isinstance(c, ConnectionError | urllib3.exceptions.ProtocolError) for c in causes):
            return ProbeFailed("connection closed without an answer", FailureClass.RESET)
        return ProbeFailed(f"no answer ({type(err).__name__})", FailureClass.RESET)

    def _served(self, timeout: float) -> str | None:
        """The SHA-256 of the certificate the server presents, by a handshake that
        verifies nothing; None if there is none to get."""
        parts = urlsplit(self.url)
        try:
            pem = ssl.get_server_certificate(
                (parts.hostname or "127.0.0.1", parts.port or 443), timeout=timeout
            )
        except (OSError, ValueError):
            return None
        return hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest()

    def close(self) -> None:
        """Close the probe's HTTP session and its connection."""
        self._session.close()


def _causes(err: BaseException) -> Iterator[BaseException]:
    """``err`` and what it wraps: requests and urllib3 chain their errors by argument
    (MaxRetryError.reason), by ``raise from`` and by context."""
    seen: set[int] = set()
    todo: list[BaseException] = [err]
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        nested = [current.__cause__, current.__context__, getattr(current, "reason", None)]
        nested += [arg for arg in current.args if isinstance(arg, BaseException)]
        todo += [n for n in nested if isinstance(n, BaseException)]


def _tls_reason(err: BaseException) -> str:
    """A few words for a failed handshake: OpenSSL's reason, or urllib3's pin check."""
    for cause in _causes(err):
        if isinstance(cause, ssl.SSLError) and cause.reason:
            return str(cause.reason).lower().replace("_", " ")
        text = str(cause)
        if "Fingerprints did not match" in text:
            return "certificate is not the pinned one"
    return "handshake error"
