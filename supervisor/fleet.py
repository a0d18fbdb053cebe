"""Fleet mode (MY_REG_FLEET_REDIS): what members tell each other, and what it means (pure).

Several supervisors, one per host, run one registry service on shared storage behind a
load balancer. They coordinate through one Redis (supervisor/adapters/fleet_store.py):

- **Heartbeats.** Every member writes its record (``MemberRecord``) every HEARTBEAT_S
  under a key that expires after MEMBER_TTL_S: a member that stops heartbeating drops out
  of the live set by expiry. The roster (a hash) remembers every member ever seen until
  `registry-supervisor forget-member` removes it: a fleet gc refuses to start while a
  rostered member is silent, because a host whose supervisor died may still run a
  writable registry.
- **The gc lease.** `gc` takes one lease for the fleet (``GcLease``), for a fixed time it
  names up front (``hold_s``), never renewed. Every member that sees it makes its
  registry read-only (one member at a time, through the rolling slot), checks that it
  refuses writes and confirms. The collector runs only once every live, rostered member
  has confirmed, and is killed by the engine (``timeout -s KILL``) before the lease ends.
  A member holds read-only until the initiator releases that lease's token or, whatever
  happens to the initiator or to Redis, until ``hold_s`` has passed on its own boot-time
  clock since it saw the lease: safety never depends on Redis keeping its data.
- **The rolling slot.** Planned restarts (read-only and back, a reload that changes the
  spec, `update`) take one fleet-wide slot first: one member drains and restarts at a time,
  so the load balancer always has members to send clients to.
- **The epoch.** A key made once; Redis that lost its data has a new one. A gc waits until
  the epoch is older than MEMBER_TTL_S, so that every live member has re-registered.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from supervisor.settings import storage_fingerprint as keyed_storage_fingerprint

if TYPE_CHECKING:
    from supervisor.settings import Settings

# How often a member writes its heartbeat and looks at the lease and the slot.
HEARTBEAT_S = 1.0
# A member silent this long drops out of the live set.
MEMBER_TTL_S = 5.0
# The rolling slot expires this long after its holder's last renewal (a holder renews it
# every heartbeat): a member that dies while draining frees it by expiry.
SLOT_TTL_S = 15.0
# Released lease tokens are kept this long, for members that come back late.
RELEASED_TTL_S = 86400
# The collector is killed this long before its lease ends, whatever the clocks do.
COLLECTOR_MARGIN_S = 5.0
KEY_ROOT = "registry-supervisor"


def keys_prefix(fleet_name: str) -> str:
    """Every key of one fleet starts with this (pure): one Redis may serve several."""
    return f"{KEY_ROOT}:{fleet_name}:"


@dataclass(frozen=True)
class MemberRecord:
    """What one member says about itself in its heartbeat (no secret in it)."""

    name: str
    phase: str
    ready: bool
    registry_version: str | None
    spec_hash: str
    last_health: str  # the health watch's last verdict, one phrase
    storage: str | None  # storage fingerprint (supervisor/storage.py), keyed by the secret
    http_secret: str | None  # the HTTP secret's fingerprint, never the secret
    read_only_for: str | None  # the gc lease token this member holds read-only for
    confirmed: str | None  # the gc lease token whose read-only state it confirmed
    pid: int
    updated: str  # wall time, for people only
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        """The record as stored in Redis."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes | None) -> MemberRecord | None:
        """A stored record, or None when it is not one (pure)."""
        if text is None:
            return None
        try:
            raw = json.loads(text)
            return cls(**{name: raw[name] for name in cls.__dataclass_fields__ if name in raw})
        except (ValueError, TypeError, KeyError):
            return None


