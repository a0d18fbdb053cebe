"""The Docker engine, through docker-py: containers, images and the one-shot runs.

The package's only importers of docker-py are this one and its neighbours in
``supervisor/engine/`` (events, logs, create configs). Every docker-py or requests error
is translated here: "not found" is ``None``, an unreachable engine is
``EngineUnavailable``, a refusal is ``ContainerActionFailed`` (``EngineRefused`` for a
read the engine answers with a 4xx).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

import docker
import docker.errors
import requests

from supervisor.engine.configs import as_candidate, create_config, holder_create_config
from supervisor.errors import (
    ContainerActionFailed,
    ContainerGone,
    EngineRefused,
    EngineUnavailable,
    ImageUnavailable,
    PortBusy,
)
from supervisor.layout import ImageLayout, RegistryVersion, layout_of, parse_version
from supervisor.observed import Observed, observe
from supervisor.spec import MANAGED_BY_LABEL, MANAGED_BY_VALUE, ContainerSpec, HolderSpec

# API calls that should be quick; a hung engine must not hang the loop forever.
API_TIMEOUT_S = 10  # well under half of the unit's WatchdogSec=30s
# Docker Engine 20.10 and later speak it. A fixed version also keeps the client
# constructor free of I/O ("auto" asks the engine and leaks a socket on failure).
API_VERSION = "1.41"
# Containers created only to learn whether the engine accepts a new spec, then removed.
CANDIDATE_SUFFIX = "-candidate"
# `registry --version` answers in well under a second; a stuck one must not hold the loop.
VERSION_TIMEOUT_S = 20
# How the engine says a start failed because the host port is taken (Docker 20.10): by
# another container ("Bind for 0.0.0.0:5001 failed: port is already allocated") or by a
# host process ("listen tcp4 0.0.0.0:5001: bind: address already in use").
PORT_TAKEN_MARKERS = ("port is already allocated", "address already in use")


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
    """One connection to the engine (a docker-py client): made per command, and by the
    loop anew after the engine was lost; closed by whoever made it. Its methods answer or
    raise this package's errors, never docker-py's."""

    def __init__(self) -> None:
        try:
            self._client = docker.from_env(version=API_VERSION, timeout=API_TIMEOUT_S)
        except docker.errors.DockerException as err:
            raise EngineUnavailable(str(err)) from err

    @property
    def api(self) -> docker.APIClient:
        """The low-level docker-py client this engine shares (for the event stream)."""
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
        """Return if the engine answers; EngineUnavailable otherwise."""
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
        """The container as observed now; None if there is none of that name or id."""
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

    def tag(self, image_id: str, ref: str) -> None:
        """`docker tag IMAGE_ID REPOSITORY:TAG`: ``ref`` names ``image_id`` from now on
        (the image it named before stays, by its id)."""
        repository, _, tag = ref.rpartition(":")
        try:
            with _translated("tag"):
                self._client.api.tag(image_id, repository, tag, force=True)
        except ContainerGone as err:  # the image id is gone
            raise ImageUnavailable(f"{image_id}: {err}") from err

    def create(self, spec: ContainerSpec, holder_id: str) -> Observed:
        """Create the registry in the network namespace of the holder ``holder_id``."""
        return self._created(self._create(create_config(spec, holder_id)))

    def create_holder(self, holder: HolderSpec) -> Observed:
        """Create the network holder (not started): it publishes the port."""
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
                holder_id = self._create(as_candidate(config, names[1]))
                created.append(holder_id)
            created.append(self._create(as_candidate(create_config(spec, holder_id), names[0])))
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
        """Stop a container: SIGTERM, then SIGKILL after ``timeout`` seconds."""
        # docker-py adds `timeout` to its HTTP timeout for this call.
        with _translated("stop"):
            self._client.api.stop(container_id, timeout=timeout)

    def remove(self, container_id: str) -> None:
        """Remove a container, never its volumes: registry data is not ours to delete."""
        with _translated("remove"):
            self._client.api.remove_container(container_id, v=False, force=True)

    def retire(self, observed: Observed, timeout: int) -> None:
        """Stop ``observed`` if it runs (SIGKILL after ``timeout`` s) and remove it; its
        volumes and the data dir stay. Already gone (`docker run --rm`: its stop removed it)
        is fine."""
        if observed.running:
            self.stop(observed.id, timeout)
        with suppress(ContainerGone):
            self.remove(observed.id)

    def create_started(self, spec: ContainerSpec, holder_id: str) -> Observed:
        """Create the registry in the holder's namespace, and start it."""
        created = self.create(spec, holder_id)
        self.start(created.id)
        return created

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

    def start_once(self, config: dict[str, Any]) -> str:
        """Create and start a one-shot container (``create_config``'s form); its id. The
        caller watches it (``inspect``), reads its ``output`` and removes it."""
        container_id = self._create(config)
        try:
            with _translated("run"):
                self._client.api.start(container_id)
        except BaseException:
            with suppress(ContainerGone, ContainerActionFailed, EngineUnavailable):
                self.remove(container_id)
            raise
        return container_id

    def output(self, container_id: str) -> str:
        """A container's output so far (stdout and stderr)."""
        with _translated("logs"):
            raw = self._client.api.logs(container_id, stdout=True, stderr=True)
        return raw.decode(errors="replace")

    def kill(self, container_id: str) -> None:
        """SIGKILL a container now (a collector that must not outlive its lease)."""
        with _translated("kill"):
            self._client.api.kill(container_id)

    def close(self) -> None:
        """Close the connection (the engine keeps running whatever it started)."""
        self._client.close()
