"""`check`: validate the settings, the engine, the image and the port, and say what `run`
would do, without changing anything (it writes nothing, not even the HTTP secret).

It yields the lines and the CLI prints them: the CLI is the only place that prints.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Generator, Iterator
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

from supervisor import canary, fleet, risks, takeover
from supervisor.adapters.fleet_store import FleetStore
from supervisor.engine import image_info as images
from supervisor.engine.client import Engine
from supervisor.errors import ConfigError, FleetUnavailable, ImageUnavailable
from supervisor.layout import version_findings
from supervisor.loop.data_dir import data_dirs
from supervisor.observed import Observed
from supervisor.reconcile import Action, Decision, Reason, decide
from supervisor.settings import PullPolicy, Settings, effective
from supervisor.spec import ContainerSpec, derive_spec, holder_spec
from supervisor.statedir.http_secret import describe_secret, with_stored_secret


def _port_owner(settings: Settings) -> str | None:
    """None when the port can be bound now, else "in use"; ConfigError for an address
    this host does not have (the engine would refuse to publish on it)."""
    family = socket.AF_INET6 if ":" in settings.bind else socket.AF_INET
    try:
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as err:  # EAFNOSUPPORT: IPv6 off on this host
        raise ConfigError(
            [
                f"MY_REG_BIND={settings.bind}: expected an address family this host has "
                f"({err.strerror})"
            ]
        ) from None
    with sock:
        # As the engine's proxy binds: a port held only by connections in TIME_WAIT is free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((settings.bind, settings.port))
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                return "in use"
            if err.errno in (errno.EADDRNOTAVAIL, errno.EINVAL, errno.EAFNOSUPPORT):
                raise ConfigError(
                    [
                        f"MY_REG_BIND={settings.bind}: expected an address of this host "
                        f"({err.strerror})"
                    ]
                ) from None
            # EACCES and the like: a privileged port when `check` runs without root, say.
            # The engine's proxy binds as root: no verdict from here.
            return None
    return None


def check(settings: Settings) -> Iterator[str]:
    """`check`'s lines, one at a time as each fact is found: the effective settings, the
    security summary and warnings, then what the engine says and what `run` would do,
    ending with ``# ok``. Raises (ConfigError, EngineUnavailable, ...) where `run` could
    not start: the lines before it stand, so the caller prints each as it comes."""
    # What the container really gets: the spec's environment (TLS, auth, the stored
    # HTTP secret, the drain timeout by default), not only the REGISTRY_* variables as given.
    spec = derive_spec(with_stored_secret(settings), None)
    for key, value in effective(settings, spec.container_environment).items():
        yield f"{key}={value}"
    certificate = risks.certificate(settings)
    now = datetime.now(UTC)
    for line in risks.describe(settings, certificate, now):
        yield f"# {line}"
    yield f"# http secret: {describe_secret(settings)}"
    if canary.off_reason(settings) is not None:
        yield f"# canary: {canary.describe(settings, None)}"
    for warning in risks.warnings(settings, certificate, now):
        yield f"# WARNING: {warning.text}"
    if settings.fleet_redis is not None:
        yield from _check_fleet(settings, settings.fleet_redis)
    with closing(Engine()) as engine:
        yield from _check_engine(settings, spec, engine)


def _check_fleet(settings: Settings, url: str) -> Iterator[str]:
    """Fleet mode: whether Redis answers, who is in the fleet, and whether this member's
    storage and HTTP secret match the others' (by fingerprint; reads only)."""
    with closing(FleetStore(url, settings.fleet_name)) as store:
        try:
            members = store.members()
            secret = settings.registry_env.get(fleet.SECRET_VARIABLE) or store.fleet_secret()
        except FleetUnavailable as err:
            yield (
                f"# WARNING: fleet: {err}; `run` serves without it, but `gc` and `update` "
                "need it, and a first start takes a secret of its own"
            )
            return
    others = [m for m in members if m.name != settings.fleet_member]
    seen = ", ".join(f"{m.name} ({'alive' if m.alive else 'silent'})" for m in others)
    yield (
        f"# fleet {settings.fleet_name}: Redis answers; this member {settings.fleet_member}; "
        f"others: {seen or 'none yet'}"
    )
    if secret is None:
        yield "# fleet http secret: none yet; the first member's `run` makes it"
        return
    mine = with_stored_secret(settings).model_copy(
        update={"registry_env": {**settings.registry_env, fleet.SECRET_VARIABLE: secret}}
    )
    storage, secret_fp = fleet.storage_fingerprint(mine), fleet.secret_fingerprint(mine)
    alive = [m for m in others if m.alive and m.record is not None]
    differ = [m.name for m in alive if m.record is not None and m.record.storage != storage]
    if differ:
        yield (
            f"# WARNING: fleet: this member's storage settings differ from {', '.join(differ)}'s "
            "(compared by fingerprint): members must share one storage"
        )
    other_secret = [
        m.name for m in alive if m.record is not None and m.record.http_secret != secret_fp
    ]
    if other_secret:
        yield (
            f"# WARNING: fleet: {', '.join(other_secret)} run with another HTTP secret: uploads "
            "that span members fail (restart them with Redis reachable, or set one "
            "REGISTRY_HTTP_SECRET everywhere)"
        )


