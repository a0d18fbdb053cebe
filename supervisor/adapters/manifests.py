"""The image gate's checks through the distribution API: a new registry image is kept only
when it serves what the old one served.

Before a new image replaces the registry, ``RegistryReader.remember`` picks one tag of one
repository (``GET /v2/_catalog``, ``GET /v2/<repo>/tags/list``) and notes its manifest
digest (``HEAD /v2/<repo>/manifests/<tag>``). Once the new container answers ``/v2/``,
``gate_checks`` lists what it must still pass, in order; ``first_failure`` runs them.
The checks only report (None: passed; else one phrase saying why not): `update` and the
loop decide what a failure means (a rollback).

An empty registry has nothing to check (skipped, with a note). Under authentication the
reader needs credentials (those the push canary uses, once it lands: ``credentials``);
without them the manifest check is skipped, with a note, never failed.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
import requests.adapters
import urllib3

from supervisor.adapters.pinned_tls import loopback_session

# Every manifest format a registry may hold under a tag: OCI and Docker v2, single images
# and indexes (lists). Without them a registry converts or refuses (schema1 fallback).
MANIFEST_ACCEPT = ", ".join(
    (
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    )
)
DIGEST_HEADER = "Docker-Content-Digest"
# The catalog is paginated; one page is plenty to find one repository with a tag.
CATALOG_PAGE = 100


class ReaderFailed(Exception):
    """The registry did not answer a read as the distribution API says it should."""


@dataclass(frozen=True)
class ManifestRef:
    """One manifest that was pullable before the change: ``repository:tag`` at ``digest``."""

    repository: str
    tag: str
    digest: str


@dataclass(frozen=True)
class Baseline:
    """What the old image served, to compare with: a manifest, or why there is none."""

    manifest: ManifestRef | None
    note: str | None = None  # why the manifest check is skipped


@dataclass(frozen=True)
class GateCheck:
    """One check a new image must pass once ``/v2/`` answers: ``run(timeout)`` gives None
    when it passed, else one phrase saying why not."""

    name: str
    run: Callable[[float], str | None]


# -- pure ----------------------------------------------------------------------------------


def repositories(body: Any) -> list[str]:
    """The repository names of a ``/v2/_catalog`` answer, sorted (pure)."""
    names = body.get("repositories") if isinstance(body, Mapping) else None
    if not isinstance(names, list):
        return []
    return sorted(name for name in names if isinstance(name, str) and name)


def first_tag(body: Any) -> str | None:
    """The first tag, sorted, of a ``/v2/<repo>/tags/list`` answer (``tags`` may be null
    once every tag of the repository was deleted) (pure)."""
    tags = body.get("tags") if isinstance(body, Mapping) else None
    if not isinstance(tags, list):
        return None
    names = sorted(tag for tag in tags if isinstance(tag, str) and tag)
    return names[0] if names else None


def digest_of(headers: Mapping[str, str]) -> str | None:
    """The manifest digest a registry names in its answer, if it is one (pure)."""
    digest = headers.get(DIGEST_HEADER, "").strip()
    algorithm, _, hexdigest = digest.partition(":")
    return digest if algorithm and hexdigest else None


def first_failure(checks: Iterable[GateCheck], timeout: float) -> str | None:
    """Run ``checks`` in order; the first failure as ``name: why``, or None when all pass."""
    for check in checks:
        why = check.run(timeout)
        if why is not None:
            return f"{check.name}: {why}"
    return None


# -- I/O -----------------------------------------------------------------------------------


class RegistryReader:
    """Reads of the distribution API at ``base_url`` (``http://127.0.0.1:5001/``), as the
    probe asks: loopback, no proxy from the environment, TLS pinned to ``certificate``."""

    def __init__(
        self,
        base_url: str,
        certificate: Path | None = None,
        *,
        auth_on: bool = False,
        credentials: tuple[str, str] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/") + "/"
        self.auth_on = auth_on
        # A certificate that cannot be pinned: every read fails, saying why (an HTTPS
        # answer is never trusted unpinned).
        self._session, self._unpinned = loopback_session(certificate)
        if credentials is not None:
            self._session.auth = credentials
        self._credentials = credentials

    @classmethod
    def for_probe_url(
        cls,
        probe_url: str,
        certificate: Path | None,
        *,
        auth_on: bool,
        credentials: tuple[str, str] | None = None,
    ) -> RegistryReader:
        """The reader of the registry the probe asks (``probe_url`` ends in ``/v2/``)."""
        return cls(
            probe_url.removesuffix("v2/"), certificate, auth_on=auth_on, credentials=credentials
        )

    def _request(self, method: str, path: str, timeout: float, **kwargs: Any) -> requests.Response:
        if self._unpinned is not None:
            raise ReaderFailed(self._unpinned)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", urllib3.exceptions.InsecureRequestWarning)
                response = self._session.request(
                    method, self.base_url + path, timeout=timeout, allow_redirects=False, **kwargs
                )
        except requests.exceptions.RequestException as err:
            raise ReaderFailed(f"{method} /{path}: {type(err).__name__}") from err
        response.close()
        return response

    def _json(self, path: str, timeout: float) -> Any:
        response = self._request("GET", path, timeout)
        if response.status_code != 200:
            raise ReaderFailed(f"GET /{path}: HTTP {response.status_code}")
        try:
            return response.json()
        except ValueError as err:
            raise ReaderFailed(f"GET /{path}: not JSON") from err

    def remember(self, timeout: float) -> Baseline:
        """One manifest the registry serves now, to look for after the change; or a note
        saying why there is none to check (empty, no credentials under auth, no catalog).
        Never raises: a registry that cannot say is not a reason to refuse an update."""
        if self.auth_on and self._credentials is None:
            return Baseline(
                None,
                "authentication is on and the manifest check has no credentials "
                "(the push canary's, once configured): skipped",
            )
        try:
            catalog = self._request("GET", f"v2/_catalog?n={CATALOG_PAGE}", timeout)
            if catalog.status_code == 401:
                return Baseline(None, "the registry asks for credentials: skipped")
            if catalog.status_code != 200:
                return Baseline(None, f"the catalog answered HTTP {catalog.status_code}: skipped")
            for repository in repositories(catalog.json()):
                tag = first_tag(self._json(f"v2/{repository}/tags/list", timeout))
                if tag is None:
                    continue
                digest = self.manifest_digest(repository, tag, timeout)
                if digest is not None:
                    return Baseline(ManifestRef(repository, tag, digest))
        except (ReaderFailed, ValueError) as err:
            return Baseline(None, f"could not list a manifest ({err}): skipped")
        return Baseline(None, "the registry holds no tagged manifest yet: skipped")

    def manifest_digest(self, repository: str, reference: str, timeout: float) -> str | None:
        """``HEAD /v2/<repository>/manifests/<reference>``: the digest when it answers 200,
        else None. ReaderFailed when nothing answers."""
        response = self._request(
            "HEAD",
            f"v2/{repository}/manifests/{reference}",
            timeout,
            headers={"Accept": MANIFEST_ACCEPT},
        )
        if response.status_code != 200:
            return None
        return digest_of(response.headers) or reference

    def still_pullable(self, manifest: ManifestRef, timeout: float) -> str | None:
        """The gate's manifest check: the remembered manifest is served by digest."""
        try:
            response = self._request(
                "HEAD",
                f"v2/{manifest.repository}/manifests/{manifest.digest}",
                timeout,
                headers={"Accept": MANIFEST_ACCEPT},
            )
        except ReaderFailed as err:
            return f"{manifest.repository}@{manifest.digest}: {err}"
        if response.status_code != 200:
            return (
                f"{manifest.repository}@{manifest.digest} (was {manifest.repository}:"
                f"{manifest.tag}) answered HTTP {response.status_code}"
            )
        return None

    def close(self) -> None:
        """Close the session and its connection."""
        self._session.close()


def gate_checks(
    reader: RegistryReader,
    baseline: Baseline,
    canary_round: Callable[[float], str | None] | None = None,
) -> tuple[GateCheck, ...]:
    """What a new image must pass once its ``/v2/`` answers, in order (the health check
    itself comes first, in the caller's wait): the remembered manifest is still pullable,
    then one push canary round (supervisor/adapters/registry_api.py ``canary_round``; it
    passes while the canary is off). `update` and the loop's reload gate both take their
    checks from this one function.
    """
    checks: list[GateCheck] = []
    manifest = baseline.manifest
    if manifest is not None:
        checks.append(
            GateCheck("manifest", lambda timeout: reader.still_pullable(manifest, timeout))
        )
    if canary_round is not None:
        checks.append(GateCheck("canary", canary_round))
    return tuple(checks)
