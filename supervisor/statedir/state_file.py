"""The supervisor's state file: what `status` shows about the loop, kept in MY_REG_STATE_DIR.

One small JSON file per container name (several supervisors may share a state dir),
replaced atomically (write a temporary file, then rename), so a reader sees the old
file or the new one, never half of one. ``StateFile.offer`` writes only when the
content changed and the last write is a few seconds old (or a minute has passed,
as a sign of life): the loop never waits on the disk in the middle of a restart.
The last garbage collection is kept in its own file, written by `gc` only: one
writer per file.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from supervisor.settings import Settings

STATE_VERSION = 1
# Changes are written at most this often; unchanged content is refreshed this often.
WRITE_MIN_INTERVAL_S = 2.0
REFRESH_S = 60.0
# Keys that change on every write and do not count as a change.
VOLATILE = frozenset({"updated_at"})
# The state dir holds the HTTP secret: only its owner (root) may list or enter it.
PRIVATE_DIR_MODE = 0o700


def state_path(settings: Settings) -> Path:
    return settings.state_dir / f"state-{settings.name}.json"


def gc_path(settings: Settings) -> Path:
    return settings.state_dir / f"gc-{settings.name}.json"


def ensure_private_dir(path: Path) -> None:
    """Make ``path`` (and its parents) a directory only its owner can enter: 0700.

    mkdir's mode applies only to a directory it creates; one that exists with group
    or other bits (made by hand, or by an older version) is tightened to 0700.
    OSError propagates to the caller.
    """
    path.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    if stat.S_IMODE(path.stat().st_mode) & ~PRIVATE_DIR_MODE:
        path.chmod(PRIVATE_DIR_MODE)


def write_json(path: Path, content: Mapping[str, Any]) -> None:
    """Replace ``path`` with ``content`` atomically (0600: it sits next to the HTTP secret)."""
    ensure_private_dir(path.parent)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    # O_EXCL: the temporary file is always new, never one found there. With O_CREAT it
    # also refuses a symlink (even a dangling one), so nothing planted at this path is
    # written through; O_NOFOLLOW says so once more.
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(temporary, flags, 0o600)
    except FileExistsError:
        # Left by a crash mid-write (a pid is reused, after a reboot most of all), or
        # planted: unlink removes the name itself, never a symlink's target. Once only.
        temporary.unlink(missing_ok=True)
        fd = os.open(temporary, flags, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            json.dump(content, file, indent=2, sort_keys=True)
            file.write("\n")
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def read_json(path: Path) -> dict[str, Any] | None:
    """The object stored at ``path``; None when absent, unreadable or not a JSON object."""
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return content if isinstance(content, dict) else None


class StateFile:
    """Rate-limited, change-driven writer of one state file (the clock is the caller's)."""

    def __init__(
        self,
        path: Path,
        min_interval_s: float = WRITE_MIN_INTERVAL_S,
        refresh_s: float = REFRESH_S,
    ) -> None:
        self.path = path
        self.min_interval_s = min_interval_s
        self.refresh_s = refresh_s
        self._written: dict[str, Any] | None = None
        self._written_at: float | None = None

    def due(self, now: float, content: Mapping[str, Any]) -> bool:
        """Whether ``offer`` would write ``content`` now (pure)."""
        if self._written_at is None or self._written is None:
            return True
        age = now - self._written_at
        if age >= self.refresh_s:
            return True
        return age >= self.min_interval_s and _stable(content) != _stable(self._written)

    def offer(self, now: float, content: Mapping[str, Any]) -> bool:
        """Write ``content`` if due; True when written. OSError propagates to the caller."""
        if not self.due(now, content):
            return False
        write_json(self.path, content)
        self._written = dict(content)
        self._written_at = now
        return True


def _stable(content: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in content.items() if key not in VOLATILE}