def _check_engine(settings: Settings, spec: ContainerSpec, engine: Engine) -> Iterator[str]:
    engine.ping()
    version, root = engine.describe()
    yield f"# docker engine: reachable (version {version})"
    if root is not None and settings.dir_inside(Path(root)):
        raise ConfigError(
            [
                f"MY_REG_DIR={str(settings.dir)!r}: expected a directory outside the engine's "
                f"own data root {root} (DockerRootDir)"
            ]
        )
    ref = settings.image_ref
    try:
        image_id = engine.image_id(ref)
    except ImageUnavailable as err:
        raise ConfigError(
            [
                f"MY_REG_IMAGE={settings.image} MY_REG_TAG={settings.tag}: expected an image "
                f"reference the engine accepts ({err})"
            ]
        ) from None
    for line in _image_plan(settings, image_id):
        yield f"# {line}"
    if image_id is not None:
        spec = yield from _check_image(settings, engine, image_id)
    elif canary.off_reason(settings) is None:
        yield f"# canary: {canary.describe(settings, None)}"
    holder = engine.inspect(spec.holder_name)
    registry = engine.inspect(settings.name)
    for line in _container_plan(spec, image_id, holder, registry):
        yield f"# run will {line}"
    yield from _check_port(settings, engine, holder, registry)
    yield "# ok"


def _check_port(
    settings: Settings, engine: Engine, holder: Observed | None, registry: Observed | None
) -> Iterator[str]:
    """Say who holds the port and what `run` does about it; ConfigError if run cannot."""
    address = f"{settings.bind}:{settings.port}"
    claim = takeover.claim_port(
        engine.publishing(settings.port),
        settings.name,
        settings.bind,
        settings.port,
        data_dirs(settings),
    )
    for old in claim.take_over:
        yield f"# run will {take_over_plan(old)}"
    if claim.blockers:
        raise ConfigError(
            [
                f"MY_REG_PORT={settings.port}: expected a free port; {address} is held by "
                f"{takeover.blocker_line(blocker, str(settings.dir))}, or choose another port"
                for blocker in claim.blockers
            ]
        )
    if _port_owner(settings) is not None:
        # Ours (the network holder), what `run` replaces (a container of our name) or
        # what it takes over.
        candidates = (holder, registry, *claim.take_over)
        owner = next(
            (c for c in candidates if c and c.running and settings.port in c.published), None
        )
        if owner is None:
            raise ConfigError(
                [
                    f"MY_REG_PORT={settings.port}: expected a free port; {address} is in use "
                    "and no container holds it: a host process does; find it with "
                    f"`ss -ltnp 'sport = :{settings.port}'` and stop it, or choose another port"
                ]
            )
        if owner.managed:
            who = "our container"
        elif owner in claim.take_over:
            who = "the container run takes over,"
        else:
            who = "a foreign container run replaces"
        yield f"# port {settings.port}: held by {who} {owner.name}"
    else:
        yield f"# port {settings.port}: free"


def take_over_plan(old: Observed) -> str:
    """What `run` does to the same registry run another way (pure)."""
    steps = []
    if old.restart_policy != "no":
        steps.append(f"set its restart policy {old.restart_policy} -> no")
    if old.running:
        steps.append("stop it" + (" (--rm: the stop removes it)" if old.auto_remove else ""))
    return (
        f"take over {takeover.describe(old)}, {old.state.value}: it publishes our port and "
        f"serves MY_REG_DIR; {' and '.join(steps)}; its data stays; {takeover.undo(old)}"
    )


