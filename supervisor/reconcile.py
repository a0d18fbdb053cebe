"""What to do about the container: pure decisions from what the engine shows.

``decide()`` compares the observed container with the desired spec;
``classify()`` names why a container is down from the events seen since it last
ran. Neither does I/O, so every branch is unit-tested without an engine.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from supervisor.observed import ContainerState, Observed
from supervisor.spec import ContainerSpec, HolderSpec


class Reason(StrEnum):
    """Why the registry is being (re)started or replaced."""

    CRASHED = "crashed"
    OOM = "oom"
    REMOVED = "removed"
    STOPPED = "stopped"
    UNHEALTHY = "unhealthy"
    SPEC_CHANGED = "spec-changed"
    ENGINE_RESTARTED = "engine-restarted"  # the engine went away and stopped it
    FOREIGN = "foreign"  # a container of our name that we did not create
    NETWORK_LOST = "network-lost"  # its network holder was replaced
    UNSTARTABLE = "unstartable"  # the engine keeps refusing to start it
    START_FAILED = "start-failed"  # the engine refused to create or start it: retried
    PORT_BUSY = "port-busy"  # something we may not take over holds the host port: waited for


class Action(StrEnum):
    """What to do to a container to make it match its spec."""

    CREATE = "create"  # nothing there: create and start
    ADOPT = "adopt"  # ours, current and running: leave it alone
    START = "start"  # ours, current, not running: start the same container
    REPLACE = "replace"  # foreign or outdated: stop, remove (never its data), create
    RESTART = "restart"  # running but unhealthy: kill and start again
    WAIT = "wait"  # being removed by someone else: look again shortly


@dataclass(frozen=True)
class Decision:
    """An action and, for a change, the reason it is logged and counted under."""

    action: Action
    reason: Reason | None = None


def decide(  # noqa: PLR0911 (one return per case, read top to bottom)
    observed: Observed | None,
    desired: ContainerSpec | HolderSpec,
    image_id: str | None,
    *,
    unhealthy: bool = False,
    holder: Observed | None = None,
    in_holder_network: bool | None = None,
) -> Decision:
    """The action that brings ``observed`` to ``desired``.

    ``image_id`` is the local id of the desired image (None when unknown);
    ``unhealthy`` says the running container failed its probes; ``holder``, when
    given, is the running network holder the registry must share a namespace with.
    Docker records that namespace by the holder's id, and joins it only when the
    registry starts: a new holder means a new registry, and a holder started after
    the registry (`docker restart <name>-net`) means a registry without a network.
    ``in_holder_network`` is the evidence on that (False: the registry's namespace is
    not the holder's; None: no evidence), gathered by the caller from the processes'
    namespaces or from the holder's pid when the registry joined it. Never from the
    engine's StartedAt: wall-clock stamps, which a clock step reorders.
    """
    if observed is None:
        return Decision(Action.CREATE, Reason.REMOVED)
    if observed.state is ContainerState.REMOVING:
        return Decision(Action.WAIT, Reason.REMOVED)
    if observed.state is ContainerState.DEAD:
        # A failed removal: the engine refuses to start it, so it can only be replaced.
        return Decision(Action.REPLACE, Reason.REMOVED)
    if not observed.managed:
        return Decision(Action.REPLACE, Reason.FOREIGN)
    if observed.spec_hash != desired.spec_hash or (
        image_id is not None and observed.image_id != image_id
    ):
        return Decision(Action.REPLACE, Reason.SPEC_CHANGED)
    if holder is not None:
        if observed.network_mode != f"container:{holder.id}":
            return Decision(Action.REPLACE, Reason.NETWORK_LOST)
        if observed.running and in_holder_network is False:
            return Decision(Action.RESTART, Reason.NETWORK_LOST)
    if observed.running:
        return Decision(Action.RESTART, Reason.UNHEALTHY) if unhealthy else Decision(Action.ADOPT)
    if observed.state is ContainerState.PAUSED:
        # `docker start` refuses a paused container; a restart (kill, start) does not.
        return Decision(Action.RESTART, Reason.STOPPED)
    return Decision(Action.START, None)


def classify(observed: Observed | None, actions: Iterable[str]) -> Reason:
    """Why the container is down, from its state and the engine events since it ran.

    A `kill` or `stop` event means someone asked the engine (docker stop, docker
    kill), as does a paused container; a `die` alone means the process ended on its own.
    """
    seen = set(actions)
    if observed is None or observed.state is ContainerState.REMOVING or "destroy" in seen:
        return Reason.REMOVED
    if observed.oom_killed or "oom" in seen:
        return Reason.OOM
    if seen & {"kill", "stop"} or observed.state is ContainerState.PAUSED:
        return Reason.STOPPED
    return Reason.CRASHED
