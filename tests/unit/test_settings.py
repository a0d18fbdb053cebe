"""Settings: sources, precedence, validation messages, redaction."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest
from support.certs import MakeTls

from supervisor.errors import ConfigError
from supervisor.settings import LogFormat, PullPolicy, effective, load_settings, raw_setting

SEED_ENV = """\
MY_REG_TAG=latest
MY_REG_DIR=/var/lib/my_registry
MY_REG_PORT=5001
#MY_REG_CONF=
#MY_REG_TLS_DIR=/var/lib/my_registry_tls
#MY_REG_TLS_CRT=certificate.pem
#MY_REG_TLS_KEY=key.pem
"""


def write_env(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "registry.env"
    path.write_text(text)
    return path


def problems_for(env_file: Path | None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_settings(env_file)
    return caught.value.problems


def test_defaults_match_the_documented_table() -> None:
    """With no env file and no variables, every setting has its documented default."""
    settings = load_settings(None)
    assert (settings.image, settings.tag, settings.name) == ("registry", "latest", "my_registry")
    assert settings.dir == Path("/var/lib/my_registry")
    assert (settings.port, settings.bind) == (5001, "0.0.0.0")
    assert settings.conf is None and settings.tls_dir is None
    assert (settings.tls_crt, settings.tls_key) == ("certificate.pem", "key.pem")
    assert settings.pull is PullPolicy.MISSING
    assert (settings.health_interval, settings.health_timeout, settings.health_retries) == (5, 1, 3)
    assert settings.health_confirm_interval == 0.5
    assert settings.stop_on_exit is True
    assert settings.log_format is LogFormat.AUTO
    assert settings.registry_env == {}


SHIPPED_ENV = Path(__file__).resolve().parents[2] / "packaging" / "registry.env"


def test_the_shipped_env_file_documents_every_setting_with_its_default() -> None:
    """packaging/registry.env has a commented NAME=default line for every MY_REG_* setting
    (tests/systemd checks the same on the installed package); the member's default is the
    host name, documented as empty."""
    documented = dict(re.findall(r"^#(MY_REG_\w+)=(.*)$", SHIPPED_ENV.read_text(), re.MULTILINE))
    actual = {
        key: value
        for key, value in effective(load_settings(SHIPPED_ENV)).items()
        if key.startswith("MY_REG_")
    }
    assert set() == set(actual) - set(documented)
    assert socket.gethostname().startswith(actual.pop("MY_REG_FLEET_MEMBER"))
    assert "" == documented["MY_REG_FLEET_MEMBER"]
    assert [] == [
        f"{name}: documented {documented[name]!r}, effective {value!r}"
        for name, value in actual.items()
        if not _same_setting(value, documented[name])
    ]


def _same_setting(actual: str, documented: str) -> bool:
    try:
        return float(actual) == float(documented)
    except ValueError:
        return actual.lower() == documented.lower()


def test_the_seeds_env_file_loads_unchanged(tmp_path: Path) -> None:
    """The blog post's .env, comments included, is a valid env file."""
    settings = load_settings(write_env(tmp_path, SEED_ENV))
    assert settings.port == 5001
    assert settings.conf is None


def test_default_env_file_is_dot_env_in_the_working_directory(tmp_path: Path) -> None:
    """Without --env-file, ./.env is read when present."""
    (tmp_path / ".env").write_text("MY_REG_PORT=6000\n")
    assert load_settings(None).port == 6000


def test_env_file_wins_over_defaults(tmp_path: Path) -> None:
    """A value in the env file replaces the default."""
    assert load_settings(write_env(tmp_path, "MY_REG_NAME=reg2\n")).name == "reg2"


