"""decide() and classify(), on inspect data captured from a real engine."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from supervisor.layout import V2_LAYOUT
from supervisor.observed import ContainerState, Observed, observe
from supervisor.reconcile import Action, Decision, Reason, classify, decide
from supervisor.settings import load_settings
from supervisor.spec import ContainerSpec, derive_spec, holder_spec


@pytest.fixture
def desired(tmp_path: Path) -> ContainerSpec:
    return derive_spec(load_settings(None), V2_LAYOUT)


InspectData = Callable[[str], dict[str, Any]]


@pytest.fixture
def ours(desired: ContainerSpec, inspect_data: InspectData) -> Observed:
    running = observe(inspect_data("inspect-running"))
    return replace(running, spec_hash=desired.spec_hash)


def test_nothing_there_is_created(desired: ContainerSpec) -> None:
    """No container of that name: create one."""
    assert decide(None, desired, None) == Decision(Action.CREATE, Reason.REMOVED)


def test_ours_running_and_current_is_adopted(desired: ContainerSpec, ours: Observed) -> None:
    """Same spec hash and running: leave it alone."""
    assert decide(ours, desired, ours.image_id) == Decision(Action.ADOPT)


def test_ours_stopped_is_started_not_recreated(desired: ContainerSpec, ours: Observed) -> None:
    """A stopped container with the current spec is started again, same id."""
    stopped = replace(ours, state=ContainerState.EXITED)
    assert decide(stopped, desired, None) == Decision(Action.START)


def test_ours_with_another_spec_is_replaced(desired: ContainerSpec, ours: Observed) -> None:
    """A stale hash label means the settings changed: replace."""
    stale = replace(ours, spec_hash="0" * 16)
    assert decide(stale, desired, None) == Decision(Action.REPLACE, Reason.SPEC_CHANGED)


def test_a_new_local_image_replaces_the_container(desired: ContainerSpec, ours: Observed) -> None:
    """Same spec but the tag now points at another image: replace."""
    assert decide(ours, desired, "sha256:other").action is Action.REPLACE


def test_a_foreign_container_of_our_name_is_replaced(
    desired: ContainerSpec, ours: Observed
) -> None:
    """The user's old `docker run` container has no label of ours: replace it."""
    foreign = replace(ours, managed=False, spec_hash=None)
    assert decide(foreign, desired, None) == Decision(Action.REPLACE, Reason.FOREIGN)


def test_a_container_being_removed_is_waited_for(desired: ContainerSpec, ours: Observed) -> None:
    """`docker rm -f` in progress: wait, then create."""
    removing = replace(ours, state=ContainerState.REMOVING)
    assert decide(removing, desired, None).action is Action.WAIT


def test_a_paused_container_is_restarted_not_started(
    desired: ContainerSpec, ours: Observed
) -> None:
    """`docker pause`: start would be refused, so kill and start it; the cause is a stop."""
    paused = replace(ours, state=ContainerState.PAUSED)
    assert Decision(Action.RESTART, Reason.STOPPED) == decide(paused, desired, None)
    assert Reason.STOPPED is classify(paused, [])


def test_running_but_unhealthy_is_restarted(desired: ContainerSpec, ours: Observed) -> None:
    """Failed probes on a running container: restart it."""
    assert decide(ours, desired, None, unhealthy=True) == Decision(Action.RESTART, Reason.UNHEALTHY)


def test_a_registry_outside_the_current_holders_network_is_replaced(
    desired: ContainerSpec, ours: Observed
) -> None:
    """Docker names the holder by id: a registry in an old holder's namespace is recreated."""
    holder = replace(ours, id="aaa", started_at="2026-11-29T10:00:00.000000001Z")
    joined = replace(ours, network_mode="container:aaa", started_at="2026-11-29T10:00:00.5Z")
    assert decide(joined, desired, None, holder=holder) == Decision(Action.ADOPT)
    assert decide(joined, desired, None, holder=replace(holder, id="bbb")) == Decision(
        Action.REPLACE, Reason.NETWORK_LOST
    )


