"""What a local registry image is: its layout (from its inspect dict) and the version of
its registry (a one-shot `registry --version`, cached per image id in MY_REG_STATE_DIR:
an image id names its content, so the answer never goes stale)."""

from __future__ import annotations

from contextlib import suppress
from dataclasses import dataclass

from supervisor.engine.client import Engine
from supervisor.layout import ImageLayout, RegistryVersion, parse_version, version_label
from supervisor.settings import Settings
from supervisor.statedir import state_file

VERSIONS_FILE = "registry-versions.json"


@dataclass(frozen=True)
class ImageInfo:
    """A local registry image: its id, where its registry reads its config, its version."""

    id: str
    layout: ImageLayout
    version: RegistryVersion | None

    @property
    def label(self) -> str:
        """The registry version as `check` and `status` show it (``v3.0.0``, or the layout)."""
        return version_label(self.version, self.layout)


def describe(settings: Settings, engine: Engine, image_id: str) -> ImageInfo | None:
    """Layout and version of the local image ``image_id``; None if it is gone. ConfigError
    if its layout cannot be read."""
    layout = engine.image_layout(image_id)
    if layout is None:
        return None
    path = settings.state_dir / VERSIONS_FILE
    cached = state_file.read_json(path) or {}
    text = cached.get(image_id)
    version = parse_version(text) if isinstance(text, str) else None
    if version is None:
        version = engine.registry_version(image_id, layout)
        if version is not None:
            # One line per image id ever run here: a few bytes each.
            with suppress(OSError):  # `check` without root: asked again next time
                state_file.write_json(path, {**cached, image_id: version.text})
    return ImageInfo(id=image_id, layout=layout, version=version)
