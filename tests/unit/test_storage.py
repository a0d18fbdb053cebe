"""One storage: which driver the registry uses, whether fleet members share it (a fleet
on storage they do not share is a bad setting), and the storage fingerprint members
compare."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from supervisor import risks
from supervisor.cli import main
from supervisor.errors import ConfigError
from supervisor.settings import (
    Origin,
    Settings,
    Storage,
    load_settings,
    storage_fingerprint,
    storage_of,
)
from supervisor.settings.storage import config_storage, resolve_storage

FLEET = "MY_REG_FLEET_REDIS=redis://10.0.0.5:6379/0\n"
KEY = b"the fleet's http secret"
PLAIN_CONFIG = """\
version: 0.1
log:
  fields:
    service: registry
storage:
  cache:
    blobdescriptor: inmemory
  s3:
    region: eu-west-1
    bucket: images   # the production bucket
    secretkey: "s3cr3t # not a comment"
    credentials:
      type: default
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: :5000
"""


def loaded(tmp_path: Path, text: str) -> Settings:
    env_file = tmp_path / "registry.env"
    env_file.write_text(text)
    return load_settings(env_file)


def problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        loaded(tmp_path, text)
    return caught.value.problems


def with_config(tmp_path: Path, config: str, extra: str = "") -> str:
    """Env file text with MY_REG_CONF pointing at a file holding ``config``."""
    path = tmp_path / "config.yml"
    path.write_text(config)
    return f"MY_REG_CONF={path}\n{extra}"


def resolved(
    env: dict[str, str], config: str | None = None, *, shared_dir: bool = False
) -> Storage:
    return resolve_storage(
        env,
        config_text=config,
        conf_given=config is not None,
        data_dir="/var/lib/my_registry",
        shared_dir=shared_dir,
    )


# --- which driver ----------------------------------------------------------------------


def test_nothing_set_is_the_filesystem_driver_on_the_data_dir(tmp_path: Path) -> None:
    """The image's own config stores with the filesystem driver where MY_REG_DIR is mounted."""
    storage = storage_of(loaded(tmp_path, ""))
    assert (storage.driver, storage.origin, storage.data_dir) == (
        "filesystem",
        Origin.DEFAULT,
        "/var/lib/my_registry",
    )
    assert not storage.shared


@pytest.mark.parametrize("driver", ["s3", "s3aws", "azure", "gcs", "swift", "oss"])
def test_object_stores_are_shared(driver: str) -> None:
    """Every member reaching the same bucket (or container) sees the same images."""
    storage = resolved({"REGISTRY_STORAGE": driver})
    assert (driver, True, Origin.ENVIRONMENT) == (storage.driver, storage.shared, storage.origin)


def test_the_filesystem_is_shared_only_when_declared_so() -> None:
    """MY_REG_FLEET_SHARED_DIR=true says MY_REG_DIR is on NFS or the like."""
    env = {"REGISTRY_STORAGE": "filesystem"}
    assert (False, True) == (resolved(env).shared, resolved(env, shared_dir=True).shared)


@pytest.mark.parametrize("value", ["inmemory", "S3", "cephfs", "Filesystem"])
def test_inmemory_and_driver_words_the_registry_does_not_have_are_never_shared(
    value: str,
) -> None:
    """The registry's driver names are lower case: `S3` is no driver of it, shared or not."""
    storage = resolved({"REGISTRY_STORAGE": value}, shared_dir=True)
    assert (value, False) == (storage.driver, storage.shared)


def test_a_mixed_case_name_is_read_as_the_checks_read_names() -> None:
    """REGISTRY_Storage is REGISTRY_STORAGE to the storage reading (fleet mode refuses it)."""
    storage = resolved({"REGISTRY_Storage": "gcs", "REGISTRY_STORAGE_gcs_BUCKET": "b"})
    assert ("gcs", (("REGISTRY_STORAGE_GCS_BUCKET", "b"),)) == (
        storage.driver,
        storage.parameters,
    )


def test_a_yaml_map_as_the_driver_is_not_read() -> None:
    """REGISTRY_STORAGE='{s3: {bucket: x}}' names no driver here (conflicts.py refuses it)."""
    storage = resolved({"REGISTRY_STORAGE": "{s3: {bucket: x}}"})
    assert (None, False) == (storage.driver, storage.shared)
    assert "not a driver name alone" in storage.unknown_why


