"""The fleet link: this member's heartbeat, and what the fleet asks of it (MY_REG_FLEET_REDIS).

Every Redis call runs on this component's own thread, once per HEARTBEAT_S; the loop
never waits on Redis. The thread writes the record the loop last published, looks at the
gc lease and the rolling slot, and only posts what it found to the loop's inbox
(``LeaseSeen``, ``LeaseReleased``, ``SlotGranted``). A Redis that does not answer is
logged once (``fleet.unreachable``) and once more when it answers again; the registry
serves on regardless: nothing about serving waits on Redis.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from supervisor.errors import FleetUnavailable
from supervisor.fleet import HEARTBEAT_S, SLOT_TTL_S, GcLease, MemberRecord

if TYPE_CHECKING:  # redis-py is loaded only in fleet mode (supervisor/loop/supervisor.py)
    from supervisor.adapters.fleet_store import FleetStore


@dataclass(frozen=True)
class LeaseSeen:
    """A gc lease is in force (posted at every look while it is)."""

    lease: GcLease


@dataclass(frozen=True)
class LeaseReleased:
    """The initiator released the lease of ``token``: the collector is gone."""

    token: str


@dataclass(frozen=True)
class SlotGranted:
    """This member holds the rolling slot now, for ``why``."""

    why: str


FleetMessage = LeaseSeen | LeaseReleased | SlotGranted


class FleetLink:
    """Heartbeats and looks at the fleet, on a thread beside the loop."""

    def __init__(
        self,
        store: FleetStore,
        member: str,
        post: Callable[[Any], None],
        log: Any,
        *,
        every_s: float = HEARTBEAT_S,
        secret: str | None = None,
    ) -> None:
        self._store = store
        # The fleet's HTTP secret this member runs with (never in its record): each
        # heartbeat puts it back if Redis lost it.
        self._secret = secret
        self.member = member
        self._post = post
        self.log = log
        self._every_s = every_s
        self._lock = threading.Lock()
        self._record: MemberRecord | None = None
        self._watched: str | None = None  # the lease token whose release we wait for
        self._slot_wanted: str | None = None  # why the loop wants the slot
        self._slot_token: str | None = None  # thread-only
        self._granted: str | None = None  # thread-only: what the slot was last granted for
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.reachable: bool | None = None  # None: not tried yet
        self.error: str | None = None

    # -- what the loop tells it (thread-safe, never blocks) ------------------------------

    def publish(self, record: MemberRecord) -> None:
        """The record the next heartbeat writes."""
        with self._lock:
            self._record = record

    def watch_release(self, token: str | None) -> None:
        """Tell the loop when the lease of ``token`` is released (None: stop watching)."""
        with self._lock:
            self._watched = token

    def want_slot(self, why: str | None) -> None:
        """Take the rolling slot (and keep renewing it) for ``why``; None gives it back."""
        with self._lock:
            self._slot_wanted = why

    def lease_at_start(self) -> GcLease | None:
        """The gc lease in force, asked once before the loop starts (bounded by Redis's
        short timeout): a member that joins mid-gc starts read-only. None when there is
        none, or Redis does not answer (then the first heartbeat round tells)."""
        try:
            lease = self._store.lease()
            if lease is None or self._store.released(lease.token):
                return None
        except FleetUnavailable as err:
            self.log.warning("fleet.unreachable", error=str(err))
            return None
        return lease

    # -- the thread ----------------------------------------------------------------------

    def start(self) -> None:
        """Start heartbeating."""
        self._thread = threading.Thread(target=self._run, name="fleet-link", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop heartbeating and give the slot back (the record expires by itself)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=3.0)
        token = self._slot_token
        if token is not None:
            with contextlib.suppress(FleetUnavailable):  # else it expires
                self._store.release_slot(token)
        self._store.close()

    def _run(self) -> None:
        while True:
            try:
                self.round()
            except Exception:
                self.log.exception("fleet.round_failed")
            if self._stop.wait(self._every_s):
                return

    def round(self) -> None:
        """One heartbeat and one look (the thread's body; tests call it directly)."""
        with self._lock:
            record, watched, wanted = self._record, self._watched, self._slot_wanted
        try:
            if record is not None:
                self._store.heartbeat(record, self._secret)
            lease = self._store.lease()
            if lease is not None:
                self._post(LeaseSeen(lease))
            if watched is not None and self._store.released(watched):
                self._post(LeaseReleased(watched))
            self._slot(wanted)
        except FleetUnavailable as err:
            if self.reachable is not False:
                self.log.warning("fleet.unreachable", error=str(err))
            self.reachable, self.error = False, str(err)
            return
        if self.reachable is False:
            self.log.info("fleet.reachable")
        self.reachable, self.error = True, None

    def _slot(self, wanted: str | None) -> None:
        token = self._slot_token
        if wanted is None:
            if token is not None:
                self._store.release_slot(token)
                self._slot_token = self._granted = None
                self.log.info("fleet.slot_released")
            return
        if token is not None:
            if not self._store.renew_slot(token, SLOT_TTL_S):
                # Expired under us (Redis lost it, or we were away too long): take it anew.
                self.log.warning("fleet.slot_lost")
                self._slot_token = self._granted = None
            elif wanted != self._granted:
                # Held for one thing and now wanted for another: granted for that too.
                self._granted = wanted
                self._post(SlotGranted(wanted))
                return
            else:
                return
        token = self._store.take_slot(self.member, wanted, SLOT_TTL_S)
        if token is None:
            return  # another member restarts now: look again next round
        self._slot_token, self._granted = token, wanted
        self.log.info("fleet.slot_taken", why=wanted)
        self._post(SlotGranted(wanted))
