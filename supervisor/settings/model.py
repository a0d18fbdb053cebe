"""The one Settings model: every field typed, with its unit, validated once at load.

Every field's ``description`` is the "expected ..." text of its one-line error, so the
message and the model cannot drift apart. Validators check one value each (the value
grammars are in values.py and image_ref.py, file checks in paths.py); settings that
contradict each other are conflicts.py's, run by load_settings (load.py) once the model
is built.
"""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime
from pathlib import Path

from pydantic import Field, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from supervisor import credentials_file, htpasswd_file, tls
from supervisor.settings.image_ref import TAG_EXPECTED, check_repository, check_tag
from supervisor.settings.paths import (
    data_dir_problem,
    is_dir,
    is_within,
    require_readable_file,
    resolved,
)
from supervisor.settings.sources import ENV_PREFIX, env_file_source
from supervisor.settings.values import (
    CONTAINER_NAME,
    FLEET_NAME,
    FLEET_NAME_EXPECTED,
    MAX_SECONDS,
    MEMORY_EXPECTED,
    MEMORY_MAX,
    MEMORY_MIN,
    NAME_EXPECTED,
    SECONDS_ABOVE_0,
    LogFormat,
    LogLevel,
    PullPolicy,
    Seconds,
    default_member,
    memory_size_bytes,
    parse_metrics_address,
    redis_url_problem,
)

CONFIRM_EXPECTED = "a number of seconds above 0, at most MY_REG_HEALTH_INTERVAL"


