"""Issue 10 against the real engine: a reload never takes down a working registry, host
paths the bind syntax cannot carry still work, and `check` predicts what `run` will do and
what the engine would refuse."""

from __future__ import annotations

import os
import signal
import socket
import time

import pytest
from support.docker import docker_cli
from support.process import EX_CONFIG, EX_OK

pytestmark = pytest.mark.integration

QUIET_PERIOD = 1.5


def test_reload_to_an_absent_image_is_rejected_before_anything_changes(deployment):
    """SIGHUP naming an image that is not there (MY_REG_PULL=never): the reload is rejected
    with that reason and the running registry is left as it is."""
    sup = deployment.start()
    before = deployment.running()
    deployment.write_env(MY_REG_TAG="not-here")

    since = sup.mark()
    sup.send(signal.SIGHUP)

    rejected = sup.wait_for_event("settings.reload_rejected", since=since)
    assert "MY_REG_TAG=not-here" in str(rejected["problems"])
    time.sleep(QUIET_PERIOD)
    assert [] == sup.find("container.replaced", since=since)
    assert before == deployment.running()
    assert 200 == deployment.v2_status()


def test_reload_onto_a_taken_port_rolls_back_to_the_working_registry(deployment):
    """SIGHUP moving the registry to a port another process holds: the new holder cannot
    start (port-busy), and the previous settings are restored, serving on the old port again."""
    sup = deployment.start()
    image = deployment.push_image()
    old_port = deployment.port
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        new_port = taken.getsockname()[1]
        deployment.write_env(MY_REG_PORT=new_port)

        since = sup.mark()
        sup.send(signal.SIGHUP)

        rejected = sup.wait_for_event("settings.reload_rejected", since=since)
        assert "port-busy" in str(rejected["problems"])
        sup.wait_for_event("registry.healthy", since=since)
    holder = deployment.running(deployment.holder_name)
    assert (f"127.0.0.1:{old_port}",) == holder.host_ports
    deployment.assert_pullable(image, port=old_port)
    assert sup.running


def test_reload_to_a_registry_that_crashes_at_start_rolls_back(deployment):
    """SIGHUP with a REGISTRY_* value the registry dies of (an unknown storage driver): the
    new container crashes before it ever served, and the previous settings come back."""
    sup = deployment.start()
    image = deployment.push_image()
    deployment.write_env(REGISTRY_STORAGE="no-such-driver")

    since = sup.mark()
    sup.send(signal.SIGHUP)

    rejected = sup.wait_for_event("settings.reload_rejected", since=since)
    assert "crashed" in str(rejected["problems"])
    sup.wait_for_event("registry.healthy", since=since)
    observed = deployment.running()
    assert "REGISTRY_STORAGE=no-such-driver" not in str(
        deployment.client.api.inspect_container(observed.id)["Config"]["Env"]
    )
    deployment.assert_pullable(image)
    # Kept rolled back: no crash loop on the rejected settings afterwards.
    settled = sup.mark()
    time.sleep(QUIET_PERIOD)
    assert [] == sup.find("container.restarting", since=settled)


def test_a_data_dir_with_a_colon_comma_and_space_holds_the_data(deployment):
    """`src:dst:mode` bind strings cannot carry a colon; the Mounts API can: pushes land in
    exactly that directory."""
    odd = deployment.root / "data:with,odd chars"
    deployment.data_dir = odd
    deployment.write_env(MY_REG_DIR=str(odd))
    deployment.start()

    image = deployment.push_image()

    assert (str(odd), "/var/lib/registry", True) in deployment.running().binds
    assert any((odd / "docker" / "registry" / "v2" / "blobs").rglob("data"))
    deployment.assert_pullable(image)


def test_check_refuses_a_bind_address_this_host_does_not_have(deployment):
    """MY_REG_BIND=192.0.2.10 (TEST-NET-1): one line naming it, exit 78, no traceback."""
    deployment.write_env(MY_REG_BIND="192.0.2.10")

    done = deployment.cli("check", "--env-file", str(deployment.env_file))

    assert EX_CONFIG == done.returncode
    assert (
        "registry-supervisor: MY_REG_BIND=192.0.2.10: expected an address of this host "
        "(Cannot assign requested address)"
    ) == done.stderr.strip()


