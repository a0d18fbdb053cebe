"""The maintenance gate: whether `registry-supervisor gc` holds the registry right now.

``look`` reads the lock file (supervisor/statedir/maintenance.py) and reports a start or
an end; ``active`` only answers. While the lock holds, the loop stands aside: no repair,
no reload, no probe counted. No wall clock anywhere: a stepped clock cannot end it.
"""

from __future__ import annotations

from contextlib import closing
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from supervisor.errors import EngineUnavailable
from supervisor.loop.engine_link import EngineLink
from supervisor.statedir import maintenance

# A lock whose `gc` died holds while its collector container runs: the engine is asked
# about that container at most this often (and never while the holder lives).
COLLECTOR_CHECK_S = 1.0
# While `gc` holds the maintenance file, look for its end this often.
MAINTENANCE_POLL_S = 0.5


class Change(StrEnum):
    """What a look at the lock found."""

    STARTED = "started"
    ENDED = "ended"


@dataclass(frozen=True)
class Look:
    """One look at the lock: a start or an end (None: no change), and an engine that
    failed while the collector was looked up."""

    change: Change | None = None
    engine_error: str | None = None


class MaintenanceGate:
    """The lock as last seen, and what its dead holder's collector was doing."""

    def __init__(self, path: Path, link: EngineLink, log: Any) -> None:
        self.path = path
        self._link = link
        self.log = log
        self.lock: maintenance.Maintenance | None = None
        self._collector_seen: maintenance.CollectorSeen | None = None
        self._engine_error: str | None = None

    @property
    def active(self) -> bool:
        """Whether the lock held at the last look."""
        return self.lock is not None

    def look(self, now: float) -> Look:
        """Read the lock; report whether maintenance started or ended since the last look."""
        self._engine_error = None
        current = maintenance.read(self.path)
        if current is not None and not (
            maintenance.holder_lives(current) or self._collector_holds(current, now)
        ):
            current = None  # stale
        change = None
        if current is not None and self.lock is None:
            self.log.info("maintenance.started", task=current.task, pid=current.pid)
            change = Change.STARTED
        elif current is None and self.lock is not None:
            self.log.info("maintenance.ended")
            change = Change.ENDED
        self.lock = current
        return Look(change, self._engine_error)

    def _collector_holds(self, lock: maintenance.Maintenance, now: float) -> bool:
        """With its `gc` dead, whether the lock's collector still runs: the engine is asked
        at most every COLLECTOR_CHECK_S, and never again once it has ended."""
        seen = self._collector_seen
        if seen is not None and not maintenance.collector_look_due(
            seen, lock, now, COLLECTOR_CHECK_S
        ):
            return seen.holds
        if lock.collector is None:  # a file from before the lock named its collector
            holds = False
        else:
            try:
                if self._link.connected:
                    observed = self._link.docker.inspect(lock.collector)
                else:
                    # The loop reconnects only once maintenance ends: ask on the side.
                    with closing(self._link.side_engine()) as engine:
                        observed = engine.inspect(lock.collector)
                holds = maintenance.collector_holds(observed)
            except EngineUnavailable as err:
                self._engine_error = str(err)
                holds = True  # unknown: the collector may be sweeping
        if seen is None or seen.lock != lock:
            self.log.warning(
                "maintenance.holder_dead",
                task=lock.task,
                pid=lock.pid,
                collector=lock.collector,
                collector_running=holds,
            )
        self._collector_seen = maintenance.CollectorSeen(lock, now, holds)
        return holds
