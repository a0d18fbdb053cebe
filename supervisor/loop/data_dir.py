"""MY_REG_DIR on the host: created when missing, never deleted or moved by us."""

from __future__ import annotations

import os

from supervisor.errors import for_os_error
from supervisor.settings import Settings


def data_dirs(settings: Settings) -> tuple[str, str]:
    """MY_REG_DIR as given and with symlinks resolved: how another container may mount it."""
    return str(settings.dir), os.path.realpath(settings.dir)


def make_data_dir(settings: Settings) -> None:
    """MY_REG_DIR, created if missing; ConfigError or, for what may clear by itself (a full
    disk), TransientError naming it."""
    try:
        settings.dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        setting = f"MY_REG_DIR={str(settings.dir)!r}"
        raise for_os_error(
            err,
            config=f"{setting}: expected a directory we can create ({err.strerror})",
            transient=f"{setting}: cannot be created now ({err.strerror})",
        ) from None
