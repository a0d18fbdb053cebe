"""Garbage collection of the registry's data dir, done safely.

The registry must not accept writes while `registry garbage-collect` runs, and must be
restarted afterwards (its blob descriptor cache would keep deleted blobs "present",
and a re-push would then skip uploading them). So, with the maintenance lock held
(a running supervisor stands aside, see supervisor/statedir/maintenance.py):

1. the registry container is recreated in read-only mode (pulls keep working,
   pushes get 405 for the duration),
2. the collector runs in a one-shot container on the same image, mounts and environment,
3. the normal container is recreated from the normal spec (no stale cache survives),
4. bytes freed are measured as the data dir's size before and after.

A dry run skips steps 1 and 3 (it deletes nothing, so the registry keeps serving
untouched) and reports what a real run would free: the size of the blobs it names.
Nothing but the registry's own collector deletes anything; the data dir stays where it is.

The collector is waited for as long as it runs: no timeout abandons it. Whatever ends
`gc` early (a signal, an engine error), the registry goes back to normal mode and the
lock is released only once the collector is known to be gone; otherwise both stay, and
the lock holds on the collector's own state until it ends.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from supervisor.adapters import disk
from supervisor.adapters.probe import Probe, ProbeFailed
from supervisor.engine.client import Engine
from supervisor.engine.configs import create_config
from supervisor.errors import (
    ContainerActionFailed,
    ContainerGone,
    ImageUnavailable,
    MaintenanceFailed,
)
from supervisor.health import is_healthy
from supervisor.layout import ImageLayout
from supervisor.observed import Observed
from supervisor.ops.rolling import drain
from supervisor.settings import Settings
from supervisor.spec import (
    MANAGED_BY_LABEL,
    READONLY_VALUE,
    READONLY_VARIABLE,
    ContainerSpec,
    derive_spec,
    spec_hash,
)
from supervisor.statedir import maintenance, state_file

COLLECTOR_SUFFIX = "-gc"
# How long the registry may take to answer after each recreation.
ANSWER_TIMEOUT_S = 60.0
ANSWER_POLL_S = 0.1
# Refusals of the engine that end a gc with one line (exit 1), never a traceback.
ENGINE_REFUSALS = (ContainerActionFailed, ContainerGone, ImageUnavailable)
_ELIGIBLE_BLOB = re.compile(r"^blob eligible for deletion: (sha256:[0-9a-f]{64})\s*$", re.MULTILINE)
# Where the filesystem driver keeps blobs under its root (the data dir).
BLOBS_DIR = "docker/registry/v2/blobs"
_SUMMARY = re.compile(
    r"(?P<marked>\d+) blobs marked, (?P<blobs>\d+) blobs and "
    r"(?P<manifests>\d+) manifests eligible for deletion"
)


@dataclass(frozen=True)
class GcResult:
    """What one garbage collection did; stored as the last gc and printed by `gc`."""

    dry_run: bool
    delete_untagged: bool
    started_at: str
    finished_at: str
    duration_s: float
    before_bytes: int
    after_bytes: int
    freed_bytes: int
    blobs_marked: int | None
    blobs_eligible: int | None
    manifests_eligible: int | None
    registry_was_running: bool
    outcome: str  # "ok" or "failed: ..."
    # Sum of the eligible blobs' files in the data dir: what a real run frees (about).
    eligible_bytes: int | None = None
    # Registry containers this gc created (read-only, then normal: planned replacements,
    # which the supervisor, standing aside, does not count), and the sum over every gc
    # since the first that counted them (carried from the previous record).
    mode_switches: int = 0
    mode_switches_total: int = 0

    def as_dict(self) -> dict[str, Any]:
        """The result as gc's JSON record and `gc --json` give it."""
        return asdict(self)


def readonly_spec(spec: ContainerSpec) -> ContainerSpec:
    """The same container with the registry's storage in read-only maintenance mode (pure)."""
    environment = dict(spec.environment)
    environment[READONLY_VARIABLE] = READONLY_VALUE
    readonly = replace(spec, environment=tuple(sorted(environment.items())))
    return replace(readonly, spec_hash=spec_hash(readonly))


