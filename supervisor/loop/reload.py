"""SIGHUP: re-read the settings and check them against the engine before anything changes.

A reload never takes down a working registry: settings that do not validate, an image that
is not there, or a container the engine refuses to create are rejected before anything is
touched (``settings.reload_rejected``); a new container that then fails before it was once
healthy is rolled back to the settings that worked (the loop asks ``roll_back_for``).
A reload that brings a new image id (a new MY_REG_TAG, MY_REG_PULL=always) is gated like
`registry-supervisor update`: before the change one manifest the registry serves is
remembered, and once the new container is healthy the gate's checks
(supervisor/adapters/manifests.py ``gate_checks``) must pass, or it is rolled back too
(``gate_failure``). The reloader plans; the loop applies the plan.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from supervisor.adapters.manifests import Baseline, RegistryReader, first_failure, gate_checks
from supervisor.adapters.registry_api import canary_round
from supervisor.engine.image_info import ImageInfo
from supervisor.errors import (
    ConfigError,
    ContainerActionFailed,
    EngineRefused,
    EngineUnavailable,
    ImageUnavailable,
    TransientError,
)
from supervisor.loop.container_actions import Desired
from supervisor.loop.data_dir import make_data_dir
from supervisor.loop.engine_link import EngineLink
from supervisor.loop.image import ImageKeeper
from supervisor.loop.watchdog import WatchdogFeeder
from supervisor.reconcile import Reason
from supervisor.settings import Settings, load_settings
from supervisor.spec import ContainerSpec, derive_spec, holder_spec
from supervisor.statedir.http_secret import with_http_secret

# A reloaded container that goes down for one of these before it was once healthy is
# rolled back to the previous settings.
ROLLBACK_REASONS = frozenset(
    {
        Reason.START_FAILED,
        Reason.CRASHED,
        Reason.OOM,
        Reason.UNHEALTHY,
        Reason.UNSTARTABLE,
    }
)

# Settings read once, at start, which a reload cannot apply: field -> its variable. The
# metrics endpoint listens where it started (and a supervisor started without one has no
# exporter loaded at all). A reload keeps the value in force and says so; a restart of
# `run` applies it. Every other setting is applied by a reload (the log format and level,
# MY_REG_STATE_DIR, MY_REG_FORWARD_LOGS included); the env file's path is `run`'s argument.
READ_AT_START = {"metrics_addr": "MY_REG_METRICS_ADDR"}


def needs_restart(old: Settings, new: Settings) -> list[tuple[str, str, object, object]]:
    """The read-at-start settings that differ: (field, variable, old, new) each (pure)."""
    return [
        (field, variable, getattr(old, field), getattr(new, field))
        for field, variable in READ_AT_START.items()
        if getattr(old, field) != getattr(new, field)
    ]


@dataclass(frozen=True)
class ReloadPlan:
    """Checked new settings: their spec (with the image's layout), and the image found by
    the check (``image_id`` None: the current one, or not checked while the engine is down)."""

    settings: Settings
    spec: ContainerSpec
    image_id: str | None
    info: ImageInfo | None


@dataclass(frozen=True)
class Deferred:
    """The reload must wait (``until``: engine-down or maintenance); it runs again later."""

    until: str
    engine_error: str | None = None  # the engine failed mid-check


@dataclass(frozen=True)
class RollBack:
    """Go back to these settings (and image): the reloaded ones did not work. ``info``: the
    image's description, kept so that going back needs no new look (nor a pull)."""

    settings: Settings
    image_id: str | None
    info: ImageInfo | None = None


@dataclass(frozen=True)
class Kept:
    """What worked before a reload: its settings, image id and image description."""

    settings: Settings
    image_id: str | None
    info: ImageInfo | None = None


def _reader(settings: Settings) -> RegistryReader:
    """The distribution-API reader of the registry these settings publish."""
    return RegistryReader.for_probe_url(
        settings.probe_url, settings.tls_certificate, auth_on=settings.auth_htpasswd is not None
    )


class Reloader:
    """Plans reloads, and keeps the settings to go back to until a reload is confirmed."""

    def __init__(
        self,
        env_file: Path | None,
        link: EngineLink,
        images: ImageKeeper,
        log: Any,
        feeder: WatchdogFeeder,
    ) -> None:
        self._env_file = env_file
        self._link = link
        self._images = images
        self._feeder = feeder
        self.log = log
        # After a reload that changed the spec: the settings (and image id) to go back to
        # if the new container fails before it was once healthy.
        self.rollback_to: Kept | None = None
        # A reload that forgot the image (MY_REG_PULL=always, a new reference): what ran
        # before, until the image is looked at again (``take_image_before``).
        self.image_before: Kept | None = None
        # A reload that brought a new image id: what the old one served, checked once the
        # new container is healthy (None: no gate pending).
        self.baseline: Baseline | None = None
        # A SIGHUP that came while it could not be checked (engine down, `gc` running).
        self.pending = False

    def plan(self, desired: Desired, *, in_maintenance: bool) -> ReloadPlan | Deferred | None:
        """Read and check the settings; None when they are rejected (logged)."""
        try:
            new = with_http_secret(load_settings(self._env_file))
            new_spec = derive_spec(new, self._images.layout)
            deferred = self._deferral(in_maintenance)
            if deferred is not None:
                return deferred
            new = self._keep_read_at_start(desired.settings, new)
            if new.dir != desired.settings.dir:
                make_data_dir(new)  # before the check: the Mounts API wants a source
            image_id = self._preflight(desired, new, new_spec, in_maintenance)
            info = self._reload_image(new, image_id)
            new_spec = derive_spec(new, info.layout if info is not None else None)
        except (ConfigError, TransientError) as err:
            self.log.error("settings.reload_rejected", problems=err.problems)
            return None
        except EngineUnavailable as err:
            # Lost mid-check: nothing changed; the loop drops the link, then defers.
            return Deferred("engine-down", engine_error=str(err))
        return ReloadPlan(new, new_spec, image_id, info)

    def _keep_read_at_start(self, old: Settings, new: Settings) -> Settings:
        """``new`` with the values in force of the settings only a restart applies, each
        change logged as ``settings.reload_needs_restart``."""
        kept = {}
        for field, variable, before, after in needs_restart(old, new):
            self.log.warning(
                "settings.reload_needs_restart",
                setting=variable,
                old=before,
                new=after,
                hint="restart `registry-supervisor run` (systemctl restart) to apply it",
            )
            kept[field] = before
        return new.model_copy(update=kept) if kept else new

    def _deferral(self, in_maintenance: bool) -> Deferred | None:
        """Whether the reload must wait: with the engine away it cannot be checked (nor
        rolled back), and during `gc` the registry is not ours to change. It runs again from
        the start (re-reading the settings) once the engine is back and `gc` has ended."""
        if in_maintenance:
            return self.defer("maintenance")
        if not self._link.connected:
            return self.defer("engine-down")
        return None

    def defer(self, until: str) -> Deferred:
        """Remember the reload for later, and say so."""
        self.pending = True
        self.log.warning("supervisor.reload_deferred", until=until)
        return Deferred(until)

    def take_pending(self) -> bool:
        """Whether a deferred reload is waiting (it is then no longer pending)."""
        pending, self.pending = self.pending, False
        return pending

    def _reload_image(self, new: Settings, image_id: str | None) -> ImageInfo | None:
        """The image the reloaded settings run, checked against them: the new one the
        preflight found, or the current one. ConfigError."""
        if image_id is None:
            if self._images.info is not None:
                self._images.check_version(new, self._images.info)
            return self._images.info
        info = self._images.inspect(new, image_id)
        if info is None:
            raise ConfigError([f"image {new.image_ref}: removed while it was checked"])
        return info

    def _preflight(
        self, desired: Desired, new: Settings, new_spec: ContainerSpec, in_maintenance: bool
    ) -> str | None:
        """Make sure the engine will take the new spec before the old container goes.

        Returns the new image's id when it was looked up (None: nothing to check now).
        Raises ConfigError naming why the new settings cannot be applied.
        """
        if not self._link.connected or in_maintenance:
            return None
        new_holder = holder_spec(new_spec)
        if new_spec.spec_hash == desired.spec.spec_hash and new_holder == desired.holder:
            return None
        where = f"MY_REG_IMAGE={new.image} MY_REG_TAG={new.tag}"
        try:
            try:
                present = self._images.local_image(new_spec.image, new.pull, announce=False)
            except ImageUnavailable as err:
                raise ConfigError(
                    [f"{where}: expected an image present or pullable ({err})"]
                ) from None
            holder = self._link.docker.inspect(desired.holder.name)
            same_holder = new_holder.spec_hash == desired.holder.spec_hash and holder is not None
            self._link.docker.check_creatable(
                new_spec, new_holder, holder.id if same_holder and holder else None
            )
        except (ContainerActionFailed, ImageUnavailable) as err:
            raise ConfigError([f"the engine refuses the new container: {err}"]) from None
        except EngineRefused as err:
            raise ConfigError([f"the engine could not check the new container: {err}"]) from None
        return present

    def keep_for_rollback(
        self, settings: Settings, image_id: str | None, info: ImageInfo | None = None
    ) -> None:
        """The settings that worked, kept until the reloaded container has been healthy.

        A second reload before that keeps the first settings known to work."""
        if self.rollback_to is None:
            self.rollback_to = Kept(settings, image_id, info)

    def remember_image_before(
        self, settings: Settings, image_id: str | None, info: ImageInfo | None
    ) -> None:
        """The image is looked at anew after this reload: what ran before, in case the look
        finds another image id (``take_image_before``)."""
        if self.image_before is None:
            self.image_before = Kept(settings, image_id, info)

    def take_image_before(self) -> Kept | None:
        """What ran before a reload that forgot the image (then no longer remembered)."""
        before, self.image_before = self.image_before, None
        return before

    def gate_new_image(self, serving: Settings) -> None:
        """A new image id is about to replace the registry ``serving`` publishes: remember
        one manifest it serves, for the gate (``gate_failure``). A second reload before the
        gate ran keeps the first baseline (the image that worked)."""
        if self.baseline is not None:
            return
        reader = _reader(serving)
        timeout = serving.health_timeout
        try:
            # Catalog, tags and one HEAD, each bounded by MY_REG_HEALTH_TIMEOUT (connect
            # and read): off the loop when that could outlast the watchdog.
            baseline = self._feeder.blocking(
                "image-gate", 6 * timeout, lambda: reader.remember(timeout)
            )
        finally:
            reader.close()
        if baseline.manifest is None:
            self.log.info("update.manifest_check_skipped", note=baseline.note)
        self.baseline = baseline

    @property
    def gate_pending(self) -> bool:
        """Whether a new image's gate checks wait for its container to be healthy."""
        return self.baseline is not None and self.rollback_to is not None

    def gate_failure(self, settings: Settings) -> str | None:
        """Run the gate's checks once against the healthy new container: why it fails, or
        None (then nothing is pending any more; ``confirm`` keeps the reload)."""
        baseline, self.baseline = self.baseline, None
        if baseline is None:
            return None
        reader = _reader(settings)
        timeout = settings.health_timeout
        info = self._images.info
        version = info.version if info is not None else None
        checks = gate_checks(reader, baseline, lambda bound: canary_round(settings, version, bound))
        try:
            return self._feeder.blocking(
                "image-gate",
                2 * timeout * max(1, len(checks)),
                lambda: first_failure(checks, timeout),
            )
        finally:
            reader.close()

    def roll_back_for(self, reason: Reason, failed_hash: str) -> RollBack | None:
        """Whether going down for ``reason`` rolls the reload back (it is then no longer
        pending confirmation)."""
        if reason not in ROLLBACK_REASONS:
            return None
        return self.roll_back_now(reason, failed_hash)

    def roll_back_now(
        self, reason: Reason, failed_hash: str, *, failed_check: str | None = None
    ) -> RollBack | None:
        """The settings to go back to, whatever the reason (a reload onto a taken port, a
        new image that failed the gate's ``failed_check``)."""
        if self.rollback_to is None:
            return None
        kept, self.rollback_to = self.rollback_to, None
        self.baseline = None
        what = failed_check or reason.value
        self.log.error(
            "settings.reload_rejected",
            problems=[f"the new container did not work ({what}); back to the previous settings"],
            spec_hash=failed_hash,
            **({"failed_check": failed_check} if failed_check else {}),
        )
        return RollBack(kept.settings, kept.image_id, kept.info)

    def confirm(self, spec_hash: str) -> None:
        """The reloaded container served once: its settings stay."""
        self.baseline = None
        if self.rollback_to is not None:
            self.rollback_to = None
            self.log.info("settings.reload_confirmed", spec_hash=spec_hash)
