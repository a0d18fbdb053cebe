"""The engine's create arguments for the registry and its network holder (pure)."""

from __future__ import annotations

from typing import Any

import docker.types

from supervisor.observed import CANDIDATE_LABEL
from supervisor.spec import (
    DATA_MOUNT,
    HOLDER_COMMAND,
    MANAGED_BY_LABEL,
    MANAGED_BY_VALUE,
    REGISTRY_PORT,
    TMPFS,
    ContainerSpec,
    HolderSpec,
)

# Over the image's data VOLUME in the holder, which never stores anything.
HOLDER_DATA_TMPFS = "ro,noexec,nosuid,nodev,size=4k"


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
        "environment": spec.container_environment,
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


def as_candidate(config: dict[str, Any], name: str) -> dict[str, Any]:
    """``config`` under another name, without the spec hash: never mistaken for the real one."""
    labels = {MANAGED_BY_LABEL: MANAGED_BY_VALUE, CANDIDATE_LABEL: "true"}
    return {**config, "name": name, "labels": labels}
