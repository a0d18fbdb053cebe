"""The fleet's Redis (redis-py): heartbeats, the roster, the gc lease, the rolling slot.

Every call is bounded by a short socket timeout and raises FleetUnavailable when Redis
does not answer; none of them is made on the supervision loop's thread
(supervisor/loop/fleet.py runs them beside it). Key layout and meaning:
supervisor/fleet.py.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import redis

from supervisor.errors import FleetUnavailable
from supervisor.fleet import (
    BLOB_CACHE_PATTERNS,
    MEMBER_TTL_S,
    RELEASED_TTL_S,
    BlobCache,
    GcLease,
    Member,
    MemberRecord,
    keys_prefix,
)
from supervisor.redaction import redact_text

# A Redis that does not answer within this is unreachable for this round.
REDIS_TIMEOUT_S = 1.0

# Compare-and-delete / compare-and-expire: only the holder of a token ends or extends it.
_DELETE_IF = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
)
_EXPIRE_IF = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then "
    "return redis.call('pexpire', KEYS[1], ARGV[2]) end return 0"
)


@contextmanager
def _answers(url: str) -> Iterator[None]:
    try:
        yield
    except redis.RedisError as err:
        detail = redact_text(str(err)) or type(err).__name__
        raise FleetUnavailable(f"redis at {redact_text(url)}: {detail}") from None


def clear_blob_cache(cache: BlobCache, timeout: float = REDIS_TIMEOUT_S) -> int:
    """Delete the registry's blob descriptor cache entries (BLOB_CACHE_PATTERNS) from its
    Redis: after a collection they may name deleted blobs as present. The keys deleted.
    FleetUnavailable when that Redis does not answer from here."""
    host, _, port = cache.address.rpartition(":")
    client = redis.Redis(
        host=host.strip("[]") or cache.address,
        port=int(port) if port.isdigit() else 6379,
        db=cache.db,
        password=cache.password,
        ssl=cache.tls,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
    )
    deleted = 0
    try:
        with _answers(f"redis://{cache.address}/{cache.db}"):
            for pattern in BLOB_CACHE_PATTERNS:
                batch = []
                for key in client.scan_iter(match=pattern, count=500):
                    batch.append(key)
                    if len(batch) >= 500:
                        deleted += int(client.delete(*batch))
                        batch = []
                if batch:
                    deleted += int(client.delete(*batch))
    finally:
        client.close()
    return deleted


class FleetStore:
    """One fleet's keys in one Redis."""

    def __init__(self, url: str, fleet_name: str, timeout: float = REDIS_TIMEOUT_S) -> None:
        self.url = url
        self.prefix = keys_prefix(fleet_name)
        self._redis = redis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            decode_responses=True,
            # One attempt per call: the caller's cadence is the retry.
            retry_on_timeout=False,
        )
        self._delete_if = self._redis.register_script(_DELETE_IF)
        self._expire_if = self._redis.register_script(_EXPIRE_IF)

    def _key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    def close(self) -> None:
        """Close the connection pool."""
        self._redis.close()

    # -- membership ------------------------------------------------------------------------

    def heartbeat(self, record: MemberRecord, secret: str | None = None) -> None:
        """Write this member's record (expiring), roster it, and make the epoch if new;
        ``secret``: the fleet's HTTP secret this member runs with, put back if Redis lost
        it (a member that joins next must find it, not make its own)."""
        with _answers(self.url):
            body = record.to_json()
            pipe = self._redis.pipeline(transaction=False)
            if secret is not None:
                pipe.set(self._key("http-secret"), secret, nx=True)
            pipe.set(self._key("member", record.name), body, px=int(MEMBER_TTL_S * 1000))
            pipe.hset(self._key("roster"), record.name, body)
            pipe.set(self._key("epoch"), self._server_seconds(), nx=True)
            pipe.execute()

    def members(self) -> list[Member]:
        """Every rostered member, alive or silent, by name."""
        with _answers(self.url):
            roster: dict[str, str] = self._redis.hgetall(self._key("roster"))  # type: ignore[assignment]
            names = sorted(roster)
            live = self._redis.mget([self._key("member", n) for n in names]) if names else []
        members = []
        for name, body in zip(names, live, strict=True):
            record = MemberRecord.from_json(body) or MemberRecord.from_json(roster[name])
            members.append(Member(name, body is not None, record))
        return members

    def forget(self, name: str) -> bool:
        """Remove ``name`` from the roster; whether it was there."""
        with _answers(self.url):
            return bool(self._redis.hdel(self._key("roster"), name))

    def epoch_age_s(self) -> float | None:
        """Seconds since this Redis first saw a member (None: no member yet, or the
        data was lost since)."""
        with _answers(self.url):
            epoch = self._redis.get(self._key("epoch"))
            now = self._server_seconds()
        try:
            return None if epoch is None else max(0.0, float(now) - float(epoch))
        except ValueError:
            return None

    def _server_seconds(self) -> str:
        """Redis's own clock: every member's epoch arithmetic uses one clock."""
        seconds, micros = self._redis.time()
        return f"{seconds}.{micros:06d}"

    # -- the HTTP secret -----------------------------------------------------------------

    def fleet_secret(self) -> str | None:
        """The fleet's HTTP secret, if one was made (reads only)."""
        with _answers(self.url):
            value = self._redis.get(self._key("http-secret"))
        return value if isinstance(value, str) and value else None

    def shared_secret(self, candidate: str) -> str:
        """The fleet's HTTP secret: ``candidate`` if the fleet had none yet, else its own."""
        with _answers(self.url):
            key = self._key("http-secret")
            self._redis.set(key, candidate, nx=True)
            value = self._redis.get(key)
        return value if isinstance(value, str) and value else candidate

    # -- the gc lease ----------------------------------------------------------------------

    def take_lease(self, holder: str, hold_s: float, started: str) -> GcLease | None:
        """Take the fleet's gc lease for ``hold_s``; None while another gc holds it."""
        lease = GcLease(secrets.token_hex(8), holder, hold_s, started)
        with _answers(self.url):
            taken = self._redis.set(
                self._key("gc", "lease"), lease.to_json(), nx=True, px=int(hold_s * 1000)
            )
        return lease if taken else None

    def lease(self) -> GcLease | None:
        """The gc lease in force, if any."""
        with _answers(self.url):
            return GcLease.from_json(self._redis.get(self._key("gc", "lease")))

    def lease_remaining_s(self, lease: GcLease) -> float | None:
        """Seconds left of ``lease``; None when it is no longer the lease in force."""
        with _answers(self.url):
            pipe = self._redis.pipeline(transaction=True)
            pipe.get(self._key("gc", "lease"))
            pipe.pttl(self._key("gc", "lease"))
            body, pttl = pipe.execute()
        current = GcLease.from_json(body)
        if current is None or current.token != lease.token or pttl is None or pttl < 0:
            return None
        return float(pttl) / 1000.0

    def release(self, lease: GcLease) -> None:
        """End ``lease``: members see its token released and go back to normal."""
        with _answers(self.url):
            self._redis.set(self._key("gc", "released", lease.token), "1", ex=RELEASED_TTL_S)
            self._delete_if(keys=[self._key("gc", "lease")], args=[lease.to_json()])

    def released(self, token: str) -> bool:
        """Whether the lease of ``token`` was released."""
        with _answers(self.url):
            return bool(self._redis.exists(self._key("gc", "released", token)))

    # -- the rolling slot ------------------------------------------------------------------

    def take_slot(self, member: str, why: str, ttl_s: float) -> str | None:
        """Take the rolling slot for ``ttl_s``; its token, or None while another holds it."""
        token = f"{member}:{why}:{secrets.token_hex(4)}"
        with _answers(self.url):
            taken = self._redis.set(self._key("slot"), token, nx=True, px=int(ttl_s * 1000))
        return token if taken else None

    def renew_slot(self, token: str, ttl_s: float) -> bool:
        """Extend our slot; False when it is no longer ours (it expired)."""
        with _answers(self.url):
            return bool(self._expire_if(keys=[self._key("slot")], args=[token, int(ttl_s * 1000)]))

    def release_slot(self, token: str) -> None:
        """Give the slot back (only if it is still ours)."""
        with _answers(self.url):
            self._delete_if(keys=[self._key("slot")], args=[token])

    def slot_holder(self) -> str | None:
        """Who holds the rolling slot now (its token: member:why:nonce), if anyone."""
        with _answers(self.url):
            value = self._redis.get(self._key("slot"))
        return value if isinstance(value, str) else None
