"""Issue 10, at the settings level: what the engine would refuse, what would lose data or
open a registry believed closed, is a bad setting (one line naming it), whatever source
the value comes from; blank REGISTRY_* values are unset."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import structlog

from supervisor import risks
from supervisor.adapters.notify import Notifier
from supervisor.errors import ConfigError
from supervisor.layout import V2_LAYOUT
from supervisor.loop.engine_link import ENGINE_MIN_RETRY_S, ENGINE_RETRY
from supervisor.loop.supervisor import Supervisor
from supervisor.ops import status_report
from supervisor.phase import Phase
from supervisor.settings import load_settings
from supervisor.spec import derive_spec
from supervisor.statedir import state_file
from supervisor.statedir.http_secret import describe_secret, with_http_secret


def problems(tmp_path: Path, text: str) -> list[str]:
    env_file = tmp_path / "registry.env"
    env_file.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_settings(env_file)
    return caught.value.problems


def loaded(tmp_path: Path, text: str):  # type: ignore[no-untyped-def]
    env_file = tmp_path / "registry.env"
    env_file.write_text(text)
    return load_settings(env_file)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (
            "registry:2",
            "without a tag: put the tag in MY_REG_TAG (MY_REG_IMAGE=registry MY_REG_TAG=2)",
        ),
        ("Registry", "an image repository name: lowercase"),
        ("registry@sha256:" + "a" * 64, "without a digest"),
        ("reg//istry", "an image repository name: lowercase"),
        ("-registry", "an image repository name: lowercase"),
        ("a" * 256, "at most 255 characters"),
        ("[::1]:5000/registry", "not [IPv6]"),
        ("Example/registry", "an image repository name: lowercase"),
    ],
)
def test_an_image_name_the_engine_refuses_is_a_bad_setting(
    tmp_path: Path, value: str, expected: str
) -> None:
    """MY_REG_IMAGE follows the reference grammar the engine applies (a tag in it is named)."""
    [line] = problems(tmp_path, f"MY_REG_IMAGE={value}\n")
    assert line.startswith("MY_REG_IMAGE=")
    assert expected in line


@pytest.mark.parametrize(
    "value", ["registry", "localhost:5000/team/registry", "127.0.0.1:5000/r", "ghcr.io/a_b/c-d"]
)
def test_image_names_the_grammar_allows_are_accepted(tmp_path: Path, value: str) -> None:
    """Registry hosts with ports, IPv6 hosts and separators are valid repository names."""
    assert value == loaded(tmp_path, f"MY_REG_IMAGE={value}\n").image


@pytest.mark.parametrize("value", ["-x", ".x", "a" * 129, "a:b", "a/b"])
def test_a_tag_the_engine_refuses_is_a_bad_setting(tmp_path: Path, value: str) -> None:
    """MY_REG_TAG: word characters, . and -, at most 128, not starting with . or -."""
    [line] = problems(tmp_path, f"MY_REG_TAG={value}\n")
    assert line.startswith("MY_REG_TAG=") and "expected an image tag" in line


def test_a_filesystem_root_outside_the_data_mount_is_refused(tmp_path: Path) -> None:
    """REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY=/tmp/x would write into the container."""
    [line] = problems(tmp_path, "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY=/tmp/x\n")
    assert line.startswith("REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY='/tmp/x': expected")
    assert "MY_REG_DIR=/var/lib/my_registry" in line


@pytest.mark.parametrize(
    "value", ["/var/lib/registry", "/var/lib/registry/sub", "/var/lib/registry/"]
)
def test_a_filesystem_root_inside_the_data_mount_is_accepted(tmp_path: Path, value: str) -> None:
    """A root at or under /var/lib/registry keeps the data in MY_REG_DIR."""
    settings = loaded(tmp_path, f"REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY={value}\n")
    assert value == settings.registry_env["REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY"]


def test_a_root_that_climbs_out_of_the_data_mount_is_refused(tmp_path: Path) -> None:
    """`..` is resolved before the path is compared."""
    [line] = problems(
        tmp_path, "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY=/var/lib/registry/../x\n"
    )
    assert "expected a path inside /var/lib/registry" in line


def test_inmemory_storage_is_refused(tmp_path: Path) -> None:
    """The inmemory driver loses every image at the next restart."""
    [line] = problems(tmp_path, "REGISTRY_STORAGE=inmemory\n")
    assert line.startswith("REGISTRY_STORAGE='inmemory': expected a storage driver that keeps")


@pytest.mark.parametrize("value", [":5001", "127.0.0.1:5000", "localhost:5000"])
def test_an_http_addr_off_the_published_port_is_refused(tmp_path: Path, value: str) -> None:
    """The holder publishes the registry's port 5000 and the probe asks there."""
    [line] = problems(tmp_path, f"REGISTRY_HTTP_ADDR={value}\n")
    assert line.startswith(f"REGISTRY_HTTP_ADDR={value!r}: expected :5000")
    assert "MY_REG_PORT=5001" in line


