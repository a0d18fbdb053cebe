"""The supervisor's state file: what `status` shows about the loop, kept in MY_REG_STATE_DIR.

One small JSON file per container name (several supervisors may share a state dir),
replaced atomically (files.write_private: a temporary file, then a rename), so a reader sees the old
file or the new one, never half of one. ``StateFile.offer`` writes only when the
content changed and the last write is a few seconds old (or a minute has passed,
as a sign of life): the loop never waits on the disk in the middle of a restart.
The last garbage collection is kept in its own file, written by `gc` only: one
writer per file.

A supervisor that starts continues the counts of the one before it (``read_previous``),
and one that stops cleanly writes a last content with the phase ``stopped`` and no pid
(``StateFile.write``). A reader tells a live writer from a dead one by the pid and that
process's start time and boot id (``writer_lives``), never by the age of the file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from supervisor.settings import Settings
from supervisor.statedir import files, maintenance

# 2: `restarts` holds failures only; planned replacements are in `planned`; `phase` may be
# `stopped` (and `pid` null) after a clean stop; `start_ticks` and `boot_id` name the pid.
STATE_VERSION = 2
# The phase of the last content a supervisor writes when it stops cleanly.
STOPPED = "stopped"
# Changes are written at most this often; unchanged content is refreshed this often.
WRITE_MIN_INTERVAL_S = 2.0
REFRESH_S = 60.0
# Keys that change on every write and do not count as a change.
VOLATILE = frozenset({"updated_at"})


def state_path(settings: Settings) -> Path:
    """Where the supervisor of ``settings.name`` keeps its state file."""
    return settings.state_dir / f"state-{settings.name}.json"


def gc_path(settings: Settings) -> Path:
    """Where `gc` records its last collection for ``settings.name``."""
    return settings.state_dir / f"gc-{settings.name}.json"


def ensure_private_dir(path: Path) -> None:
    """Make ``path`` (and its parents) a directory only its owner can enter: 0700, an
    existing looser one tightened. OSError propagates to the caller, a failed chmod too."""
    tightened = files.make_private_dir(path)
    if tightened is not None and tightened.error is not None:
        raise tightened.error


def write_json(path: Path, content: Mapping[str, Any]) -> None:
    """Replace ``path`` with ``content`` atomically (0600: it sits next to the HTTP secret)."""
    ensure_private_dir(path.parent)
    text = json.dumps(content, indent=2, sort_keys=True) + "\n"
    files.write_private(path, text.encode("utf-8"))


def read_json(path: Path) -> dict[str, Any] | None:
    """The object stored at ``path``; None when absent, unreadable or not a JSON object."""
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return content if isinstance(content, dict) else None


@dataclass(frozen=True)
class Previous:
    """What a new supervisor takes over from the state file of the one before it:
    ``content`` (None when there is nothing to take over) or ``problem``, why not."""

    content: dict[str, Any] | None
    problem: str | None = None


def read_previous(path: Path, container: str) -> Previous:
    """The previous state file at ``path`` when it is of ``container``; never raises.

    ``problem`` is "absent", "unreadable: ...", "not a state file" or "of container X".
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Previous(None, "absent")
    except OSError as err:
        return Previous(None, f"unreadable: {err.strerror or err}")
    try:
        content = json.loads(text)
    except ValueError as err:
        return Previous(None, f"unreadable: {err}")
    if not isinstance(content, dict) or not isinstance(content.get("version"), int):
        return Previous(None, "not a state file")
    if content.get("container") != container:
        return Previous(None, f"of container {content.get('container')!r}")
    return Previous(content)


def writer_evidence() -> dict[str, Any]:
    """This process as the state file names its writer: pid, start ticks, boot id."""
    pid, ticks = _own_start(os.getpid())
    return {"pid": pid, "start_ticks": ticks, "boot_id": maintenance.boot_id()}


@cache
def _own_start(pid: int) -> tuple[int, int | None]:
    # Read once per process: the state is offered on every heartbeat.
    stat = maintenance.read_stat(pid)
    return pid, stat.start_ticks if stat is not None else None


def writer_lives(content: Mapping[str, Any]) -> bool:
    """Whether the process that wrote ``content`` still runs: its pid exists and, where the
    file names them, with the same start time in the same boot (a pid reused after the
    supervisor died is another process). False after a clean stop (no pid)."""
    pid = content.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool):
        return False
    ticks, boot = content.get("start_ticks"), content.get("boot_id")
    lock = maintenance.Maintenance(
        task="supervisor",
        pid=pid,
        started=0.0,
        start_ticks=ticks if isinstance(ticks, int) else None,
        boot_id=boot if isinstance(boot, str) else None,
    )
    return maintenance.holder_lives(lock)


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
        self.write(now, content)
        return True

    def write(self, now: float, content: Mapping[str, Any]) -> None:
        """Write ``content`` now, due or not (the last state, at a stop). OSError propagates."""
        write_json(self.path, content)
        self._written = dict(content)
        self._written_at = now


def _stable(content: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in content.items() if key not in VOLATILE}
