"""The engine's validation is not ours: whatever our check accepts, the engine accepts.

Hypothesis writes env files aimed at what the Docker engine validates when a container is
created: image references, container names, bind-mount sources, published addresses and
ports, memory limits, stop timeouts and REGISTRY_* variables. Each example either fails to
load (ConfigError: refused by our check, which is fine) or its network holder and registry
are created by the real `Engine` against the real engine, as a reload's check creates them
(`check_creatable`, candidate names) and as `run` creates them (the real names), never
started, and removed at once. A refusal there (400, 409, 500) is a value our check should
have refused. A well-formed image that is not present locally answers 404 "No such image":
not a refusal of the settings, since `run` pulls it.

Paths are written under the example's own directory, and made to exist as `run` would
find them: config, TLS and htpasswd files written before loading, the data dir created
after loading (as `startup()` does).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

import docker
import docker.errors
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.certs import self_signed_pem
from support.docker import remove_containers

from supervisor.engine.client import CANDIDATE_SUFFIX, Engine
from supervisor.errors import ConfigError, ContainerActionFailed, ImageUnavailable
from supervisor.layout import V2_LAYOUT
from supervisor.settings import load_settings
from supervisor.spec import HOLDER_SUFFIX, MANAGED_BY_LABEL, derive_spec, holder_spec

pytestmark = pytest.mark.integration

# Placeholders the strategies write; each example replaces them with its own directory
# and the test's random name prefix (strategies must not depend on the run).
ROOT = "@ROOT@"
NAME = "@NAME@"
# One valid bcrypt entry (cost 4, password "pw"): the file only has to pass our check.
HTPASSWD = "it:$2b$04$Fs9cqQ0ID6XSqt6REJr9IOX2q8W0p/suXARnD7U9qyq5EZt8Qy.za\n"
CONFIG_YML = "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: /var/lib/registry\n"
# An example that reaches the engine creates four containers (two candidates, then the real
# two) in about 0.15 s; one our check refuses costs milliseconds. 400 examples, about 60 of
# them created, take 10 to 15 s here. RS_ENGINE_EXAMPLES=2000 for a longer campaign.
MAX_EXAMPLES = int(os.environ.get("RS_ENGINE_EXAMPLES", "400"))

# --- strategies: values near the edges of what the engine checks -----------------------

# References to the local test image, in the spellings the engine normalises to it.
LOCAL_IMAGES = [
    ("registry", "2"),
    ("registry", "latest"),
    ("library/registry", "2"),
    ("docker.io/registry", "2"),
    ("docker.io/library/registry", "2"),
    ("index.docker.io/library/registry", "2"),
]
DOMAINS = [
    "localhost",
    "localhost:5000",
    "LOCALHOST",
    "Registry",
    "Reg.Example.com:443",
    "127.0.0.1:5000",
    "[::1]:5000",
    "[2001:db8::1]",
    "docker.io",
    "index.docker.io",
    "my-host.example",
    "a_b.example",
    "host:0",
]
VALID_COMPONENTS = st.sampled_from(["registry", "library", "a__b", "a___b", "a---b", "a.b", "x"])
INVALID_COMPONENTS = st.one_of(
    st.sampled_from(["a..b", "a._b", "_a", "a-", "Foo"]),
    st.text(alphabet="abzAZ09._-", min_size=1, max_size=6),
)
# Around the 255-character limit on the repository name.
LONG_COMPONENT = st.integers(min_value=230, max_value=250).map(lambda n: "r" * n)


@st.composite
def repositories(draw: st.DrawFn) -> str:
    domain = draw(st.one_of(st.none(), st.sampled_from(DOMAINS)))
    component = st.one_of(VALID_COMPONENTS, VALID_COMPONENTS, LONG_COMPONENT, INVALID_COMPONENTS)
    components = draw(st.lists(component, min_size=1, max_size=3))
    return "/".join(([domain] if domain else []) + components)


TAGS = st.one_of(
    st.sampled_from(["2", "latest", "2.8.2", "v2_x", "_x", "A-Z.0", ".x", "-x", "é", " 2"]),
    st.sampled_from(["x" * 128, "x" * 129, "a:b", "a@b"]),
    st.text(alphabet="aZ09._-:@ ", min_size=1, max_size=10),
)
# A tag or digest in MY_REG_IMAGE itself.
FULL_REFERENCES = st.sampled_from(
    ["registry:2", "registry@sha256:" + "a" * 64, "localhost:5000/registry:2", "0" * 64]
)
images = st.one_of(
    st.sampled_from(LOCAL_IMAGES),
    st.sampled_from(LOCAL_IMAGES),  # twice: most examples should really create
    st.tuples(repositories(), st.one_of(st.just("2"), TAGS)),
    st.tuples(FULL_REFERENCES, st.just("2")),
)
names = st.one_of(
    st.just(NAME),
    st.text(alphabet="aZ09._-", min_size=1, max_size=8).map(lambda tail: NAME + tail),
    st.sampled_from([f"-{NAME}", f".{NAME}", f"_{NAME}", f"Z{NAME}", f"{NAME}-net"]),
    st.sampled_from([f"{NAME}/x", f"{NAME} x", f"{NAME}é", f"{NAME}:1"]),
    # Names that cannot carry the prefix: each must be refused before the engine sees it.
    st.sampled_from(["a", "Z", "0", "é", "_", "-"]),
)
SEGMENTS = st.one_of(
    st.sampled_from(
        ["a:b", "a,b", "a b", "a=b", "é", "🐳", "-x", ".x", "a'b", 'a"b', "a\\b", "%41", "#x"]
    ),
    st.sampled_from(["a\nb", "a\tb", "$HOME", "x" * 255, "d"]),
    st.text(alphabet="ab:, =é-._", min_size=1, max_size=8).filter(lambda s: s not in (".", "..")),
)
TAILS = st.sampled_from(["", "/", "/.", "/..", "/../d", "//"])


@st.composite
def paths(draw: st.DrawFn, file_names: st.SearchStrategy[str] | None = None) -> str:
    """An absolute path under the example's directory, odd characters in its segments."""
    parts = draw(st.lists(SEGMENTS, min_size=1, max_size=3))
    tail = draw(TAILS)
    if file_names is not None:
        parts.append(draw(file_names))
    return f"{ROOT}/" + "/".join(parts) + tail