def collector_command(layout: ImageLayout, *, dry_run: bool, delete_untagged: bool) -> list[str]:
    """Arguments of `registry` for the collection: the config the image serves with (pure)."""
    flags = (["--dry-run"] if dry_run else []) + (["--delete-untagged"] if delete_untagged else [])
    return ["garbage-collect", *flags, layout.config_path]


def collector_name(spec: ContainerSpec, *, dry_run: bool) -> str:
    """The collector container's name (pure). A dry run has a name of its own: it may run
    beside a real collection."""
    return f"{spec.name}{COLLECTOR_SUFFIX}{'-dry' if dry_run else ''}"


def collector_config(
    spec: ContainerSpec, layout: ImageLayout, command: list[str]
) -> dict[str, Any]:
    """Create arguments of the one-shot collector: the registry's mounts, env and hardening,
    no published port, no spec hash (it is never mistaken for the registry) (pure)."""
    # Docker's default network, not the holder's: a storage driver may need to reach out.
    config = create_config(spec, holder_id=None)
    config.pop("stop_signal")
    config.pop("stop_timeout")
    config["name"] = collector_name(spec, dry_run="--dry-run" in command)
    config["labels"] = {MANAGED_BY_LABEL: spec.labels[MANAGED_BY_LABEL]}
    config["entrypoint"] = [layout.binary]
    config["command"] = command
    config["detach"] = True
    return config


# What the collector says (and exits 1 with) when the registry has stored nothing yet:
# no repository at all, or repositories (upload sessions begun: a canary's, a push
# refused) but no blob ever committed. The driver prefixes it ("s3aws: Path not found").
NOTHING_STORED = "Path not found: /docker/registry/v2/repositories"
NO_BLOBS_STORED = "Path not found: /docker/registry/v2/blobs"


def nothing_stored(output: str) -> bool:
    """Whether the collector failed only because there is nothing to collect (pure)."""
    return NOTHING_STORED in output or NO_BLOBS_STORED in output


# The disk guard's estimate runs beside the loop; a stuck collector must end.
ESTIMATE_TIMEOUT_S = 600


def estimate_reclaimable(settings: Settings, engine: Engine) -> int | None:
    """Bytes a collection would free now: a dry run of the collector, which deletes
    nothing and leaves the registry serving. None when the collector fails."""
    layout = engine.image_layout(settings.image_ref)
    if layout is None:
        return None
    spec = derive_spec(settings, layout)
    command = collector_command(layout, dry_run=True, delete_untagged=False)
    code, output = engine.run_once(collector_config(spec, layout, command), ESTIMATE_TIMEOUT_S)
    if code != 0:
        # A registry that has stored nothing yet has no repositories dir to mark.
        return 0 if nothing_stored(output) else None
    return blobs_bytes(settings.dir, eligible_blobs(output))


def parse_summary(output: str) -> tuple[int | None, int | None, int | None]:
    """(blobs marked, blobs eligible, manifests eligible) from the collector's output (pure)."""
    match = _SUMMARY.search(output)
    if match is None:
        return None, None, None
    return int(match["marked"]), int(match["blobs"]), int(match["manifests"])


def eligible_blobs(output: str) -> list[str]:
    """Digests the collector names as eligible for deletion (pure)."""
    return _ELIGIBLE_BLOB.findall(output)


def blobs_bytes(data_dir: Path, digests: list[str]) -> int | None:
    """Allocated bytes of these blobs in a filesystem-driver data dir; None if none is there."""
    total, found = 0, False
    for digest in digests:
        algorithm, _, hexdigest = digest.partition(":")
        path = data_dir / BLOBS_DIR / algorithm / hexdigest[:2] / hexdigest / "data"
        try:
            total += path.stat().st_blocks * 512
            found = True
        except OSError:
            continue
    return total if found or not digests else None


def collector_image(settings: Settings, engine: Engine) -> tuple[ImageLayout, ContainerSpec]:
    """The image the collector runs on (the registry's, by its tag): its layout and the
    registry's spec on it. MaintenanceFailed when the image is not present."""
    layout = engine.image_layout(settings.image_ref)
    if layout is None:
        raise MaintenanceFailed(
            f"image {settings.image_ref} is not present: nothing to collect with "
            "(`registry-supervisor run` pulls it)"
        )
    return layout, derive_spec(settings, layout)


def _now() -> datetime:
    return datetime.now(UTC)


