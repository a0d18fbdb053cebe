"""The registry's HTTP secret: made once, kept 0600 in MY_REG_STATE_DIR, given on every start.

Without ``http.secret`` the registry makes a random one per start, so an upload that a
restart interrupts cannot resume (its state token no longer verifies), and it logs "No
HTTP secret provided". A REGISTRY_HTTP_SECRET the user sets always wins.

The secret reaches the container through its environment, so the spec hash covers it:
it is read from the same file at every start, so the hash stays the same across
restarts. It is never logged (its name contains SECRET) and ``check`` shows it redacted.
"""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Callable
from pathlib import Path

import structlog

from supervisor.errors import for_os_error
from supervisor.settings import Settings
from supervisor.statedir import files

# Names, not secrets.
SECRET_VARIABLE = "REGISTRY_HTTP_SECRET"  # noqa: S105
SECRET_FILE = "http-secret"  # noqa: S105
SECRET_BYTES = 32  # 256 bits, URL-safe base64: 43 characters
SECRET_MODE = files.PRIVATE_FILE_MODE


def secret_path(settings: Settings) -> Path:
    """Where the HTTP secret is kept: in MY_REG_STATE_DIR, one for every container name."""
    return settings.state_dir / SECRET_FILE


def with_http_secret(settings: Settings) -> Settings:
    """``settings`` with REGISTRY_HTTP_SECRET for the container, made and stored if new."""
    if SECRET_VARIABLE in settings.registry_env:
        return settings
    value = load_or_create(secret_path(settings))
    registry_env = {**settings.registry_env, SECRET_VARIABLE: value}
    return settings.model_copy(update={"registry_env": registry_env})


def with_fleet_secret(settings: Settings, shared: Callable[[str], str]) -> Settings:
    """Fleet mode: ``settings`` with the fleet's one HTTP secret (an upload begun on one
    member continues on another only then). ``shared(candidate)`` returns the fleet's
    secret, making ``candidate`` it if the fleet had none; it is kept locally too (the
    next start needs no Redis). A REGISTRY_HTTP_SECRET the user sets wins, as always.
    ``shared`` raising leaves the local secret in use: the caller says so."""
    if SECRET_VARIABLE in settings.registry_env:
        return settings
    path = secret_path(settings)
    local = load_or_create(path)
    value = shared(local)
    if value != local:
        try:
            files.write_private(path, value.encode("ascii") + b"\n", durable=True)
        except OSError as err:
            raise for_os_error(
                err,
                config=f"MY_REG_STATE_DIR={str(path.parent)!r}: cannot keep {path.name} there "
                f"({err.strerror})",
                transient=f"MY_REG_STATE_DIR={str(path.parent)!r}: {path.name} cannot be kept "
                f"there now ({err.strerror})",
            ) from None
        structlog.get_logger().info("fleet.http_secret_adopted", path=str(path))
    registry_env = {**settings.registry_env, SECRET_VARIABLE: value}
    return settings.model_copy(update={"registry_env": registry_env})


def describe_secret(settings: Settings) -> str:
    """Where the container's HTTP secret comes from, for `check` (never the value)."""
    if SECRET_VARIABLE in settings.registry_env:
        return f"set by {SECRET_VARIABLE} (redacted)"
    path = secret_path(settings)
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return f"none yet; `run` makes one and keeps it in {path} (mode 0600)"
    except OSError as err:
        return f"{path}: {err.strerror}"
    return f"kept in {path} (mode {mode:04o})"


def load_or_create(path: Path) -> str:
    """The secret stored at ``path``; a new one is written (0600) when there is none.

    Both errors name MY_REG_STATE_DIR: ConfigError when the directory or file cannot be
    used (not a directory, no permission), TransientError when it cannot be used now (the
    file system is full, an I/O error).
    """
    try:
        _log_tightening(path.parent, files.make_private_dir(path.parent))
        existing = _read(path)
        if existing:
            return existing
        return _create(path)
    except OSError as err:
        setting = f"MY_REG_STATE_DIR={str(path.parent)!r}"
        detail = f"{err.strerror}: {err.filename or path}"
        raise for_os_error(
            err,
            config=f"{setting}: expected a directory where {path.name} can be kept ({detail})",
            transient=f"{setting}: {path.name} cannot be kept there now ({detail})",
        ) from None


def _log_tightening(directory: Path, tightened: files.Tightening | None) -> None:
    """Say that an existing state dir was looser than 0700 (what it holds is root's
    alone): made 0700, or left as it is when we may not change it."""
    if tightened is None:
        return
    log, mode = structlog.get_logger(), f"{tightened.old_mode:04o}"
    if tightened.error is not None:
        log.warning("state_dir.loose", path=str(directory), mode=mode, error=str(tightened.error))
    else:
        log.warning("state_dir.tightened", path=str(directory), old_mode=mode)


def _read(path: Path) -> str | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    with os.fdopen(fd, "rb") as file:
        if stat.S_IMODE(os.fstat(fd).st_mode) & 0o077:
            # Someone loosened it (or copied it in): a secret is for root's eyes only.
            os.fchmod(fd, SECRET_MODE)
        value = file.read().decode("ascii", "replace").strip()
    return value or None


def _create(path: Path) -> str:
    """Write a new secret with no window where another process sees a partial file."""
    value = secrets.token_urlsafe(SECRET_BYTES)
    data = value.encode("ascii") + b"\n"
    # Never replacing: two supervisors starting at once agree on one secret.
    if files.write_private(path, data, replace=False, durable=True):
        return value
    current = _read(path)
    if current:
        return current
    files.write_private(path, data, durable=True)  # an empty file (a crash mid-write long ago)
    return value


def with_stored_secret(settings: Settings) -> Settings:
    """``settings`` with the HTTP secret `run` would give the container, if one is stored
    already; never creates one (for `check`, which writes nothing)."""
    if SECRET_VARIABLE in settings.registry_env:
        return settings
    try:
        value = _read(secret_path(settings))
    except OSError:
        value = None
    if not value:
        return settings
    registry_env = {**settings.registry_env, SECRET_VARIABLE: value}
    return settings.model_copy(update={"registry_env": registry_env})