FILE_NAMES = st.sampled_from(["config.yml", "c:1.yml", "c,1 =é.yml", ".yml", "x" * 255])
TLS_FILES = st.sampled_from(["certificate.pem", "c:1.pem", "c,1 =é.pem", ".pem", "a/b.pem", ".."])
BINDS = st.one_of(
    st.sampled_from(["127.0.0.1", "0.0.0.0", "::", "::1", "::ffff:127.0.0.1", "::FFFF:7f00:1"]),
    st.sampled_from(["fe80::1", "fe80::1%lo", "127.1", "[::1]", " 127.0.0.1", "2001:db8::1"]),
    st.ip_addresses().map(str),
)
PORTS = st.one_of(
    st.sampled_from(["1", "80", "5000", "65535", "0", "65536", "05001", "+5001", "5_001"]),
    st.integers(min_value=1, max_value=65535).map(str),
)
MEMORIES = st.one_of(
    st.sampled_from(["6m", "6M", "6291456", "6291455", "6144k", "5m", "1024g", "1025g"]),
    st.sampled_from([" 512m ", "1g", "1.5g", "512mb", "0"]),
    st.integers(min_value=6, max_value=4096).map(lambda n: f"{n}m"),
)
STOP_TIMEOUTS = st.one_of(
    st.integers(min_value=-1, max_value=3601).map(str), st.sampled_from(["1.5", "10s"])
)
BOOLEANS = st.sampled_from(["true", "false"])
REGISTRY_KEYS = st.one_of(
    st.sampled_from(
        [
            "REGISTRY_HTTP_SECRET",
            "REGISTRY_LOG_LEVEL",
            "REGISTRY_STORAGE_DELETE_ENABLED",
            "REGISTRY_HTTP_ADDR",
            "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY",
            "REGISTRY_AUTH_HTPASSWD_REALM",
        ]
    ),
    # Names as compose's env file can hold them: letters of any script, digits, _ . -
    # (no blank or line break: compose has no quoted names).
    st.text(alphabet="ABZ_az09.-é", min_size=1, max_size=10).map(lambda s: "REGISTRY_" + s),
)
REGISTRY_VALUES = st.one_of(
    st.sampled_from(["", " ", "x", "a\nb", "a=b", "${HOME}", "'q'", '"dq"', "é🐳", "\t", "#c"]),
    st.sampled_from([":5000", "/var/lib/registry/x", "inmemory", "true", "a\\b", "\r\n"]),
    st.text(max_size=20),
)
OPTIONAL = {
    "MY_REG_CONF": paths(FILE_NAMES),
    "MY_REG_TLS_DIR": paths(),
    "MY_REG_TLS_CRT": TLS_FILES,
    "MY_REG_TLS_KEY": TLS_FILES.map(lambda n: n.replace("certificate", "key")),
    "MY_REG_AUTH_HTPASSWD": paths(FILE_NAMES.map(lambda n: n.replace("yml", "htpasswd"))),
    "MY_REG_BIND": BINDS,
    "MY_REG_PORT": PORTS,
    "MY_REG_MEMORY": MEMORIES,
    "MY_REG_STOP_TIMEOUT": STOP_TIMEOUTS,
    "MY_REG_READ_ONLY": BOOLEANS,
    "MY_REG_NO_NEW_PRIVILEGES": BOOLEANS,
    "MY_REG_CAP_DROP_ALL": BOOLEANS,
}


