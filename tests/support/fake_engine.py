"""A Docker engine in pure Python that answers like ``supervisor.engine.client.Engine``.

``FakeEngine`` has the public methods of ``Engine`` that the supervision loop calls, with
the same return types and the same ``supervisor.errors`` exceptions. Its containers are
inspect dicts captured from a real engine (tests/unit/data/inspect-running.json), rewritten
the way the engine would after a create with ``create_config``'s arguments (labels with the
spec hash, network mode, port bindings, mounts, hardening) and after each state change
(Id, Name, State.Status/Running/ExitCode/OOMKilled/Pid/StartedAt); ``inspect`` reads them
through the package's own ``observe()``, as the real one does. Images are the captured
``image-inspect-v2.json``/``-v3.json``.

Its ``api.events()`` is an event stream as docker-py's: it blocks, yields the engine's
event dicts for the filtered names and actions, and ends silently when the engine goes
away. The loop's own EventWatcher reads it on its thread; ``settle()`` waits until that
thread has passed on every event (or has ended), so a test handles them deterministically.

Faults are injected by what an admin or the kernel would do: ``crash``, ``docker_stop``,
``docker_kill``, ``docker_rm_f``, ``hang`` (the registry stops answering; ``resume``),
``stop_listening`` (it runs and refuses), ``fail_storage`` / ``mend_storage`` (its own
health check answers 503 on every path, across restarts), ``go_down`` /
``come_back`` (the engine), ``occupy_port`` (a host process). ``FakeProbe`` answers
``GET /v2/`` as the registry behind the published port would.

Not provided (the loop does not call them with MY_REG_FORWARD_LOGS off and the disk guard
off): ``api.logs`` (the log follower), ``run_once`` (gc's estimate).
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests

from supervisor.adapters.probe import ProbeFailed, ProbeResponse
from supervisor.adapters.registry_api import CanaryUnreachable, PushFailed, PushTimedOut
from supervisor.engine.client import Engine
from supervisor.engine.configs import create_config, holder_create_config
from supervisor.errors import (
    ContainerActionFailed,
    ContainerGone,
    EngineUnavailable,
    ImageUnavailable,
    PortBusy,
)
from supervisor.health import FailureClass
from supervisor.layout import ImageLayout, RegistryVersion, layout_of, parse_version
from supervisor.observed import Observed, observe
from supervisor.spec import READONLY_VARIABLE, ContainerSpec, HolderSpec

DATA = Path(__file__).resolve().parents[1] / "unit" / "data"
CONTAINER_TEMPLATE = DATA / "inspect-running.json"
IMAGE_TEMPLATES = {2: DATA / "image-inspect-v2.json", 3: DATA / "image-inspect-v3.json"}
# What `registry --version` prints in the official images.
VERSION_OUTPUT = {
    2: "/bin/registry github.com/docker/distribution 2.8.3",
    3: "/bin/registry github.com/distribution/distribution/v3 v3.0.0",
}
# Host pids above the kernel's largest pid_max (2**22): /proc has none of them, so the
# loop's namespace check finds no evidence and relies on the holder's pid, as it does
# for a supervisor that cannot read another process's namespace.
FIRST_PID = 5_000_000
NEVER = "0001-01-01T00:00:00Z"  # the engine's StartedAt/FinishedAt for "not yet"
SIGNALS = {"SIGTERM": 15, "SIGKILL": 9, "SIGINT": 2, "SIGQUIT": 3}
# The calls that change something (the rest only read).
MUTATIONS = frozenset(
    {"pull", "create", "create_holder", "start", "stop", "restart", "remove", "disable_restart"}
)
SETTLE_TIMEOUT_S = 5.0
REFUSED = "Failed to establish a new connection: [Errno 111] Connection refused"
# What distribution's health.Handler answers on every path while a check fails (as
# supervisor.health.registry_error reads its JSON body).
STORAGE_ERROR = "UNAVAILABLE: health check failed: please see /debug/health"


@dataclass(frozen=True)
class Call:
    """One call the loop made: when (on the test's clock), which method, about what."""

    at: float
    method: str
    name: str  # the container's name (or the image reference) it was about


@dataclass
class _Container:
    attrs: dict[str, Any]
    hung: bool = False  # the process runs but answers nothing
    deaf: bool = False  # the process runs and listens nowhere (connection refused)
    # The holder's pid when this container last started in its network namespace.
    joined_pid: int | None = None

    @property
    def id(self) -> str:
        return str(self.attrs["Id"])

    @property
    def name(self) -> str:
        return str(self.attrs["Name"]).lstrip("/")

    @property
    def state(self) -> dict[str, Any]:
        state: dict[str, Any] = self.attrs["State"]
        return state

    @property
    def running(self) -> bool:
        return bool(self.state["Running"])

    @property
    def network_of(self) -> str | None:
        mode = str(self.attrs["HostConfig"]["NetworkMode"])
        return mode.removeprefix("container:") if mode.startswith("container:") else None

    @property
    def stop_signal(self) -> int:
        return SIGNALS.get(str(self.attrs["Config"].get("StopSignal") or "SIGTERM"), 15)


def _wall() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


class FakeEventStream:
    """docker-py's decoded event stream: blocks for the next event, ends silently."""

    def __init__(self, filters: dict[str, Any], reader: threading.Thread) -> None:
        self._names = [str(n) for n in filters.get("container", ())]
        self._actions = {str(a) for a in filters.get("event", ())}
        self._items: deque[dict[str, Any]] = deque()
        self._cond = threading.Condition()
        self._ended = False
        self._closed = False
        self._waiting = False
        self._reader = reader  # the thread that subscribed (the EventWatcher's)

    def __iter__(self) -> FakeEventStream:
        return self

    def __next__(self) -> dict[str, Any]:
        with self._cond:
            while not self._items and not self._ended:
                self._waiting = True
                self._cond.notify_all()
                self._cond.wait()
            self._waiting = False
            if self._items and not self._closed:
                return self._items.popleft()
            raise StopIteration

    def matches(self, raw: dict[str, Any]) -> bool:
        """The engine's filter: a container filter matches names as substrings, or ids."""
        actor = raw["Actor"]
        name = str(actor["Attributes"]["name"])
        wanted = not self._names or any(n in name or actor["ID"] == n for n in self._names)
        return wanted and (not self._actions or raw["Action"] in self._actions)

    def offer(self, raw: dict[str, Any]) -> None:
        with self._cond:
            if not self._ended and self.matches(raw):
                self._items.append(raw)
                self._cond.notify_all()

    def end(self) -> None:
        """The engine went away: what was sent is still read, then iteration stops."""
        with self._cond:
            self._ended = True
            self._cond.notify_all()

    def close(self) -> None:
        """Called by the reader's owner (EventWatcher.close): stop at once."""
        with self._cond:
            self._closed = self._ended = True
            self._cond.notify_all()

    @property
    def ended(self) -> bool:
        return self._ended

    def settle(self, timeout: float = SETTLE_TIMEOUT_S) -> None:
        """Wait until the reader has passed on every event and asks for the next one, or,
        once the stream ended, until the reader's thread has finished."""
        with self._cond:
            done = self._cond.wait_for(
                lambda: (
                    self._ended
                    or not self._reader.is_alive()
                    or (self._waiting and not self._items)
                ),
                timeout,
            )
        if self._ended:
            self._reader.join(timeout)
            done = not self._reader.is_alive()
        if not done:
            raise AssertionError(f"the event watcher did not take the events within {timeout} s")


class FakeApi:
    """The docker-py APIClient the loop's EventWatcher uses: ``events`` only."""

    def __init__(self, engine: FakeEngine) -> None:
        self._engine = engine

    def events(self, decode: bool = False, filters: dict[str, Any] | None = None) -> Any:
        if not self._engine.up:
            raise requests.exceptions.ConnectionError(f"('Connection aborted.', {REFUSED!r})")
        stream = FakeEventStream(filters or {}, threading.current_thread())
        self._engine.subscribe(stream)
        return stream


@dataclass
class _Faults:
    """What the engine refuses, by method name, with the engine's explanation."""

    refuse: dict[str, str] = field(default_factory=dict)


class FakeEngine:
    """A Docker engine with one local registry image; see the module docstring."""

    def __init__(
        self,
        clock: Callable[[], float] = lambda: 0.0,
        *,
        image: str = "registry:latest",
        major: int = 2,
        pullable: tuple[str, ...] = (),
    ) -> None:
        self.clock = clock
        self.up = True
        self.calls: list[Call] = []
        self.once_configs: dict[str, dict[str, Any]] = {}  # one-shot containers, by id
        self.outputs: dict[str, str] = {}
        self.probe_times: list[float] = []  # when FakeProbe was asked, on the test's clock
        self.storage_error: str | None = None  # fail_storage: the registry's 503 error
        self.host_ports: set[int] = set()  # held by host processes (occupy_port)
        self.pullable = set(pullable)
        self.faults = _Faults()
        # The registry's writes (FakeRegistryApi): None while they work, else the
        # (step, HTTP status) that fails; and each canary round asked, on the clock.
        self.push_fault: tuple[str, int] | None = None
        self.canary_rounds: list[tuple[float, str]] = []
        self.api = FakeApi(self)
        self._images: dict[str, dict[str, Any]] = {}
        self._versions: dict[str, str] = {}
        self._containers: dict[str, _Container] = {}
        self._streams: list[FakeEventStream] = []
        self._streams_lock = threading.Lock()
        self._ids = itertools.count(1)
        self._pids = itertools.count(FIRST_PID)
        self.add_image(image, major)

    # -- what a test sets up and looks at -------------------------------------------------

    def add_image(self, ref: str, major: int = 2, image_id: str | None = None) -> str:
        """Make ``ref`` a local image of that major's official layout (of id ``image_id``,
        default the template's: a pull that moves the tag); its id."""
        attrs: dict[str, Any] = json.loads(IMAGE_TEMPLATES[major].read_text())
        attrs["RepoTags"] = [ref]
        if image_id is not None:
            attrs["Id"] = image_id
        self._images[ref] = self._images[attrs["Id"]] = attrs
        self._versions[attrs["Id"]] = VERSION_OUTPUT[major]
        return str(attrs["Id"])

    def mutations(self, since: int = 0) -> list[tuple[str, str]]:
        """The calls that changed something, as (method, container name), in order, from
        call number ``since`` on."""
        return [(c.method, c.name) for c in self.calls[since:] if c.method in MUTATIONS]

    def calls_to(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    def container(self, name: str) -> Observed | None:
        """What `docker inspect NAME` shows now (without recording a call)."""
        found = self._find(name)
        return observe(copy.deepcopy(found.attrs)) if found is not None else None

    def probe_factory(self, clock: Any) -> Callable[[str, Path | None], FakeProbe]:
        """What the Supervisor's ``probe_factory`` is given: probes of this engine's port."""
        return lambda url, _certificate: FakeProbe(self, url, clock)

    def registry_api_factory(self, clock: Any) -> Callable[..., FakeRegistryApi]:
        """What the Supervisor's ``registry_api_factory`` is given: the canary's API on
        this engine's port."""
        return lambda url, _certificate, _credentials: FakeRegistryApi(self, url, clock)

    def settle(self) -> None:
        """Wait until the loop's event watcher has queued every event sent so far."""
        with self._streams_lock:
            streams = list(self._streams)
        for stream in streams:
            stream.settle()
        with self._streams_lock:
            self._streams = [s for s in self._streams if not s.ended]

    def close_streams(self) -> None:
        """End every event stream and wait for its reader (a test's teardown)."""
        with self._streams_lock:
            streams, self._streams = list(self._streams), []
        for stream in streams:
            stream.close()
            stream.settle()

    def subscribe(self, stream: FakeEventStream) -> None:
        with self._streams_lock:
            self._streams.append(stream)

    # -- faults -----------------------------------------------------------------------

    def crash(self, name: str, exit_code: int = 2) -> None:
        """The process exits on its own: `die` with its exit code."""
        container = self._need(name)
        self._exit(container, exit_code)
        self._emit(container, "die", exitCode=str(exit_code))

    def docker_stop(self, name: str) -> None:
        """`docker stop NAME`: kill (its stop signal), die, stop."""
        self._stop(self._need(name))

    def docker_kill(self, name: str, signal: int = 9) -> None:
        """`docker kill NAME`: kill, die."""
        self._kill(self._need(name), signal)

    def docker_rm_f(self, name: str) -> None:
        """`docker rm -f NAME`: kill and die if it runs, then destroy; it is gone."""
        self._remove(self._need(name))

    def docker_start(self, name: str) -> None:
        """`docker start NAME` by someone else (`gc` starting the registry again)."""
        container = self._need(name)
        if not container.running:
            self._run(container)

    def hang(self, name: str) -> None:
        """The process keeps running and stops answering, until it is started anew."""
        self._need(name).hung = True

    def resume(self, name: str) -> None:
        """A hung or deaf process answers again (SIGCONT after SIGSTOP)."""
        container = self._need(name)
        container.hung = container.deaf = False

    def stop_listening(self, name: str) -> None:
        """The process keeps running and closes its listener: connections are refused."""
        self._need(name).deaf = True

    def fail_storage(self, error: str = STORAGE_ERROR) -> None:
        """The registry's storage check fails: it answers 503 and ``error`` (its JSON error,
        as ``CODE: detail``) on every path, whichever container serves, until mended."""
        self.storage_error = error

    def mend_storage(self) -> None:
        self.storage_error = None

    def go_down(self, *, stop_containers: bool = False) -> None:
        """The engine stops: every call fails, event streams end. Its containers keep
        running (live restore), or are stopped with it."""
        self.up = False
        if stop_containers:
            for container in self._containers.values():
                if container.running:
                    self._exit(container, 128 + container.stop_signal)
        with self._streams_lock:
            streams = list(self._streams)
        for stream in streams:
            stream.end()

    def come_back(self) -> None:
        self.up = True

    def occupy_port(self, port: int) -> None:
        """A host process listens on ``port``: a holder publishing it cannot start."""
        self.host_ports.add(port)

    def refuse(self, method: str, explanation: str) -> None:
        """Make ``method`` fail as the engine refusing it (ContainerActionFailed)."""
        self.faults.refuse[method] = explanation

    # -- Engine's interface -----------------------------------------------------------

    def ping(self) -> None:
        self._call("ping", "")

    def describe(self) -> tuple[str, str | None]:
        self._call("describe", "")
        return "24.0.7", "/var/lib/docker"

    def inspect(self, name_or_id: str) -> Observed | None:
        self._call("inspect", name_or_id)
        return self.container(name_or_id)

    def image_id(self, ref: str) -> str | None:
        self._call("image_id", ref)
        image = self._images.get(ref)
        return str(image["Id"]) if image is not None else None

    def image_layout(self, ref: str) -> ImageLayout | None:
        self._call("image_layout", ref)
        image = self._images.get(ref)
        return layout_of(image) if image is not None else None

    def registry_version(self, image_id: str, layout: ImageLayout) -> RegistryVersion | None:
        self._call("registry_version", image_id)
        output = self._versions.get(image_id)
        return parse_version(output) if output is not None else None

    def tag(self, image_id: str, ref: str) -> None:
        self._call("tag", ref)
        if image_id not in self._images:
            raise ImageUnavailable(f"{image_id}: No such image")
        self._images[ref] = self._images[image_id]

    def pull(self, ref: str, progress: Callable[[], None]) -> None:
        self._call("pull", ref)
        if ref not in self.pullable:
            raise ImageUnavailable(f"pull {ref}: manifest for {ref} not found: manifest unknown")
        for _ in range(3):  # a few status lines
            progress()
        if ref not in self._images:
            self.add_image(ref)

    def create(self, spec: ContainerSpec, holder_id: str) -> Observed:
        self._call("create", spec.name)
        return self._observe(self._create(create_config(spec, holder_id)))

    def create_holder(self, holder: HolderSpec) -> Observed:
        self._call("create_holder", holder.name)
        return self._observe(self._create(holder_create_config(holder)))

    def check_creatable(
        self, spec: ContainerSpec, holder: HolderSpec, holder_id: str | None
    ) -> None:
        """As the real one: whatever create would refuse raises; nothing stays."""
        self._call("check_creatable", spec.name)
        if spec.image not in self._images:
            raise ImageUnavailable(f"{spec.image}: not present locally")
        self._refused("create")

    def start(self, container_id: str) -> None:
        self._call("start", container_id)
        container = self._get(container_id, "start")
        self._refused("start")
        if container.running:
            return  # the engine answers 304: nothing happens
        holder_id = container.network_of
        if holder_id is not None:
            holder = self._containers.get(holder_id)
            if holder is None or not holder.running:
                raise ContainerActionFailed(
                    f"start: cannot join network of a non running container: {holder_id}"
                )
        self._check_ports(container)
        self._run(container)

    def stop(self, container_id: str, timeout: int) -> None:
        self._call("stop", container_id)
        self._stop(self._get(container_id, "stop"))

    def restart(self, container_id: str) -> None:
        """`docker restart -t 0`: killed at once if it runs, then started."""
        self._call("restart", container_id)
        container = self._get(container_id, "restart")
        if container.running:
            self._kill(container, 9)
            self._emit(container, "stop")
        self._run(container)
        self._emit(container, "restart")

    def remove(self, container_id: str) -> None:
        self._call("remove", container_id)
        self._remove(self._get(container_id, "remove"))

    def start_once(self, config: dict[str, Any]) -> str:
        """A one-shot container (the fleet gc's collector), running until the test ends it
        (``end_once``) or it is killed."""
        self._call("start_once", str(config["name"]))
        container = self._create(config)
        self.once_configs[container.id] = config
        self._run(container)
        return container.id

    def end_once(self, name: str, exit_code: int, output: str) -> None:
        """The one-shot container ``name`` exits with ``exit_code``, having said ``output``."""
        container = self._get(name, "end_once")
        self.outputs[container.id] = output
        self._exit(container, exit_code)
        self._emit(container, "die", exitCode=str(exit_code))

    def output(self, container_id: str) -> str:
        self._call("output", container_id)
        return self.outputs.get(self._get(container_id, "output").id, "")

    def kill(self, container_id: str) -> None:
        self._call("kill", container_id)
        self._kill(self._get(container_id, "kill"), 9)

    # Composed of the calls above exactly as the real engine composes them.
    retire = Engine.retire
    create_started = Engine.create_started

    def publishing(self, port: int) -> list[Observed]:
        self._call("publishing", str(port))
        observed = [observe(copy.deepcopy(c.attrs)) for c in self._containers.values()]
        return [o for o in observed if port in o.published]

    def disable_restart(self, container_id: str) -> None:
        self._call("disable_restart", container_id)
        container = self._get(container_id, "update")
        container.attrs["HostConfig"]["RestartPolicy"] = {"Name": "no", "MaximumRetryCount": 0}

    def stream_client(self) -> FakeApi:
        self._call("stream_client", "")
        return self.api

    def close(self) -> None:
        """docker-py's close: the connection pool goes; the engine does not."""
        self.calls.append(Call(self.clock(), "close", ""))

    # -- the registry behind the port (for FakeProbe) ---------------------------------

    def serving_env(self, port: int) -> list[str]:
        """The environment of the registry container that answers at host port ``port``."""
        for holder in self._containers.values():
            if not holder.running or port not in observe(holder.attrs).published:
                continue
            for registry in self._containers.values():
                if registry.network_of == holder.id and registry.running:
                    return list(registry.attrs["Config"].get("Env") or [])
        return []

    def answer(self, port: int) -> str:
        """What a client connecting to host port ``port`` gets: "ok", "hung", "refused" or "503".
        No engine call: a registry serves with its engine away."""
        for holder in self._containers.values():
            if not holder.running or port not in observe(holder.attrs).published:
                continue
            for registry in self._containers.values():
                joined = registry.network_of == holder.id
                if joined and registry.running and registry.joined_pid == holder.state["Pid"]:
                    if registry.hung:
                        return "hung"
                    if registry.deaf:
                        return "refused"
                    return "503" if self.storage_error is not None else "ok"
        return "refused"

    # -- the engine's workings --------------------------------------------------------

    def _call(self, method: str, target: str) -> None:
        found = self._find(target) if target else None
        self.calls.append(Call(self.clock(), method, found.name if found else target))
        if not self.up:
            raise EngineUnavailable(
                f"{method}: ('Connection aborted.', FileNotFoundError(2, "
                "'No such file or directory'))"
            )

    def _refused(self, method: str) -> None:
        explanation = self.faults.refuse.get(method)
        if explanation is not None:
            raise ContainerActionFailed(f"{method}: {explanation}")

    def _find(self, name_or_id: str) -> _Container | None:
        if name_or_id in self._containers:
            return self._containers[name_or_id]
        for container in self._containers.values():
            if container.name == name_or_id:
                return container
        prefixed = [c for c in self._containers.values() if c.id.startswith(name_or_id)]
        return prefixed[0] if len(prefixed) == 1 and len(name_or_id) >= 12 else None

    def _need(self, name: str) -> _Container:
        found = self._find(name)
        if found is None:
            raise AssertionError(f"the fake engine has no container {name!r}")
        return found

    def _get(self, container_id: str, action: str) -> _Container:
        found = self._find(container_id)
        if found is None:
            raise ContainerGone(f"{action}: No such container: {container_id}")
        return found

    def _observe(self, container: _Container) -> Observed:
        return observe(copy.deepcopy(container.attrs))

    def _create(self, config: dict[str, Any]) -> _Container:
        name = str(config["name"])
        existing = self._find(name)
        if existing is not None:
            raise ContainerActionFailed(
                f'create: Conflict. The container name "/{name}" is already in use by '
                f'container "{existing.id}". You have to remove (or rename) that container '
                "to be able to reuse that name."
            )
        image = self._images.get(str(config["image"]))
        if image is None:
            raise ImageUnavailable(f"{config['image']}: not present locally")
        self._refused("create")
        container_id = hashlib.sha256(f"fake-container-{next(self._ids)}".encode()).hexdigest()
        attrs: dict[str, Any] = json.loads(CONTAINER_TEMPLATE.read_text())
        host: dict[str, Any] = config["host_config"]
        mounts = [dict(m) for m in host.get("mounts", ())]  # docker.types.Mount is a dict
        attrs.update(
            Id=container_id,
            Name=f"/{name}",
            Created=_wall(),
            Image=image["Id"],
            Mounts=[
                {
                    "Type": m.get("Type", "bind"),
                    "Source": m["Source"],
                    "Destination": m["Target"],
                    "Mode": "",
                    "RW": not m.get("ReadOnly", False),
                    "Propagation": "rprivate",
                }
                for m in mounts
            ],
            State={
                "Status": "created",
                "Running": False,
                "Paused": False,
                "Restarting": False,
                "OOMKilled": False,
                "Dead": False,
                "Pid": 0,
                "ExitCode": 0,
                "Error": "",
                "StartedAt": NEVER,
                "FinishedAt": NEVER,
            },
        )
        image_config = image["Config"]
        attrs["Config"].update(
            Hostname=container_id[:12],
            Image=config["image"],
            Labels=dict(config.get("labels") or {}),
            Env=[f"{k}={v}" for k, v in (config.get("environment") or {}).items()] or None,
            Entrypoint=config.get("entrypoint", image_config.get("Entrypoint")),
            Cmd=config.get("command", image_config.get("Cmd")),
            StopSignal=config.get("stop_signal", "SIGTERM"),
            StopTimeout=config.get("stop_timeout"),
        )
        bindings = host.get("port_bindings") or {}
        attrs["HostConfig"].update(
            Binds=None,
            Mounts=mounts,
            NetworkMode=host.get("network_mode", "default"),
            PortBindings={
                port: [{"HostIp": ip, "HostPort": str(host_port)}]
                for port, (ip, host_port) in bindings.items()
            },
            RestartPolicy={"Name": host["restart_policy"]["Name"], "MaximumRetryCount": 0},
            ReadonlyRootfs=bool(host.get("read_only", False)),
            Tmpfs=host.get("tmpfs"),
            SecurityOpt=host.get("security_opt"),
            CapDrop=host.get("cap_drop"),
            Memory=host.get("mem_limit", 0),
            AutoRemove=False,
        )
        container = _Container(attrs)
        self._containers[container_id] = container
        self._emit(container, "create")
        return container

    def _check_ports(self, container: _Container) -> None:
        for ip, port in observe(container.attrs).port_bindings:
            address = f"{ip or '0.0.0.0'}:{port}"
            if port in self.host_ports:
                raise PortBusy(
                    f"start: driver failed programming external connectivity: Error starting "
                    f"userland proxy: listen tcp4 {address}: bind: address already in use",
                    by=None,
                )
            others = [c for c in self._containers.values() if c is not container and c.running]
            if any(port in observe(other.attrs).published for other in others):
                raise PortBusy(
                    f"start: driver failed programming external connectivity: "
                    f"Bind for {address} failed: port is already allocated",
                    by="another container",
                )

    def _run(self, container: _Container) -> None:
        container.state.update(
            Status="running",
            Running=True,
            Pid=next(self._pids),
            ExitCode=0,
            OOMKilled=False,
            StartedAt=_wall(),
        )
        container.hung = container.deaf = False
        holder = self._containers.get(container.network_of or "")
        container.joined_pid = int(holder.state["Pid"]) if holder is not None else None
        self._emit(container, "start")

    def _exit(self, container: _Container, code: int) -> None:
        container.state.update(
            Status="exited", Running=False, Pid=0, ExitCode=code, FinishedAt=_wall()
        )

    def _kill(self, container: _Container, signal: int) -> None:
        if not container.running:
            return
        self._emit(container, "kill", signal=str(signal))
        self._exit(container, 128 + signal)
        self._emit(container, "die", exitCode=str(128 + signal))

    def _stop(self, container: _Container) -> None:
        if container.running:
            self._kill(container, container.stop_signal)
            self._emit(container, "stop")

    def _remove(self, container: _Container) -> None:
        self._kill(container, 9)
        del self._containers[container.id]
        self._emit(container, "destroy")

    def _emit(self, container: _Container, action: str, **attributes: str) -> None:
        """An engine event as the API sends it, to every stream whose filter matches."""
        now_ns = int(datetime.now(UTC).timestamp() * 1_000_000_000)
        raw = {
            "status": action,
            "id": container.id,
            "from": container.attrs["Config"]["Image"],
            "Type": "container",
            "Action": action,
            "Actor": {
                "ID": container.id,
                "Attributes": {
                    **container.attrs["Config"]["Labels"],
                    "image": container.attrs["Config"]["Image"],
                    "name": container.name,
                    **attributes,
                },
            },
            "scope": "local",
            "time": now_ns // 1_000_000_000,
            "timeNano": now_ns,
        }
        with self._streams_lock:
            streams = list(self._streams)
        for stream in streams:
            stream.offer(raw)


class FakeProbe:
    """``GET /v2/`` on the fake engine's published port, as ``Probe`` answers it: 200 while
    the registry serves there; 503 with the registry's error while its storage fails;
    ProbeFailed when nothing listens (refused) or when it hangs (after the full timeout,
    which it spends on the test's clock)."""

    def __init__(self, engine: FakeEngine, url: str, clock: Any) -> None:
        self.pinned: str | None = None
        self._engine = engine
        self._clock = clock
        self.url = url
        self._port = urlsplit(url).port or 443

    def __call__(self, timeout: float) -> int:
        return self.ask(timeout).status

    def ask(self, timeout: float) -> ProbeResponse:
        self._engine.probe_times.append(self._clock())
        answer = self._engine.answer(self._port)
        if answer == "hung":
            self._clock.advance(timeout)
            raise ProbeFailed(f"timed out after {timeout:g}s", FailureClass.TIMEOUT)
        if answer == "refused":
            raise ProbeFailed("connection refused", FailureClass.REFUSED)
        if answer == "503":
            return ProbeResponse(503, self._engine.storage_error)
        return ProbeResponse(200)

    def close(self) -> None:
        pass


class FakeRegistryApi:
    """The canary's blob uploads, as ``RegistryApi`` does them, against the fake registry:
    refused when nothing listens there, PushFailed at ``engine.push_fault`` (a step and an
    HTTP status), else they work."""

    def __init__(self, engine: FakeEngine, url: str, clock: Any) -> None:
        self._engine = engine
        self._clock = clock
        self._port = urlsplit(url).port or 443
        self.upload_id: str | None = None

    def _round(self, mode: str, steps: tuple[str, ...], timeout: float) -> None:
        self._engine.canary_rounds.append((self._clock(), mode))
        answer = self._engine.answer(self._port)
        if answer == "refused":
            raise CanaryUnreachable(f"ConnectionError on {steps[0]}")
        if answer == "hung":
            self._clock.advance(timeout)
            raise PushTimedOut(f"timeout on {steps[0]}")
        fault = self._engine.push_fault
        if fault is not None and fault[0] in steps:
            raise PushFailed(f"HTTP {fault[1]} on {fault[0]}", fault[1])

    def commit(self, repository: str, blob: bytes, digest: str, timeout: float) -> None:
        self._round("commit", ("POST upload", "PUT blob", "GET blob"), timeout)

    def session(self, repository: str, blob: bytes, timeout: float) -> None:
        steps = ("POST upload", "PATCH upload", "GET upload", "DELETE upload")
        self._round("session", steps, timeout)

    def refuses_writes(self, repository: str, timeout: float) -> str | None:
        """405 from a registry in read-only mode (its environment says so), else 202."""
        answer = self._engine.answer(self._port)
        if answer == "refused":
            raise CanaryUnreachable("ConnectionError on POST upload")
        if any(e.startswith(READONLY_VARIABLE + "=") for e in self._engine.serving_env(self._port)):
            return None
        return "it accepts uploads (HTTP 202 on POST upload)"

    def close(self) -> None:
        pass
