"""The secure setup against a real engine and registry: TLS, htpasswd auth, a persistent
HTTP secret and a hardened container, used with the real docker CLI.

One registry is started for the module (TLS with a self-signed certificate made here and
valid for 10 more days, one htpasswd user, a 256 MiB memory limit, every hardening
default, no REGISTRY_HTTP_SECRET) and each test checks one behaviour of it; the upload
test restarts the registry and so runs last.

Self-contained on purpose: this module imports nothing from conftest.py. The docker CLI
gets its own DOCKER_CONFIG (a temporary directory), so `docker login` never touches
~/.docker; the certs.d entry for the registry's port is created and removed here. Only
the container named here (and labelled by the supervisor) is removed. Without an engine
the module fails, never skips.

Docker treats 127.0.0.0/8 as an insecure registry (it skips verification there), so the
docker CLI proves TLS is served, and a Python client verifying against the configured
certificate (hostname 127.0.0.1) proves the certificate is the one served.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import ipaddress
import json
import os
import secrets
import shutil
import socket
import stat
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

pytestmark = pytest.mark.integration

TEST_IMAGE = "registry:2"
MANAGED_LABEL = "registry-supervisor.managed-by"
USER, PASSWORD = "rs-sec-user", f"pw-{secrets.token_hex(8)}"
MEMORY = 256 << 20
CERT_DAYS = 10.5
CERTS_D = Path("/etc/docker/certs.d")
STARTUP_TIMEOUT = 60.0
CLI_TIMEOUT = 120.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def self_signed(directory: Path, days: float) -> Path:
    """certificate.pem and key.pem for 127.0.0.1 and localhost; the certificate's path."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rs-sec registry")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=days))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(mode=0o700)
    crt = directory / "certificate.pem"
    crt.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path = directory / "key.pem"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return crt


def supervisor_argv() -> list[str]:
    """The installed package, run as `python -m supervisor` from a directory without sources."""
    return [sys.executable, "-m", "supervisor"]