def test_the_environment_wins_over_the_config_file() -> None:
    """REGISTRY_STORAGE replaces the file's whole storage section, as in the registry."""
    storage = resolved({"REGISTRY_STORAGE": "filesystem"}, PLAIN_CONFIG)
    assert ("filesystem", Origin.ENVIRONMENT, ()) == (
        storage.driver,
        storage.origin,
        storage.parameters,
    )


def test_the_config_files_driver_and_its_parameters_are_read() -> None:
    """A plain block section: its one driver, its parameters named as the env names them."""
    storage = resolved({"REGISTRY_STORAGE_S3_REGION": "us-east-1"}, PLAIN_CONFIG)
    assert ("s3", Origin.CONFIG, True) == (storage.driver, storage.origin, storage.shared)
    assert (
        ("REGISTRY_STORAGE_S3_BUCKET", "images"),
        ("REGISTRY_STORAGE_S3_CREDENTIALS_TYPE", "default"),
        ("REGISTRY_STORAGE_S3_REGION", "us-east-1"),  # the environment's, over the file's
        ("REGISTRY_STORAGE_S3_SECRETKEY", "s3cr3t # not a comment"),
    ) == storage.parameters


def test_a_driver_named_inline_in_the_config_file_is_read() -> None:
    """`storage: gcs` names the driver with no parameters."""
    assert "gcs" == config_storage("version: 0.1\nstorage: gcs  # one bucket\n").driver


@pytest.mark.parametrize(
    ("config", "why"),
    [
        ("version: 0.1\nhttp:\n  addr: :5000\n", "no storage section"),
        ("storage: {s3: {bucket: x}}\n", "not a driver name alone"),
        ("storage: &store\n  s3:\n    bucket: x\n", "not a driver name alone"),
        ("base: &b\n  s3: {}\nstorage: *b\n", "not a driver name alone"),
        ("storage:\n  s3: *bucket\n", "not plain `key: value` lines"),
        ("storage:\n  s3:\n    bucket: !!str x\n", "not plain `key: value` lines"),
        ('storage:\n  s3:\n    bucket: "a\\u0041"\n', "not plain `key: value` lines"),
        ("storage:\n  s3:\n    tags:\n      - a\n", "not plain `key: value` lines"),
        ("storage:\n  s3: {}\n  filesystem: {}\n", "names s3, filesystem, not exactly one"),
        ("storage:\n  cache:\n    blobdescriptor: inmemory\n", "names none"),
        ('storage:\n  "s3":\n    bucket: x\n', "not `key:`"),
        ("storage:\n  <<: *defaults\n", "not `key:`"),
        ("storage:\n    s3: {}\n  gcs: {}\n", "not indented evenly"),
        ("storage:\n  s3: {}\n  s3: {}\n", "storage.s3 twice"),
        ("storage: s3\nstorage: gcs\n", "storage is given twice"),
        ("storage:\n\ts3: {}\n", "a tab indents"),
        ("storage: gcs\n---\nstorage: s3\n", "several documents"),
        ("%YAML 1.1\n---\nstorage: s3\n", "directives"),
        ("{version: 0.1, storage: s3}\n", "top level is not plain"),
        ('"storage": s3\n', "top level is not plain"),
        ("storage:\n", "storage section is empty"),
        ("storage: cache\n", "not a driver name alone"),
    ],
)
def test_a_config_file_the_small_reader_cannot_be_sure_of_says_so(config: str, why: str) -> None:
    """Flow style, anchors, aliases, tags, quoted or merge keys, tabs, several documents,
    no driver or two: no driver is named, and the reason is."""
    found = config_storage(config)
    assert found.driver is None
    assert why in found.unknown_why, found.unknown_why


def test_an_unreadable_config_file_is_storage_unknown() -> None:
    """MY_REG_CONF given but not read (not UTF-8, too large, gone) names no driver."""
    storage = resolve_storage({}, config_text=None, conf_given=True, data_dir="/d", shared_dir=True)
    assert (None, False) == (storage.driver, storage.shared)


def test_a_config_file_that_is_not_utf8_is_storage_unknown(tmp_path: Path) -> None:
    """Bytes the registry's YAML reader would refuse are not guessed at."""
    path = tmp_path / "config.yml"
    path.write_bytes(b"storage:\n  s3:\n    bucket: \xff\n")
    settings = loaded(tmp_path, f"MY_REG_CONF={path}\n")
    assert storage_of(settings).driver is None


