"""One base exception for everything the supervisor reports, and the exit codes.

Adapters translate foreign errors (docker, requests, pydantic) into these at the
boundary; only the CLI turns them into exit codes.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit codes, from sysexits.h where one fits."""

    OK = 0
    UNAVAILABLE = 69  # EX_UNAVAILABLE: the Docker engine does not answer
    SOFTWARE = 70  # EX_SOFTWARE: a bug; the traceback is logged
    CONFIG = 78  # EX_CONFIG: bad settings; systemd must not restart-loop on it


class SupervisorError(Exception):
    """Base of every error the supervisor raises on purpose."""


class ConfigError(SupervisorError):
    """Settings are invalid; ``problems`` holds one line per bad setting."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


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


class MaintenanceFailed(SupervisorError):
    """A maintenance task (garbage collection) could not be done or finished."""
