"""The image's layout and registry version, and what v3 makes of v2 settings (pure)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from support.settings import settings_from

from supervisor.errors import ConfigError
from supervisor.layout import (
    V2_LAYOUT,
    V3_LAYOUT,
    ImageLayout,
    RegistryVersion,
    layout_of,
    parse_version,
    version_findings,
    version_label,
)
from supervisor.ops.gc import collector_command, collector_config
from supervisor.spec import Mount, derive_spec


def image(entrypoint: list[str] | None, command: list[str] | None) -> dict[str, Any]:
    return {"Id": "sha256:" + "ab" * 32, "RepoTags": ["mine:1"], "Config": {
        "Entrypoint": entrypoint, "Cmd": command}}  # fmt: skip


def test_the_v2_test_image_has_the_v2_layout(
    inspect_data: Callable[[str], dict[str, Any]],
) -> None:
    """registry:2 (`/bin/registry serve` + its config.yml) reads /etc/docker/registry."""
    assert V2_LAYOUT == layout_of(inspect_data("image-inspect-v2"))


def test_the_v3_test_image_has_the_v3_layout(
    inspect_data: Callable[[str], dict[str, Any]],
) -> None:
    """registry:3 (/entrypoint.sh + /etc/distribution/config.yml) reads /etc/distribution."""
    assert V3_LAYOUT == layout_of(inspect_data("image-inspect-v3"))


def test_an_entrypoint_script_with_a_v2_config_is_the_v2_layout() -> None:
    """Older official v2 images ran /entrypoint.sh with the v2 config path."""
    found = layout_of(image(["/entrypoint.sh"], ["/etc/docker/registry/config.yml"]))
    assert V2_LAYOUT == found


def test_a_custom_image_serving_its_own_config_is_followed() -> None:
    """`registry serve /srv/conf/registry.yaml` in Cmd: that file, major unknown."""
    found = layout_of(image(["/usr/bin/registry"], ["serve", "/srv/conf/registry.yaml"]))
    assert ImageLayout("/srv/conf/registry.yaml", "/usr/bin/registry", None) == found


@pytest.mark.parametrize(
    ("entrypoint", "command"),
    [
        (None, None),
        (["/bin/sh", "-c"], ["exec registry serve /etc/x.yml"]),
        (["/entrypoint.sh"], ["serve"]),
        (["/bin/registry", "serve"], ["relative.yml"]),
    ],
)
def test_an_image_whose_config_cannot_be_told_is_refused(
    entrypoint: list[str] | None, command: list[str] | None
) -> None:
    """One line naming the image and what it runs, never a guess."""
    with pytest.raises(ConfigError) as raised:
        layout_of(image(entrypoint, command))
    assert raised.value.problems[0].startswith("image mine:1: expected the registry image's")


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("/bin/registry github.com/distribution/distribution/v3 v3.0.0\n", (3, 0, 0, "v3.0.0")),
        ("registry github.com/docker/distribution v2.7.1\n", (2, 7, 1, "v2.7.1")),
        ("/bin/registry github.com/docker/distribution 2.8.2+ds1", (2, 8, 2, "2.8.2+ds1")),
    ],
)
def test_the_version_is_read_from_registry_version(
    output: str, expected: tuple[int, int, int, str]
) -> None:
    """Upstream's `vX.Y.Z` and Debian's `X.Y.Z+ds1` alike."""
    assert RegistryVersion(*expected) == parse_version(output)


def test_output_without_a_version_is_none() -> None:
    """A binary that prints usage instead names no version."""
    assert None is parse_version("Usage:\n  registry [flags]\n")


def test_an_unknown_version_is_labelled_from_the_layout() -> None:
    """Without `--version`, the layout's major with a question mark."""
    assert ("3.x?", "unknown") == (version_label(None, V3_LAYOUT), version_label(None, None))


V3_1 = RegistryVersion(3, 1, 0, "v3.1.0")
V3_0 = RegistryVersion(3, 0, 0, "v3.0.0")


@pytest.mark.parametrize(
    ("key", "value", "replacement"),
    [
        ("REGISTRY_REDIS_ADDR", "redis:6379", "use REGISTRY_REDIS_ADDRS"),
        ("REGISTRY_REDIS_POOL_MAXIDLE", "16", "use REGISTRY_REDIS_MAXIDLECONNS"),
        ("REGISTRY_STORAGE", "swift", "v3 has no swift storage driver"),
        ("REGISTRY_STORAGE_OSS_BUCKET", "b", "v3 has no oss storage driver"),
        ("REGISTRY_COMPATIBILITY_SCHEMA1_ENABLED", "true", "v3 removed schema1"),
        ("REGISTRY_REPORTING_BUGSNAG_APIKEY", "k", "v3 removed reporting"),
    ],
)
def test_v3_names_what_it_would_ignore_as_an_error(key: str, value: str, replacement: str) -> None:
    """Settings v3 drops silently (or cannot run) are errors naming the replacement."""
    findings = version_findings({key: value}, V3_1)
    assert [(True, True)] == [(f.error, replacement in f.text) for f in findings]


