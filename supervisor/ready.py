"""Whether this member should get traffic from a load balancer (pure).

`GET /ready` on the metrics endpoint (supervisor/adapters/metrics.py) answers what
``verdict`` says. The loop computes it at every heartbeat and publishes it; the HTTP thread
only reads the last one. Ready means "send clients here": the registry answers, and nothing
the supervisor is about to do or is doing will cut it off.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from supervisor.phase import Phase

# The one degradation that leaves the registry serving clients: failing pushes (the canary).
# Pulls still work there, and taking the only member out of a load balancer over a push
# problem would turn it into an outage of pulls too. The registry's own health check
# failing (`dependency`: its storage) is different: it then answers 503 on every path.
SERVING_DEGRADATIONS = frozenset({"canary"})


@dataclass(frozen=True)
class Ready:
    """What `GET /ready` answers: 200 and ``ready``, or 503 and why not."""

    ready: bool
    reason: str  # the body: "ready", or the phase (and degraded source) that is not

    @property
    def status(self) -> int:
        """The HTTP status code."""
        return 200 if self.ready else 503


NOT_YET = Ready(False, "starting")  # before the loop's first heartbeat


def verdict(phase: Phase, degraded: Iterable[str] = (), held: str | None = None) -> Ready:
    """Ready while ``phase`` is healthy, or degraded only by sources that still serve.

    Everything else is not ready: starting (not confirmed yet), unhealthy, restarting
    (a planned replacement drains here, see MY_REG_READY_DRAIN), maintenance (`gc` switches
    the registry read-only and back), stopping, pulling, engine-down, port-busy; and
    ``held``: a fleet member that has never reached its fleet yet.
    """
    if held is not None:
        return Ready(False, held)  # the fleet keeps it out (supervisor/loop/fleet_flow.py)
    if phase is Phase.HEALTHY:
        return Ready(True, "ready")
    if phase is Phase.DEGRADED:
        failing = sorted(set(degraded) - SERVING_DEGRADATIONS)
        if not failing:
            return Ready(True, "ready")
        return Ready(False, f"degraded: {', '.join(failing)}")
    return Ready(False, phase.value)
