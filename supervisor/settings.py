"""The one Settings model: loaded once from the environment and an env file.

Precedence is compose's: the process environment wins over the env file, which
wins over the defaults. Every field's ``description`` is the "expected ..." text
of its one-line error, so the message and the model cannot drift apart.
Nothing else in the package reads ``os.environ`` for settings.
"""

from __future__ import annotations

import ipaddress
import os
import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated

from dotenv import dotenv_values
from pydantic import Field, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from supervisor.errors import ConfigError

ENV_PREFIX = "MY_REG_"
PASSTHROUGH_PREFIX = "REGISTRY_"
# Variable names that mark a secret; their values are never logged or printed.
SECRET_MARKERS = ("SECRET", "PASSWORD", "PASSWD", "TOKEN", "CREDENTIAL", "ACCESSKEY", "ACCOUNTKEY")
REDACTED = "********"
DEFAULT_ENV_FILE = Path(".env")
# Docker's own rule for container names (daemon/names.go).
_CONTAINER_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*")


class PullPolicy(StrEnum):
    MISSING = "missing"
    ALWAYS = "always"
    NEVER = "never"


class LogFormat(StrEnum):
    AUTO = "auto"
    JSON = "json"
    CONSOLE = "console"


class LogLevel(StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


Seconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class Settings(BaseSettings):
    """Everything the supervisor needs to know, validated at load."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        # The seed's .env and REGISTRY_* pass-through share the file with us.
        extra="ignore",
        # `#MY_REG_CONF=` style blanks mean "unset", as in compose.
        env_ignore_empty=True,
        env_file_encoding="utf-8",
        validate_default=True,
        frozen=True,
    )

    image: str = Field("registry", min_length=1, description="an image repository name")
    tag: str = Field("latest", min_length=1, description="an image tag")
    name: str = Field("my_registry", description="a container name ([a-zA-Z0-9][a-zA-Z0-9_.-]*)")
    dir: Path = Field(Path("/var/lib/my_registry"), description="an absolute path")
    port: int = Field(5001, ge=1, le=65535, description="a TCP port number from 1 to 65535")
    bind: str = Field("0.0.0.0", description="an IPv4 or IPv6 address")  # noqa: S104
    conf: Path | None = Field(None, description="an existing, readable config.yml file")
    tls_dir: Path | None = Field(None, description="an existing directory")
    tls_crt: str = Field("certificate.pem", description="a readable file in MY_REG_TLS_DIR")
    tls_key: str = Field("key.pem", description="a readable file in MY_REG_TLS_DIR")
    pull: PullPolicy = Field(PullPolicy.MISSING, description="one of missing, always, never")
    health_interval: Seconds = Field(5.0, description="a number of seconds greater than 0")
    health_timeout: Seconds = Field(2.0, description="a number of seconds greater than 0")
    health_retries: int = Field(3, ge=1, description="a whole number of at least 1")
    startup_grace: float = Field(
        30.0, ge=0, allow_inf_nan=False, description="a number of seconds, 0 or more"
    )
    stop_on_exit: bool = Field(True, description="true or false")
    stop_timeout: int = Field(10, ge=0, description="a whole number of seconds, 0 or more")
    log_format: LogFormat = Field(LogFormat.AUTO, description="one of auto, json, console")
    log_level: LogLevel = Field(LogLevel.INFO, description="one of debug, info, warning, error")
    # REGISTRY_* variables, passed into the container unchanged. Filled by load_settings.
    registry_env: dict[str, str] = Field(default_factory=dict, exclude=True)

    @field_validator("name")
    @classmethod
    def _container_name(cls, value: str) -> str:
        if not _CONTAINER_NAME.fullmatch(value):
            raise ValueError("a container name ([a-zA-Z0-9][a-zA-Z0-9_.-]*)")
        return value

    @field_validator("bind")
    @classmethod
    def _ip_address(cls, value: str) -> str:
        try:
            return str(ipaddress.ip_address(value))
        except ValueError:
            raise ValueError("an IPv4 or IPv6 address") from None

    @field_validator("dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        if not value.is_absolute():
            raise ValueError("an absolute path")
        return value

    @field_validator("conf")
    @classmethod
    def _readable_config(cls, value: Path | None) -> Path | None:
        if value is None:
            return None
        if not value.is_absolute():
            raise ValueError("an absolute path to a config.yml file")
        _require_readable_file(value, "an existing, readable config.yml file")
        return value

    @field_validator("tls_dir")
    @classmethod
    def _tls_directory(cls, value: Path | None) -> Path | None:
        if value is None:
            return None
        if not value.is_absolute():
            raise ValueError("an absolute path to a directory")
        if not value.is_dir():
            raise ValueError("an existing directory")
        return value

    @field_validator("tls_crt", "tls_key")
    @classmethod
    def _tls_file(cls, value: str, info: ValidationInfo) -> str:
        if "/" in value:
            raise ValueError("a file name inside MY_REG_TLS_DIR, not a path")
        tls_dir = info.data.get("tls_dir")
        if tls_dir is not None:
            _require_readable_file(tls_dir / value, f"a readable file in {tls_dir}")
        return value

    @property
    def image_ref(self) -> str:
        return f"{self.image}:{self.tag}"

    @property
    def tls(self) -> bool:
        return self.tls_dir is not None

    @property
    def probe_url(self) -> str:
        """Where the health probe asks: the published port on this host."""
        address = ipaddress.ip_address(self.bind)
        if address.is_unspecified:
            address = ipaddress.ip_address("::1" if address.version == 6 else "127.0.0.1")
        host = f"[{address}]" if address.version == 6 else str(address)
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{host}:{self.port}/v2/"


def _require_readable_file(path: Path, expected: str) -> None:
    if not path.is_file() or not os.access(path, os.R_OK):
        raise ValueError(expected)


def is_secret(name: str) -> bool:
    upper = name.upper()
    return any(marker in upper for marker in SECRET_MARKERS)


def load_settings(env_file: Path | None) -> Settings:
    """Load and validate settings, or raise ConfigError listing every bad one.

    ``env_file`` None means the default ``.env`` in the working directory, used
    only when it exists; an explicit path must exist (pydantic-settings would
    skip a missing file silently).
    """
    if env_file is None:
        path: Path | None = DEFAULT_ENV_FILE if DEFAULT_ENV_FILE.is_file() else None
    elif not env_file.is_file() or not os.access(env_file, os.R_OK):
        raise ConfigError([f"--env-file {env_file}: expected an existing, readable env file"])
    else:
        path = env_file
    file_values = dotenv_values(path) if path else {}
    passthrough = {
        key: value
        for key, value in {**file_values, **os.environ}.items()
        if key.startswith(PASSTHROUGH_PREFIX) and value is not None
    }
    try:
        return Settings(_env_file=path, registry_env=passthrough)  # type: ignore[call-arg]
    except ValidationError as err:
        raise ConfigError(_problems(err)) from None


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
        given = error.get("input")
        shown = REDACTED if is_secret(variable) else given
        lines.append(f"{variable}={shown!r}: expected {expected}")
    return lines


def effective(settings: Settings) -> dict[str, str]:
    """The effective settings as environment lines, secrets redacted."""
    shown: dict[str, str] = {}
    for field, value in settings.model_dump(exclude={"registry_env"}).items():
        text = str(value).lower() if isinstance(value, bool) else str(value)
        shown[f"{ENV_PREFIX}{field.upper()}"] = "" if value is None else text
    for key, value in sorted(settings.registry_env.items()):
        shown[key] = REDACTED if is_secret(key) else value
    return shown
