"""Who else is on our port, and whether it is the registry we are to take over (pure).

A container we did not create that publishes our host port is one of two things. If it
also serves our MY_REG_DIR (a bind mount of it at the registry's data path), it is the
same registry run another way (the seed's compose service, a `docker run`): `run` takes
it over, stopping it and setting its restart policy to `no` so that an engine restart does
not bring it back onto the port; it is never removed, nor its data. Anything else is
somebody else's service: `check` refuses, `run` waits for the port (supervisor/loop/).
"""

from __future__ import annotations

import shlex
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import PurePosixPath

from supervisor.observed import ContainerState, Observed
from supervisor.spec import DATA_MOUNT, holder_name_for

# The unit's name: what an admin stops to go back to the old container.
UNIT = "registry-supervisor"
WILDCARDS = frozenset({"", "0.0.0.0", "::"})  # noqa: S104 (addresses compared, not bound)


@dataclass(frozen=True)
class PortClaim:
    """What stands between us and our host port."""

    take_over: tuple[Observed, ...] = ()  # the same registry: stop it, restart policy `no`
    blockers: tuple[Observed, ...] = ()  # running, and not ours to stop

    @property
    def free(self) -> bool:
        """Whether nothing stands between us and the port."""
        return not self.take_over and not self.blockers


def overlaps(host_ip: str, bind: str) -> bool:
    """Whether a binding on ``host_ip`` takes the port from one on ``bind``."""
    return host_ip in WILDCARDS or bind in WILDCARDS or host_ip == bind


def holds_port(observed: Observed, bind: str, port: int) -> bool:
    """Whether ``observed`` publishes ``port`` on an address that overlaps ``bind``."""
    return any(p == port and overlaps(ip, bind) for ip, p in observed.port_bindings)


def serves(observed: Observed, data_dirs: Collection[str]) -> bool:
    """Whether ``observed`` bind-mounts one of ``data_dirs`` at the registry's data path."""
    wanted = {PurePosixPath(d) for d in data_dirs}
    return any(
        PurePosixPath(source) in wanted and PurePosixPath(target) == PurePosixPath(DATA_MOUNT)
        for source, target in observed.binds
    )


def claim_port(
    containers: Iterable[Observed], name: str, bind: str, port: int, data_dirs: Collection[str]
) -> PortClaim:
    """Sort the containers publishing our port (ours, of ``name``, left out).

    A running one serving ``data_dirs`` is taken over; so is a stopped one whose restart
    policy would start it again (Docker starts `always` ones when the engine restarts, and
    `on-failure` ones that exited non-zero). Any other running one blocks; a stopped one
    without a policy holds nothing.
    """
    take_over: list[Observed] = []
    blockers: list[Observed] = []
    for observed in containers:
        if observed.name in (name, holder_name_for(name)) or not holds_port(observed, bind, port):
            continue
        comes_back = observed.restart_policy != "no"
        # A paused container still holds its port (and `docker stop` stops it).
        active = observed.running or observed.state is ContainerState.PAUSED
        if serves(observed, data_dirs) and not observed.managed:
            if active or comes_back:
                take_over.append(observed)
        elif active:
            blockers.append(observed)
    return PortClaim(tuple(take_over), tuple(blockers))


def describe(observed: Observed) -> str:
    """``X (1a2b3c4d5e6f, image registry:2, compose project P service S)``."""
    parts = [observed.short_id, f"image {observed.image}"]
    if observed.compose_project:
        parts.append(
            f"compose project {observed.compose_project} service {observed.compose_service}"
        )
    return f"{observed.name} ({', '.join(parts)})"


def undo(observed: Observed) -> str:
    """The commands that give the port back to the container we took over."""
    back = f"to go back: systemctl disable --now {UNIT}; "
    if observed.auto_remove:
        # `docker run --rm`: the stop removed it; only its own command brings it back.
        return back + f"run {observed.name} again as before (it was started with --rm)"
    policy = observed.restart_policy
    name = shlex.quote(observed.name)
    restore = f"docker update --restart={shlex.quote(policy)} {name}; " if policy != "no" else ""
    line = back + f"{restore}docker start {name}"
    if observed.compose_project and observed.compose_workdir:
        line += (
            f" (or: cd {shlex.quote(observed.compose_workdir)} && docker-compose -p "
            f"{shlex.quote(observed.compose_project)} up -d --force-recreate "
            f"{shlex.quote(observed.compose_service or '')})"
        )
    return line


def free_hint(observed: Observed) -> str:
    """The command that frees the port from a container we may not take over, for good."""
    if observed.restart_policy == "no":
        return f"docker stop {observed.name}"
    # Stopped only, Docker starts it again with the engine, and it takes the port back.
    return f"docker update --restart=no {observed.name} && docker stop {observed.name}"


def blocker_line(observed: Observed, data_dir: str) -> str:
    """Why ``observed`` is not taken over, and how to free the port from it."""
    served = [source for source, target in observed.binds if target == DATA_MOUNT]
    why = (
        f"it serves {served[0]}, not MY_REG_DIR={data_dir}"
        if served
        else "it does not serve MY_REG_DIR at " + DATA_MOUNT
    )
    return f"container {describe(observed)}: {why}; free the port with `{free_hint(observed)}`"