def _check_image(
    settings: Settings, engine: Engine, image_id: str
) -> Generator[str, None, ContainerSpec]:
    """Print the image's layout and registry version, refuse settings that version would
    ignore; the spec on that layout."""
    info = images.describe(settings, engine, image_id)
    if info is None:
        raise ConfigError([f"image {settings.image_ref}: removed while it was checked"])
    for line in _image_lines(settings, info):
        yield f"# {line}"
    if canary.off_reason(settings) is None:
        # Only now: how a round writes depends on the registry version.
        yield f"# canary: {canary.describe(settings, info.version)}"
    findings = version_findings(settings.registry_env, info.version)
    for finding in findings:
        if not finding.error:
            yield f"# WARNING: {finding.text}"
    errors = [finding.text for finding in findings if finding.error]
    if errors:
        raise ConfigError(errors)
    return derive_spec(with_stored_secret(settings), info.layout)


def _image_lines(settings: Settings, info: images.ImageInfo) -> list[str]:
    """What differs for the user between registry versions, for this image (pure)."""
    layout = info.layout
    lines = [f"registry {info.label} ({layout.describe})"]
    if settings.conf is not None:
        lines.append(f"MY_REG_CONF: mounted read-only at {layout.config_path}")
    if layout.major == 3 and settings.conf is None:
        # What the official v3 image's config does; a custom image's may differ.
        lines.append(
            "v3 layout: the official image's config logs at debug: REGISTRY_LOG_LEVEL=info "
            "unless you set it (the journal gets MY_REG_LOG_LEVEL and up)"
        )
        lines.append(
            "v3 layout: the official image's debug server (http.debug, :5001) stays inside "
            "the pod, never published"
        )
    return lines


def _image_plan(settings: Settings, image_id: str | None) -> list[str]:
    """What `run` does about the image (pure)."""
    ref, policy = settings.image_ref, settings.pull
    if image_id is not None:
        line = f"image {ref}: present ({image_id[:19]})"
        if policy is PullPolicy.ALWAYS:
            line += "; run pulls it again at start and reload (MY_REG_PULL=always)"
        return [line]
    if policy is PullPolicy.NEVER:
        return [
            f"WARNING: image {ref} is not present and MY_REG_PULL=never: run waits for it "
            "(retrying up to every 60 s) until it is loaded; `docker load` or `docker pull` it"
        ]
    return [f"image {ref}: not present; run pulls it (MY_REG_PULL={policy.value})"]


def _container_plan(
    spec: ContainerSpec, image_id: str | None, holder: Observed | None, registry: Observed | None
) -> list[str]:
    """What `run` does first to the holder and the registry it finds (pure)."""
    held = decide(holder, holder_spec(spec), None)
    running_holder = holder if holder is not None and holder.running else None
    decision = decide(registry, spec, image_id, holder=running_holder)
    if held.action in (Action.CREATE, Action.REPLACE) and decision.action is Action.ADOPT:
        decision = Decision(Action.REPLACE, Reason.NETWORK_LOST)
    return [
        _planned(spec.holder_name, holder, held),
        _planned(spec.name, registry, decision),
    ]


def _planned(name: str, observed: Observed | None, decision: Decision) -> str:  # noqa: PLR0911 (one per action)
    if observed is None:
        return f"create {name}"
    which = f"{name} ({observed.short_id}, {observed.state.value})"
    if decision.action is Action.ADOPT:
        return f"adopt {which} as it is"
    if decision.action is Action.START:
        return f"start {which}"
    if decision.action is Action.RESTART:
        return f"restart {which}"
    if decision.action is Action.WAIT:
        return f"wait until {name} is removed, then create it"
    if decision.reason is Reason.FOREIGN:
        return (
            f"replace {which}, image {observed.image}: not created by registry-supervisor; "
            "it is stopped and removed (its volumes and the data dir stay)"
        )
    why = (decision.reason or Reason.SPEC_CHANGED).value
    return f"replace {which} ({why}): stopped and removed, created anew (the data dir stays)"
