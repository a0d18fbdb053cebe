"""`registry-supervisor update`: a new registry image is kept only when it works.

1. The configured tag (MY_REG_IMAGE:MY_REG_TAG) is pulled, whatever MY_REG_PULL says. If
   the registry container already runs the image the tag now names, nothing changes.
2. Otherwise, with the maintenance lock held (task "update": a running supervisor stands
   aside, see supervisor/statedir/maintenance.py), one manifest the registry serves now
   is remembered (supervisor/adapters/manifests.py), and the registry is recreated on the
   new image in the same network holder.
3. The gate, within MY_REG_STARTUP_GRACE of that start: ``/v2/`` answers healthy, then
   every check of ``manifests.gate_checks`` passes (the remembered manifest is served by
   digest; the push canary slots in there).
4. Passed: the new image stays. Failed (or interrupted): the tag is pointed back at the
   previous image (`docker tag <old id> <image>:<tag>`, so that nothing resolves the
   broken one again until the next update), the registry is recreated on it, and
   ``update.rolled_back`` says why.

The previous image is known by its id from the first step on and never removed: we
remove no image at all (the refused one stays, untagged, for `docker image prune`).
Once the lock is released, a running supervisor resolves the tag again and adopts the
container it finds (supervisor/loop/reconciler.py, ``_after_maintenance``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import structlog

from supervisor.adapters.manifests import (
    Baseline,
    RegistryReader,
    first_failure,
    gate_checks,
)
from supervisor.adapters.probe import Probe, ProbeFailed
from supervisor.adapters.registry_api import canary_round
from supervisor.engine.client import Engine
from supervisor.errors import (
    ContainerActionFailed,
    ContainerGone,
    ImageUnavailable,
    MaintenanceFailed,
)
from supervisor.fleet import Hold
from supervisor.health import is_healthy
from supervisor.layout import ImageLayout, RegistryVersion, version_findings
from supervisor.observed import Observed
from supervisor.ops.rolling import drain, rolling_slot, wait_ready
from supervisor.settings import Settings
from supervisor.spec import derive_spec
from supervisor.statedir import fleet_hold, maintenance

UPDATE = "update"  # the maintenance lock's task
# update starts no collector; the lock names a container that never exists, so a lock
# left by a killed update is stale as soon as its process is gone.
LOCK_CONTAINER_SUFFIX = "-update"
GATE_POLL_S = 0.1
# The previous image, back in place, gets at least this long to answer (a grace of 0
# would leave no time at all).
ROLLBACK_ANSWER_S = 60.0
ENGINE_REFUSALS = (ContainerActionFailed, ContainerGone, ImageUnavailable)


@dataclass(frozen=True)
class UpdateResult:
    """What one `update` did: ``outcome`` is up-to-date, updated or rolled-back."""

    outcome: str
    image: str
    previous_image_id: str
    image_id: str  # what the tag named after the pull
    why: str | None  # rolled back: the gate's failure
    manifest_check: str  # what the manifest check compared, or why it was skipped
    duration_s: float

    def as_dict(self) -> dict[str, Any]:
        """The result as `update --json` prints it."""
        return asdict(self)


@dataclass(frozen=True)
class _Change:
    """The image change one update tries: from ``previous`` to ``pulled`` (ids)."""

    previous: str
    pulled: str
    old_layout: ImageLayout
    new_layout: ImageLayout
    holder_id: str
    started: float  # monotonic, when the update began


def gate_deadline(started: float, grace_s: float) -> float:
    """When the new container must have passed the gate (pure): MY_REG_STARTUP_GRACE
    after its start."""
    return started + grace_s


def refusal_while_held(hold: Hold | None) -> str | None:
    """Why update must not replace this member's registry now, or None (pure): a fleet gc
    holds it read-only (its hold file), and the new registry, made from the settings, would
    be writable under the collector until the supervisor, standing aside meanwhile, made it
    read-only again."""
    if hold is None:
        return None
    return (
        f"a fleet gc holds this member read-only (lease {hold.token}); nothing changed: "
        "run update again once the member is back to normal"
    )


def describe_baseline(baseline: Baseline) -> str:
    """One phrase for what the manifest check compares (pure)."""
    if baseline.manifest is None:
        return baseline.note or "skipped"
    ref = baseline.manifest
    return f"{ref.repository}:{ref.tag} at {ref.digest}"


class Update:
    """One `registry-supervisor update` run against the engine."""

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.sleep = sleep
        self.clock = clock
        self.ref = settings.image_ref
        self.log = structlog.get_logger().bind(container=settings.name, image=self.ref)
        # The new image's registry version, once read: the canary writes as its catalog
        # allows (supervisor/canary.py).
        self.new_version: RegistryVersion | None = None

    def run(self) -> UpdateResult:
        """Pull, and if the image changed, recreate the registry on it and keep it only if
        it passes the gate. MaintenanceFailed when it could not be tried (nothing changed,
        the tag still names the previous image)."""
        try:
            return self._run()
        except ENGINE_REFUSALS as err:
            raise MaintenanceFailed(f"the Docker engine refused: {err}") from None

    def _run(self) -> UpdateResult:
        started = self.clock()
        observed = self._serving_registry()
        holder_id = self._holder_id()
        previous = observed.image_id
        self.log.info("update.pulling", previous_image_id=previous)
        try:
            self.engine.pull(self.ref, progress=lambda: None)
        except ImageUnavailable as err:
            raise MaintenanceFailed(f"the pull failed, nothing changed: {err}") from None
        pulled = self.engine.image_id(self.ref)
        if pulled is None:
            raise MaintenanceFailed(f"{self.ref} is not present after the pull")
        if pulled == previous:
            self.log.info("update.up_to_date", image_id=pulled)
            return UpdateResult(
                outcome="up-to-date",
                image=self.ref,
                previous_image_id=previous,
                image_id=pulled,
                why=None,
                manifest_check="not needed",
                duration_s=round(self.clock() - started, 3),
            )
        self.log.info("update.pulled", previous_image_id=previous, image_id=pulled)
        try:
            new_layout = self._layout(pulled)
            old_layout = self._layout(previous)
        except MaintenanceFailed:
            self._retag(previous, why="the new image cannot be used")
            raise
        change = _Change(previous, pulled, old_layout, new_layout, holder_id, started)
        try:
            # Fleet mode: one member at a time (supervisor/ops/rolling.py).
            with rolling_slot(self.settings, UPDATE, self.log):
                # With the slot ours, this member cannot switch to read-only meanwhile.
                if self.settings.fleet_redis is not None:
                    hold = fleet_hold.read(fleet_hold.hold_path(self.settings))
                    refused = refusal_while_held(hold)
                    if refused is not None:
                        raise MaintenanceFailed(refused)
                result = self._locked(observed, change)
                wait_ready(self.settings, self.log, self.sleep)
                return result
        except MaintenanceFailed:
            self._retag(previous, why="not tried")
            raise

    def _locked(self, observed: Observed, change: _Change) -> UpdateResult:
        """The change under the maintenance lock, drained first."""
        path = maintenance.maintenance_path(self.settings)
        try:
            held = maintenance.acquire(
                path, UPDATE, f"{self.settings.name}{LOCK_CONTAINER_SUFFIX}", self._exists
            )
        except (maintenance.MaintenanceBusy, OSError) as err:
            text = str(err) if isinstance(err, maintenance.MaintenanceBusy) else err.strerror
            raise MaintenanceFailed(f"cannot take the maintenance lock: {text}") from None
        try:
            drain(self.settings, self.log, self.sleep)
            return self._try(observed, change)
        finally:
            maintenance.release(path, held)

    def _try(self, observed: Observed, change: _Change) -> UpdateResult:
        previous, pulled, holder_id = change.previous, change.pulled, change.holder_id
        reader = RegistryReader.for_probe_url(
            self.settings.probe_url,
            self.settings.tls_certificate,
            auth_on=self.settings.auth_htpasswd is not None,
        )
        try:
            baseline = reader.remember(self.settings.health_timeout)
            compared = describe_baseline(baseline)
            if baseline.manifest is None:
                self.log.info("update.manifest_check_skipped", note=compared)
            refused = self._check_new(pulled, change.new_layout)
            if refused is not None:
                # Refused before anything started: the registry keeps serving as it is.
                self._retag(previous, why="refused before the change")
                self.log.error(
                    "update.rolled_back", why=refused, image_id=pulled, previous_image_id=previous
                )
                return self._result("rolled-back", change, refused, compared)
            try:
                self._recreate(observed, change.new_layout, holder_id)
                why = self._gate(reader, baseline)
            except BaseException:
                # Interrupted (SIGTERM, Ctrl-C) or the engine failed mid-way: the previous
                # image goes back before anything else.
                self._roll_back(change, "interrupted")
                raise
            if why is None:
                self.log.info(
                    "update.kept", previous_image_id=previous, image_id=pulled, checked=compared
                )
                return self._result("updated", change, None, compared)
            self._roll_back(change, why)
            return self._result("rolled-back", change, why, compared)
        finally:
            reader.close()

    def _result(
        self, outcome: str, change: _Change, why: str | None, compared: str
    ) -> UpdateResult:
        return UpdateResult(
            outcome=outcome,
            image=self.ref,
            previous_image_id=change.previous,
            image_id=change.pulled,
            why=why,
            manifest_check=compared,
            duration_s=round(self.clock() - change.started, 3),
        )

    # -- preconditions -------------------------------------------------------------------

    def _serving_registry(self) -> Observed:
        """The running registry container of ours: update replaces a serving registry only
        (without one there is nothing to compare the new image with)."""
        observed = self.engine.inspect(self.settings.name)
        if observed is None or not observed.managed or not observed.running:
            raise MaintenanceFailed(
                f"the registry {self.settings.name} is not running (or not ours): start "
                "`registry-supervisor run` first; update replaces a serving registry only"
            )
        return observed

    def _holder_id(self) -> str:
        holder = self.engine.inspect(f"{self.settings.name}-net")
        if holder is None or not holder.running or not holder.managed:
            raise MaintenanceFailed(
                f"the network holder {self.settings.name}-net is not running; "
                "`registry-supervisor run` repairs it"
            )
        return holder.id

    def _layout(self, image_id: str) -> ImageLayout:
        try:
            layout = self.engine.image_layout(image_id)
        except ImageUnavailable as err:
            raise MaintenanceFailed(f"image {image_id}: {err}") from None
        if layout is None:
            raise MaintenanceFailed(f"image {image_id} went away")
        return layout

    def _exists(self, name: str) -> bool:
        return self.engine.inspect(name) is not None

    def _check_new(self, image_id: str, layout: ImageLayout) -> str | None:
        """A setting the new registry version refuses: why it cannot be kept (no start)."""
        version = self.engine.registry_version(image_id, layout)
        self.new_version = version  # the canary writes as this version's catalog allows
        errors = [f.text for f in version_findings(self.settings.registry_env, version) if f.error]
        return "; ".join(errors) if errors else None

    # -- the change and the gate ---------------------------------------------------------

    def _recreate(self, observed: Observed | None, layout: ImageLayout, holder_id: str) -> Observed:
        """Replace the registry by one of the settings on ``layout``'s image (by the tag)."""
        spec = derive_spec(self.settings, layout)
        if observed is not None:
            self.engine.retire(observed, self.settings.stop_timeout)
        created = self.engine.create_started(spec, holder_id)
        self.log.info(
            "update.registry_recreated", container_id=created.short_id, image_id=created.image_id
        )
        return created

    def _gate(self, reader: RegistryReader, baseline: Baseline) -> str | None:
        """Within MY_REG_STARTUP_GRACE: healthy, then every gate check. Why not, or None."""
        settings = self.settings
        deadline = gate_deadline(self.clock(), settings.startup_grace)
        why = self._wait_healthy(deadline)
        if why is not None:
            return why
        remaining = max(0.1, deadline - self.clock())
        version = self.new_version
        checks = gate_checks(
            reader, baseline, lambda timeout: canary_round(settings, version, timeout)
        )
        return first_failure(checks, min(settings.health_timeout, remaining))

    def _wait_healthy(self, deadline: float) -> str | None:
        """Poll ``/v2/`` until it answers healthy; why it did not by ``deadline``."""
        settings = self.settings
        probe = Probe(settings.probe_url, settings.tls_certificate)
        last = "no answer"
        try:
            while True:
                try:
                    status = probe(settings.health_timeout)
                    if is_healthy(status):
                        return None
                    last = f"HTTP {status}"
                except ProbeFailed as err:
                    last = str(err)
                observed = self.engine.inspect(settings.name)
                if observed is None or not observed.running:
                    code = "" if observed is None else f" (exit code {observed.exit_code})"
                    return f"the new registry stopped before it was healthy{code}"
                if self.clock() >= deadline:
                    return (
                        f"not healthy within MY_REG_STARTUP_GRACE={settings.startup_grace:g} s "
                        f"({last})"
                    )
                self.sleep(GATE_POLL_S)
        finally:
            probe.close()

    # -- rolling back ----------------------------------------------------------------------

    def _retag(self, previous: str, *, why: str) -> None:
        """Point the tag at the previous image again (a supervisor resolving it, now or
        after a restart, must not pick the refused one)."""
        if self.engine.image_id(self.ref) == previous:
            return
        self.engine.tag(previous, self.ref)
        self.log.warning("update.retagged", image_id=previous, why=why)

    def _roll_back(self, change: _Change, why: str) -> None:
        """The previous image again: tag first (the container is created by the tag), then
        the registry, waited for; ``update.rolled_back`` says why."""
        self._retag(change.previous, why="rolled back")
        self._recreate(self.engine.inspect(self.settings.name), change.old_layout, change.holder_id)
        self.log.error(
            "update.rolled_back",
            why=why,
            image_id=change.pulled,
            previous_image_id=change.previous,
        )
        grace = max(self.settings.startup_grace, ROLLBACK_ANSWER_S)
        answered = self._wait_healthy(gate_deadline(self.clock(), grace))
        if answered is not None:
            # The supervisor, once the lock is released, repairs it as usual.
            raise MaintenanceFailed(
                f"rolled back ({why}), but the previous image did not answer either: {answered}"
            )
