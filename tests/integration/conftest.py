"""Fixtures for the integration suite: the real Docker engine, the registry test image and the
installed `registry-supervisor` run as a subprocess.

Every test gets a `Deployment`: a random container name (`rs-it-<hex>`), a free loopback
port, a data dir under tmp_path and an env file. Teardown SIGKILLs every supervisor the test
started and removes only the containers carrying the test's own name *and* either the
supervisor's label or this suite's owner label: the engine is shared with other suites.

Waits poll with a deadline and fail saying what they waited for; nothing here skips. Without
an engine the suite fails (CI must never go green by skipping).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import secrets
import subprocess
import sysconfig
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest
import requests
from support.docker import (
    DOCKER_CLI_TIMEOUT,
    MANAGED_LABEL,
    MANAGED_VALUE,
    docker_cli,
    import_random_image,
    remove_containers,
)
from support.fleet import FIGURES as FLEET_FIGURES
from support.net import free_port
from support.process import (
    RECOVERY_TIMEOUT,
    SupervisorProcess,
    child_env,
    supervisor_argv,
)

from supervisor import canary

SPEC_HASH_LABEL = "registry-supervisor.spec-hash"
# Put on containers a test creates itself (the "foreign" ones), so teardown knows them as ours.
OWNER_LABEL = "registry-supervisor.integration-test"

TEST_IMAGE = "registry:2"
# The test images of both layouts (tests/images/): tag per layout fixture param.
LAYOUT_TAGS = {"v2": "2", "v3": "3"}

# Deadlines, in seconds (RECOVERY_TIMEOUT and EXIT_TIMEOUT: support.process).
STARTUP_TIMEOUT = 60.0
CLI_TIMEOUT = 60.0


def parse_timestamp(text: str) -> float:
    """Epoch seconds of an ISO 8601 log timestamp (naive means UTC)."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


# --- the container, as the tests see it ----------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Observed:
    """The few fields of `docker inspect` the tests assert on."""

    id: str
    name: str
    status: str
    pid: int
    started_at: str
    labels: dict[str, str]
    restart_policy: str
    host_ports: tuple[str, ...]
    # (host source, container destination, writable) of every bind mount, whatever API made it
    binds: tuple[tuple[str, str, bool], ...]
    network_mode: str

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any]) -> Observed:
        host_config = attrs.get("HostConfig") or {}
        bindings = (host_config.get("PortBindings") or {}).get("5000/tcp") or []
        return cls(
            id=attrs["Id"],
            name=attrs["Name"].lstrip("/"),
            status=attrs["State"]["Status"],
            pid=attrs["State"]["Pid"],
            started_at=attrs["State"]["StartedAt"],
            labels=attrs["Config"].get("Labels") or {},
            restart_policy=(host_config.get("RestartPolicy") or {}).get("Name") or "no",
            host_ports=tuple(f"{b.get('HostIp', '')}:{b['HostPort']}" for b in bindings),
            binds=tuple(
                (m["Source"], m["Destination"], bool(m.get("RW")))
                for m in attrs.get("Mounts") or ()
                if m.get("Type") == "bind"
            ),
            network_mode=host_config.get("NetworkMode") or "",
        )

    @property
    def managed(self) -> bool:
        """Carries the supervisor's managed-by label."""
        return self.labels.get(MANAGED_LABEL) == MANAGED_VALUE

    @property
    def spec_hash(self) -> str | None:
        return self.labels.get(SPEC_HASH_LABEL)


@dataclasses.dataclass(frozen=True)
class PushedImage:
    """An image pushed to the registry under test: its reference and local image id."""

    repository: str  # it/<name>, without the registry host
    tag: str
    image_id: str

    def ref(self, port: int) -> str:
        return f"127.0.0.1:{port}/{self.repository}:{self.tag}"


# --- recovery times, printed at the end of the run ------------------------------------------

RECOVERIES: list[tuple[str, float]] = []


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for title, text in FLEET_FIGURES:
        terminalreporter.section(f"fleet: {title}")
        for line in text.splitlines():
            terminalreporter.write_line(line)
    if not RECOVERIES:
        return
    terminalreporter.section("recovery: fault injected -> registry.healthy (from the logs)")
    for scenario, seconds in RECOVERIES:
        terminalreporter.write_line(f"{seconds:7.2f} s  {scenario}")
    path = os.environ.get("RS_IT_RECOVERY_JSON")
    if path:
        Path(path).write_text(json.dumps(dict(RECOVERIES), indent=2) + "\n")


