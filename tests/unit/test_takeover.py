"""Who else holds our port, and whether it is the registry to take over (pure), on inspect
data captured from a real engine: the seed's compose service (`docker-compose up -d`,
docker-compose 1.29.2, Docker 20.10)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from supervisor.observed import ContainerState, Observed, observe
from supervisor.ops.check import take_over_plan
from supervisor.takeover import PortClaim, blocker_line, claim_port, free_hint, undo

DATA = "/var/lib/my_registry"
PORT = 45123


@pytest.fixture
def compose(inspect_data: Callable[[str], dict[str, Any]]) -> Observed:
    """The seed's compose registry, running: restart always, PORT on every address."""
    return observe(inspect_data("inspect-compose"))


def claim(*containers: Observed, bind: str = "127.0.0.1", data: str = DATA) -> PortClaim:
    return claim_port(containers, "my_registry", bind, PORT, (data,))


def test_observe_reads_what_a_take_over_needs(compose: Observed) -> None:
    """Bind mounts, restart policy, host bindings and compose labels come from inspect."""
    assert (
        ((DATA, "/var/lib/registry"),),
        "always",
        (("", PORT),),
        ("registry-compose", "registry", "/root/registry-compose"),
        False,
    ) == (
        compose.binds,
        compose.restart_policy,
        compose.port_bindings,
        (compose.compose_project, compose.compose_service, compose.compose_workdir),
        compose.auto_remove,
    )


def test_the_same_registry_is_taken_over(compose: Observed) -> None:
    """On our port and serving MY_REG_DIR at the registry's data path: taken over."""
    assert PortClaim(take_over=(compose,)) == claim(compose)


def test_another_data_dir_blocks(compose: Observed) -> None:
    """Our port, another data dir: somebody else's registry, not ours to stop."""
    assert PortClaim(blockers=(compose,)) == claim(compose, data="/srv/registry")


def test_our_own_containers_are_left_to_the_loop(compose: Observed) -> None:
    """Our registry and holder (by name) are not occupants: decide() handles them."""
    ours = replace(compose, name="my_registry"), replace(compose, name="my_registry-net")
    assert PortClaim() == claim(*ours)


def test_another_address_does_not_hold_our_port(compose: Observed) -> None:
    """A binding on 127.0.0.2 leaves 127.0.0.1 free; a wildcard one takes every address."""
    elsewhere = replace(compose, port_bindings=(("127.0.0.2", PORT),))
    assert PortClaim() == claim(elsewhere)
    assert PortClaim(take_over=(elsewhere,)) == claim(elsewhere, bind="0.0.0.0")


def test_a_stopped_registry_the_engine_would_restart_is_taken_over(compose: Observed) -> None:
    """Stopped but `restart: always`: an engine restart would start it onto our port."""
    stopped = replace(compose, state=ContainerState.EXITED)
    assert PortClaim(take_over=(stopped,)) == claim(stopped)


def test_a_stopped_container_without_a_policy_holds_nothing(compose: Observed) -> None:
    """Stopped, restart policy no: neither taken over nor in the way."""
    stopped = replace(compose, state=ContainerState.EXITED, restart_policy="no")
    other = replace(stopped, binds=(("/srv/other", "/var/lib/registry"),))
    assert PortClaim() == claim(stopped, other)


def test_another_supervisors_registry_blocks(compose: Observed) -> None:
    """A registry-supervisor container of another name on our data dir is not taken over."""
    managed = replace(compose, name="other", managed=True)
    assert PortClaim(blockers=(managed,)) == claim(managed)


def test_undo_names_the_policy_and_the_compose_project(compose: Observed) -> None:
    """How to go back: stop us, restore its policy, start it (or compose's own command)."""
    name = "registry-compose_registry_1"
    assert (
        "to go back: systemctl disable --now registry-supervisor; "
        f"docker update --restart=always {name}; docker start {name} "
        "(or: cd /root/registry-compose && docker-compose -p registry-compose up -d "
        "--force-recreate registry)"
    ) == undo(compose)


def test_undo_of_a_docker_run_rm_says_to_run_it_again(compose: Observed) -> None:
    """`docker run --rm` is removed by its stop: only its own command brings it back."""
    removed = replace(compose, name="my_reg", auto_remove=True, restart_policy="no")
    assert (
        "to go back: systemctl disable --now registry-supervisor; "
        "run my_reg again as before (it was started with --rm)"
    ) == undo(removed)


def test_freeing_a_restarting_blocker_disables_its_policy_first(compose: Observed) -> None:
    """A blocker with restart always would come back with the engine: update, then stop."""
    name = "registry-compose_registry_1"
    assert f"docker update --restart=no {name} && docker stop {name}" == free_hint(compose)
    assert f"docker stop {name}" == free_hint(replace(compose, restart_policy="no"))


def test_a_blocker_is_named_with_its_data_dir_and_the_fix(compose: Observed) -> None:
    """The line names the container, its compose project, what it serves and the command."""
    assert (
        f"container registry-compose_registry_1 ({compose.short_id}, image registry:2, "
        "compose project registry-compose service registry): it serves /var/lib/my_registry, "
        "not MY_REG_DIR=/srv/data; free the port with `docker update --restart=no "
        "registry-compose_registry_1 && docker stop registry-compose_registry_1`"
    ) == blocker_line(compose, "/srv/data")


def test_check_plans_the_take_over(compose: Observed) -> None:
    """check's line: what run does to it, that its data stays, and the undo."""
    assert take_over_plan(compose).startswith(
        "take over registry-compose_registry_1 ("
        f"{compose.short_id}, image registry:2, compose project registry-compose service "
        "registry), running: it publishes our port and serves MY_REG_DIR; set its restart "
        "policy always -> no and stop it; its data stays; to go back: "
    )


def test_undo_quotes_what_the_shell_would_split_and_keeps_a_retry_count(compose: Observed) -> None:
    """A workdir with a space is quoted; on-failure:5 comes back as on-failure:5."""
    odd = replace(compose, restart_policy="on-failure:5", compose_workdir="/srv/my registry")
    text = undo(odd)
    assert "docker update --restart=on-failure:5 registry-compose_registry_1;" in text
    assert "cd '/srv/my registry' && docker-compose" in text


def test_a_paused_container_on_our_port_is_taken_over_or_blocks(compose: Observed) -> None:
    """Paused still holds the port: the same registry is taken over, another one blocks."""
    paused = replace(compose, state=ContainerState.PAUSED)
    assert (paused,) == claim(paused).take_over
    other = replace(paused, restart_policy="no", binds=())
    assert (other,) == claim(other).blockers


def test_a_udp_binding_does_not_hold_our_tcp_port(
    compose: Observed, inspect_data: Callable[[str], dict[str, Any]]
) -> None:
    """A container publishing PORT/udp is neither taken over nor a blocker."""
    attrs = inspect_data("inspect-compose")
    bindings = attrs["HostConfig"]["PortBindings"]
    attrs["HostConfig"]["PortBindings"] = {"5000/udp": next(iter(bindings.values()))}
    udp = observe(attrs)
    assert () == udp.published
    assert PortClaim() == claim(udp)
