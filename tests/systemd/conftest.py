"""A real systemd in a container, with registry-supervisor installed from its .deb.

systemd is not PID 1 on our machines, but it boots in a container
(tests/images/build-systemd-image.sh). The container shares the host's network and
Docker socket, so the registry container the supervisor creates lives on the host's
engine and its published port answers on the host's 127.0.0.1; the data dir is mounted
at the same path inside and out, because the engine resolves bind-mount sources on the
host.

Everything created here is labelled or uniquely named and removed at the end: the
systemd container, the registry containers the supervisor created, the test image, the
data dir. A missing Docker engine fails the tests; it never skips them.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tarfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support.net import free_port

REPO = Path(__file__).resolve().parents[2]
SYSTEMD_IMAGE = "registry-supervisor-systemd:test"
TEST_LABEL = "registry-supervisor.test"
TEST_LABEL_VALUE = "systemd-e2e"
PID_LABEL = "registry-supervisor.test-pid"
MANAGED_BY = "registry-supervisor.managed-by=registry-supervisor"
NAME_PREFIX = "rs-e2e-"
UNIT = "registry-supervisor"
ENV_FILE = "/etc/registry-supervisor/registry.env"
DROP_IN = f"/etc/systemd/system/{UNIT}.service.d/e2e.conf"
DEB_IN_MACHINE = "/root/registry-supervisor.deb"
# Bind-mount sources must exist at the same path on the host and in the machine. Not under
# /tmp: the unit's PrivateTmp would give the supervisor a different one.
DATA_ROOT = Path("/srv/registry-supervisor-e2e")


def wait_for(predicate: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
    """Poll until predicate() is truthy and return it; fail saying what was awaited."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.1)


def run(
    *argv: str, check: bool = True, timeout: float = 120, **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    """Run a host command; on failure show its output."""
    result = subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, check=False, **kwargs
    )
    if check and result.returncode != 0:
        pytest.fail(
            f"{' '.join(argv)} exited {result.returncode}\n"
            f"stdout: {result.stdout[-3000:]}\nstderr: {result.stderr[-3000:]}"
        )
    return result


def http_status(url: str, timeout: float = 2.0) -> int | None:
    """The HTTP status of GET url, or None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (our URL)
            return int(response.status)
    except urllib.error.HTTPError as err:
        return err.code
    except (OSError, urllib.error.URLError):
        return None


def inspect_container(name: str) -> dict[str, Any] | None:
    """The host engine's inspect data of a container, None when there is none."""
    result = run("docker", "container", "inspect", name, check=False)
    if result.returncode != 0:
        return None
    return dict(json.loads(result.stdout)[0])


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_leftovers() -> None:
    """Remove what an interrupted earlier run left: its containers and data dirs.

    Everything carries the pytest process id that made it, so a run going on in parallel
    (another checkout on this machine) is left alone.
    """
    listed = run(
        "docker", "ps", "-a", "--filter", f"label={TEST_LABEL}={TEST_LABEL_VALUE}",
        "--format", f'{{{{.ID}}}} {{{{.Label "{PID_LABEL}"}}}}',
    ).stdout  # fmt: skip
    for line in listed.splitlines():
        container_id, _, pid = line.partition(" ")
        if not pid.isdigit() or not pid_alive(int(pid)):
            run("docker", "rm", "-f", container_id, check=False)
    names = run("docker", "ps", "-a", "--filter", f"label={MANAGED_BY}", "--format", "{{.Names}}")
    for name in names.stdout.split():
        pid = name.removeprefix(NAME_PREFIX).split("-")[0]
        if name.startswith(NAME_PREFIX) and (not pid.isdigit() or not pid_alive(int(pid))):
            run("docker", "rm", "-f", name, check=False)
    if DATA_ROOT.is_dir():
        for leftover in DATA_ROOT.iterdir():
            pid = leftover.name.split("-")[0]
            if not pid.isdigit() or not pid_alive(int(pid)):
                shutil.rmtree(leftover, ignore_errors=True)


def remove_test_containers(name_filter: str) -> None:
    """Remove registry containers the supervisor created for these tests (host engine)."""
    ids = run(
        "docker", "ps", "-aq", "--filter", f"label={MANAGED_BY}", "--filter", f"name={name_filter}"
    ).stdout.split()
    if ids:
        run("docker", "rm", "-f", *ids, check=False)


