"""Disk space of the data dir: usage (I/O), a bounded size walk (I/O), and the guard (pure).

The guard reports a crossing of the MY_REG_MIN_FREE threshold once, in each direction,
so a full disk is one warning in the log, not one per check.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

# A walk of a huge registry stops after this many entries or seconds: `status` must
# answer promptly; the size is then marked incomplete (a lower bound).
WALK_MAX_ENTRIES = 1_000_000
WALK_MAX_SECONDS = 10.0


@dataclass(frozen=True)
class Usage:
    """The file system holding a path: total and free bytes (free for unprivileged users)."""

    total: int
    free: int

    @property
    def free_percent(self) -> float:
        """Free space as a percentage of the file system (100 for a size-less one)."""
        return 100.0 * self.free / self.total if self.total else 100.0


@dataclass(frozen=True)
class Size:
    """Bytes allocated on disk under a directory; ``complete`` False when the walk was cut."""

    bytes: int
    files: int
    complete: bool


def usage(path: Path) -> Usage:
    """Space on the file system of ``path``; OSError when it cannot be asked."""
    total, _used, free = shutil.disk_usage(path)
    return Usage(total=total, free=free)


def tree_size(
    root: Path,
    max_entries: int = WALK_MAX_ENTRIES,
    max_seconds: float = WALK_MAX_SECONDS,
) -> Size:
    """Allocated bytes of the files under ``root`` (as `du`), without following symlinks.

    Unreadable entries are skipped; the walk stops at ``max_entries`` or ``max_seconds``.
    """
    deadline = time.monotonic() + max_seconds
    total = files = entries = 0
    pending = [root]
    while pending:
        directory = pending.pop()
        try:
            with os.scandir(directory) as scan:
                for entry in scan:
                    entries += 1
                    if entries > max_entries or time.monotonic() > deadline:
                        return Size(total, files, complete=False)
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            pending.append(Path(entry.path))
                        elif entry.is_file(follow_symlinks=False):
                            total += entry.stat(follow_symlinks=False).st_blocks * 512
                            files += 1
                    except OSError:
                        continue
        except OSError:
            continue
    return Size(total, files, complete=True)


class Crossing(StrEnum):
    """Free space crossing MY_REG_MIN_FREE, either way."""

    LOW = "low"  # free space fell below the threshold
    RECOVERED = "recovered"  # back above it


class DiskGuard:
    """Remembers which side of MY_REG_MIN_FREE the free space was last seen on."""

    def __init__(self, min_free_percent: float) -> None:
        self.min_free_percent = min_free_percent
        self.low = False
        self.free_percent: float | None = None
        # What a garbage collection would free, estimated once per LOW crossing.
        self.reclaimable: int | None = None

    @property
    def enabled(self) -> bool:
        """Whether there is a threshold to watch (MY_REG_MIN_FREE above 0)."""
        return self.min_free_percent > 0

    def update(self, free_percent: float) -> Crossing | None:
        """Record a measurement; a Crossing only when it changes sides."""
        self.free_percent = free_percent
        low = self.enabled and free_percent < self.min_free_percent
        if low == self.low:
            return None
        self.low = low
        self.reclaimable = None
        return Crossing.LOW if low else Crossing.RECOVERED

    def note(self) -> str | None:
        """The STATUS suffix while space is low."""
        if not self.low or self.free_percent is None:
            return None
        low = f"disk low: {self.free_percent:.1f}% free (< {self.min_free_percent:g}%)"
        if self.reclaimable is None:
            return f"{low}, consider registry-supervisor gc"
        return f"{low}, gc would free {human_bytes(self.reclaimable)}"


def human_bytes(count: float) -> str:
    """1536 -> '1.5 KiB'."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(count) < 1024 or unit == "TiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} TiB"  # pragma: no cover (the loop always returns)
