"""The image's layout followed on both majors' layouts (registry:2, registry:3): MY_REG_CONF
mounted where the image reads its config, the version shown, v3's tracing and debug server."""

from __future__ import annotations

import json

import pytest
import requests
from support.process import EX_OK

pytestmark = pytest.mark.integration

CONFIG_PATH = {"v2": "/etc/docker/registry/config.yml", "v3": "/etc/distribution/config.yml"}
# A header only our MY_REG_CONF sets: seen on /v2/, the registry serves our file.
CONFIG = """version: 0.1
storage:
  filesystem:
    rootdirectory: /var/lib/registry
http:
  addr: :5000
  headers:
    X-Served-From: [my-reg-conf]
"""


@pytest.mark.both_layouts
def test_my_reg_conf_is_served_on_either_layout(deployment, tmp_path):
    """MY_REG_CONF goes where the image's Cmd says, and the registry answers with it."""
    conf = tmp_path / "config.yml"
    conf.write_text(CONFIG)
    deployment.write_env(MY_REG_CONF=str(conf))
    deployment.start()

    attrs = deployment.client.api.inspect_container(deployment.running().id)
    mounts = {m["Destination"]: m["Source"] for m in attrs["Mounts"]}
    answer = requests.get(deployment.url, timeout=5)
    assert (str(conf), ["my-reg-conf"]) == (
        mounts.get(CONFIG_PATH[deployment.layout]),
        answer.headers.get("X-Served-From", "").split(", ")[:1],
    )


@pytest.mark.both_layouts
def test_check_names_the_registry_version_and_layout(deployment, tmp_path):
    """`check` says which registry the image carries and where it reads its config."""
    deployment.write_env(MY_REG_STATE_DIR=str(tmp_path / "state"))

    done = deployment.cli("check", "--env-file", str(deployment.env_file))

    assert EX_OK == done.returncode, done.stderr
    major = deployment.layout[1]
    expected = (
        f"# registry 2.8.2+ds1 (v{major} layout: /bin/registry, "
        f"config {CONFIG_PATH[deployment.layout]})"
    )
    assert [expected] == [
        line for line in done.stdout.splitlines() if line.startswith("# registry ")
    ]


@pytest.mark.both_layouts
def test_status_shows_the_registry_version(deployment, tmp_path):
    """`status --json` reports the version of the running container's registry."""
    deployment.write_env(MY_REG_STATE_DIR=str(tmp_path / "state"))
    deployment.start()

    done = deployment.cli("status", "--json", "--env-file", str(deployment.env_file))

    report = json.loads(done.stdout)
    assert ("2.8.2+ds1", CONFIG_PATH[deployment.layout]) == (
        report["registry_version"],
        report["config_path"],
    )


@pytest.mark.parametrize("layout", ["v3"], indirect=True)
def test_v3_keeps_tracing_off_and_publishes_only_the_registry_port(deployment):
    """On the v3 layout the image's OTEL_TRACES_EXPORTER=none stays, the registry logs at
    info (not the image's debug), and only :5000 is published (never the debug :5001)."""
    deployment.start()

    env = deployment.client.api.inspect_container(deployment.running().id)["Config"]["Env"]
    holder = deployment.client.api.inspect_container(deployment.holder_name)
    published = sorted(holder["HostConfig"]["PortBindings"])
    assert (True, True, ["5000/tcp"]) == (
        "OTEL_TRACES_EXPORTER=none" in env,
        "REGISTRY_LOG_LEVEL=info" in env,
        published,
    )


@pytest.mark.parametrize("layout", ["v3"], indirect=True)
def test_gc_on_the_v3_layout_collects_with_its_config(deployment, tmp_path):
    """`gc --dry-run` runs the collector on /etc/distribution/config.yml (the v2 path is
    absent from that image)."""
    deployment.write_env(MY_REG_STATE_DIR=str(tmp_path / "state"))
    deployment.start()
    deployment.push_image()

    done = deployment.cli("gc", "--dry-run", "--json", "--env-file", str(deployment.env_file))

    assert EX_OK == done.returncode, done.stderr
    assert "ok" == json.loads(done.stdout)["outcome"]
