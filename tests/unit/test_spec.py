"""Container spec derivation and hashing (pure)."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.certs import MakeTls
from support.settings import settings_from, spec_hash

from supervisor.engine.configs import create_config, holder_create_config
from supervisor.layout import V2_LAYOUT
from supervisor.spec import MANAGED_BY_LABEL, SPEC_HASH_LABEL, Mount, derive_spec, holder_spec


def test_data_dir_is_mounted_read_write_at_var_lib_registry(tmp_path: Path) -> None:
    """MY_REG_DIR is the registry's storage, mounted where the image expects it."""
    spec = derive_spec(settings_from(tmp_path, "MY_REG_DIR=/srv/reg\n"), V2_LAYOUT)
    assert spec.mounts == (Mount("/srv/reg", "/var/lib/registry"),)
    assert spec.image == "registry:latest"


def test_config_file_is_mounted_read_only(tmp_path: Path) -> None:
    """MY_REG_CONF replaces the image's config.yml, read-only."""
    conf = tmp_path / "config.yml"
    conf.write_text("version: 0.1\n")
    spec = derive_spec(settings_from(tmp_path, f"MY_REG_CONF={conf}\n"), V2_LAYOUT)
    assert Mount(str(conf), "/etc/docker/registry/config.yml", read_only=True) in spec.mounts


def test_tls_dir_is_mounted_at_certs_with_the_seeds_variables(
    tmp_path: Path, make_tls: MakeTls
) -> None:
    """TLS on: /certs mounted and REGISTRY_HTTP_TLS_* point at the files, as in the seed."""
    tls = tmp_path / "tls"
    make_tls(tls, crt="c.pem", key="k.pem")
    spec = derive_spec(
        settings_from(
            tmp_path, f"MY_REG_TLS_DIR={tls}\nMY_REG_TLS_CRT=c.pem\nMY_REG_TLS_KEY=k.pem\n"
        ),
        V2_LAYOUT,
    )
    assert Mount(str(tls), "/certs", read_only=True) in spec.mounts
    assert dict(spec.environment) == {
        "REGISTRY_HTTP_TLS_CERTIFICATE": "/certs/c.pem",
        "REGISTRY_HTTP_TLS_KEY": "/certs/k.pem",
    }


def test_hash_is_stable_for_equal_settings(tmp_path: Path) -> None:
    """Deriving twice from the same settings gives the same hash."""
    settings = settings_from(tmp_path, "REGISTRY_A=1\nREGISTRY_B=2\n")
    assert derive_spec(settings, V2_LAYOUT).spec_hash == derive_spec(settings, V2_LAYOUT).spec_hash


@pytest.mark.parametrize(
    "change",
    [
        "MY_REG_PORT=5002",
        "MY_REG_TAG=2",
        "MY_REG_BIND=127.0.0.1",
        "MY_REG_DIR=/srv/other",
        "REGISTRY_LOG_LEVEL=debug",
        "MY_REG_STOP_TIMEOUT=30",
    ],
)
def test_hash_changes_with_anything_that_shapes_the_container(tmp_path: Path, change: str) -> None:
    """Each setting that changes the container changes the hash."""
    base = spec_hash(tmp_path)
    assert spec_hash(tmp_path, change + "\n") != base


@pytest.mark.parametrize(
    "change",
    [
        "MY_REG_HEALTH_INTERVAL=9",
        "MY_REG_LOG_LEVEL=debug",
        "MY_REG_STOP_ON_EXIT=false",
        "MY_REG_PULL=never",
    ],
)
def test_hash_ignores_supervisor_only_settings(tmp_path: Path, change: str) -> None:
    """Probe, log and pull settings do not recreate the container."""
    base = spec_hash(tmp_path)
    assert spec_hash(tmp_path, change + "\n") == base


def test_container_is_labelled_with_its_hash_and_never_restarted_by_docker(tmp_path: Path) -> None:
    """The registry carries our labels and restart policy `no`, and joins the holder's network."""
    spec = derive_spec(
        settings_from(tmp_path, "MY_REG_BIND=127.0.0.1\nMY_REG_PORT=5005\n"), V2_LAYOUT
    )
    config = create_config(spec, holder_id="f00d")
    assert config["labels"][SPEC_HASH_LABEL] == spec.spec_hash
    assert config["labels"][MANAGED_BY_LABEL] == "registry-supervisor"
    assert config["host_config"]["restart_policy"] == {"Name": "no"}
    assert config["host_config"]["network_mode"] == "container:f00d"
    assert "port_bindings" not in config["host_config"]
    assert "ports" not in config
    assert [
        {
            "Target": "/var/lib/registry",
            "Source": "/var/lib/my_registry",
            "Type": "bind",
            "ReadOnly": False,
        }
    ] == [dict(m) for m in config["host_config"]["mounts"]]


def test_the_network_holder_publishes_the_port_and_only_sleeps(tmp_path: Path) -> None:
    """The holder owns the published port; it runs the image's `sleep` and has no data."""
    spec = derive_spec(
        settings_from(tmp_path, "MY_REG_BIND=127.0.0.1\nMY_REG_PORT=5005\n"), V2_LAYOUT
    )
    holder = holder_spec(spec)
    config = holder_create_config(holder)
    assert config["name"] == "my_registry-net"
    assert config["image"] == spec.image
    assert [*config["entrypoint"], *config["command"]] == ["sleep", "2147483647"]
    assert config["labels"] == {
        MANAGED_BY_LABEL: "registry-supervisor",
        SPEC_HASH_LABEL: holder.spec_hash,
    }
    assert config["host_config"]["port_bindings"] == {"5000/tcp": ("127.0.0.1", 5005)}
    assert config["host_config"]["restart_policy"] == {"Name": "no"}
    assert config["stop_signal"] == "SIGKILL"
    assert "mounts" not in config["host_config"]  # never the registry's data
    assert "/var/lib/registry" in config["host_config"]["tmpfs"]  # no anonymous volume


def test_the_holder_changes_with_the_port_but_not_with_the_registry_environment(
    tmp_path: Path,
) -> None:
    """A new port means a new holder; an env change replaces the registry only."""
    base = holder_spec(derive_spec(settings_from(tmp_path), V2_LAYOUT)).spec_hash
    env = holder_spec(derive_spec(settings_from(tmp_path, "REGISTRY_LOG_LEVEL=debug\n"), V2_LAYOUT))
    port = holder_spec(derive_spec(settings_from(tmp_path, "MY_REG_PORT=5009\n"), V2_LAYOUT))
    assert env.spec_hash == base
    assert port.spec_hash != base
    assert port.spec_hash != spec_hash(tmp_path, "MY_REG_PORT=5009\n")