def test_crlf_line_ends_and_comments_read_as_plain_lines() -> None:
    """A config written on Windows, with comments between the entries."""
    text = "# registry\r\nstorage:\r\n  # where\r\n  azure:\r\n    container: c # prod\r\n"
    found = config_storage(text)
    assert ("azure", (("REGISTRY_STORAGE_AZURE_CONTAINER", "c"),)) == (
        found.driver,
        found.parameters,
    )


# --- the fleet rule, at load -----------------------------------------------------------


def test_outside_fleet_mode_nothing_changes(tmp_path: Path) -> None:
    """The filesystem driver on this host's disk, with any config, is fine without a fleet."""
    assert loaded(tmp_path, "").fleet is False
    assert loaded(tmp_path, with_config(tmp_path, "storage: {s3: {}}\n")).conf is not None
    assert loaded(tmp_path, "REGISTRY_Storage=s3\n").registry_env == {"REGISTRY_Storage": "s3"}


def test_a_fleet_on_this_hosts_disk_is_refused(tmp_path: Path) -> None:
    """Each member would keep its own images: a pull could reach one that never saw the push."""
    assert [
        "MY_REG_FLEET_REDIS is set (fleet mode), but the registry stores on this host's disk "
        "(the filesystem driver on MY_REG_DIR=/var/lib/my_registry): expected shared storage "
        "(REGISTRY_STORAGE=s3 or another of s3, s3aws, azure, gcs, swift, oss) or "
        "MY_REG_FLEET_SHARED_DIR=true for a shared file system"
    ] == problems(tmp_path, FLEET)


def test_run_and_check_exit_78_with_that_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The refusal is a bad setting for both commands, before any engine is asked."""
    env_file = tmp_path / "registry.env"
    env_file.write_text(FLEET)
    for command in ("run", "check"):
        assert main([command, "--env-file", str(env_file)]) == 78
        [line] = capsys.readouterr().err.splitlines()
        assert line.startswith("registry-supervisor: MY_REG_FLEET_REDIS is set (fleet mode)")


@pytest.mark.parametrize(
    "text",
    [
        "REGISTRY_STORAGE=s3\nREGISTRY_STORAGE_S3_BUCKET=images\n",
        "REGISTRY_STORAGE=azure\n",
        "MY_REG_FLEET_SHARED_DIR=true\n",
        "REGISTRY_STORAGE=filesystem\nMY_REG_FLEET_SHARED_DIR=true\n",
        "REGISTRY_STORAGE_S3_bucket=images\nREGISTRY_STORAGE=s3\n",  # the last part: any case
    ],
)
def test_a_fleet_on_shared_storage_loads(tmp_path: Path, text: str) -> None:
    """An object store, or a file system declared shared."""
    assert loaded(tmp_path, FLEET + text).fleet


def test_a_fleet_on_the_config_files_object_store_loads(tmp_path: Path) -> None:
    """MY_REG_CONF's plain storage section names s3: shared."""
    assert loaded(tmp_path, FLEET + with_config(tmp_path, PLAIN_CONFIG)).fleet


def test_a_fleet_on_the_config_files_filesystem_is_refused(tmp_path: Path) -> None:
    """The file's filesystem driver is this host's disk too, and the line says where it is set."""
    config = "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: /var/lib/registry\n"
    [line] = problems(tmp_path, FLEET + with_config(tmp_path, config))
    assert "(the filesystem driver set in MY_REG_CONF on MY_REG_DIR=" in line


def test_a_fleet_on_a_config_file_that_cannot_be_read_for_sure_is_refused(
    tmp_path: Path,
) -> None:
    """Not knowing is not shared: the line names the file, why, and what would do."""
    text = FLEET + with_config(tmp_path, "storage: {s3: {bucket: x}}\n")
    [line] = problems(tmp_path, text)
    assert line.startswith(
        "MY_REG_FLEET_REDIS is set (fleet mode), but the supervisor cannot tell which storage "
        f"driver MY_REG_CONF={tmp_path / 'config.yml'} configures (storage: "
    )
    assert line.endswith("expected a plain block `storage:` section naming one driver, or "
        "REGISTRY_STORAGE=<driver> with its REGISTRY_STORAGE_<DRIVER>_* keys (it replaces "
        "the file's whole storage section)")  # fmt: skip


