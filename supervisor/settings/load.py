"""load_settings: the env file and environment, validated into one Settings, every
problem reported at once; and ``effective``, the settings as `check` prints them."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import ValidationError
from pydantic_settings import SettingsError

from supervisor import envfile
from supervisor.errors import ConfigError
from supervisor.redaction import redact_value
from supervisor.settings.conflicts import conflicts
from supervisor.settings.model import Settings
from supervisor.settings.paths import is_readable_file, unusable_in_container
from supervisor.settings.sources import (
    DEFAULT_ENV_FILE,
    ENV_PREFIX,
    PASSTHROUGH_PREFIX,
    TRACING_PREFIX,
    given_env_file,
    present,
    read_env_file,
    unknown_or_unsafe,
    why,
)
from supervisor.settings.values import shown


def load_settings(env_file: Path | None) -> Settings:
    """Load and validate settings, or raise ConfigError listing every bad one.

    ``env_file`` None means the default ``.env`` in the working directory, used
    only when it exists; an explicit path must exist. The file is read as compose
    reads it (envfile.py), once. Lines the env file cannot parse, unknown
    MY_REG_* names (a typo would silently drop a setting) and NUL bytes are
    reported here, before pydantic sees anything.
    """
    if env_file is None:
        path: Path | None = DEFAULT_ENV_FILE if present(DEFAULT_ENV_FILE) else None
        if path is not None and not is_readable_file(path):
            # Skipping it would run with the defaults, silently: not what the admin wrote.
            raise ConfigError([f"{DEFAULT_ENV_FILE}: expected a readable env file ({why(path)})"])
    elif not is_readable_file(env_file):
        raise ConfigError([f"--env-file {env_file}: expected an existing, readable env file"])
    else:
        path = env_file
    unset: list[envfile.Unset] = []
    file_values = read_env_file(path, unset) if path else {}
    problems = unknown_or_unsafe({**file_values, **os.environ}, Settings.model_fields)
    if problems:
        raise ConfigError(problems)
    # Blank is unset, for REGISTRY_* as for MY_REG_*: compose's `VAR=${UNSET}` gives
    # exactly this, and an empty REGISTRY_AUTH must not count as "auth configured". Per
    # source, as pydantic-settings does for MY_REG_*: a blank in the environment leaves
    # the env file's value in force, it does not remove it.
    passthrough = {
        key: value
        for source in (file_values, os.environ)
        for key, value in source.items()
        if key.startswith((PASSTHROUGH_PREFIX, TRACING_PREFIX)) and value.strip()
    }
    try:
        with given_env_file(file_values):
            # mypy sees every field as a required argument (no pydantic plugin here).
            settings = Settings(  # type: ignore[call-arg]
                registry_env=passthrough,
                unset_variables=tuple(f"line {u.line}: {u.key}: {u.name}" for u in unset),
            )
    except ValidationError as err:
        raise ConfigError(_problems(err)) from None
    except SettingsError as err:  # a value pydantic-settings could not even decode
        raise ConfigError([f"{ENV_PREFIX}*: expected valid settings ({err})"]) from None
    problems = conflicts(settings) + unusable_in_container(settings)
    if problems:
        raise ConfigError(problems)
    return settings


def _problems(err: ValidationError) -> list[str]:
    """One line per bad setting: the variable, the value given, what is expected."""
    lines = []
    for error in err.errors():
        field = str(error["loc"][0]) if error["loc"] else ""
        variable = f"{ENV_PREFIX}{field.upper()}"
        if error["type"] == "value_error":
            expected = str(error["ctx"]["error"])
        else:
            info = Settings.model_fields.get(field)
            expected = (info.description if info else None) or error["msg"]
        given = shown(variable, error.get("input"))
        lines.append(f"{variable}={given!r}: expected {expected}")
    return lines


def effective(settings: Settings, environment: dict[str, str] | None = None) -> dict[str, str]:
    """The effective settings as environment lines, secrets (also inside values) redacted;
    then ``environment`` (the container's, as the spec derives it) or else the REGISTRY_*
    variables as given."""
    lines: dict[str, str] = {}
    for field, value in settings.model_dump(exclude={"registry_env", "unset_variables"}).items():
        text = str(value).lower() if isinstance(value, bool) else str(value)
        variable = f"{ENV_PREFIX}{field.upper()}"
        lines[variable] = "" if value is None else redact_value(variable, text)
    given = settings.registry_env if environment is None else environment
    for key, value in sorted(given.items()):
        lines[key] = redact_value(key, value)
    return lines
