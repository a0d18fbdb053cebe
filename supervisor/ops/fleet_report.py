"""`status --fleet` and `forget-member`: the fleet as its Redis knows it.

Every rostered member with its last heartbeat, the gc lease and the rolling slot in
force, and what members disagree on (storage, HTTP secret, spec, registry version),
compared by fingerprint: no secret is ever in Redis's member records.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from supervisor import fleet
from supervisor.adapters.fleet_store import FleetStore

# What members must agree on, and what a difference means.
AGREEMENT = (
    ("storage", "storage settings differ: members must share one storage"),
    ("http_secret", "HTTP secrets differ: uploads that span members fail"),
    ("registry_version", "registry versions differ (a rolling update under way?)"),
)


def fleet_report(store: FleetStore) -> dict[str, Any]:
    """The fleet now: members, lease, slot, disagreements. FleetUnavailable."""
    members = store.members()
    lease = store.lease()
    warnings = []
    for attribute, meaning in AGREEMENT:
        groups = fleet.differing(members, attribute)
        if groups:
            split = "; ".join(f"{', '.join(names)}" for names in groups.values())
            warnings.append(f"{meaning} ({split})")
    silent = fleet.silent(members)
    if silent:
        warnings.append(
            f"not heartbeating: {', '.join(silent)} (a fleet gc refuses to start until they "
            "are back, or forgotten with `registry-supervisor forget-member NAME`)"
        )
    return {
        "members": [
            {"name": m.name, "alive": m.alive, **(asdict(m.record) if m.record else {})}
            for m in members
        ],
        "gc_lease": None if lease is None else asdict(lease),
        "rolling_slot": store.slot_holder(),
        "warnings": warnings,
    }


def report_lines(report: dict[str, Any]) -> list[str]:
    """The report as `status --fleet` prints it (pure)."""
    lines = []
    for member in report["members"]:
        if not member["alive"]:
            lines.append(f"{member['name']}: silent (last heartbeat {member.get('updated', '?')})")
            continue
        ready = "ready" if member.get("ready") else "not ready"
        read_only = (
            f", read-only for gc {member['read_only_for']}"
            + (" (confirmed)" if member.get("confirmed") == member["read_only_for"] else "")
            if member.get("read_only_for")
            else ""
        )
        lines.append(
            f"{member['name']}: {member.get('phase')}, {ready}, registry "
            f"{member.get('registry_version')}, spec {member.get('spec_hash')}, last health "
            f"{member.get('last_health')}{read_only} (at {member.get('updated')})"
        )
    if not report["members"]:
        lines.append("no member has heartbeated in this fleet")
    lease = report["gc_lease"]
    if lease is not None:
        lines.append(f"gc lease: {lease['token']}, {lease['holder']}'s since {lease['started']}")
    if report["rolling_slot"]:
        holder, why, _ = f"{report['rolling_slot']}::".split(":", 2)
        lines.append(f"rolling slot: {holder} ({why})")
    lines.extend(f"warning: {text}" for text in report["warnings"])
    return lines


def forget(store: FleetStore, name: str) -> tuple[bool, str]:
    """Remove a member from the roster: whether it is out of it now, and what happened in
    one line. Refused while it heartbeats. FleetUnavailable."""
    alive = {m.name: m.alive for m in store.members()}
    if name not in alive:
        return True, f"{name} is not in the fleet's roster; nothing changed"
    if alive[name]:
        return False, f"{name} is heartbeating: stop its supervisor first; nothing changed"
    store.forget(name)
    return True, f"{name} removed from the roster"
