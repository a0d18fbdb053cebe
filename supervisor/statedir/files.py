"""Files in the state dir (MY_REG_STATE_DIR): a directory only root may enter, and whole
files put in place atomically, readable by root alone.

Every writer of the state dir goes through here: the state file and the gc record
(state_file.py), the HTTP secret (http_secret.py), the maintenance lock (maintenance.py)
and the registry version cache (engine/image_info.py through state_file.write_json).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

# The state dir holds the HTTP secret: only its owner (root) may list or enter it.
PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600


@dataclass(frozen=True)
class Tightening:
    """An existing directory was looser than 0700: its mode then, and the error if it
    could not be changed (it then stays as it was)."""

    old_mode: int
    error: OSError | None = None


def make_private_dir(path: Path) -> Tightening | None:
    """Make ``path`` (and its parents) a directory only its owner can enter: 0700.

    mkdir's mode applies only to a directory it creates; one that exists with more bits
    (made by hand, or by an older version) is tightened to 0700, and what happened is
    returned (None: nothing to tighten). The caller decides whether a failed tightening
    matters. OSError from mkdir or stat propagates.
    """
    path.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    mode = stat.S_IMODE(path.stat().st_mode)
    if not mode & ~PRIVATE_DIR_MODE:
        return None
    try:
        path.chmod(PRIVATE_DIR_MODE)
    except OSError as err:
        return Tightening(mode, err)
    return Tightening(mode)


def write_private(path: Path, data: bytes, *, replace: bool = True, durable: bool = False) -> bool:
    """Put ``data`` at ``path`` whole, mode 0600: a reader sees the old file or the new one,
    never part of one. True when written.

    It is written to a new temporary file beside ``path``, then renamed over ``path``
    (``replace``), or else linked to it only if nothing is there: False, and ``path``
    untouched, when something is (two writers at once agree on the first one's file).
    ``durable``: flushed to the disk before it appears. OSError propagates.
    """
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    # O_EXCL: the temporary file is always new, never one found there. With O_CREAT it
    # also refuses a symlink (even a dangling one), so nothing planted at this path is
    # written through; O_NOFOLLOW says so once more.
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(temporary, flags, PRIVATE_FILE_MODE)
    except FileExistsError:
        # Left by a crash mid-write (a pid is reused, after a reboot most of all), or
        # planted: unlink removes the name itself, never a symlink's target. Once only.
        temporary.unlink(missing_ok=True)
        fd = os.open(temporary, flags, PRIVATE_FILE_MODE)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            if durable:
                file.flush()
                os.fsync(file.fileno())
        if replace:
            os.replace(temporary, path)
            return True
        try:
            # link() never replaces: the first writer's file stays.
            os.link(temporary, path)
        except FileExistsError:
            return False
        return True
    finally:
        temporary.unlink(missing_ok=True)