# --- a polling client, to prove the registry served throughout ------------------------------


class ServingWatch:
    """Polls GET /v2/ from a thread and records every answer (status code or error name)."""

    def __init__(self, url: str, interval: float = 0.05) -> None:
        self.url = url
        self.interval = interval
        self.answers: list[int | str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        with requests.Session() as session:
            while not self._stop.is_set():
                try:
                    answer: int | str = session.get(self.url, timeout=2).status_code
                except requests.RequestException as err:
                    answer = type(err).__name__
                self.answers.append(answer)
                self._stop.wait(self.interval)

    def __enter__(self) -> ServingWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


# --- one deployment per test -----------------------------------------------------------------


class Deployment:
    """The world of one test: its container name, port, data dir, env file and supervisors."""

    def __init__(self, client: docker.DockerClient, root: Path, layout: str = "v2") -> None:
        self.client = client
        self.layout = layout
        self.root = root
        self.name = f"rs-it-{secrets.token_hex(4)}"
        self.port = free_port()
        self.data_dir = root / "data"  # absent on purpose: the supervisor creates it
        self.workdir = root / "work"  # the supervisors' cwd: no stray .env from the repo
        self.workdir.mkdir()
        self.env_file = root / "registry.env"
        self.secret = f"it-secret-{secrets.token_hex(8)}"
        self.settings: dict[str, str] = {
            "MY_REG_IMAGE": "registry",
            "MY_REG_TAG": LAYOUT_TAGS[layout],
            "MY_REG_NAME": self.name,
            "MY_REG_DIR": str(self.data_dir),
            "MY_REG_PORT": str(self.port),
            "MY_REG_BIND": "127.0.0.1",
            "MY_REG_PULL": "never",
            "MY_REG_HEALTH_INTERVAL": "0.5",
            "MY_REG_HEALTH_TIMEOUT": "1",
            "MY_REG_HEALTH_RETRIES": "3",
            "MY_REG_STARTUP_GRACE": "5",
            "MY_REG_STOP_TIMEOUT": "2",
            "MY_REG_LOG_FORMAT": "json",
            "MY_REG_LOG_LEVEL": "info",
            # A fixed secret lets interrupted uploads resume across restarts, and lets
            # test_secrets_are_never_logged look for it in every output.
            "REGISTRY_HTTP_SECRET": self.secret,
        }
        self.processes: list[SupervisorProcess] = []
        self.local_refs: set[str] = set()
        self.write_env()

    # settings

    def write_env(self, **overrides: str | int | None) -> Path:
        """Write the env file from the base settings; `None` drops a variable."""
        for key, value in overrides.items():
            if value is None:
                self.settings.pop(key, None)
            else:
                self.settings[key] = str(value)
        if "MY_REG_PORT" in overrides and overrides["MY_REG_PORT"] is not None:
            with contextlib.suppress(ValueError):
                self.port = int(overrides["MY_REG_PORT"])
        body = "# written by tests/integration\n" + "".join(
            f"{key}={value}\n" for key, value in self.settings.items()
        )
        self.env_file.write_text(body)
        return self.env_file

    # running the supervisor

    def start(
        self,
        *,
        wait_healthy: bool = True,
        module: bool = False,
        env: dict[str, str] | None = None,
    ) -> SupervisorProcess:
        """Launch `registry-supervisor run --env-file FILE`; by default wait until healthy."""
        log_dir = self.root / f"supervisor-{len(self.processes)}"
        sup = SupervisorProcess(
            [*supervisor_argv(module=module), "run", "--env-file", str(self.env_file)],
            env=child_env(**(env or {})),
            cwd=self.workdir,
            log_dir=log_dir,
        )
        self.processes.append(sup)
        if wait_healthy:
            sup.wait_for_event("registry.healthy", STARTUP_TIMEOUT)
        return sup

    def spawn(self, *args: str, env: dict[str, str] | None = None) -> SupervisorProcess:
        """Start a subcommand in the background (a `gc` the test interrupts); its stderr
        is readable like a supervisor's, and teardown SIGKILLs it if it still runs."""
        log_dir = self.root / f"spawned-{len(self.processes)}"
        process = SupervisorProcess(
            [*supervisor_argv(), *args],
            env=child_env(**(env or {})),
            cwd=self.workdir,
            log_dir=log_dir,
        )
        self.processes.append(process)
        return process

    def cli(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        module: bool = False,
        timeout: float = CLI_TIMEOUT,
    ) -> subprocess.CompletedProcess[str]:
        """Run a supervisor subcommand to completion (stdout and stderr captured)."""
        try:
            return subprocess.run(
                [*supervisor_argv(module=module), *args],
                env=child_env(**(env or {})),
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            pytest.fail(f"`registry-supervisor {' '.join(args)}` still running after {timeout} s")

    # the container

    @property
    def holder_name(self) -> str:
        """The network holder's container: it publishes the port, the registry joins it."""
        return f"{self.name}-net"

    def observe(self, name: str | None = None) -> Observed | None:
        """The container named after this test (or ``name``), or None."""
        try:
            return Observed.from_attrs(self.client.api.inspect_container(name or self.name))
        except docker.errors.NotFound:
            return None

    def running(self, name: str | None = None) -> Observed:
        """The registry container (or ``name``), which must exist and be running."""
        name = name or self.name
        observed = self.observe(name)
        assert observed is not None, f"container {name} does not exist"
        assert observed.status == "running", f"container {name} is {observed.status}"
        return observed

    def run_foreign(self) -> Observed:
        """Create `docker run -d -p PORT:5000 --name NAME registry:2` the way a user would, by
        hand (the seed's setup, holding the port the supervisor's holder needs)."""
        docker_cli(
            "run", "-d", "--name", self.name, "--label", f"{OWNER_LABEL}={self.name}",
            "-p", f"127.0.0.1:{self.port}:5000", TEST_IMAGE,
        )  # fmt: skip
        observed = self.observe()
        assert observed is not None
        return observed

    # the registry

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v2/"

    def serving_watch(self) -> ServingWatch:
        """A context manager polling GET /v2/ on the current port from a thread."""
        return ServingWatch(self.url)

    def wait_answering(self, timeout: float = 10.0) -> None:
        """Poll GET /v2/ until it answers 200; fail after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while self.v2_status(timeout=0.5) != 200:
            assert time.monotonic() < deadline, f"{self.url} did not answer within {timeout} s"
            time.sleep(0.05)

    def v2_status(self, port: int | None = None, timeout: float = 2.0) -> int | None:
        """Status code of GET /v2/, or None when nothing answers."""
        url = f"http://127.0.0.1:{port}/v2/" if port else self.url
        try:
            return requests.get(url, timeout=timeout).status_code
        except requests.RequestException:
            return None

    def push_image(self) -> PushedImage:
        """Build a one-file image of random content with `docker import` and push it."""
        tag = secrets.token_hex(3)
        image = PushedImage(repository=f"it/{self.name}", tag=tag, image_id="")
        ref = image.ref(self.port)
        import_random_image(ref, member=f"rs-it/{tag}.bin")
        self.local_refs.add(ref)
        image = dataclasses.replace(
            image, image_id=docker_cli("image", "inspect", "--format", "{{.Id}}", ref)
        )
        docker_cli("push", ref)
        return image

    def assert_pullable(self, image: PushedImage, port: int | None = None) -> None:
        """Drop every local copy of `image`, pull it from the registry, compare image ids."""
        for ref in sorted(
            r for r in self.local_refs if r.endswith(f"/{image.repository}:{image.tag}")
        ):
            docker_cli("rmi", ref)
            self.local_refs.discard(ref)
        gone = subprocess.run(
            ["docker", "image", "inspect", image.image_id],
            capture_output=True,
            timeout=DOCKER_CLI_TIMEOUT,
            check=False,
        )
        assert gone.returncode != 0, f"image {image.image_id} still present locally"
        ref = image.ref(port or self.port)
        self.local_refs.add(ref)
        docker_cli("pull", ref)
        assert image.image_id == docker_cli("image", "inspect", "--format", "{{.Id}}", ref)

    def data_snapshot(self) -> dict[str, str]:
        """sha256 of every file under the data dir, by relative path: the registry's data,
        so not the push canary's reserved repository, whose upload sessions come and go
        while the walk runs (supervisor/canary.py): it is not even entered."""
        snapshot = {}
        for top, dirs, files in os.walk(self.data_dir):
            if Path(top).name == "repositories":
                dirs[:] = [d for d in dirs if d != canary.REPOSITORY]
            for name in files:
                path = Path(top, name)
                relative = str(path.relative_to(self.data_dir))
                snapshot[relative] = hashlib.sha256(path.read_bytes()).hexdigest()
        return dict(sorted(snapshot.items()))

    def assert_data_kept(self, before: dict[str, str]) -> None:
        """Every file that was in the data dir is still there, unchanged."""
        after = self.data_snapshot()
        lost = {path for path in before if after.get(path) != before[path]}
        assert set() == lost, f"data dir lost or changed files: {sorted(lost)[:10]}"

    # measuring

    def record_recovery(
        self, scenario: str, sup: SupervisorProcess, since: int, fault_at: float
    ) -> dict[str, Any]:
        """Wait for `registry.healthy` after `since`; record fault -> healthy from its
        timestamp; check the registry answers."""
        healthy = sup.wait_for_event("registry.healthy", RECOVERY_TIMEOUT, since=since)
        seconds = parse_timestamp(healthy["timestamp"]) - fault_at
        RECOVERIES.append((scenario, seconds))
        assert self.v2_status() == 200
        return healthy

    # teardown

    def close(self) -> None:
        for sup in self.processes:
            sup.kill()
        # The registry, its holder and candidates, and the containers the test made itself.
        for label in (f"{MANAGED_LABEL}={MANAGED_VALUE}", f"{OWNER_LABEL}={self.name}"):
            remove_containers(self.client, label, lambda name: name.startswith(self.name))
        for ref in self.local_refs:
            subprocess.run(
                ["docker", "rmi", "--force", ref],
                capture_output=True,
                timeout=DOCKER_CLI_TIMEOUT,
                check=False,
            )


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    """The real engine; the suite fails, never skips, when it does not answer."""
    try:
        client = docker.from_env(timeout=60)
        client.ping()
    except docker.errors.DockerException as err:
        pytest.fail(f"no Docker engine answers ({err}); start dockerd or run tests/run")
    for tag, script in (("2", "build-registry-image.sh"), ("3", "build-registry3-image.sh")):
        try:
            client.images.get(f"registry:{tag}")
        except docker.errors.ImageNotFound:
            client.close()
            pytest.fail(f"registry:{tag} is missing; run tests/images/{script}")
    yield client
    client.close()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests marked `both_layouts` run on the v2 and the v3 image layout."""
    if metafunc.definition.get_closest_marker("both_layouts") and "layout" in metafunc.fixturenames:
        metafunc.parametrize("layout", list(LAYOUT_TAGS), indirect=True)


@pytest.fixture
def layout(request: pytest.FixtureRequest) -> str:
    """The image layout of the test's deployment: v2 unless marked `both_layouts`."""
    return str(getattr(request, "param", "v2"))


@pytest.fixture
def deployment(
    docker_client: docker.DockerClient, tmp_path: Path, layout: str
) -> Iterator[Deployment]:
    """A fresh name, port, data dir and env file; everything it started is removed after."""
    world = Deployment(docker_client, tmp_path, layout)
    try:
        yield world
    finally:
        world.close()


# libfaketime, preloaded into a supervisor: the test steps its wall clock by rewriting the
# timestamp file, read again on every call; its monotonic clock stays real. (Under
# FAKETIME_DONT_FAKE_MONOTONIC, libfaketime 0.9.10 breaks time.sleep() with EINVAL; the
# supervisor never sleeps, it waits on its queue with a timeout.) The `faketime` wrapper
# is not used: the FAKETIME it sets overrides the timestamp file.
LIBFAKETIME = (
    Path("/usr/lib") / str(sysconfig.get_config_var("MULTIARCH")) / "faketime/libfaketimeMT.so.1"
)


@dataclasses.dataclass(frozen=True)
class SteppedClock:
    """A wall clock a test steps while the process that reads it runs."""

    path: Path

    @property
    def env(self) -> dict[str, str]:
        """Environment that runs a process on libfaketime with its wall clock from ``path``."""
        return {
            "LD_PRELOAD": str(LIBFAKETIME),
            "FAKETIME_TIMESTAMP_FILE": str(self.path),
            "FAKETIME_NO_CACHE": "1",
            "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        }

    def step(self, offset: str) -> None:
        """Set the offset from the real time, in libfaketime's form: "-1h", "+7h", "+0"."""
        self.path.write_text(f"{offset}\n")


@pytest.fixture
def stepped_clock(tmp_path: Path) -> SteppedClock:
    """A wall clock at the real time, to be stepped by the test (see SteppedClock)."""
    assert LIBFAKETIME.exists(), f"{LIBFAKETIME} missing: tests/run installs faketime"
    clock = SteppedClock(tmp_path / "faketime")
    clock.step("+0")
    return clock
