"""The distribution API calls of the push canary (requests): returns, or raises.

Two rounds, as supervisor/canary.py explains: ``commit`` (upload a blob, commit it by its
digest, read it back) and ``session`` (write a blob into an upload session, read back its
size, cancel it). Each raises PushFailed when the registry answered and the write did not
work, CanaryUnreachable when it did not answer at all; the loop owns the verdict.
"""

from __future__ import annotations

import contextlib
import shutil
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import requests
import urllib3

from supervisor import canary, credentials_file
from supervisor.adapters.pinned_tls import loopback_session
from supervisor.canary import failure
from supervisor.credentials_file import Credentials
from supervisor.errors import SupervisorError
from supervisor.layout import RegistryVersion
from supervisor.settings import Settings

_BLOB_TYPE = {"Content-Type": "application/octet-stream"}
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


class CanaryUnreachable(SupervisorError):
    """No connection (refused, reset): the registry is down, the probe's business."""


class PushFailed(SupervisorError):
    """The registry answered, and the write did not work: ``reason`` says where and how
    (``HTTP 500 on PUT blob``); ``status`` is the HTTP status, if one was wrong."""

    def __init__(self, reason: str, status: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


class PushTimedOut(PushFailed):
    """A request of the round timed out: storage that hangs on writes, or a hung registry
    (the probe's): the loop tells them apart by asking again."""


class RegistryApi:
    """Blob uploads to the registry's published port, over one kept-alive session."""

    def __init__(
        self, url: str, certificate: Path | None = None, credentials: Credentials | None = None
    ) -> None:
        scheme, netloc, *_ = urlsplit(url)
        self.origin = urlunsplit((scheme, netloc, "", "", ""))
        self._session, self._unpinned = loopback_session(certificate)
        if credentials is not None:
            self._session.auth = (credentials.user, credentials.password)
        # The upload id of the last session round (2.x leaves its directory behind).
        self.upload_id: str | None = None

    def commit(self, repository: str, blob: bytes, digest: str, timeout: float) -> None:
        """POST an upload, PUT the blob by its digest, GET it back and compare the bytes."""
        with self._round():
            self._commit(repository, blob, digest, timeout)

    def session(self, repository: str, blob: bytes, timeout: float) -> None:
        """POST an upload, PATCH the blob into it, GET its status (the stored size) and
        DELETE it; a round that fails after the POST still tries the DELETE."""
        with self._round():
            self._session_round(repository, blob, timeout)

    @contextlib.contextmanager
    def _round(self) -> Iterator[None]:
        """Rounds are minutes apart: no connection is kept open between them (nor left to
        a registry that restarts meanwhile)."""
        try:
            yield
        finally:
            self._session.close()  # the pools go; the session makes new ones next round

    def _commit(self, repository: str, blob: bytes, digest: str, timeout: float) -> None:
        location = self._start(repository, timeout)
        put = self._request(
            "PUT blob",
            "PUT",
            location,
            {201},
            timeout,
            params={"digest": digest},
            data=blob,
            headers=_BLOB_TYPE,
        )
        stored = put.headers.get("Docker-Content-Digest")
        if stored is not None and stored != digest:
            raise PushFailed(failure("PUT blob", None, "digest mismatch"))
        url = f"{self.origin}/v2/{repository}/blobs/{digest}"
        got = self._request("GET blob", "GET", url, {200} | _REDIRECTS, timeout)
        # A redirect: the registry found the blob and sends clients to its storage
        # (s3 and the like), which this host may not reach; that much is proven.
        if got.status_code == 200 and got.content != blob:
            raise PushFailed(failure("GET blob", None, "content mismatch"))

    def _session_round(self, repository: str, blob: bytes, timeout: float) -> None:
        self.upload_id = None
        location = self._start(repository, timeout)
        try:
            patched = self._request(
                "PATCH upload", "PATCH", location, {202}, timeout, data=blob, headers=_BLOB_TYPE
            )
            # Each answer carries the upload's new state: the next request must use it.
            location = self._rebased(patched.headers.get("Location"), "PATCH upload")
            status = self._request("GET upload", "GET", location, {204}, timeout)
            if status.headers.get("Range") != f"0-{len(blob) - 1}":
                raise PushFailed(failure("GET upload", None, "size mismatch"))
            self._request("DELETE upload", "DELETE", location, {204}, timeout)
        except PushFailed:
            self._cancel_quietly(location, timeout)
            raise

    def _start(self, repository: str, timeout: float) -> str:
        url = f"{self.origin}/v2/{repository}/blobs/uploads/"
        started = self._request("POST upload", "POST", url, {202}, timeout)
        self.upload_id = started.headers.get("Docker-Upload-UUID")
        return self._rebased(started.headers.get("Location"), "POST upload")

    def _rebased(self, location: str | None, step: str) -> str:
        """The upload's URL on our own port: the registry builds it from the request's
        Host, or from REGISTRY_HTTP_HOST (a public name this host may not reach)."""
        if not location:
            raise PushFailed(failure(step, None, "no Location"))
        _, _, path, query, _ = urlsplit(location)
        return f"{self.origin}{path}" + (f"?{query}" if query else "")

    def _cancel_quietly(self, location: str, timeout: float) -> None:
        # A session left open has its `startedat`: the registry's upload purger removes it.
        with contextlib.suppress(PushFailed, CanaryUnreachable):
            self._request("DELETE upload", "DELETE", location, {204}, timeout)

    def _request(
        self,
        step: str,
        method: str,
        url: str,
        expected: set[int] | frozenset[int],
        timeout: float,
        **kwargs: object,
    ) -> requests.Response:
        if self._unpinned is not None:
            raise CanaryUnreachable(self._unpinned)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", urllib3.exceptions.InsecureRequestWarning)
                response = self._session.request(
                    method,
                    url,
                    timeout=timeout,
                    allow_redirects=False,
                    **kwargs,  # type: ignore[arg-type]
                )
        except requests.exceptions.Timeout:
            raise PushTimedOut(f"timeout on {step}") from None
        except requests.exceptions.RequestException as err:
            raise CanaryUnreachable(f"{type(err).__name__} on {step}") from None
        if response.status_code not in expected:
            raise PushFailed(failure(step, response.status_code), response.status_code)
        return response

    def refuses_writes(self, repository: str, timeout: float) -> str | None:
        """Whether the registry refuses to start an upload, as in read-only mode: None
        when it answers 405, else what it did instead (an upload it started is
        cancelled at once). CanaryUnreachable when it does not answer."""
        with self._round():
            url = f"{self.origin}/v2/{repository}/blobs/uploads/"
            try:
                started = self._request("POST upload", "POST", url, {405, 202}, timeout)
            except PushFailed as err:
                return str(err)
            if started.status_code == 405:
                return None
            with contextlib.suppress(PushFailed):
                self._cancel_quietly(
                    self._rebased(started.headers.get("Location"), "POST"), timeout
                )
            return "it accepts uploads (HTTP 202 on POST upload)"

    def close(self) -> None:
        """Close the HTTP session and its connection."""
        self._session.close()


# Where 2.x keeps the upload sessions of the canary's repository, under MY_REG_DIR.
CANARY_UPLOADS = Path("docker/registry/v2/repositories", canary.REPOSITORY, "_uploads")


def remove_cancelled_session(data_dir: Path, upload_id: str | None) -> str | None:
    """2.x leaves a cancelled upload's directory (its hash state, no ``startedat``),
    which its upload purger never removes: remove that one directory, the canary's own,
    from MY_REG_DIR (nothing else is ever removed). One with ``startedat`` was not
    cancelled: the purger's. Why it could not be removed, or None."""
    if upload_id is None or not canary.UPLOAD_ID.fullmatch(upload_id):
        return None
    left = data_dir / CANARY_UPLOADS / upload_id
    try:
        if left.is_symlink() or not left.is_dir() or (left / "startedat").exists():
            return None
        shutil.rmtree(left)
    except OSError as err:
        return f"{left}: {err.strerror}"
    return None


def _canary_api(
    settings: Settings,
    api_factory: Callable[[str, Path | None, Credentials | None], RegistryApi],
) -> RegistryApi | str:
    """The registry's API as the canary's user (MY_REG_CANARY_CREDENTIALS, if set), or
    the one phrase saying why its credentials cannot be read."""
    try:
        credentials = (
            None
            if settings.canary_credentials is None
            else credentials_file.read(settings.canary_credentials)
        )
    except credentials_file.CredentialsError as err:
        return f"MY_REG_CANARY_CREDENTIALS: {err}"
    return api_factory(settings.probe_url, settings.tls_certificate, credentials)


def writes_refused(
    settings: Settings,
    timeout: float,
    api_factory: Callable[[str, Path | None, Credentials | None], RegistryApi] | None = None,
) -> str | None:
    """Whether this member's registry refuses writes (read-only): None when it does, else
    the one phrase saying what it did instead. Under auth, as the canary's user."""
    api = _canary_api(settings, api_factory or RegistryApi)
    if isinstance(api, str):
        return api
    try:
        return api.refuses_writes(canary.REPOSITORY, timeout)
    except CanaryUnreachable as err:
        return str(err)
    finally:
        api.close()


def canary_round(settings: Settings, version: RegistryVersion | None, timeout: float) -> str | None:
    """One canary round, as a gate check runs it: None when pushes work (or the canary is
    off: nothing to check), else the one phrase saying why they do not."""
    if canary.off_reason(settings) is not None:
        return None
    api = _canary_api(settings, RegistryApi)
    if isinstance(api, str):
        return api
    try:
        if canary.mode_for(version) is canary.Mode.COMMIT:
            api.commit(canary.REPOSITORY, canary.BLOB, canary.DIGEST, timeout)
        else:
            api.session(canary.REPOSITORY, canary.BLOB, timeout)
    except (PushFailed, CanaryUnreachable) as err:
        return str(err)
    finally:
        remove_cancelled_session(settings.dir, api.upload_id)
        api.close()
    return None
