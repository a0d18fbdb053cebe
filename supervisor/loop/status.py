"""What the supervisor says about itself: systemd's STATUS line and the state file.

Both are built from one ``StatusView``, a snapshot of the loop's components
(``snapshot``); the line and the file content are pure functions of it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from supervisor import tls
from supervisor.loop.keeper import PLANNED_REASONS
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
    restarts: Counter[Reason]  # failures
    planned: Counter[Reason]  # planned replacements (keeper.PLANNED_REASONS)
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
    fleet_note: str | None = None,
) -> StatusView:
    """The loop's facts at ``now``, gathered from its components (reads no I/O)."""
    settings = desired.settings
    wall = datetime.now(UTC)
    notes = (tls.expiry_note(certificate, wall), house.disk_guard.note(), fleet_note)
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
        planned=keeper.planned,
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


def counted(view: StatusView) -> str:
    """The counts: `2 restarts`, or `1 restart, 2 planned` once a replacement was planned."""
    restarts, planned = sum(view.restarts.values()), sum(view.planned.values())
    line = f"{restarts} restart" + ("" if restarts == 1 else "s")
    return f"{line}, {planned} planned" if planned else line


def phase_line(view: StatusView) -> str:  # noqa: PLR0911 (one return per phase)
    """What the phase means right now, in a few words."""
    now, phase = view.now, view.phase
    if phase is Phase.HEALTHY and view.healthy_since is not None:
        line = f"healthy: up {format_duration(now - view.healthy_since)}, {counted(view)}"
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


def _by_reason(counts: Counter[Reason]) -> dict[str, int]:
    return {reason.value: count for reason, count in sorted(counts.items()) if count}


def state_content(
    view: StatusView, updated_wall: datetime, *, stopped: bool = False
) -> dict[str, Any]:
    """What the state file holds (see supervisor/statedir/state_file.py). ``stopped``: the
    last content of a supervisor that stops cleanly (phase `stopped`, no pid)."""
    healthy = view.phase is Phase.HEALTHY and not stopped
    writer = state_file.writer_evidence()
    if stopped:
        writer = dict.fromkeys(writer)
    return {
        "version": state_file.STATE_VERSION,
        **writer,
        "container": view.container,
        "container_id": view.container_id,
        "phase": state_file.STOPPED if stopped else view.phase.value,
        "supervisor_started_at": _iso(view.started_wall),
        "stopped_at": _iso(updated_wall) if stopped else None,
        "healthy_since": _iso(view.healthy_since_wall) if healthy else None,
        "restarts": _by_reason(view.restarts),
        "planned": _by_reason(view.planned),
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


@dataclass(frozen=True)
class Carried:
    """The counts a supervisor takes over from the state file of the one before it."""

    restarts: Counter[Reason]
    planned: Counter[Reason]
    last_reason: Reason | None
    last_reason_wall: datetime | None


_NAMES = frozenset(reason.value for reason in Reason)


def _reasons(raw: object) -> Counter[Reason]:
    """name -> count, whatever a hand edit or another release left: unknown names dropped."""
    counts: Counter[Reason] = Counter()
    if isinstance(raw, dict):
        for name, count in raw.items():
            if name in _NAMES and isinstance(count, int) and not isinstance(count, bool):
                counts[Reason(name)] += max(0, count)
    return counts


def carried(content: dict[str, Any]) -> Carried:
    """The counts and the last reason in a state file's ``content`` (pure). A file of
    version 1 counted planned replacements among the restarts: they are moved apart."""
    restarts, planned = _reasons(content.get("restarts")), _reasons(content.get("planned"))
    for reason in PLANNED_REASONS & restarts.keys():
        planned[reason] += restarts.pop(reason)
    last = content.get("last_reason")
    moment = content.get("last_reason_at")
    try:
        wall = datetime.fromisoformat(moment) if isinstance(moment, str) else None
    except ValueError:
        wall = None
    return Carried(
        restarts=restarts,
        planned=planned,
        last_reason=Reason(last) if last in _NAMES else None,
        last_reason_wall=wall if wall is None or wall.tzinfo else wall.replace(tzinfo=UTC),
    )
