"""Docker SDK adapter: the only module that talks to the engine.

``observe()`` is the one reader of Docker's raw inspect dicts. Every docker-py
or requests error is translated here: "not found" is ``None``, an unreachable
engine is ``EngineUnavailable``, a refusal is ``ContainerActionFailed``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import docker
import docker.errors
import requests

from supervisor.errors import (
    ContainerActionFailed,
    ContainerGone,
    EngineRefused,
    EngineUnavailable,
    ImageUnavailable,
    PortBusy,
)
from supervisor.layout import ImageLayout, RegistryVersion, layout_of, parse_version
from supervisor.spec import (
    DATA_MOUNT,
    HOLDER_COMMAND,
    MANAGED_BY_LABEL,
    MANAGED_BY_VALUE,
    REGISTRY_PORT,
    SPEC_HASH_LABEL,
    TMPFS,
    ContainerSpec,
    HolderSpec,
)

# API calls that should be quick; a hung engine must not hang the loop forever.
API_TIMEOUT_S = 10  # well under half of the unit's WatchdogSec=30s
# Docker Engine 20.10 and later speak it. A fixed version also keeps the client
# constructor free of I/O ("auto" asks the engine and leaks a socket on failure).
API_VERSION = "1.41"
# Over the image's data VOLUME in the holder, which never stores anything.
HOLDER_DATA_TMPFS = "ro,noexec,nosuid,nodev,size=4k"
# Containers created only to learn whether the engine accepts a new spec, then removed.
CANDIDATE_SUFFIX = "-candidate"
# `registry --version` answers in well under a second; a stuck one must not hold the loop.
VERSION_TIMEOUT_S = 20
CANDIDATE_LABEL = "registry-supervisor.candidate"
# What docker-compose (1.x and v2) labels its containers with.
COMPOSE_PROJECT_LABEL = "com.docker.compose.project"
COMPOSE_SERVICE_LABEL = "com.docker.compose.service"
COMPOSE_WORKDIR_LABEL = "com.docker.compose.project.working_dir"
# How the engine says a start failed because the host port is taken (Docker 20.10): by
# another container ("Bind for 0.0.0.0:5001 failed: port is already allocated") or by a
# host process ("listen tcp4 0.0.0.0:5001: bind: address already in use").
PORT_TAKEN_MARKERS = ("port is already allocated", "address already in use")


class ContainerState(StrEnum):
    """Docker's State.Status values."""

    CREATED = "created"
    RUNNING = "running"
    PAUSED = "paused"
    RESTARTING = "restarting"
    REMOVING = "removing"
    EXITED = "exited"
    DEAD = "dead"


@dataclass(frozen=True)
class Observed:
    """What the engine says about a container, reduced to what we decide on."""

    id: str
    name: str
    state: ContainerState
    image: str
    image_id: str
    managed: bool
    spec_hash: str | None
    exit_code: int
    oom_killed: bool
    started_at: str
    pid: int
    published: tuple[int, ...] = ()
    network_mode: str = ""
    candidate: bool = False  # created only by check_creatable, never started
    # What a container we did not create is, for taking it over (supervisor/takeover.py).
    port_bindings: tuple[tuple[str, int], ...] = ()  # (host ip, host port); "" = all
    binds: tuple[tuple[str, str], ...] = ()  # (host source, container destination)
    restart_policy: str = "no"
    auto_remove: bool = False  # `docker run --rm`: a stop removes it
    compose_project: str | None = None
    compose_service: str | None = None
    compose_workdir: str | None = None

    @property
    def running(self) -> bool:
        return self.state is ContainerState.RUNNING

    @property
    def short_id(self) -> str:
        return self.id[:12]


def network_namespace(container: Observed) -> str | None:
    """The network namespace of a running container's process (``net:[4026532185]``), read
    from /proc; None when it cannot be read for sure.

    The engine reports host pids. A supervisor in a pid namespace of its own (in a
    container) may see another process under that pid, so the process must be in the
    container's cgroup; without CAP_SYS_PTRACE the link of a process with capabilities
    beyond ours is unreadable (EACCES). Either way: no evidence, None.
    """
    if not container.running or container.pid <= 0:
        return None
    proc = f"/proc/{container.pid}"
    try:
        with open(f"{proc}/cgroup", encoding="ascii", errors="replace") as cgroup:
            if container.id not in cgroup.read():
                return None
        return os.readlink(f"{proc}/ns/net")
    except OSError:
        return None