def test_check_calls_a_port_held_only_by_time_wait_free(deployment):
    """A connection closed by the server side leaves TIME_WAIT on the port: it is free."""
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", deployment.port))
        server.listen()
        client = socket.create_connection(("127.0.0.1", deployment.port))
        accepted, _ = server.accept()
        accepted.close()  # the side that closes first keeps TIME_WAIT
        time.sleep(0.1)
        client.close()

    done = deployment.cli("check", "--env-file", str(deployment.env_file))

    assert EX_OK == done.returncode, done.stderr
    assert f"# port {deployment.port}: free" in done.stdout.splitlines()


def test_check_says_what_run_will_do_with_a_foreign_container(deployment):
    """The seed's `docker run --name my_registry`: check says run replaces it, keeping data."""
    foreign = deployment.run_foreign()

    done = deployment.cli("check", "--env-file", str(deployment.env_file))

    assert EX_OK == done.returncode, done.stderr
    lines = done.stdout.splitlines()
    assert f"# run will create {deployment.holder_name}" in lines
    assert any(
        line.startswith(f"# run will replace {deployment.name} ({foreign.id[:12]}, running)")
        and "not created by registry-supervisor" in line
        for line in lines
    ), lines


def test_check_warns_that_run_waits_for_an_absent_image_it_may_not_pull(deployment):
    """MY_REG_PULL=never and no such image: check says run will wait for it."""
    deployment.write_env(MY_REG_TAG="not-here")

    done = deployment.cli("check", "--env-file", str(deployment.env_file))

    assert EX_OK == done.returncode, done.stderr
    assert any(
        line.startswith("# WARNING: image registry:not-here is not present and MY_REG_PULL=never")
        for line in done.stdout.splitlines()
    )


def test_check_prints_the_environment_the_container_really_gets(deployment, tmp_path):
    """With MY_REG_AUTH_HTPASSWD, check shows REGISTRY_AUTH=htpasswd and its path, as the
    container gets them."""
    htpasswd = tmp_path / "htpasswd"
    # A bcrypt entry (cost 5) for alice:pw, as `registry-supervisor htpasswd` writes them.
    htpasswd.write_text("alice:$2b$05$jgDWAnDvOzGEvE6moTUr6.6C9Ven69Rj1CzN/CpAM7w2Yf5VzxPMG\n")
    htpasswd.chmod(0o644)
    deployment.write_env(MY_REG_AUTH_HTPASSWD=str(htpasswd))

    done = deployment.cli("check", "--env-file", str(deployment.env_file))

    lines = done.stdout.splitlines()
    assert "REGISTRY_AUTH=htpasswd" in lines
    assert "REGISTRY_AUTH_HTPASSWD_PATH=/auth/htpasswd" in lines
    assert "REGISTRY_HTTP_SECRET=********" in lines


@pytest.mark.parametrize("step", ["-1h", "+7h"])
def test_a_wall_clock_step_causes_no_restart_loop(deployment, stepped_clock, step):
    """With the supervisor's wall clock stepped, a restarted holder costs the registry one
    restart into its new network, a crash one restart: nothing is ordered by wall time, so
    nothing restarts again and again (7 restarts in 25 s when StartedAt decided)."""
    deployment.write_env(MY_REG_HEALTH_INTERVAL="60")  # repairs come from events, not probes
    sup = deployment.start(env=stepped_clock.env)
    image = deployment.push_image()
    stepped_clock.step(step)
    since = sup.mark()

    docker_cli("restart", "--time", "0", deployment.holder_name)
    sup.wait_for_event("registry.healthy", since=since)
    crashed = sup.mark()
    os.kill(deployment.running().pid, signal.SIGKILL)
    sup.wait_for_event("registry.healthy", since=crashed)
    time.sleep(3 * QUIET_PERIOD)

    reasons = [e["reason"] for e in sup.find("container.restarting", since=since)]
    # The holder is seen down (stopped), or already up again with a new namespace.
    assert reasons in (["stopped", "crashed"], ["network-lost", "crashed"]), reasons
    holder = deployment.running(deployment.holder_name)
    assert deployment.running().network_mode == f"container:{holder.id}"
    deployment.assert_pullable(image)
