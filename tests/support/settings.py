"""Settings as the installed package loads them, from an env file a test writes."""

from __future__ import annotations

from pathlib import Path

from supervisor.layout import V2_LAYOUT
from supervisor.settings import Settings, load_settings
from supervisor.spec import derive_spec


def settings_from(tmp_path: Path, text: str = "") -> Settings:
    """The settings loaded from an env file holding ``text``, written in ``tmp_path``."""
    env_file = tmp_path / "test.env"
    env_file.write_text(text)
    return load_settings(env_file)


def spec_hash(tmp_path: Path, text: str = "") -> str:
    """The registry container's spec hash (v2 layout) for the settings in ``text``."""
    return derive_spec(settings_from(tmp_path, text), V2_LAYOUT).spec_hash