def _path_shown(path: Path) -> str:
    """A path inside an error line: as it is, unless a control character would break the
    line (then quoted, escapes and all)."""
    text = str(path)
    return text if text.isprintable() else repr(text)


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
    # After a failed probe, the next ones come this often (start to start) until one
    # succeeds or MY_REG_HEALTH_RETRIES have failed: a hang is confirmed in seconds.
    health_confirm_interval: Seconds = Field(0.5, description=CONFIRM_EXPECTED)
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
    # The push canary (supervisor/canary.py): seconds between rounds, 0 = off.
    canary_interval: float = Field(
        300.0,
        ge=0,
        le=MAX_SECONDS,
        allow_inf_nan=False,
        description="a number of seconds from 0 to 86400 (0: off)",
    )
    canary_credentials: Path | None = Field(
        None, description="an absolute path to a file of one user:password line"
    )
    # Re-emit the registry container's log lines as our structured events (one journal).
    forward_logs: bool = Field(True, description="true or false")
    # Seconds between `/ready` turning 503 and the old container's stop, for a reload's
    # planned replacement of a serving registry (a load balancer's checks must see it).
    ready_drain: float = Field(
        0.0,
        ge=0,
        le=3600,
        allow_inf_nan=False,
        description="a number of seconds from 0 to 3600",
    )
    # Fleet mode (supervisor/fleet.py): a Redis server every member of one fleet shares;
    # unset: off. The member's name in it (default: the host name), the fleet's name (one
    # Redis may coordinate several fleets), and whether a filesystem data dir is shared
    # storage (NFS and the like) rather than this host's own disk.
    fleet_redis: str | None = Field(
        None, description="a redis:// or rediss:// URL such as redis://10.0.0.5:6379/0"
    )
    fleet_member: str = Field(default_factory=default_member, description=FLEET_NAME_EXPECTED)
    fleet_name: str = Field("registry", description=FLEET_NAME_EXPECTED)
    fleet_shared_dir: bool = Field(False, description="true or false")
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
        return init_settings, env_settings, env_file_source(settings_cls), file_secret_settings

    @field_validator("health_confirm_interval")
    @classmethod
    def _confirm_interval(cls, value: float, info: ValidationInfo) -> float:
        interval = info.data.get("health_interval")
        if interval is not None and value > interval:
            raise ValueError(f"{CONFIRM_EXPECTED} (now {interval:g})")
        return value

    @field_validator("image")
    @classmethod
    def _repository(cls, value: str) -> str:
        return check_repository(value)

    @field_validator("tag")
    @classmethod
    def _tag(cls, value: str) -> str:
        return check_tag(value)

    @field_validator("name")
    @classmethod
    def _container_name(cls, value: str) -> str:
        if not CONTAINER_NAME.fullmatch(value):
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
        problem = data_dir_problem(value)
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
        require_readable_file(value, "an existing, readable config.yml file")
        return value

    @field_validator("tls_dir")
    @classmethod
    def _tls_directory(cls, value: Path | None) -> Path | None:
        if value is None:
            return None
        if not value.is_absolute():
            raise ValueError("an absolute path to a directory")
        if not is_dir(value):
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
            require_readable_file(path, f"a readable file in {tls_dir}")
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
        if not value.is_absolute():
            raise ValueError("an absolute path to an htpasswd file")
        require_readable_file(value, "an existing, readable htpasswd file")
        try:
            htpasswd_file.check_file(value)
        except htpasswd_file.HtpasswdError as err:
            raise ValueError(
                f"an htpasswd file of bcrypt entries ({_path_shown(value)}: {err})"
            ) from None
        return value

    @field_validator("canary_credentials")
    @classmethod
    def _canary_credentials(cls, value: Path | None) -> Path | None:
        if value is None:
            return None
        if not value.is_absolute():
            raise ValueError("an absolute path to a file of one user:password line")
        try:
            credentials_file.read(value)
        except credentials_file.CredentialsError as err:
            shown = _path_shown(value)
            raise ValueError(
                f"a file of one user:password line, owned by root, mode 0600 ({shown}: {err})"
            ) from None
        return value

    @field_validator("memory")
    @classmethod
    def _memory_size(cls, value: str | None) -> str | None:
        if value is None:
            return None
        size = memory_size_bytes(value)
        if size is None or not MEMORY_MIN <= size <= MEMORY_MAX:
            raise ValueError(MEMORY_EXPECTED)
        return value.strip().lower()

    @field_validator("fleet_redis")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        problem = redis_url_problem(value)
        if problem:
            raise ValueError(problem)
        return value.strip()

    @field_validator("fleet_member", "fleet_name")
    @classmethod
    def _fleet_name(cls, value: str) -> str:
        if not FLEET_NAME.fullmatch(value):
            raise ValueError(FLEET_NAME_EXPECTED)
        return value

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
        return is_within(resolved(self.dir), resolved(parent))

    @property
    def fleet(self) -> bool:
        """Whether this supervisor is a member of a fleet (MY_REG_FLEET_REDIS is set)."""
        return self.fleet_redis is not None

    @property
    def image_ref(self) -> str:
        """The image as the engine names it: MY_REG_IMAGE:MY_REG_TAG."""
        return f"{self.image}:{self.tag}"

    @property
    def tls(self) -> bool:
        """Whether the registry serves https (MY_REG_TLS_DIR is set)."""
        return self.tls_dir is not None

    @property
    def tls_certificate(self) -> Path | None:
        """The certificate file on the host (what the probe pins); None without TLS."""
        return None if self.tls_dir is None else self.tls_dir / self.tls_crt

    @property
    def tls_private_key(self) -> Path | None:
        """The private key file on the host; None without TLS."""
        return None if self.tls_dir is None else self.tls_dir / self.tls_key

    @property
    def memory_bytes(self) -> int | None:
        """MY_REG_MEMORY in bytes; None without a limit."""
        return None if self.memory is None else memory_size_bytes(self.memory)

    @property
    def probe_url(self) -> str:
        """Where the health probe asks: the published port on this host."""
        address = ipaddress.ip_address(self.bind)
        if address.is_unspecified:
            address = ipaddress.ip_address("::1" if address.version == 6 else "127.0.0.1")
        host = f"[{address}]" if address.version == 6 else str(address)
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{host}:{self.port}/v2/"
