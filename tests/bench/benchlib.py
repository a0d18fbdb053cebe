"""Shared pieces of the benchmarks: the engine, the probe poller, the supervisor process.

Benchmarks, not tests: nothing here asserts a wall-clock time. Every container is named
``rs-bench-<hex>-...`` and only those are removed; the engine is shared with other suites.
All times come from ``time.perf_counter()`` in this process, so intervals measured in
different threads are comparable.
"""

from __future__ import annotations

import compileall
import contextlib
import hashlib
import http.client
import os
import platform
import secrets
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import docker
import docker.errors

# The bench runs as `python tests/bench/recovery.py`, with only tests/bench on sys.path: the
# helpers it shares with the test suites are in tests/support, so tests/ goes on it too.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from support.docker import random_image_tar  # noqa: F401 (planned.py's images)
from support.net import free_port  # noqa: F401 (the bench scripts call b.free_port)
from support.notify import NotifySocket  # noqa: F401 (the bench scripts use b.NotifySocket)
from support.process import SupervisorProcess, child_env

REPO = Path(__file__).resolve().parents[2]
# The installed console script beside the interpreter running the bench (.venv/bin).
CONSOLE_SCRIPT = Path(sys.executable).parent / "registry-supervisor"
# Where the console script imports the `supervisor` package from (put first on PYTHONPATH):
# a snapshot of the working tree (snapshot_supervisor), not whatever copy `pip install .`
# last left in the venv. --supervisor-src points it at another tree, e.g. to try a fix.
SUPERVISOR_SRC = REPO
# The seed's image: `docker run ... registry` means registry:latest.
IMAGE = "registry"
NAME_PREFIX = "rs-bench-"
DOCKERD_LOG = Path("/var/log/dockerd.log")

# The supervisor's defaults, spelled out so the run does not depend on them silently.
HEALTH_INTERVAL_S = 5.0
HEALTH_TIMEOUT_S = 1.0
HEALTH_RETRIES = 3
# How long a SIGTERMed supervisor may take to stop its registry before it is SIGKILLed.
STOP_TIMEOUT_S = 60.0

# The poller: one fresh connection every POLL_EVERY_S, each with a short timeout. A
# SIGSTOPped registry keeps the published port accepting connections (docker-proxy), so
# only the timeout tells a hung registry from a slow one.
POLL_EVERY_S = 0.01
POLL_TIMEOUT_S = 0.2

CLK_TCK = os.sysconf("SC_CLK_TCK")


def now() -> float:
    return time.perf_counter()


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def utc_now_ms() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def unique_prefix() -> str:
    return f"{NAME_PREFIX}{secrets.token_hex(3)}"


# -- the probe ----------------------------------------------------------------------------


def answers(port: int, timeout: float = POLL_TIMEOUT_S) -> bool:
    """True when ``GET /v2/`` on a fresh connection answers 200 within ``timeout``."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", "/v2/")
        return conn.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def wait_answering(port: int, timeout: float, what: str) -> float:
    """Poll until /v2/ answers 200; return when it did. Raise saying what was awaited."""
    deadline = now() + timeout
    while now() < deadline:
        if answers(port):
            return now()
        time.sleep(POLL_EVERY_S)
    raise TimeoutError(f"{what}: GET /v2/ on 127.0.0.1:{port} did not answer 200 in {timeout} s")


@dataclass
class Recovery:
    """One poller's view of one fault: when the registry stopped and started answering."""

    port: int
    t0: float = 0.0
    down_at: float | None = None
    up_at: float | None = None
    polls: int = 0

    @property
    def seconds(self) -> float | None:
        """Fault injected -> answering again; None when it never came back in time."""
        return None if self.up_at is None else self.up_at - self.t0


