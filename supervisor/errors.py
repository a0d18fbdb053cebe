"""One base exception for everything the supervisor reports, and the exit codes.

Adapters translate foreign errors (docker, requests, pydantic) into these at the
boundary; only the CLI turns them into exit codes.
"""

from __future__ import annotations

import errno
from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit codes, from sysexits.h where one fits."""

    OK = 0
    UNAVAILABLE = 69  # EX_UNAVAILABLE: the Docker engine does not answer
    SOFTWARE = 70  # EX_SOFTWARE: a bug; the traceback is logged
    TEMPFAIL = 75  # EX_TEMPFAIL: a condition that may clear (disk full); systemd restarts us
    CONFIG = 78  # EX_CONFIG: bad settings, only an edit fixes them; systemd does not restart


class SupervisorError(Exception):
    """Base of every error the supervisor raises on purpose."""


class ConfigError(SupervisorError):
    """Settings are invalid; ``problems`` holds one line per bad setting."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


class TransientError(SupervisorError):
    """Something the settings name cannot be used now, for a reason that may clear by
    itself (a full disk, an I/O error, a port still taken); ``problems`` holds one line each.
    """

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


# What the system says when trying again later may work: space, quota, memory, descriptors,
# I/O, a busy or contended resource, a port still held (an old instance exiting). Anything
# else (EACCES, EPERM, ENOTDIR, EROFS, ELOOP, ENAMETOOLONG, EADDRNOTAVAIL...) needs an edit.
TRANSIENT_ERRNOS = frozenset(
    {
        errno.ENOSPC,
        errno.EDQUOT,
        errno.ENOMEM,
        errno.ENOBUFS,
        errno.EMFILE,
        errno.ENFILE,
        errno.EIO,
        errno.EAGAIN,
        errno.EBUSY,
        errno.ETXTBSY,
        errno.EINTR,
        errno.ETIMEDOUT,
        errno.ENOLCK,
        errno.ESTALE,
        errno.EADDRINUSE,
    }
)


def for_os_error(err: OSError, *, config: str, transient: str) -> ConfigError | TransientError:
    """The error to raise for ``err``, met using a setting (pure).

    A transient errno gives TransientError with the line ``transient`` (exit 75, retried);
    any other gives ConfigError with the line ``config`` (exit 78, edit the setting).
    """
    if err.errno in TRANSIENT_ERRNOS:
        return TransientError([transient])
    return ConfigError([config])


class EngineUnavailable(SupervisorError):
    """The Docker engine cannot be reached (socket missing, daemon restarting)."""


class EngineRefused(SupervisorError):
    """The engine answered a read with a 4xx: our request is wrong, the engine is fine."""


class ImageUnavailable(SupervisorError):
    """The registry image is neither present locally nor pullable."""


class ContainerGone(SupervisorError):
    """The container vanished or is being removed while we acted on it."""


class ContainerActionFailed(SupervisorError):
    """The engine refused to create or start the container (port taken, bad mount...)."""


class PortBusy(ContainerActionFailed):
    """The host port is held by something run may not take over; ``by`` names it (None:
    no container holds it, a host process does, or the engine did not say)."""

    def __init__(self, message: str, by: str | None) -> None:
        super().__init__(message)
        self.by = by


class MaintenanceFailed(SupervisorError):
    """A maintenance task (garbage collection) could not be done or finished."""


class FleetUnavailable(SupervisorError):
    """The fleet's Redis did not answer (or refused): one short phrase. Defined here, not
    beside the Redis adapter, so that what only catches it does not load redis-py."""
