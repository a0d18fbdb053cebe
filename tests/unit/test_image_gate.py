"""The image gate: the pure parts of the manifest check and of `update`, and the reader
against a real loopback HTTP server speaking the distribution API's reads."""

from __future__ import annotations

import http.server
import json
from typing import ClassVar

from support.http import serving

from supervisor.adapters.manifests import (
    MANIFEST_ACCEPT,
    Baseline,
    GateCheck,
    ManifestRef,
    RegistryReader,
    digest_of,
    first_failure,
    first_tag,
    gate_checks,
    repositories,
)
from supervisor.ops.update import describe_baseline, gate_deadline

DIGEST = "sha256:" + "ab" * 32


def test_repositories_are_sorted_names_of_the_catalog() -> None:
    """The catalog's repository names, sorted; anything else in the list is ignored."""
    assert ["a/x", "b"] == repositories({"repositories": ["b", "a/x", 3, ""]})


def test_repositories_of_a_malformed_catalog_are_none() -> None:
    """A catalog without a list of repositories names none."""
    assert [] == repositories({"repositories": None}) == repositories([])


def test_first_tag_is_the_first_sorted() -> None:
    """The first tag in sorted order is the one remembered."""
    assert "1.0" == first_tag({"name": "x", "tags": ["latest", "1.0"]})


def test_first_tag_of_a_repository_whose_tags_were_deleted_is_none() -> None:
    """`tags: null` (every tag deleted) has no tag to remember."""
    assert first_tag({"name": "x", "tags": None}) is None


def test_digest_of_reads_the_content_digest_header() -> None:
    """The digest is the registry's Docker-Content-Digest header."""
    assert DIGEST == digest_of({"Docker-Content-Digest": DIGEST})
    assert digest_of({"Docker-Content-Digest": "nonsense"}) is None


def test_first_failure_names_the_first_failing_check_and_stops() -> None:
    """Checks run in order; the first failure is reported with its name, later ones not run."""
    ran: list[str] = []

    def check(name: str, why: str | None) -> GateCheck:
        return GateCheck(name, lambda _timeout: ran.append(name) or why)

    checks = [check("a", None), check("b", "broken"), check("c", "never asked")]
    assert ("b: broken", ["a", "b"]) == (first_failure(checks, 1.0), ran)


def test_no_manifest_means_no_manifest_check() -> None:
    """An empty registry (or one under auth without credentials) gates on health alone."""
    reader = RegistryReader("http://127.0.0.1:9/")
    try:
        assert () == gate_checks(reader, Baseline(None, "empty: skipped"))
    finally:
        reader.close()


def test_gate_deadline_is_the_startup_grace_after_the_start() -> None:
    """The new container must pass the gate within MY_REG_STARTUP_GRACE of its start."""
    assert 130.0 == gate_deadline(100.0, 30.0)


def test_describe_baseline_names_the_manifest_or_the_note() -> None:
    """What the manifest check compares is shown as repo:tag at digest, or why skipped."""
    assert f"r:t at {DIGEST}" == describe_baseline(Baseline(ManifestRef("r", "t", DIGEST)))
    assert "empty" == describe_baseline(Baseline(None, "empty"))


class Distribution(http.server.BaseHTTPRequestHandler):
    """One repository `it/app` with tag `v1` at DIGEST; ``served`` says whether its
    manifest is served (by tag and by digest). Records the Accept headers of HEADs."""

    served = True
    catalog: ClassVar[list[str]] = ["it/app"]
    accepts: ClassVar[list[str]] = []

    def _send(self, status: int, body: object | None = None, digest: str | None = None) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        if digest:
            self.send_header("Docker-Content-Digest", digest)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command == "GET":
            self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path.startswith("/v2/_catalog"):
            self._send(200, {"repositories": self.catalog})
        elif self.path == "/v2/it/app/tags/list":
            self._send(200, {"name": "it/app", "tags": ["v1"]})
        else:
            self._send(404, {})

    def do_HEAD(self) -> None:
        self.accepts.append(self.headers.get("Accept", ""))
        known = self.path in ("/v2/it/app/manifests/v1", f"/v2/it/app/manifests/{DIGEST}")
        if known and self.served:
            self._send(200, digest=DIGEST)
        else:
            self._send(404)

    def log_message(self, *args: object) -> None:
        pass


def test_reader_remembers_a_tag_and_checks_it_by_digest() -> None:
    """remember() picks it/app:v1 at its digest, asking with every manifest type; the
    check passes while that digest is served and fails once it is not."""

    class Handler(Distribution):
        served = True

    with serving(Handler) as server:
        reader = RegistryReader(f"http://127.0.0.1:{server.server_port}/")
        try:
            baseline = reader.remember(2.0)
            assert Baseline(ManifestRef("it/app", "v1", DIGEST)) == baseline
            assert first_failure(gate_checks(reader, baseline), 2.0) is None
            Handler.served = False
            why = first_failure(gate_checks(reader, baseline), 2.0)
        finally:
            reader.close()
    assert why is not None and why.startswith("manifest: it/app@sha256:")
    assert "HTTP 404" in why
    assert {MANIFEST_ACCEPT} == set(Handler.accepts)


def test_reader_of_an_empty_registry_skips_with_a_note() -> None:
    """An empty catalog leaves nothing to compare: skipped, and the note says so."""

    class Empty(Distribution):
        catalog: ClassVar[list[str]] = []

    with serving(Empty) as server:
        reader = RegistryReader(f"http://127.0.0.1:{server.server_port}/")
        try:
            baseline = reader.remember(2.0)
        finally:
            reader.close()
    assert baseline.manifest is None
    assert baseline.note is not None and "no tagged manifest" in baseline.note


def test_reader_under_auth_without_credentials_skips_without_asking() -> None:
    """Under authentication, without the canary's credentials, the check is skipped."""
    reader = RegistryReader("http://127.0.0.1:9/", auth_on=True)
    try:
        baseline = reader.remember(0.5)
    finally:
        reader.close()
    assert baseline.manifest is None
    assert baseline.note is not None and "credentials" in baseline.note


def test_reader_of_a_registry_that_does_not_answer_skips_with_a_note() -> None:
    """Nothing listening: no baseline, a note, never an exception."""
    reader = RegistryReader("http://127.0.0.1:9/")
    try:
        baseline = reader.remember(0.5)
    finally:
        reader.close()
    assert baseline.manifest is None
    assert baseline.note is not None and "skipped" in baseline.note
