"""Which storage the registry uses, whether every fleet member reaches the same data
through it, and a keyed fingerprint of it that members can compare.

The driver comes from, in the registry's own order of precedence:

1. ``REGISTRY_STORAGE`` (any case, as conflicts.py reads names): it replaces the config
   file's whole ``storage:`` section; a value that is not a driver name alone (a YAML map)
   is not read here (conflicts.py refuses it);
2. else, with MY_REG_CONF, that file's ``storage:`` section, read by a deliberately small
   reader (``config_storage``) that answers only for a plain block-style section and says
   "cannot tell" for anything else (flow style, anchors, aliases, tags, quoted or merge
   keys, tabs, several documents): a wrong answer would be worse than none;
3. else the image's own config: the filesystem driver on MY_REG_DIR (the official images,
   v2 and v3, store in /var/lib/registry, where the spec mounts MY_REG_DIR).

Shared (every member sees the same data): the object stores s3 (also s3aws; S3-compatible
MinIO, Ceph RGW), azure, gcs, swift and oss (v3 dropped swift and oss: layout.py's
version findings refuse them there), and filesystem when MY_REG_FLEET_SHARED_DIR=true
says MY_REG_DIR is shared (NFS and the like). Never shared: inmemory, a driver word the
supervisor does not know (the registry's names are lower case: ``S3`` is not one), and a
driver it cannot tell.

``storage_of`` reads MY_REG_CONF (one file, when set and not overridden); everything
else here is pure.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

from supervisor.settings.registry_env import RegistryEnv

if TYPE_CHECKING:  # conflicts.py runs these on a built model: no import at run time
    from supervisor.settings.model import Settings

STORAGE_VARIABLE = "REGISTRY_STORAGE"
FILESYSTEM = "filesystem"
INMEMORY = "inmemory"
# The registry's own names (factory.Register in registry/storage/driver/*), exactly.
SHARED_DRIVERS = ("s3", "s3aws", "azure", "gcs", "swift", "oss")
KNOWN_DRIVERS = (FILESYSTEM, INMEMORY, *SHARED_DRIVERS)
# Keys of the storage section that are not a driver (configuration.Storage.Type()). They
# are also what the fingerprint leaves out: how this member purges uploads, goes read-only
# (gc turns maintenance.readonly on and off), caches descriptors,
# allows deletes, redirects downloads and bounds tag lookups says nothing about where the
# data is, and may differ between members for a while (a rolling change).
NOT_DRIVERS = ("maintenance", "cache", "delete", "redirect", "tag")
# A config file larger than this is not read: no registry config is near it.
CONFIG_MAX_BYTES = 1 << 20
# Hex characters of the HMAC-SHA256 the fingerprint keeps (64 bits): enough to tell
# configurations apart, never to recover them (the key is the fleet's HTTP secret).
FINGERPRINT_HEX_CHARS = 16
# Changes whenever what the fingerprint covers changes: members on different supervisor
# versions then differ for the length of a rolling update, and say so.
FINGERPRINT_SCHEME = 1

_WORD = re.compile(r"[A-Za-z0-9_.-]+")
# A block mapping entry with a plain key: `  key:` or `  key: value`.
_KEY_LINE = re.compile(
    r"(?P<indent> *)(?P<key>[A-Za-z0-9_][A-Za-z0-9_.-]*)[ ]*:(?:[ ]+(?P<value>.*))?"
)
_COMMENT = re.compile(r"(?:^|[ ]+)#.*\Z")
_DOUBLE_QUOTED = re.compile(r'"(?P<inner>[^"\\]*)"(?P<rest>.*)')
_SINGLE_QUOTED = re.compile(r"'(?P<inner>(?:[^']|'')*)'(?P<rest>.*)")
# A plain scalar cannot start with these (YAML's indicators): what follows is no plain value.
_INDICATORS = frozenset("&*!|>[]{}@`%,\"'#")


class Origin(StrEnum):
    """What names the driver."""

    ENVIRONMENT = "REGISTRY_STORAGE"
    CONFIG = "MY_REG_CONF"
    DEFAULT = "default"  # the image's own config


@dataclass(frozen=True)
class ConfigStorage:
    """What a config file's ``storage:`` section says: a driver and its parameters as
    (NAME, value) pairs named as the env would set them (``REGISTRY_STORAGE_S3_BUCKET``),
    or ``driver`` None and why it cannot be told."""

    driver: str | None
    parameters: tuple[tuple[str, str], ...] = ()
    unknown_why: str = ""


@dataclass(frozen=True)
class Storage:
    """The registry's storage as the settings configure it."""

    driver: str | None  # as the registry gets it (case kept); None: cannot tell
    origin: Origin
    shared: bool  # every member reaches the same data (see the module docstring)
    # The driver's parameters, config file's first, then REGISTRY_STORAGE_<DRIVER>* over
    # them, as sorted (NAME in upper case, value) pairs; and MY_REG_DIR for filesystem.
    parameters: tuple[tuple[str, str], ...] = ()
    data_dir: str | None = None
    unknown_why: str = ""  # driver None: what could not be read

    @property
    def known(self) -> bool:
        """Whether the driver is one of the registry's (exactly as it names them)."""
        return self.driver in KNOWN_DRIVERS

    def describe(self) -> str:
        """The storage in one phrase, for `check` and error lines."""
        if self.driver is None:
            return f"an unknown storage driver ({self.unknown_why})"
        where = {
            Origin.ENVIRONMENT: f"REGISTRY_STORAGE={self.driver}",
            Origin.CONFIG: "MY_REG_CONF",
            Origin.DEFAULT: "the image's config",
        }[self.origin]
        if self.driver == FILESYSTEM:
            disk = "a shared file system" if self.shared else "this host's disk"
            return f"the filesystem driver on MY_REG_DIR={self.data_dir} ({disk}; {where})"
        return f"the {self.driver} driver ({where})"

    def fingerprint(self, key: bytes) -> str:
        """HMAC-SHA256 of the driver and its parameters under ``key``, hex, shortened.

        Equal on two members when they store alike; the parameters (secrets among them)
        cannot be recovered nor guessed from it without the key. ValueError for an empty
        key: a fingerprint anyone can recompute would let bucket names be guessed.
        """
        if not key:
            raise ValueError("a fingerprint needs a key (the fleet's HTTP secret)")
        payload = json.dumps(
            {
                "scheme": FINGERPRINT_SCHEME,
                "driver": self.driver,
                "parameters": [list(pair) for pair in self.parameters],
                "data_dir": self.data_dir,
            },
            sort_keys=True,
            separators=(",", ":"),
        )
        digest = hmac.new(key, payload.encode(), hashlib.sha256).hexdigest()
        return digest[:FINGERPRINT_HEX_CHARS]