def test_process_environment_wins_over_env_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As in compose, a variable set in the environment overrides the file."""
    monkeypatch.setenv("MY_REG_PORT", "7000")
    assert load_settings(write_env(tmp_path, "MY_REG_PORT=6000\n")).port == 7000


def test_registry_variables_pass_through_with_environment_winning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """REGISTRY_* from the file and the environment reach the container; env wins."""
    monkeypatch.setenv("REGISTRY_LOG_LEVEL", "debug")
    env_file = write_env(
        tmp_path, "REGISTRY_LOG_LEVEL=info\nREGISTRY_HTTP_SECRET=s3cret\nOTHER=ignored\n"
    )
    settings = load_settings(env_file)
    assert settings.registry_env == {
        "REGISTRY_LOG_LEVEL": "debug",
        "REGISTRY_HTTP_SECRET": "s3cret",
    }


def test_missing_explicit_env_file_is_a_config_error(tmp_path: Path) -> None:
    """--env-file naming a file that does not exist is reported, not skipped."""
    missing = tmp_path / "nope.env"
    assert problems_for(missing) == [
        f"--env-file {missing}: expected an existing, readable env file"
    ]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("MY_REG_PORT=abc", "MY_REG_PORT='abc': expected a TCP port number from 1 to 65535"),
        ("MY_REG_PORT=0", "MY_REG_PORT='0': expected a TCP port number from 1 to 65535"),
        ("MY_REG_PORT=65536", "MY_REG_PORT='65536': expected a TCP port number from 1 to 65535"),
        ("MY_REG_DIR=data", "MY_REG_DIR='data': expected an absolute path"),
        (
            "MY_REG_CONF=/no/such/config.yml",
            "MY_REG_CONF='/no/such/config.yml': expected an existing, readable config.yml file",
        ),
        (
            "MY_REG_TLS_DIR=/no/such/dir",
            "MY_REG_TLS_DIR='/no/such/dir': expected an existing directory",
        ),
        (
            "MY_REG_HEALTH_INTERVAL=0",
            "MY_REG_HEALTH_INTERVAL='0': expected a number of seconds above 0, at most 86400",
        ),
        (
            "MY_REG_HEALTH_INTERVAL=-1",
            "MY_REG_HEALTH_INTERVAL='-1': expected a number of seconds above 0, at most 86400",
        ),
        (
            "MY_REG_HEALTH_TIMEOUT=nan",
            "MY_REG_HEALTH_TIMEOUT='nan': expected a number of seconds above 0, at most 86400",
        ),
        (
            "MY_REG_HEALTH_RETRIES=0",
            "MY_REG_HEALTH_RETRIES='0': expected a whole number of at least 1",
        ),
        (
            "MY_REG_HEALTH_CONFIRM_INTERVAL=0",
            "MY_REG_HEALTH_CONFIRM_INTERVAL='0': expected a number of seconds above 0, "
            "at most MY_REG_HEALTH_INTERVAL",
        ),
        (
            "MY_REG_HEALTH_CONFIRM_INTERVAL=6",
            "MY_REG_HEALTH_CONFIRM_INTERVAL='6': expected a number of seconds above 0, "
            "at most MY_REG_HEALTH_INTERVAL (now 5)",
        ),
        (
            "MY_REG_PULL=sometimes",
            "MY_REG_PULL='sometimes': expected one of missing, always, never",
        ),
        ("MY_REG_LOG_FORMAT=xml", "MY_REG_LOG_FORMAT='xml': expected one of auto, json, console"),
        (
            "MY_REG_NAME=-bad",
            "MY_REG_NAME='-bad': expected a container name of at least 2 characters "
            "([a-zA-Z0-9][a-zA-Z0-9_.-]+)",
        ),
        ("MY_REG_BIND=localhost", "MY_REG_BIND='localhost': expected an IPv4 or IPv6 address"),
        ("MY_REG_STOP_ON_EXIT=perhaps", "MY_REG_STOP_ON_EXIT='perhaps': expected true or false"),
    ],
)
def test_each_bad_setting_gets_one_line_naming_it(tmp_path: Path, line: str, expected: str) -> None:
    """A bad value is reported as VARIABLE='value': expected <what is valid>."""
    assert problems_for(write_env(tmp_path, line + "\n")) == [expected]


def test_tls_files_must_exist_in_the_tls_dir(tmp_path: Path, make_tls: MakeTls) -> None:
    """With MY_REG_TLS_DIR set, a missing certificate or key is named."""
    tls = tmp_path / "tls"
    make_tls(tls)[1].unlink()
    problems = problems_for(write_env(tmp_path, f"MY_REG_TLS_DIR={tls}\n"))
    assert problems == [f"MY_REG_TLS_KEY='key.pem': expected a readable file in {tls}"]


def test_every_bad_setting_is_reported_at_once(tmp_path: Path) -> None:
    """Several bad settings give several lines, one each."""
    problems = problems_for(write_env(tmp_path, "MY_REG_PORT=x\nMY_REG_DIR=rel\nMY_REG_PULL=no\n"))
    assert [line.split("=")[0] for line in problems] == ["MY_REG_DIR", "MY_REG_PORT", "MY_REG_PULL"]


def test_blank_values_mean_unset(tmp_path: Path) -> None:
    """`MY_REG_CONF=` leaves the setting at its default, as compose does."""
    assert load_settings(write_env(tmp_path, "MY_REG_CONF=\nMY_REG_PORT=\n")).port == 5001


def test_effective_settings_redact_secrets(tmp_path: Path) -> None:
    """Secret-looking REGISTRY_* values are masked; others are shown."""
    env_file = write_env(
        tmp_path,
        "REGISTRY_HTTP_SECRET=s3cret\nREGISTRY_PROXY_PASSWORD=pw\nREGISTRY_LOG_LEVEL=info\n",
    )
    shown = effective(load_settings(env_file))
    assert shown["REGISTRY_HTTP_SECRET"] == "********"
    assert shown["REGISTRY_PROXY_PASSWORD"] == "********"
    assert shown["REGISTRY_LOG_LEVEL"] == "info"
    assert shown["MY_REG_STOP_ON_EXIT"] == "true"
    assert "s3cret" not in repr(shown)


def test_effective_settings_redact_secrets_inside_values(tmp_path: Path) -> None:
    """A URL's password and an Authorization header are masked; the rest is shown."""
    env_file = write_env(
        tmp_path,
        "REGISTRY_PROXY_REMOTEURL=https://user:pass@registry-1.docker.io\n"
        "REGISTRY_NOTIFICATIONS_ENDPOINTS="
        """'[{"name": "hook", "headers": {"Authorization": ["Bearer abc"]}}]'\n""",
    )
    shown = effective(load_settings(env_file))
    assert {
        "REGISTRY_PROXY_REMOTEURL": "https://user:********@registry-1.docker.io",
        "REGISTRY_NOTIFICATIONS_ENDPOINTS": (
            '[{"name": "hook", "headers": {"Authorization": ["********"]}}]'
        ),
    }.items() <= shown.items()


