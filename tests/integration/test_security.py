"""The secure setup against a real engine and registry: TLS, htpasswd auth, a persistent
HTTP secret and a hardened container, used with the real docker CLI.

Each deployment is one registry (TLS with a self-signed certificate made here and valid
for 10 more days, one htpasswd user, a 256 MiB memory limit, every hardening default, no
REGISTRY_HTTP_SECRET), on each image layout (registry:2, registry:3). Tests that only look
at it share one per layout for the module (`secured`); a test that changes it (adds a
user, restarts the registry) gets its own (`own_secured`). Every docker CLI call with
credentials gets its own DOCKER_CONFIG (`docker_as_user`, a temporary directory), so
`docker login` never touches ~/.docker and no test sees another's login. So every test
passes alone and in any order.

The certs.d entry for a deployment's port is created and removed here. Only the
containers named here (and labelled by the supervisor) are removed. Without an engine the
module fails, never skips.

Docker treats 127.0.0.0/8 as an insecure registry (it skips verification there), so the
docker CLI proves TLS is served, and a Python client verifying against the configured
certificate (hostname 127.0.0.1) proves the certificate is the one served.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import secrets
import shutil
import stat
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import pytest
import requests
from support.certs import write_self_signed
from support.docker import MANAGED_LABEL, import_random_image, remove_containers
from support.net import free_port
from support.process import SupervisorProcess, child_env, supervisor_argv

pytestmark = pytest.mark.integration

USER, PASSWORD = "rs-sec-user", f"pw-{secrets.token_hex(8)}"
MEMORY = 256 << 20
CERT_DAYS = 10.5
CERTS_D = Path("/etc/docker/certs.d")
STARTUP_TIMEOUT = 60.0
CLI_TIMEOUT = 120.0


def supervisor_cli(
    workdir: Path, *args: str, stdin: str | None = None, check: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run a subcommand of the installed package (`python -m supervisor`) to completion,
    from a directory without sources."""
    return subprocess.run(
        [*supervisor_argv(module=True), *args],
        input=stdin,
        env=child_env(),
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        check=check,
    )