class StartGate:
    """Opens when the engine reports a `start` of the named container since a given time.

    Follows the event stream in a thread and subscribes again when it ends (the engine
    restarting): with ``since`` the engine replays what happened while we were away.
    """

    def __init__(self, name: str, since_unix: float) -> None:
        self.name = name
        self.since = since_unix
        self.opened_at: float | None = None
        self._open = threading.Event()
        self._closed = threading.Event()
        self._stream: Any = None
        self._thread = threading.Thread(target=self._run, name=f"gate-{name}", daemon=True)
        self._thread.start()

    def is_open(self) -> bool:
        return self._open.is_set()

    def wait(self, timeout: float) -> bool:
        return self._open.wait(timeout)

    def _run(self) -> None:
        while not self._closed.is_set() and not self._open.is_set():
            client = api()
            try:
                # A fractional "since" (the API takes one; docker-py's stubs say int): a
                # datetime would be truncated to the second and replay an older start.
                self._stream = client.events(  # type: ignore[call-overload]
                    since=f"{self.since:.6f}",
                    filters={"type": "container", "container": self.name, "event": ["start"]},
                    decode=True,
                )
                for raw in self._stream:
                    attributes = (raw.get("Actor") or {}).get("Attributes") or {}
                    if attributes.get("name") == self.name:
                        self.opened_at = now()
                        self._open.set()
                        return
            except Exception:  # noqa: BLE001 (engine away: subscribe again shortly)
                time.sleep(0.05)
            finally:
                client.close()

    def close(self) -> None:
        self._closed.set()
        stream = self._stream
        if stream is not None:
            with contextlib.suppress(Exception):
                stream.close()
        self._thread.join(timeout=2)


class Poller:
    """Watches /v2/ through a fault: when it stopped answering, when it answered again.

    Probes start every ~10 ms and overlap (each on its own connection and thread, 0.2 s
    timeout), so a stuck one does not delay the next. Hazard, measured here: a connection
    to the published port while a container is *starting* (docker-proxy already listening,
    the container's network not up yet) stalls about 1 s, and delays the first answers of
    everyone after it: an every-10-ms poller turns a 0.35 s `docker start` into 1.1-1.3 s.
    So once a probe has failed, probing pauses until the engine reports the container
    started (``StartGate``), for every subject alike; the engine's event adds a few tens
    of milliseconds to every figure.

    Start it, then ``arm(t0)`` right before injecting the fault. Recovery is the first 200
    from a probe that started once (1) a probe had failed, (2) the container had started
    again and (3) ``effective()`` had been called, when it was ("the fault has certainly
    taken effect": dockerd gone, `docker stop` returned).
    """

    MAX_IN_FLIGHT = 64

    def __init__(self, port: int, give_up_s: float, container: str) -> None:
        self.result = Recovery(port)
        self.give_up_s = give_up_s
        self.container = container
        self.gate: StartGate | None = None
        self._lock = threading.Lock()
        self._down = threading.Event()
        self._effective_at = 0.0
        self._armed = threading.Event()
        self._done = threading.Event()
        self._pool = ThreadPoolExecutor(self.MAX_IN_FLIGHT, thread_name_prefix=f"probe-{port}")
        self._thread = threading.Thread(target=self._run, name=f"poll-{port}", daemon=True)

    def start(self) -> Poller:
        self._thread.start()
        return self

    def arm(self, t0: float) -> None:
        self.gate = StartGate(self.container, time.time() - 0.05)
        self.result.t0 = t0
        self._effective_at = t0
        self._armed.set()

    def effective(self) -> None:
        self._effective_at = now()

    def join(self) -> Recovery:
        self._thread.join()
        if self.gate is not None:
            self.gate.close()
        return self.result

    def _run(self) -> None:
        self._armed.wait()
        assert self.gate is not None
        t0 = self.result.t0
        tick = t0
        try:
            while not self._done.is_set() and now() - t0 <= self.give_up_s:
                if self._down.is_set() and not self.gate.is_open():
                    self.gate.wait(POLL_EVERY_S)
                    tick = now()
                    continue
                self._pool.submit(self._probe)
                tick += POLL_EVERY_S
                self._done.wait(max(0.0, tick - now()))
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def _probe(self) -> None:
        if self._done.is_set():
            return
        assert self.gate is not None
        counts = self._down.is_set() and self.gate.is_open()
        start = now()
        ok = answers(self.result.port)
        end = now()
        with self._lock:
            r = self.result
            r.polls += 1
            if not ok:
                if r.down_at is None or end < r.down_at:
                    r.down_at = end
                self._down.set()
            elif counts and start >= self._effective_at and r.up_at is None:
                r.up_at = end
                self._done.set()


