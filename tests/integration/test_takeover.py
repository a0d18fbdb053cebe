"""Taking over the registry the seed's users already run, and waiting for a port held by
something else (issue 11, item 4): against the real engine, real `docker push`/`pull` and
Debian's real docker-compose 1.29."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from support.docker import docker_cli
from support.notify import statuses
from support.process import EX_CONFIG, EX_OK

pytestmark = pytest.mark.integration

OWNER_LABEL = "registry-supervisor.integration-test"
TEST_IMAGE = "registry:2"
# Another registry's data path: a different service on our port.
OTHER_DATA = "other-data"
# The seed's compose file (/work/shared/seeds, "docker-compose" section), as its users have it.
SEED_COMPOSE = """\
version: '3'
services:
  registry:
    image: registry:${MY_REG_TAG}
    ports:
      - "${MY_REG_PORT}:5000"
    volumes:
      - ${MY_REG_DIR}:/var/lib/registry
      #- ${MY_REG_TLS_DIR}=/var/lib/my_registry_tls
    #environment:
      #REGISTRY_HTTP_TLS_CERTIFICATE=/certs/${MY_REG_TLS_CRT}
      #REGISTRY_HTTP_TLS_KEY=/certs/${MY_REG_TLS_KEY}
    restart: always
"""


def run_other(deployment, data_dir: Path, *, suffix: str = "other") -> str:
    """`docker run -d --restart always -p 127.0.0.1:PORT:5000 -v DATA:/var/lib/registry` under
    another name than ours; its name."""
    name = f"{deployment.name}-{suffix}"
    data_dir.mkdir(parents=True, exist_ok=True)
    docker_cli(
        "run", "-d", "--restart", "always", "--name", name,
        "--label", f"{OWNER_LABEL}={deployment.name}",
        "-p", f"127.0.0.1:{deployment.port}:5000",
        "-v", f"{data_dir}:/var/lib/registry", TEST_IMAGE,
    )  # fmt: skip
    return name


def inspect(deployment, name: str) -> dict:
    return json.loads(docker_cli("inspect", name))[0]


def assert_taken_over(deployment, sup, name: str, scenario: str) -> dict:
    """The old container is stopped, never to be started by the engine again, not removed;
    the log names it and the undo; ours answers soon after the old one stopped."""
    done = sup.wait_for_event("takeover.done", name=name)
    old = inspect(deployment, name)
    assert (False, "no") == (old["State"]["Running"], old["HostConfig"]["RestartPolicy"]["Name"])
    assert ("always", True) == (done["restart_policy_was"], done["was_running"])
    assert done["undo"].startswith("to go back: systemctl disable --now registry-supervisor; ")
    assert f"docker update --restart=always {name}; docker start {name}" in done["undo"]
    # Downtime: from the old registry's end (the engine's record) to ours answering.
    stopped_at = datetime.fromisoformat(old["State"]["FinishedAt"][:26] + "+00:00")
    healthy = deployment.record_recovery(scenario, sup, 0, stopped_at.timestamp())
    took = datetime.fromisoformat(healthy["timestamp"]).timestamp() - stopped_at.timestamp()
    assert took < 3.0, f"ours answered {took:.2f} s after the old one stopped"
    return done


def test_check_says_run_takes_over_a_registry_serving_our_data_dir(deployment):
    """A container of another name on our port and our MY_REG_DIR: check plans the take-over
    and exits 0."""
    name = run_other(deployment, deployment.data_dir)

    done = deployment.cli("check", "--env-file", str(deployment.env_file))

    assert EX_OK == done.returncode, done.stderr
    plan = [line for line in done.stdout.splitlines() if line.startswith("# run will take over")]
    assert 1 == len(plan), done.stdout
    assert plan[0].startswith(f"# run will take over {name} (")
    assert "set its restart policy always -> no and stop it; its data stays" in plan[0]
    assert f"# port {deployment.port}: held by the container run takes over, {name}" in (
        done.stdout.splitlines()
    )


def test_run_takes_over_a_registry_of_another_name_serving_our_data_dir(deployment):
    """`docker run --restart always` of another name, our port and data dir, an image pushed:
    run stops it for good (restart policy no, not removed) and serves the image itself."""
    name = run_other(deployment, deployment.data_dir)
    deployment.wait_answering()
    image = deployment.push_image()

    sup = deployment.start()

    assert_taken_over(deployment, sup, name, "take over a `docker run`: old stopped -> healthy")
    assert deployment.running().managed
    deployment.assert_pullable(image)


@pytest.fixture
def compose_project(deployment) -> Iterator[tuple[str, Path]]:
    """The seed's compose project with the test's port and data dir; `down` afterwards."""
    project = f"{deployment.name}-compose"
    workdir = deployment.root / "registry-compose"
    workdir.mkdir()
    (workdir / "docker-compose.yml").write_text(SEED_COMPOSE)
    (workdir / ".env").write_text(
        f"MY_REG_TAG=2\nMY_REG_DIR={deployment.data_dir}\nMY_REG_PORT={deployment.port}\n"
    )
    deployment.data_dir.mkdir()
    try:
        yield project, workdir
    finally:
        compose(workdir, project, "down", check=False)


def compose(workdir: Path, project: str, *args: str, check: bool = True) -> str:
    done = subprocess.run(
        ["docker-compose", "-p", project, *args],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if check and done.returncode != 0:
        pytest.fail(f"docker-compose {' '.join(args)} exited {done.returncode}: {done.stderr}")
    return done.stdout + done.stderr


def test_run_takes_over_the_seeds_compose_registry(deployment, compose_project):
    """The seed's `docker-compose up -d` registry with an image pushed: taken over, the log
    names its compose project and service and how to go back; the image is still there."""
    project, workdir = compose_project
    compose(workdir, project, "up", "-d")
    name = f"{project}_registry_1"
    deployment.wait_answering()
    image = deployment.push_image()

    sup = deployment.start()

    done = assert_taken_over(deployment, sup, name, "take over compose: old stopped -> healthy")
    assert (project, "registry") == (done["compose_project"], done["compose_service"])
    assert (
        f"(or: cd {workdir} && docker-compose -p {project} up -d --force-recreate registry)"
    ) in done["undo"]
    deployment.assert_pullable(image)


def test_check_names_a_container_with_another_data_dir_and_exits_78(deployment):
    """Another registry (another data dir) on our port: check exits 78 naming it and the
    command that frees the port."""
    name = run_other(deployment, deployment.root / OTHER_DATA)

    done = deployment.cli("check", "--env-file", str(deployment.env_file))

    assert EX_CONFIG == done.returncode, done.stdout
    assert [
        f"registry-supervisor: MY_REG_PORT={deployment.port}: expected a free port; "
        f"127.0.0.1:{deployment.port} is held by container {name} ("
    ] == [line[: line.index("(") + 1] for line in done.stderr.splitlines()]
    assert (
        f"it serves {deployment.root / OTHER_DATA}, not MY_REG_DIR={deployment.data_dir}; free "
        f"the port with `docker update --restart=no {name} && docker stop {name}`"
    ) in done.stderr


def test_check_says_no_container_holds_a_port_a_host_process_holds(deployment):
    """A plain listening socket on our port: check exits 78 saying no container holds it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", deployment.port))
        sock.listen()

        done = deployment.cli("check", "--env-file", str(deployment.env_file))

    assert EX_CONFIG == done.returncode, done.stdout
    assert (
        f"registry-supervisor: MY_REG_PORT={deployment.port}: expected a free port; "
        f"127.0.0.1:{deployment.port} is in use and no container holds it: a host process "
        f"does; find it with `ss -ltnp 'sport = :{deployment.port}'` and stop it, or choose "
        "another port"
    ) == done.stderr.strip()


