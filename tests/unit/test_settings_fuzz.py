"""Bad input, fuzzed: any env file and any environment give valid settings or exit 78.

Whatever hypothesis writes into the env file (text, quoting, invalid UTF-8, NUL bytes,
huge numbers, long and strange paths) or into MY_REG_* environment variables, the loader
returns Settings or raises ConfigError whose every line names a variable, and the CLI
exits 78 with one such line each, or 69 (settings valid, no engine at DOCKER_HOST). Never
a traceback or another exception, never a touched container: DOCKER_HOST points at a
socket that does not exist, and `run` is only called with settings that fail to load.
"""

from __future__ import annotations

import contextlib
import gc
import io
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.process import EX_CONFIG, EX_UNAVAILABLE

from supervisor.cli import main
from supervisor.errors import ConfigError
from supervisor.settings import Settings, load_settings

VARIABLES = sorted(f"MY_REG_{name.upper()}" for name in Settings.model_fields)
PREFIX = "registry-supervisor: "

# Values that have broken loaders before: numbers out of every range, float specials,
# unicode digits, paths that are relative, huge, NUL-bearing, or point at odd files.
TRICKY = [
    "",
    " ",
    "0",
    "-1",
    "65536",
    "1" * 5000,
    "9" * 400 + ".5",
    "1e309",
    "-1e-400",
    "nan",
    "inf",
    "-inf",
    "0x1F",
    "1_000",
    "\u0665\u0660\u0660\u0661",  # Arabic-Indic digits: int() accepts them
    "\uff15\uff10\uff10\uff11",  # full-width 5001
    "true",
    "FALSE",
    "on",
    "/",
    ".",
    "..",
    "~",
    "/dev/null",
    "/dev/zero",
    "/proc/self/environ",
    "/etc/shadow",
    "/" + "a" * 300,
    "/" + "a" * 5000,
    "/" + "/".join(["b" * 200] * 30),
    "/tmp/\udcff",
    "/tmp/\U0001f433",
    "/a\x00b",
    "\x00",
    "${HOME}",
    "$(id)",
    "'quoted'",
    '"dq"',
    "a=b=c",
    "#not-a-comment",
    "line\nbreak",
    "::",
    "::ffff:127.0.0.1",
    "fe80::1%eth0",
    "127.1",
    "999.1.1.1",
    "registry\u202e",
]

values = st.one_of(
    st.sampled_from(TRICKY),
    st.text(max_size=40),
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(min_size=1, max_size=40).map(lambda s: "/" + s),
)
# What the process environment can hold: no NUL, no lone surrogates.
env_values = values.filter(
    lambda v: "\x00" not in v and not any(0xD800 <= ord(c) <= 0xDFFF for c in v)
)
keys = st.one_of(
    st.sampled_from(VARIABLES),
    st.sampled_from(["REGISTRY_HTTP_SECRET", "REGISTRY_LOG_LEVEL", "OTHER", "my_reg_port"]),
    st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ_", min_size=1, max_size=12).map(
        lambda s: "MY_REG_" + s
    ),
    st.text(max_size=12),
)


@st.composite
def env_lines(draw: st.DrawFn) -> str:
    key, value = draw(keys), draw(values)
    shape = draw(st.sampled_from(["{k}={v}", "{k}='{v}'", '{k}="{v}"', "export {k}={v}", "{v}"]))
    return shape.format(k=key, v=value)


