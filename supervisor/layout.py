"""Where a registry image reads its config, which registry it carries, and what that
version makes of our settings: pure functions over `docker image inspect` and
`registry --version` output.

The image says where its registry reads the config: its ``Entrypoint`` + ``Cmd``.

- v2's image: ``["/bin/registry", "serve"]`` + ``["/etc/docker/registry/config.yml"]``
  (older tags: ``["/entrypoint.sh"]`` + the same Cmd);
- v3's image: ``["/entrypoint.sh"]`` + ``["/etc/distribution/config.yml"]``, where the
  entrypoint turns a ``*.yml``/``*.yaml`` first argument into ``registry serve ARG``.

Anything else is refused with one line: mounting MY_REG_CONF where the registry does not
look would be ignored silently, and so would the collector's config.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from supervisor.errors import ConfigError

# Where the registry listens and keeps its data inside its container: the registry's own
# defaults, which the spec publishes and mounts and the settings guard.
REGISTRY_CONTAINER_PORT = 5000
REGISTRY_DATA_PATH = "/var/lib/registry"
# Where the official images put the binary (an /entrypoint.sh runs `registry` from PATH).
DEFAULT_BINARY = "/bin/registry"
ENTRYPOINT_SCRIPT = "entrypoint.sh"
V2_CONFIG = "/etc/docker/registry/config.yml"
V3_CONFIG = "/etc/distribution/config.yml"
# The majors the layouts of the official images stand for.
_LAYOUT_MAJOR = {"/etc/docker/registry/": 2, "/etc/distribution/": 3}
_VERSION = re.compile(r"\bv?(?P<major>\d+)\.(?P<minor>\d+)(?:\.(?P<patch>\d+))?\S*\s*\Z")


@dataclass(frozen=True)
class ImageLayout:
    """How to run the registry of one image."""

    config_path: str  # the config.yml the registry serves with (MY_REG_CONF goes there)
    binary: str  # the registry executable (the collector and `--version` run it)
    major: int | None = None  # the major of the official image this layout is, if one

    @property
    def describe(self) -> str:
        """The layout in one phrase, as `check` and `status` print it."""
        kind = f"v{self.major} layout" if self.major is not None else "custom layout"
        return f"{kind}: {self.binary}, config {self.config_path}"


# The official images' layouts (what layout_of reads from them).
V2_LAYOUT = ImageLayout(config_path=V2_CONFIG, binary=DEFAULT_BINARY, major=2)
V3_LAYOUT = ImageLayout(config_path=V3_CONFIG, binary=DEFAULT_BINARY, major=3)


@dataclass(frozen=True, order=True)
class RegistryVersion:
    """What `registry --version` said, e.g. ``v3.0.0`` or Debian's ``2.8.2+ds1``."""

    major: int
    minor: int
    patch: int
    text: str

    def __str__(self) -> str:
        return self.text


def layout_of(image: Mapping[str, Any]) -> ImageLayout:
    """The layout of an image from its inspect dict (pure); ConfigError if unreadable."""
    config = image.get("Config") or {}
    entrypoint = [str(part) for part in config.get("Entrypoint") or ()]
    command = [str(part) for part in config.get("Cmd") or ()]
    tags = image.get("RepoTags") or [str(image.get("Id", "?"))[:19]]
    found = _from_argv(entrypoint, command)
    if found is None:
        raise ConfigError(
            [
                f"image {tags[0]}: expected the registry image's layout (Entrypoint "
                f'["/bin/registry", "serve"] or ["/entrypoint.sh"], Cmd ["/path/config.yml"]), '
                f"got Entrypoint {entrypoint} Cmd {command}: cannot tell where it reads its "
                "config (MY_REG_CONF's mount, the collector's config)"
            ]
        )
    binary, config_path = found
    major = next((m for prefix, m in _LAYOUT_MAJOR.items() if config_path.startswith(prefix)), None)
    return ImageLayout(config_path=config_path, binary=binary, major=major)


def _from_argv(entrypoint: Sequence[str], command: Sequence[str]) -> tuple[str, str] | None:
    """(binary, config path) from the argv the image runs, or None."""
    argv = [*entrypoint, *command]
    if not argv:
        return None
    binary = DEFAULT_BINARY
    if PurePosixPath(argv[0]).name == ENTRYPOINT_SCRIPT:
        # Upstream's script: `X.yml ...` -> `registry serve X.yml ...`;
        # `serve ...` -> `registry serve ...`; anything else runs as given.
        argv = argv[1:]
        if argv and _is_config(argv[0]):
            return binary, argv[0]
    elif PurePosixPath(argv[0]).name == "registry":
        # A bare `registry` (upstream's own Dockerfile) is found on the image's PATH, by the
        # engine as by us: keep it as given.
        binary = argv[0]
        argv = argv[1:]
    else:
        return None
    if len(argv) >= 2 and argv[0] == "serve" and _is_config(argv[1]):
        return binary, argv[1]
    return None