# -- the engine ----------------------------------------------------------------------------


def api() -> docker.APIClient:
    return docker.APIClient(base_url="unix:///var/run/docker.sock", version="1.41", timeout=60)


def wait_engine(timeout: float = 120.0) -> float:
    """Wait until the engine answers a ping; return when it did."""
    deadline = now() + timeout
    while now() < deadline:
        client = api()
        try:
            client.ping()
            return now()
        except Exception:  # noqa: BLE001 (any failure means "not yet")
            time.sleep(0.05)
        finally:
            client.close()
    raise TimeoutError(f"Docker engine did not answer a ping in {timeout} s")


def container_pid(client: docker.APIClient, name: str) -> int:
    state = client.inspect_container(name)["State"]
    if not state.get("Running") or not state.get("Pid"):
        raise RuntimeError(f"{name}: expected a running container, found {state.get('Status')}")
    return int(state["Pid"])


def remove_container(client: docker.APIClient, name: str) -> None:
    """Remove a container by its exact name, and the supervisor's network holder that goes
    with it (`<name>-net`), if any (ours only: callers pass rs-bench-* names)."""
    if not name.startswith(NAME_PREFIX):
        raise ValueError(f"refusing to remove {name!r}: not a bench container")
    for each in (name, f"{name}-net"):
        with contextlib.suppress(docker.errors.NotFound):
            client.remove_container(each, force=True, v=False)


def docker_cli(*args: str, timeout: float = 120.0) -> str:
    done = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"docker {shlex.join(args)}: {done.stderr.strip()}")
    return done.stdout.strip()


def seed_run_argv(name: str, port: int, data_dir: Path) -> list[str]:
    """The seed's `docker run`, published on loopback only (no other address exists here)."""
    return [
        "run", "-d", "--restart", "always",
        "-p", f"127.0.0.1:{port}:5000",
        "-v", f"{data_dir}:/var/lib/registry",
        "--name", name, IMAGE,
    ]  # fmt: skip


def floor_create_argv(name: str, port: int, data_dir: Path) -> list[str]:
    """The same container without a restart policy: a bare `docker start` is the floor."""
    return [
        "create",
        "-p", f"127.0.0.1:{port}:5000",
        "-v", f"{data_dir}:/var/lib/registry",
        "--name", name, IMAGE,
    ]  # fmt: skip