def storage_of(settings: Settings) -> Storage:
    """The registry's storage for these settings; reads MY_REG_CONF when it decides."""
    text = None
    if (
        settings.conf is not None
        and RegistryEnv(settings.registry_env).get(STORAGE_VARIABLE) is None
    ):
        text = _read_config(settings.conf)
    return resolve_storage(
        settings.registry_env,
        config_text=text,
        conf_given=settings.conf is not None,
        data_dir=str(settings.dir),
        shared_dir=settings.fleet_shared_dir,
    )


def storage_fingerprint(settings: Settings, key: bytes) -> str:
    """The storage's fingerprint under ``key`` (the fleet's HTTP secret): what members
    publish and compare. Reads MY_REG_CONF as ``storage_of`` does: compute it once per
    loaded settings, not per heartbeat."""
    return storage_of(settings).fingerprint(key)


def resolve_storage(
    registry_env: dict[str, str],
    *,
    config_text: str | None,
    conf_given: bool,
    data_dir: str,
    shared_dir: bool,
) -> Storage:
    """The storage from the REGISTRY_* variables and MY_REG_CONF's text (pure).

    ``conf_given`` with ``config_text`` None: MY_REG_CONF is set but could not be read.
    """
    env = RegistryEnv(registry_env)
    given = env.get(STORAGE_VARIABLE)
    from_file: tuple[tuple[str, str], ...] = ()
    if given is not None:
        value = given[1].strip()
        if not _WORD.fullmatch(value):
            return Storage(
                None,
                Origin.ENVIRONMENT,
                False,
                unknown_why=f"{given[0]} is not a driver name alone",
            )
        origin, driver = Origin.ENVIRONMENT, value
    elif conf_given:
        found = (
            ConfigStorage(None, unknown_why="MY_REG_CONF could not be read")
            if config_text is None
            else config_storage(config_text)
        )
        if found.driver is None:
            return Storage(None, Origin.CONFIG, False, unknown_why=found.unknown_why)
        origin, driver, from_file = Origin.CONFIG, found.driver, found.parameters
    else:
        origin, driver = Origin.DEFAULT, FILESYSTEM
    parameters = dict(from_file)
    section = f"{STORAGE_VARIABLE}_{driver.upper()}"
    for key, value in env.starting(section):
        upper = key.upper()
        if upper == section or upper.startswith(f"{section}_"):
            parameters[upper] = value.strip()
    shared = shared_dir if driver == FILESYSTEM else driver in SHARED_DRIVERS
    return Storage(
        driver,
        origin,
        shared,
        parameters=tuple(sorted(parameters.items())),
        data_dir=data_dir if driver == FILESYSTEM else None,
    )


