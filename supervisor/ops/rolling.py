"""One member at a time: the fleet's rolling slot for a command (`update`), and the drain.

The slot is the same one a member's loop takes for its planned restarts
(supervisor/fleet.py): while this command holds it, no other member drains or restarts
for a reload, an update or a gc's mode switch. A thread renews it; if this process dies,
it expires after SLOT_TTL_S.
"""

from __future__ import annotations

import contextlib
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

from supervisor.adapters.fleet_store import FleetStore
from supervisor.errors import FleetUnavailable, MaintenanceFailed
from supervisor.fleet import SLOT_TTL_S
from supervisor.settings import Settings
from supervisor.statedir import fleet_hold

SLOT_WAIT_S = 600.0
POLL_S = 1.0
READY_WAIT_S = 120.0
# A running supervisor sees the maintenance lock within its poll (0.5 s) and says 503 on
# its next heartbeat: the drain starts after that.
LOCK_SEEN_S = 1.0


@contextlib.contextmanager
def rolling_slot(
    settings: Settings,
    why: str,
    log: Any,
    *,
    wait_s: float = SLOT_WAIT_S,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[None]:
    """Hold the fleet's rolling slot (no-op outside fleet mode). MaintenanceFailed when it
    stays taken ``wait_s`` or Redis does not answer."""
    if settings.fleet_redis is None:
        yield
        return
    store = FleetStore(settings.fleet_redis, settings.fleet_name)
    try:
        token = _take(store, settings.fleet_member, why, wait_s=wait_s, log=log, sleep=sleep)
        try:
            _no_gc(store, settings)
        except BaseException:
            with contextlib.suppress(FleetUnavailable):  # else it expires
                store.release_slot(token)
            raise
        stop = threading.Event()
        renewer = threading.Thread(
            target=_renew, args=(store, token, stop, log), name="rolling-slot", daemon=True
        )
        renewer.start()
        log.info("fleet.slot_taken", why=why)
        try:
            yield
        finally:
            stop.set()
            renewer.join(timeout=3.0)
            with contextlib.suppress(FleetUnavailable):  # else it expires
                store.release_slot(token)
            log.info("fleet.slot_released", why=why)
    finally:
        store.close()


def _take(
    store: FleetStore,
    member: str,
    why: str,
    *,
    wait_s: float,
    log: Any,
    sleep: Callable[[float], None],
) -> str:
    deadline = time.monotonic() + wait_s
    said = False
    while True:
        try:
            token = store.take_slot(member, why, SLOT_TTL_S)
            if token is not None:
                return token
            holder = store.slot_holder()
        except FleetUnavailable as err:
            raise MaintenanceFailed(f"the fleet's Redis failed: {err}") from None
        if not said:
            log.info("fleet.slot_waiting", holder=holder)
            said = True
        if time.monotonic() >= deadline:
            raise MaintenanceFailed(
                f"another member holds the fleet's rolling slot ({holder}) for {wait_s:g} s"
            )
        sleep(POLL_S)


def _no_gc(store: FleetStore, settings: Settings) -> None:
    """MaintenanceFailed while a fleet gc may run: this command recreates the registry
    writable, and the member's loop confirms read-only for the gc only for what it runs
    itself. Looked at with the slot held: a gc that starts later waits for the slot
    before this member switches to read-only."""
    hold = fleet_hold.read(fleet_hold.hold_path(settings))
    try:
        lease = store.lease()
    except FleetUnavailable as err:
        raise MaintenanceFailed(f"the fleet's Redis failed: {err}") from None
    if lease is not None or hold is not None:
        token = lease.token if lease is not None else hold.token  # type: ignore[union-attr]
        raise MaintenanceFailed(
            f"a fleet gc is under way (lease {token}): this member holds its registry "
            "read-only until it ends; run this again then"
        )


def _renew(store: FleetStore, token: str, stop: threading.Event, log: Any) -> None:
    while not stop.wait(POLL_S):
        try:
            if not store.renew_slot(token, SLOT_TTL_S):
                log.warning("fleet.slot_lost")
                return
        except FleetUnavailable as err:
            log.warning("fleet.unreachable", error=str(err))


def drain(settings: Settings, log: Any, sleep: Callable[[float], None] = time.sleep) -> None:
    """With the maintenance lock just taken: wait MY_REG_READY_DRAIN, `/ready` saying 503
    meanwhile, so that the load balancer sends no new client here before the restart."""
    if settings.ready_drain <= 0:
        return
    log.info("maintenance.draining", drain_s=settings.ready_drain)
    sleep(LOCK_SEEN_S + settings.ready_drain)


def wait_ready(settings: Settings, log: Any, sleep: Callable[[float], None] = time.sleep) -> None:
    """After the lock is released: until the running supervisor's `/ready` says 200 again
    (MY_REG_METRICS_ADDR), at most READY_WAIT_S; the next member restarts only then."""
    if settings.metrics_addr is None:
        return
    url = f"http://{settings.metrics_addr}/ready"
    deadline = time.monotonic() + READY_WAIT_S
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1.0) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        sleep(0.2)
    log.warning("fleet.not_ready_again", url=url, after_s=READY_WAIT_S)
