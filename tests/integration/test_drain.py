"""A planned restart (SIGHUP with a changed spec) lets a request in flight finish: the
registry drains (REGISTRY_HTTP_DRAINTIMEOUT, set by default) before `docker stop` ends it."""

from __future__ import annotations

import hashlib
import os
import signal
import threading
import time
from dataclasses import dataclass, field

import pytest
import requests

pytestmark = pytest.mark.integration

# Larger than what the kernel and docker-proxy buffer between the registry and a slow
# reader (about 20 MB measured here), so a registry that dies at SIGTERM cuts it visibly.
BLOB_BYTES = 48 * 1000 * 1000
# The reader's pace: the whole blob takes about 6 s; the SIGHUP comes 1 s in.
READ_RATE = 8 * 1000 * 1000
CHUNK = 64 * 1024
DOWNLOAD_TIMEOUT = 30.0


@dataclass
class Download:
    """A throttled GET of one blob, read from a thread: what arrived, and how it ended."""

    url: str
    started: threading.Event = field(default_factory=threading.Event)
    # Cleared: the reader stops reading (the registry can then send only what the socket
    # buffers take) until it is set again.
    reading: threading.Event = field(default_factory=threading.Event)
    received: int = 0
    digest: str = ""
    error: str | None = None

    def run(self) -> None:
        sha = hashlib.sha256()
        begun = time.monotonic()
        try:
            with requests.get(self.url, stream=True, timeout=10) as answer:
                answer.raise_for_status()
                for chunk in answer.iter_content(CHUNK):
                    self.reading.wait()
                    sha.update(chunk)
                    self.received += len(chunk)
                    self.started.set()
                    ahead = self.received / READ_RATE - (time.monotonic() - begun)
                    if ahead > 0:
                        time.sleep(ahead)
        except requests.RequestException as err:
            self.error = f"{type(err).__name__}: {err}"
        finally:
            self.started.set()
        self.digest = f"sha256:{sha.hexdigest()}"


def push_blob(base: str, repository: str, blob: bytes) -> str:
    """Upload ``blob`` in one PUT; its digest."""
    digest = f"sha256:{hashlib.sha256(blob).hexdigest()}"
    begun = requests.post(f"{base}/v2/{repository}/blobs/uploads/", timeout=10)
    assert 202 == begun.status_code, begun.text
    location = begun.headers["Location"]
    if location.startswith("/"):
        location = base + location
    done = requests.put(
        location,
        params={"digest": digest},
        data=blob,
        headers={"Content-Type": "application/octet-stream"},
        timeout=60,
    )
    assert 201 == done.status_code, done.text
    return digest


def download_across_a_reload(deployment, *, pause_reader: bool = False) -> tuple[Download, str]:
    """Start a throttled blob download, SIGHUP with a changed spec 1 s in, wait for both.
    ``pause_reader``: the reader stops at the SIGHUP and reads on at the old registry's
    SIGTERM (its `kill` event), so the stop comes before it could have sent the rest,
    however long the reload takes to get there; a registry that drains still sends it."""
    sup = deployment.start()
    base = f"http://127.0.0.1:{deployment.port}"
    digest = push_blob(base, f"it/{deployment.name}", os.urandom(BLOB_BYTES))
    download = Download(f"{base}/v2/it/{deployment.name}/blobs/{digest}")
    download.reading.set()
    reader = threading.Thread(target=download.run, daemon=True)
    deployment.write_env(REGISTRY_LOG_FIELDS_RUN="2")
    since = sup.mark()
    reader.start()
    assert download.started.wait(10), "the download did not start"
    time.sleep(1.0)
    if pause_reader:
        download.reading.clear()
        old = deployment.client.containers.get(deployment.name).id
        events = deployment.client.events(decode=True, filters={"container": old, "event": "kill"})

        def read_on_at_sigterm() -> None:
            for _event in events:
                download.reading.set()
                return

        threading.Thread(target=read_on_at_sigterm, daemon=True).start()
    sup.send(signal.SIGHUP)
    sup.wait_for_event("container.restarting", since=since, reason="spec-changed")
    # The replacement begins (the old registry is told to stop) with the blob still coming.
    assert download.received < BLOB_BYTES, "the download ended before the reload began"
    sup.wait_for_event("container.created", since=since)
    if pause_reader:
        assert download.reading.is_set(), "no kill event for the old registry"
        events.close()
    sup.wait_for_event("registry.healthy", since=since)
    reader.join(DOWNLOAD_TIMEOUT)
    assert not reader.is_alive(), f"the download still runs after {DOWNLOAD_TIMEOUT} s"
    return download, digest


def test_a_download_in_flight_survives_a_reload_with_a_changed_spec(deployment):
    """With the default drain (MY_REG_STOP_TIMEOUT=10: 5 s), a blob download that a SIGHUP
    with a changed spec meets completes, with the right bytes."""
    deployment.write_env(MY_REG_STOP_TIMEOUT="10", REGISTRY_LOG_FIELDS_RUN="1")
    download, digest = download_across_a_reload(deployment)
    assert (None, BLOB_BYTES, digest) == (download.error, download.received, download.digest)


def test_without_a_drain_a_reload_cuts_the_download_in_flight(deployment):
    """REGISTRY_HTTP_DRAINTIMEOUT=0 (the registry's own default): the registry installs no
    SIGTERM handler and exits at once, and the download ends short of the blob."""
    deployment.write_env(
        MY_REG_STOP_TIMEOUT="10", REGISTRY_HTTP_DRAINTIMEOUT="0", REGISTRY_LOG_FIELDS_RUN="1"
    )
    download, _ = download_across_a_reload(deployment, pause_reader=True)
    assert download.error is not None
    assert download.received < BLOB_BYTES