def config_storage(text: str) -> ConfigStorage:  # noqa: PLR0911 (one return per shape refused)
    """The driver a config.yml's ``storage:`` section names, and its parameters (pure).

    Only a plain block-style section is read: a top-level ``storage:`` whose entries are
    ``key:`` lines (or ``storage: driver`` alone), exactly one of them a driver. Anything a
    line-based reading could get wrong gives ``driver`` None and why.
    """
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").split("\n")]
    content = [line for line in lines if _content(line)]
    for position, line in enumerate(content):
        if line.startswith("%") or (position > 0 and line.startswith(("---", "..."))):
            return _unknown("it holds YAML directives or several documents")
        if "\t" in line[: len(line) - len(line.lstrip(" \t"))]:
            return _unknown("a tab indents a line")
    storage: list[tuple[int, str | None]] = []  # (line index, inline value)
    for number, line in enumerate(lines):
        if not _content(line) or line.startswith((" ", "---")):
            continue
        match = _KEY_LINE.fullmatch(line)
        if match is None:
            return _unknown(f"its top level is not plain `key:` lines ({_shortened(line)!r})")
        if match["key"] == "storage":
            storage.append((number, match["value"]))
    if len(storage) != 1:
        return _unknown("it has no storage section" if not storage else "storage is given twice")
    [(start, value)] = storage
    block = _block(lines, start)
    if value is None or _empty(value):
        return _driver_of(block)
    inline = _scalar(value)
    if block or inline is None or not _WORD.fullmatch(inline) or inline in NOT_DRIVERS:
        return _unknown(f"storage: {_shortened(value.strip())!r} is not a driver name alone")
    return ConfigStorage(inline)


