"""`status` at a glance: the facts beyond the container itself, gathered for the CLI.

Reads the supervisor's state file, the last gc record, the data dir's size and free
space and the certificate's expiry. Never raises for a missing or unreadable piece:
a fact that cannot be had is None.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from supervisor import risks
from supervisor.adapters import disk
from supervisor.settings import Settings
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
    """The state file, with ``running`` telling whether its writer still lives."""
    content = state_file.read_json(state_file.state_path(settings))
    if content is None:
        return None
    pid = content.get("pid")
    content["running"] = isinstance(pid, int) and maintenance.alive(pid)
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


def gather(
    settings: Settings,
    container_started_at: str | None,
    now: datetime,
    held: maintenance.Maintenance | None,
) -> dict[str, Any]:
    """Everything `status` adds to the container and health facts (``held``: the
    maintenance lock, if it holds)."""
    supervised = supervisor_state(settings)
    return {
        "uptime_s": uptime_s(supervised, container_started_at, now),
        "supervisor": supervised,
        "restarts": _counts((supervised or {}).get("restarts")),
        "last_reason": (supervised or {}).get("last_reason"),
        "last_reason_at": (supervised or {}).get("last_reason_at"),
        "data_dir": data_dir(settings),
        "certificate": certificate(settings, now),
        "last_gc": state_file.read_json(state_file.gc_path(settings)),
        "maintenance": None if held is None else {"task": held.task, "pid": held.pid},
    }
