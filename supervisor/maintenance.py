"""The maintenance file: `gc` tells a running supervisor to stand aside.

While a fresh maintenance file for its container exists, the loop neither repairs the
container nor counts failed probes: the restarts `gc` makes on purpose are not faults.
The file names the process that holds it; it is fresh while that process lives (and for
at most MAX_AGE_S), so a `gc` killed halfway never silences the supervisor for good.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from supervisor.settings import Settings

MAX_AGE_S = 6 * 3600.0
GARBAGE_COLLECTION = "garbage collection"


class MaintenanceBusy(Exception):
    """Another live process holds the maintenance file."""

    def __init__(self, holder: Maintenance) -> None:
        super().__init__(f"{holder.task} already running (pid {holder.pid})")
        self.holder = holder


@dataclass(frozen=True)
class Maintenance:
    task: str
    pid: int
    started: float  # epoch seconds


def maintenance_path(settings: Settings) -> Path:
    return settings.state_dir / f"maintenance-{settings.name}"


def alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def is_fresh(holder: Maintenance, now: float, holder_alive: bool) -> bool:
    """A holder counts while its process lives and the file is not older than MAX_AGE_S."""
    return holder_alive and 0 <= now - holder.started <= MAX_AGE_S


def read(path: Path) -> Maintenance | None:
    """The fresh maintenance announced at ``path``, or None (absent, stale or unreadable)."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        holder = Maintenance(str(raw["task"]), int(raw["pid"]), float(raw["started"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return holder if is_fresh(holder, time.time(), alive(holder.pid)) else None


def acquire(path: Path, task: str) -> Maintenance:
    """Announce ``task`` for this process; MaintenanceBusy if a live one holds the file."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    mine = Maintenance(task, os.getpid(), time.time())
    body = json.dumps({"task": mine.task, "pid": mine.pid, "started": mine.started})
    for _ in range(2):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except FileExistsError:
            holder = read(path)
            if holder is not None:
                raise MaintenanceBusy(holder) from None
            path.unlink(missing_ok=True)  # stale: its holder died
            continue
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(body + "\n")
        return mine
    holder = read(path)
    raise MaintenanceBusy(holder or mine)


def release(path: Path, mine: Maintenance) -> None:
    """Remove the file if it is still ours."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    if isinstance(raw, dict) and raw.get("pid") == mine.pid:
        path.unlink(missing_ok=True)