def _driver_of(block: list[str]) -> ConfigStorage:  # noqa: PLR0911 (one return per shape refused)
    """The one driver of a storage section's lines, and its parameters."""
    if not block:
        return _unknown("its storage section is empty")
    indent = _indent(block[0])
    entries: dict[str, list[str]] = {}
    current: list[str] = []
    for line in block:
        if _indent(line) < indent:
            return _unknown("its storage section is not indented evenly")
        if _indent(line) > indent:
            current.append(line)
            continue
        match = _KEY_LINE.fullmatch(line)
        if match is None:
            return _unknown(
                f"its storage section has a line that is not `key:` ({_shortened(line.strip())!r})"
            )
        if match["key"] in entries:
            return _unknown(f"storage.{match['key']} twice")
        current = [line]
        entries[match["key"]] = current
    drivers = [key for key in entries if key not in NOT_DRIVERS]
    if len(drivers) != 1:
        named = ", ".join(drivers) or "none"
        return _unknown(f"its storage section names {named}, not exactly one driver")
    [driver] = drivers
    parameters = _parameters(entries[driver], f"REGISTRY_STORAGE_{driver.upper()}")
    if parameters is None:
        return _unknown(f"storage.{driver} is not plain `key: value` lines")
    return ConfigStorage(driver, parameters)


def _parameters(lines: list[str], prefix: str) -> tuple[tuple[str, str], ...] | None:
    """A driver's entry as (env-style NAME, value) pairs, as REGISTRY_STORAGE_<DRIVER>_*
    would set them; None when a line is not a plain ``key: value`` (a list, a block or
    flow value, an anchor or alias, a tag): the env's reading could then not be matched."""
    head = _KEY_LINE.fullmatch(lines[0])
    if head is None or not _empty(head["value"]):
        return None  # `s3: {bucket: x}` or an alias: not read
    pairs: list[tuple[str, str]] = []
    path: list[tuple[int, str]] = []  # (indent, KEY) of the mappings this line is in
    for line in lines[1:]:
        match = _KEY_LINE.fullmatch(line)
        if match is None:
            return None
        indent, key = len(match["indent"]), match["key"].upper()
        while path and path[-1][0] >= indent:
            path.pop()
        if _empty(match["value"]):
            path.append((indent, key))
            continue
        value = _scalar(match["value"])
        if value is None:
            return None
        pairs.append(("_".join([prefix, *(k for _i, k in path), key]), value))
    return tuple(pairs)


def _block(lines: list[str], start: int) -> list[str]:
    """The content lines after ``start`` that are indented below it."""
    block = []
    for line in lines[start + 1 :]:
        if not _content(line):
            continue
        if not line.startswith((" ", "\t")):
            break
        block.append(line.rstrip())
    return block


def _content(line: str) -> bool:
    stripped = line.strip()
    return bool(stripped) and not stripped.startswith("#")


def _empty(value: str | None) -> bool:
    """Whether a ``key:`` line has no value (a comment alone is none)."""
    return value is None or not _COMMENT.sub("", value).strip()


def _scalar(text: str) -> str | None:
    """A plain or simply quoted YAML scalar's value, its comment removed; None for
    anything else (flow, block, anchor, alias, tag, escapes)."""
    text = text.strip()
    for pattern in (_DOUBLE_QUOTED, _SINGLE_QUOTED):
        match = pattern.fullmatch(text)
        if match is not None:
            if _COMMENT.sub("", match["rest"]).strip():
                return None
            return (
                match["inner"].replace("''", "'") if pattern is _SINGLE_QUOTED else match["inner"]
            )
    plain = _COMMENT.sub("", text).strip()
    if not plain or plain[0] in _INDICATORS or plain.startswith(("- ", "? ", ": ")):
        return None
    return plain


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _shortened(text: str) -> str:
    return text if len(text) <= 40 else f"{text[:37]}..."


def _unknown(why: str) -> ConfigStorage:
    return ConfigStorage(None, unknown_why=f"MY_REG_CONF: {why}")


def _read_config(path: Path) -> str | None:
    """MY_REG_CONF's text; None if it cannot be read whole, as UTF-8."""
    try:
        with path.open("rb") as file:
            data = file.read(CONFIG_MAX_BYTES + 1)
    except OSError:
        return None
    if len(data) > CONFIG_MAX_BYTES:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None