def test_an_error_line_masks_a_url_password(tmp_path: Path) -> None:
    """A bad value is shown without the password it carries."""
    problems = problems_for(write_env(tmp_path, "MY_REG_BIND=https://u:pw@host\n"))
    assert ["MY_REG_BIND='https://u:********@host': expected an IPv4 or IPv6 address"] == problems


def test_a_long_bad_value_is_redacted_before_it_is_shortened(tmp_path: Path) -> None:
    """Shortening first would cut the URL before its '@' and show part of the password."""
    password = "p" * 100
    problems = problems_for(write_env(tmp_path, f"MY_REG_BIND=https://u:{password}@host\n"))
    assert ["MY_REG_BIND='https://u:********@host': expected an IPv4 or IPv6 address"] == problems


@pytest.mark.parametrize(
    ("lines", "url"),
    [
        ("", "http://127.0.0.1:5001/v2/"),
        ("MY_REG_BIND=::\n", "http://[::1]:5001/v2/"),
        ("MY_REG_BIND=127.0.0.2\nMY_REG_PORT=6001\n", "http://127.0.0.2:6001/v2/"),
    ],
)
def test_probe_url_targets_the_published_port(tmp_path: Path, lines: str, url: str) -> None:
    """The probe asks the published port; an unspecified bind means loopback."""
    assert load_settings(write_env(tmp_path, lines)).probe_url == url


def test_probe_speaks_https_when_tls_is_on(tmp_path: Path, make_tls: MakeTls) -> None:
    """With a TLS dir, the probe URL is https."""
    tls = tmp_path / "tls"
    make_tls(tls)
    assert load_settings(write_env(tmp_path, f"MY_REG_TLS_DIR={tls}\n")).probe_url.startswith(
        "https://127.0.0.1:5001/"
    )


# --- what the engine refuses at create (found by tests/integration/test_settings_engine.py) --

REPOSITORY_GRAMMAR = (
    "expected an image repository name: lowercase letters, digits and separators (. _ -), "
    "path components split by /, optionally after a registry host[:port]/"
)


def test_a_one_character_container_name_is_refused(tmp_path: Path) -> None:
    """Docker wants at least two characters: `a` passed and the engine refused the create."""
    assert [
        "MY_REG_NAME='a': expected a container name of at least 2 characters "
        "([a-zA-Z0-9][a-zA-Z0-9_.-]+)"
    ] == problems_for(write_env(tmp_path, "MY_REG_NAME=a\n"))


@pytest.mark.parametrize("image", ["LOCALHOST/registry", "Registry/library/registry"])
def test_an_uppercase_first_component_without_a_dot_or_port_is_refused(
    tmp_path: Path, image: str
) -> None:
    """Without a '.', a ':port' or being `localhost` it is no registry host but a path
    component, which Docker 20.10 refuses in uppercase ("repository name must be lowercase")."""
    assert [f"MY_REG_IMAGE={image!r}: {REPOSITORY_GRAMMAR}"] == problems_for(
        write_env(tmp_path, f"MY_REG_IMAGE={image}\n")
    )