def child_env(**extra: str) -> dict[str, str]:
    """Our environment minus what would steer the supervisor or the docker CLI elsewhere."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("MY_REG_", "REGISTRY_", "NOTIFY_SOCKET", "WATCHDOG_"))
    }
    env.update(extra)
    return env


@dataclass
class Secured:
    """The module's registry: where it is, how to reach it, what it logged."""

    name: str
    port: int
    root: Path
    certificate: Path
    env_file: Path
    state_dir: Path
    docker_config: Path
    stderr: Path
    process: subprocess.Popen[bytes]
    client: docker.DockerClient
    refs: set[str] = field(default_factory=set)

    @property
    def base(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def events(self) -> list[dict[str, Any]]:
        found = []
        for line in self.stderr.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict) and "event" in record:
                    found.append(record)
        return found

    def wait_for(
        self, event: str, since: int = 0, timeout: float = STARTUP_TIMEOUT
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            for record in self.events()[since:]:
                if record["event"] == event:
                    return record
            if self.process.poll() is not None:
                pytest.fail(
                    f"supervisor exited {self.process.returncode} before {event}:\n"
                    f"{self.stderr.read_text()[-3000:]}"
                )
            if time.monotonic() > deadline:
                pytest.fail(f"no {event} within {timeout} s:\n{self.stderr.read_text()[-3000:]}")
            time.sleep(0.05)

    def docker(
        self, *args: str, stdin: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """The docker CLI with this module's own DOCKER_CONFIG (credentials stay here)."""
        done = subprocess.run(
            ["docker", *args],
            input=stdin,
            env=child_env(DOCKER_CONFIG=str(self.docker_config)),
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT,
            check=False,
        )
        if check and done.returncode != 0:
            pytest.fail(f"`docker {' '.join(args)}` exited {done.returncode}: {done.stderr}")
        return done

    def local_image(self) -> str:
        """A one-file image of random content, tagged for this registry."""
        ref = f"127.0.0.1:{self.port}/rs-sec/img:{secrets.token_hex(3)}"
        payload = secrets.token_bytes(2048)
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            member = tarfile.TarInfo("rs-sec.bin")
            member.size = len(payload)
            tar.addfile(member, io.BytesIO(payload))
        subprocess.run(
            ["docker", "import", "-", ref],
            input=buffer.getvalue(),
            capture_output=True,
            timeout=CLI_TIMEOUT,
            check=True,
        )
        self.refs.add(ref)
        return ref

    def session(self) -> requests.Session:
        """HTTPS verified against the configured certificate, as alice would log in."""
        session = requests.Session()
        session.trust_env = False
        session.verify = str(self.certificate)
        session.auth = (USER, PASSWORD)
        return session


@pytest.fixture(scope="module", params=["2", "3"], ids=["v2", "v3"])
def secured(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Secured]:
    """One hardened deployment per image layout (registry:2, registry:3), for the module."""
    try:
        client = docker.from_env(timeout=60)
        client.ping()
        client.images.get(TEST_IMAGE)
    except docker.errors.ImageNotFound:
        pytest.fail(f"{TEST_IMAGE} is missing; run tests/images/build-registry-image.sh")
    except docker.errors.DockerException as err:
        pytest.fail(f"no Docker engine answers ({err}); start dockerd or run tests/run")
    root = tmp_path_factory.mktemp("rs-sec")
    name, port = f"rs-sec-{secrets.token_hex(4)}", free_port()
    certificate = self_signed(root / "tls", CERT_DAYS)
    workdir = root / "work"  # no stray .env, no source tree on sys.path
    workdir.mkdir()
    subprocess.run(
        [*supervisor_argv(), "htpasswd", USER, "--file", str(root / "htpasswd")],
        input=PASSWORD + "\n",
        env=child_env(),
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        check=True,
    )
    env_file = root / "registry.env"
    env_file.write_text(
        "\n".join(
            [
                "MY_REG_IMAGE=registry",
                f"MY_REG_TAG={request.param}",
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
    (root / "docker-config").mkdir()
    stderr = root / "supervisor.stderr"
    refs: set[str] = set()
    process: subprocess.Popen[bytes] | None = None
    try:
        certs_d.mkdir(parents=True)
        shutil.copyfile(certificate, certs_d / "ca.crt")
        with stderr.open("wb") as err_file:
            process = subprocess.Popen(
                [*supervisor_argv(), "run", "--env-file", str(env_file)],
                env=child_env(),
                cwd=workdir,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err_file,
            )
        world = Secured(
            name=name,
            port=port,
            root=root,
            certificate=certificate,
            env_file=env_file,
            state_dir=root / "state",
            docker_config=root / "docker-config",
            stderr=stderr,
            process=process,
            client=client,
            refs=refs,
        )
        world.wait_for("registry.healthy")
        yield world
    finally:
        if process is not None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=30)
        for container in client.containers.list(all=True, filters={"name": name}):
            # The registry and its network holder.
            if container.name in (name, f"{name}-net") and container.labels.get(MANAGED_LABEL):
                container.remove(force=True)
        for ref in refs:
            subprocess.run(["docker", "rmi", "--force", ref], capture_output=True, check=False)
        shutil.rmtree(certs_d, ignore_errors=True)
        if made_certs_d:
            with contextlib.suppress(OSError):
                CERTS_D.rmdir()
        client.close()


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
    done = subprocess.run(
        [*supervisor_argv(), "check", "--env-file", str(secured.env_file)],
        env=child_env(),
        cwd=secured.root / "work",
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert f"# tls: certificate {secured.certificate} (CN=rs-sec registry;" in out
    assert f"# auth: htpasswd {secured.root / 'htpasswd'} (1 user), mounted read-only" in out
    assert "# hardening: read-only root filesystem (tmpfs /tmp), no-new-privileges, " in out
    assert "# WARNING: TLS certificate expires in 10 days" in out
    assert f"# port {secured.port}: held by our container {secured.name}" in out


def test_anonymous_push_is_refused(secured: Secured) -> None:
    """Without `docker login`, the registry refuses the push."""
    ref = secured.local_image()
    done = secured.docker("push", ref, check=False)
    assert done.returncode != 0
    assert "no basic auth credentials" in done.stderr + done.stdout


def test_push_and_pull_after_login(secured: Secured) -> None:
    """`docker login` (password on stdin), push, drop the local copy, pull: same image."""
    secured.docker(
        "login",
        f"127.0.0.1:{secured.port}",
        "--username",
        USER,
        "--password-stdin",
        stdin=PASSWORD,
    )
    try:
        ref = secured.local_image()
        image_id = secured.docker("image", "inspect", "--format", "{{.Id}}", ref).stdout.strip()
        secured.docker("push", ref)
        secured.docker("rmi", ref)
        secured.docker("pull", ref)
        assert (
            image_id
            == secured.docker("image", "inspect", "--format", "{{.Id}}", ref).stdout.strip()
        )
    finally:
        secured.docker("logout", f"127.0.0.1:{secured.port}", check=False)
    config = json.loads((secured.docker_config / "config.json").read_text())
    assert f"127.0.0.1:{secured.port}" not in config.get("auths", {})


PROBES_SEEN = 5
PROBES_TIMEOUT = 30.0


def probe_lines(secured: Secured, since: str) -> int:
    """The registry's access-log lines for our probe (401 under auth) since ``since``."""
    done = secured.docker("logs", "--since", since, secured.name)
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


def test_the_probes_own_401s_are_not_forwarded_but_a_wrong_password_is(secured: Secured) -> None:
    """Under auth every probe (no credentials) gets a 401 and the registry logs a challenge:
    none is forwarded. A docker login with a wrong password still is."""
    since = f"{time.time():.6f}"  # a filter for `docker logs --since`, nothing compared
    deadline = time.monotonic() + PROBES_TIMEOUT
    while probe_lines(secured, since) < PROBES_SEEN:
        assert time.monotonic() < deadline, f"fewer than {PROBES_SEEN} probes logged"
        time.sleep(0.2)
    mark = len(secured.events())

    done = secured.docker(
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


def test_a_user_added_while_the_registry_runs_can_log_in_at_once(secured: Secured) -> None:
    """`registry-supervisor htpasswd` rewrites the file in place: the registry, which sees
    it through a single-file bind mount, accepts the new user without a restart."""
    started_at = secured.client.api.inspect_container(secured.name)["State"]["StartedAt"]
    password = f"pw-{secrets.token_hex(8)}"
    subprocess.run(
        [*supervisor_argv(), "htpasswd", "rs-sec-late", "--file", str(secured.root / "htpasswd")],
        input=password + "\n",
        env=child_env(),
        cwd=secured.root / "work",
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        check=True,
    )
    with secured.session() as session:
        session.auth = ("rs-sec-late", password)
        assert session.get(f"{secured.base}/v2/", timeout=5).status_code == 200
    assert started_at == secured.client.api.inspect_container(secured.name)["State"]["StartedAt"]


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


def test_an_interrupted_upload_resumes_after_the_registry_restarts(secured: Secured) -> None:
    """Half a blob is uploaded, the registry is killed and restarted by the supervisor,
    the rest is uploaded with the same state token: with a per-start random secret the
    token would no longer verify (404 BLOB_UPLOAD_INVALID)."""
    first, rest = secrets.token_bytes(4096), secrets.token_bytes(4096)
    digest = "sha256:" + hashlib.sha256(first + rest).hexdigest()
    with secured.session() as session:
        started = session.post(f"{secured.base}/v2/rs-sec/upload/blobs/uploads/", timeout=10)
        assert started.status_code == 202, started.text
        location = requests.compat.urljoin(secured.base, started.headers["Location"])
        patched = session.patch(
            location,
            data=first,
            headers={"Content-Type": "application/octet-stream"},
            timeout=10,
        )
        assert patched.status_code == 202, patched.text
        location = requests.compat.urljoin(secured.base, patched.headers["Location"])

        since = len(secured.events())
        secured.client.api.kill(secured.name)
        secured.wait_for("registry.healthy", since=since)

        done = session.put(
            f"{location}&digest={digest}",
            data=rest,
            headers={"Content-Type": "application/octet-stream"},
            timeout=10,
        )
        assert done.status_code == 201, done.text
        blob = session.get(f"{secured.base}/v2/rs-sec/upload/blobs/{digest}", timeout=10)
        assert blob.content == first + rest
