"""A fleet on one machine: several supervisors ("members") over one S3 store, Redis, HAProxy
in front, and docker CLI clients pushing and pulling through it.

Every piece is a context manager that removes what it started (processes it spawned,
containers named after it), and fails the test (``pytest.fail``) saying what it waited for.
Everything listens on this machine only: Redis, HAProxy and the members on 127.0.0.1, the S3
server (moto) on the default bridge's gateway address, where the registry containers (in
their holder's network namespace on the default bridge) reach it and nothing else does.

    with contextlib.ExitStack() as stack:
        s3 = stack.enter_context(S3Server(root / "s3"))
        redis = stack.enter_context(RedisServer(root / "redis"))
        fleet = fleet_id()
        env = {**s3.registry_env("fleet", f"/{fleet}"), "REGISTRY_HTTP_SECRET": "..."}
        members = [stack.enter_context(Member(root, fleet, m, env)) for m in ("m1", "m2")]
        for m in members:
            m.start()
        lb = stack.enter_context(HAProxy(root / "lb", members))
        lb.wait_all("UP")
        with ClientLoad(f"127.0.0.1:{lb.port}", f"{fleet}/load") as load:
            ...
        summary = load.summary()
        missing = load.verify_acknowledged()
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest
import redis
import requests

from support.docker import random_image_tar
from support.net import haproxy_show_stat
from support.process import SupervisorProcess, child_env, supervisor_argv

# Deadlines, in seconds: two shared cores, other suites on the same engine.
START_TIMEOUT = 30.0
HEALTHY_TIMEOUT = 60.0
LB_TIMEOUT = 30.0
CLIENT_TIMEOUT = 60.0  # one docker pull or push


# (title, text) of each fleet test's figures: the integration conftest prints them at the
# end of the run, where -q does not hide them.
FIGURES: list[tuple[str, str]] = []


def fleet_id() -> str:
    """A fresh fleet name: `fleet-<hex>`, the prefix of its containers and repositories."""
    return f"fleet-{secrets.token_hex(4)}"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on at ``host`` right now (racy, as support.net.free_port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def bridge_gateway() -> str:
    """The default bridge's gateway: the host's address on docker0, which containers on the
    default bridge reach (and nothing off this machine does)."""
    done = subprocess.run(
        ["docker", "network", "inspect", "bridge", "--format",
         "{{range .IPAM.Config}}{{.Gateway}} {{end}}"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    gateways = [g for g in done.stdout.split() if "." in g]
    if done.returncode != 0 or not gateways:
        pytest.fail(f"no IPv4 gateway on Docker's default bridge: {done.stderr.strip()}")
    return gateways[0]


def wait_until(
    find: Callable[[], Any], what: str, timeout: float, *, last: Callable[[], Any] | None = None
) -> Any:
    """Poll ``find`` until it returns something other than None; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        found = find()
        if found is not None:
            return found
        if time.monotonic() > deadline:
            seen = last() if last is not None else None
            pytest.fail(f"timed out after {timeout} s waiting for {what}; last: {seen}")
        time.sleep(0.05)