@dataclass
class Secured:
    """One hardened deployment: where it is, how to reach it, what it logged."""

    name: str
    port: int
    root: Path
    certificate: Path
    env_file: Path
    state_dir: Path
    supervisor: SupervisorProcess
    client: docker.DockerClient
    refs: set[str] = field(default_factory=set)

    @property
    def base(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def workdir(self) -> Path:
        """The supervisors' cwd: no stray .env, no source tree on sys.path."""
        return self.root / "work"

    @property
    def stderr(self) -> Path:
        """The supervisor's log (JSON lines)."""
        return self.supervisor.stderr_path

    def events(self) -> list[dict[str, Any]]:
        return self.supervisor.events()

    def wait_for(
        self, event: str, since: int = 0, timeout: float = STARTUP_TIMEOUT
    ) -> dict[str, Any]:
        """The first `event` after `since`; fail on timeout or when the supervisor exits."""
        return self.supervisor.wait_for_event(event, timeout, since=since)

    def cli(
        self, *args: str, stdin: str | None = None, check: bool = False
    ) -> subprocess.CompletedProcess[str]:
        """A subcommand run to completion beside this deployment's supervisor."""
        return supervisor_cli(self.workdir, *args, stdin=stdin, check=check)

    def local_image(self) -> str:
        """A one-file image of random content, tagged for this registry."""
        ref = f"127.0.0.1:{self.port}/rs-sec/img:{secrets.token_hex(3)}"
        import_random_image(ref, member="rs-sec.bin", size=2048)
        self.refs.add(ref)
        return ref

    def session(self) -> requests.Session:
        """HTTPS verified against the configured certificate, as alice would log in."""
        session = requests.Session()
        session.trust_env = False
        session.verify = str(self.certificate)
        session.auth = (USER, PASSWORD)
        return session


@contextlib.contextmanager
def deploy_secured(client: docker.DockerClient, root: Path, tag: str) -> Iterator[Secured]:
    """Start a hardened registry of image tag ``tag`` under ``root``, wait until healthy;
    afterwards stop the supervisor and remove its containers, images and certs.d entry."""
    name, port = f"rs-sec-{secrets.token_hex(4)}", free_port()
    (root / "tls").mkdir(mode=0o700)
    certificate, _key = write_self_signed(
        root / "tls",
        names=("127.0.0.1", "localhost"),
        days=CERT_DAYS,
        common_name="rs-sec registry",
        ca=True,
    )
    workdir = root / "work"
    workdir.mkdir()
    supervisor_cli(
        workdir, "htpasswd", USER, "--file", str(root / "htpasswd"), stdin=PASSWORD + "\n"
    ).check_returncode()
    env_file = root / "registry.env"
    env_file.write_text(
        "\n".join(
            [
                "MY_REG_IMAGE=registry",
                f"MY_REG_TAG={tag}",
                f"MY_REG_NAME={name}",
                f"MY_REG_DIR={root / 'data'}",
                f"MY_REG_PORT={port}",
                "MY_REG_BIND=127.0.0.1",
                "MY_REG_PULL=never",
                f"MY_REG_STATE_DIR={root / 'state'}",
                f"MY_REG_TLS_DIR={root / 'tls'}",
                f"MY_REG_AUTH_HTPASSWD={root / 'htpasswd'}",
                "MY_REG_MEMORY=256m",
                "MY_REG_HEALTH_INTERVAL=0.5",
                "MY_REG_HEALTH_TIMEOUT=1",
                "MY_REG_STARTUP_GRACE=10",
                "MY_REG_STOP_TIMEOUT=2",
                "MY_REG_LOG_FORMAT=json",
                "",
            ]
        )
    )
    certs_d = CERTS_D / f"127.0.0.1:{port}"
    made_certs_d = not CERTS_D.exists()  # then it is ours to remove too, once empty
    supervisor: SupervisorProcess | None = None
    refs: set[str] = set()
    try:
        certs_d.mkdir(parents=True)
        shutil.copyfile(certificate, certs_d / "ca.crt")
        supervisor = SupervisorProcess(
            [*supervisor_argv(module=True), "run", "--env-file", str(env_file)],
            env=child_env(),
            cwd=workdir,
            log_dir=root / "supervisor",
        )
        world = Secured(
            name=name,
            port=port,
            root=root,
            certificate=certificate,
            env_file=env_file,
            state_dir=root / "state",
            supervisor=supervisor,
            client=client,
            refs=refs,
        )
        world.wait_for("registry.healthy")
        yield world
    finally:
        if supervisor is not None:
            supervisor.stop()
        # The registry and its network holder.
        remove_containers(client, MANAGED_LABEL, {name, f"{name}-net"}.__contains__)
        for ref in refs:
            subprocess.run(["docker", "rmi", "--force", ref], capture_output=True, check=False)
        shutil.rmtree(certs_d, ignore_errors=True)
        if made_certs_d:
            with contextlib.suppress(OSError):
                CERTS_D.rmdir()


@pytest.fixture(scope="module", params=["2", "3"], ids=["v2", "v3"])
def image_tag(request: pytest.FixtureRequest) -> str:
    """The registry test image's tag: each layout (registry:2, registry:3) in turn."""
    return str(request.param)


@pytest.fixture(scope="module")
def secured(
    docker_client: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory, image_tag: str
) -> Iterator[Secured]:
    """The module's deployment of this layout, shared by the tests that only look at it:
    a test that uses it must leave it as it found it."""
    with deploy_secured(docker_client, tmp_path_factory.mktemp("rs-sec"), image_tag) as world:
        yield world


@pytest.fixture
def own_secured(
    docker_client: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory, image_tag: str
) -> Iterator[Secured]:
    """A deployment of this layout for one test alone, which may change it."""
    with deploy_secured(docker_client, tmp_path_factory.mktemp("rs-sec"), image_tag) as world:
        yield world


@dataclass(frozen=True)
class DockerAsUser:
    """The docker CLI with a DOCKER_CONFIG of its own: credentials stay in ``config``."""

    config: Path

    def __call__(
        self, *args: str, stdin: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            ["docker", *args],
            input=stdin,
            env=child_env(DOCKER_CONFIG=str(self.config)),
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT,
            check=False,
        )
        if check and done.returncode != 0:
            pytest.fail(f"`docker {' '.join(args)}` exited {done.returncode}: {done.stderr}")
        return done


@pytest.fixture
def docker_as_user(tmp_path: Path) -> DockerAsUser:
    """The docker CLI as a user who has not logged in anywhere yet."""
    config = tmp_path / "docker-config"
    config.mkdir()
    return DockerAsUser(config)


def test_the_container_runs_hardened(secured: Secured) -> None:
    """Read-only root with a tmpfs /tmp, no-new-privileges, no capabilities, 256 MiB."""
    host = secured.client.api.inspect_container(secured.name)["HostConfig"]
    assert host["ReadonlyRootfs"] is True
    assert list(host["Tmpfs"]) == ["/tmp"]
    assert host["SecurityOpt"] == ["no-new-privileges:true"]
    assert host["CapDrop"] == ["ALL"]
    assert host["Memory"] == MEMORY


def test_the_served_certificate_verifies_against_the_configured_one(secured: Secured) -> None:
    """A client trusting only the configured certificate reaches /v2/ at 127.0.0.1 (401:
    auth is on); plain HTTP gets no registry answer."""
    with secured.session() as session:
        session.auth = None
        assert session.get(f"{secured.base}/v2/", timeout=5).status_code == 401
    plain = requests.Session()
    plain.trust_env = False
    answer = plain.get(f"http://127.0.0.1:{secured.port}/v2/", timeout=5)
    assert answer.status_code == 400  # Go's "client sent an HTTP request to an HTTPS server"
    assert "Docker-Distribution-Api-Version" not in answer.headers


def test_start_logs_the_expiring_certificate_and_no_exposure(secured: Secured) -> None:
    """The 10-day certificate is warned about at start; loopback is not an exposure."""
    expiring = secured.wait_for("tls.certificate_expiring")
    assert expiring["certificate"] == str(secured.certificate)
    assert expiring["days_left"] == pytest.approx(CERT_DAYS, abs=0.2)
    assert [] == [e for e in secured.events() if e["event"].startswith("security.")]


def test_check_reports_tls_auth_hardening_and_the_warning(secured: Secured) -> None:
    """`check` against the running registry: exit 0, the summary lines, the WARNING."""
    done = secured.cli("check", "--env-file", str(secured.env_file))
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert f"# tls: certificate {secured.certificate} (CN=rs-sec registry;" in out
    assert f"# auth: htpasswd {secured.root / 'htpasswd'} (1 user), mounted read-only" in out
    assert "# hardening: read-only root filesystem (tmpfs /tmp), no-new-privileges, " in out
    assert "# WARNING: TLS certificate expires in 10 days" in out
    assert f"# port {secured.port}: held by our container {secured.name}" in out


def test_anonymous_push_is_refused(secured: Secured, docker_as_user: DockerAsUser) -> None:
    """Without `docker login`, the registry refuses the push."""
    ref = secured.local_image()
    done = docker_as_user("push", ref, check=False)
    assert done.returncode != 0
    assert "no basic auth credentials" in done.stderr + done.stdout


def test_push_and_pull_after_login(secured: Secured, docker_as_user: DockerAsUser) -> None:
    """`docker login` (password on stdin), push, drop the local copy, pull: same image."""
    docker_as_user(
        "login",
        f"127.0.0.1:{secured.port}",
        "--username",
        USER,
        "--password-stdin",
        stdin=PASSWORD,
    )
    try:
        ref = secured.local_image()
        image_id = docker_as_user("image", "inspect", "--format", "{{.Id}}", ref).stdout.strip()
        docker_as_user("push", ref)
        docker_as_user("rmi", ref)
        docker_as_user("pull", ref)
        assert (
            image_id
            == docker_as_user("image", "inspect", "--format", "{{.Id}}", ref).stdout.strip()
        )
    finally:
        docker_as_user("logout", f"127.0.0.1:{secured.port}", check=False)
    config = json.loads((docker_as_user.config / "config.json").read_text())
    assert f"127.0.0.1:{secured.port}" not in config.get("auths", {})


PROBES_SEEN = 5
PROBES_TIMEOUT = 30.0


def probe_lines(secured: Secured, docker_cli: DockerAsUser, since: str) -> int:
    """The registry's access-log lines for our probe (401 under auth) since ``since``."""
    done = docker_cli("logs", "--since", since, secured.name)
    return sum(
        '"GET /v2/ HTTP/1.1" 401' in line and "python-requests/" in line
        for line in (done.stdout + done.stderr).splitlines()
    )


def wait_for_registry_log(secured: Secured, text: str, since: int) -> dict[str, Any]:
    """The first forwarded registry line after ``since`` whose message holds ``text``."""
    deadline = time.monotonic() + PROBES_TIMEOUT
    while True:
        for record in secured.events()[since:]:
            if record["event"] == "registry.log" and text in record.get("msg", ""):
                return record
        assert time.monotonic() < deadline, f"no forwarded registry line with {text!r}"
        time.sleep(0.05)


def test_the_probes_own_401s_are_not_forwarded_but_a_wrong_password_is(
    secured: Secured, docker_as_user: DockerAsUser
) -> None:
    """Under auth every probe (no credentials) gets a 401 and the registry logs a challenge:
    none is forwarded. A docker login with a wrong password still is."""
    since = f"{time.time():.6f}"  # a filter for `docker logs --since`, nothing compared
    deadline = time.monotonic() + PROBES_TIMEOUT
    while probe_lines(secured, docker_as_user, since) < PROBES_SEEN:
        assert time.monotonic() < deadline, f"fewer than {PROBES_SEEN} probes logged"
        time.sleep(0.2)
    mark = len(secured.events())

    done = docker_as_user(
        "login", f"127.0.0.1:{secured.port}", "--username", USER, "--password-stdin",
        stdin="not-the-password", check=False,
    )  # fmt: skip

    assert done.returncode != 0
    # Forwarded in order: once the login's failure is in, every probe line before it was read.
    failed = wait_for_registry_log(secured, "authentication failure", since=mark)
    assert failed["http_request_useragent"].startswith("docker/")
    from_probe = [
        e
        for e in secured.events()
        if e["event"] == "registry.log"
        and e.get("http_request_useragent", "").startswith("python-requests/")
    ]
    assert [] == from_probe


def test_a_user_added_while_the_registry_runs_can_log_in_at_once(own_secured: Secured) -> None:
    """`registry-supervisor htpasswd` rewrites the file in place: the registry, which sees
    it through a single-file bind mount, accepts the new user without a restart."""
    started_at = own_secured.client.api.inspect_container(own_secured.name)["State"]["StartedAt"]
    password = f"pw-{secrets.token_hex(8)}"
    own_secured.cli(
        "htpasswd", "rs-sec-late", "--file", str(own_secured.root / "htpasswd"),
        stdin=password + "\n", check=True,
    )  # fmt: skip
    with own_secured.session() as session:
        session.auth = ("rs-sec-late", password)
        assert session.get(f"{own_secured.base}/v2/", timeout=5).status_code == 200
    assert (
        started_at
        == own_secured.client.api.inspect_container(own_secured.name)["State"]["StartedAt"]
    )


def test_the_http_secret_is_kept_0600_and_the_registry_uses_it(secured: Secured) -> None:
    """The generated secret is in the state dir, 0600; the registry no longer says it made
    its own; the supervisor never logged it."""
    path = secured.state_dir / "http-secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    value = path.read_text().strip()
    logs = secured.client.api.logs(secured.name).decode(errors="replace")
    assert "No HTTP secret provided" not in logs
    assert "registry.healthy" in secured.stderr.read_text()
    assert value not in secured.stderr.read_text()


def test_an_interrupted_upload_resumes_after_the_registry_restarts(own_secured: Secured) -> None:
    """Half a blob is uploaded, the registry is killed and restarted by the supervisor,
    the rest is uploaded with the same state token: with a per-start random secret the
    token would no longer verify (404 BLOB_UPLOAD_INVALID)."""
    first, rest = secrets.token_bytes(4096), secrets.token_bytes(4096)
    digest = "sha256:" + hashlib.sha256(first + rest).hexdigest()
    with own_secured.session() as session:
        started = session.post(f"{own_secured.base}/v2/rs-sec/upload/blobs/uploads/", timeout=10)
        assert started.status_code == 202, started.text
        location = requests.compat.urljoin(own_secured.base, started.headers["Location"])
        patched = session.patch(
            location,
            data=first,
            headers={"Content-Type": "application/octet-stream"},
            timeout=10,
        )
        assert patched.status_code == 202, patched.text
        location = requests.compat.urljoin(own_secured.base, patched.headers["Location"])

        since = len(own_secured.events())
        own_secured.client.api.kill(own_secured.name)
        own_secured.wait_for("registry.healthy", since=since)

        done = session.put(
            f"{location}&digest={digest}",
            data=rest,
            headers={"Content-Type": "application/octet-stream"},
            timeout=10,
        )
        assert done.status_code == 201, done.text
        blob = session.get(f"{own_secured.base}/v2/rs-sec/upload/blobs/{digest}", timeout=10)
        assert blob.content == first + rest
