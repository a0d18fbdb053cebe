"""`status`: the container, the network holder and the probe's answer, and the facts
beyond them, gathered for the CLI (which prints them).

``gather`` reads the supervisor's state file, the last gc record, the data dir's size and
free space and the certificate's expiry. It never raises for a missing or unreadable
piece: a fact that cannot be had is None.
"""

from __future__ import annotations

from contextlib import closing
from datetime import UTC, datetime
from typing import Any

from supervisor import risks
from supervisor.adapters import disk
from supervisor.adapters.probe import Probe, ProbeFailed
from supervisor.engine import image_info as images
from supervisor.engine.client import Engine
from supervisor.errors import ConfigError
from supervisor.health import is_healthy
from supervisor.loop.status import format_duration
from supervisor.observed import Observed
from supervisor.settings import Settings
from supervisor.spec import holder_name_for
from supervisor.statedir import maintenance, state_file


def _parse(moment: object) -> datetime | None:
    if not isinstance(moment, str):
        return None
    try:
        parsed = datetime.fromisoformat(moment)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def supervisor_state(settings: Settings) -> dict[str, Any] | None:
    """The state file, with ``running`` telling whether its writer still lives (its pid,
    with the same start time: a reused pid is not it; no pid after a clean stop)."""
    content = state_file.read_json(state_file.state_path(settings))
    if content is None:
        return None
    content["running"] = state_file.writer_lives(content)
    return content


def uptime_s(
    supervised: dict[str, Any] | None, container_started_at: str | None, now: datetime
) -> float | None:
    """Seconds healthy: from the live supervisor's healthy_since, else the container's start."""
    since = None
    if supervised is not None and supervised.get("running"):
        since = _parse(supervised.get("healthy_since"))
    if since is None and container_started_at:
        # Docker's StartedAt has nanoseconds, which fromisoformat may not take.
        since = _parse(container_started_at.split(".")[0].rstrip("Z") + "+00:00")
    return None if since is None else max(0.0, (now - since).total_seconds())


def data_dir(settings: Settings) -> dict[str, Any]:
    """The data dir's path, size and file count, and its file system's free space."""
    facts: dict[str, Any] = {"path": str(settings.dir), "min_free_percent": settings.min_free}
    try:
        usage = disk.usage(settings.dir)
    except OSError:
        facts.update(total_bytes=None, free_bytes=None, free_percent=None, low=None)
    else:
        facts.update(
            total_bytes=usage.total,
            free_bytes=usage.free,
            free_percent=round(usage.free_percent, 2),
            low=settings.min_free > 0 and usage.free_percent < settings.min_free,
        )
    size = disk.tree_size(settings.dir)
    facts.update(size_bytes=size.bytes, files=size.files, size_complete=size.complete)
    return facts


def certificate(settings: Settings, now: datetime) -> dict[str, Any] | None:
    """The configured certificate's subject and expiry; None without TLS."""
    found = risks.certificate(settings)
    if found is None:
        return None
    return {
        "path": str(found.path),
        "subject": found.subject,
        "not_after": found.not_after.isoformat(timespec="seconds"),
        "days_left": round(found.days_left(now), 1),
    }


def _counts(raw: object) -> dict[str, int]:
    """The state file's restart counts, whatever a hand edit left in it: only name -> int."""
    if not isinstance(raw, dict):
        return {}
    return {
        str(name): count
        for name, count in raw.items()
        if isinstance(count, int) and not isinstance(count, bool)
    }


# The key under which `status` adds gc's mode switches to the supervisor's planned counts.
GC_MODE_SWITCH = "gc-mode-switch"


def planned(supervised: dict[str, Any] | None, last_gc: dict[str, Any] | None) -> dict[str, int]:
    """Planned replacements by reason: the supervisor's (a reload's `spec-changed`) and the
    registry recreations `gc` made (read-only, then normal), which gc counts in its record."""
    counts = _counts((supervised or {}).get("planned"))
    switches = (last_gc or {}).get("mode_switches_total")
    if isinstance(switches, int) and not isinstance(switches, bool) and switches > 0:
        counts[GC_MODE_SWITCH] = switches
    return dict(sorted(counts.items()))


def gather(
    settings: Settings,
    container_started_at: str | None,
    now: datetime,
    held: maintenance.Maintenance | None,
) -> dict[str, Any]:
    """Everything `status` adds to the container and health facts (``held``: the
    maintenance lock, if it holds)."""
    supervised = supervisor_state(settings)
    last_gc = state_file.read_json(state_file.gc_path(settings))
    return {
        "uptime_s": uptime_s(supervised, container_started_at, now),
        "supervisor": supervised,
        "restarts": _counts((supervised or {}).get("restarts")),
        "planned": planned(supervised, last_gc),
        "last_reason": (supervised or {}).get("last_reason"),
        "last_reason_at": (supervised or {}).get("last_reason_at"),
        "data_dir": data_dir(settings),
        "certificate": certificate(settings, now),
        "last_gc": last_gc,
        "maintenance": None if held is None else {"task": held.task, "pid": held.pid},
    }