def _end(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if it outlives ``timeout``; reap."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)


# --- Redis ------------------------------------------------------------------------------------


class RedisServer:
    """A redis-server of the test's own: 127.0.0.1, a free port, ``root`` as its dir, no
    automatic snapshots (only ``restart(keep_data=True)`` writes its dump)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.dump = root / "dump.rdb"
        self.log_path = root / "redis.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)

    def _start(self) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port),
                 "--dir", str(self.root), "--dbfilename", self.dump.name,
                 "--save", "", "--appendonly", "no", "--daemonize", "no"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            )  # fmt: skip
        wait_until(self._answers, f"redis-server on port {self.port}", START_TIMEOUT,
                   last=lambda: self.log_path.read_text()[-2000:])  # fmt: skip

    def _answers(self) -> bool | None:
        if self.proc is not None and self.proc.poll() is not None:
            pytest.fail(f"redis-server exited {self.proc.returncode}: {self.log_path.read_text()}")
        try:
            with self.client() as client:
                return bool(client.ping()) or None
        except redis.RedisError:
            return None

    def restart(self, *, keep_data: bool) -> None:
        """Start it again on the same port. ``keep_data``: SHUTDOWN SAVE first, so it comes
        back with every key; otherwise kill -9 and remove its dump: Redis lost everything."""
        assert self.proc is not None, "redis-server was stopped"
        if keep_data:
            with self.client() as client:
                client.shutdown(save=True)
            self.proc.wait(timeout=START_TIMEOUT)
        else:
            self.proc.kill()
            self.proc.wait(timeout=START_TIMEOUT)
            self.dump.unlink(missing_ok=True)
        self._start()

    def stop(self) -> None:
        """kill -9 (nothing is saved) and reap."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait(timeout=START_TIMEOUT)
            self.proc = None

    def __enter__(self) -> RedisServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- S3 ---------------------------------------------------------------------------------------


class S3Server:
    """moto's S3 API, run from the test venv on the default bridge's gateway address (so the
    registry containers reach it), with ``bucket`` created. Its data lives in memory: it
    goes with the process."""

    def __init__(self, root: Path, bucket: str = "fleet") -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.host = bridge_gateway()
        self.port = free_port(self.host)
        self.endpoint = f"http://{self.host}:{self.port}"
        self.log_path = root / "moto.log"
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", self.host, "-p", str(self.port)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=root,
            )  # fmt: skip
        try:
            wait_until(self._answers, f"moto on {self.endpoint}", START_TIMEOUT,
                       last=lambda: self.log_path.read_text()[-2000:])  # fmt: skip
            self.create_bucket(bucket)
        except BaseException:
            _end(self.proc)
            raise
        self.bucket = bucket

    def _answers(self) -> bool | None:
        if self.proc.poll() is not None:
            pytest.fail(f"moto exited {self.proc.returncode}: {self.log_path.read_text()}")
        try:
            requests.get(f"{self.endpoint}/", timeout=1)
        except requests.RequestException:
            return None
        return True

    def create_bucket(self, bucket: str) -> None:
        """PUT the bucket (moto checks no signature)."""
        answer = requests.put(f"{self.endpoint}/{bucket}", timeout=10)
        assert 200 == answer.status_code, f"creating bucket {bucket}: {answer.text}"

    def keys(self, bucket: str | None = None, prefix: str = "") -> list[str]:
        """Every key in ``bucket`` under ``prefix`` (ListObjectsV2, all pages)."""
        found: list[str] = []
        token: str | None = None
        while True:
            params = {"list-type": "2", "prefix": prefix.lstrip("/")}
            if token:
                params["continuation-token"] = token
            answer = requests.get(f"{self.endpoint}/{bucket or self.bucket}", params=params,
                                  timeout=30)  # fmt: skip
            answer.raise_for_status()
            found += re.findall(r"<Key>([^<]*)</Key>", answer.text)
            match = re.search(r"<NextContinuationToken>([^<]*)<", answer.text)
            if not match:
                return found
            token = match.group(1)

    def registry_env(self, bucket: str | None = None, rootdirectory: str = "/") -> dict[str, str]:
        """The REGISTRY_* settings that put a registry's storage here, under
        ``rootdirectory`` (give each fleet its own). Redirects are off: clients cannot
        reach this endpoint, the registry serves blobs itself."""
        return {
            "REGISTRY_STORAGE": "s3",
            "REGISTRY_STORAGE_S3_REGIONENDPOINT": self.endpoint,
            "REGISTRY_STORAGE_S3_REGION": "us-east-1",
            "REGISTRY_STORAGE_S3_BUCKET": bucket or self.bucket,
            "REGISTRY_STORAGE_S3_ACCESSKEY": "fleet-test",
            "REGISTRY_STORAGE_S3_SECRETKEY": "fleet-test-secret",
            "REGISTRY_STORAGE_S3_FORCEPATHSTYLE": "true",
            "REGISTRY_STORAGE_S3_SECURE": "false",
            "REGISTRY_STORAGE_S3_ROOTDIRECTORY": rootdirectory,
            "REGISTRY_STORAGE_REDIRECT_DISABLE": "true",
        }

    def pause(self) -> None:
        """SIGSTOP moto: the store still accepts connections (the kernel's backlog) and
        answers nothing, as a very slow or very large store would; ``resume`` undoes it."""
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.resume()  # a stopped process would not see the SIGTERM
        _end(self.proc)

    def __enter__(self) -> S3Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- members ----------------------------------------------------------------------------------


