"""An in-memory FleetStore (supervisor/adapters/fleet_store.py) for tick-level tests.

It keeps the same keys with the same meaning, expiring on the test's clock: member
records after MEMBER_TTL_S, the lease after its hold_s, the slot after its ttl. ``down``
makes every call raise FleetUnavailable, as a Redis that does not answer; ``lose_data``
is a Redis restarted without its dump. Several members (rigs) may share one store.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

from supervisor.errors import FleetUnavailable
from supervisor.fleet import MEMBER_TTL_S, GcLease, Member, MemberRecord


@dataclass
class _Expiring:
    value: str
    until: float | None  # on the store's clock; None: never


class FakeFleetStore:
    """One fleet's keys, in memory."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.down = False
        self._keys: dict[str, _Expiring] = {}
        self.roster: dict[str, str] = {}
        self._tokens = itertools.count(1)
        self.calls: list[str] = []
        self.closed = False

    # -- the test's levers ---------------------------------------------------------------

    def lose_data(self) -> None:
        """Redis restarted without its data: every key gone, the roster too."""
        self._keys.clear()
        self.roster.clear()

    def _get(self, key: str) -> str | None:
        entry = self._keys.get(key)
        if entry is None:
            return None
        if entry.until is not None and self.clock() >= entry.until:
            del self._keys[key]
            return None
        return entry.value

    def _set(self, key: str, value: str, ttl_s: float | None, *, nx: bool = False) -> bool:
        if nx and self._get(key) is not None:
            return False
        until = None if ttl_s is None else self.clock() + ttl_s
        self._keys[key] = _Expiring(value, until)
        return True

    def _answer(self, call: str) -> None:
        self.calls.append(call)
        if self.down:
            raise FleetUnavailable("redis at redis://fake:6379/0: Connection refused")

    def record(self, name: str) -> MemberRecord | None:
        """The member's live record (None: silent)."""
        return MemberRecord.from_json(self._get(f"member:{name}"))

    # -- the FleetStore API --------------------------------------------------------------

    def close(self) -> None:
        self.closed = True

    def heartbeat(self, record: MemberRecord, secret: str | None = None) -> None:
        self._answer("heartbeat")
        if secret is not None:
            self._set("http-secret", secret, None, nx=True)
        self._set(f"member:{record.name}", record.to_json(), MEMBER_TTL_S)
        self.roster[record.name] = record.to_json()
        self._set("epoch", str(self.clock()), None, nx=True)

    def members(self) -> list[Member]:
        self._answer("members")
        result = []
        for name in sorted(self.roster):
            body = self._get(f"member:{name}")
            record = MemberRecord.from_json(body) or MemberRecord.from_json(self.roster[name])
            result.append(Member(name, body is not None, record))
        return result

    def forget(self, name: str) -> bool:
        self._answer("forget")
        return self.roster.pop(name, None) is not None

    def epoch_age_s(self) -> float | None:
        self._answer("epoch_age_s")
        epoch = self._get("epoch")
        return None if epoch is None else self.clock() - float(epoch)

    def shared_secret(self, candidate: str) -> str:
        self._answer("shared_secret")
        self._set("http-secret", candidate, None, nx=True)
        return self._get("http-secret") or candidate

    def take_lease(self, holder: str, hold_s: float, started: str) -> GcLease | None:
        self._answer("take_lease")
        lease = GcLease(f"lease{next(self._tokens)}", holder, hold_s, started)
        return lease if self._set("gc:lease", lease.to_json(), hold_s, nx=True) else None

    def lease(self) -> GcLease | None:
        self._answer("lease")
        return GcLease.from_json(self._get("gc:lease"))

    def lease_remaining_s(self, lease: GcLease) -> float | None:
        self._answer("lease_remaining_s")
        current = GcLease.from_json(self._get("gc:lease"))
        entry = self._keys.get("gc:lease")
        if current is None or current.token != lease.token or entry is None or entry.until is None:
            return None
        return entry.until - self.clock()

    def release(self, lease: GcLease) -> None:
        self._answer("release")
        self._set(f"gc:released:{lease.token}", "1", None)
        current = GcLease.from_json(self._get("gc:lease"))
        if current is not None and current.token == lease.token:
            del self._keys["gc:lease"]

    def released(self, token: str) -> bool:
        self._answer("released")
        return self._get(f"gc:released:{token}") is not None

    def take_slot(self, member: str, why: str, ttl_s: float) -> str | None:
        self._answer("take_slot")
        token = f"{member}:{why}:{next(self._tokens)}"
        return token if self._set("slot", token, ttl_s, nx=True) else None

    def renew_slot(self, token: str, ttl_s: float) -> bool:
        self._answer("renew_slot")
        if self._get("slot") != token:
            return False
        self._set("slot", token, ttl_s)
        return True

    def release_slot(self, token: str) -> None:
        self._answer("release_slot")
        if self._get("slot") == token:
            del self._keys["slot"]

    def slot_holder(self) -> str | None:
        self._answer("slot_holder")
        return self._get("slot")