@st.composite
def environments(draw: st.DrawFn) -> dict[str, str]:
    """MY_REG_* and REGISTRY_* variables for one env file (placeholders not yet filled)."""
    image, tag = draw(images)
    env = {"MY_REG_IMAGE": image, "MY_REG_TAG": tag, "MY_REG_NAME": draw(names)}
    env["MY_REG_DIR"] = draw(paths())
    # A few odd settings at a time: with all of them odd, nearly every example is refused.
    for key in draw(st.lists(st.sampled_from(sorted(OPTIONAL)), max_size=4, unique=True)):
        env[key] = draw(OPTIONAL[key])
    env.update(draw(st.dictionaries(REGISTRY_KEYS, REGISTRY_VALUES, max_size=3)))
    return env


# --- the world of one test ------------------------------------------------------------------


def env_file_text(env: dict[str, str]) -> str:
    """The env file for ``env``: values double-quoted with compose's escapes (\\$ keeps a $
    from being expanded)."""
    lines = []
    for key, value in env.items():
        escaped = (
            value.replace("\\", "\\\\")
            .replace('"', '\\"')
            .replace("$", "\\$")
            .replace("\n", "\\n")
            .replace("\r", "\\r")
        )
        lines.append(f'{key}="{escaped}"\n')
    return "".join(lines)


def write_file(path: str, data: bytes) -> None:
    """Write ``data`` at ``path``, parents created; a path that cannot be made is left for
    the check to refuse."""
    with suppress(OSError, ValueError):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        Path(path).write_bytes(data)


