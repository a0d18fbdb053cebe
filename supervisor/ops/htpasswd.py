"""The `htpasswd` command: add or update one user of the registry's basic auth (bcrypt).

``set_password`` adds or updates one user; reading and validating a file is
supervisor/htpasswd_file.py's (settings and `check` use it, `run` never imports this
module). Passwords are never logged, printed or taken from argv. The file is never
written through a symlink, and one that is readable by others is made 0600.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import sys
from dataclasses import dataclass
from pathlib import Path

from supervisor.errors import ConfigError
from supervisor.htpasswd_file import HtpasswdError, parse
from supervisor.settings import raw_setting

# HtpasswdError is re-exported: the command's callers catch it from here.
__all__ = [
    "BCRYPT_COST",
    "MAX_PASSWORD_BYTES",
    "NEW_FILE_MODE",
    "HtpasswdError",
    "SymlinkRefused",
    "Written",
    "check_not_symlink",
    "check_password",
    "check_user",
    "configured_file",
    "hash_password",
    "read_password",
    "set_password",
]

# Go's bcrypt.DefaultCost. The registry verifies the hash on every request a client makes
# (a push is dozens), so a cost much above this slows every push and pull.
BCRYPT_COST = 10
# bcrypt ignores (bcrypt>=5 refuses) anything past 72 bytes; refuse it here, loudly.
MAX_PASSWORD_BYTES = 72
NEW_FILE_MODE = 0o600


class SymlinkRefused(HtpasswdError):
    """The file given is a symbolic link: a root helper writing through one could be made
    to overwrite any file on the host."""

    def __init__(self) -> None:
        super().__init__("expected the file itself, not a symbolic link (never written through)")


@dataclass(frozen=True)
class Written:
    """What ``set_password`` did."""

    existed: bool  # the user was there already: its hash was replaced
    created: bool  # there was no file: it was created 0600
    tightened_from: int | None = None  # the mode of a looser file, now 0600


def check_user(user: str) -> None:
    """HtpasswdError unless the registry's parser would read ``user`` back as written."""
    if not user or user != user.strip() or user.startswith("#"):
        raise HtpasswdError("a user name may not be empty, start with '#' or have outer spaces")
    if ":" in user or any(not ch.isprintable() for ch in user):
        raise HtpasswdError("a user name may not contain ':' or control characters")


def check_password(password: str) -> None:
    """HtpasswdError for a password bcrypt would truncate or a file line could not hold."""
    if not password:
        raise HtpasswdError("the password is empty")
    if "\n" in password or "\r" in password:
        raise HtpasswdError("the password has a line break")
    if len(password.encode("utf-8")) > MAX_PASSWORD_BYTES:
        raise HtpasswdError(f"the password is longer than {MAX_PASSWORD_BYTES} bytes (bcrypt)")


def hash_password(password: str, cost: int = BCRYPT_COST) -> str:
    """The bcrypt hash of ``password`` at ``cost``, as an htpasswd entry holds it."""
    # Only the `htpasswd` command hashes: the supervisor itself never loads bcrypt.
    import bcrypt

    return bcrypt.hashpw(password.encode("utf-8"), bcrypt.gensalt(cost)).decode("ascii")


def check_not_symlink(path: Path) -> None:
    """SymlinkRefused when ``path`` is a symbolic link; to ask before prompting for a
    password (set_password refuses one in any case, when it opens the file)."""
    if _is_symlink(path):
        raise SymlinkRefused


def _is_symlink(path: Path) -> bool:
    try:
        return path.is_symlink()
    except (OSError, ValueError):  # EACCES on a parent, a NUL byte: opening it will say
        return False


def set_password(path: Path, user: str, password: str, cost: int = BCRYPT_COST) -> Written:
    """Add ``user`` or replace its hash. Creates the file 0600, tightens a looser one to 0600.

    The file is rewritten in place, never replaced by a rename: a bind mount of a single
    file follows its inode, and the registry re-reads the file when its mtime changes,
    so only an in-place write reaches a running registry. New content is written over
    the old before the file is cut to length: entries are fixed-length bcrypt hashes, so
    a concurrent reader sees old or new entries, never an empty file. A symbolic link
    is refused (SymlinkRefused), never followed: O_NOFOLLOW.
    """
    check_user(user)
    check_password(password)
    entry = f"{user}:{hash_password(password, cost)}"
    fd, created = _open_no_follow(path)
    try:
        with os.fdopen(fd, "r+b") as file:
            fcntl.flock(file, fcntl.LOCK_EX)  # two helpers at once must not lose an entry
            # Before the new hash is written, so no one else can read it.
            mode = stat.S_IMODE(os.fstat(fd).st_mode)
            tightened_from = None
            if mode & ~NEW_FILE_MODE:
                os.fchmod(fd, NEW_FILE_MODE)
                tightened_from = mode
            try:
                text = file.read().decode("utf-8")
            except UnicodeDecodeError:
                raise HtpasswdError(f"{path} is not UTF-8 text") from None
            lines = text.splitlines()
            existed = False
            for number, line_user, _hashed in parse(text):
                if line_user == user:
                    lines[number - 1] = entry
                    existed = True
            if not existed:
                lines.append(entry)
            body = ("\n".join(lines) + "\n").encode("utf-8")
            file.seek(0)
            file.write(body)
            file.truncate(len(body))
            file.flush()
            os.fsync(file.fileno())
    except OSError as err:  # EPERM from fchmod (not the owner), ENOSPC, EIO
        raise HtpasswdError(f"cannot write {path}: {err.strerror}") from None
    return Written(existed=existed, created=created, tightened_from=tightened_from)


def _open_no_follow(path: Path) -> tuple[int, bool]:
    """(fd open for reading and writing, whether the file was created); never via a symlink.

    O_EXCL first, so "created" is what happened, not a guess made before the open.
    """
    flags = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        try:
            return os.open(path, flags | os.O_CREAT | os.O_EXCL, NEW_FILE_MODE), True
        except FileExistsError:  # the usual case; a symlink, too, exists
            return os.open(path, flags), False
    except OSError as err:
        if err.errno == errno.ELOOP and _is_symlink(path):
            raise SymlinkRefused from None
        raise HtpasswdError(f"cannot open {path}: {err.strerror}") from None


def configured_file(env_file: Path | None) -> Path:
    """MY_REG_AUTH_HTPASSWD as given, read while the settings as a whole may still be
    invalid (they are, until the file has a user); ConfigError unless an absolute path."""
    value = raw_setting("MY_REG_AUTH_HTPASSWD", env_file)
    if value is None or not Path(value).is_absolute():
        raise ConfigError(
            [f"MY_REG_AUTH_HTPASSWD={value!r}: expected an absolute path, or give --file PATH"]
        )
    return Path(value)


def read_password(user: str) -> str:
    """From a prompt on a terminal (asked twice), else the first line of stdin; never argv.
    HtpasswdError when the prompt gets none or two different ones; KeyboardInterrupt
    (Ctrl-C at the prompt) propagates."""
    import getpass

    if sys.stdin is not None and sys.stdin.isatty():
        try:
            password = getpass.getpass(f"password for {user}: ")
            again = getpass.getpass("again: ")
        except EOFError:  # Ctrl-D at the prompt
            raise HtpasswdError("no password given") from None
        if again != password:
            raise HtpasswdError("the two passwords differ")
        return password
    line = sys.stdin.readline() if sys.stdin is not None else ""
    return line.removesuffix("\n").removesuffix("\r")