def test_v3_0_ignores_every_redis_variable() -> None:
    """3.0.0 reads no REGISTRY_REDIS_* from the environment (fixed in 3.1.0)."""
    findings = version_findings({"REGISTRY_REDIS_ADDRS": "[redis:6379]"}, V3_0)
    assert [(True, True)] == [(f.error, "fixed in 3.1.0" in f.text) for f in findings]


def test_v3_1_reads_the_new_redis_keys() -> None:
    """REGISTRY_REDIS_ADDRS on 3.1: nothing to say."""
    assert [] == version_findings({"REGISTRY_REDIS_ADDRS": "[redis:6379]"}, V3_1)


def test_a_harmless_schema1_leftover_is_a_warning() -> None:
    """Schema1 switched off: v3 has none anyway."""
    findings = version_findings({"REGISTRY_COMPATIBILITY_SCHEMA1_ENABLED": "false"}, V3_1)
    assert [False] == [finding.error for finding in findings]


def test_v2_settings_are_fine_on_v2() -> None:
    """On 2.8 (or an unknown version) v2's keys are what it reads."""
    env = {"REGISTRY_REDIS_ADDR": "redis:6379", "REGISTRY_STORAGE": "swift"}
    assert ([], []) == (
        version_findings(env, RegistryVersion(2, 8, 2, "2.8.2")),
        version_findings(env, None),
    )


def test_my_reg_conf_goes_where_the_image_reads_its_config(tmp_path: Path) -> None:
    """v3's image reads /etc/distribution/config.yml: MY_REG_CONF is mounted there."""
    conf = tmp_path / "config.yml"
    conf.write_text("version: 0.1\n")
    spec = derive_spec(settings_from(tmp_path, f"MY_REG_CONF={conf}\n"), V3_LAYOUT)
    assert Mount(str(conf), "/etc/distribution/config.yml", read_only=True) in spec.mounts


def test_the_v3_layout_logs_at_info_unless_told(tmp_path: Path) -> None:
    """v3's config logs at debug; ours at info, as v2's, unless REGISTRY_LOG_LEVEL says."""
    default = dict(derive_spec(settings_from(tmp_path), V3_LAYOUT).environment)
    told = derive_spec(settings_from(tmp_path, "REGISTRY_LOG_LEVEL=debug\n"), V3_LAYOUT)
    assert ("info", "debug") == (
        default["REGISTRY_LOG_LEVEL"],
        dict(told.environment)["REGISTRY_LOG_LEVEL"],
    )


def test_the_v2_layout_sets_no_log_level(tmp_path: Path) -> None:
    """v2's spec (and hash) is what it was before layouts: existing containers are adopted."""
    assert "REGISTRY_LOG_LEVEL" not in dict(
        derive_spec(settings_from(tmp_path), V2_LAYOUT).environment
    )


def test_the_hash_is_stable_for_an_unchanged_image(tmp_path: Path) -> None:
    """Same settings, same layout: same hash on every start (adopted, not replaced)."""
    conf = tmp_path / "config.yml"
    conf.write_text("version: 0.1\n")
    settings = settings_from(tmp_path, f"MY_REG_CONF={conf}\n")
    first, again = derive_spec(settings, V3_LAYOUT), derive_spec(settings, V3_LAYOUT)
    assert first.spec_hash == again.spec_hash != derive_spec(settings, V2_LAYOUT).spec_hash


def test_the_collector_reads_the_config_the_image_serves_with(tmp_path: Path) -> None:
    """`registry garbage-collect /etc/distribution/config.yml` on the v3 layout."""
    spec = derive_spec(settings_from(tmp_path), V3_LAYOUT)
    command = collector_command(V3_LAYOUT, dry_run=False, delete_untagged=False)
    config = collector_config(spec, V3_LAYOUT, command)
    expected = (["/bin/registry"], ["garbage-collect", "/etc/distribution/config.yml"])
    assert expected == (config["entrypoint"], config["command"])


def test_tracing_variables_pass_through(tmp_path: Path) -> None:
    """OTEL_* from the env file reach the registry; unset, the image's ENV stays."""
    spec = derive_spec(settings_from(tmp_path, "OTEL_TRACES_EXPORTER=otlp\n"), V3_LAYOUT)
    default = derive_spec(settings_from(tmp_path), V3_LAYOUT)
    assert ("otlp", False) == (
        dict(spec.environment)["OTEL_TRACES_EXPORTER"],
        "OTEL_TRACES_EXPORTER" in dict(default.environment),
    )