def _restart_policy(policy: dict[str, Any]) -> str:
    """`docker run --restart`'s form: no, always, unless-stopped, on-failure[:N]."""
    name = str(policy.get("Name") or "no")
    count = policy.get("MaximumRetryCount") or 0
    return f"{name}:{count}" if name == "on-failure" and count else name


def observe(attrs: dict[str, Any]) -> Observed:
    """Read a container inspect dict (pure)."""
    state = attrs.get("State") or {}
    config = attrs.get("Config") or {}
    labels = config.get("Labels") or {}
    host_config = attrs.get("HostConfig") or {}
    bindings = host_config.get("PortBindings") or {}
    # TCP only: a container publishing 5001/udp does not hold our (TCP) port.
    port_bindings = tuple(
        (str(binding.get("HostIp") or ""), int(binding["HostPort"]))
        for container_port, port_bindings in bindings.items()
        if str(container_port).endswith("/tcp") or "/" not in str(container_port)
        for binding in port_bindings or ()
        if str(binding.get("HostPort", "")).isdigit()
    )
    published = tuple(port for _, port in port_bindings)
    binds = tuple(
        (str(mount.get("Source", "")), str(mount.get("Destination", "")))
        for mount in attrs.get("Mounts") or ()
        if mount.get("Type") == "bind"
    )
    return Observed(
        id=attrs["Id"],
        name=str(attrs.get("Name", "")).lstrip("/"),
        state=ContainerState(state.get("Status", "dead")),
        image=config.get("Image", ""),
        image_id=attrs.get("Image", ""),
        managed=labels.get(MANAGED_BY_LABEL) == MANAGED_BY_VALUE,
        spec_hash=labels.get(SPEC_HASH_LABEL),
        exit_code=int(state.get("ExitCode") or 0),
        oom_killed=bool(state.get("OOMKilled")),
        started_at=state.get("StartedAt", ""),
        pid=int(state.get("Pid") or 0),
        published=published,
        network_mode=str(host_config.get("NetworkMode") or ""),
        candidate=labels.get(CANDIDATE_LABEL) == "true",
        port_bindings=port_bindings,
        binds=binds,
        restart_policy=_restart_policy(host_config.get("RestartPolicy") or {}),
        auto_remove=bool(host_config.get("AutoRemove")),
        compose_project=labels.get(COMPOSE_PROJECT_LABEL),
        compose_service=labels.get(COMPOSE_SERVICE_LABEL),
        compose_workdir=labels.get(COMPOSE_WORKDIR_LABEL),
    )


def create_config(spec: ContainerSpec, holder_id: str | None) -> dict[str, Any]:
    """Arguments for the engine's create call, host config included (pure).

    The registry joins the network namespace of the holder ``holder_id``, which
    publishes the port; without a holder (the one-shot collector) it gets Docker's
    default network and no published port.
    """
    config: dict[str, Any] = {
        "image": spec.image,
        "name": spec.name,
        "detach": True,
        "labels": spec.labels,
        "environment": dict(spec.environment),
        "stop_signal": "SIGTERM",
        "stop_timeout": spec.stop_timeout,
        "host_config": {
            # The Mounts API, not `binds`: a bind is the string `src:dst:mode`, which a
            # colon in a host path breaks. A missing source is refused, never created.
            "mounts": [
                docker.types.Mount(m.target, m.source, type="bind", read_only=m.read_only)
                for m in spec.mounts
            ],
            # We are the only one restarting it; Docker's policy would race us.
            "restart_policy": {"Name": "no"},
        },
    }
    if holder_id is not None:
        config["host_config"]["network_mode"] = f"container:{holder_id}"
    config["host_config"].update(_hardening(spec))
    return config