class Dockerd:
    """Restart the Docker engine the way a machine without systemd can.

    dockerd was started as a background process: SIGTERM it, wait until it is gone, start
    it again with the same command line, working directory and log file. ``ensure_up()``
    belongs in a ``finally``: the engine is shared and must be back whatever happened.
    """

    def __init__(self) -> None:
        pid = self.pid()
        self.argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]
        self.cwd = os.readlink(f"/proc/{pid}/cwd")
        self._children: dict[int, subprocess.Popen[bytes]] = {}

    @staticmethod
    def pid() -> int:
        found = subprocess.run(
            ["pgrep", "-x", "dockerd"], capture_output=True, text=True, check=False
        ).stdout.split()
        if len(found) != 1:
            raise RuntimeError(f"expected one dockerd process, found {found or 'none'}")
        return int(found[0])

    @staticmethod
    def _alive(pid: int) -> bool:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except FileNotFoundError:
            return False
        return stat.rpartition(")")[2].split()[0] != "Z"

    def stop(self, timeout: float = 120.0) -> float:
        """SIGTERM dockerd and wait for it to exit; return when it had."""
        pid = self.pid()
        os.kill(pid, signal.SIGTERM)
        child = self._children.pop(pid, None)
        deadline = now() + timeout
        while now() < deadline:
            if child is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.wait(timeout=0.02)
            if not self._alive(pid):
                return now()
            time.sleep(0.02)
        raise TimeoutError(f"dockerd (pid {pid}) did not exit within {timeout} s of SIGTERM")

    def start(self) -> None:
        with DOCKERD_LOG.open("ab") as log:
            child = subprocess.Popen(
                self.argv,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # nohup: our exit (or a signal to our process group) must not take it along.
                start_new_session=True,
                env=child_env(),
            )
        self._children[child.pid] = child

    def ensure_up(self) -> None:
        """Start dockerd if it is not running, then wait until it answers."""
        try:
            self.pid()
        except RuntimeError:
            self.start()
        wait_engine()


# -- the supervisor --------------------------------------------------------------------------


def supervisor_env_file(workdir: Path, name: str, port: int, data_dir: Path, **extra: str) -> Path:
    """Write ``workdir/<name>.env``: the supervisor at its default settings, logging JSON."""
    settings = {
        "MY_REG_IMAGE": IMAGE,
        "MY_REG_TAG": "latest",
        "MY_REG_NAME": name,
        "MY_REG_PORT": str(port),
        "MY_REG_DIR": str(data_dir),
        "MY_REG_BIND": "127.0.0.1",
        "MY_REG_PULL": "never",
        "MY_REG_HEALTH_INTERVAL": f"{HEALTH_INTERVAL_S:g}",
        "MY_REG_HEALTH_TIMEOUT": f"{HEALTH_TIMEOUT_S:g}",
        "MY_REG_HEALTH_RETRIES": str(HEALTH_RETRIES),
        "MY_REG_LOG_FORMAT": "json",
        "MY_REG_LOG_LEVEL": "info",
        **extra,
    }
    env_file = workdir / f"{name}.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in settings.items()))
    return env_file


def start_supervisor(env_file: Path, notify_socket: str | None = None) -> SupervisorProcess:
    """Exec `registry-supervisor run --env-file F` from F's directory, importing the snapshot
    (SUPERVISOR_SRC first on PYTHONPATH); its logs go to a new directory beside F. Its
    ``started_at`` is ``now()`` right before the exec."""
    env = child_env(PYTHONPATH=str(SUPERVISOR_SRC))
    if notify_socket:
        env["NOTIFY_SOCKET"] = notify_socket
    workdir = env_file.parent
    return SupervisorProcess(
        [str(CONSOLE_SCRIPT), "run", "--env-file", str(env_file)],
        env=env,
        cwd=workdir,
        log_dir=Path(tempfile.mkdtemp(prefix=f"{env_file.stem}-log-", dir=workdir)),
    )


def proc_status(pid: int) -> dict[str, int]:
    """VmHWM, VmRSS (kB) and Threads from /proc/PID/status."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmHWM", "VmRSS", "Threads"):
            values[key] = int(rest.split()[0])
    return values


def cpu_ticks(pid: int) -> int:
    """utime + stime of the whole process (every thread), in clock ticks."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    # After the ")" field 0 is state (stat field 3): utime is field 14, stime field 15.
    return int(fields[11]) + int(fields[12])


# -- reporting -------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    client = api()
    try:
        version = client.version()
    finally:
        client.close()
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "kernel": platform.release(),
        "os": _os_release(),
        "docker": version.get("Version", "?"),
        "docker_api": version.get("ApiVersion", "?"),
        "python": platform.python_version(),
    }


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(REPO), *args], capture_output=True, text=True, check=False
    ).stdout.strip()