env_files = st.one_of(
    st.lists(env_lines(), max_size=8).map(
        lambda lines: "\n".join(lines).encode("utf-8", "surrogatepass")
    ),
    st.binary(max_size=200),
    st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
)
environments = st.dictionaries(st.sampled_from(VARIABLES), env_values, max_size=4)
fuzz = settings(
    # RS_FUZZ_EXAMPLES=5000 for a longer campaign than the default run.
    max_examples=int(os.environ.get("RS_FUZZ_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@contextlib.contextmanager
def world(environment: dict[str, str], env_file: bytes) -> Iterator[Path]:
    """An env file with these bytes, these MY_REG_* variables, and no Docker engine."""
    with tempfile.TemporaryDirectory(prefix="rs-fuzz-") as tmp:
        path = Path(tmp) / "fuzz.env"
        path.write_bytes(env_file)
        no_engine = {"DOCKER_HOST": f"unix://{tmp}/no-docker.sock"}
        with mock.patch.dict(os.environ, {**environment, **no_engine}):
            yield path


def assert_every_line_names_a_variable(problems: list[str]) -> None:
    assert problems, "a ConfigError without a problem"
    for line in problems:
        # MY_REG_* names are read case-insensitively, so a typo may be in lower case.
        assert line.upper().startswith(("MY_REG_", "REGISTRY_", "--ENV-FILE ")), line
        assert "Traceback" not in line


def run_cli(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        code = main(argv)
    # docker-py leaves a socket whose connect() failed to the garbage collector.
    gc.collect()
    return code, err.getvalue()


@fuzz
@given(environment=environments, env_file=env_files)
def test_loader_gives_settings_or_a_config_error_naming_variables(
    environment: dict[str, str], env_file: bytes
) -> None:
    """load_settings never raises anything but ConfigError, and each line names a variable."""
    with world(environment, env_file) as path:
        try:
            load_settings(path)
        except ConfigError as err:
            assert_every_line_names_a_variable(err.problems)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.filterwarnings("ignore::ResourceWarning")
@fuzz
@given(environment=environments, env_file=env_files)
def test_cli_exits_78_naming_variables_or_69_without_an_engine(
    environment: dict[str, str], env_file: bytes
) -> None:
    """`run` with bad settings exits 78, one line per variable; `check` with good ones, 69."""
    with world(environment, env_file) as path:
        try:
            load_settings(path)
        except ConfigError:
            code, err = run_cli(["run", "--env-file", str(path)])
            assert code == EX_CONFIG, err
            assert_every_line_names_a_variable(
                [line.removeprefix(PREFIX) for line in err.splitlines()]
            )
            return
        code, err = run_cli(["check", "--env-file", str(path)])
        assert code in (EX_UNAVAILABLE, EX_CONFIG), err
        assert "Traceback" not in err


@fuzz
@given(
    path=st.one_of(
        st.text(max_size=60),
        st.sampled_from(["", "/", "/dev/null", "/" + "a" * 5000, "/a\x00b", "/proc/1/mem"]),
    )
)
def test_any_env_file_path_is_a_file_or_a_config_error(path: str) -> None:
    """--env-file naming a missing, odd or overlong path is reported, never a traceback."""
    try:
        load_settings(Path(path))
    except ConfigError as err:
        assert_every_line_names_a_variable(err.problems)


# --- what the fuzzer found, pinned as plain examples ------------------------------------


def problems_for(env_file: bytes, tmp_path: Path) -> list[str]:
    path = tmp_path / "found.env"
    path.write_bytes(env_file)
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    return [line.replace(str(path), "F") for line in caught.value.problems]


def test_an_env_file_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    """Invalid UTF-8 raised UnicodeDecodeError from python-dotenv."""
    assert problems_for(b"MY_REG_PORT=5001\n\x80\n", tmp_path) == [
        "--env-file F: expected UTF-8 text (byte 17 is 0x80)"
    ]


def test_a_line_the_env_file_parser_skips_is_an_error(tmp_path: Path) -> None:
    """python-dotenv dropped unparseable lines with a log warning: a quoting slip in
    MY_REG_AUTH_HTPASSWD would have silently turned authentication off."""
    assert problems_for(b"MY_REG_PORT=5001\nMY_REG_TAG='2\n", tmp_path) == [
        "--env-file F: line 2: expected NAME=value, a comment or a blank"
    ]


def test_an_unknown_my_reg_variable_is_named_with_a_suggestion(tmp_path: Path) -> None:
    """A typo was ignored; for a security setting that is silently insecure."""
    assert problems_for(b"MY_REG_AUTH_HTPASWD=/etc/htpasswd\n", tmp_path) == [
        "MY_REG_AUTH_HTPASWD: expected a known MY_REG_* setting "
        "(did you mean MY_REG_AUTH_HTPASSWD?)"
    ]


def test_the_internal_registry_env_field_cannot_be_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MY_REG_REGISTRY_ENV made pydantic-settings raise SettingsError (a JSON decode)."""
    monkeypatch.setenv("MY_REG_REGISTRY_ENV", " ")
    assert problems_for(b"", tmp_path) == ["MY_REG_REGISTRY_ENV: expected a known MY_REG_* setting"]


def test_a_nul_byte_in_a_value_is_named(tmp_path: Path) -> None:
    """A NUL in MY_REG_DIR passed validation and made mkdir raise ValueError at start."""
    assert problems_for(b"MY_REG_DIR=/srv/a\x00b\n", tmp_path) == [
        "MY_REG_DIR: expected a value without NUL bytes"
    ]


def test_an_overlong_path_is_not_a_file_and_is_shortened_in_the_message(tmp_path: Path) -> None:
    """ENAMETOOLONG escaped Path.is_file() as OSError; the 5001-character value is cut."""
    [line] = problems_for(b"MY_REG_CONF=/" + b"a" * 5000 + b"\n", tmp_path)
    assert line == (
        "MY_REG_CONF='/" + "a" * 59 + "...(5001 characters)': "
        "expected an existing, readable config.yml file"
    )


def test_a_probe_timeout_too_large_for_a_socket_is_refused(tmp_path: Path) -> None:
    """1e10 s was valid and crashed the first probe with OverflowError (exit 70)."""
    assert problems_for(b"MY_REG_HEALTH_TIMEOUT=1e10\n", tmp_path) == [
        "MY_REG_HEALTH_TIMEOUT='1e10': expected a number of seconds above 0, at most 86400"
    ]