def state_file_says(deployment, phase: str, timeout: float = 10.0) -> tuple[str, str]:
    """(phase, last_reason) from `status --json` once its phase is ``phase`` (the state
    file is written at most every 2 s); fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        done = deployment.cli("status", "--json", "--env-file", str(deployment.env_file))
        supervisor = json.loads(done.stdout).get("supervisor") or {}
        if supervisor.get("phase") == phase or time.monotonic() > deadline:
            return supervisor.get("phase"), json.loads(done.stdout).get("last_reason")
        time.sleep(0.2)


def test_run_waits_for_a_port_another_service_holds_then_leaves_nothing(deployment):
    """Another registry on our port: run waits under reason port-busy (the log says so once;
    STATUS and the state file say so), creates no holder on any try, and SIGTERM while waiting
    leaves no container of ours."""
    name = run_other(deployment, deployment.root / OTHER_DATA)
    deployment.write_env(MY_REG_LOG_LEVEL="debug")
    notify_dir = Path(tempfile.mkdtemp(prefix="rs-notify-"))  # AF_UNIX: 108 bytes at most
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(str(notify_dir / "notify"))
        notify.setblocking(False)

        sup = deployment.start(
            wait_healthy=False, env={"NOTIFY_SOCKET": str(notify_dir / "notify")}
        )
        sup.wait_for_event("port.still_busy", attempt=3)

        busy = sup.find("port.busy")
        assert 1 == len(busy), busy
        assert busy[0]["held_by"].startswith(f"container {name} (")
        assert [] == sup.find("holder.created") + sup.find("container.restarting")
        assert deployment.observe(deployment.holder_name) is None
        waiting = f"waiting for port 127.0.0.1:{deployment.port}: held by container {name} ("
        assert any(line.startswith(waiting) for line in statuses(notify)), statuses(notify)
        assert ("port-busy", "port-busy") == state_file_says(deployment, "port-busy")

        sup.send(signal.SIGTERM)
        assert EX_OK == sup.wait_exit()
    shutil.rmtree(notify_dir, ignore_errors=True)
    assert (None, None) == (deployment.observe(), deployment.observe(deployment.holder_name))
    assert "running" == deployment.running(name).status


def test_run_keeps_one_holder_while_a_host_process_holds_the_port(deployment):
    """A host process on our port: run creates its holder once, retries its start under
    port-busy, and starts that same holder once the port is free."""
    deployment.write_env(MY_REG_LOG_LEVEL="debug")
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", deployment.port))
        sock.listen()
        sup = deployment.start(wait_healthy=False)
        sup.wait_for_event("port.still_busy", attempt=2)

    freed = sup.wait_for_event("port.freed")
    sup.wait_for_event("registry.healthy")
    busy = sup.find("port.busy")
    assert [busy[0]["held_by"][:32]] == [b["held_by"][:32] for b in busy]
    assert busy[0]["held_by"].startswith("no container: a host process")
    created = sup.find("holder.created")
    assert 1 == len(created), created
    assert [] == sup.find("container.restarting")
    holder = deployment.running(deployment.holder_name)
    assert holder.id.startswith(created[0]["container_id"])
    assert freed