def holder_create_config(holder: HolderSpec) -> dict[str, Any]:
    """Arguments for creating the network holder (pure)."""
    hardening = _hardening(holder)
    # A tmpfs over the image's VOLUME: no anonymous volume is left behind per holder.
    hardening["tmpfs"] = {**hardening.get("tmpfs", {}), DATA_MOUNT: HOLDER_DATA_TMPFS}
    return {
        "image": holder.image,
        "name": holder.name,
        "detach": True,
        "labels": holder.labels,
        "entrypoint": [HOLDER_COMMAND[0]],
        "command": list(HOLDER_COMMAND[1:]),
        "ports": [REGISTRY_PORT],
        # It holds no state, and `sleep` as PID 1 ignores SIGTERM: stop means kill.
        "stop_signal": "SIGKILL",
        "host_config": {
            "port_bindings": {REGISTRY_PORT: (holder.bind, holder.port)},
            "restart_policy": {"Name": "no"},
            **hardening,
        },
    }


def _hardening(spec: ContainerSpec | HolderSpec) -> dict[str, Any]:
    """Host config for the opt-out hardening: only the keys that are switched on."""
    hardening: dict[str, Any] = {}
    if spec.read_only:
        hardening["read_only"] = True
        hardening["tmpfs"] = dict(TMPFS)
    if spec.no_new_privileges:
        hardening["security_opt"] = ["no-new-privileges:true"]
    if spec.cap_drop_all:
        # The registry listens on 5000 and owns its files: it needs no capability.
        hardening["cap_drop"] = ["ALL"]
    if isinstance(spec, ContainerSpec) and spec.memory is not None:
        hardening["mem_limit"] = spec.memory
    return hardening


def _as_candidate(config: dict[str, Any], name: str) -> dict[str, Any]:
    """``config`` under another name, without the spec hash: never mistaken for the real one."""
    labels = {MANAGED_BY_LABEL: MANAGED_BY_VALUE, CANDIDATE_LABEL: "true"}
    return {**config, "name": name, "labels": labels}


def _is_removal_conflict(err: docker.errors.APIError) -> bool:
    # `docker rm -f` sends `die` before `destroy`; a start in between gets 409.
    return err.status_code == 409 and "removal" in str(err.explanation or "")


@contextmanager
def _translated(action: str) -> Iterator[None]:
    try:
        yield
    except docker.errors.NotFound as err:
        raise ContainerGone(f"{action}: {err.explanation}") from err
    except docker.errors.APIError as err:
        if _is_removal_conflict(err):
            raise ContainerGone(f"{action}: {err.explanation}") from err
        raise ContainerActionFailed(f"{action}: {err.explanation or err}") from err
    except (requests.exceptions.RequestException, docker.errors.DockerException) as err:
        raise EngineUnavailable(f"{action}: {err}") from err


@contextmanager
def _reads_translated(action: str) -> Iterator[None]:
    """A 4xx to a read is about our request (EngineRefused); anything else the engine
    refuses (a 500 from a half-stopped daemon) means it is not usable now."""
    try:
        with _translated(action):
            yield
    except ContainerActionFailed as err:
        cause = err.__cause__
        status = getattr(cause, "status_code", None)
        if isinstance(status, int) and 400 <= status < 500:
            raise EngineRefused(str(err)) from err
        raise EngineUnavailable(str(err)) from err


