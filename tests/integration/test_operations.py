"""Operations beyond restart, against a real engine: status at a glance, the disk guard,
and garbage collection that the running supervisor does not mistake for faults."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest
import requests
from support.process import EX_OK

from supervisor.engine.client import Engine
from supervisor.ops.gc import estimate_reclaimable
from supervisor.settings import load_settings

pytestmark = pytest.mark.integration

MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
STATE_TIMEOUT = 20.0


def status_json(deployment):
    done = deployment.cli("status", "--json", "--env-file", str(deployment.env_file))
    return done.returncode, json.loads(done.stdout)


def wait_for_status(deployment, predicate, what, timeout=STATE_TIMEOUT):
    """Poll `status --json` until predicate(report) holds; fail saying what was awaited."""
    deadline = time.monotonic() + timeout
    while True:
        code, report = status_json(deployment)
        if predicate(report):
            return code, report
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}; last: {report}")
        time.sleep(0.25)


def blob_file(deployment, digest):
    algorithm, hexdigest = digest.split(":")
    return (
        deployment.data_dir
        / "docker/registry/v2/blobs"
        / algorithm
        / hexdigest[:2]
        / hexdigest
        / "data"
    )


def delete_manifest(deployment, image):
    """Delete an image's manifest through the registry API; the digests of its blobs."""
    url = f"http://127.0.0.1:{deployment.port}/v2/{image.repository}/manifests/{image.tag}"
    answer = requests.get(url, headers={"Accept": MANIFEST_V2}, timeout=10)
    assert 200 == answer.status_code, answer.text
    manifest = answer.json()
    digest = answer.headers["Docker-Content-Digest"]
    blobs = [manifest["config"]["digest"], *(layer["digest"] for layer in manifest["layers"])]
    deleted = requests.delete(url.rsplit("/", 1)[0] + f"/{digest}", timeout=10)
    assert 202 == deleted.status_code, deleted.text
    return blobs


def test_status_shows_restarts_by_reason_disk_and_the_disk_guard(deployment, tmp_path):
    """After a crash, `status --json` shows restarts by reason, uptime, image id and the data
    dir; a threshold above the free space warns once in the log and marks the disk low."""
    deployment.write_env(MY_REG_STATE_DIR=str(tmp_path / "state"), MY_REG_MIN_FREE="100")
    sup = deployment.start()
    since = sup.mark()

    os.kill(deployment.running().pid, signal.SIGKILL)
    sup.wait_for_event("registry.healthy", since=since)
    code, report = wait_for_status(
        deployment, lambda r: r["restarts"] == {"crashed": 1}, "restarts {'crashed': 1}"
    )

    assert 0 == code
    assert ("healthy", "crashed") == (report["health"], report["last_reason"])
    assert report["container"]["name"] == deployment.name  # the keys test_cli checks stay
    assert report["image_id"].startswith("sha256:")
    assert report["uptime_s"] is not None
    assert report["supervisor"]["running"] is True
    data = report["data_dir"]
    assert (str(deployment.data_dir), True) == (data["path"], data["low"])
    assert data["free_bytes"] > 0
    assert report["certificate"] is None
    assert report["last_gc"] is None
    assert 1 == len(sup.find("disk.low"))
    human = deployment.cli("status", "--env-file", str(deployment.env_file)).stdout
    assert "restarts:  1 (crashed 1); last: crashed" in human
    assert "LOW (MY_REG_MIN_FREE=100%)" in human