@pytest.mark.parametrize("value", [":5000", "0.0.0.0:5000", "[::]:5000"])
def test_an_http_addr_on_port_5000_is_accepted(tmp_path: Path, value: str) -> None:
    """Any address on the container's port 5000 is what the holder publishes."""
    assert (
        value
        == loaded(tmp_path, f"REGISTRY_HTTP_ADDR={value}\n").registry_env["REGISTRY_HTTP_ADDR"]
    )


def test_registry_auth_against_the_htpasswd_setting_names_both(tmp_path: Path) -> None:
    """REGISTRY_AUTH=token with MY_REG_AUTH_HTPASSWD: the container would get htpasswd."""
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text("alice:$2y$05$" + "a" * 53 + "\n")
    lines = problems(tmp_path, f"MY_REG_AUTH_HTPASSWD={htpasswd}\nREGISTRY_AUTH=token\n")
    assert any(
        line.startswith("REGISTRY_AUTH='token': contradicts MY_REG_AUTH_HTPASSWD=")
        for line in lines
    )


def test_tls_files_given_by_registry_variables_are_refused(tmp_path: Path) -> None:
    """The probe would speak http to an https registry: TLS is MY_REG_TLS_DIR's to set up."""
    [line] = problems(tmp_path, "REGISTRY_HTTP_TLS_CERTIFICATE=/certs/c.pem\n")
    assert "expected unset: TLS is set up with MY_REG_TLS_DIR" in line


def test_metrics_on_the_registry_port_is_refused(tmp_path: Path) -> None:
    """MY_REG_METRICS_ADDR on MY_REG_PORT (any overlapping address) cannot both listen."""
    [line] = problems(tmp_path, "MY_REG_PORT=5001\nMY_REG_METRICS_ADDR=0.0.0.0:5001\n")
    assert line.startswith(
        "MY_REG_METRICS_ADDR='0.0.0.0:5001': expected another port than MY_REG_PORT=5001"
    )


def test_metrics_on_another_address_of_the_same_port_is_accepted(tmp_path: Path) -> None:
    """127.0.0.1:5001 and 127.0.0.2:5001 do not overlap."""
    settings = loaded(tmp_path, "MY_REG_BIND=127.0.0.2\nMY_REG_METRICS_ADDR=127.0.0.1:5001\n")
    assert "127.0.0.1:5001" == settings.metrics_addr


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("/", "not /"),
        ("/var/lib/docker", "outside Docker's own /var/lib/docker"),
        ("/var/lib/docker/volumes/x/_data", "outside Docker's own /var/lib/docker"),
    ],
)
def test_a_data_dir_that_can_lose_data_is_refused(
    tmp_path: Path, value: str, expected: str
) -> None:
    """/ and Docker's own storage are no place for registry data."""
    [line] = problems(tmp_path, f"MY_REG_DIR={value}\n")
    assert line.startswith(f"MY_REG_DIR={value!r}: expected") and expected in line


