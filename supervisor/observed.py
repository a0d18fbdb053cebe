"""What the engine says about a container, reduced to what we decide on (pure).

``observe()`` is the one reader of Docker's raw inspect dicts; everything downstream
(reconcile, takeover, the maintenance lock) works from ``Observed``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from supervisor.spec import MANAGED_BY_LABEL, MANAGED_BY_VALUE, SPEC_HASH_LABEL

CANDIDATE_LABEL = "registry-supervisor.candidate"
# What docker-compose (1.x and v2) labels its containers with.
COMPOSE_PROJECT_LABEL = "com.docker.compose.project"
COMPOSE_SERVICE_LABEL = "com.docker.compose.service"
COMPOSE_WORKDIR_LABEL = "com.docker.compose.project.working_dir"


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
        """Whether the engine says its process runs (paused ones do not)."""
        return self.state is ContainerState.RUNNING

    @property
    def short_id(self) -> str:
        """The id as Docker's CLI shows it: 12 hex digits."""
        return self.id[:12]


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