@pytest.mark.both_layouts
def test_gc_frees_deleted_blobs_keeps_other_images_and_counts_no_restart(deployment, tmp_path):
    """gc with the supervisor running: the deleted image's blobs are gone, the other image
    still pulls, bytes freed are reported and recorded, and no restart is counted: its mode
    switches are planned replacements."""
    deployment.write_env(
        MY_REG_STATE_DIR=str(tmp_path / "state"), REGISTRY_STORAGE_DELETE_ENABLED="true"
    )
    sup = deployment.start()
    doomed, kept = deployment.push_image(), deployment.push_image()
    doomed_blobs = delete_manifest(deployment, doomed)
    assert all(blob_file(deployment, blob).exists() for blob in doomed_blobs)
    since = sup.mark()

    done = deployment.cli("gc", "--json", "--env-file", str(deployment.env_file))

    assert EX_OK == done.returncode, done.stderr
    result = json.loads(done.stdout)
    assert result["freed_bytes"] > 0
    assert ("ok", False) == (result["outcome"], result["dry_run"])
    assert result["blobs_eligible"] >= len(doomed_blobs)
    assert [] == [blob for blob in doomed_blobs if blob_file(deployment, blob).exists()]
    sup.wait_for_event("maintenance.ended", since=since)
    sup.wait_for_event("registry.healthy", since=since)
    assert [] == sup.find("container.restarting", since=since)
    assert [] == sup.find("probe.failed", since=since)
    container = deployment.running()
    assert "REGISTRY_STORAGE_MAINTENANCE_READONLY" not in json.dumps(
        deployment.client.api.inspect_container(container.id)["Config"]["Env"]
    )
    deployment.assert_pullable(kept)
    _code, report = wait_for_status(
        deployment, lambda r: r["last_gc"] is not None, "last gc in status"
    )
    assert result["freed_bytes"] == report["last_gc"]["freed_bytes"]
    assert {} == report["restarts"]
    # Its two recreations (read-only, normal) are planned replacements, counted by gc.
    assert (2, 2) == (result["mode_switches"], result["mode_switches_total"])
    assert {"gc-mode-switch": 2} == report["planned"]


@pytest.mark.both_layouts
def test_gc_dry_run_deletes_nothing(deployment, tmp_path):
    """--dry-run reports what is eligible and leaves every file in place."""
    deployment.write_env(
        MY_REG_STATE_DIR=str(tmp_path / "state"), REGISTRY_STORAGE_DELETE_ENABLED="true"
    )
    sup = deployment.start()
    doomed = deployment.push_image()
    delete_manifest(deployment, doomed)
    before = deployment.data_snapshot()
    container = deployment.running()
    since = sup.mark()

    done = deployment.cli("gc", "--dry-run", "--env-file", str(deployment.env_file))

    assert EX_OK == done.returncode, done.stderr
    assert "dry run: nothing deleted; a real run would free about" in done.stdout
    assert "unknown" not in done.stdout
    assert "normal mode" not in done.stdout  # it never left it
    assert before == deployment.data_snapshot()
    assert container.id == deployment.running().id  # not restarted for a dry run
    # No maintenance lock: the supervisor kept repairing throughout.
    assert [] == sup.find("maintenance.started", since=since)


def test_low_disk_says_how_much_gc_would_free(deployment, tmp_path):
    """Below MY_REG_MIN_FREE the supervisor runs the collector's dry run beside the loop and
    logs what gc would free; the dry run deletes nothing."""
    deployment.write_env(
        MY_REG_STATE_DIR=str(tmp_path / "state"),
        MY_REG_MIN_FREE="100",
        REGISTRY_STORAGE_DELETE_ENABLED="true",
    )
    sup = deployment.start()
    estimate = sup.wait_for_event("disk.gc_estimate")
    assert 0 == estimate["gc_would_free_bytes"]  # nothing deleted yet
    doomed = deployment.push_image()
    doomed_blobs = delete_manifest(deployment, doomed)

    engine = Engine()
    try:
        reclaimable = estimate_reclaimable(load_settings(deployment.env_file), engine)
    finally:
        engine.close()

    assert reclaimable is not None and reclaimable > 0
    assert all(blob_file(deployment, blob).exists() for blob in doomed_blobs)
    assert [] == deployment.client.containers.list(
        all=True, filters={"name": f"{deployment.name}-gc"}
    )
