"""Settings that name host files and directories: what the file system says about them.

These checks read the disk (stat, access, resolve) and nothing else; each answers or
raises ValueError with the "expected ..." text of a one-line error.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from supervisor import permissions

if TYPE_CHECKING:  # the model imports these checks: no import at run time
    from supervisor.settings.model import Settings


def is_readable_file(path: Path) -> bool:
    """Whether ``path`` is a regular file this process may read; False where asking raises."""
    try:
        return path.is_file() and os.access(path, os.R_OK)
    except (OSError, ValueError):  # ENAMETOOLONG, EACCES on a parent, a NUL byte
        return False


def require_readable_file(path: Path, expected: str) -> None:
    """ValueError(``expected``) unless ``path`` is a regular file this process may read."""
    if not is_readable_file(path):
        raise ValueError(expected)


# Docker's own storage: a data dir in it can be removed by `docker system prune` and the like.
DOCKER_ROOT = Path("/var/lib/docker")
# Directories that Debian's docker-registry package owns (its own registry's storage and
# state): shared with a package, they can be changed or purged by apt.
PACKAGE_MANAGED_DIRS = (Path("/var/lib/registry"), Path("/var/lib/docker-registry"))


def resolved(path: Path) -> Path:
    """``path`` with symlinks resolved as far as they exist; unchanged if that fails."""
    try:
        return path.resolve(strict=False)
    except (OSError, RuntimeError, ValueError):  # a symlink loop, ENAMETOOLONG, a NUL byte
        return path


def is_within(path: Path, parent: Path) -> bool:
    """Whether ``path`` is ``parent`` or below it, compared as written (pure)."""
    return path == parent or parent in path.parents


def data_dir_problem(value: Path) -> str | None:
    """What makes ``value`` unfit to hold registry data, or None (reads the file system)."""
    real = resolved(value)
    if real == Path("/"):
        return "a directory of its own for registry data, not /"
    if is_within(real, DOCKER_ROOT) or is_within(value, DOCKER_ROOT):
        return f"a directory outside Docker's own {DOCKER_ROOT}"
    try:
        exists, is_dir = value.exists(), value.is_dir()
    except (OSError, ValueError):
        return None  # reported by the checks that use it (ENAMETOOLONG, EACCES)
    if exists and not is_dir:
        return "a directory (it is a file)"
    return None


def is_dir(path: Path) -> bool:
    """Path.is_dir() that answers False where it would raise (ENAMETOOLONG, EACCES)."""
    try:
        return path.is_dir()
    except (OSError, ValueError):
        return False


def package_managed_dir(settings: Settings) -> Path | None:
    """The package-owned directory MY_REG_DIR is in, if it is in one (a warning, not an error)."""
    real = resolved(settings.dir)
    return next((d for d in PACKAGE_MANAGED_DIRS if is_within(real, d)), None)


def unusable_in_container(settings: Settings) -> list[str]:
    """Host files the registry, root without capabilities, could not use (MY_REG_CAP_DROP_ALL)."""
    if not settings.cap_drop_all:
        return []
    read, write, search = permissions.READ, permissions.WRITE, permissions.SEARCH
    wanted: list[tuple[str, str, Path | None, int]] = [
        ("MY_REG_DIR", str(settings.dir), settings.dir, read | write | search),
        ("MY_REG_CONF", str(settings.conf), settings.conf, read),
        ("MY_REG_AUTH_HTPASSWD", str(settings.auth_htpasswd), settings.auth_htpasswd, read),
        ("MY_REG_TLS_DIR", str(settings.tls_dir), settings.tls_dir, read | search),
        ("MY_REG_TLS_CRT", settings.tls_crt, settings.tls_certificate, read),
        ("MY_REG_TLS_KEY", settings.tls_key, settings.tls_private_key, read),
    ]
    problems = []
    for variable, given, path, need in wanted:
        try:
            st = path.stat() if path is not None else None
        except (OSError, ValueError):
            continue  # absent (the data dir is created by us, as root) or reported already
        if st is not None and not permissions.container_root_can(st, need):
            problems.append(
                f"{variable}={given!r}: expected {path} to be usable by the registry, which "
                "runs as root with all capabilities dropped: owned by root, or open to "
                "others (chown root, or chmod o+r), or set MY_REG_CAP_DROP_ALL=false"
            )
    return problems
