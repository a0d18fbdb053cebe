"""The maintenance lock against a real engine: it holds while `gc` lives or its collector
runs, whatever the supervisor's wall clock says, and `gc` fails in one line, not a
traceback, when a container it did not create has the collector's name.

A real collection of a small registry takes a few milliseconds, too short to act during.
So the tests that act while the collector runs use a registry image whose
`/bin/registry garbage-collect` waits until the test opens a gate (a file in the data
dir); everything else in that image is the test image's.
"""

from __future__ import annotations

import io
import json
import secrets
import signal
import tarfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import docker
import pytest
import requests
from support.docker import docker_cli

pytestmark = pytest.mark.integration

TEST_IMAGE = "registry:2"
GATED_REPOSITORY = "registry-it-gated"
GATE = ".gc-gate-open"
READONLY_VARIABLE = "REGISTRY_STORAGE_MAINTENANCE_READONLY"
# Put on containers a test creates itself, so teardown knows them as ours (as in conftest).
OWNER_LABEL = "registry-supervisor.integration-test"
# What the read-only registry answers to the start of a blob upload (gorilla mux: the
# write routes are not registered in maintenance mode); a writable one answers 202.
REFUSED = 405
ACCEPTED = 202
WAIT_TIMEOUT = 30.0
WRAPPER = f"""#!/bin/sh
# registry-supervisor integration tests: `garbage-collect` waits for the test's gate.
if [ "$1" = garbage-collect ]; then
    while [ ! -e /var/lib/registry/{GATE} ]; do sleep 0.02; done
fi
exec /bin/registry.real "$@"
"""
DOCKERFILE = f"""FROM {TEST_IMAGE}
RUN ["/bin/busybox", "mv", "/bin/registry", "/bin/registry.real"]
COPY registry /bin/registry
"""


@pytest.fixture(scope="session")
def gated_tag(docker_client: docker.DockerClient) -> Iterator[str]:
    """The test image with a gated collector, built once per session and removed after."""
    tag = secrets.token_hex(4)
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        for name, text, mode in (("Dockerfile", DOCKERFILE, 0o644), ("registry", WRAPPER, 0o755)):
            data = text.encode()
            member = tarfile.TarInfo(name)
            member.size, member.mode = len(data), mode
            tar.addfile(member, io.BytesIO(data))
    context.seek(0)
    docker_client.images.build(
        fileobj=context, custom_context=True, tag=f"{GATED_REPOSITORY}:{tag}", rm=True
    )
    yield tag
    docker_client.images.remove(f"{GATED_REPOSITORY}:{tag}", force=True)


@pytest.fixture
def gated(deployment: Any, gated_tag: str, tmp_path: Path) -> Any:
    """A deployment on the gated image, with its state dir under tmp_path and something
    stored (the collector fails on a registry that has stored nothing)."""
    deployment.write_env(
        MY_REG_IMAGE=GATED_REPOSITORY, MY_REG_TAG=gated_tag, MY_REG_STATE_DIR=str(tmp_path / "st")
    )
    return deployment


def open_gate(deployment: Any) -> None:
    (deployment.data_dir / GATE).touch()


def upload_status(deployment: Any) -> int:
    """Status of POST /v2/<repo>/blobs/uploads/, the first request of every push."""
    url = f"http://127.0.0.1:{deployment.port}/v2/it/{deployment.name}/blobs/uploads/"
    return requests.post(url, timeout=5).status_code


def wait_until(check: Callable[[], Any], what: str, timeout: float = WAIT_TIMEOUT) -> Any:
    """Poll ``check`` until it returns something truthy; fail saying what was awaited."""
    deadline = time.monotonic() + timeout
    while not (found := check()):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)
    return found


def start_gc(deployment: Any) -> tuple[Any, Any]:
    """Spawn `gc --json` and wait until its collector runs (held at the gate): the gc
    process and the collector container."""
    gc = deployment.spawn("gc", "--json", "--env-file", str(deployment.env_file))
    name = f"{deployment.name}-gc"

    def collector_running() -> Any:
        assert gc.running, f"gc exited {gc.proc.returncode}:\n{gc.tail()}"
        observed = deployment.observe(name)
        return observed if observed is not None and observed.status == "running" else None

    return gc, wait_until(collector_running, f"the collector {name} to run")


def env_of(deployment: Any, container_id: str) -> list[str]:
    env: list[str] = deployment.client.api.inspect_container(container_id)["Config"]["Env"]
    return env


def reload_and_wait(sup: Any) -> dict[str, Any]:
    """SIGHUP during gc and wait for `supervisor.reload_deferred` (the reload waits for gc):
    the loop looked at the lock to defer it, and ticks before it handles anything else."""
    since = sup.mark()
    sup.send(signal.SIGHUP)
    deferred: dict[str, Any] = sup.wait_for_event(
        "supervisor.reload_deferred", since=since, until="maintenance"
    )
    return deferred