@dataclass
class Machine:
    """The systemd container: run commands in it, ask systemd about the unit."""

    container_id: str

    def run(
        self, *argv: str, check: bool = True, stdin: str | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        flags = ("-i",) if stdin is not None else ()
        return run(
            "docker", "exec", *flags, self.container_id, *argv,
            check=check, timeout=timeout, input=stdin,
        )  # fmt: skip

    def systemctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        # A start job may take the unit's TimeoutStartSec (90 s) before it answers.
        return self.run("systemctl", *args, check=check, timeout=150)

    def show(self, *properties: str) -> dict[str, str]:
        args = [f"--property={name}" for name in properties]
        out = self.systemctl("show", *args, f"{UNIT}.service").stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def prop(self, name: str) -> str:
        return self.show(name)[name]

    def write(self, path: str, text: str) -> None:
        self.run("sh", "-c", 'mkdir -p "$(dirname "$1")" && cat > "$1"', "sh", path, stdin=text)

    def read(self, path: str) -> str:
        return self.run("cat", path).stdout

    def journal(self, invocation: str | None = None) -> list[str]:
        """The unit's journal lines (messages only), of one invocation if given."""
        match = [f"_SYSTEMD_INVOCATION_ID={invocation}"] if invocation else ["--unit", UNIT]
        return self.run("journalctl", "--no-pager", "-o", "cat", *match).stdout.splitlines()

    def events(self, invocation: str) -> list[dict[str, Any]]:
        """The supervisor's JSON log events of one invocation."""
        events = []
        for line in self.journal(invocation):
            if line.startswith("{"):
                events.append(json.loads(line))
        return events

    def exists(self, path: str) -> bool:
        return self.run("test", "-e", path, check=False).returncode == 0

    def installed(self) -> bool:
        result = self.run("dpkg-query", "-W", "-f", "${Status}", UNIT, check=False)
        return result.stdout.strip() == "install ok installed"


@dataclass
class Deployment:
    """The installed service and the registry it supervises, as the test configures it."""

    machine: Machine
    name: str
    port: int
    data_dir: Path
    image_tag: str = "2"

    unit: str = UNIT
    env_file: str = ENV_FILE
    deb_path: str = DEB_IN_MACHINE

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v2/"

    # Host-side helpers of this suite alone, here so that test modules need no imports
    # from conftest (the shared ones are in tests/support).
    host = staticmethod(run)
    http_status = staticmethod(http_status)

    def env_text(self, **overrides: str) -> str:
        settings = {
            "MY_REG_NAME": self.name,
            "MY_REG_BIND": "127.0.0.1",
            "MY_REG_PORT": str(self.port),
            "MY_REG_DIR": str(self.data_dir),
            "MY_REG_TAG": self.image_tag,
            "MY_REG_PULL": "never",
            **overrides,
        }
        lines = [f"{key}={value}" for key, value in settings.items()]
        return "# written by tests/systemd\n" + "\n".join(lines) + "\n"

    def configure(self, **overrides: str) -> None:
        """Write the env file: the test's base settings plus overrides."""
        self.machine.write(ENV_FILE, self.env_text(**overrides))

    def container(self) -> dict[str, Any] | None:
        return inspect_container(self.name)

    def identity(self) -> tuple[str, str] | None:
        """Container id and start time: equal before and after means not restarted."""
        container = self.container()
        if container is None:
            return None
        return container["Id"], container["State"]["StartedAt"]

    def registry_running(self) -> bool:
        container = self.container()
        return container is not None and bool(container["State"]["Running"])

    def start(self) -> None:
        self.machine.systemctl("start", UNIT)

    def reset(self) -> None:
        """Back to the starting line: unit stopped and not failed, base settings."""
        self.machine.systemctl("stop", UNIT)
        self.machine.systemctl("reset-failed", UNIT, check=False)
        self.configure()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Keep each phase's report on the test item, for `journal_on_failure`."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture(autouse=True)
def journal_on_failure(request: pytest.FixtureRequest) -> Iterator[None]:
    """When a test of a deployment fails, show the unit's status and journal."""
    yield
    report = getattr(request.node, "report_call", None)
    if report is None or not report.failed or "deployment" not in request.fixturenames:
        return
    deployment = request.getfixturevalue("deployment")
    machine = deployment.machine
    status = machine.systemctl("status", "--no-pager", "--lines=0", UNIT, check=False).stdout
    journal = machine.run(
        "journalctl", "--no-pager", "--lines=60", "--unit", UNIT, check=False
    ).stdout
    report.sections.append(("systemd unit status and journal", f"{status}\n{journal}"))


@pytest.fixture(name="wait_for")
def wait_for_fixture() -> Callable[..., Any]:
    return wait_for


@pytest.fixture(scope="session")
def docker_engine() -> None:
    result = run("docker", "version", "--format", "{{.Server.Version}}", check=False)
    if result.returncode != 0:
        pytest.fail(f"the Docker engine does not answer; these tests need one:\n{result.stderr}")


@pytest.fixture(scope="session")
def test_images(docker_engine: None) -> None:
    """The registry image and the systemd image, built unless present with their stamp."""
    for script in ("build-registry-image.sh", "build-systemd-image.sh"):
        run("bash", str(REPO / "tests" / "images" / script), timeout=600)


@pytest.fixture(scope="session")
def deb_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The .deb built from this tree by packaging/build-deb.sh, once per session."""
    out = tmp_path_factory.mktemp("deb")
    run("bash", str(REPO / "packaging" / "build-deb.sh"), str(out), timeout=600)
    (deb,) = out.glob("registry-supervisor_*.deb")
    return deb


@pytest.fixture(scope="session")
def tiny_image(docker_engine: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A one-file image made with `docker import`, to push to the registry."""
    root = tmp_path_factory.mktemp("tiny")
    (root / "hello.txt").write_text("hello from tests/systemd\n")
    archive = root / "rootfs.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(root / "hello.txt", arcname="hello.txt")
    ref = f"registry-supervisor-e2e-tiny:{uuid.uuid4().hex[:8]}"
    run("docker", "import", "--change", f"LABEL {TEST_LABEL}={TEST_LABEL_VALUE}", str(archive), ref)
    yield ref
    run("docker", "image", "rm", "-f", ref, check=False)


@pytest.fixture(scope="module")
def machine(test_images: None, deb_package: Path) -> Iterator[Machine]:
    """A booted systemd container with the .deb installed (service not started)."""
    remove_leftovers()
    DATA_ROOT.mkdir(parents=True, exist_ok=True)
    container_id = run(
        "docker", "run", "--detach",
        "--label", f"{TEST_LABEL}={TEST_LABEL_VALUE}", "--label", f"{PID_LABEL}={os.getpid()}",
        "--cap-add", "SYS_ADMIN", "--security-opt", "seccomp=unconfined",
        "--tmpfs", "/run", "--tmpfs", "/run/lock",
        "--volume", "/sys/fs/cgroup:/sys/fs/cgroup:rw",
        "--volume", "/var/run/docker.sock:/var/run/docker.sock",
        "--volume", f"{DATA_ROOT}:{DATA_ROOT}",
        "--network", "host",
        SYSTEMD_IMAGE,
    ).stdout.strip()  # fmt: skip
    box = Machine(container_id)
    try:
        wait_for(
            lambda: (
                box.run("systemctl", "is-system-running", check=False).stdout.strip()
                in ("running", "degraded")
            ),
            "systemd in the container to finish booting",
        )
        run("docker", "cp", str(deb_package), f"{container_id}:{DEB_IN_MACHINE}")
        box.run("dpkg", "-i", DEB_IN_MACHINE, timeout=180)
        yield box
    finally:
        run("docker", "rm", "-f", container_id, check=False)
        with contextlib.suppress(OSError):
            DATA_ROOT.rmdir()  # only when no other run's data is left in it


@pytest.fixture(scope="module")
def deployment(machine: Machine) -> Iterator[Deployment]:
    """Unique name, port and data dir for this module's registry; all removed at the end."""
    token = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    data_dir = DATA_ROOT / token / "data"
    deploy = Deployment(machine, name=f"{NAME_PREFIX}{token}", port=free_port(), data_dir=data_dir)
    # A fast watchdog and restart keep the watchdog test short.
    machine.write(DROP_IN, "[Service]\nWatchdogSec=3s\nRestartSec=1s\n")
    # As the env file tells an admin: a data dir other than the default is created first.
    data_dir.mkdir(parents=True)
    machine.systemctl("daemon-reload")
    deploy.configure()
    try:
        yield deploy
    finally:
        machine.systemctl("stop", UNIT, check=False)
        remove_test_containers(f"^{deploy.name}(-net)?$")  # the registry and its holder
        shutil.rmtree(DATA_ROOT / token, ignore_errors=True)


@pytest.fixture
def service(deployment: Deployment) -> Deployment:
    """The package installed, the unit stopped and not failed, the base settings written."""
    machine = deployment.machine
    if not machine.installed():
        machine.run("dpkg", "-i", DEB_IN_MACHINE, timeout=180)
    deployment.reset()
    return deployment


@pytest.fixture
def running(service: Deployment) -> Deployment:
    """The unit started (systemctl start returns once the unit is active) and healthy."""
    service.start()
    return service