def test_a_data_dir_that_is_a_file_is_refused(tmp_path: Path) -> None:
    """A file where the data dir should be cannot be mounted as one."""
    (tmp_path / "file").write_text("")
    [line] = problems(tmp_path, f"MY_REG_DIR={tmp_path / 'file'}\n")
    assert line.endswith("expected a directory (it is a file)")


def test_a_symlink_to_root_is_root(tmp_path: Path) -> None:
    """Symlinks are resolved before the data dir is judged."""
    (tmp_path / "link").symlink_to("/")
    [line] = problems(tmp_path, f"MY_REG_DIR={tmp_path / 'link'}\n")
    assert "not /" in line


@pytest.mark.parametrize("inside", ["state", "data"])
def test_data_dir_and_state_dir_apart(tmp_path: Path, inside: str) -> None:
    """One inside the other: the registry would see the HTTP secret, or our files its data."""
    data, state = tmp_path / "d", tmp_path / "d" / "s"
    if inside == "data":
        data, state = state, data
    [line] = problems(tmp_path, f"MY_REG_DIR={data}\nMY_REG_STATE_DIR={state}\n")
    assert line.startswith(
        f"MY_REG_DIR={str(data)!r}: expected a directory apart from MY_REG_STATE_DIR"
    )


def test_a_package_managed_data_dir_is_a_warning(tmp_path: Path) -> None:
    """/var/lib/registry is Debian's docker-registry package's: warned about, not refused."""
    settings = loaded(tmp_path, "MY_REG_DIR=/var/lib/registry\nMY_REG_BIND=127.0.0.1\n")
    [warning] = risks.warnings(settings, None, datetime.now(UTC))
    assert "settings.package_managed_dir" == warning.event
    assert "/var/lib/registry" == warning.fields["package_dir"]


def test_a_scoped_bind_address_is_refused(tmp_path: Path) -> None:
    """Docker publishes on an address, not on a link-local %scope."""
    [line] = problems(tmp_path, "MY_REG_BIND=fe80::1%eth0\n")
    assert line == "MY_REG_BIND='fe80::1%eth0': expected an IPv4 or IPv6 address without a %scope"


@pytest.mark.parametrize("source", ["file", "environment"])
def test_blank_registry_values_are_unset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str
) -> None:
    """`REGISTRY_AUTH=` (compose's `${UNSET}`) is unset: the exposure warning stays."""
    blanks = {"REGISTRY_AUTH": "", "REGISTRY_HTTP_TLS_CERTIFICATE": " ", "REGISTRY_HTTP_SECRET": ""}
    text = "MY_REG_BIND=0.0.0.0\n"
    if source == "file":
        text += "".join(f"{key}={value}\n" for key, value in blanks.items())
    else:
        for key, value in blanks.items():
            monkeypatch.setenv(key, value)
    settings = loaded(tmp_path, text)
    assert {} == settings.registry_env
    assert ["security.exposed"] == [w.event for w in risks.exposure(settings)]
    assert not describe_secret(settings).startswith("set by")


def test_a_blank_http_secret_does_not_suppress_the_generated_one(tmp_path: Path) -> None:
    """REGISTRY_HTTP_SECRET= leaves the container to get the generated secret."""
    settings = with_http_secret(
        loaded(tmp_path, f"REGISTRY_HTTP_SECRET=\nMY_REG_STATE_DIR={tmp_path / 'state'}\n")
    )
    secret = dict(derive_spec(settings, V2_LAYOUT).environment)["REGISTRY_HTTP_SECRET"]
    assert len(secret) >= 32