@dataclass
class World:
    """One test's engine, name prefix and directory; every name it may have created."""

    engine: Engine
    client: docker.DockerClient
    root: Path
    prefix: str = field(default_factory=lambda: f"rs-pe-{secrets.token_hex(4)}")
    names: set[str] = field(default_factory=set)
    tls: tuple[bytes, bytes] = field(default_factory=self_signed_pem)
    examples: int = 0
    created: int = 0

    def materialise(self, env: dict[str, str]) -> Path:
        """Fill in the placeholders, write the files the settings name, and the env file."""
        self.examples += 1
        case = self.root / str(self.examples)
        case.mkdir()
        filled = {
            key: value.replace(ROOT, str(case)).replace(NAME, self.prefix)
            for key, value in env.items()
        }
        certificate, key = self.tls
        if "MY_REG_CONF" in filled:
            write_file(filled["MY_REG_CONF"], CONFIG_YML.encode())
        if "MY_REG_AUTH_HTPASSWD" in filled:
            write_file(filled["MY_REG_AUTH_HTPASSWD"], HTPASSWD.encode())
        if "MY_REG_TLS_DIR" in filled:
            tls_dir = filled["MY_REG_TLS_DIR"]
            crt = filled.get("MY_REG_TLS_CRT", "certificate.pem")
            key_name = filled.get("MY_REG_TLS_KEY", "key.pem")
            write_file(os.path.join(tls_dir, crt), certificate)
            write_file(os.path.join(tls_dir, key_name), key)
        filled["MY_REG_STATE_DIR"] = str(case / "state")
        env_file = case / "registry.env"
        env_file.write_text(env_file_text(filled), encoding="utf-8")
        return env_file

    def remove_leftovers(self) -> None:
        """Remove every container of a name this test used that carries our label."""
        wanted = {
            f"{name}{suffix}{candidate}"
            for name in self.names
            for suffix in ("", HOLDER_SUFFIX)
            for candidate in ("", CANDIDATE_SUFFIX)
        }
        remove_containers(self.client, MANAGED_BY_LABEL, wanted.__contains__)


@pytest.fixture
def world(docker_client: docker.DockerClient, tmp_path: Path) -> Iterator[World]:
    """The real engine, a random name prefix and no ambient MY_REG_*/REGISTRY_* variables
    (the environment wins over the env file); leftovers removed afterwards."""
    ambient = {k: v for k, v in os.environ.items() if k.startswith(("MY_REG_", "REGISTRY_"))}
    engine = Engine()
    state = World(engine=engine, client=docker_client, root=tmp_path)
    try:
        with mock.patch.dict(os.environ):
            for key in ambient:
                del os.environ[key]
            yield state
    finally:
        state.remove_leftovers()
        engine.close()


# Without this many examples reaching the engine the property would say little.
MIN_CREATED = 20


def test_settings_our_check_accepts_are_settings_the_engine_accepts(world: World) -> None:
    """Every generated env file is refused by our check or created by the engine (run and reload)."""

    @settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None)
    @given(env=environments())
    def example(env: dict[str, str]) -> None:
        env_file = world.materialise(env)
        try:
            loaded = load_settings(env_file)
        except ConfigError:
            return  # refused by our check
        try:
            loaded.dir.mkdir(parents=True, exist_ok=True)  # as startup() does
        except OSError:
            return  # startup() reports it as MY_REG_DIR, before the engine sees anything
        spec = derive_spec(loaded, V2_LAYOUT)
        holder = holder_spec(spec)
        world.names.add(spec.name)
        engine = world.engine
        try:
            # A reload's check: holder and registry under candidate names, removed again.
            engine.check_creatable(spec, holder, None)
            # `run`: the holder, then the registry in its network namespace, real names.
            created = [engine.create_holder(holder)]
            try:
                created.append(engine.create(spec, created[0].id))
            finally:
                for container in reversed(created):
                    engine.remove(container.id)
        except ImageUnavailable:
            # Only a well-formed reference to an image this engine does not have (404).
            assert None is engine.image_id(spec.image)
            return
        except ContainerActionFailed as err:
            pytest.fail(f"our check accepted settings the engine refuses: {err}")
        world.created += 1

    example()
    assert world.created >= MIN_CREATED, f"only {world.created} examples reached the engine"