def status(settings: Settings) -> tuple[dict[str, Any], list[str]]:
    """`status`: the report (what ``--json`` prints; ``health`` is "healthy" when the
    registry answers) and the same facts as human lines. Asks the engine and probes the
    registry once; changes nothing."""
    with closing(Engine()) as engine:
        observed = engine.inspect(settings.name)
        holder = engine.inspect(holder_name_for(settings.name))
        lock = maintenance.current(
            maintenance.maintenance_path(settings),
            lambda name: maintenance.collector_holds(engine.inspect(name)),
        )
        image = _described(settings, engine, observed)
    container: dict[str, Any] | None = None
    health, detail = "absent", "no container"
    if observed is not None:
        container = {
            "id": observed.id,
            "name": observed.name,
            "state": observed.state.value,
            "image": observed.image,
            "started_at": observed.started_at,
            "managed": observed.managed,
            "exit_code": observed.exit_code,
        }
        probe = Probe(settings.probe_url, settings.tls_certificate)
        try:
            code = probe(settings.health_timeout)
            health = "healthy" if is_healthy(code) else "unhealthy"
            detail = f"HTTP {code}"
        except ProbeFailed as err:
            health, detail = "unhealthy", str(err)
        finally:
            probe.close()
    report = {
        "container": container,
        "health": health,
        "detail": detail,
        "probe_url": settings.probe_url,
        "image_id": observed.image_id if observed is not None else None,
        "registry_version": image.label if image is not None else None,
        "config_path": image.layout.config_path if image is not None else None,
        "network_holder": None
        if holder is None
        else {"id": holder.id, "name": holder.name, "state": holder.state.value},
    }
    started = observed.started_at if observed is not None and observed.running else None
    report.update(gather(settings, started, datetime.now(UTC), lock))
    if health != "healthy":
        report["uptime_s"] = None
    lines = []
    if container is None:
        lines.append(f"container: {settings.name}: absent")
    else:
        lines.append(f"container: {container['name']} {observed.short_id if observed else ''}")
        lines.append(f"state:     {container['state']} (started {container['started_at']})")
        lines.append(f"image:     {container['image']}")
        if image is not None:
            lines.append(f"registry:  {image.label} ({image.layout.describe})")
        lines.append(f"managed:   {'yes' if container['managed'] else 'no (foreign)'}")
    if holder is not None:
        lines.append(f"network:   {holder.name} {holder.short_id} ({holder.state.value})")
    lines.append(f"health:    {health} ({detail}) at {settings.probe_url}")
    return report, lines + glance_lines(report)


def _described(
    settings: Settings, engine: Engine, observed: Observed | None
) -> images.ImageInfo | None:
    """The running container's image, for `status`: None when there is none or its layout
    cannot be read (status reports; `check` and `run` refuse)."""
    if observed is None or not observed.image_id:
        return None
    try:
        return images.describe(settings, engine, observed.image_id)
    except ConfigError:
        return None


def glance_lines(report: dict[str, Any]) -> list[str]:
    """The human lines for what ``gather`` found (pure)."""
    lines = []
    uptime = report.get("uptime_s")
    lines.append(f"uptime:    {format_duration(uptime) if uptime is not None else '-'}")
    if report.get("image_id"):
        lines.append(f"image id:  {report['image_id']}")
    lines += count_lines(report)
    data = report["data_dir"]
    size = disk.human_bytes(data["size_bytes"]) + ("" if data["size_complete"] else "+")
    line = f"data dir:  {data['path']}: {size} in {data['files']} files"
    if data["free_bytes"] is not None:
        line += (
            f"; {disk.human_bytes(data['free_bytes'])} free of "
            f"{disk.human_bytes(data['total_bytes'])} ({data['free_percent']:.1f}%)"
        )
        if data["low"]:
            line += f", LOW (MY_REG_MIN_FREE={data['min_free_percent']:g}%)"
    lines.append(line)
    cert = report.get("certificate")
    lines.append(
        f"tls:       certificate expires {cert['not_after']} ({cert['days_left']:g} days)"
        if cert
        else "tls:       off"
    )
    gc = report.get("last_gc")
    if gc:
        kind = (
            "dry run"
            if gc.get("dry_run")
            else "freed " + disk.human_bytes(gc.get("freed_bytes", 0))
        )
        lines.append(f"last gc:   {gc.get('finished_at')}: {kind} ({gc.get('outcome')})")
    else:
        lines.append("last gc:   never")
    lines.append(supervisor_line(report.get("supervisor")))
    if report.get("maintenance"):
        lines.append(f"maintenance: {report['maintenance']['task']} in progress")
    return lines


def count_lines(report: dict[str, Any]) -> list[str]:
    """`restarts:` (failures) and `planned:` (replacements on purpose), the last reason on
    the line of its kind (pure)."""
    last = report.get("last_reason")
    planned_counts: dict[str, int] = report.get("planned") or {}
    last_key = "planned" if last in planned_counts else "restarts"
    lines = []
    for label, key in (("restarts: ", "restarts"), ("planned:  ", "planned")):
        counts: dict[str, int] = report.get(key) or {}
        if key == "planned" and not counts:
            continue
        by_reason = ", ".join(f"{reason} {count}" for reason, count in sorted(counts.items()))
        line = f"{label} {sum(counts.values())}" + (f" ({by_reason})" if by_reason else "")
        if last and key == last_key:
            line += f"; last: {last} at {report.get('last_reason_at')}"
        lines.append(line)
    return lines


def supervisor_line(supervised: dict[str, Any] | None) -> str:
    """Whether the supervisor runs, and what its state file last said (pure): a file whose
    writer is gone says so, never a stale `healthy` as if it were current."""
    if supervised is None:
        return "supervisor: no state file yet"
    phase, updated = supervised.get("phase"), supervised.get("updated_at")
    if supervised.get("running"):
        return f"supervisor: running (pid {supervised.get('pid')}, {phase}, state of {updated})"
    if phase == state_file.STOPPED:
        return f"supervisor: stopped (at {supervised.get('stopped_at') or updated})"
    return (
        f"supervisor: not running (pid {supervised.get('pid')} gone without stopping; "
        f"last seen {phase} at {updated})"
    )
