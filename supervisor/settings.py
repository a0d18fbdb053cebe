"""The one Settings model: loaded once from the environment and an env file.

Precedence is compose's: the process environment wins over the env file, which
wins over the defaults. The env file is read once, as compose reads it (envfile.py),
and its values reach pydantic-settings as a source of their own: pydantic-settings
never reads the file itself. Every field's ``description`` is the "expected ..." text
of its one-line error, so the message and the model cannot drift apart.
Nothing else in the package reads ``os.environ`` for settings.
"""

from __future__ import annotations

import ipaddress
import os
import posixpath
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path, PurePosixPath
from types import MappingProxyType
from typing import Annotated

from pydantic import Field, ValidationError, ValidationInfo, field_validator
from pydantic_settings import (
    BaseSettings,
    DotEnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from supervisor import envfile, permissions, tls
from supervisor.errors import ConfigError
from supervisor.redaction import REDACTED, is_secret, redact_value

ENV_PREFIX = "MY_REG_"
PASSTHROUGH_PREFIX = "REGISTRY_"
# OpenTelemetry (v3 traces with it): passed through as REGISTRY_* is. Unset, the image's
# ENV OTEL_TRACES_EXPORTER=none stays in force (the engine merges the image's Env).
TRACING_PREFIX = "OTEL_"
# Values longer than this are shortened in error lines (a 5000-character path helps nobody).
SHOWN_VALUE_MAX = 80
DEFAULT_ENV_FILE = Path(".env")
# Settings fields that are filled by load_settings, never by a MY_REG_* variable.
INTERNAL = frozenset({f"{ENV_PREFIX}REGISTRY_ENV", f"{ENV_PREFIX}UNSET_VARIABLES"})
# A memory limit: bytes, or a number with a k, m or g suffix (binary units, as Docker's).
_MEMORY = re.compile(r"([0-9]{1,13})([bkmg]?)", re.IGNORECASE | re.ASCII)
_MEMORY_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
MEMORY_MIN = 6 << 20  # Docker refuses less than 6 MiB
MEMORY_MAX = 1 << 40
MEMORY_EXPECTED = "a memory size from 6m to 1024g, such as 512m or 2g"
# Docker's own rule for container names (daemon/names: RestrictedNamePattern): note the `+`,
# a one-character name is refused (400 "Invalid container name").
_CONTAINER_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]+")
NAME_EXPECTED = "a container name of at least 2 characters ([a-zA-Z0-9][a-zA-Z0-9_.-]+)"
# The image reference grammar of distribution/reference (regexp.go), which the engine
# applies: a repository name (optional registry host and port, lowercase path components)
# and a tag. Checked here so that a name the engine refuses is a bad setting, not a 400
# from the engine in the middle of `run`.
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
# As Docker 20.10 (Debian 12's docker.io) splits a name (splitDockerDomain): the first
# component is a registry host only if it has a '.' or a ':port' or is `localhost`; else it
# is a path component and must be lowercase (`Foo/bar`, `LOCALHOST/x`: 400). Its grammar has
# no [IPv6] host either (400 "invalid reference format"); newer engines accept both.
_DOMAIN = (
    rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})+(?::[0-9]+)?"
    rf"|{_DOMAIN_COMPONENT}:[0-9]+|localhost)"
)
_REPOSITORY = re.compile(rf"(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*")
_TAG = re.compile(r"[\w][\w.-]{0,127}", re.ASCII)
# NameTotalLengthMax, counted on the normalised name (docker.io/library/registry).
REPOSITORY_MAX = 255
REPOSITORY_TOO_LONG = (
    f"an image repository name of at most {REPOSITORY_MAX} characters, counted as the "
    "engine names it (registry is docker.io/library/registry)"
)


# MY_REG_METRICS_ADDR given as a bare port listens here.
METRICS_DEFAULT_HOST = "127.0.0.1"


def parse_metrics_address(text: str) -> tuple[str, int]:
    """'9341' (loopback), '127.0.0.1:9341' or '[::1]:9341' -> (host, port); ValueError."""
    host, sep, port = text.strip().rpartition(":")
    if not sep:
        host = METRICS_DEFAULT_HOST
    host = host.removeprefix("[").removesuffix("]")
    address = str(ipaddress.ip_address(host))
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(port)
    return address, int(port)


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