def _is_config(arg: str) -> bool:
    return arg.startswith("/") and arg.endswith((".yml", ".yaml"))


def parse_version(output: str) -> RegistryVersion | None:
    """The version from `registry --version` (``/bin/registry github.com/distribution/
    distribution/v3 v3.0.0``); None if it names none (pure)."""
    lines = [line.strip() for line in output.strip().splitlines() if line.strip()]
    if not lines:
        return None
    match = _VERSION.search(lines[-1])
    if match is None:
        return None
    text = lines[-1].split()[-1]
    return RegistryVersion(
        major=int(match["major"]),
        minor=int(match["minor"]),
        patch=int(match["patch"] or 0),
        text=text,
    )


def version_label(version: RegistryVersion | None, layout: ImageLayout | None) -> str:
    """What `check`, `status` and the metrics call the registry (pure)."""
    if version is not None:
        return version.text
    if layout is not None and layout.major is not None:
        return f"{layout.major}.x?"
    return "unknown"


@dataclass(frozen=True)
class Finding:
    """A REGISTRY_* setting this registry version drops or reads differently."""

    error: bool  # True: it would silently do nothing (or cannot work): exit 78
    text: str


# v2 keys v3 renamed: the replacement to name.
_V3_RENAMED = {
    "REGISTRY_REDIS_ADDR": "REGISTRY_REDIS_ADDRS (a list: '[host:6379]')",
    "REGISTRY_REDIS_POOL_MAXIDLE": "REGISTRY_REDIS_MAXIDLECONNS",
    "REGISTRY_REDIS_POOL_MAXACTIVE": "REGISTRY_REDIS_POOLSIZE",
    "REGISTRY_REDIS_POOL_IDLETIMEOUT": "REGISTRY_REDIS_CONNMAXIDLETIME",
}
_V3_DROPPED_DRIVERS = ("oss", "swift")


def version_findings(
    registry_env: Mapping[str, str], version: RegistryVersion | None
) -> list[Finding]:
    """REGISTRY_* settings that v3 dropped or renamed, with the replacement (pure).

    Errors: the setting would silently do nothing on this version (v3 ignores unknown
    keys) or can never work (a removed storage driver). Warnings: harmless leftovers.
    """
    if version is None or version.major < 3:
        return []
    env = {key.upper(): (key, value) for key, value in sorted(registry_env.items())}
    findings = []
    for upper, (key, value) in env.items():
        given = f"{key}={value!r}" if not upper.endswith(("PASSWORD", "SECRET", "KEY")) else key
        if upper.startswith("REGISTRY_REDIS_") and (version.major, version.minor) == (3, 0):
            findings.append(
                Finding(
                    True,
                    f"{key}: registry {version} ignores REGISTRY_REDIS_* from the environment "
                    "(fixed in 3.1.0): set redis in MY_REG_CONF's config.yml, or use 3.1",
                )
            )
        elif upper in _V3_RENAMED:
            findings.append(
                Finding(True, f"{given}: v3 ignores it; use {_V3_RENAMED[upper]} instead")
            )
        elif upper == "REGISTRY_STORAGE" and value.strip().lower() in _V3_DROPPED_DRIVERS:
            findings.append(
                Finding(
                    True,
                    f"{given}: v3 has no {value.strip().lower()} storage driver; use s3 (an "
                    "S3-compatible endpoint) or stay on registry 2.8",
                )
            )
        elif upper.startswith(tuple(f"REGISTRY_STORAGE_{d.upper()}_" for d in _V3_DROPPED_DRIVERS)):
            findings.append(
                Finding(True, f"{key}: v3 has no {upper.split('_')[2].lower()} storage driver")
            )
        elif upper == "REGISTRY_COMPATIBILITY_SCHEMA1_ENABLED" and value.strip().lower() == "true":
            findings.append(
                Finding(
                    True,
                    f"{given}: v3 removed schema1 manifests; clients must push schema2/OCI",
                )
            )
        elif upper.startswith("REGISTRY_COMPATIBILITY_SCHEMA1"):
            findings.append(Finding(False, f"{key}: v3 removed schema1; the setting is unused"))
        elif upper.startswith("REGISTRY_REPORTING"):
            findings.append(
                Finding(
                    True,
                    f"{key}: v3 removed reporting (bugsnag, newrelic); use its Prometheus "
                    "metrics (http.debug) or OpenTelemetry (OTEL_* variables) instead",
                )
            )
    return findings
