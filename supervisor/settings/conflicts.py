"""Settings that contradict each other: REGISTRY_* variables against what a MY_REG_*
setting sets up, and MY_REG_* settings among themselves (the metrics port on the
registry's, the data dir inside the state dir). Pure but for resolving symlinks.

REGISTRY_* names are looked up as the registry reads them: case-insensitively.
"""

from __future__ import annotations

import ipaddress
import posixpath
import re
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

from supervisor.layout import REGISTRY_CONTAINER_PORT, REGISTRY_DATA_PATH
from supervisor.settings.paths import is_within, resolved
from supervisor.settings.registry_env import RegistryEnv
from supervisor.settings.storage import (
    FILESYSTEM,
    INMEMORY,
    SHARED_DRIVERS,
    STORAGE_VARIABLE,
    Origin,
    storage_of,
)
from supervisor.settings.values import go_duration_seconds, parse_metrics_address, shown

if TYPE_CHECKING:  # the model is built before these checks run: no import at run time
    from supervisor.settings.model import Settings

# What the supervisor sets up inside the container (the spec publishes and mounts them).
CONTAINER_PORT = REGISTRY_CONTAINER_PORT
CONTAINER_DATA = PurePosixPath(REGISTRY_DATA_PATH)
_ANY_HOST = frozenset({"", "0.0.0.0", "::", "[::]"})  # noqa: S104 (inside the container)


# The registry drains for this long on SIGTERM (http.draintimeout); `docker stop` kills it
# MY_REG_STOP_TIMEOUT after the SIGTERM. spec.py sets a default below that when unset.
DRAIN_VARIABLE = "REGISTRY_HTTP_DRAINTIMEOUT"

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


def _given(key: str, value: str) -> str:
    return f"{key}={shown(key, value)!r}"


def conflicts(settings: Settings) -> list[str]:
    """REGISTRY_* values that contradict what a MY_REG_* setting sets up, and settings that
    contradict each other: one line each, naming both (pure)."""
    env = RegistryEnv(settings.registry_env)
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
    return (
        problems
        + _http_conflicts(settings, env)
        + _tls_and_auth_conflicts(settings, env)
        + _fleet_conflicts(settings, env)
    )


def _fleet_conflicts(settings: Settings, env: RegistryEnv) -> list[str]:
    """In fleet mode, storage every member shares (storage.py), named as the registry reads
    names: else each member would keep its own images, and the load balancer would send a
    pull to one that never saw the push. Nothing outside fleet mode."""
    if not settings.fleet:
        return []
    misread = [(key, value) for key, value in env.starting(STORAGE_VARIABLE) if _misread(key)]
    if misread:
        return [
            f"{_given(key, value)}: expected the name in upper case ({key.upper()}) in fleet "
            "mode: the registry reads every part of a name but the last in upper case only, "
            "so it would not store where the supervisor checks"
            for key, value in misread
        ]
    storage = storage_of(settings)
    given = env.get(STORAGE_VARIABLE)
    if storage.shared or storage.driver == INMEMORY or (given and storage.driver is None):
        return []  # shared; or refused above (inmemory, REGISTRY_STORAGE not a name alone)
    fleet = "MY_REG_FLEET_REDIS is set (fleet mode), but"
    drivers = ", ".join(SHARED_DRIVERS)
    if storage.driver is None:
        return [
            f"{fleet} the supervisor cannot tell which storage driver MY_REG_CONF="
            f"{settings.conf} configures ({storage.unknown_why.removeprefix('MY_REG_CONF: ')}):"
            " expected a plain block `storage:` section naming one driver, or "
            "REGISTRY_STORAGE=<driver> with its REGISTRY_STORAGE_<DRIVER>_* keys (it replaces "
            "the file's whole storage section)"
        ]
    if storage.driver == FILESYSTEM:
        where = " set in MY_REG_CONF" if storage.origin is Origin.CONFIG else ""
        return [
            f"{fleet} the registry stores on this host's disk (the filesystem driver{where} "
            f"on MY_REG_DIR={settings.dir}): expected shared storage (REGISTRY_STORAGE=s3 or "
            f"another of {drivers}) or MY_REG_FLEET_SHARED_DIR=true for a shared file system"
        ]
    named = (
        _given(*given)
        if given is not None
        else f"MY_REG_CONF={settings.conf} (storage: {storage.driver})"
    )
    return [
        f"{fleet} {named} is not a storage driver that members can share: expected one of "
        f"{drivers} (the registry's names, in lower case), or {FILESYSTEM} with "
        "MY_REG_FLEET_SHARED_DIR=true"
    ]


def _misread(name: str) -> bool:
    """Whether the registry reads ``name`` otherwise than upper-cased: every part but the
    last must be in upper case (REGISTRY_STORAGE itself entirely, a struct field's)."""
    if name.upper() == STORAGE_VARIABLE:
        return name != STORAGE_VARIABLE
    parts = name.split("_")[:-1]
    return any(part != part.upper() for part in parts)


def _http_conflicts(settings: Settings, env: RegistryEnv) -> list[str]:
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
    drain = env.get(DRAIN_VARIABLE)
    if drain is not None:
        problems += _drain_conflicts(settings, *drain)
    prefix = env.get("REGISTRY_HTTP_PREFIX")
    if prefix is not None and prefix[1].strip() not in ("", "/"):
        problems.append(
            f"{_given(*prefix)}: expected unset: the probe asks /v2/ at the root, and "
            "clients expect it there"
        )
    return problems + _address_conflicts(settings) + _directory_conflicts(settings)


def _drain_conflicts(settings: Settings, key: str, value: str) -> list[str]:
    seconds = go_duration_seconds(value)
    if seconds is None or seconds < 0:
        return [
            f"{_given(key, value)}: expected a Go duration such as 5s or 1m (a bare number is "
            "nanoseconds to the registry), or 0 for no drain"
        ]
    if seconds > 0 and seconds >= settings.stop_timeout:
        return [
            f"{_given(key, value)}: expected a drain shorter than MY_REG_STOP_TIMEOUT="
            f"{settings.stop_timeout} s: `docker stop` kills the registry then, cutting the "
            "requests it drains; lower it or raise MY_REG_STOP_TIMEOUT"
        ]
    return []


def _tls_and_auth_conflicts(settings: Settings, env: RegistryEnv) -> list[str]:
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
    data, state = resolved(settings.dir), resolved(settings.state_dir)
    if is_within(data, state) or is_within(state, data):
        return [
            f"MY_REG_DIR={str(settings.dir)!r}: expected a directory apart from "
            f"MY_REG_STATE_DIR={str(settings.state_dir)!r}: the registry would see the "
            "supervisor's HTTP secret, or the supervisor's files would mix with its data"
        ]
    return []
