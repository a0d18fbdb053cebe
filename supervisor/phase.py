"""The supervisor's phases and the transitions between them (pure).

The loop owns the phase and moves it only through ``check_transition``: a phase change the
table does not list is a bug of ours, caught by the tests rather than shown to an admin
as a status that makes no sense. The table is generous where the engine decides (an
engine loss, `gc`, a stop may come in any phase) and strict where the probe does: only a
probe makes the registry healthy or unhealthy.
"""

from __future__ import annotations

from enum import StrEnum


class Phase(StrEnum):
    """What the supervisor is doing, as STATUS, the state file and `status` show it."""

    ENGINE_DOWN = "engine-down"
    PULLING = "pulling"
    STARTING = "starting"
    HEALTHY = "healthy"
    # Serving, but something it depends on fails (its storage, pushes): a restart of the
    # registry cannot fix that, so it is reported, not repaired in a loop.
    DEGRADED = "degraded"
    UNHEALTHY = "unhealthy"
    RESTARTING = "restarting"
    STOPPING = "stopping"
    MAINTENANCE = "maintenance"  # `gc` restarts the registry on purpose; we stand aside
    PORT_BUSY = "port-busy"  # the host port is held by something we may not take over


# Reachable from every phase but STOPPING: what the engine, `gc` or a signal brings.
_ANYTIME = frozenset({Phase.ENGINE_DOWN, Phase.MAINTENANCE, Phase.STOPPING, Phase.PULLING})

LEGAL: dict[Phase, frozenset[Phase]] = {
    # The first reconcile may start, restart or wait for the port without a pull.
    Phase.ENGINE_DOWN: frozenset({Phase.STARTING, Phase.RESTARTING, Phase.PORT_BUSY}),
    Phase.PULLING: frozenset({Phase.STARTING, Phase.RESTARTING, Phase.PORT_BUSY}),
    Phase.STARTING: frozenset(
        {
            Phase.STARTING,
            Phase.HEALTHY,
            Phase.DEGRADED,
            Phase.UNHEALTHY,
            Phase.RESTARTING,
            Phase.PORT_BUSY,
        }
    ),
    Phase.HEALTHY: frozenset({Phase.STARTING, Phase.DEGRADED, Phase.UNHEALTHY, Phase.RESTARTING}),
    Phase.DEGRADED: frozenset({Phase.STARTING, Phase.HEALTHY, Phase.UNHEALTHY, Phase.RESTARTING}),
    Phase.UNHEALTHY: frozenset({Phase.STARTING, Phase.HEALTHY, Phase.DEGRADED, Phase.RESTARTING}),
    Phase.RESTARTING: frozenset({Phase.STARTING, Phase.RESTARTING, Phase.PORT_BUSY}),
    Phase.PORT_BUSY: frozenset({Phase.STARTING, Phase.RESTARTING, Phase.PORT_BUSY}),
    Phase.MAINTENANCE: frozenset({Phase.STARTING, Phase.RESTARTING}),
    Phase.STOPPING: frozenset(),
}


class IllegalTransition(AssertionError):
    """The loop tried a phase change the table does not allow (a bug of ours)."""


def check_transition(old: Phase, new: Phase) -> Phase:
    """``new``, if the loop may go there from ``old``; IllegalTransition otherwise.

    Staying in a phase is always allowed (a repeated report of the same state).
    """
    if old is new and old is not Phase.STOPPING:
        return new
    if old is not Phase.STOPPING and new in _ANYTIME:
        return new
    if new in LEGAL[old]:
        return new
    raise IllegalTransition(f"phase {old} -> {new}")