@pytest.mark.parametrize(("step", "offset_s"), [("-1h", -3600), ("+7h", 7 * 3600)])
def test_a_wall_clock_step_does_not_end_the_lock(
    gated: Any, stepped_clock: Any, step: str, offset_s: int
) -> None:
    """While gc's collector runs, stepping the supervisor's wall clock back, or forward past
    the old 6 h limit, leaves the registry read-only; the gc then completes normally."""
    sup = gated.start(env=stepped_clock.env)
    gated.push_image()
    gc, _collector = start_gc(gated)
    readonly = gated.running()
    assert REFUSED == upload_status(gated)
    since = sup.mark()

    stepped_clock.step(step)
    # Two reloads: the first proves the stepped clock (its timestamp), the second that
    # a tick ran in between with it.
    stepped = reload_and_wait(sup)
    reload_and_wait(sup)

    seen_offset = datetime.fromisoformat(stepped["timestamp"]).replace(tzinfo=UTC).timestamp()
    assert abs(seen_offset - time.time() - offset_s) < 60
    assert REFUSED == upload_status(gated)
    assert [] == sup.find("maintenance.ended", since=since)
    assert readonly.id == gated.running().id
    open_gate(gated)
    assert 0 == gc.wait_exit(), gc.tail()
    assert "ok" == json.loads(gc.stdout_path.read_text())["outcome"]
    sup.wait_for_event("maintenance.ended", since=since)
    sup.wait_for_event("registry.healthy", since=since)
    assert ACCEPTED == upload_status(gated)


def test_a_killed_gc_holds_the_lock_until_its_collector_ends(gated: Any) -> None:
    """gc SIGKILLed while its collector runs (paused, even): the registry stays read-only and
    another gc is refused until the collector container ends; then the supervisor restores
    the normal registry and the next gc runs."""
    sup = gated.start()
    gated.push_image()
    gc, collector = start_gc(gated)
    readonly = gated.running()
    docker_cli("pause", collector.name)
    since = sup.mark()

    gc.send(signal.SIGKILL)
    assert -signal.SIGKILL == gc.wait_exit()

    dead = sup.wait_for_event("maintenance.holder_dead", since=since)
    assert (collector.name, True) == (dead["collector"], dead["collector_running"])
    # The supervisor looks at the collector every second: watch a few of its looks.
    answers = set()
    deadline = time.monotonic() + 2.5
    while time.monotonic() < deadline:
        answers.add(upload_status(gated))
        time.sleep(0.25)
    assert {REFUSED} == answers
    refused = gated.cli("gc", "--env-file", str(gated.env_file))
    assert 1 == refused.returncode
    assert "its collector " + collector.name + " still runs; wait for it to end" in refused.stderr
    assert [] == sup.find("maintenance.ended", since=since)
    assert readonly.id == gated.running().id

    docker_cli("unpause", collector.name)
    open_gate(gated)
    sup.wait_for_event("maintenance.ended", since=since)
    sup.wait_for_event("registry.healthy", since=since)
    assert ACCEPTED == upload_status(gated)
    assert not any(READONLY_VARIABLE in line for line in env_of(gated, gated.running().id))
    assert "exited" == gated.observe(collector.name).status  # left for the next gc

    again = gated.cli("gc", "--env-file", str(gated.env_file))
    assert 0 == again.returncode, again.stderr
    assert gated.observe(collector.name) is None


def test_gc_refuses_a_foreign_container_with_the_collector_name(
    deployment: Any, tmp_path: Path
) -> None:
    """A `<name>-gc` registry-supervisor did not create: gc says so in one line and exits 1,
    leaving the registry writable and that container alone."""
    deployment.write_env(MY_REG_STATE_DIR=str(tmp_path / "state"))
    deployment.start()
    foreign = f"{deployment.name}-gc"
    docker_cli(
        "create", "--name", foreign, "--label", f"{OWNER_LABEL}={deployment.name}", TEST_IMAGE
    )
    registry = deployment.running()

    done = deployment.cli("gc", "--env-file", str(deployment.env_file))

    assert 1 == done.returncode
    assert [
        f"registry-supervisor: gc: container {foreign} was not created by registry-supervisor, "
        f"and gc needs its name for the collector: remove it (docker rm {foreign}) or rename "
        "it (docker rename), then run gc again"
    ] == done.stderr.splitlines()
    assert registry.id == deployment.running().id
    assert ACCEPTED == upload_status(deployment)
    assert "created" == deployment.observe(foreign).status
    assert not (tmp_path / "state" / f"maintenance-{deployment.name}").exists()


def test_a_reload_during_gc_waits_for_it_to_end(gated: Any, tmp_path: Path) -> None:
    """SIGHUP while the collector runs, with settings that move the lock (a new state dir):
    the reload waits, the registry stays read-only until gc ends, then the reload runs."""
    sup = gated.start()
    gated.push_image()
    gc, _collector = start_gc(gated)
    readonly = gated.running()
    gated.write_env(MY_REG_STATE_DIR=str(tmp_path / "moved"))
    since = sup.mark()

    sup.send(signal.SIGHUP)

    sup.wait_for_event("supervisor.reload_deferred", since=since, until="maintenance")
    time.sleep(1.5)  # a second and a half of ticks with the new settings pending
    assert REFUSED == upload_status(gated)
    assert readonly.id == gated.running().id
    assert [] == sup.find("supervisor.reloaded", since=since)
    open_gate(gated)
    assert 0 == gc.wait_exit(), gc.tail()
    ended = sup.wait_for_event("maintenance.ended", since=since)
    reloaded = sup.wait_for_event("supervisor.reloaded", since=since)
    assert sup.events().index(ended) < sup.events().index(reloaded)
    sup.wait_for_event("registry.healthy", since=since)
    assert ACCEPTED == upload_status(gated)
