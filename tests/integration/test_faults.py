"""Faults in the registry container are repaired, and what was pushed before is pulled after."""

from __future__ import annotations

import os
import signal
import time
from datetime import datetime

import pytest
from support.docker import docker_cli

pytestmark = pytest.mark.integration

# Crashes, removals and stops must be repaired from the Docker event stream, at once. These
# tests probe only once a minute, so a repair within EVENT_DEADLINE seconds cannot have come
# from a failed probe.
PROBE_RARELY = {"MY_REG_HEALTH_INTERVAL": "60"}
EVENT_DEADLINE = 10.0


@pytest.mark.both_layouts
def test_first_start_creates_a_labelled_container(deployment):
    """With no container, the supervisor creates one with our labels, restart policy "no" and
    the data dir mounted, in the network of a holder that publishes the port on the configured
    address."""
    assert not deployment.data_dir.exists()

    sup = deployment.start()

    created = sup.wait_for_event("container.created")
    observed = deployment.running()
    holder = deployment.running(deployment.holder_name)
    assert observed.id.startswith(created["container_id"][:12])
    assert observed.managed and holder.managed
    assert observed.spec_hash and holder.spec_hash
    assert observed.restart_policy == "no" == holder.restart_policy
    assert observed.network_mode == f"container:{holder.id}"
    assert observed.host_ports == ()
    assert (f"127.0.0.1:{deployment.port}",) == holder.host_ports
    assert holder.binds == ()
    assert (str(deployment.data_dir), "/var/lib/registry", True) in observed.binds
    assert deployment.data_dir.is_dir()
    assert deployment.v2_status() == 200


@pytest.mark.both_layouts
def test_killed_registry_process_is_started_again(deployment):
    """A SIGKILLed registry process is started again at once (from the event stream, not a
    probe), in the same container, data intact."""
    deployment.write_env(**PROBE_RARELY)
    sup = deployment.start()
    image = deployment.push_image()
    before = deployment.data_snapshot()
    old = deployment.running()

    since = sup.mark()
    fault_at = time.time()
    os.kill(old.pid, signal.SIGKILL)

    restarting = sup.wait_for_event(
        "container.restarting", EVENT_DEADLINE, since=since, reason="crashed"
    )
    deployment.record_recovery("registry process SIGKILLed", sup, since, fault_at)
    assert restarting.get("exit_code") == 137
    new = deployment.running()
    assert old.id == new.id
    assert old.started_at != new.started_at
    deployment.assert_data_kept(before)
    deployment.assert_pullable(image)


@pytest.mark.both_layouts
def test_removed_container_is_recreated(deployment):
    """A container removed with `docker rm -f` is created again at once, data intact."""
    deployment.write_env(**PROBE_RARELY)
    sup = deployment.start()
    image = deployment.push_image()
    before = deployment.data_snapshot()
    old = deployment.running()

    since = sup.mark()
    fault_at = time.time()
    docker_cli("rm", "-f", deployment.name)

    sup.wait_for_event("container.restarting", EVENT_DEADLINE, since=since, reason="removed")
    created = sup.wait_for_event("container.created", since=since)
    deployment.record_recovery("container removed (docker rm -f)", sup, since, fault_at)
    new = deployment.running()
    assert old.id != new.id
    assert new.id.startswith(created["container_id"][:12])
    assert new.managed
    deployment.assert_data_kept(before)
    deployment.assert_pullable(image)


def test_stopped_container_is_started_again(deployment):
    """A container stopped with `docker stop` is started again at once, data intact."""
    deployment.write_env(**PROBE_RARELY)
    sup = deployment.start()
    image = deployment.push_image()
    before = deployment.data_snapshot()
    old = deployment.running()

    since = sup.mark()
    fault_at = time.time()
    docker_cli("stop", "--time", "5", deployment.name)

    sup.wait_for_event("container.restarting", EVENT_DEADLINE, since=since, reason="stopped")
    deployment.record_recovery("container stopped (docker stop)", sup, since, fault_at)
    new = deployment.running()
    assert old.id == new.id
    assert old.started_at != new.started_at
    deployment.assert_data_kept(before)
    deployment.assert_pullable(image)


