"""`registry-supervisor update` against the real engine, pulling from a real source registry
on loopback: a broken image under the configured tag is rolled back, a working one is kept,
and the running supervisor adopts whatever update leaves."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.docker import DOCKER_CLI_TIMEOUT, docker_cli
from support.net import free_port

# Labels and the image the integration suite uses (tests/integration/conftest.py).
OWNER_LABEL = "registry-supervisor.integration-test"
TEST_IMAGE = "registry:2"
UPDATE_FAILED = 1
UPDATE_TIMEOUT = 120.0


class Source:
    """A second registry on loopback that publishes the image the supervisor runs."""

    def __init__(self, deployment: Any, root: Path) -> None:
        self.deployment = deployment
        self.port = free_port()
        self.name = f"{deployment.name}-src"
        data = root / "source-data"
        data.mkdir()
        docker_cli(
            "run", "-d", "--name", self.name, "--label", f"{OWNER_LABEL}={deployment.name}",
            "-p", f"127.0.0.1:{self.port}:5000", "-v", f"{data}:/var/lib/registry", TEST_IMAGE,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while deployment.v2_status(port=self.port, timeout=0.5) != 200:
            assert time.monotonic() < deadline, f"source registry {self.name} did not answer"
            time.sleep(0.1)
        self.image = f"localhost:{self.port}/mirror/registry"
        self.ref = f"{self.image}:stable"
        self.built: list[str] = []  # image ids we built: removed at the end

    def publish(self, local: str) -> str:
        """Push ``local`` under the source's tag; the local tag is left naming ``local``'s
        id until the next publish (the supervisor's host has the old one). Its id."""
        docker_cli("tag", local, self.ref)
        self.deployment.local_refs.add(self.ref)
        docker_cli("push", self.ref)
        return image_id(self.ref)

    def build(self, dockerfile: str) -> str:
        """Build an image from ``dockerfile`` (FROM the test image, no network); its id."""
        tag = f"rs-it-build-{secrets.token_hex(4)}:latest"
        done = subprocess.run(
            ["docker", "build", "-q", "-t", tag, "-"],
            input=dockerfile,
            capture_output=True,
            text=True,
            timeout=DOCKER_CLI_TIMEOUT,
            check=False,
            env={**os.environ, "DOCKER_BUILDKIT": "0"},
        )
        assert done.returncode == 0, f"docker build failed: {done.stderr}"
        self.deployment.local_refs.add(tag)
        built = image_id(tag)
        self.built.append(built)
        return tag

    def close(self) -> None:
        # A push leaves a digest reference (`<image>@sha256:…`) on the image pushed: the
        # test image's stays behind its tag unless it is removed by that reference.
        digests = docker_cli("image", "inspect", "--format", "{{json .RepoDigests}}", TEST_IMAGE)
        for ref in json.loads(digests) or ():
            if ref.startswith(f"{self.image}@"):
                docker_cli("rmi", ref)
        for built in self.built:
            subprocess.run(
                ["docker", "rmi", "--force", built],
                capture_output=True,
                timeout=DOCKER_CLI_TIMEOUT,
                check=False,
            )


def image_id(ref: str) -> str:
    return docker_cli("image", "inspect", "--format", "{{.Id}}", ref)


def events(stderr: str, name: str) -> list[dict[str, Any]]:
    """The JSON log events called ``name`` in a command's stderr."""
    found = []
    for line in stderr.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("event") == name:
            found.append(record)
    return found


@pytest.fixture
def source(deployment: Any, tmp_path: Path) -> Iterator[Source]:
    world = Source(deployment, tmp_path)
    try:
        yield world
    finally:
        world.close()  # images; the container goes with the deployment (its owner label)


def _supervise_from(deployment: Any, source: Source) -> tuple[Any, str]:
    """Publish the test image at the source, run the supervisor on it; the old image id."""
    old = source.publish(TEST_IMAGE)
    deployment.write_env(MY_REG_IMAGE=source.image, MY_REG_TAG="stable", MY_REG_PULL="missing")
    sup = deployment.start()
    assert old == deployment.client.api.inspect_container(deployment.name)["Image"]
    return sup, old


def _publish_new(source: Source, dockerfile: str) -> str:
    """Publish a new image under the tag, then point the local tag back at the old one (as
    on a host that has not pulled yet). The new image's id."""
    built = source.build(dockerfile)
    new = source.publish(built)
    docker_cli("tag", TEST_IMAGE, source.ref)
    return new


def test_update_rolls_back_a_broken_image_and_keeps_serving(
    deployment: Any, source: Source
) -> None:
    """A new image that never answers /v2/ is rolled back: exit 1, update.rolled_back, the
    tag names the old image again, and the registry serves what it served, unrepaired."""
    sup, old = _supervise_from(deployment, source)
    pushed = deployment.push_image()
    # The registry listens on another port: /v2/ never answers where the holder publishes.
    broken = _publish_new(source, f"FROM {TEST_IMAGE}\nENV REGISTRY_HTTP_ADDR=:5999\n")
    mark = sup.mark()

    done = deployment.cli("update", "--env-file", str(deployment.env_file), timeout=UPDATE_TIMEOUT)

    assert UPDATE_FAILED == done.returncode, done.stderr
    rolled = events(done.stderr, "update.rolled_back")
    assert [broken] == [event["image_id"] for event in rolled], done.stderr
    assert old == rolled[0]["previous_image_id"]
    assert "not healthy within MY_REG_STARTUP_GRACE" in rolled[0]["why"]
    assert old == image_id(source.ref)
    container = deployment.client.api.inspect_container(deployment.name)
    assert old == container["Image"]
    sup.wait_for_event("maintenance.ended", since=mark)
    sup.wait_for_event("registry.healthy", since=mark)
    assert [] == sup.find("container.restarting", since=mark)
    assert container["Id"] == deployment.running().id
    deployment.assert_pullable(pushed)


def test_update_keeps_a_working_image_and_the_supervisor_adopts_it(
    deployment: Any, source: Source
) -> None:
    """A new image that serves /v2/ and the manifest pushed before is kept: exit 0, and the
    running supervisor adopts its container instead of putting the old image back."""
    sup, old = _supervise_from(deployment, source)
    pushed = deployment.push_image()
    new = _publish_new(source, f"FROM {TEST_IMAGE}\nLABEL rs-it.rebuilt={secrets.token_hex(4)}\n")
    mark = sup.mark()

    done = deployment.cli("update", "--env-file", str(deployment.env_file), timeout=UPDATE_TIMEOUT)

    assert 0 == done.returncode, done.stderr
    assert "updated" in done.stdout
    kept = events(done.stderr, "update.kept")
    assert [new] == [event["image_id"] for event in kept], done.stderr
    assert f"{pushed.repository}:{pushed.tag}" in kept[0]["checked"]
    assert new == image_id(source.ref) != old
    container = deployment.client.api.inspect_container(deployment.name)
    assert new == container["Image"]
    sup.wait_for_event("maintenance.ended", since=mark)
    sup.wait_for_event("registry.healthy", since=mark)
    assert [] == sup.find("container.restarting", since=mark)
    assert container["Id"] == deployment.running().id
    deployment.assert_pullable(pushed)

    again = deployment.cli("update", "--env-file", str(deployment.env_file))

    assert (0, True) == (again.returncode, "up to date" in again.stdout), again.stderr