# Capped: a socket timeout beyond about 1e9 s raises OverflowError at the first probe.
MAX_SECONDS = 86400
Seconds = Annotated[float, Field(gt=0, le=MAX_SECONDS, allow_inf_nan=False)]
TAG_EXPECTED = "an image tag: letters, digits, _ . - (at most 128, not starting with . or -)"
SECONDS_ABOVE_0 = "a number of seconds above 0, at most 86400"


# The env file's values while load_settings builds Settings (see _EnvFileValues).
_ENV_FILE_VALUES: ContextVar[Mapping[str, str]] = ContextVar(
    "_ENV_FILE_VALUES", default=MappingProxyType({})
)


class _EnvFileValues(DotEnvSettingsSource):
    """pydantic-settings' env-file source, handed the values envfile.parse read instead of
    reading a file with python-dotenv: names matched, blanks ignored and extras handled
    exactly as for a file it read itself."""

    def __init__(self, settings_cls: type[BaseSettings], values: Mapping[str, str]) -> None:
        self._given = values  # before super().__init__, which loads them
        super().__init__(settings_cls, env_file=None)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return {
            key if self.case_sensitive else key.lower(): value
            for key, value in self._given.items()
            if not (self.env_ignore_empty and value == "")
        }


@contextmanager
def _env_file_values(values: Mapping[str, str]) -> Iterator[None]:
    token = _ENV_FILE_VALUES.set(values)
    try:
        yield
    finally:
        _ENV_FILE_VALUES.reset(token)


