"""Where settings come from: the process environment and the env file, read once.

Precedence is compose's: the process environment wins over the env file, which wins over
the defaults. The env file is read as compose reads it (supervisor/envfile.py), once, and
its values reach pydantic-settings as a source of their own (``env_file_source``):
pydantic-settings never reads the file itself. Nothing else in the package reads
``os.environ`` for settings.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from types import MappingProxyType

from pydantic_settings import BaseSettings, DotEnvSettingsSource, PydanticBaseSettingsSource

from supervisor import envfile
from supervisor.errors import ConfigError
from supervisor.redaction import REDACTED, is_secret
from supervisor.settings.paths import is_readable_file

ENV_PREFIX = "MY_REG_"
PASSTHROUGH_PREFIX = "REGISTRY_"
# OpenTelemetry (v3 traces with it): passed through as REGISTRY_* is. Unset, the image's
# ENV OTEL_TRACES_EXPORTER=none stays in force (the engine merges the image's Env).
TRACING_PREFIX = "OTEL_"
DEFAULT_ENV_FILE = Path(".env")
# Settings fields that are filled by load_settings, never by a MY_REG_* variable.
INTERNAL = frozenset({f"{ENV_PREFIX}REGISTRY_ENV", f"{ENV_PREFIX}UNSET_VARIABLES"})

# The env file's values while load_settings builds Settings (see _EnvFileValues).
_ENV_FILE_VALUES: ContextVar[Mapping[str, str]] = ContextVar(
    "_ENV_FILE_VALUES", default=MappingProxyType({})
)


class _EnvFileValues(DotEnvSettingsSource):
    """pydantic-settings' env-file source, handed the values envfile.parse read: names
    matched, blanks ignored and extras handled exactly as for a file it read itself.

    Hazard: it overrides ``_load_env_vars``, a private method of pydantic-settings, so
    that the source never reads a file (which it would do with python-dotenv, a
    dependency of pydantic-settings that no code of ours calls). A pydantic-settings
    release that renames it would read nothing from the env file: tests/unit/test_settings.py
    catches that (env file values in force)."""

    def __init__(self, settings_cls: type[BaseSettings], values: Mapping[str, str]) -> None:
        self._given = values  # before super().__init__, which loads them
        super().__init__(settings_cls, env_file=None)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return {
            key if self.case_sensitive else key.lower(): value
            for key, value in self._given.items()
            if not (self.env_ignore_empty and value == "")
        }


def env_file_source(settings_cls: type[BaseSettings]) -> PydanticBaseSettingsSource:
    """The env file's values as ``given_env_file`` set them, as a pydantic-settings source
    (none outside it: Settings built directly see the environment and defaults only)."""
    return _EnvFileValues(settings_cls, _ENV_FILE_VALUES.get())


@contextmanager
def given_env_file(values: Mapping[str, str]) -> Iterator[None]:
    """While inside, Settings built in this context take ``values`` as the env file's."""
    token = _ENV_FILE_VALUES.set(values)
    try:
        yield
    finally:
        _ENV_FILE_VALUES.reset(token)


def raw_setting(name: str, env_file: Path | None) -> str | None:
    """One variable as given (environment first, then the env file), blank meaning unset.

    For helpers that must work while the settings as a whole are still invalid (the
    `htpasswd` command creates the file MY_REG_AUTH_HTPASSWD names).
    """
    for key, value in os.environ.items():
        if key.upper() == name:
            return value or None
    path = env_file if env_file is not None else DEFAULT_ENV_FILE
    if env_file is not None and not is_readable_file(path):
        raise ConfigError([f"--env-file {env_file}: expected an existing, readable env file"])
    if not is_readable_file(path):
        return None
    for key, file_value in read_env_file(path).items():
        if key.upper() == name:
            return file_value or None
    return None


def present(path: Path) -> bool:
    """Whether anything is at ``path`` (a dangling symlink too); True if we may not look."""
    try:
        return path.exists() or path.is_symlink()
    except (OSError, ValueError):
        return True  # there, but we may not look: reported as unreadable


def why(path: Path) -> str:
    """Why ``path`` cannot be read as a file, in the system's words."""
    try:
        if path.is_dir():
            return "it is a directory"
        with path.open("rb"):
            return "not a regular file"
    except OSError as err:
        return err.strerror or str(err)


def read_env_file(path: Path, unset: list[envfile.Unset] | None = None) -> dict[str, str]:
    """The env file's NAME=value pairs, read and interpolated as compose reads them (the
    process environment first inside expansions); ConfigError naming the line it cannot
    read, or the variable and message of a ``${NAME:?message}`` with NAME unset."""
    where = f"--env-file {path}"
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as err:
        raise ConfigError([f"{where}: expected a readable env file ({err.strerror})"]) from None
    except UnicodeDecodeError as err:
        bad = f"byte {err.start} is 0x{err.object[err.start]:02x}"
        raise ConfigError([f"{where}: expected UTF-8 text ({bad})"]) from None
    try:
        return envfile.parse(text, os.environ, unset)
    except envfile.ExpansionError as err:
        # The expression is part of the value as written: shown for MY_REG_* only. A
        # REGISTRY_* or OTEL_* value may carry a secret under any name (a URL's password);
        # of those, only the variable a `${NAME:?message}` wants is named.
        if err.key.startswith(ENV_PREFIX) and not is_secret(err.key):
            expression = err.expression
        elif isinstance(err, envfile.MissingVariableError):
            expression = f"${{{err.name}}}"
        else:
            expression = REDACTED
        line = f"{where}: line {err.line}: {err.key}: {expression}: {err.detail}"
        raise ConfigError([line]) from None
    except envfile.EnvFileError as err:
        raise ConfigError([f"{where}: {err}"]) from None


def unknown_or_unsafe(values: Mapping[str, str], fields: Collection[str]) -> list[str]:
    """Unknown MY_REG_* names (a typo would silently drop a setting; ``fields`` are the
    model's) and values with NUL bytes, one line each."""
    known = {f"{ENV_PREFIX}{name.upper()}" for name in fields} - INTERNAL
    problems = []
    for key, value in sorted(values.items()):
        upper = key.upper()
        if upper.startswith(ENV_PREFIX) and upper not in known:
            # Compared without the common prefix, which would make everything look close.
            suffixes = sorted(name.removeprefix(ENV_PREFIX) for name in known)
            suffix = upper.removeprefix(ENV_PREFIX)
            import difflib  # only on a bad setting: the hint is rare, the import is not free

            close = difflib.get_close_matches(suffix, suffixes, n=1, cutoff=0.75)
            hint = f" (did you mean {ENV_PREFIX}{close[0]}?)" if close else ""
            problems.append(f"{key}: expected a known {ENV_PREFIX}* setting{hint}")
        elif "\x00" in value and (
            upper.startswith(ENV_PREFIX) or key.startswith(PASSTHROUGH_PREFIX)
        ):
            problems.append(f"{key}: expected a value without NUL bytes")
    return problems
