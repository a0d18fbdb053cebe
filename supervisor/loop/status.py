"""What the supervisor says about itself: systemd's STATUS line and the state file.

Both are built from one ``StatusView``, a snapshot of the loop's components
(``snapshot``); the line and the file content are pure functions of it.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from supervisor import tls
from supervisor.phase import Phase
from supervisor.reconcile import Reason
from supervisor.statedir import state_file

if TYPE_CHECKING:
    from supervisor.loop.container_actions import Desired
    from supervisor.loop.health_watch import HealthWatch
    from supervisor.loop.housekeeping import Housekeeping
    from supervisor.loop.image import ImageKeeper
    from supervisor.loop.keeper import ContainerKeeper
    from supervisor.loop.maintenance_gate import MaintenanceGate


@dataclass(frozen=True)
class StatusView:
    """The facts the status line and the state file are made of, at ``now``."""

    now: float
    phase: Phase
    container: str
    container_id: str | None
    image: str
    image_id: str | None
    registry_version: str | None
    probe_url: str
    address: str  # bind:port
    healthy_since: float | None
    healthy_since_wall: datetime | None
    restarts: Counter[Reason]
    last_reason: Reason | None
    last_reason_wall: datetime | None
    pending_reason: Reason | None
    repair_at: float | None
    attempt: int
    port_busy_by: str | None
    failures: int
    retries: int
    probe_error: str | None  # the last failed probe's phrase, until one succeeds
    maintenance_task: str | None
    started_wall: datetime
    notes: tuple[str, ...] = ()  # a TLS expiry, a low disk: appended to the line
    degraded: tuple[str, ...] = ()  # what a degraded registry cannot do, one phrase each
    disk_low: bool = False
    disk_free_percent: float | None = None


def snapshot(
    now: float,
    phase: Phase,
    desired: Desired,
    *,
    keeper: ContainerKeeper,
    health: HealthWatch,
    images: ImageKeeper,
    gate: MaintenanceGate,
    house: Housekeeping,
    certificate: tls.Certificate | None,
    started_wall: datetime,
    degraded: tuple[str, ...] = (),
) -> StatusView:
    """The loop's facts at ``now``, gathered from its components (reads no I/O)."""
    settings = desired.settings
    wall = datetime.now(UTC)
    notes = (tls.expiry_note(certificate, wall), house.disk_guard.note())
    lock, info = gate.lock, images.info
    return StatusView(
        now=now,
        phase=phase,
        container=settings.name,
        container_id=keeper.tracked.container_id,
        image=desired.spec.image,
        image_id=images.image_id,
        registry_version=info.label if info is not None else None,
        probe_url=settings.probe_url,
        address=f"{settings.bind}:{settings.port}",
        healthy_since=health.healthy_since,
        healthy_since_wall=health.healthy_since_wall,
        restarts=keeper.restarts,
        last_reason=keeper.last_reason,
        last_reason_wall=keeper.last_reason_wall,
        pending_reason=keeper.pending_reason,
        repair_at=keeper.repair_at,
        attempt=keeper.budget.attempt,
        port_busy_by=keeper.port_busy_by,
        failures=health.failures.failures,
        probe_error=health.last_error,
        retries=settings.health_retries,
        maintenance_task=lock.task if lock is not None else None,
        started_wall=started_wall,
        notes=tuple(note for note in notes if note),
        disk_low=house.disk_guard.low,
        disk_free_percent=house.disk_guard.free_percent,
        degraded=degraded,
    )


def format_duration(seconds: float) -> str:
    """A short uptime: 42s, 5m3s, 2h7m, 3d4h."""
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h"
    if hours:
        return f"{hours}h{minutes}m"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def status_line(view: StatusView) -> str:
    """The one human line systemd shows as the unit's status, with its notes."""
    return "; ".join((phase_line(view), *view.notes))


def phase_line(view: StatusView) -> str:  # noqa: PLR0911 (one return per phase)
    """What the phase means right now, in a few words."""
    now, phase = view.now, view.phase
    restarts = sum(view.restarts.values())
    if phase is Phase.HEALTHY and view.healthy_since is not None:
        counted = f"{restarts} restart" + ("" if restarts == 1 else "s")
        line = f"healthy: up {format_duration(now - view.healthy_since)}, {counted}"
        return f"{line} (last: {view.last_reason})" if view.last_reason else line
    if phase is Phase.DEGRADED and view.probe_error is not None:
        # Only the registry's own health check (503 on every path) degrades it while
        # the probe fails: it answers, and serves nothing.
        return f"degraded: {'; '.join(view.degraded)} (answering, serving nothing)"
    if phase is Phase.DEGRADED and view.healthy_since is not None:
        up = format_duration(now - view.healthy_since)
        return f"degraded: {'; '.join(view.degraded)} (serving, up {up})"
    if phase is Phase.RESTARTING:
        wait = max(0.0, (view.repair_at or now) - now)
        return f"restarting: {view.pending_reason}, attempt {view.attempt}, next in {wait:.1f}s"
    if phase is Phase.ENGINE_DOWN:
        return "waiting for Docker engine"
    if phase is Phase.PORT_BUSY:
        wait = max(0.0, (view.repair_at or now) - now)
        return (
            f"waiting for port {view.address}: held by {view.port_busy_by}; next try in {wait:.1f}s"
        )
    if phase is Phase.PULLING:
        return f"pulling {view.image}"
    if phase is Phase.UNHEALTHY and view.failures == 0 and view.probe_error is not None:
        return f"unhealthy: {view.probe_error}"  # reported, not counted (a TLS failure)
    if phase is Phase.UNHEALTHY:
        line = f"unhealthy: {view.failures}/{view.retries} probes failed"
        return f"{line} ({view.probe_error})" if view.probe_error else line
    if phase is Phase.STARTING:
        return f"starting: waiting for {view.probe_url} to answer"
    if phase is Phase.MAINTENANCE and view.maintenance_task is not None:
        return f"maintenance: {view.maintenance_task}"
    return str(phase)


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat(timespec="seconds") if moment is not None else None


def state_content(view: StatusView, updated_wall: datetime) -> dict[str, Any]:
    """What the state file holds (see supervisor/statedir/state_file.py)."""
    healthy = view.phase is Phase.HEALTHY
    return {
        "version": state_file.STATE_VERSION,
        "pid": os.getpid(),
        "container": view.container,
        "container_id": view.container_id,
        "phase": view.phase.value,
        "supervisor_started_at": _iso(view.started_wall),
        "healthy_since": _iso(view.healthy_since_wall) if healthy else None,
        "restarts": {reason.value: count for reason, count in sorted(view.restarts.items())},
        "last_reason": view.last_reason.value if view.last_reason else None,
        "last_reason_at": _iso(view.last_reason_wall),
        "image_id": view.image_id,
        "registry_version": view.registry_version,
        "disk_low": view.disk_low,
        "disk_free_percent": (
            None if view.disk_free_percent is None else round(view.disk_free_percent, 2)
        ),
        "updated_at": _iso(updated_wall),
    }
