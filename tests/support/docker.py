"""The Docker engine as the tests use it: the docker CLI, and removing only our containers.

The engine is shared with other suites (and other checkouts) on the same machine: remove
only containers that carry the labels and names a test gave them.
"""

from __future__ import annotations

import contextlib
import io
import secrets
import subprocess
import tarfile
import time
from collections.abc import Callable

import docker
import docker.errors
import pytest

MANAGED_LABEL = "registry-supervisor.managed-by"
MANAGED_VALUE = "registry-supervisor"

DOCKER_CLI_TIMEOUT = 120.0


def docker_cli(*args: str, timeout: float = DOCKER_CLI_TIMEOUT) -> str:
    """Run the docker CLI; fail the test with its stderr when it fails."""
    try:
        done = subprocess.run(
            ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"`docker {' '.join(args)}` did not finish within {timeout} s")
    if done.returncode != 0:
        pytest.fail(f"`docker {' '.join(args)}` exited {done.returncode}: {done.stderr.strip()}")
    return done.stdout.strip()


def remove_containers(
    client: docker.DockerClient, label: str, wanted: Callable[[str], bool]
) -> None:
    """Force-remove every container that carries ``label`` (``key`` or ``key=value``) and
    has a name ``wanted`` accepts; one already gone is no error."""
    # The low-level list: the high-level one inspects every container it lists, and one
    # another suite removes in between would raise NotFound here.
    for container in client.api.containers(all=True, filters={"label": label}):
        names = {name.lstrip("/") for name in container.get("Names") or ()}
        if any(wanted(name) for name in names):
            with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
                client.api.remove_container(container["Id"], force=True)


def random_image_tar(member: str, size: int) -> bytes:
    """A tar of one file, ``member``, of ``size`` random bytes: what `docker import` makes
    an image of that no other image shares."""
    payload = secrets.token_bytes(size)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo(member)
        info.size = len(payload)
        info.mtime = int(time.time())
        tar.addfile(info, io.BytesIO(payload))
    return buffer.getvalue()


def import_random_image(ref: str, *, member: str = "random.bin", size: int = 4096) -> None:
    """Make ``ref`` a local one-file image (`docker import`) of ``size`` random bytes at
    ``member``: content no other image shares. Fail the test when the import fails."""
    try:
        subprocess.run(
            ["docker", "import", "-", ref],
            input=random_image_tar(member, size),
            capture_output=True,
            timeout=DOCKER_CLI_TIMEOUT,
            check=True,
        )
    except subprocess.CalledProcessError as err:
        pytest.fail(f"docker import failed: {err.stderr.decode(errors='replace')}")