class GarbageCollection:
    """One `registry-supervisor gc` run against the engine."""

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        *,
        dry_run: bool,
        delete_untagged: bool,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.dry_run = dry_run
        self.delete_untagged = delete_untagged
        self.sleep = sleep
        self.layout, self.spec = collector_image(settings, engine)
        self.collector = collector_name(self.spec, dry_run=dry_run)
        # Set from the collector's creation until it is known to be gone: while set, the
        # registry stays read-only and the lock is kept.
        self.collector_may_run = False
        self.mode_switches = 0
        self.log = structlog.get_logger().bind(container=settings.name, image=self.spec.image)

    def run(self) -> GcResult:
        """Collect garbage; MaintenanceFailed if it fails, after restoring the registry
        (unless the collector may still run: then the registry stays read-only and the
        lock stays, and the running supervisor restores it once the collector ends)."""
        try:
            return self._run()
        except ENGINE_REFUSALS as err:
            raise MaintenanceFailed(f"the Docker engine refused: {err}") from None

    def _run(self) -> GcResult:
        if self.dry_run:
            # Deletes nothing and leaves the registry serving: the supervisor keeps
            # repairing as usual, so no maintenance lock.
            return self._collect()
        path = maintenance.maintenance_path(self.settings)
        try:
            held = maintenance.acquire(
                path, maintenance.GARBAGE_COLLECTION, self.collector, self._collector_running
            )
        except maintenance.MaintenanceBusy as err:
            raise MaintenanceFailed(str(err)) from None
        except OSError as err:
            raise MaintenanceFailed(f"cannot write {path}: {err.strerror}") from None
        try:
            return self._collect()
        finally:
            if self.collector_may_run:
                # Released, the supervisor would make the registry writable mid-sweep.
                self.log.warning("gc.lock_kept", collector=self.collector)
            else:
                maintenance.release(path, held)

    def _collector_running(self, name: str) -> bool:
        return maintenance.collector_holds(self.engine.inspect(name))

    def _collect(self) -> GcResult:
        started, clock = _now(), time.monotonic()
        before = disk.tree_size(self.settings.dir)
        self._clear_leftover_collector()
        observed = self.engine.inspect(self.spec.name)
        running = observed is not None and observed.running
        # A dry run deletes nothing: the registry keeps serving untouched.
        switch = running and not self.dry_run
        if observed is not None and switch and not observed.managed:
            raise MaintenanceFailed(
                f"container {observed.name} was not created by registry-supervisor; "
                "start `registry-supervisor run` first (it replaces it) or stop it"
            )
        holder_id = self._holder_id() if switch else ""
        self.log.info(
            "gc.started",
            dry_run=self.dry_run,
            delete_untagged=self.delete_untagged,
            data_dir=str(self.settings.dir),
            size_bytes=before.bytes,
            registry_running=running,
        )
        outcome = "ok"
        summary: tuple[int | None, int | None, int | None] = (None, None, None)
        eligible_bytes = None
        try:
            if switch and observed is not None:
                drain(self.settings, self.log, self.sleep)  # `/ready` 503 from the lock on
                self._recreate(observed, readonly_spec(self.spec), holder_id, "read-only")
            command = collector_command(
                self.layout, dry_run=self.dry_run, delete_untagged=self.delete_untagged
            )
            self.collector_may_run = True
            # No timeout: a collection takes as long as the storage needs.
            code, output = self.engine.run_once(
                collector_config(self.spec, self.layout, command), None
            )
            summary = parse_summary(output)
            if self.dry_run:  # after a real run they are gone: freed_bytes measures that
                eligible_bytes = blobs_bytes(self.settings.dir, eligible_blobs(output))
            for line in output.splitlines()[-5:]:
                self.log.debug("gc.output", line=line)
            if code != 0:
                tail = " | ".join(output.strip().splitlines()[-3:])
                outcome = f"failed: the collector exited {code}: {tail}"
        finally:
            if self.collector_may_run:
                self.collector_may_run = maintenance.collector_holds(
                    self.engine.inspect(self.collector)
                )
            if switch:
                self._restore(holder_id)
        after = disk.tree_size(self.settings.dir)
        result = GcResult(
            dry_run=self.dry_run,
            delete_untagged=self.delete_untagged,
            started_at=started.isoformat(timespec="seconds"),
            finished_at=_now().isoformat(timespec="seconds"),
            duration_s=round(time.monotonic() - clock, 3),
            before_bytes=before.bytes,
            after_bytes=after.bytes,
            freed_bytes=max(0, before.bytes - after.bytes),
            blobs_marked=summary[0],
            blobs_eligible=summary[1],
            manifests_eligible=summary[2],
            registry_was_running=running,
            outcome=outcome,
            eligible_bytes=eligible_bytes,
            mode_switches=self.mode_switches,
            mode_switches_total=self._switches_before() + self.mode_switches,
        )
        try:
            state_file.write_json(state_file.gc_path(self.settings), result.as_dict())
        except OSError as err:
            self.log.warning("gc.record_failed", error=str(err))
        if outcome != "ok":
            self.log.error("gc.failed", error=outcome)
            raise MaintenanceFailed(outcome)
        self.log.info(
            "gc.finished",
            freed_bytes=result.freed_bytes,
            blobs_eligible=result.blobs_eligible,
            manifests_eligible=result.manifests_eligible,
            eligible_bytes=result.eligible_bytes,
            duration_s=result.duration_s,
        )
        return result

    def _switches_before(self) -> int:
        """Mode switches of every earlier gc, from the last record (0 without one)."""
        total = (state_file.read_json(state_file.gc_path(self.settings)) or {}).get(
            "mode_switches_total"
        )
        return total if isinstance(total, int) and not isinstance(total, bool) else 0

    def _restore(self, holder_id: str) -> None:
        """Back to the normal container, unless the collector may still be sweeping."""
        if self.collector_may_run:
            raise MaintenanceFailed(
                f"the collector {self.collector} could not be removed and may still run; "
                "the registry stays read-only until it ends (a running supervisor then "
                "restores it; otherwise run gc again)"
            )
        try:
            self._recreate(self.engine.inspect(self.spec.name), self.spec, holder_id, "normal")
        except ENGINE_REFUSALS as err:
            raise MaintenanceFailed(
                f"the registry could not be recreated in normal mode ({err}); "
                "a running supervisor recreates it"
            ) from None

    def _clear_leftover_collector(self) -> None:
        """A collector left by a killed gc: remove it if it has ended, refuse if it runs.
        A container of that name we did not create is the user's: refuse, touch nothing."""
        leftover = self.engine.inspect(self.collector)
        if leftover is None:
            return
        if not leftover.managed:
            raise MaintenanceFailed(
                f"container {leftover.name} was not created by registry-supervisor, and gc "
                f"needs its name for the collector: remove it (docker rm {leftover.name}) or "
                "rename it (docker rename), then run gc again"
            )
        if maintenance.collector_holds(leftover):
            raise MaintenanceFailed(
                f"a collector from an earlier gc ({leftover.name}) is still running; "
                "wait for it to end"
            )
        self.engine.remove(leftover.id)

    def _holder_id(self) -> str:
        """The running network holder the registry is recreated in (checked before any change)."""
        holder = self.engine.inspect(self.spec.holder_name)
        if holder is None or not holder.running or not holder.managed:
            raise MaintenanceFailed(
                f"the network holder {self.spec.holder_name} is not running; "
                "`registry-supervisor run` repairs it"
            )
        return holder.id

    def _recreate(
        self, observed: Observed | None, spec: ContainerSpec, holder_id: str, mode: str
    ) -> None:
        """Replace the registry container by one of ``spec`` and wait until it answers."""
        if observed is not None:
            self.engine.retire(observed, self.settings.stop_timeout)
        created = self.engine.create_started(spec, holder_id)
        self.mode_switches += 1
        self.log.info("gc.registry_recreated", mode=mode, container_id=created.short_id)
        self._wait_answering(mode)

    def _wait_answering(self, mode: str) -> None:
        probe = Probe(self.settings.probe_url, self.settings.tls_certificate)
        deadline = time.monotonic() + ANSWER_TIMEOUT_S
        try:
            while True:
                try:
                    if is_healthy(probe(self.settings.health_timeout)):
                        return
                except ProbeFailed:
                    pass
                if time.monotonic() > deadline:
                    raise MaintenanceFailed(
                        f"the registry ({mode}) did not answer at {self.settings.probe_url} "
                        f"within {ANSWER_TIMEOUT_S:.0f} s"
                    )
                self.sleep(ANSWER_POLL_S)
        finally:
            probe.close()
