"""Housekeeping: the disk guard, the state file, the metrics gauges, the registry's logs.

None of it may slow a recovery: the loop says when it is ``quiet`` (a repair is due
soon, or a start is being probed fast) and housekeeping then skips its disk work. Its one
background job (the gc estimate) only posts its result to the loop.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from contextlib import closing
from dataclasses import dataclass
from typing import Any

from supervisor.adapters import disk
from supervisor.adapters.metrics import Metrics
from supervisor.engine import logs
from supervisor.errors import EngineUnavailable, SupervisorError
from supervisor.loop import status
from supervisor.loop.engine_link import EngineLink
from supervisor.settings import Settings
from supervisor.statedir import state_file

# Free space on the data dir's file system is looked at this often (MY_REG_MIN_FREE).
DISK_CHECK_S = 60.0
# The data dir walk for registry_data_dir_bytes runs on the loop: keep it short.
METRICS_WALK_MAX_S = 0.2
# A registry log stream that ended (container stopped, read timeout) is followed again
# no sooner than this.
FOLLOW_RETRY_S = 1.0


@dataclass(frozen=True)
class GcEstimate:
    """The gc-estimate thread's result, posted to the loop: bytes a gc would free."""

    reclaimable: int | None = None
    error: str | None = None


class Housekeeping:
    """Everything the loop does after deciding, once per tick."""

    def __init__(
        self,
        settings: Settings,
        link: EngineLink,
        metrics: Metrics,
        post: Callable[[Any], None],
        log: Any,
    ) -> None:
        self._link = link
        self._metrics = metrics
        self._post = post
        self.log = log
        self.settings = settings
        self.disk_guard = disk.DiskGuard(settings.min_free)
        self.disk_check_at = 0.0
        self.state_file = state_file.StateFile(state_file.state_path(settings))
        self._state_failed = False
        self._follower: logs.LogFollower | None = None
        self._follow_retry_at = 0.0

    def configure(self, settings: Settings) -> None:
        """New settings: the disk threshold (looked at again now), the state file, and log
        forwarding (a follower is stopped when it is turned off)."""
        self.settings = settings
        self.disk_guard.min_free_percent = settings.min_free
        self.disk_check_at = 0.0
        self.state_file = state_file.StateFile(state_file.state_path(settings))
        if not settings.forward_logs:
            # A reload turned forwarding off: the follower would go on until its stream ends.
            self.stop_following()

    @property
    def metrics_on(self) -> bool:
        """Whether the metrics endpoint is on (MY_REG_METRICS_ADDR)."""
        return self.settings.metrics_addr is not None

    # -- disk guard ----------------------------------------------------------------------

    def check_disk(self, now: float, *, quiet: bool) -> None:
        """At most every DISK_CHECK_S: warn once when free space crosses MY_REG_MIN_FREE."""
        guard = self.disk_guard
        if not guard.enabled and not guard.low and not self.metrics_on:
            return
        if now < self.disk_check_at or quiet:
            return
        self.disk_check_at = now + DISK_CHECK_S
        try:
            usage = disk.usage(self.settings.dir)
        except OSError as err:
            self.log.warning("disk.usage_failed", error=str(err))
            return
        crossing = guard.update(usage.free_percent)
        self._metrics.data_dir_free_bytes.set(usage.free)
        if self.metrics_on:
            size = disk.tree_size(self.settings.dir, max_seconds=METRICS_WALK_MAX_S)
            self._metrics.data_dir_bytes.set(size.bytes)
        fields = {
            "data_dir": str(self.settings.dir),
            "free_percent": round(usage.free_percent, 2),
            "free_bytes": usage.free,
            "min_free_percent": self.settings.min_free,
        }
        if crossing is disk.Crossing.LOW:
            self.log.warning("disk.low", hint="registry-supervisor gc --dry-run", **fields)
            # The collector's dry run takes a container start and a walk of the
            # registry's metadata: off the loop, so probes and the watchdog go on.
            threading.Thread(
                target=self._estimate_reclaimable,
                args=(self.settings,),
                name="gc-estimate",
                daemon=True,
            ).start()
        elif crossing is disk.Crossing.RECOVERED:
            self.log.info("disk.ok", **fields)

    def _estimate_reclaimable(self, settings: Settings) -> None:
        """How much a garbage collection would free (a thread: it posts, decides nothing)."""
        # Imported here: `run` loads gc's code only once the disk runs low.
        from supervisor.ops import gc

        try:
            with closing(self._link.side_engine()) as engine:
                estimate = GcEstimate(reclaimable=gc.estimate_reclaimable(settings, engine))
        except (SupervisorError, OSError) as err:
            estimate = GcEstimate(error=str(err))
        self._post(estimate)

    def gc_estimated(self, estimate: GcEstimate) -> None:
        """The thread's answer, on the loop: shown while the disk is still low."""
        if estimate.error is not None:
            self.log.warning("disk.gc_estimate_failed", error=estimate.error)
            return
        reclaimable = estimate.reclaimable
        if self.disk_guard.low:
            self.disk_guard.reclaimable = reclaimable
        self.log.warning(
            "disk.gc_estimate",
            gc_would_free_bytes=reclaimable,
            gc_would_free=None if reclaimable is None else disk.human_bytes(reclaimable),
        )

    # -- state file ----------------------------------------------------------------------

    def save_state(self, now: float, content: Mapping[str, Any], *, quiet: bool) -> None:
        """Offer the state file a new content, off the hot path of a restart."""
        if quiet:
            return
        try:
            self.state_file.offer(now, content)
        except OSError as err:
            if not self._state_failed:
                self.log.warning(
                    "state.write_failed", path=str(self.state_file.path), error=str(err)
                )
            self._state_failed = True
        else:
            self._state_failed = False

    def save_final_state(self, now: float, content: Mapping[str, Any]) -> None:
        """Write the state file now, due or not (the last one, at a clean stop)."""
        try:
            self.state_file.write(now, content)
        except OSError as err:
            self.log.warning("state.write_failed", path=str(self.state_file.path), error=str(err))

    def previous_counts(self) -> status.Carried | None:
        """The restart counts and the last reason of the supervisor before us, from its
        state file when it was of the same container (logged); None: start from zero."""
        path = state_file.state_path(self.settings)
        previous = state_file.read_previous(path, self.settings.name)
        if previous.content is None:
            # Absent is a first start; anything else loses the counts kept: a warning.
            level = "info" if previous.problem == "absent" else "warning"
            getattr(self.log, level)("state.not_resumed", path=str(path), why=previous.problem)
            return None
        counts = status.carried(previous.content)
        self.log.info(
            "state.resumed",
            path=str(path),
            restarts=sum(counts.restarts.values()),
            planned=sum(counts.planned.values()),
            last_reason=counts.last_reason.value if counts.last_reason else None,
        )
        return counts

    # -- the registry's logs -------------------------------------------------------------

    def follow_logs(
        self, now: float, container_id: str | None, since: float, *, changing: bool
    ) -> None:
        """Keep one log follower on the current container (MY_REG_FORWARD_LOGS).

        ``changing``: the container is about to change (a repair, `gc`): wait for it.
        ``since``: lines from before this supervisor started were someone else's to read.
        """
        if not self.settings.forward_logs or not self._link.connected or container_id is None:
            return
        follower = self._follower
        same = follower is not None and follower.container_id == container_id
        if same and follower is not None and follower.alive:
            return
        if changing or now < self._follow_retry_at:
            return
        self._follow_retry_at = now + FOLLOW_RETRY_S
        if same and follower is not None:
            since = max(since, follower.last_seen)
        self.stop_following()
        try:
            api = self._link.docker.stream_client()
        except EngineUnavailable as err:
            self.log.warning("registry.logs_unavailable", error=str(err))
            return
        self._follower = logs.LogFollower(
            api, container_id, since, self.log.bind(source="registry")
        )
        self._follower.start()

    def stop_following(self) -> None:
        """Close the log follower, if any."""
        if self._follower is not None:
            self._follower.close()
            self._follower = None
