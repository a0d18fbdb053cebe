"""The maintenance lock: `gc` tells a running supervisor to stand aside.

While the lock holds, the loop neither repairs the registry container nor counts failed
probes: the restarts `gc` makes on purpose are not faults, and a registry made writable
while the collector sweeps would lose blobs pushed meanwhile.

The lock is a file in the state dir naming its holder by evidence that no clock can
fake: the pid, that process's start time (/proc/<pid>/stat field 22, clock ticks after
boot, which a wall-clock step does not change) and the boot id, so a pid reused by
another process is not mistaken for the holder. It also names the collector container.
The lock holds while its holder process lives, or, once the holder has died (a SIGKILLed
`gc`), while that collector container still runs (or is paused): the collector deletes
blobs whether or not the process that started it is still there. It has no age limit.
A file whose holder died and whose collector has ended is stale: the next `gc` takes it
over; the supervisor never removes it (it could remove a new holder's file).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from supervisor.observed import ContainerState, Observed
from supervisor.settings import Settings
from supervisor.statedir import files

GARBAGE_COLLECTION = "garbage collection"
# Field 22 of /proc/<pid>/stat, counted from the field after the command name (field 3).
_STAT_STATE, _STAT_START_TICKS = 0, 22 - 3
# A zombie (or a task being reaped) holds nothing: it has exited.
_EXITED_STATES = frozenset({"Z", "X", "x"})
# A collector in one of these states may still delete blobs (paused resumes where it was).
_SWEEPING = frozenset({ContainerState.RUNNING, ContainerState.PAUSED, ContainerState.RESTARTING})


class MaintenanceBusy(Exception):
    """The maintenance lock holds: another process, or the collector a dead one left."""

    def __init__(self, holder: Maintenance, *, holder_alive: bool = True) -> None:
        if holder_alive:
            text = f"{holder.task} already running (pid {holder.pid})"
        else:
            text = (
                f"the {holder.task} of pid {holder.pid} ended, but its collector "
                f"{holder.collector} still runs; wait for it to end"
            )
        super().__init__(text)
        self.holder = holder


@dataclass(frozen=True)
class Maintenance:
    """What the lock file says. Files of earlier releases lack the evidence (None)."""

    task: str
    pid: int
    started: float  # epoch seconds, for people only: no decision reads it
    start_ticks: int | None = None
    boot_id: str | None = None
    collector: str | None = None  # the collector container's name


@dataclass(frozen=True)
class ProcessStat:
    """The two fields of /proc/<pid>/stat the lock needs."""

    state: str
    start_ticks: int


@dataclass(frozen=True)
class CollectorSeen:
    """The supervisor's last look at a dead holder's collector (``at`` is monotonic)."""

    lock: Maintenance
    at: float
    holds: bool


def maintenance_path(settings: Settings) -> Path:
    """Where the maintenance lock of ``settings.name`` is kept."""
    return settings.state_dir / f"maintenance-{settings.name}"


# -- evidence: reading it (I/O) ------------------------------------------------------------


def alive(pid: int) -> bool:
    """Whether a process of that pid exists (any process: this says nothing of reuse)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def read_stat(pid: int) -> ProcessStat | None:
    """State and start time of ``pid``; None when /proc has no such process (or hides it)."""
    if pid <= 0:
        return None
    try:
        text = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    return parse_stat(text)


def parse_stat(text: str) -> ProcessStat | None:
    """The state and start time in a /proc/<pid>/stat line (pure).

    The command name (field 2) is in parentheses and may itself hold spaces and
    parentheses: the fields are counted from the last ')'.
    """
    _, paren, rest = text.rpartition(")")
    fields = rest.split()
    if not paren or len(fields) <= _STAT_START_TICKS or not fields[_STAT_START_TICKS].isdigit():
        return None
    return ProcessStat(fields[_STAT_STATE], int(fields[_STAT_START_TICKS]))