def test_a_registry_whose_holder_restarted_is_restarted(
    desired: ContainerSpec, ours: Observed
) -> None:
    """`docker restart <name>-net` keeps the id but not the namespace: evidence that the
    registry is not in the holder's network means a restart into the new one."""
    registry = replace(ours, network_mode="container:aaa")
    holder = replace(ours, id="aaa", pid=4242)
    assert decide(registry, desired, None, holder=holder, in_holder_network=False) == Decision(
        Action.RESTART, Reason.NETWORK_LOST
    )
    stopped = replace(registry, state=ContainerState.EXITED)
    assert decide(stopped, desired, None, holder=holder, in_holder_network=False) == Decision(
        Action.START
    )


def test_wall_clock_stamps_never_order_registry_and_holder(
    desired: ContainerSpec, ours: Observed
) -> None:
    """After a clock step the holder's StartedAt may be later than the registry's: without
    evidence of another namespace, that is no reason to restart."""
    registry = replace(ours, network_mode="container:aaa", started_at="2026-11-29T09:00:00Z")
    holder = replace(ours, id="aaa", pid=4242, started_at="2026-11-29T10:00:00Z")
    assert Decision(Action.ADOPT) == decide(
        registry, desired, None, holder=holder, in_holder_network=True
    )
    assert Decision(Action.ADOPT) == decide(registry, desired, None, holder=holder)


def test_a_dead_container_is_replaced_not_started(desired: ContainerSpec, ours: Observed) -> None:
    """The engine refuses to start a dead container (a failed removal): replace it."""
    dead = replace(ours, state=ContainerState.DEAD)
    assert decide(dead, desired, None).action is Action.REPLACE


def test_the_holder_is_decided_like_the_registry(desired: ContainerSpec, ours: Observed) -> None:
    """The same rules keep the network holder: started if stopped, replaced if stale."""
    holder = holder_spec(desired)
    current = replace(ours, name=holder.name, spec_hash=holder.spec_hash, network_mode="default")
    assert decide(current, holder, None) == Decision(Action.ADOPT)
    stopped = replace(current, state=ContainerState.EXITED)
    assert decide(stopped, holder, None) == Decision(Action.START)
    assert decide(replace(current, spec_hash=desired.spec_hash), holder, None).action is (
        Action.REPLACE
    )
    assert decide(None, holder, None) == Decision(Action.CREATE, Reason.REMOVED)


def test_observe_reads_a_real_inspect(inspect_data: InspectData) -> None:
    """The captured inspect of a supervised registry reads back as ours and running."""
    observed = observe(inspect_data("inspect-running"))
    assert observed.running and observed.managed
    assert observed.name == "rs-dev-1"
    assert observed.published == (5101,)
    assert observed.pid > 0
    assert observed.spec_hash is not None and len(observed.spec_hash) == 16


def test_observe_reads_a_killed_container(inspect_data: InspectData) -> None:
    """A killed container shows its exit code and is not running."""
    observed = observe(inspect_data("inspect-killed"))
    assert not observed.running
    assert (observed.state, observed.exit_code) == (ContainerState.EXITED, 137)


@pytest.mark.parametrize(
    ("actions", "expected"),
    [
        (["die"], Reason.CRASHED),
        (["kill", "die", "stop"], Reason.STOPPED),
        (["oom", "die"], Reason.OOM),
        (["kill", "die", "destroy"], Reason.REMOVED),
    ],
)
def test_classify_names_the_cause_from_events(
    ours: Observed, actions: list[str], expected: Reason
) -> None:
    """Events since the container last ran tell a crash from a stop, an OOM or a removal."""
    exited = replace(ours, state=ContainerState.EXITED)
    assert classify(exited, actions) is expected


def test_classify_a_vanished_container_as_removed() -> None:
    """No container at all: it was removed."""
    assert classify(None, []) is Reason.REMOVED


def test_classify_an_oom_killed_container_without_events(ours: Observed) -> None:
    """State.OOMKilled alone is enough to say oom."""
    assert classify(replace(ours, state=ContainerState.EXITED, oom_killed=True), []) is Reason.OOM
