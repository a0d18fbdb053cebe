"""Reading an htpasswd file as the registry's basic auth will: bcrypt entries only (pure
file reading, no bcrypt import).

Settings validate MY_REG_AUTH_HTPASSWD with ``check_file`` and `check` counts its users;
writing users is the `htpasswd` command's (supervisor/ops/htpasswd.py), which `run`
never imports.
"""

from __future__ import annotations

import re
from pathlib import Path

# The registry's own parser (distribution, registry/auth/htpasswd): trim each line, skip
# blanks and lines starting with '#', split at the first ':'.
BCRYPT_HASH = re.compile(r"\$2[abxy]?\$\d\d\$[./A-Za-z0-9]{53}")


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