@pytest.mark.parametrize("kind", ["directory", "dangling symlink"])
def test_an_unreadable_default_env_file_is_an_error(tmp_path: Path, kind: str) -> None:
    """./.env that exists but cannot be read is named; the defaults are not used silently."""
    if kind == "directory":
        (tmp_path / ".env").mkdir()
    else:
        (tmp_path / ".env").symlink_to(tmp_path / "nowhere")
    with pytest.raises(ConfigError) as caught:
        load_settings(None)
    [line] = caught.value.problems
    assert line.startswith(".env: expected a readable env file (")


class _Connection:
    """Stands in for the engine connection that was just lost (only closed)."""

    def close(self) -> None:
        pass


def test_a_flapping_engine_is_reconnected_to_ever_more_slowly(tmp_path: Path) -> None:
    """Every engine loss waits at least ENGINE_MIN_RETRY_S before reconnecting, and longer
    each time until the registry is healthy again: never a hot loop (1150 reconnects in 5 s
    when a request kept failing right after each successful ping)."""
    now = 1000.0
    sup = Supervisor(
        loaded(tmp_path, "MY_REG_BIND=127.0.0.1\n"), None, Notifier(), clock=lambda: now
    )
    try:
        delays = []
        for _ in range(8):
            sup.link._engine = _Connection()  # type: ignore[assignment]
            sup.reconciler.engine_lost("refused")
            delays.append(sup.link.retry_at - now)
        assert all(delay >= ENGINE_MIN_RETRY_S for delay in delays)
        assert delays == sorted(delays)
        assert ENGINE_RETRY.cap_s >= delays[-1] > delays[1]
        sup.reconciler.phase = Phase.STARTING  # the registry answers again
        sup.reconciler.serving.healthy(now)
        sup.link._engine = _Connection()  # type: ignore[assignment]
        sup.reconciler.engine_lost("gone")
        assert ENGINE_MIN_RETRY_S == pytest.approx(sup.link.retry_at - now)
    finally:
        sup.health.close()


def test_a_blank_in_the_environment_leaves_the_env_files_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`REGISTRY_AUTH=` in the environment does not remove the file's REGISTRY_AUTH=token:
    blank is unset per source, for REGISTRY_* as for MY_REG_*."""
    monkeypatch.setenv("REGISTRY_AUTH", "")
    monkeypatch.setenv("MY_REG_BIND", "")
    settings = loaded(tmp_path, "REGISTRY_AUTH=token\nMY_REG_BIND=127.0.0.1\n")
    assert "token" == settings.registry_env["REGISTRY_AUTH"]
    assert "127.0.0.1" == settings.bind


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("REGISTRY_STORAGE_FILESYSTEM_rootdirectory=/tmp/x", "expected a path inside"),
        ("REGISTRY_STORAGE_FILESYSTEM={rootdirectory: /tmp/x}", "keys one by one"),
        ("REGISTRY_STORAGE={filesystem: {rootdirectory: /tmp/x}}", "a driver name alone"),
        ('REGISTRY_HTTP={addr: ":6000"}', "keys one by one"),
        ("REGISTRY_HTTP_addr=:6000", "expected :5000"),
        ("REGISTRY_HTTP_PREFIX=/foo/", "the probe asks /v2/ at the root"),
        ("REGISTRY_HTTP_TLS_LETSENCRYPT_CACHEFILE=/c", "the health probe could not speak"),
        ("REGISTRY_HTTP_TLS_CLIENTCAS_0=/ca.pem", "the health probe could not speak"),
    ],
)
def test_registry_variables_are_read_as_the_registry_reads_them(
    tmp_path: Path, text: str, expected: str
) -> None:
    """Names case-insensitively, and no section given whole as a YAML value: each shape the
    registry's env parser accepts is checked, not only the canonical one."""
    [line] = problems(tmp_path, text + "\n")
    assert line.startswith(text.partition("=")[0] + "=") and expected in line, line