def test_an_ipv6_registry_host_is_refused(tmp_path: Path) -> None:
    """Docker 20.10's reference grammar has no [IPv6] host ("invalid reference format")."""
    assert [
        "MY_REG_IMAGE='[::1]:5000/registry': expected an image registry host name or IPv4 "
        "address, not [IPv6]"
    ] == problems_for(write_env(tmp_path, "MY_REG_IMAGE=[::1]:5000/registry\n"))


def test_the_repository_length_limit_counts_the_name_the_engine_makes_of_it(
    tmp_path: Path,
) -> None:
    """238 characters are 256 as docker.io/library/...: the engine refused them."""
    image = "r" * 238
    assert [
        f"MY_REG_IMAGE='{image[:60]}...(238 characters)': expected an image repository name "
        "of at most 255 characters, counted as the engine names it "
        "(registry is docker.io/library/registry)"
    ] == problems_for(write_env(tmp_path, f"MY_REG_IMAGE={image}\n"))


def test_a_long_name_the_engine_shortens_to_255_characters_is_accepted(tmp_path: Path) -> None:
    """index.docker.io/library/ + 237 characters is 261 given, 255 as docker.io/library/."""
    image = "index.docker.io/library/" + "r" * 237
    assert image == load_settings(write_env(tmp_path, f"MY_REG_IMAGE={image}\n")).image


# --- the env file, read as compose reads it -------------------------------------------------


def test_settings_come_from_the_env_files_interpolated_values(tmp_path: Path) -> None:
    """MY_REG_* values are the file's after compose's ${NAME:-default} expansion."""
    env_file = write_env(
        tmp_path, "BASE=/srv\nMY_REG_DIR=${BASE}/registry\nMY_REG_PORT=${P:-6000}\n"
    )
    settings = load_settings(env_file)
    assert (Path("/srv/registry"), 6000) == (settings.dir, settings.port)


def test_the_environment_wins_inside_the_env_files_expansions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """${P} in the file takes P from the environment before the file's own P line."""
    monkeypatch.setenv("P", "7000")
    assert 7000 == load_settings(write_env(tmp_path, "P=6000\nMY_REG_PORT=${P}\n")).port


def test_nothing_expands_inside_single_quotes(tmp_path: Path) -> None:
    """'abc${X}ghi' stays literal, as compose reads it (python-dotenv made it abcghi)."""
    env_file = write_env(tmp_path, "X=no\nREGISTRY_HTTP_SECRET='abc${X}ghi'\n")
    assert {"REGISTRY_HTTP_SECRET": "abc${X}ghi"} == load_settings(env_file).registry_env


def test_an_expansion_to_blank_means_unset(tmp_path: Path) -> None:
    """MY_REG_CONF=${UNSET} is blank, so the default (no config file) holds."""
    assert load_settings(write_env(tmp_path, "MY_REG_CONF=${UNSET}\n")).conf is None


def test_a_required_variable_that_is_unset_names_the_line_variable_and_message(
    tmp_path: Path,
) -> None:
    """${DATA:?message} with DATA unset is one line naming MY_REG_DIR, DATA and the message."""
    env_file = write_env(tmp_path, "MY_REG_PORT=5001\nMY_REG_DIR=${DATA:?set DATA first}\n")
    assert [
        f"--env-file {env_file}: line 2: MY_REG_DIR: ${{DATA:?set DATA first}}: set DATA first"
    ] == problems_for(env_file)


def test_raw_setting_reads_the_env_file_as_compose_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The htpasswd helper's raw_setting sees the same interpolated value as the loader."""
    monkeypatch.setenv("AUTH", "/etc/registry")
    env_file = write_env(tmp_path, "MY_REG_AUTH_HTPASSWD=${AUTH}/htpasswd\n")
    assert "/etc/registry/htpasswd" == raw_setting("MY_REG_AUTH_HTPASSWD", env_file)


def test_a_bad_expansion_in_a_secret_is_not_shown(tmp_path: Path) -> None:
    """An unclosed ${ in REGISTRY_HTTP_SECRET names the line and variable, not the value."""
    env_file = write_env(tmp_path, "REGISTRY_HTTP_SECRET=pa55${word\n")
    assert [
        f"--env-file {env_file}: line 1: REGISTRY_HTTP_SECRET: ********: expected $NAME, "
        "${NAME}, ${NAME:-default} or another compose form (a literal $ is $$)"
    ] == problems_for(env_file)