class Member:
    """One member: `registry-supervisor run` (the installed console script) with its own
    container name (``fleet-<id>-<member>``), registry port, metrics port (/ready), state
    and data dirs under ``root/<member>``, and ``env`` on top of the base settings below.
    ``start()`` may be called again after ``kill()`` or ``stop()``: the new supervisor
    adopts the running registry. Closing kills every supervisor it started and removes its
    containers (the registry, ``-net``, ``-candidate``, ``-gc*``)."""

    def __init__(
        self,
        root: Path,
        fleet: str,
        member: str,
        env: dict[str, str] | None = None,
        *,
        image: str = "registry",
        tag: str = "2",
    ) -> None:
        self.member = member
        self.name = f"{fleet}-{member}"
        self.root = root / member
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.metrics_port = free_port()
        self.env_file = self.root / "registry.env"
        self.settings: dict[str, str] = {
            "MY_REG_IMAGE": image,
            "MY_REG_TAG": tag,
            "MY_REG_NAME": self.name,
            "MY_REG_DIR": str(self.root / "data"),
            "MY_REG_STATE_DIR": str(self.root / "state"),
            "MY_REG_PORT": str(self.port),
            "MY_REG_BIND": "127.0.0.1",
            "MY_REG_METRICS_ADDR": f"127.0.0.1:{self.metrics_port}",
            "MY_REG_PULL": "never",
            "MY_REG_HEALTH_INTERVAL": "0.5",
            "MY_REG_HEALTH_TIMEOUT": "1",
            "MY_REG_HEALTH_RETRIES": "3",
            "MY_REG_STARTUP_GRACE": "5",
            "MY_REG_STOP_TIMEOUT": "2",
            "MY_REG_READY_DRAIN": "2",
            "MY_REG_CANARY_INTERVAL": "0",
            "MY_REG_LOG_FORMAT": "json",
            "MY_REG_LOG_LEVEL": "info",
            **(env or {}),
        }
        self.processes: list[SupervisorProcess] = []
        self.commands: list[SupervisorProcess] = []  # `background` ones: update, gc
        self.write_env()
        self._docker = docker.from_env(timeout=60)

    # settings and processes

    def write_env(self, **overrides: str | int | None) -> Path:
        """(Re)write the env file from the settings; ``None`` drops a variable. A running
        supervisor reads it again on SIGHUP."""
        for key, value in overrides.items():
            if value is None:
                self.settings.pop(key, None)
            else:
                self.settings[key] = str(value)
        self.env_file.write_text(
            "# written by tests/support/fleet.py\n"
            + "".join(f"{key}={value}\n" for key, value in self.settings.items())
        )
        return self.env_file

    @property
    def sup(self) -> SupervisorProcess:
        """The supervisor started last."""
        assert self.processes, f"{self.name}: no supervisor started"
        return self.processes[-1]

    def start(
        self, *, wait_healthy: bool = True, env: dict[str, str] | None = None
    ) -> SupervisorProcess:
        """Launch `registry-supervisor run --env-file FILE` (its logs under
        ``root/<member>/supervisor-N``); by default wait for `registry.healthy`."""
        sup = SupervisorProcess(
            [*supervisor_argv(), "run", "--env-file", str(self.env_file)],
            env=child_env(**(env or {})),
            cwd=self.root,
            log_dir=self.root / f"supervisor-{len(self.processes)}",
        )
        self.processes.append(sup)
        if wait_healthy:
            self.wait_healthy()
        return sup

    def wait_healthy(self, since: int = 0, timeout: float = HEALTHY_TIMEOUT) -> dict[str, Any]:
        """The first `registry.healthy` of the current supervisor after ``since``."""
        return self.sup.wait_for_event("registry.healthy", timeout, since=since)

    def kill(self, sig: signal.Signals = signal.SIGKILL) -> None:
        """Send ``sig`` to the current supervisor; for SIGKILL also reap it (its registry
        keeps running: `--restart always`, and nobody stops it)."""
        if not self.sup.running:
            return
        if sig == signal.SIGKILL:
            self.sup.kill()
        else:
            self.sup.send(sig)

    def stop(self) -> int:
        """SIGTERM the current supervisor and reap it: its exit code."""
        return self.sup.stop()

    # what it serves

    @property
    def registry(self) -> str:
        """The registry container's name (``registry_container`` too)."""
        return self.name

    registry_container = registry

    @property
    def holder(self) -> str:
        return f"{self.name}-net"

    @property
    def registry_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v2/"

    def ready(self, timeout: float = 2.0) -> int | None:
        """Status code of GET /ready on the metrics port, or None when nothing answers."""
        try:
            return requests.get(
                f"http://127.0.0.1:{self.metrics_port}/ready", timeout=timeout
            ).status_code
        except requests.RequestException:
            return None

    def v2_status(self, timeout: float = 2.0) -> int | None:
        """Status code of GET /v2/ straight at this member's registry, or None."""
        try:
            return requests.get(self.registry_url, timeout=timeout).status_code
        except requests.RequestException:
            return None

    def upload_status(
        self, repository: str = "fleet-probe/writes", timeout: float = 2.0
    ) -> int | None:
        """Status code of POST /v2/<repository>/blobs/uploads/ straight at this member's
        registry (405: read-only), or None when it does not answer within ``timeout``. An
        upload it starts is left to the registry's purger."""
        try:
            return requests.post(
                f"{self.registry_url}{repository}/blobs/uploads/", timeout=timeout
            ).status_code
        except requests.RequestException:
            return None

    def registry_env(self) -> dict[str, str]:
        """The registry container's environment (``Config.Env``), empty when it is gone."""
        attrs = self.inspect()
        pairs = (attrs or {}).get("Config", {}).get("Env") or []
        return dict(pair.split("=", 1) for pair in pairs if "=" in pair)

    def cli(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """`registry-supervisor ARGS --env-file FILE` with this member's settings, to the
        end; its exit code, stdout and stderr."""
        return subprocess.run(
            [*supervisor_argv(), *args, "--env-file", str(self.env_file)],
            env=child_env(), cwd=self.root, capture_output=True, text=True, timeout=timeout,
            check=False,
        )  # fmt: skip

    def background(self, label: str, *args: str) -> SupervisorProcess:
        """`registry-supervisor ARGS --env-file FILE` in the background (its logs under
        ``root/<member>/<label>-N``); closing the member kills it if it still runs."""
        sup = SupervisorProcess(
            [*supervisor_argv(), *args, "--env-file", str(self.env_file)],
            env=child_env(),
            cwd=self.root,
            log_dir=self.root / f"{label}-{len(self.commands)}",
        )
        self.commands.append(sup)
        return sup

    def inspect(self, name: str | None = None) -> dict[str, Any] | None:
        """`docker inspect` of the registry (or ``name``), None when there is none."""
        try:
            attrs: dict[str, Any] = self._docker.api.inspect_container(name or self.name)
        except docker.errors.NotFound:
            return None
        return attrs

    def docker_kill(self, name: str | None = None, sig: str = "KILL") -> None:
        """`docker kill` the registry container (or ``name``): a crash the supervisor repairs."""
        self._docker.api.kill(name or self.name, signal=sig)

    def owns(self, container_name: str) -> bool:
        """A container this member's supervisor makes (the registry, its holder, a
        candidate, a gc collector)."""
        return container_name in {self.name, self.holder, f"{self.name}-candidate"} or (
            container_name.startswith(f"{self.name}-gc")
        )

    def close(self) -> None:
        for sup in [*self.processes, *self.commands]:
            sup.kill()
        for container in self._docker.api.containers(all=True, filters={"name": self.name}):
            names = {n.lstrip("/") for n in container.get("Names") or ()}
            if any(self.owns(n) for n in names):
                with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
                    self._docker.api.remove_container(container["Id"], force=True)
        self._docker.close()

    def __enter__(self) -> Member:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- HAProxy ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LogLine:
    """One request as HAProxy logged it (the test config's log-format)."""

    accepted: float  # epoch seconds
    server: str  # the server that answered (the last one tried), or <NOSRV>
    method: str
    uri: str
    status: int
    retries: int  # connection or L7 retries
    redispatched: bool
    termination: str  # the termination state, `----` when all went well
    location: str  # the response's Location header, if any

    @property
    def upload(self) -> str | None:
        """The upload session of a blob upload request: from its URI (PATCH, PUT) or, for
        the POST that opened it, from the Location it answered."""
        for text in (self.uri, self.location):
            match = re.search(r"/blobs/uploads/([0-9a-f-]{36})", text)
            if match:
                return match.group(1)
        return None


# L7 retries: what a GET or HEAD that reached a dying member is retried on (another member:
# `option redispatch 1`). Other methods (blob uploads) are retried only when the connection
# failed, before anything was sent (`disable-l7-retry`).
RETRY_ON = "conn-failure empty-response response-timeout 502 503 504"
LOG_FORMAT = "%Ts %s %HM %{+Q}HU %ST %rc %tsc %hs"


class HAProxy:
    """A haproxy process of the test's own: one frontend on 127.0.0.1:<free port>,
    `balance roundrobin` over the members' registry ports, each checked with
    `GET /ready` on its metrics port. Mode http (the members serve plain HTTP here), so
    idempotent requests that meet a dying member are retried on another one: see
    ``config``. Its log (one line per request) is at ``log_path``; ``requests()`` parses it.

    Why mode http here, where the shipped example (packaging/haproxy) is mode tcp: on
    127.0.0.1 a published port is docker-proxy's, which accepts the connection even when
    the registry behind it is dead and then resets it (an empty response, only an L7 retry
    saves it); from another host (iptables DNAT, as production sees a member) the same dead
    registry refuses the connection, which mode tcp's `retries` + `option redispatch`
    retry elsewhere."""

    def __init__(
        self,
        root: Path,
        members: Iterable[Member],
        *,
        inter: str = "500ms",
        fall: int = 2,
        rise: int = 1,
        retries: int = 3,
        retry_on: str = RETRY_ON,
        timeout_server: str = "30s",
    ) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.socket_path = root / "haproxy.sock"
        self.config_path = root / "haproxy.cfg"
        self.log_path = root / "haproxy.log"
        self.members = list(members)
        servers = "".join(
            f"    server {m.member} 127.0.0.1:{m.port} port {m.metrics_port}\n"
            for m in self.members
        )
        self.config = f"""\
global
    log stdout format raw local0
    stats socket {self.socket_path} mode 600 level admin

defaults
    mode http
    log global
    log-format "{LOG_FORMAT}"
    timeout connect 2s
    timeout client 10m
    timeout server {timeout_server}
    timeout check 2s
    # A request that fails on one member goes to another: every retry is redispatched
    # (retries on the same member wait min(timeout connect, 1 s) first).
    retries {retries}
    option redispatch 1
    retry-on {retry_on}

frontend registry
    bind 127.0.0.1:{self.port}
    capture response header Location len 300
    default_backend registry_members

backend registry_members
    balance roundrobin
    # Replaying a blob upload (PATCH, PUT) or a new one (POST) is not harmless: only
    # GET and HEAD are retried once something was sent.
    http-request disable-l7-retry unless METH_GET
    option httpchk
    http-check send meth GET uri /ready
    http-check expect status 200
    default-server check inter {inter} fall {fall} rise {rise}
{servers}"""
        self.config_path.write_text(self.config)
        checked = subprocess.run(
            ["haproxy", "-c", "-q", "-f", str(self.config_path)],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        assert 0 == checked.returncode, f"haproxy -c: {checked.stdout}{checked.stderr}"
        with self.log_path.open("wb") as log:
            # -db: stay in the foreground, so the test owns (and ends) this very process.
            self.proc = subprocess.Popen(
                ["haproxy", "-db", "-f", str(self.config_path)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            )  # fmt: skip

    @property
    def address(self) -> str:
        """host:port of the frontend, as a docker image reference starts."""
        return f"127.0.0.1:{self.port}"

    def show_stat(self) -> list[dict[str, str]]:
        """`show stat` on the stats socket, one dict per proxy or server line."""
        return haproxy_show_stat(self.socket_path)

    def servers(self) -> dict[str, dict[str, str]]:
        """The backend's servers' stats rows, by member name."""
        return {
            row["svname"]: row
            for row in self.show_stat()
            if row["pxname"] == "registry_members" and row["svname"] not in {"BACKEND"}
        }

    def status(self) -> dict[str, str]:
        """Each server's status: UP, DOWN, or on its way (``UP 1/2``)."""
        return {name: row["status"] for name, row in self.servers().items()}

    def _status_or_none(self) -> dict[str, str] | None:
        if self.proc.poll() is not None:
            pytest.fail(f"haproxy exited {self.proc.returncode}: {self.log_path.read_text()}")
        try:
            return self.status()
        except OSError:
            return None  # the socket is not there yet

    def wait_status(self, member: str, status: str, timeout: float = LB_TIMEOUT) -> None:
        """Wait until ``member``'s server is exactly ``status`` (UP or DOWN)."""
        wait_until(
            lambda: _true((self._status_or_none() or {}).get(member) == status),
            f"HAProxy server {member} to be {status}", timeout, last=self._status_or_none,
        )  # fmt: skip

    def wait_all(self, status: str = "UP", timeout: float = LB_TIMEOUT) -> None:
        """Wait until every server is exactly ``status``."""
        wait_until(
            lambda: _true(
                (s := self._status_or_none()) is not None
                and len(s) == len(self.members)
                and all(v == status for v in s.values())
            ),
            f"every HAProxy server to be {status}", timeout, last=self._status_or_none,
        )  # fmt: skip

    def requests(self) -> list[LogLine]:
        """Every request logged so far (complete lines only)."""
        found = []
        text = self.log_path.read_bytes().decode(errors="replace")
        for line in text.split("\n")[:-1]:
            parsed = _log_line(line)
            if parsed is not None:
                found.append(parsed)
        return found

    def upload_servers(self) -> dict[str, set[str]]:
        """For each blob upload session: the members that served its requests (the POST
        that opened it, its PATCHes, the PUT that closed it)."""
        spans: dict[str, set[str]] = {}
        for line in self.requests():
            upload = line.upload
            if upload is not None and line.status < 400:
                spans.setdefault(upload, set()).add(line.server)
        return spans

    def close(self) -> None:
        _end(self.proc)

    def __enter__(self) -> HAProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class StatusWatch:
    """Samples HAProxy's server statuses every ``every`` seconds on a thread, while open:
    how many members were out of the load balancer at once."""

    def __init__(self, lb: HAProxy, every: float = 0.1) -> None:
        self.lb = lb
        self.every = every
        self.samples: list[tuple[float, dict[str, str]]] = []  # (monotonic, statuses)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError):
                self.samples.append((time.monotonic(), self.lb.status()))
            self._stop.wait(self.every)

    @staticmethod
    def down(statuses: dict[str, str]) -> list[str]:
        """The servers out of rotation: DOWN (or on their way up: ``DOWN 1/2``), MAINT."""
        return sorted(n for n, v in statuses.items() if not v.startswith(("UP", "NOLB")))

    def most_down(self) -> tuple[int, list[str]]:
        """The most servers out at once, and which (the first sample that had them)."""
        worst: list[str] = []
        for _at, statuses in self.samples:
            down = self.down(statuses)
            if len(down) > len(worst):
                worst = down
        return len(worst), worst

    def ever_down(self) -> set[str]:
        return {n for _at, statuses in self.samples for n in self.down(statuses)}

    def __enter__(self) -> StatusWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def _true(ok: bool) -> bool | None:
    return True if ok else None


_LOG = re.compile(
    r'^(?P<ts>\d+) (?P<server>\S+) (?P<method>\S+) "(?P<uri>[^"]*)" (?P<status>-?\d+) '
    r"(?P<retries>\+?\d+) (?P<term>\S+) \{(?P<location>[^}]*)\}"
)


def _log_line(line: str) -> LogLine | None:
    match = _LOG.match(line)
    if match is None:
        return None
    retries = match["retries"]
    return LogLine(
        accepted=float(match["ts"]),
        server=match["server"],
        method=match["method"],
        uri=match["uri"],
        status=int(match["status"]),
        retries=int(retries.lstrip("+")),
        redispatched=retries.startswith("+"),
        termination=match["term"],
        location=match["location"],
    )


# --- an image source -----------------------------------------------------------------------


class SourceRegistry:
    """A registry of the test's own on loopback (the local test image, its storage inside
    the container) that publishes the image members run: ``image`` is what MY_REG_IMAGE
    names, ``tag`` MY_REG_TAG. ``publish`` pushes a local image under that tag; every
    member's host is this one engine, so the local tag is then pointed back at what the
    members run, as on hosts that have not pulled yet. Closing removes the container,
    what was built, and the tags and digest references it left."""

    def __init__(self, name: str, base: str = "registry:2", tag: str = "stable") -> None:
        self.name = name
        self.base = base
        self.port = free_port()
        self.tag = tag
        self.image = f"127.0.0.1:{self.port}/mirror/registry"
        self.ref = f"{self.image}:{tag}"
        self.built: list[str] = []
        ok, _out, err = _docker(
            "run", "-d", "--name", name, "-p", f"127.0.0.1:{self.port}:5000", base
        )
        if not ok:
            pytest.fail(f"starting the source registry {name}: {err.strip()}")
        try:
            wait_until(self._answers, f"source registry {name}", START_TIMEOUT)
        except BaseException:
            self.close()
            raise

    def _answers(self) -> bool | None:
        try:
            ok = requests.get(f"http://127.0.0.1:{self.port}/v2/", timeout=1).status_code == 200
        except requests.RequestException:
            return None
        return True if ok else None

    def publish(self, local: str, *, then_local: str | None = None) -> str:
        """Push ``local`` under the source's tag; the local tag names ``then_local`` after
        (default: ``local``). The pushed image's id."""
        for args in (("tag", local, self.ref), ("push", self.ref)):
            ok, _out, err = _docker(*args, timeout=120)
            if not ok:
                pytest.fail(f"docker {' '.join(args)}: {err.strip()}")
        pushed = image_id(self.ref)
        if then_local is not None:
            _docker("tag", then_local, self.ref)
        return pushed

    def build(self, dockerfile: str) -> str:
        """``docker build`` of ``dockerfile`` (FROM a local image: no network); its tag."""
        tag = f"{self.name}-build-{secrets.token_hex(3)}:latest"
        done = subprocess.run(
            ["docker", "build", "-q", "-t", tag, "-"], input=dockerfile, capture_output=True,
            text=True, timeout=120, check=False, env={**child_env(), "DOCKER_BUILDKIT": "0"},
        )  # fmt: skip
        if done.returncode != 0:
            pytest.fail(f"docker build: {done.stderr.strip()}")
        self.built.append(tag)
        return tag

    def close(self) -> None:
        _docker("rm", "--force", self.name)
        _docker("rmi", self.ref)
        for tag in self.built:
            _docker("rmi", "--force", tag)
        # Pushes and pulls left digest references (`<image>@sha256:…`) on the base image and
        # on what members pulled: removing them untags the one, deletes the other.
        ok, out, _err = _docker(
            "images", "--digests", "--format", "{{.Repository}}@{{.Digest}}", self.image
        )
        for ref in out.split() if ok else ():
            if ref.startswith(f"{self.image}@sha256:"):
                _docker("rmi", ref)

    def __enter__(self) -> SourceRegistry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def image_id(ref: str) -> str:
    """The local image id ``ref`` names ("" when none)."""
    ok, out, _err = _docker("image", "inspect", "--format", "{{.Id}}", ref)
    return out.strip() if ok else ""


# --- clients ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Attempt:
    """One docker pull or push: monotonic start and end, whether the CLI said it worked."""

    kind: str  # "pull" or "push"
    ref: str
    started: float  # time.monotonic()
    ended: float
    ok: bool
    error: str = ""  # the CLI's stderr (last lines) when it failed
    digest: str = ""  # a push's manifest digest, as the CLI reported it

    def describe(self, origin: float = 0.0) -> str:
        return (
            f"{self.kind} {self.ref} at {self.started - origin:.2f}-{self.ended - origin:.2f} s: "
            f"{self.error}"
        )


@dataclasses.dataclass(frozen=True)
class LoadSummary:
    pulls_ok: int
    pulls_failed: int
    pushes_ok: int
    pushes_failed: int
    failures: tuple[Attempt, ...]  # the failed pulls and pushes, in time order

    def describe(self, origin: float = 0.0, limit: int | None = None) -> str:
        """The counts, then the failures (the first ``limit`` of them)."""
        lines = [
            f"pulls ok={self.pulls_ok} failed={self.pulls_failed}; "
            f"pushes ok={self.pushes_ok} failed={self.pushes_failed}"
        ]
        shown = self.failures if limit is None else self.failures[:limit]
        lines += [f"  {a.describe(origin)}" for a in shown]
        if len(shown) < len(self.failures):
            lines.append(f"  ... and {len(self.failures) - len(shown)} more")
        return "\n".join(lines)


def _docker(
    *args: str, stdin: bytes | None = None, timeout: float = CLIENT_TIMEOUT
) -> tuple[bool, str, str]:
    """Run the docker CLI: (exit code 0, stdout, stderr); a timeout is a failure."""
    try:
        done = subprocess.run(
            ["docker", *args], input=stdin, capture_output=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return False, "", f"timed out after {timeout} s"
    return (
        done.returncode == 0,
        done.stdout.decode(errors="replace"),
        done.stderr.decode(errors="replace"),
    )


def _tail(text: str, lines: int = 3) -> str:
    return " | ".join(text.strip().splitlines()[-lines:])


def tiny_image(ref: str, size: int = 2048) -> None:
    """Make ``ref`` a local one-file image of ``size`` random bytes (`docker import`):
    content no other image shares. RuntimeError when the import fails (a client thread
    records it as a failed push)."""
    tar = random_image_tar(f"fleet/{secrets.token_hex(4)}.bin", size)
    ok, _out, err = _docker("import", "-", ref, stdin=tar)
    if not ok:
        raise RuntimeError(f"docker import {ref}: {err.strip()}")


_DIGEST = re.compile(r"digest: (sha256:[0-9a-f]{64})")


class ClientLoad:
    """Real docker CLI clients against ``registry`` (host:port, e.g. HAProxy's frontend;
    127.0.0.0/8 is an insecure registry to the engine by default), on threads until closed:

    - ``pullers`` threads each pull a seed image of their own (pushed on entering) by tag
      again and again, removing the local copy after each pull, so each pull transfers it.
      Their own: two pullers of one image in one engine race each other's `docker rmi`
      (containerd: "error adding content digest to lease ... not found"), a failure of
      the client's engine, not of the registry;
    - ``pushers`` threads each push fresh small images (`docker import` of random bytes),
      one after the other, removing each local copy after its push.

    Every attempt is an ``Attempt`` (``pulls``, ``pushes``). Images live in
    ``<registry>/<repository>-seed`` and ``<registry>/<repository>-push``. Closing stops
    the threads and removes whatever local images are left."""

    def __init__(
        self,
        registry: str,
        repository: str,
        *,
        pullers: int = 1,
        pushers: int = 1,
        pause: float = 0.0,
    ) -> None:
        self.registry = registry
        self.seeds = [f"{registry}/{repository}-seed:{i + 1}" for i in range(pullers)]
        self.push_repo = f"{registry}/{repository}-push"
        self.pause = pause
        self.pulls: list[Attempt] = []
        self.pushes: list[Attempt] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._counter = 0
        self._threads = [
            *(
                threading.Thread(target=self._pull_loop, args=(seed,), daemon=True)
                for seed in self.seeds
            ),
            *(threading.Thread(target=self._push_loop, daemon=True) for _ in range(pushers)),
        ]
        self.started = 0.0
        self.ended = 0.0

    # lifetime

    def __enter__(self) -> ClientLoad:
        self.push_seed()
        self.started = time.monotonic()
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.cleanup()

    def push_seed(self) -> None:
        """Push the seed images the pullers pull (and drop their local copies); fail the
        test if a push fails: the fleet must work before the load starts."""
        for seed in self.seeds:
            tiny_image(seed, size=8192)
            ok, _out, err = _docker("push", seed)
            _docker("rmi", seed)
            if not ok:
                pytest.fail(f"pushing the seed image {seed}: {err.strip()}")

    def stop(self) -> None:
        """Stop the clients after their current attempt (idempotent)."""
        self._stop.set()
        for thread in self._threads:
            if thread.is_alive():
                thread.join(timeout=CLIENT_TIMEOUT * 2)
        if not self.ended:
            self.ended = time.monotonic()

    def cleanup(self) -> None:
        refs = [*self.seeds, *(a.ref for a in self.pushes)]
        for i in range(0, len(refs), 50):
            _docker("rmi", "--force", *refs[i : i + 50])
        ok, out, _err = _docker("images", "--format", "{{.Repository}}@{{.Digest}}", self.push_repo)
        if ok and out.strip():
            _docker("rmi", "--force", *out.split())

    # the clients

    def _record(self, attempts: list[Attempt], attempt: Attempt) -> None:
        with self._lock:
            attempts.append(attempt)

    def _pull_loop(self, seed: str) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            ok, _out, err = _docker("pull", seed)
            self._record(
                self.pulls,
                Attempt("pull", seed, started, time.monotonic(), ok, "" if ok else _tail(err)),
            )
            _docker("rmi", seed)
            self._stop.wait(self.pause)

    def _push_loop(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                self._counter += 1
                ref = f"{self.push_repo}:{self._counter}-{secrets.token_hex(2)}"
            try:
                tiny_image(ref)
            except RuntimeError as failure:
                now = time.monotonic()
                self._record(
                    self.pushes, Attempt("push", ref, now, now, False, f"import: {failure}")
                )
                self._stop.wait(1.0)
                continue
            started = time.monotonic()
            ok, out, err = _docker("push", ref)
            match = _DIGEST.search(out)
            self._record(
                self.pushes,
                Attempt(
                    "push", ref, started, time.monotonic(), ok,
                    "" if ok else _tail(err or out), match.group(1) if match else "",
                ),
            )  # fmt: skip
            _docker("rmi", ref)
            self._stop.wait(self.pause)

    # results

    def summary(self) -> LoadSummary:
        with self._lock:
            pulls, pushes = list(self.pulls), list(self.pushes)
        failures = sorted((a for a in pulls + pushes if not a.ok), key=lambda a: a.started)
        return LoadSummary(
            pulls_ok=sum(a.ok for a in pulls),
            pulls_failed=sum(not a.ok for a in pulls),
            pushes_ok=sum(a.ok for a in pushes),
            pushes_failed=sum(not a.ok for a in pushes),
            failures=tuple(failures),
        )

    def acknowledged(self) -> list[Attempt]:
        """The pushes the CLI reported done."""
        with self._lock:
            return [a for a in self.pushes if a.ok]

    def verify_acknowledged(self, registry: str | None = None, workers: int = 4) -> list[str]:
        """Pull every acknowledged push back by its digest (from ``registry``, by default
        the one pushed to), dropping each local copy after; the ones that did not pull,
        with why. Call after ``stop()``."""
        repo = self.push_repo
        if registry is not None:
            repo = f"{registry}/{repo.split('/', 1)[1]}"

        def check(push: Attempt) -> str | None:
            if not push.digest:
                return f"{push.ref}: the CLI reported no digest"
            ref = f"{repo}@{push.digest}"
            ok, _out, err = _docker("pull", ref)
            _docker("rmi", ref)
            return None if ok else f"{push.ref} ({ref}): {_tail(err)}"

        with ThreadPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(check, self.acknowledged()))
        return [r for r in results if r is not None]


def supervisor_events(member: Member) -> Iterator[dict[str, Any]]:
    """Every event of every supervisor ``member`` started, in order."""
    for sup in member.processes:
        yield from sup.events()


def dump_logs(members: Iterable[Member], count: int = 15) -> str:
    """The last lines of each member's current supervisor, for a failure message."""
    parts = []
    for m in members:
        if m.processes:
            parts.append(f"--- {m.name} ---\n{m.sup.tail(count)}")
    return "\n".join(parts)


__all__ = [
    "FIGURES",
    "Attempt",
    "ClientLoad",
    "HAProxy",
    "LoadSummary",
    "LogLine",
    "Member",
    "RedisServer",
    "S3Server",
    "SourceRegistry",
    "StatusWatch",
    "bridge_gateway",
    "dump_logs",
    "fleet_id",
    "free_port",
    "image_id",
    "supervisor_events",
    "tiny_image",
    "wait_until",
]
