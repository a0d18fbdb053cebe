"""The registry image: present (pulled as MY_REG_PULL says), its layout and version known.

The keeper tells the loop when the image is ready or missing; the loop decides what the
container does about it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from supervisor.adapters.metrics import Metrics
from supervisor.backoff import BackoffPolicy
from supervisor.engine import image_info
from supervisor.engine.client import API_TIMEOUT_S, VERSION_TIMEOUT_S
from supervisor.errors import ConfigError, ImageUnavailable
from supervisor.layout import ImageLayout, version_findings
from supervisor.loop.engine_link import EngineLink
from supervisor.loop.watchdog import WatchdogFeeder
from supervisor.settings import PullPolicy, Settings

IMAGE_RETRY = BackoffPolicy(base_s=1.0, factor=2.0, cap_s=60.0)


@dataclass(frozen=True)
class ImageReady:
    """The configured image is present and described; ``image_id`` its local id."""

    image_id: str


@dataclass(frozen=True)
class ImageMissing:
    """No usable image; looked for again after ``delay_s``."""

    delay_s: float


class ImageKeeper:
    """The image the registry runs, and the one its next container will run."""

    def __init__(
        self,
        link: EngineLink,
        feeder: WatchdogFeeder,
        metrics: Metrics,
        log: Any,
        *,
        on_pulling: Callable[[], None],
        on_pull_progress: Callable[[], None],
    ) -> None:
        self._link = link
        self._feeder = feeder
        self._metrics = metrics
        self.log = log
        self._on_pulling = on_pulling  # the loop shows PULLING and feeds the watchdog
        self._on_pull_progress = on_pull_progress
        # The image's layout and version, once the engine told us; until then the spec
        # only names things (see derive_spec).
        self.info: image_info.ImageInfo | None = None
        self.image_id: str | None = None
        self.attempt = 0
        self.retry_at = 0.0

    @property
    def layout(self) -> ImageLayout | None:
        """The current image's layout, once known."""
        return self.info.layout if self.info is not None else None

    def forget(self) -> None:
        """Look at the image anew (a new reference, MY_REG_PULL=always, a gone image)."""
        self.image_id = self.info = None

    def ensure(self, now: float, settings: Settings, ref: str) -> ImageReady | ImageMissing | None:
        """Make ``ref`` present and described, if a try is due (None: not yet).

        ConfigError when its layout cannot be read or a setting would do nothing on its
        registry version.
        """
        if now < self.retry_at:
            return None
        try:
            present = self.local_image(ref, settings.pull, announce=True)
        except ImageUnavailable as err:
            return self._missing(now, str(err))
        info = self.inspect(settings, present)
        if info is None:
            return self._missing(now, f"{ref} went away while it was inspected")
        self.use(info)
        self.image_id = present
        self.attempt = 0
        return ImageReady(present)

    def local_image(self, ref: str, policy: PullPolicy, *, announce: bool) -> str:
        """The local id of ``ref``, pulled first as ``policy`` says (a failed pull falls back
        to a local copy). ImageUnavailable naming why there is none: the engine refuses the
        reference, the pull failed, or it is absent and MY_REG_PULL=never. ``announce``: the
        phase says PULLING while it pulls (not for a reload's check)."""
        present = self._link.docker.image_id(ref)
        if policy is PullPolicy.ALWAYS or (policy is PullPolicy.MISSING and present is None):
            if announce:
                self._on_pulling()
            self.log.info("image.pulling", policy=policy.value, image=ref)
            try:
                self._link.docker.pull(ref, progress=self._on_pull_progress)
                present = self._link.docker.image_id(ref)
                self.log.info("image.pulled", image_id=present, image=ref)
            except ImageUnavailable as err:
                if present is None:
                    raise
                self.log.warning("image.pull_failed_using_local", error=str(err))
        if present is None:
            raise ImageUnavailable(f"{ref} is not present locally and MY_REG_PULL=never")
        return present

    def inspect(self, settings: Settings, image_id: str) -> image_info.ImageInfo | None:
        """The image's layout and registry version (cached per image id), with ``settings``
        checked against that version; None if the image is gone. ConfigError when its
        layout cannot be read or a setting would do nothing on this version."""
        if self.info is not None and self.info.id == image_id:
            info: image_info.ImageInfo | None = self.info
        else:
            docker = self._link.docker
            info = self._feeder.blocking(
                "registry-version",
                API_TIMEOUT_S + VERSION_TIMEOUT_S,
                lambda: image_info.describe(settings, docker, image_id),
            )
        if info is not None:
            self.check_version(settings, info)
        return info

    def use(self, info: image_info.ImageInfo | None) -> None:
        """Make ``info`` the current image (logged and shown in metrics when it changes)."""
        if info is not None and info != self.info:
            self.log.info(
                "image.inspected",
                image_id=info.id,
                registry_version=info.label,
                config=info.layout.config_path,
                binary=info.layout.binary,
            )
            self._metrics.info.clear()  # one version at a time: the image's
            self._metrics.info.labels(version=info.label).set(1)
        self.info = info

    def check_version(self, settings: Settings, info: image_info.ImageInfo) -> None:
        """ConfigError for a setting this registry version refuses; warnings for the rest."""
        findings = version_findings(settings.registry_env, info.version)
        errors = [finding.text for finding in findings if finding.error]
        if errors:
            raise ConfigError(errors)
        for finding in findings:
            self.log.warning("settings.version_mismatch", detail=finding.text, version=info.label)

    def resolve_again(self, settings: Settings, ref: str) -> bool:
        """`registry-supervisor update` may have moved the tag (to the new image, or back
        after a rollback): take the image it names now, looked up locally, never pulled,
        so that the container `update` left is adopted rather than "repaired" back to the
        image id resolved before. Whether the current image changed."""
        try:
            present = self._link.docker.image_id(ref)
        except ImageUnavailable:
            present = None
        if present == self.image_id:
            return False
        try:
            info = None if present is None else self.inspect(settings, present)
        except ConfigError as err:
            self.log.error("image.unusable", image_id=present, problems=err.problems)
            info = None
        if present is None or info is None:
            self.forget()  # looked for again, per MY_REG_PULL (the reconciler's ensure)
            return True
        self.use(info)
        self.image_id = present
        return True

    def _missing(self, now: float, detail: str) -> ImageMissing:
        self.attempt += 1
        delay = IMAGE_RETRY.delay(self.attempt + 1)
        self.log.error("image.unavailable", error=detail, attempt=self.attempt, retry_in_s=delay)
        self.retry_at = now + delay
        return ImageMissing(delay)