def snapshot_supervisor(src_root: Path, workdir: Path, rev: str | None = None) -> dict[str, Any]:
    """Copy ``src_root``/supervisor into ``workdir`` and run every supervisor from the copy.

    The working tree may change while the bench runs (others commit); the copy keeps one
    run on one version. With ``rev``, the package as committed at that revision of this
    checkout instead. Returns what was benchmarked: commit, uncommitted files, a hash.
    """
    global SUPERVISOR_SRC  # noqa: PLW0603 (one setting for every start_supervisor)
    copy = workdir / "src"
    copy.mkdir()
    if rev is not None:
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", rev, "supervisor"], capture_output=True, check=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(copy)], input=archive, check=True)
    else:
        package = src_root / "supervisor"
        if not (package / "cli.py").is_file():
            raise FileNotFoundError(f"{package}: no supervisor package there")
        shutil.copytree(package, copy / "supervisor", ignore=shutil.ignore_patterns("__pycache__"))
    SUPERVISOR_SRC = copy
    # Byte-compiled, as pip installs it. Without .pyc files, and with PYTHONDONTWRITEBYTECODE
    # passed down, every supervisor would compile its 26 modules at each start: slower, and
    # the compiler's freed memory (about 2 MiB of heap) would count in the peak RSS.
    if not compileall.compile_dir(copy / "supervisor", quiet=1):
        raise RuntimeError(f"{copy / 'supervisor'}: byte-compiling failed")
    digest = hashlib.sha256()
    for path in sorted((copy / "supervisor").rglob("*.py")):
        digest.update(path.relative_to(copy).as_posix().encode() + b"\0" + path.read_bytes())
    info: dict[str, Any] = {"path": str(src_root), "tree_sha256": digest.hexdigest()[:12]}
    if rev is not None:
        info["commit"] = _git("rev-parse", "--short", rev)
        info["uncommitted"] = []
        info["as_committed"] = True
    elif src_root.resolve() == REPO:
        info["commit"] = _git("rev-parse", "--short", "HEAD")
        info["uncommitted"] = [
            line[3:] for line in _git("status", "--porcelain", "--", "supervisor").splitlines()
        ]
    return info


def describe_source(info: dict[str, Any]) -> str:
    if "commit" not in info:
        return f"{info['path']}/supervisor (not this checkout; tree {info['tree_sha256']})"
    changed = info["uncommitted"]
    if info.get("as_committed"):
        return f"supervisor/ as committed at {info['commit']} (tree {info['tree_sha256']})"
    if not changed:
        return f"commit {info['commit']} (tree {info['tree_sha256']})"
    return (
        f"commit {info['commit']} + uncommitted changes to {', '.join(changed)} "
        f"(tree {info['tree_sha256']})"
    )


def _os_release() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.partition("=")[2].strip('"')
    return platform.platform()


def command_line() -> str:
    exe = Path(sys.executable)
    with contextlib.suppress(ValueError):
        exe = exe.relative_to(REPO)
    return shlex.join([str(exe), *sys.argv])


def median(values: list[float]) -> float:
    return statistics.median(values)


def fmt_s(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3f} s" if value < 10 else f"{value:.2f} s"


@dataclass
class Stopwatch:
    """Named intervals for a report's timing notes."""

    marks: dict[str, float] = field(default_factory=dict)

    @contextlib.contextmanager
    def time(self, name: str) -> Iterator[None]:
        start = now()
        try:
            yield
        finally:
            self.marks[name] = round(now() - start, 1)


def sleep_until(deadline: float, meanwhile: Callable[[float], bool] | None = None) -> None:
    """Sleep until ``deadline``; ``meanwhile(remaining)`` may use the time and says if it did."""
    while (remaining := deadline - now()) > 0:
        if meanwhile is not None and meanwhile(remaining):
            continue
        time.sleep(min(remaining, 0.5))
