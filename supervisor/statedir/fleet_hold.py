"""The fleet gc hold, kept in MY_REG_STATE_DIR: a supervisor restarted mid-gc (a crash, a
SIGKILL, an upgrade) goes on holding its registry read-only.

The file is written when the registry is switched to read-only for a lease and removed
when it is switched back. Its deadline is on the boot-time clock (supervisor/fleet.py,
``Hold``), so a wall-clock step neither ends nor extends it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from supervisor.fleet import Hold
from supervisor.settings import Settings
from supervisor.statedir import files, maintenance


def hold_path(settings: Settings) -> Path:
    """Where the hold of ``settings.name`` is kept."""
    return settings.state_dir / f"fleet-hold-{settings.name}"


def joined_path(settings: Settings) -> Path:
    """Where ``settings.name``'s member notes that it has reached its fleet once."""
    return settings.state_dir / f"fleet-joined-{settings.name}"


def mark_joined(path: Path) -> None:
    """This member has reached its fleet (it is in the roster). OSError."""
    files.make_private_dir(path.parent)
    files.write_private(path, b"1\n", durable=True)


def boottime() -> float:
    """Seconds since boot, counting suspend; the same clock in every process of a boot."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def wall() -> float:
    """Wall-clock seconds: only for a hold that outlives a reboot."""
    return time.time()


def boot_id() -> str | None:
    """This boot's id (a boot-time deadline compares within one boot only)."""
    return maintenance.boot_id()


def read(path: Path) -> Hold | None:
    """The hold kept at ``path``; None when there is none (or it is not one)."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        boot = raw.get("boot_id")
        wall = raw.get("until_wall")
        return Hold(
            str(raw["token"]),
            float(raw["until"]),
            None if boot is None else str(boot),
            float(raw.get("floor", 0.0)),
            None if wall is None else float(wall),
            float(raw.get("hold_s", 0.0)),
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def write(path: Path, hold: Hold) -> None:
    """Keep ``hold`` (durably: it must survive a crash right after). OSError."""
    files.make_private_dir(path.parent)
    body = {
        "token": hold.token,
        "until": hold.until,
        "boot_id": hold.boot_id,
        "floor": hold.floor,
        "until_wall": hold.until_wall,
        "hold_s": hold.hold_s,
    }
    files.write_private(path, (json.dumps(body) + "\n").encode("utf-8"), durable=True)


def remove(path: Path) -> None:
    """The registry is writable again: forget the hold."""
    path.unlink(missing_ok=True)
