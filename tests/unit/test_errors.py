"""Which OS errors mean "edit your settings" (exit 78) and which "try again later" (exit 75)."""

from __future__ import annotations

import errno
import os

import pytest

from supervisor.errors import ConfigError, TransientError, for_os_error

TRANSIENT = ["ENOSPC", "EDQUOT", "EIO", "EAGAIN", "EBUSY", "ENOMEM", "EMFILE", "EADDRINUSE"]
CONFIG = ["EACCES", "EPERM", "ENOTDIR", "EROFS", "ELOOP", "ENAMETOOLONG", "EADDRNOTAVAIL"]


def os_error(name: str) -> OSError:
    code = getattr(errno, name)
    return OSError(code, os.strerror(code))


@pytest.mark.parametrize("name", TRANSIENT)
def test_a_condition_that_may_clear_is_transient(name: str) -> None:
    """Full, busy or failing resources give TransientError with the transient line."""
    error = for_os_error(os_error(name), config="edit it", transient="try later")
    assert (TransientError, ["try later"]) == (type(error), error.problems)


@pytest.mark.parametrize("name", CONFIG)
def test_a_permission_or_path_problem_is_a_config_error(name: str) -> None:
    """Permissions, paths and addresses only an edit can fix give ConfigError."""
    error = for_os_error(os_error(name), config="edit it", transient="try later")
    assert (ConfigError, ["edit it"]) == (type(error), error.problems)


def test_an_os_error_without_errno_is_a_config_error() -> None:
    """Nothing says it may clear, so it is not retried for ever."""
    error = for_os_error(OSError("odd"), config="edit it", transient="try later")
    assert ConfigError is type(error)
