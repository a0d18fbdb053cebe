"""The containers we want, derived from Settings by pure functions, and their hashes.

Two containers make one deployment, as in a Kubernetes pod: the *network holder*
(``<name>-net``) owns the network namespace and the published port and only sleeps;
the registry joins its namespace. A registry that crashes is then started again
without Docker tearing its network down and building it anew (veth, iptables,
docker-proxy), which is most of the time a restart takes.

Each hash is stored as a label on its container; a container whose label matches
the desired hash is ours and current, and is adopted without a restart.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from pathlib import PurePosixPath

from supervisor.layout import REGISTRY_CONTAINER_PORT, REGISTRY_DATA_PATH, ImageLayout
from supervisor.settings import DRAIN_VARIABLE, Settings

MANAGED_BY_LABEL = "registry-supervisor.managed-by"
MANAGED_BY_VALUE = "registry-supervisor"
SPEC_HASH_LABEL = "registry-supervisor.spec-hash"
HOLDER_SUFFIX = "-net"
# The registry's read-only maintenance mode (pulls work, pushes get 405): what `gc` and a
# fleet gc's hold switch it to.
READONLY_VARIABLE = "REGISTRY_STORAGE_MAINTENANCE_READONLY"
READONLY_VALUE = '{"enabled": true}'
# What the holder runs: the image's own `sleep` (busybox in the official image), for
# 68 years: a count every `sleep` takes, where "infinity" is not universal.
HOLDER_COMMAND = ("sleep", "2147483647")

REGISTRY_PORT = f"{REGISTRY_CONTAINER_PORT}/tcp"
DATA_MOUNT = REGISTRY_DATA_PATH
CERTS_MOUNT = "/certs"
HTPASSWD_MOUNT = "/auth/htpasswd"
# Shown in the client's login prompt; a REGISTRY_AUTH_HTPASSWD_REALM the user sets wins.
DEFAULT_REALM = "registry"
# The registry's drain on SIGTERM when nobody set one: long enough for a manifest or a
# layer in flight, and short of MY_REG_STOP_TIMEOUT by a margin, so `docker stop` never
# SIGKILLs a registry that is still draining.
DEFAULT_DRAIN_S = 5
DRAIN_MARGIN_S = 2
# With a read-only root filesystem the registry still gets a scratch /tmp.
TMPFS = {"/tmp": "rw,noexec,nosuid,nodev,size=64m"}  # noqa: S108 (inside the container)


def holder_name_for(name: str) -> str:
    """The network holder's container name for the registry container ``name`` (pure):
    the one place that spells it."""
    return f"{name}{HOLDER_SUFFIX}"


@dataclass(frozen=True)
class Mount:
    """A bind mount of the host path ``source`` at ``target`` in the container."""

    source: str
    target: str
    read_only: bool = False


@dataclass(frozen=True)
class ContainerSpec:
    """Everything that defines the registry container; equal specs, equal hashes."""

    name: str
    image: str
    bind: str
    port: int
    mounts: tuple[Mount, ...]
    environment: tuple[tuple[str, str], ...]
    stop_timeout: int
    # Hardening (MY_REG_READ_ONLY, _NO_NEW_PRIVILEGES, _CAP_DROP_ALL, _MEMORY).
    read_only: bool = False
    no_new_privileges: bool = False
    cap_drop_all: bool = False
    memory: int | None = None
    # Variables the supervisor adds by default (the drain timeout), outside the hash: see
    # spec_hash(). A variable the user sets is in ``environment`` instead.
    default_environment: tuple[tuple[str, str], ...] = ()
    spec_hash: str = field(default="", compare=False)

    @property
    def labels(self) -> dict[str, str]:
        """The labels that mark the container ours and current (its spec hash)."""
        return {MANAGED_BY_LABEL: MANAGED_BY_VALUE, SPEC_HASH_LABEL: self.spec_hash}

    @property
    def container_environment(self) -> dict[str, str]:
        """The environment the container gets: the hashed one and our defaults."""
        return {**dict(self.default_environment), **dict(self.environment)}

    @property
    def holder_name(self) -> str:
        """The name of the network holder this registry joins."""
        return holder_name_for(self.name)


@dataclass(frozen=True)
class HolderSpec:
    """The network holder: the published port, the image's `sleep`, nothing else."""

    name: str
    image: str
    bind: str
    port: int
    read_only: bool = False
    no_new_privileges: bool = False
    cap_drop_all: bool = False
    spec_hash: str = field(default="", compare=False)

    @property
    def labels(self) -> dict[str, str]:
        """The labels that mark the container ours and current (its spec hash)."""
        return {MANAGED_BY_LABEL: MANAGED_BY_VALUE, SPEC_HASH_LABEL: self.spec_hash}


def holder_spec(spec: ContainerSpec) -> HolderSpec:
    """The network holder that goes with the registry ``spec`` (pure)."""
    holder = HolderSpec(
        name=spec.holder_name,
        image=spec.image,
        bind=spec.bind,
        port=spec.port,
        read_only=spec.read_only,
        no_new_privileges=spec.no_new_privileges,
        cap_drop_all=spec.cap_drop_all,
    )
    payload = {
        "role": "network-holder",
        "command": list(HOLDER_COMMAND),
        "name": holder.name,
        "image": holder.image,
        "bind": holder.bind,
        "port": holder.port,
        "read_only": holder.read_only,
        "no_new_privileges": holder.no_new_privileges,
        "cap_drop_all": holder.cap_drop_all,
    }
    return replace(holder, spec_hash=_digest(payload))