@dataclass(frozen=True)
class GcLease:
    """The fleet's gc lease: who holds it, and how long members may have to hold read-only."""

    token: str
    holder: str  # the member whose `gc` took it
    hold_s: float  # the lease's fixed length; members hold read-only at most this long
    started: str  # wall time, for people only

    def to_json(self) -> str:
        """The lease as stored in Redis."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes | None) -> GcLease | None:
        """A stored lease, or None when it is not one (pure)."""
        if text is None:
            return None
        try:
            raw = json.loads(text)
            return cls(
                str(raw["token"]), str(raw["holder"]), float(raw["hold_s"]), str(raw["started"])
            )
        except (ValueError, TypeError, KeyError):
            return None


@dataclass(frozen=True)
class Member:
    """A rostered member and whether it is alive (its heartbeat has not expired)."""

    name: str
    alive: bool
    record: MemberRecord | None  # the last heartbeat, or the roster's copy when silent


@dataclass(frozen=True)
class Hold:
    """A member holding its registry read-only for one gc lease.

    ``until`` is on the boot-time clock (CLOCK_BOOTTIME: monotonic, the same for every
    process of this boot, not moved by a wall-clock step), so a supervisor restarted
    mid-gc goes on holding (supervisor/statedir/fleet_hold.py)."""

    token: str
    until: float
    boot_id: str | None
    # Before this (boot-time), a release does not end the hold: an older hold it took over
    # was never released, and that lease's collector may still run (its `gc` was killed,
    # then Redis lost the lease and a new gc began).
    floor: float = 0.0
    # The same end in wall-clock seconds, and the lease's length: only across a reboot,
    # where the boot-time clock says nothing, does the hold end by the wall clock, a whole
    # lease length late to allow for a step of it.
    until_wall: float | None = None
    hold_s: float = 0.0


def hold_for(
    lease: GcLease,
    now_boottime: float,
    boot_id: str | None,
    now_wall: float,
    previous: Hold | None = None,
    *,
    previous_released: bool = False,
) -> Hold:
    """The hold a member takes when it first sees ``lease`` (pure): the lease's whole
    length from now, which ends no sooner than the collector's own deadline. A hold it
    takes over (``previous``, of this boot) is never cut short by it; one whose release
    was seen (``previous_released``: its collector is gone) only by its own floor."""
    floor = 0.0
    if previous is not None and previous.boot_id is not None and previous.boot_id == boot_id:
        floor = previous.floor if previous_released else max(previous.until, previous.floor)
    until = max(now_boottime + lease.hold_s, floor)
    return Hold(lease.token, until, boot_id, floor, now_wall + (until - now_boottime), lease.hold_s)


def hold_ended(
    hold: Hold,
    released: set[str],
    now_boottime: float,
    boot_id: str | None,
    now_wall: float = 0.0,
) -> str | None:
    """Why ``hold`` has ended, or None while it holds (pure).

    On this boot: past its time, or released once past its floor. From another boot:
    released (if it took over no older hold), or a lease length past its wall-clock end."""
    if hold.boot_id is not None and hold.boot_id == boot_id:
        if now_boottime >= hold.until:
            return "expired"
        if hold.token in released and now_boottime >= hold.floor:
            return "released"
        return None
    if hold.token in released and hold.floor == 0.0:
        return "released"
    if hold.until_wall is not None and now_wall >= hold.until_wall + hold.hold_s:
        return "expired"
    return None


def unconfirmed(members: list[Member], lease: GcLease) -> list[str]:
    """Rostered members that have not confirmed read-only for ``lease`` (pure)."""
    return sorted(
        m.name
        for m in members
        if not (m.alive and m.record is not None and m.record.confirmed == lease.token)
    )


def not_holding(members: list[Member], lease: GcLease) -> list[str]:
    """Live members that neither hold read-only for ``lease`` nor confirmed it (pure): a
    member that joined (or came back without its hold) while the collector runs, writable.
    A member restarted mid-gc resumes its hold first and says so in its first record."""
    return sorted(
        m.name
        for m in members
        if m.alive
        and m.record is not None
        and lease.token not in (m.record.read_only_for, m.record.confirmed)
    )


def silent(members: list[Member]) -> list[str]:
    """Rostered members whose heartbeat has expired (pure)."""
    return sorted(m.name for m in members if not m.alive)


def differing(members: list[Member], attribute: str) -> dict[str, list[str]]:
    """Live members grouped by a fingerprint (``storage``, ``http_secret``) when they
    do not all agree; empty when they do (pure)."""
    groups: dict[str, list[str]] = {}
    for member in members:
        if member.alive and member.record is not None:
            value = getattr(member.record, attribute) or "none"
            groups.setdefault(value, []).append(member.name)
    return groups if len(groups) > 1 else {}


def collector_seconds(lease_remaining_s: float) -> int:
    """How long the collector may run (pure): what is left of the lease, less a margin,
    whole seconds down; at least 1 (the caller refuses to start below the margin)."""
    return max(1, int(lease_remaining_s - COLLECTOR_MARGIN_S))


SECRET_VARIABLE = "REGISTRY_HTTP_SECRET"  # noqa: S105 (a name)


def secret_fingerprint(settings: Settings) -> str | None:
    """A short fingerprint of the registry's HTTP secret (pure): members compare it, and
    it says nothing of the secret (a SHA-256 of 256 random bits)."""
    value = settings.registry_env.get(SECRET_VARIABLE)
    if not value:
        return None
    return hashlib.sha256(b"registry-supervisor http secret\0" + value.encode()).hexdigest()[:16]


def storage_fingerprint(settings: Settings) -> str | None:
    """This member's storage settings as a fingerprint keyed by the HTTP secret: members
    compare it without publishing the storage's own secrets. Reads MY_REG_CONF when that
    decides the driver: once per loaded settings, not per heartbeat."""
    secret = settings.registry_env.get(SECRET_VARIABLE)
    if not secret:
        return None
    return keyed_storage_fingerprint(settings, secret.encode())


@dataclass(frozen=True)
class BlobCache:
    """The registry's shared Redis blob descriptor cache, as its settings name it."""

    address: str  # host:port, as the registry dials it
    password: str | None
    db: int
    tls: bool


# The keys distribution's Redis blob descriptor cache writes (registry/storage/cache/redis):
# ``blobs::<digest>`` and ``repository::<name>::blobs[::<digest>]``. Only these are cleared.
BLOB_CACHE_PATTERNS = ("blobs::*", "repository::*")


def blob_cache(registry_env: dict[str, str]) -> BlobCache | None:
    """The Redis blob cache the registry uses, if any (pure): REGISTRY_STORAGE_CACHE_
    BLOBDESCRIPTOR=redis with REGISTRY_REDIS_ADDR (2.x) or the first of REGISTRY_REDIS_ADDRS
    (3.x, a YAML list such as ``[redis:6379]``)."""
    env = {key.upper(): value for key, value in registry_env.items()}
    if env.get("REGISTRY_STORAGE_CACHE_BLOBDESCRIPTOR", "").strip().lower() != "redis":
        return None
    address = env.get("REGISTRY_REDIS_ADDR", "").strip()
    if not address:
        listed = env.get("REGISTRY_REDIS_ADDRS", "").strip().strip("[]")
        address = listed.split(",")[0].strip().strip("'\"")
    if not address:
        return None
    db_text = env.get("REGISTRY_REDIS_DB", "0").strip()
    tls = env.get("REGISTRY_REDIS_TLS_ENABLED", "").strip().lower() == "true"
    return BlobCache(
        address,
        env.get("REGISTRY_REDIS_PASSWORD") or None,
        int(db_text) if db_text.isdigit() else 0,
        tls,
    )
