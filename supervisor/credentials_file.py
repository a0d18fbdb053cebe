"""The canary's credentials file (MY_REG_CANARY_CREDENTIALS): one ``user:password`` line.

It holds a password in clear, so it must be root's and private: a regular file (not a
symlink), owned by root, readable by no one else (mode 0600 or stricter).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

# The longest file we read: a user and a password, with room to spare.
MAX_BYTES = 4096


class CredentialsError(ValueError):
    """The file cannot serve as the canary's credentials (the message says why)."""


@dataclass(frozen=True)
class Credentials:
    """The canary's user and password."""

    user: str
    password: str

    def __repr__(self) -> str:
        return f"Credentials(user={self.user!r}, password=<redacted>)"


def read(path: Path) -> Credentials:
    """The user and password in ``path``; CredentialsError if the file is not root's and
    private, or is not one ``user:password`` line."""
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):  # a symlink, a FIFO: never opened
            raise CredentialsError("not a regular file (a symlink is refused)")
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as err:
        raise CredentialsError(err.strerror or str(err)) from None
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(file.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise CredentialsError("not a regular file")
        if info.st_uid != 0:
            raise CredentialsError(f"owned by uid {info.st_uid}, not root")
        if info.st_mode & 0o077:
            raise CredentialsError(
                f"mode {stat.S_IMODE(info.st_mode):04o}; it must be 0600 or stricter"
            )
        raw = file.read(MAX_BYTES + 1)
    if len(raw) > MAX_BYTES:
        raise CredentialsError(f"longer than {MAX_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise CredentialsError("not UTF-8") from None
    lines = text.splitlines()
    if len(lines) != 1:
        raise CredentialsError("expected exactly one user:password line")
    user, sep, password = lines[0].partition(":")
    if not sep or not user or not password:
        raise CredentialsError("expected one user:password line")
    return Credentials(user, password)