def test_the_environment_settles_what_the_config_file_leaves_unknown(tmp_path: Path) -> None:
    """REGISTRY_STORAGE=gcs overrides an unreadable section: the fleet loads."""
    text = FLEET + with_config(tmp_path, "storage: {s3: {}}\n", "REGISTRY_STORAGE=gcs\n")
    assert loaded(tmp_path, text).fleet


@pytest.mark.parametrize("value", ["S3", "cephfs"])
def test_a_fleet_on_a_driver_word_the_registry_lacks_is_refused(tmp_path: Path, value: str) -> None:
    """`S3` is not the registry's s3: it would not start, and no member would share it."""
    [line] = problems(tmp_path, f"{FLEET}REGISTRY_STORAGE={value}\n")
    assert (
        f"MY_REG_FLEET_REDIS is set (fleet mode), but REGISTRY_STORAGE='{value}' is not a "
        "storage driver that members can share: expected one of s3, s3aws, azure, gcs, swift, "
        "oss (the registry's names, in lower case), or filesystem with "
        "MY_REG_FLEET_SHARED_DIR=true"
    ) == line


def test_a_config_files_unknown_driver_is_named_with_the_file(tmp_path: Path) -> None:
    """`storage: cephfs` in MY_REG_CONF: the line names the file and the word."""
    [line] = problems(tmp_path, FLEET + with_config(tmp_path, "storage: cephfs\n"))
    assert f"but MY_REG_CONF={tmp_path / 'config.yml'} (storage: cephfs) is not a" in line


@pytest.mark.parametrize(
    ("text", "name", "value"),
    [
        ("REGISTRY_Storage=s3\n", "REGISTRY_Storage", "s3"),
        ("REGISTRY_STORAGE=s3\nREGISTRY_STORAGE_s3_BUCKET=x\n", "REGISTRY_STORAGE_s3_BUCKET", "x"),
        (
            "REGISTRY_STORAGE=s3\nREGISTRY_STORAGE_S3_Creds_TYPE=x\n",
            "REGISTRY_STORAGE_S3_Creds_TYPE",
            "x",
        ),
    ],
)
def test_a_fleet_refuses_storage_names_the_registry_would_misread(
    tmp_path: Path, text: str, name: str, value: str
) -> None:
    """The registry matches every part but the last in upper case (REGISTRY_Storage is
    ignored, lower-case s3 drops the other s3 keys): the line says the upper-case name."""
    [line] = problems(tmp_path, FLEET + text)
    assert line.startswith(f"{name}='{value}': expected the name in upper case ({name.upper()})")


@pytest.mark.parametrize("text", ["REGISTRY_STORAGE=inmemory\n", "REGISTRY_STORAGE={s3: {}}\n"])
def test_a_storage_value_refused_anyway_gets_one_line_not_two(tmp_path: Path, text: str) -> None:
    """inmemory and a YAML map are refused in any mode; fleet mode adds no second line."""
    [line] = problems(tmp_path, FLEET + text)
    assert line.startswith("REGISTRY_STORAGE=")


def test_a_shared_dir_flag_with_an_object_store_is_a_warning(tmp_path: Path) -> None:
    """MY_REG_FLEET_SHARED_DIR=true with s3 has no effect: said, not refused."""
    settings = loaded(tmp_path, f"{FLEET}MY_REG_FLEET_SHARED_DIR=true\nREGISTRY_STORAGE=s3\n")
    [warning] = risks.storage_warnings(settings)
    assert "settings.fleet_shared_dir_unused" == warning.event
    assert warning in risks.warnings(settings, None, datetime.now(UTC))


def test_the_shared_dir_flag_alone_warns_of_nothing(tmp_path: Path) -> None:
    """Outside fleet mode, and with the filesystem it is for, no warning."""
    assert [] == risks.storage_warnings(loaded(tmp_path, "MY_REG_FLEET_SHARED_DIR=true\n"))
    shared = loaded(tmp_path, f"{FLEET}MY_REG_FLEET_SHARED_DIR=true\n")
    assert [] == risks.storage_warnings(shared)


