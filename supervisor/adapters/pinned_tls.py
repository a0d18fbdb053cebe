"""One requests session for the registry's own port, shared by the probe and the canary.

With a certificate (TLS on) the server must present exactly that certificate, pinned by
its SHA-256 fingerprint, rather than one a CA signed for the host name asked: we ask
127.0.0.1, a name real certificates rarely carry, and a self-signed certificate has no CA.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import requests
import requests.adapters

from supervisor import tls


class PinnedAdapter(requests.adapters.HTTPAdapter):
    """HTTPS that trusts exactly one certificate, by its SHA-256 fingerprint."""

    def __init__(self, fingerprint: str) -> None:
        self._fingerprint = fingerprint
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        """urllib3's pools check the server's certificate against the fingerprint."""
        kwargs["assert_fingerprint"] = self._fingerprint
        super().init_poolmanager(*args, **kwargs)


def loopback_session(certificate: Path | None) -> tuple[requests.Session, str | None]:
    """A session for the registry's published port, and why it could not pin
    ``certificate`` (None: pinned, or no TLS)."""
    session = requests.Session()
    # The environment must not steer a loopback request: HTTPS_PROXY would send it
    # elsewhere, and REQUESTS_CA_BUNDLE silently overrides `verify` below.
    session.trust_env = False
    # Without a pin there is no TLS to verify (http), or nothing to verify it against.
    session.verify = False
    if certificate is None:
        return session, None
    try:
        fingerprint = tls.load_certificate(certificate).sha256
    except ValueError as err:
        return session, f"cannot pin the TLS certificate: {err}"
    session.mount("https://", PinnedAdapter(fingerprint))
    return session, None