@pytest.mark.parametrize("fault", ["rm", "stop", "kill"])
def test_a_lost_network_holder_is_repaired_with_the_registry(deployment, fault):
    """The holder removed, stopped or killed takes the registry's network with it: both are
    repaired at once from the event stream, the registry in the new holder's network."""
    deployment.write_env(**PROBE_RARELY)
    sup = deployment.start()
    image = deployment.push_image()
    before = deployment.data_snapshot()
    old_holder = deployment.running(deployment.holder_name)

    since = sup.mark()
    fault_at = time.time()
    if fault == "kill":
        os.kill(old_holder.pid, signal.SIGKILL)
    else:
        docker_cli(fault, *(("-f",) if fault == "rm" else ()), deployment.holder_name)

    restarting = sup.wait_for_event("container.restarting", EVENT_DEADLINE, since=since)
    assert restarting.get("down") == deployment.holder_name
    assert restarting["reason"] == {"rm": "removed", "stop": "stopped", "kill": "crashed"}[fault]
    deployment.record_recovery(f"network holder: {fault}", sup, since, fault_at)
    holder = deployment.running(deployment.holder_name)
    registry = deployment.running()
    assert (holder.id == old_holder.id) == (fault != "rm")
    assert registry.network_mode == f"container:{holder.id}"
    deployment.assert_data_kept(before)
    deployment.assert_pullable(image)


def test_a_restarted_network_holder_takes_the_registry_into_its_new_network(deployment):
    """`docker restart <name>-net` keeps the holder's id but gives it a new namespace. Done
    while no supervisor runs, the registry is left running without a network: the next start
    restarts it into the holder's new one instead of adopting it."""
    deployment.write_env(**PROBE_RARELY)
    first = deployment.start()
    image = deployment.push_image()
    old_registry = deployment.running()
    first.kill()
    docker_cli("restart", "--time", "0", deployment.holder_name)
    assert deployment.v2_status(timeout=0.5) is None  # running, but unreachable

    second = deployment.start()  # waits for registry.healthy

    assert second.find("container.started", container_id=old_registry.id[:12])
    assert not second.find("container.adopted", container_id=old_registry.id[:12])
    holder = deployment.running(deployment.holder_name)
    registry = deployment.running()
    assert registry.id == old_registry.id
    assert datetime.fromisoformat(registry.started_at) > datetime.fromisoformat(holder.started_at)
    deployment.assert_pullable(image)


def test_repeated_crashes_leave_no_connections_behind(deployment):
    """Each restart follows the registry's logs afresh (a URL with a new `since`): the
    supervisor's open descriptors do not grow with the number of crashes."""
    deployment.write_env(**PROBE_RARELY)
    sup = deployment.start()

    def crash_and_recover() -> None:
        since = sup.mark()
        os.kill(deployment.running().pid, signal.SIGKILL)
        sup.wait_for_event("registry.healthy", since=since)
        sup.wait_for_event("registry.log", since=since)  # the new follower is reading

    crash_and_recover()
    before = len(os.listdir(f"/proc/{sup.pid}/fd"))
    for _ in range(5):
        crash_and_recover()
    after = len(os.listdir(f"/proc/{sup.pid}/fd"))
    assert after <= before + 1, f"{after - before} descriptors more after 5 crashes"


def test_a_container_the_engine_will_not_start_is_replaced(deployment, tmp_path):
    """A holder of ours, current, that the engine refuses to start (as one stopped mid-start
    by an engine shutdown can be: "task already exists") is replaced after two refusals,
    with backoff between them, and the registry comes up in the new one."""
    first = deployment.start()
    labels = deployment.running(deployment.holder_name).labels
    first.kill()
    docker_cli("rm", "-f", deployment.name, deployment.holder_name)
    # Same name and labels, so it is ours and current; its mount source is then removed,
    # so every `docker start` of it fails.
    gone = tmp_path / "gone"
    gone.mkdir()
    docker_cli(
        "create", "--name", deployment.holder_name,
        *(arg for key, value in labels.items() for arg in ("--label", f"{key}={value}")),
        "--mount", f"type=bind,src={gone},dst=/gone", "registry:2",
    )  # fmt: skip
    gone.rmdir()
    stuck = deployment.observe(deployment.holder_name)
    assert stuck is not None

    second = deployment.start()  # waits for registry.healthy

    failures = second.find("container.start_failed")
    assert [f["failures"] for f in failures] == [1, 2]
    replaced = second.find("container.replaced", why="unstartable")
    assert [r["name"] for r in replaced] == [deployment.holder_name]
    restarting = second.find("container.restarting")
    assert restarting[-1]["delay_s"] > 0  # the retry after a refusal backed off
    holder = deployment.running(deployment.holder_name)
    assert holder.id != stuck.id
    assert deployment.running().network_mode == f"container:{holder.id}"