# v3's default config logs at debug; v2's (no level given) at info.
V3_DEFAULT_LOG_LEVEL = "info"


def default_drain_timeout(settings: Settings) -> str | None:
    """REGISTRY_HTTP_DRAINTIMEOUT for the container when nobody set one (pure): None when
    the user set it (any case, as the registry reads names), when MY_REG_CONF is set (a
    config file may set http.draintimeout, which a variable would override), or when
    MY_REG_STOP_TIMEOUT leaves no room for a drain before the SIGKILL.

    Without it the registry installs no SIGTERM handler: `docker stop` ends it at once and
    cuts every request in flight. With it the registry closes its listener and finishes
    the requests it has (up to the timeout) before it exits.
    """
    if settings.conf is not None:
        return None
    if any(key.upper() == DRAIN_VARIABLE for key in settings.registry_env):
        return None
    seconds = min(DEFAULT_DRAIN_S, settings.stop_timeout - DRAIN_MARGIN_S)
    return f"{seconds}s" if seconds > 0 else None


def derive_spec(settings: Settings, layout: ImageLayout | None) -> ContainerSpec:
    """The desired container for these settings on an image of this layout (pure: no I/O).

    ``layout`` None: the image is not inspected yet. That spec names the container and
    its image, and is never created nor compared: MY_REG_CONF has nowhere to go yet.
    For an unchanged image the layout, and so the hash, is the same on every start.
    """
    mounts = [Mount(str(settings.dir), DATA_MOUNT)]
    if settings.conf is not None and layout is not None:
        mounts.append(Mount(str(settings.conf), layout.config_path, read_only=True))
    environment = dict(settings.registry_env)
    if (
        layout is not None
        and layout.major == 3
        and settings.conf is None
        and not any(key.upper() == "REGISTRY_LOG_LEVEL" for key in environment)
    ):
        # Not the journal's concern (the forwarder drops lines below MY_REG_LOG_LEVEL),
        # but the engine's log file would fill with one debug line per request.
        environment["REGISTRY_LOG_LEVEL"] = V3_DEFAULT_LOG_LEVEL
    if settings.tls_dir is not None:
        mounts.append(Mount(str(settings.tls_dir), CERTS_MOUNT, read_only=True))
        environment["REGISTRY_HTTP_TLS_CERTIFICATE"] = str(
            PurePosixPath(CERTS_MOUNT, settings.tls_crt)
        )
        environment["REGISTRY_HTTP_TLS_KEY"] = str(PurePosixPath(CERTS_MOUNT, settings.tls_key))
    if settings.auth_htpasswd is not None:
        mounts.append(Mount(str(settings.auth_htpasswd), HTPASSWD_MOUNT, read_only=True))
        environment["REGISTRY_AUTH"] = "htpasswd"
        environment.setdefault("REGISTRY_AUTH_HTPASSWD_REALM", DEFAULT_REALM)
        environment["REGISTRY_AUTH_HTPASSWD_PATH"] = HTPASSWD_MOUNT
    drain = default_drain_timeout(settings)
    spec = ContainerSpec(
        name=settings.name,
        image=settings.image_ref,
        bind=settings.bind,
        port=settings.port,
        mounts=tuple(mounts),
        environment=tuple(sorted(environment.items())),
        stop_timeout=settings.stop_timeout,
        read_only=settings.read_only,
        no_new_privileges=settings.no_new_privileges,
        cap_drop_all=settings.cap_drop_all,
        memory=settings.memory_bytes,
        default_environment=() if drain is None else ((DRAIN_VARIABLE, drain),),
    )
    return replace(spec, spec_hash=spec_hash(spec))


def spec_hash(spec: ContainerSpec) -> str:
    """A stable digest of the spec (the hash field itself and our default variables
    excluded)."""
    # HAZARD: ``default_environment`` stays out on purpose. A container whose hash differs
    # is replaced, so hashing the drain default (added in 0.2) would restart every
    # registry in the field on upgrade. A container adopted from an earlier release keeps
    # running without a drain until it is replaced for another reason (a changed spec, an
    # update, gc); every container created since gets it. A REGISTRY_HTTP_DRAINTIMEOUT the
    # user sets is in ``environment``, hashed like any REGISTRY_* variable.
    payload = {
        "name": spec.name,
        "image": spec.image,
        "bind": spec.bind,
        "port": spec.port,
        "mounts": [[m.source, m.target, m.read_only] for m in spec.mounts],
        "environment": [list(item) for item in spec.environment],
        "stop_timeout": spec.stop_timeout,
        "read_only": spec.read_only,
        "no_new_privileges": spec.no_new_privileges,
        "cap_drop_all": spec.cap_drop_all,
        "memory": spec.memory,
        # Registries of earlier releases published the port themselves: replace them.
        "network": "holder",
    }
    return _digest(payload)


def _digest(payload: dict[str, object]) -> str:
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]