class Settings(BaseSettings):
    """Everything the supervisor needs to know, validated at load."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        # The seed's .env and REGISTRY_* pass-through share the file with us.
        extra="ignore",
        # `#MY_REG_CONF=` style blanks mean "unset", as in compose.
        env_ignore_empty=True,
        validate_default=True,
        frozen=True,
    )

    image: str = Field(
        "registry", min_length=1, description="an image repository name, such as registry"
    )
    tag: str = Field("latest", min_length=1, description=TAG_EXPECTED)
    name: str = Field("my_registry", description=NAME_EXPECTED)
    dir: Path = Field(Path("/var/lib/my_registry"), description="an absolute path")
    port: int = Field(5001, ge=1, le=65535, description="a TCP port number from 1 to 65535")
    bind: str = Field("0.0.0.0", description="an IPv4 or IPv6 address")  # noqa: S104
    conf: Path | None = Field(None, description="an existing, readable config.yml file")
    tls_dir: Path | None = Field(None, description="an existing directory")
    tls_crt: str = Field("certificate.pem", description="a readable file in MY_REG_TLS_DIR")
    tls_key: str = Field("key.pem", description="a readable file in MY_REG_TLS_DIR")
    auth_htpasswd: Path | None = Field(
        None, description="an absolute path to an htpasswd file of bcrypt entries"
    )
    pull: PullPolicy = Field(PullPolicy.MISSING, description="one of missing, always, never")
    health_interval: Seconds = Field(5.0, description=SECONDS_ABOVE_0)
    health_timeout: Seconds = Field(1.0, description=SECONDS_ABOVE_0)
    health_retries: int = Field(3, ge=1, description="a whole number of at least 1")
    startup_grace: float = Field(
        30.0,
        ge=0,
        le=MAX_SECONDS,
        allow_inf_nan=False,
        description="a number of seconds from 0 to 86400",
    )
    stop_on_exit: bool = Field(True, description="true or false")
    stop_timeout: int = Field(
        10, ge=0, le=3600, description="a whole number of seconds from 0 to 3600"
    )
    log_format: LogFormat = Field(LogFormat.AUTO, description="one of auto, json, console")
    log_level: LogLevel = Field(LogLevel.INFO, description="one of debug, info, warning, error")
    state_dir: Path = Field(Path("/var/lib/registry-supervisor"), description="an absolute path")
    # Warn (log and STATUS) when free space on the data dir's file system is below this.
    min_free: float = Field(
        5.0,
        ge=0,
        le=100,
        allow_inf_nan=False,
        description="a percentage of free disk space from 0 to 100 (0: no warning)",
    )
    # Container hardening, each on by default with an opt-out.
    read_only: bool = Field(True, description="true or false")
    no_new_privileges: bool = Field(True, description="true or false")
    cap_drop_all: bool = Field(True, description="true or false")
    memory: str | None = Field(None, description=MEMORY_EXPECTED)
    # Re-emit the registry container's log lines as our structured events (one journal).
    forward_logs: bool = Field(True, description="true or false")
    # Prometheus exporter; unset: off. A port alone listens on 127.0.0.1.
    metrics_addr: str | None = Field(
        None, description="a port, or an address and port such as 127.0.0.1:9341"
    )
    # REGISTRY_* variables, passed into the container unchanged. Filled by load_settings.
    registry_env: dict[str, str] = Field(default_factory=dict, exclude=True)
    # `$NAME`/`${NAME}` in the env file with NAME set nowhere (compose's "not set" warning),
    # as "line N: KEY: NAME". Filled by load_settings.
    unset_variables: tuple[str, ...] = Field(default=(), exclude=True)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """The default order (init > environment > env file > defaults), with the env file's
        values as load_settings read them in place of pydantic-settings' own reading."""
        file_values = _EnvFileValues(settings_cls, _ENV_FILE_VALUES.get())
        return init_settings, env_settings, file_values, file_secret_settings

    @field_validator("image")
    @classmethod
    def _repository(cls, value: str) -> str:
        if _REPOSITORY.fullmatch(value):
            if len(_normalised_repository(value)) > REPOSITORY_MAX:
                raise ValueError(REPOSITORY_TOO_LONG)
            return value
        name, colon, tag = value.rpartition(":")
        if colon and "/" not in tag and _REPOSITORY.fullmatch(name) and _TAG.fullmatch(tag):
            raise ValueError(
                f"an image repository name without a tag: put the tag in MY_REG_TAG "
                f"(MY_REG_IMAGE={name} MY_REG_TAG={tag})"
            )
        if "@" in value:
            raise ValueError("an image repository name without a digest")
        if value.startswith("["):
            raise ValueError("an image registry host name or IPv4 address, not [IPv6]")
        raise ValueError(
            "an image repository name: lowercase letters, digits and separators (. _ -), "
            "path components split by /, optionally after a registry host[:port]/"
        )

    @field_validator("tag")
    @classmethod
    def _tag(cls, value: str) -> str:
        if not _TAG.fullmatch(value):
            raise ValueError(TAG_EXPECTED)
        return value

    @field_validator("name")
    @classmethod
    def _container_name(cls, value: str) -> str:
        if not _CONTAINER_NAME.fullmatch(value):
            raise ValueError(NAME_EXPECTED)
        return value

    @field_validator("bind")
    @classmethod
    def _ip_address(cls, value: str) -> str:
        if "%" in value:
            # Docker publishes on an address, never on an interface's link-local scope.
            raise ValueError("an IPv4 or IPv6 address without a %scope")
        try:
            address = ipaddress.ip_address(value)
        except ValueError:
            raise ValueError("an IPv4 or IPv6 address") from None
        if address.is_multicast or address == ipaddress.IPv4Address("255.255.255.255"):
            # The engine publishes on it, but nothing ever answers the probe there.
            raise ValueError("a unicast address of this host (not multicast or broadcast)")
        return str(address)

    @field_validator("dir", "state_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        if not value.is_absolute():
            raise ValueError("an absolute path")
        return value

    @field_validator("dir")
    @classmethod
    def _data_dir(cls, value: Path) -> Path:
        problem = _data_dir_problem(value)
        if problem:
            raise ValueError(problem)
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
        if not _is_dir(value):
            raise ValueError("an existing directory")
        return value

    @field_validator("tls_crt", "tls_key")
    @classmethod
    def _tls_file(cls, value: str, info: ValidationInfo) -> str:
        if "/" in value:
            raise ValueError("a file name inside MY_REG_TLS_DIR, not a path")
        tls_dir = info.data.get("tls_dir")
        if tls_dir is not None:
            path = tls_dir / value
            _require_readable_file(path, f"a readable file in {tls_dir}")
            if info.field_name == "tls_crt":
                tls.check_certificate(path, datetime.now(UTC))
            else:
                certificate = info.data.get("tls_crt")
                tls.check_key(path, tls_dir / certificate if certificate else None)
        return value

    @field_validator("auth_htpasswd")
    @classmethod
    def _htpasswd_file(cls, value: Path | None) -> Path | None:
        if value is None:
            return None
        from supervisor.ops import htpasswd

        if not value.is_absolute():
            raise ValueError("an absolute path to an htpasswd file")
        _require_readable_file(value, "an existing, readable htpasswd file")
        try:
            htpasswd.check_file(value)
        except htpasswd.HtpasswdError as err:
            raise ValueError(f"an htpasswd file of bcrypt entries ({value}: {err})") from None
        return value

    @field_validator("memory")
    @classmethod
    def _memory_size(cls, value: str | None) -> str | None:
        if value is None:
            return None
        size = _memory_bytes(value)
        if size is None or not MEMORY_MIN <= size <= MEMORY_MAX:
            raise ValueError(MEMORY_EXPECTED)
        return value.strip().lower()

    @field_validator("metrics_addr")
    @classmethod
    def _metrics_address(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            host, port = parse_metrics_address(value)
        except ValueError:
            raise ValueError("a port, or an address and port such as 127.0.0.1:9341") from None
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def dir_inside(self, parent: Path) -> bool:
        """Whether the data dir is ``parent`` or in it, symlinks resolved (reads the disk)."""
        return _is_within(_resolved(self.dir), _resolved(parent))

    @property
    def image_ref(self) -> str:
        return f"{self.image}:{self.tag}"

    @property
    def tls(self) -> bool:
        return self.tls_dir is not None

    @property
    def tls_certificate(self) -> Path | None:
        return None if self.tls_dir is None else self.tls_dir / self.tls_crt

    @property
    def tls_private_key(self) -> Path | None:
        return None if self.tls_dir is None else self.tls_dir / self.tls_key

    @property
    def memory_bytes(self) -> int | None:
        return None if self.memory is None else _memory_bytes(self.memory)

    @property
    def probe_url(self) -> str:
        """Where the health probe asks: the published port on this host."""
        address = ipaddress.ip_address(self.bind)
        if address.is_unspecified:
            address = ipaddress.ip_address("::1" if address.version == 6 else "127.0.0.1")
        host = f"[{address}]" if address.version == 6 else str(address)
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{host}:{self.port}/v2/"


def _normalised_repository(name: str) -> str:
    """``name`` as the engine normalises it before checking its length (distribution/reference
    normalize.go): docker.io/ before a name without a registry host, library/ for one
    component on Docker Hub, index.docker.io spelled docker.io."""
    host, slash, rest = name.partition("/")
    if not slash or not ("." in host or ":" in host or host == "localhost"):
        host, rest = "docker.io", name
    if host == "index.docker.io":
        host = "docker.io"
    if host == "docker.io" and "/" not in rest:
        rest = f"library/{rest}"
    return f"{host}/{rest}"


def _memory_bytes(text: str) -> int | None:
    match = _MEMORY.fullmatch(text.strip())
    if match is None:
        return None
    return int(match[1]) * _MEMORY_UNITS[match[2].lower()]


def _require_readable_file(path: Path, expected: str) -> None:
    try:
        readable = path.is_file() and os.access(path, os.R_OK)
    except (OSError, ValueError):  # ENAMETOOLONG, EACCES on a parent, a NUL byte
        readable = False
    if not readable:
        raise ValueError(expected)


# Docker's own storage: a data dir in it can be removed by `docker system prune` and the like.
DOCKER_ROOT = Path("/var/lib/docker")
# Directories that Debian's docker-registry package owns (its own registry's storage and
# state): shared with a package, they can be changed or purged by apt.
PACKAGE_MANAGED_DIRS = (Path("/var/lib/registry"), Path("/var/lib/docker-registry"))


def _resolved(path: Path) -> Path:
    """``path`` with symlinks resolved as far as they exist; unchanged if that fails."""
    try:
        return path.resolve(strict=False)
    except (OSError, RuntimeError, ValueError):  # a symlink loop, ENAMETOOLONG, a NUL byte
        return path


def _is_within(path: Path, parent: Path) -> bool:
    return path == parent or parent in path.parents


def _data_dir_problem(value: Path) -> str | None:
    """What makes ``value`` unfit to hold registry data, or None (reads the file system)."""
    real = _resolved(value)
    if real == Path("/"):
        return "a directory of its own for registry data, not /"
    if _is_within(real, DOCKER_ROOT) or _is_within(value, DOCKER_ROOT):
        return f"a directory outside Docker's own {DOCKER_ROOT}"
    try:
        exists, is_dir = value.exists(), value.is_dir()
    except (OSError, ValueError):
        return None  # reported by the checks that use it (ENAMETOOLONG, EACCES)
    if exists and not is_dir:
        return "a directory (it is a file)"
    return None


def _is_dir(path: Path) -> bool:
    """Path.is_dir() that answers False where it would raise (ENAMETOOLONG, EACCES)."""
    try:
        return path.is_dir()
    except (OSError, ValueError):
        return False


def load_settings(env_file: Path | None) -> Settings:
    """Load and validate settings, or raise ConfigError listing every bad one.

    ``env_file`` None means the default ``.env`` in the working directory, used
    only when it exists; an explicit path must exist. The file is read as compose
    reads it (envfile.py), once. Lines the env file cannot parse, unknown
    MY_REG_* names (a typo would silently drop a setting) and NUL bytes are
    reported here, before pydantic sees anything.
    """
    if env_file is None:
        path: Path | None = DEFAULT_ENV_FILE if _present(DEFAULT_ENV_FILE) else None
        if path is not None and not _readable(path):
            # Skipping it would run with the defaults, silently: not what the admin wrote.
            raise ConfigError([f"{DEFAULT_ENV_FILE}: expected a readable env file ({_why(path)})"])
    elif not _readable(env_file):
        raise ConfigError([f"--env-file {env_file}: expected an existing, readable env file"])
    else:
        path = env_file
    unset: list[envfile.Unset] = []
    file_values = _read_env_file(path, unset) if path else {}
    problems = _unknown_or_unsafe({**file_values, **os.environ})
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
        with _env_file_values(file_values):
            # mypy sees every field as a required argument (no pydantic plugin here).
            settings = Settings(  # type: ignore[call-arg]
                registry_env=passthrough,
                unset_variables=tuple(f"line {u.line}: {u.key}: {u.name}" for u in unset),
            )
    except ValidationError as err:
        raise ConfigError(_problems(err)) from None
    except SettingsError as err:  # a value pydantic-settings could not even decode
        raise ConfigError([f"{ENV_PREFIX}*: expected valid settings ({err})"]) from None
    problems = _conflicts(settings) + _unusable_in_container(settings)
    if problems:
        raise ConfigError(problems)
    return settings


def raw_setting(name: str, env_file: Path | None) -> str | None:
    """One variable as given (environment first, then the env file), blank meaning unset.

    For helpers that must work while the settings as a whole are still invalid (the
    `htpasswd` command creates the file MY_REG_AUTH_HTPASSWD names).
    """
    for key, value in os.environ.items():
        if key.upper() == name:
            return value or None
    path = env_file if env_file is not None else DEFAULT_ENV_FILE
    if env_file is not None and not _readable(path):
        raise ConfigError([f"--env-file {env_file}: expected an existing, readable env file"])
    if not _readable(path):
        return None
    for key, file_value in _read_env_file(path).items():
        if key.upper() == name:
            return file_value or None
    return None


def _present(path: Path) -> bool:
    try:
        return path.exists() or path.is_symlink()
    except (OSError, ValueError):
        return True  # there, but we may not look: reported as unreadable


def _why(path: Path) -> str:
    """Why ``path`` cannot be read as a file, in the system's words."""
    try:
        if path.is_dir():
            return "it is a directory"
        with path.open("rb"):
            return "not a regular file"
    except OSError as err:
        return err.strerror or str(err)


def _readable(path: Path) -> bool:
    try:
        return path.is_file() and os.access(path, os.R_OK)
    except (OSError, ValueError):
        return False


def _read_env_file(path: Path, unset: list[envfile.Unset] | None = None) -> dict[str, str]:
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


def _unknown_or_unsafe(values: Mapping[str, str]) -> list[str]:
    """Unknown MY_REG_* names and values with NUL bytes, one line each."""
    known = {f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields} - INTERNAL
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


# What the supervisor sets up inside the container (spec.py has the same; it imports us).
CONTAINER_PORT = 5000
CONTAINER_DATA = PurePosixPath("/var/lib/registry")
_ANY_HOST = frozenset({"", "0.0.0.0", "::", "[::]"})  # noqa: S104 (inside the container)


# Whole sections the supervisor checks key by key: given as one YAML value (the registry's
# env parser accepts `REGISTRY_HTTP={addr: ":6000"}`), they would slip past those checks.
GUARDED_SECTIONS = (
    "REGISTRY_HTTP",
    "REGISTRY_HTTP_TLS",
    "REGISTRY_STORAGE_FILESYSTEM",
    "REGISTRY_AUTH_HTPASSWD",
)
# A bare word: a storage driver or auth scheme named alone (REGISTRY_STORAGE=s3).
_WORD = re.compile(r"[A-Za-z0-9_.-]+")


class _RegistryEnv:
    """REGISTRY_* variables looked up as the registry reads them: names case-insensitively
    (its parser upper-cases struct fields and lower-cases map keys)."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.by_upper = {key.upper(): key for key in sorted(env)}

    def get(self, name: str) -> tuple[str, str] | None:
        key = self.by_upper.get(name)
        return None if key is None else (key, self.env[key])

    def starting(self, prefix: str) -> list[tuple[str, str]]:
        return [
            (key, self.env[key])
            for upper, key in sorted(self.by_upper.items())
            if upper.startswith(prefix)
        ]


def _given(key: str, value: str) -> str:
    return f"{key}={_shown(key, value)!r}"


def _conflicts(settings: Settings) -> list[str]:
    """REGISTRY_* values that contradict what a MY_REG_* setting sets up, and settings that
    contradict each other: one line each, naming both (pure)."""
    env = _RegistryEnv(settings.registry_env)
    problems = []
    for section in GUARDED_SECTIONS:
        found = env.get(section)
        if found is not None:
            problems.append(
                f"{_given(*found)}: expected the {section}_* keys one by one, not the whole "
                "section as one value (the supervisor checks some of them against MY_REG_*)"
            )
    for name in ("REGISTRY_STORAGE", "REGISTRY_AUTH"):
        found = env.get(name)
        if found is not None and not _WORD.fullmatch(found[1].strip()):
            problems.append(
                f"{_given(*found)}: expected a driver name alone, its parameters as "
                f"{name}_<DRIVER>_* keys"
            )
    root = env.get("REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY")
    if root is not None and not _inside(root[1], CONTAINER_DATA):
        problems.append(
            f"{_given(*root)}: expected a path inside {CONTAINER_DATA}, where "
            f"MY_REG_DIR={settings.dir} is mounted; anywhere else the registry writes into "
            "its container, and a restart loses every image"
        )
    storage = env.get("REGISTRY_STORAGE")
    if storage is not None and storage[1].strip().lower() == "inmemory":
        problems.append(
            f"{_given(*storage)}: expected a storage driver that keeps images "
            f"(filesystem in MY_REG_DIR, or an object store); inmemory loses them at every restart"
        )
    return problems + _http_conflicts(settings, env) + _tls_and_auth_conflicts(settings, env)


def _http_conflicts(settings: Settings, env: _RegistryEnv) -> list[str]:
    problems = []
    addr = env.get("REGISTRY_HTTP_ADDR")
    if addr is not None:
        host, _, port = addr[1].strip().rpartition(":")
        if port != str(CONTAINER_PORT) or host not in _ANY_HOST:
            problems.append(
                f"{_given(*addr)}: expected :{CONTAINER_PORT} (or unset): "
                f"MY_REG_BIND={settings.bind} and MY_REG_PORT={settings.port} publish the "
                f"registry's port {CONTAINER_PORT}, and the probe asks there"
            )
    net = env.get("REGISTRY_HTTP_NET")
    if net is not None and net[1].strip().lower() != "tcp":
        problems.append(f"{_given(*net)}: expected tcp (or unset)")
    prefix = env.get("REGISTRY_HTTP_PREFIX")
    if prefix is not None and prefix[1].strip() not in ("", "/"):
        problems.append(
            f"{_given(*prefix)}: expected unset: the probe asks /v2/ at the root, and "
            "clients expect it there"
        )
    return problems + _address_conflicts(settings) + _directory_conflicts(settings)


def _tls_and_auth_conflicts(settings: Settings, env: _RegistryEnv) -> list[str]:
    problems = []
    for name in ("REGISTRY_HTTP_TLS_CERTIFICATE", "REGISTRY_HTTP_TLS_KEY"):
        found = env.get(name)
        if found is None:
            continue
        if settings.tls_dir is not None:
            problems.append(
                f"{_given(*found)}: contradicts MY_REG_TLS_DIR={settings.tls_dir}, which sets "
                "it; unset one of them"
            )
        else:
            problems.append(
                f"{_given(*found)}: expected unset: TLS is set up with MY_REG_TLS_DIR (the "
                "files are mounted and the probe speaks https)"
            )
    # TLS the probe cannot follow: a certificate it cannot pin, or one it must present.
    for prefix in ("REGISTRY_HTTP_TLS_LETSENCRYPT", "REGISTRY_HTTP_TLS_CLIENTCAS"):
        problems += [
            f"{_given(key, value)}: expected unset: the health probe could not speak to the "
            "registry (TLS is MY_REG_TLS_DIR's, with a certificate the probe pins)"
            for key, value in env.starting(prefix)
        ]
    if settings.auth_htpasswd is not None:
        for key, value in env.starting("REGISTRY_AUTH"):
            upper = key.upper()
            if upper == "REGISTRY_AUTH_HTPASSWD_REALM":
                continue
            if upper == "REGISTRY_AUTH" and value.strip().lower() == "htpasswd":
                continue
            problems.append(
                f"{_given(key, value)}: contradicts MY_REG_AUTH_HTPASSWD="
                f"{settings.auth_htpasswd}, which sets REGISTRY_AUTH=htpasswd and "
                "REGISTRY_AUTH_HTPASSWD_PATH; unset one of them"
            )
    return problems


def _inside(path: str, parent: PurePosixPath) -> bool:
    text = path.strip()
    if not text.startswith("/"):
        return False
    normal = PurePosixPath(posixpath.normpath(text))
    return normal == parent or parent in normal.parents


def _address_conflicts(settings: Settings) -> list[str]:
    if settings.metrics_addr is None:
        return []
    host, port = parse_metrics_address(settings.metrics_addr)
    if port != settings.port:
        return []
    hosts = {host.strip("[]"), settings.bind}
    overlapping = len(hosts) == 1 or any(ipaddress.ip_address(h).is_unspecified for h in hosts)
    if not overlapping:
        return []
    return [
        f"MY_REG_METRICS_ADDR={settings.metrics_addr!r}: expected another port than "
        f"MY_REG_PORT={settings.port}, where the registry is published on {settings.bind}"
    ]


def _directory_conflicts(settings: Settings) -> list[str]:
    data, state = _resolved(settings.dir), _resolved(settings.state_dir)
    if _is_within(data, state) or _is_within(state, data):
        return [
            f"MY_REG_DIR={str(settings.dir)!r}: expected a directory apart from "
            f"MY_REG_STATE_DIR={str(settings.state_dir)!r}: the registry would see the "
            "supervisor's HTTP secret, or the supervisor's files would mix with its data"
        ]
    return []


def package_managed_dir(settings: Settings) -> Path | None:
    """The package-owned directory MY_REG_DIR is in, if it is in one (a warning, not an error)."""
    real = _resolved(settings.dir)
    return next((d for d in PACKAGE_MANAGED_DIRS if _is_within(real, d)), None)


def _unusable_in_container(settings: Settings) -> list[str]:
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
        shown = _shown(variable, error.get("input"))
        lines.append(f"{variable}={shown!r}: expected {expected}")
    return lines


def _shown(variable: str, value: object) -> object:
    """A bad value as an error line shows it: secrets redacted, then shortened.

    In that order: shortening first could cut a URL before its '@' and leave the
    password where redact_text no longer recognises it.
    """
    if isinstance(value, str):
        return _shorten(redact_value(variable, value))
    return REDACTED if is_secret(variable) else value


def _shorten(value: str) -> str:
    if len(value) > SHOWN_VALUE_MAX:
        return f"{value[: SHOWN_VALUE_MAX - 20]}...({len(value)} characters)"
    return value


def effective(settings: Settings, environment: dict[str, str] | None = None) -> dict[str, str]:
    """The effective settings as environment lines, secrets (also inside values) redacted;
    then ``environment`` (the container's, as the spec derives it) or else the REGISTRY_*
    variables as given."""
    shown: dict[str, str] = {}
    for field, value in settings.model_dump(exclude={"registry_env", "unset_variables"}).items():
        text = str(value).lower() if isinstance(value, bool) else str(value)
        variable = f"{ENV_PREFIX}{field.upper()}"
        shown[variable] = "" if value is None else redact_value(variable, text)
    given = settings.registry_env if environment is None else environment
    for key, value in sorted(given.items()):
        shown[key] = redact_value(key, value)
    return shown