def test_paused_container_is_restarted(deployment):
    """A `docker pause`d registry (which `docker start` refuses) is found by the probe and
    restarted, data intact."""
    deployment.write_env(
        MY_REG_HEALTH_INTERVAL="0.5", MY_REG_HEALTH_TIMEOUT="0.5", MY_REG_STARTUP_GRACE="1"
    )
    sup = deployment.start()
    image = deployment.push_image()
    before = deployment.data_snapshot()
    old = deployment.running()

    since = sup.mark()
    docker_cli("pause", deployment.name)

    sup.wait_for_event("container.restarting", since=since, reason="stopped")
    sup.wait_for_event("registry.healthy", since=since)
    new = deployment.running()
    assert old.id == new.id
    assert old.started_at != new.started_at
    assert [] == sup.find("container.start_failed", since=since)
    deployment.assert_data_kept(before)
    deployment.assert_pullable(image)


def test_hung_registry_is_restarted_after_failed_probes(deployment):
    """A SIGSTOPped registry (port open, no answer) is restarted once the probe has failed
    MY_REG_HEALTH_RETRIES times, data intact."""
    deployment.write_env(
        MY_REG_HEALTH_INTERVAL="0.5",
        MY_REG_HEALTH_TIMEOUT="0.5",
        MY_REG_HEALTH_RETRIES="2",
        MY_REG_STARTUP_GRACE="1",
        MY_REG_STOP_TIMEOUT="1",
    )
    sup = deployment.start()
    image = deployment.push_image()
    before = deployment.data_snapshot()
    old = deployment.running()

    since = sup.mark()
    fault_at = time.time()
    os.kill(old.pid, signal.SIGSTOP)

    failed = sup.wait_for_event("probe.failed", since=since)
    assert failed.get("error")
    sup.wait_for_event("container.restarting", since=since, reason="unhealthy")
    deployment.record_recovery("registry hung (SIGSTOP)", sup, since, fault_at)
    new = deployment.running()
    assert old.started_at != new.started_at
    assert old.pid != new.pid
    deployment.assert_data_kept(before)
    deployment.assert_pullable(image)


def test_foreign_container_of_the_same_name_is_replaced(deployment):
    """A container of our name that we did not create (a user's `docker run -p`, holding the
    port) is replaced."""
    foreign = deployment.run_foreign()
    deployment.wait_answering()

    sup = deployment.start()

    replaced = sup.wait_for_event("container.replaced")
    assert foreign.id.startswith(replaced["old_id"][:12])
    assert replaced.get("why") == "foreign"
    sup.wait_for_event("registry.healthy")
    # It held the port: it went first, so the holder was created once, without a retry.
    order = [e["event"] for e in sup.events()]
    assert order.index("container.replaced") < order.index("holder.created")
    assert order.count("holder.created") == 1
    assert "container.start_failed" not in order
    new = deployment.running()
    assert foreign.id != new.id
    assert new.managed
    image = deployment.push_image()
    deployment.assert_pullable(image)


def test_our_container_with_another_spec_is_replaced_at_start(deployment):
    """A container we created from other settings is replaced when the supervisor starts."""
    first = deployment.start()
    image = deployment.push_image()
    old = deployment.running()
    first.kill()
    deployment.write_env(MY_REG_TAG="latest")

    second = deployment.start()

    replaced = second.wait_for_event("container.replaced")
    assert old.id.startswith(replaced["old_id"][:12])
    new = deployment.running()
    assert old.id != new.id
    assert old.spec_hash != new.spec_hash
    deployment.assert_pullable(image)