def test_check_says_which_storage_a_fleet_member_uses(tmp_path: Path) -> None:
    """`check`'s summary names the driver and whether the fleet shares it, in fleet mode only."""
    now = datetime.now(UTC)
    member = loaded(tmp_path, f"{FLEET}REGISTRY_STORAGE=s3\n")
    assert "storage: the s3 driver (REGISTRY_STORAGE=s3), shared by the fleet" in risks.describe(
        member, None, now
    )
    assert not any(
        line.startswith("storage:") for line in risks.describe(loaded(tmp_path, ""), None, now)
    )


# --- the fingerprint -------------------------------------------------------------------


def fingerprint(env: dict[str, str], config: str | None = None, key: bytes = KEY) -> str:
    return resolved(env, config, shared_dir=True).fingerprint(key)


S3 = {"REGISTRY_STORAGE": "s3", "REGISTRY_STORAGE_S3_BUCKET": "images"}


def test_the_fingerprint_is_16_hex_characters_and_stable() -> None:
    """The same storage gives the same short fingerprint on every member."""
    value = fingerprint(S3)
    assert 16 == len(value) and int(value, 16) >= 0
    assert value == fingerprint(dict(S3))


def test_the_fingerprint_changes_with_the_bucket_the_driver_and_the_key() -> None:
    """Another bucket, another driver or another fleet's secret: another fingerprint."""
    base = fingerprint(S3)
    assert base != fingerprint({**S3, "REGISTRY_STORAGE_S3_BUCKET": "other"})
    assert base != fingerprint({**S3, "REGISTRY_STORAGE": "s3aws"})
    assert base != fingerprint(S3, key=b"another fleet")


def test_the_fingerprint_ignores_name_case_blanks_and_per_member_keys() -> None:
    """Names upper-cased, values stripped; maintenance (gc's read-only), cache, delete,
    redirect, tag and other drivers' keys are each member's own."""
    same = {
        "REGISTRY_STORAGE": " s3 ",
        "REGISTRY_STORAGE_S3_bucket": "images ",
        "REGISTRY_STORAGE_MAINTENANCE_READONLY": "{enabled: true}",
        "REGISTRY_STORAGE_CACHE_BLOBDESCRIPTOR": "redis",
        "REGISTRY_STORAGE_DELETE_ENABLED": "true",
        "REGISTRY_STORAGE_REDIRECT_DISABLE": "true",
        "REGISTRY_STORAGE_TAG_CONCURRENCYLIMIT": "8",
        "REGISTRY_STORAGE_S3AWS_BUCKET": "unused",
        "REGISTRY_HTTP_SECRET": "not storage",
    }
    assert fingerprint(S3) == fingerprint(same)


def test_the_same_parameters_from_the_file_or_the_environment_match() -> None:
    """A member with the bucket in MY_REG_CONF and one with it in REGISTRY_STORAGE_S3_*
    store alike, and say so."""
    config = "storage:\n  s3:\n    bucket: images\n"
    assert fingerprint(S3) == fingerprint({}, config)


def test_a_shared_file_system_is_fingerprinted_by_its_mount_point() -> None:
    """For the filesystem driver, MY_REG_DIR: mount the share at the same path everywhere."""
    env = {"REGISTRY_STORAGE": "filesystem"}
    elsewhere = resolve_storage(
        env, config_text=None, conf_given=False, data_dir="/srv/registry", shared_dir=True
    )
    assert fingerprint(env) != elsewhere.fingerprint(KEY)


def test_secrets_are_not_in_the_fingerprint_and_an_empty_key_is_refused() -> None:
    """The secret key's text never shows, and no fingerprint is made without a key."""
    secret = "wJalrXUtnFEMI/K7MDENG"
    value = fingerprint({**S3, "REGISTRY_STORAGE_S3_SECRETKEY": secret})
    assert secret not in value and value != fingerprint(S3)
    with pytest.raises(ValueError, match="needs a key"):
        fingerprint(S3, key=b"")


def test_storage_fingerprint_reads_the_settings(tmp_path: Path) -> None:
    """The settings-level function is the Storage's fingerprint of these settings."""
    settings = loaded(tmp_path, f"{FLEET}REGISTRY_STORAGE=s3\nREGISTRY_STORAGE_S3_BUCKET=images\n")
    assert storage_of(settings).fingerprint(KEY) == storage_fingerprint(settings, KEY)
    assert fingerprint(S3) == storage_fingerprint(settings, KEY)
