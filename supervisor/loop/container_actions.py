"""What the keeper does to the containers through the engine: create, start, retire,
take over, and the holder-first order of a repair.

Every action logs what it did; none decides when to act (supervisor/loop/keeper.py does).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from supervisor import takeover
from supervisor.engine.client import API_TIMEOUT_S, network_namespace
from supervisor.errors import ContainerGone, PortBusy, SupervisorError
from supervisor.loop.data_dir import data_dirs
from supervisor.loop.engine_link import EngineLink
from supervisor.loop.watchdog import WatchdogFeeder
from supervisor.observed import ContainerState, Observed
from supervisor.reconcile import Action, Decision, Reason, decide
from supervisor.settings import Settings
from supervisor.spec import ContainerSpec, HolderSpec

# A container the engine refused to start this many times in a row is replaced: a new
# container has a new id, free of what an engine stopped mid-start leaves behind (a
# containerd task that "already exists", a stale network endpoint).
REPLACE_AFTER_FAILED_STARTS = 2


@dataclass
class Desired:
    """What should run: the settings, the registry's spec and its network holder's.

    Owned by the loop (a reload replaces its fields); components read it."""

    settings: Settings
    spec: ContainerSpec
    holder: HolderSpec


@dataclass
class Tracked:
    """The container this supervisor runs, as far as it knows."""

    container_id: str | None = None
    # The holder's pid when the registry last started in its namespace (see decide()).
    joined_holder_pid: int | None = None


def unless_unstartable(decision: Decision, failed_starts: int) -> Decision:
    """START or RESTART becomes REPLACE once the engine has refused too many starts."""
    if failed_starts >= REPLACE_AFTER_FAILED_STARTS and decision.action in (
        Action.START,
        Action.RESTART,
    ):
        return Decision(Action.REPLACE, Reason.UNSTARTABLE)
    return decision


class ContainerActions:
    """The engine calls of a repair, in the order that keeps the port and the data safe."""

    def __init__(
        self,
        link: EngineLink,
        feeder: WatchdogFeeder,
        desired: Desired,
        tracked: Tracked,
        log: Any,
    ) -> None:
        self._link = link
        self._feeder = feeder
        self._desired = desired
        self._tracked = tracked
        self.log = log

    def stop(self, container_id: str) -> None:
        """`docker stop`: SIGTERM, then SIGKILL after MY_REG_STOP_TIMEOUT."""
        timeout, docker = self._desired.settings.stop_timeout, self._link.docker
        # docker-py waits `timeout` beyond its API timeout for this call.
        self._feeder.blocking(
            "docker-stop", timeout + API_TIMEOUT_S, lambda: docker.stop(container_id, timeout)
        )

    def restart(self, container_id: str) -> None:
        """`docker restart -t 0`: an engine call, bounded by the API timeout."""
        docker = self._link.docker
        self._feeder.blocking("docker-restart", API_TIMEOUT_S, lambda: docker.restart(container_id))

    def inspect_registry(self) -> Observed | None:
        """The registry container as the engine shows it (None: there is none)."""
        return self._link.docker.inspect(self._desired.settings.name)

    def both_running(self) -> bool:
        """Whether the registry and its holder both run."""
        observed = self._link.docker.inspect(self._desired.settings.name)
        holder = self._link.docker.inspect(self._desired.holder.name)
        return observed is not None and observed.running and holder is not None and holder.running

    def observe_holder(self) -> tuple[Observed | None, Decision]:
        """The network holder as the engine shows it, and what it needs."""
        holder = self._link.docker.inspect(self._desired.holder.name)
        # The holder only runs `sleep`: a new image id is no reason to rebuild its network.
        return holder, decide(holder, self._desired.holder, None)

    def in_holder_network(self, registry: Observed | None, holder: Observed) -> bool | None:
        """Whether the running registry shares the holder's network namespace (see decide()).

        The processes' namespaces are the truth when /proc shows them; else the holder's
        pid when this supervisor last started the registry in it (a restarted holder has
        another). None: no evidence either way (the probe then tells).
        """
        if registry is None or not registry.running or not holder.running:
            return None
        mine, its = network_namespace(registry), network_namespace(holder)
        if mine is not None and its is not None:
            return mine == its
        tracked = self._tracked
        if tracked.joined_holder_pid is not None and registry.id == tracked.container_id:
            return holder.pid == tracked.joined_holder_pid
        return None

    def apply_repair(self, reason: Reason | None, image_id: str | None, failed_starts: int) -> bool:
        """Holder first, then the registry in its namespace; False: look again shortly."""
        desired, tracked = self._desired, self._tracked
        holder, held = self.observe_holder()
        held = unless_unstartable(held, failed_starts)
        observed = self._link.docker.inspect(desired.settings.name)
        if held.action is Action.WAIT:
            return False
        if held.action is not Action.ADOPT or holder is None:
            holder = self._repair_holder(holder, held, observed, image_id)
            observed = self._link.docker.inspect(desired.settings.name)
        decision = unless_unstartable(
            decide(
                observed,
                desired.spec,
                image_id,
                unhealthy=reason is Reason.UNHEALTHY,
                holder=holder,
                in_holder_network=self.in_holder_network(observed, holder),
            ),
            failed_starts,
        )
        if decision.action is Action.WAIT:
            return False
        # Whatever happens below, the registry (re)joins the namespace of this holder.
        tracked.joined_holder_pid = holder.pid
        if decision.action is Action.ADOPT and observed is not None:
            if observed.id != tracked.container_id:
                self.log.info("container.adopted", container_id=observed.short_id)
            tracked.container_id = observed.id
        elif decision.action is Action.START and observed is not None:
            self._link.docker.start(observed.id)
            tracked.container_id = observed.id
            self.log.info("container.started", container_id=observed.short_id, reason=reason)
        elif decision.action is Action.RESTART and observed is not None:
            self.restart(observed.id)
            tracked.container_id = observed.id
            self.log.info("container.started", container_id=observed.short_id, reason=reason)
        elif decision.action is Action.REPLACE and observed is not None:
            self.retire(observed, decision.reason)
            self._create(holder.id)
        else:  # Action.CREATE
            self._create(holder.id)
        return True

    def _repair_holder(
        self,
        holder: Observed | None,
        held: Decision,
        registry: Observed | None,
        image_id: str | None,
    ) -> Observed:
        """Bring the network holder back, running.

        The registry's network went with the holder, so a running registry is stopped
        first (started again by the caller), and retired if the holder is replaced:
        Docker names the holder by id. A registry to be replaced anyway (foreign, or
        from an earlier release) may hold the port, so it goes before a new holder.
        """
        spec = self._desired.holder
        if registry is not None:
            own = decide(registry, self._desired.spec, image_id)
            if own.action is Action.REPLACE:
                self.retire(registry, own.reason)
            elif held.action in (Action.CREATE, Action.REPLACE):
                self.retire(registry, Reason.NETWORK_LOST)
            elif registry.running:
                self.stop(registry.id)
        if held.action is Action.REPLACE and holder is not None:
            self.retire(holder, held.reason)
        # Whatever else publishes the port goes, or we wait, before a holder is created.
        self._free_port()
        if held.action in (Action.CREATE, Action.REPLACE) or holder is None:
            holder = self._link.docker.create_holder(spec)
            self.log.info("holder.created", name=spec.name, container_id=holder.short_id)
            # A host process on the port fails this (PortBusy): the holder stays, to be
            # started once the port is free, never created again meanwhile.
            self._link.docker.start(holder.id)
        else:
            if held.action is Action.RESTART:  # paused
                self.restart(holder.id)
            else:
                self._link.docker.start(holder.id)
            self.log.info("holder.started", name=spec.name, container_id=holder.short_id)
        # Its new StartedAt tells a registry started before it (one without a network).
        started = self._link.docker.inspect(holder.id)
        if started is None:
            raise ContainerGone(f"{spec.name}: removed while starting")
        return started

    def _free_port(self) -> None:
        """Before our holder publishes the port: take over the same registry run another
        way (supervisor/takeover.py); PortBusy if anything else holds the port."""
        settings = self._desired.settings
        claim = takeover.claim_port(
            self._link.docker.publishing(settings.port),
            settings.name,
            settings.bind,
            settings.port,
            data_dirs(settings),
        )
        for old in claim.take_over:
            self._take_over(old)
        if claim.blockers:
            by = "; ".join(takeover.blocker_line(b, str(settings.dir)) for b in claim.blockers)
            raise PortBusy(f"{settings.bind}:{settings.port} is held", by=by)

    def _take_over(self, old: Observed) -> None:
        """Stop the same registry run another way, for good; never remove it or its data."""
        # The policy first: Docker starts a stopped `restart: always` container again when
        # the engine restarts, and it would take the port before our holder.
        if old.restart_policy != "no":
            self._link.docker.disable_restart(old.id)
        if old.running or old.state is ContainerState.PAUSED:
            self.stop(old.id)
        self.log.warning(
            "takeover.done",
            name=old.name,
            container_id=old.short_id,
            image=old.image,
            was_running=old.running,
            restart_policy_was=old.restart_policy,
            compose_project=old.compose_project,
            compose_service=old.compose_service,
            data_dir=str(self._desired.settings.dir),
            undo=takeover.undo(old),
        )

    def _create(self, holder_id: str) -> None:
        spec = self._desired.spec
        # Two calls, each through the link (each may block API_TIMEOUT_S: each gets a fresh
        # watchdog period if needed); the id is ours from the create on.
        created = self._link.docker.create(spec, holder_id)
        self._tracked.container_id = created.id
        self._link.docker.start(created.id)
        self.log.info(
            "container.created",
            container_id=created.short_id,
            spec_hash=spec.spec_hash,
            data_dir=str(self._desired.settings.dir),
        )

    def retire(self, observed: Observed, reason: Reason | None) -> None:
        """Stop and remove a container we replace; its volumes and data stay."""
        timeout, docker = self._desired.settings.stop_timeout, self._link.docker
        # docker-py waits `timeout` beyond its API timeout for the stop; then the removal.
        bound = (timeout + API_TIMEOUT_S if observed.running else 0) + API_TIMEOUT_S
        self._feeder.blocking("docker-retire", bound, lambda: docker.retire(observed, timeout))
        self.log.warning(
            "container.replaced",
            name=observed.name,
            old_id=observed.short_id,
            old_image=observed.image,
            why=(reason or Reason.SPEC_CHANGED).value,
        )

    def retire_all(self, spec: ContainerSpec) -> None:
        """Retire the registry and holder of ``spec`` (a rename leaves them behind)."""
        for name in (spec.name, spec.holder_name):
            try:
                old = self._link.docker.inspect(name)
                if old is not None and old.managed:
                    self.retire(old, Reason.SPEC_CHANGED)
            except SupervisorError as err:
                self.log.warning("container.retire_failed", name=name, error=str(err))

    def stop_on_exit(self, name: str) -> None:
        """At shutdown: stop our running ``name`` (MY_REG_STOP_ON_EXIT), or say it stays."""
        try:
            observed = self._link.docker.inspect(name)
            if observed is None or not observed.managed or not observed.running:
                return
            if self._desired.settings.stop_on_exit:
                self.stop(observed.id)
                self.log.info("container.stopped", name=name, container_id=observed.short_id)
            else:
                self.log.info("container.left_running", name=name, container_id=observed.short_id)
        except SupervisorError as err:
            self.log.warning("container.stop_failed", name=name, error=str(err))

    def remove_idle(self, names: tuple[str, ...], waiting_for_port: bool) -> None:
        """Remove our containers that never ran (created, then the port was held or the
        engine went away), so that a stopped supervisor leaves nothing behind; while it
        waited for the port, any of ours that is not running. Never data."""
        for name in names:
            try:
                observed = self._link.docker.inspect(name)
                idle = observed is not None and (
                    observed.state is ContainerState.CREATED
                    or (waiting_for_port and not observed.running)
                )
                if observed is not None and observed.managed and idle:
                    self._link.docker.remove(observed.id)
                    self.log.info("container.removed", name=name, container_id=observed.short_id)
            except SupervisorError as err:
                self.log.warning("container.remove_failed", name=name, error=str(err))
