"""htpasswd files for the registry's basic auth: bcrypt entries, the only scheme it accepts.

``check_file`` validates a file the way the registry will read it (settings call it);
``set_password`` adds or updates one user (the `htpasswd` command calls it). Passwords
are never logged, printed or taken from argv.
"""

from __future__ import annotations

import fcntl
import os
import re
from pathlib import Path

# The registry's own parser (distribution, registry/auth/htpasswd): trim each line, skip
# blanks and lines starting with '#', split at the first ':'.
BCRYPT_HASH = re.compile(r"\$2[abxy]?\$\d\d\$[./A-Za-z0-9]{53}")
# Go's bcrypt.DefaultCost. The registry verifies the hash on every request a client makes
# (a push is dozens), so a cost much above this slows every push and pull.
BCRYPT_COST = 10
# bcrypt ignores (bcrypt>=5 refuses) anything past 72 bytes; refuse it here, loudly.
MAX_PASSWORD_BYTES = 72
NEW_FILE_MODE = 0o600


class HtpasswdError(ValueError):
    """A user name, password or file the registry could not use; the text says why."""


def parse(text: str) -> list[tuple[int, str, str]]:
    """(line number, user, hash) for each entry; HtpasswdError for a line without ':'."""
    entries = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        user, colon, hashed = line.partition(":")
        if not colon:
            raise HtpasswdError(f"line {number} is not user:hash")
        entries.append((number, user, hashed))
    return entries


def check_file(path: Path) -> int:
    """The number of users in a valid htpasswd file; HtpasswdError saying what is wrong."""
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as err:
        raise HtpasswdError(f"cannot read it: {err.strerror}") from None
    except UnicodeDecodeError:
        raise HtpasswdError("it is not UTF-8 text") from None
    entries = parse(text)
    if not entries:
        raise HtpasswdError("it has no user; add one with `registry-supervisor htpasswd USER`")
    for number, _user, hashed in entries:
        if not BCRYPT_HASH.fullmatch(hashed):
            raise HtpasswdError(
                f"line {number} is not bcrypt, the only scheme the registry accepts "
                "(use `registry-supervisor htpasswd USER` or `htpasswd -B`)"
            )
    return len(entries)


def check_user(user: str) -> None:
    if not user or user != user.strip() or user.startswith("#"):
        raise HtpasswdError("a user name may not be empty, start with '#' or have outer spaces")
    if ":" in user or any(not ch.isprintable() for ch in user):
        raise HtpasswdError("a user name may not contain ':' or control characters")


def check_password(password: str) -> None:
    if not password:
        raise HtpasswdError("the password is empty")
    if "\n" in password or "\r" in password:
        raise HtpasswdError("the password has a line break")
    if len(password.encode("utf-8")) > MAX_PASSWORD_BYTES:
        raise HtpasswdError(f"the password is longer than {MAX_PASSWORD_BYTES} bytes (bcrypt)")


def hash_password(password: str, cost: int = BCRYPT_COST) -> str:
    # Only the `htpasswd` command hashes: the supervisor itself never loads bcrypt.
    import bcrypt

    return bcrypt.hashpw(password.encode("utf-8"), bcrypt.gensalt(cost)).decode("ascii")


def set_password(path: Path, user: str, password: str, cost: int = BCRYPT_COST) -> bool:
    """Add ``user`` or replace its hash; True if the user existed. Creates the file 0600.

    The file is rewritten in place, never replaced by a rename: a bind mount of a single
    file follows its inode, and the registry re-reads the file when its mtime changes,
    so only an in-place write reaches a running registry. New content is written over
    the old before the file is cut to length: entries are fixed-length bcrypt hashes, so
    a concurrent reader sees old or new entries, never an empty file.
    """
    check_user(user)
    check_password(password)
    entry = f"{user}:{hash_password(password, cost)}"
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, NEW_FILE_MODE)
    except OSError as err:
        raise HtpasswdError(f"cannot open {path}: {err.strerror}") from None
    with os.fdopen(fd, "r+b") as file:
        fcntl.flock(file, fcntl.LOCK_EX)  # two helpers at once must not lose an entry
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
    return existed