def test_the_same_refusal_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A contradiction is caught from the process environment as from the env file."""
    monkeypatch.setenv("REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY", "/tmp/x")
    [line] = problems(tmp_path, "")
    assert line.startswith("REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY='/tmp/x': expected")


@pytest.mark.parametrize("value", ["224.0.0.1", "255.255.255.255", "ff02::1"])
def test_a_multicast_or_broadcast_bind_is_refused(tmp_path: Path, value: str) -> None:
    """The engine would publish there, but the probe could never be answered."""
    [line] = problems(tmp_path, f"MY_REG_BIND={value}\n")
    assert line.endswith("expected a unicast address of this host (not multicast or broadcast)")


def test_status_reads_hand_edited_restart_counts_without_failing(tmp_path: Path) -> None:
    """A state file whose restarts are not name -> count shows what is readable of it."""
    settings = loaded(tmp_path, f"MY_REG_STATE_DIR={tmp_path / 's'}\nMY_REG_BIND=127.0.0.1\n")
    path = state_file.state_path(settings)
    for raw, expected in (
        (["x"], {}),
        ({"crashed": "3", "oom": 2, "stopped": True}, {"oom": 2}),
    ):
        state_file.write_json(path, {"restarts": raw})
        assert expected == status_report.gather(settings, None, datetime.now(UTC), None)["restarts"]


def test_a_reload_while_the_engine_is_away_waits_for_it(tmp_path: Path) -> None:
    """SIGHUP with the engine down: the new settings cannot be checked (nor rolled back), so
    nothing changes until the engine is back; then the reload runs from the start."""
    env_file = tmp_path / "registry.env"
    env_file.write_text(f"MY_REG_BIND=127.0.0.1\nMY_REG_STATE_DIR={tmp_path / 's'}\n")
    sup = Supervisor(load_settings(env_file), env_file, Notifier(), clock=lambda: 1000.0)
    try:
        env_file.write_text(
            f"MY_REG_BIND=127.0.0.1\nMY_REG_PORT=5999\nMY_REG_STATE_DIR={tmp_path / 's'}\n"
        )
        with structlog.testing.capture_logs() as logs:
            sup.reconciler.reload()
        assert sup.reconciler.reloader.pending
        assert 5001 == sup.settings.port
        assert ["supervisor.reloading", "supervisor.reload_deferred"] == [e["event"] for e in logs]
    finally:
        sup.health.close()


def test_an_unset_variable_in_the_env_file_is_a_warning(tmp_path: Path) -> None:
    """`ab$cd` with cd set nowhere became `ab`, as compose reads it: check and the log say so,
    naming the line, the setting and the variable (never the value)."""
    settings = loaded(tmp_path, "MY_REG_BIND=127.0.0.1\nREGISTRY_STORAGE_S3_SECRETKEY=ab$cd\n")
    assert "ab" == settings.registry_env["REGISTRY_STORAGE_S3_SECRETKEY"]
    [warning] = risks.warnings(settings, None, datetime.now(UTC))
    assert "settings.variable_not_set" == warning.event
    assert "line 2: REGISTRY_STORAGE_S3_SECRETKEY: cd" == warning.fields["where"]


def test_an_expansion_error_never_shows_a_registry_value(tmp_path: Path) -> None:
    """A broken `${` in a REGISTRY_* value (a URL with its password, say) is named by line and
    variable only; a `${NAME:?message}` there names NAME and the message, not the value."""
    [line] = problems(tmp_path, "REGISTRY_PROXY_REMOTEURL=https://bob:s3${cr3t@hub.example\n")
    assert "cr3t" not in line and "s3" not in line.partition(": ")[2].partition(":")[0]
    assert "line 1: REGISTRY_PROXY_REMOTEURL: ********" in line
    [line] = problems(tmp_path, "REGISTRY_PROXY_REMOTEURL=https://bob:${PW:?set PW}@hub\n")
    assert line.endswith("line 1: REGISTRY_PROXY_REMOTEURL: ${PW}: set PW")