class Engine:
    """A thin wrapper over one docker-py client, kept for the life of the process."""

    def __init__(self) -> None:
        try:
            self._client = docker.from_env(version=API_VERSION, timeout=API_TIMEOUT_S)
        except docker.errors.DockerException as err:
            raise EngineUnavailable(str(err)) from err

    @property
    def api(self) -> docker.APIClient:
        return self._client.api

    def stream_client(self) -> docker.APIClient:
        """A client of its own for one stream, closed by its reader.

        docker-py keeps one connection pool (and its idle connection) per URL, up to
        25: a stream whose URL changes every time (the logs' ``since``) would leave
        one behind on the shared client at every restart.
        """
        return Engine()._client.api

    # Reads: any refusal (a 500 from a half-stopped daemon) means the engine is not
    # usable now, and the loop's reconnect path is the one that copes with that.
    def ping(self) -> None:
        with _reads_translated("ping"):
            self._client.ping()

    def describe(self) -> tuple[str, str | None]:
        """The engine's version and its data root (DockerRootDir; None if not told)."""
        with _reads_translated("version"):
            version = str(self._client.api.version().get("Version", "?"))
        with _reads_translated("info"):
            root = self._client.api.info().get("DockerRootDir")
        return version, str(root) if root else None

    def inspect(self, name_or_id: str) -> Observed | None:
        try:
            with _reads_translated("inspect"):
                return observe(self._client.api.inspect_container(name_or_id))
        except ContainerGone:
            return None

    def image_id(self, ref: str) -> str | None:
        """The local image's id; None if absent; ImageUnavailable if the engine refuses
        the reference itself (a 400 "invalid reference format")."""
        try:
            with _reads_translated("inspect image"):
                return str(self._client.api.inspect_image(ref)["Id"])  # type: ignore[no-untyped-call]
        except ContainerGone:
            return None
        except EngineRefused as err:
            raise ImageUnavailable(f"{ref}: {err}") from err

    def image_layout(self, ref: str) -> ImageLayout | None:
        """Where the local image's registry reads its config (supervisor.layout); None if
        the image is absent; ConfigError if its layout cannot be read."""
        try:
            with _reads_translated("inspect image"):
                attrs = self._client.api.inspect_image(ref)  # type: ignore[no-untyped-call]
        except ContainerGone:
            return None
        except EngineRefused as err:
            raise ImageUnavailable(f"{ref}: {err}") from err
        return layout_of(attrs)

    def registry_version(self, image_id: str, layout: ImageLayout) -> RegistryVersion | None:
        """`registry --version` in a one-shot container of the image (no network, removed
        afterwards); None when it names no version or fails."""
        config: dict[str, Any] = {
            "image": image_id,
            "labels": {MANAGED_BY_LABEL: MANAGED_BY_VALUE},
            "entrypoint": [layout.binary],
            "command": ["--version"],
            "network_disabled": True,
            "host_config": {"network_mode": "none", "restart_policy": {"Name": "no"}},
        }
        try:
            code, output = self.run_once(config, VERSION_TIMEOUT_S)
        except (ContainerActionFailed, ContainerGone, ImageUnavailable):
            return None
        except EngineUnavailable:
            # The wait timed out (an image whose binary ignores --version and serves), or
            # the engine went away: only the latter is the engine's problem.
            self.ping()
            return None
        return parse_version(output) if code == 0 else None

    def pull(self, ref: str, progress: Callable[[], None]) -> None:
        """Pull an image, calling ``progress`` on every status line the engine sends."""
        repository, _, tag = ref.rpartition(":")
        try:
            with _translated("pull"):
                for line in self._client.api.pull(repository, tag, stream=True, decode=True):
                    progress()
                    if "error" in line:
                        raise ImageUnavailable(f"pull {ref}: {line['error']}")
        except (ContainerGone, ContainerActionFailed) as err:
            raise ImageUnavailable(str(err)) from err

    def create(self, spec: ContainerSpec, holder_id: str) -> Observed:
        """Create the registry in the network namespace of the holder ``holder_id``."""
        return self._created(self._create(create_config(spec, holder_id)))

    def create_holder(self, holder: HolderSpec) -> Observed:
        return self._created(self._create(holder_create_config(holder)))

    def _created(self, container_id: str) -> Observed:
        with _translated("inspect"):
            return observe(self._client.api.inspect_container(container_id))

    def _create(self, config: dict[str, Any]) -> str:
        """Create a container from ``create_config``'s form; its id."""
        config = dict(config)
        try:
            with _translated("create"):
                host_config = self._client.api.create_host_config(**config.pop("host_config"))
                created = self._client.api.create_container(**config, host_config=host_config)
        except ContainerGone as err:
            # The only thing `create` can fail to find is the image.
            raise ImageUnavailable(f"{config.get('image')}: not present locally") from err
        return str(created["Id"])

    def check_creatable(
        self, spec: ContainerSpec, holder: HolderSpec, holder_id: str | None
    ) -> None:
        """Create the registry (and, without ``holder_id``, its holder) of a new spec under
        candidate names, never started, and remove them again: whatever the engine refuses
        at create time (a mount, an option, the image) raises here, and nothing stays.

        ContainerActionFailed or ImageUnavailable when refused; EngineUnavailable.
        """
        names = (f"{spec.name}{CANDIDATE_SUFFIX}", f"{holder.name}{CANDIDATE_SUFFIX}")
        for name in names:  # a candidate left by a supervisor killed mid-check
            leftover = self.inspect(name)
            # Only one of ours that never ran: `foo-candidate` may be another deployment.
            if leftover is not None and leftover.candidate and not leftover.running:
                self.remove(leftover.id)
        created: list[str] = []
        try:
            if holder_id is None:
                config = holder_create_config(holder)
                holder_id = self._create(_as_candidate(config, names[1]))
                created.append(holder_id)
            created.append(self._create(_as_candidate(create_config(spec, holder_id), names[0])))
        finally:
            for container_id in reversed(created):
                with suppress(ContainerGone):
                    self.remove(container_id)

    def start(self, container_id: str) -> None:
        """Start a container; PortBusy when its host port is taken (the container stays)."""
        try:
            with _translated("start"):
                self._client.api.start(container_id)
        except ContainerActionFailed as err:
            if PORT_TAKEN_MARKERS[0] in str(err):  # Docker's own allocator: a container
                raise PortBusy(str(err), by="another container") from err
            if PORT_TAKEN_MARKERS[1] in str(err):  # the proxy's bind: a host process
                raise PortBusy(str(err), by=None) from err
            raise

    def publishing(self, port: int) -> list[Observed]:
        """Every container, running or not, whose host config publishes host port ``port``.

        The list API shows ports of running containers only; a stopped one that Docker
        restarts with the engine (`restart: always`) takes the port back then, so each
        container is inspected.
        """
        with _reads_translated("list containers"):
            ids = [str(c["Id"]) for c in self._client.api.containers(all=True, quiet=True)]
        found = []
        for container_id in ids:
            observed = self.inspect(container_id)
            if observed is not None and port in observed.published:
                found.append(observed)
        return found

    def disable_restart(self, container_id: str) -> None:
        """`docker update --restart=no`: the engine no longer starts it by itself."""
        # The engine ignores an empty Name ("keep the policy"): "no" must be said, which
        # types-docker's Literal["always", "on-failure"] leaves out.
        policy: Any = {"Name": "no", "MaximumRetryCount": 0}
        with _translated("update"):
            self._client.api.update_container(container_id, restart_policy=policy)

    def restart(self, container_id: str) -> None:
        """Kill and start again at once: for a hung registry, waiting is pointless."""
        with _translated("restart"):
            self._client.api.restart(container_id, timeout=0)

    def stop(self, container_id: str, timeout: int) -> None:
        # docker-py adds `timeout` to its HTTP timeout for this call.
        with _translated("stop"):
            self._client.api.stop(container_id, timeout=timeout)

    def remove(self, container_id: str) -> None:
        """Remove a container, never its volumes: registry data is not ours to delete."""
        with _translated("remove"):
            self._client.api.remove_container(container_id, v=False, force=True)

    def run_once(self, config: dict[str, Any], timeout: int | None) -> tuple[int, str]:
        """Create, start and wait for a one-shot container: its exit code and output.

        ``config`` is in ``create_config``'s form; with ``timeout`` None it is waited for as
        long as it runs. The container is removed afterwards, whatever happened (never its
        volumes).
        """
        container_id = self._create(config)
        try:
            with _translated("run"):
                self._client.api.start(container_id)
                result = self._client.api.wait(container_id, timeout=timeout)
                output = self._client.api.logs(container_id, stdout=True, stderr=True)
        finally:
            with suppress(ContainerGone, ContainerActionFailed, EngineUnavailable):
                self.remove(container_id)
        return int(result.get("StatusCode", -1)), output.decode(errors="replace")

    def close(self) -> None:
        self._client.close()