@cache
def boot_id() -> str | None:
    """This boot's id: start ticks count from boot, so they compare within one boot only."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text(encoding="ascii").strip()
    except OSError:
        return None


def holder_lives(lock: Maintenance) -> bool:
    """Whether the process named by ``lock`` still runs (reads /proc; no engine, no clock)."""
    stat = read_stat(lock.pid)
    exists = stat is not None or alive(lock.pid)
    return is_holder(lock, stat, exists=exists, current_boot=boot_id())


# -- decisions (pure) ---------------------------------------------------------------------


def is_holder(
    lock: Maintenance, stat: ProcessStat | None, *, exists: bool, current_boot: str | None
) -> bool:
    """Whether the process seen at the lock's pid is the one that took the lock (pure).

    ``stat`` is None when /proc does not show the process although it ``exists``
    (hidepid): the pid alone must then do, as in files without a start time.
    """
    if not exists:
        return False
    if lock.boot_id is not None and current_boot is not None and lock.boot_id != current_boot:
        return False  # rebooted since: whatever has that pid now is another process
    if stat is None:
        return True
    if stat.state in _EXITED_STATES:
        return False
    return lock.start_ticks is None or lock.start_ticks == stat.start_ticks


def collector_holds(observed: Observed | None) -> bool:
    """Whether this collector container may still be deleting blobs (pure).

    Running, paused or restarting: yes. Created but never started, exited, dead, being
    removed or gone: no. A container of that name that registry-supervisor did not
    create is not a collector.
    """
    return observed is not None and observed.managed and observed.state in _SWEEPING


def collector_look_due(
    seen: CollectorSeen | None, lock: Maintenance, now: float, every_s: float
) -> bool:
    """Whether to ask the engine about a dead holder's collector now (pure): at once for a
    lock not looked at yet, every ``every_s`` while its collector runs, and never again
    for a lock found stale (its holder cannot come back; a new `gc` writes a new file)."""
    if seen is None or seen.lock != lock:
        return True
    return seen.holds and now >= seen.at + every_s


# -- the file -----------------------------------------------------------------------------


def read(path: Path) -> Maintenance | None:
    """The lock file at ``path`` as written, held or not; None when absent or unreadable."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        lock = Maintenance(
            task=str(raw["task"]),
            pid=int(raw["pid"]),
            started=float(raw["started"]),
            start_ticks=None if raw.get("start_ticks") is None else int(raw["start_ticks"]),
            boot_id=None if raw.get("boot_id") is None else str(raw["boot_id"]),
            collector=None if raw.get("collector") is None else str(raw["collector"]),
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return lock


def current(path: Path, collector_running: Callable[[str], bool]) -> Maintenance | None:
    """The lock at ``path`` if it holds now, else None. ``collector_running(name)`` is
    asked only when the file exists and its holder has died."""
    lock = read(path)
    if lock is None:
        return None
    if holder_lives(lock):
        return lock
    if lock.collector is not None and collector_running(lock.collector):
        return lock
    return None


def acquire(
    path: Path, task: str, collector: str, collector_running: Callable[[str], bool]
) -> Maintenance:
    """Take the lock for this process and its ``collector`` container.

    MaintenanceBusy while another holds it: a live process, or the collector a dead one
    left running (``collector_running(name)`` is asked only then). A stale file is taken
    over.
    """
    # A loose dir it cannot tighten is not the lock's concern (the HTTP secret's writer
    # reports it); one it cannot create is (OSError).
    files.make_private_dir(path.parent)
    stat = read_stat(os.getpid())
    mine = Maintenance(
        task=task,
        pid=os.getpid(),
        started=time.time(),
        start_ticks=None if stat is None else stat.start_ticks,
        boot_id=boot_id(),
        collector=collector,
    )
    body = json.dumps(
        {
            "task": mine.task,
            "pid": mine.pid,
            "start_ticks": mine.start_ticks,
            "boot_id": mine.boot_id,
            "collector": mine.collector,
            "started": mine.started,
        }
    )
    for _ in range(2):
        # Linked whole, never replacing: a reader sees no lock or all of it.
        if files.write_private(path, (body + "\n").encode("utf-8"), replace=False):
            return mine
        _refuse_if_held(path, collector_running)
        path.unlink(missing_ok=True)  # stale: its holder died, its collector ended
    _refuse_if_held(path, collector_running)
    raise MaintenanceBusy(mine)


def _refuse_if_held(path: Path, collector_running: Callable[[str], bool]) -> None:
    lock = read(path)
    if lock is None:
        return
    if holder_lives(lock):
        raise MaintenanceBusy(lock)
    if lock.collector is not None and collector_running(lock.collector):
        raise MaintenanceBusy(lock, holder_alive=False)


def release(path: Path, mine: Maintenance) -> None:
    """Remove the file if it is still ours."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    if isinstance(raw, dict) and raw.get("pid") == mine.pid:
        path.unlink(missing_ok=True)
