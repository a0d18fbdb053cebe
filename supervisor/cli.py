"""Command line: run | check | status. The only place that prints for humans or exits."""

from __future__ import annotations

import argparse
import errno
import json
import signal
import socket
import sys
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import structlog

from supervisor import __version__, log, risks, takeover
from supervisor.adapters import disk
from supervisor.adapters.notify import Notifier
from supervisor.adapters.probe import Probe, ProbeFailed
from supervisor.engine import image_info as images
from supervisor.engine.client import Engine
from supervisor.errors import (
    ConfigError,
    EngineUnavailable,
    ExitCode,
    ImageUnavailable,
    MaintenanceFailed,
    SupervisorError,
    TransientError,
)
from supervisor.health import is_healthy
from supervisor.layout import version_findings
from supervisor.loop.data_dir import data_dirs
from supervisor.loop.status import format_duration
from supervisor.loop.supervisor import Supervisor
from supervisor.observed import Observed
from supervisor.reconcile import Action, Decision, Reason, decide
from supervisor.settings import PullPolicy, Settings, effective, load_settings, raw_setting
from supervisor.spec import HOLDER_SUFFIX, ContainerSpec, derive_spec, holder_spec
from supervisor.statedir import maintenance
from supervisor.statedir.http_secret import describe_secret, with_http_secret, with_stored_secret

PROG = "registry-supervisor"
# `status`: the registry is not running or not answering (LSB's "not running").
STATUS_NOT_HEALTHY = 3
# `gc`: the collection failed (the registry is restored to normal mode first).
GC_FAILED = 1
# `htpasswd`: Ctrl-C at the password prompt (128 + SIGINT, as a shell reports it).
INTERRUPTED = 130


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--env-file",
        type=Path,
        default=argparse.SUPPRESS,
        metavar="PATH",
        help="env file with MY_REG_* and REGISTRY_* settings (default: ./.env if present)",
    )
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Keep a private Docker registry container running and healthy.",
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser(
        "run", parents=[common], help="supervise the registry (systemd's ExecStart)"
    )
    commands.add_parser(
        "check", parents=[common], help="validate settings, Docker and the port; print settings"
    )
    status = commands.add_parser("status", parents=[common], help="show the container and health")
    status.add_argument("--json", action="store_true", help="print one JSON object")
    gc = commands.add_parser(
        "gc",
        parents=[common],
        help="garbage-collect the registry's storage (read-only meanwhile; pulls keep working)",
    )
    gc.add_argument("--dry-run", action="store_true", help="only report what would be deleted")
    gc.add_argument(
        "--delete-untagged",
        action="store_true",
        help="also delete manifests that no tag references (and their blobs)",
    )
    gc.add_argument("--json", action="store_true", help="print the result as one JSON object")
    users = commands.add_parser(
        "htpasswd",
        parents=[common],
        help="add or update a registry user (bcrypt); password from stdin or a prompt",
    )
    users.add_argument("user", help="the user name")
    users.add_argument(
        "--file",
        type=Path,
        metavar="PATH",
        help="the htpasswd file (default: MY_REG_AUTH_HTPASSWD); created 0600 if missing",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:  # noqa: PLR0911 (one per command, error)
    args = _parser().parse_args(argv)
    env_file: Path | None = getattr(args, "env_file", None)
    if args.command == "htpasswd":
        # Before the settings are loaded: they are invalid until the file has a user.
        return _htpasswd(args.user, args.file, env_file)
    try:
        settings = load_settings(env_file)
    except ConfigError as err:
        _print_problems(err.problems)
        return ExitCode.CONFIG
    log.configure(settings.log_format, settings.log_level)
    try:
        if args.command == "run":
            return _run(settings, env_file)
        if args.command == "check":
            return _check(settings)
        if args.command == "gc":
            return _gc(settings, args)
        return _status(settings, as_json=args.json)
    except ConfigError as err:
        _print_problems(err.problems)
        return ExitCode.CONFIG
    except TransientError as err:
        _print_problems(
            [f"{line}; temporary: exit 75, systemd tries again" for line in err.problems]
        )
        return ExitCode.TEMPFAIL
    except EngineUnavailable as err:
        print(f"{PROG}: Docker engine unreachable: {err}", file=sys.stderr)
        return ExitCode.UNAVAILABLE
    except SupervisorError as err:
        # The engine refused what `check` did not predict it would: a bug of ours, told
        # in one line (never a traceback, never "engine unreachable").
        print(f"{PROG}: {args.command}: the engine refused: {err}", file=sys.stderr)
        return ExitCode.SOFTWARE


def _print_problems(problems: list[str]) -> None:
    for line in problems:
        print(f"{PROG}: {line}", file=sys.stderr)


def _run(settings: Settings, env_file: Path | None) -> int:
    notifier = Notifier()
    try:
        Supervisor(with_http_secret(settings), env_file, notifier).run()
    except (ConfigError, TransientError, EngineUnavailable):
        raise
    except Exception:  # noqa: BLE001 (the last line of defence: log, exit 70)
        # A bug: say so loudly, leave the registry serving, let systemd restart us.
        structlog.get_logger().exception("supervisor.crashed")
        return ExitCode.SOFTWARE
    finally:
        notifier.close()
    return ExitCode.OK


@contextmanager
def _interruptible() -> Iterator[None]:
    """SIGTERM and SIGHUP (a timer's stop, a dropped SSH session) unwind like Ctrl-C, so
    gc's cleanup runs: without it the registry would stay read-only, or be made writable
    by the supervisor while the collector still sweeps."""

    def interrupt(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _gc(settings: Settings, args: argparse.Namespace) -> int:
    from supervisor.ops.gc import GarbageCollection

    # The HTTP secret is part of the spec: the normal container must come back identical.
    settings = with_http_secret(settings)
    with closing(Engine()) as engine:
        try:
            collection = GarbageCollection(
                settings, engine, dry_run=args.dry_run, delete_untagged=args.delete_untagged
            )
            with _interruptible():
                result = collection.run()
        except MaintenanceFailed as err:
            print(f"{PROG}: gc: {err}", file=sys.stderr)
            return GC_FAILED
        except KeyboardInterrupt:
            # The finally blocks ran: collector removed, registry back in normal mode.
            print(f"{PROG}: gc: interrupted; the registry is back in normal mode", file=sys.stderr)
            return INTERRUPTED
    if args.json:
        print(json.dumps(result.as_dict(), indent=2))
        return ExitCode.OK
    eligible = (
        f"{result.blobs_eligible} blobs and {result.manifests_eligible} manifests"
        if result.blobs_eligible is not None
        else "unknown (collector output not recognised)"
    )
    print(f"eligible for deletion: {eligible}")
    if result.dry_run:
        would = result.eligible_bytes
        estimate = "an unknown amount" if would is None else disk.human_bytes(would)
        print(f"dry run: nothing deleted; a real run would free about {estimate}")
    else:
        print(
            f"freed: {disk.human_bytes(result.freed_bytes)} ({result.freed_bytes} bytes); "
            f"data dir now {disk.human_bytes(result.after_bytes)}"
        )
    switched = result.registry_was_running and not result.dry_run
    back = "; registry back in normal mode" if switched else ""
    print(f"took {result.duration_s:.1f} s{back}")
    return ExitCode.OK


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


def _check(settings: Settings) -> int:
    # What the container really gets: the spec's environment (TLS, auth, the stored
    # HTTP secret), not only the REGISTRY_* variables as given.
    spec = derive_spec(with_stored_secret(settings), None)
    for key, value in effective(settings, dict(spec.environment)).items():
        print(f"{key}={value}")
    certificate = risks.certificate(settings)
    now = datetime.now(UTC)
    for line in risks.describe(settings, certificate, now):
        print(f"# {line}")
    print(f"# http secret: {describe_secret(settings)}")
    for warning in risks.warnings(settings, certificate, now):
        print(f"# WARNING: {warning.text}")
    with closing(Engine()) as engine:
        return _check_engine(settings, spec, engine)


def _check_engine(settings: Settings, spec: ContainerSpec, engine: Engine) -> int:
    engine.ping()
    version, root = engine.describe()
    print(f"# docker engine: reachable (version {version})")
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
        print(f"# {line}")
    if image_id is not None:
        spec = _check_image(settings, engine, image_id)
    holder = engine.inspect(spec.holder_name)
    registry = engine.inspect(settings.name)
    for line in _container_plan(spec, image_id, holder, registry):
        print(f"# run will {line}")
    _check_port(settings, engine, holder, registry)
    print("# ok")
    return ExitCode.OK


def _check_port(
    settings: Settings, engine: Engine, holder: Observed | None, registry: Observed | None
) -> None:
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
        print(f"# run will {_take_over_plan(old)}")
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
        print(f"# port {settings.port}: held by {who} {owner.name}")
    else:
        print(f"# port {settings.port}: free")


def _take_over_plan(old: Observed) -> str:
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


def _check_image(settings: Settings, engine: Engine, image_id: str) -> ContainerSpec:
    """Print the image's layout and registry version, refuse settings that version would
    ignore; the spec on that layout."""
    info = images.describe(settings, engine, image_id)
    if info is None:
        raise ConfigError([f"image {settings.image_ref}: removed while it was checked"])
    for line in _image_lines(settings, info):
        print(f"# {line}")
    findings = version_findings(settings.registry_env, info.version)
    for finding in findings:
        if not finding.error:
            print(f"# WARNING: {finding.text}")
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


def _htpasswd(user: str, file: Path | None, env_file: Path | None) -> int:
    """Add or update one user; the password never comes from argv."""
    from supervisor.ops import htpasswd

    path: Path | None = None
    try:
        path = file or _configured_htpasswd(env_file)
        htpasswd.check_not_symlink(path)  # before the prompt; set_password refuses it too
        written = htpasswd.set_password(path, user, _read_password(user))
    except ConfigError as err:
        _print_problems(err.problems)
        return ExitCode.CONFIG
    except htpasswd.SymlinkRefused as err:
        where = f"--file {path}" if file else f"MY_REG_AUTH_HTPASSWD={str(path)!r}"
        print(f"{PROG}: {where}: {err}", file=sys.stderr)
        return ExitCode.CONFIG
    except htpasswd.HtpasswdError as err:
        print(f"{PROG}: htpasswd: {err}", file=sys.stderr)
        return ExitCode.CONFIG
    except KeyboardInterrupt:  # Ctrl-C at the prompt: nothing was written
        print(file=sys.stderr)
        return INTERRUPTED
    verb = "updated user" if written.existed else "added user"
    if written.created:
        note = " (new file, mode 0600)"
    elif written.tightened_from is not None:
        note = f" (mode {written.tightened_from:04o} tightened to 0600)"
    else:
        note = ""
    print(f"{verb} {user} in {path}{note}")
    return ExitCode.OK


def _configured_htpasswd(env_file: Path | None) -> Path:
    value = raw_setting("MY_REG_AUTH_HTPASSWD", env_file)
    if value is None or not Path(value).is_absolute():
        raise ConfigError(
            [f"MY_REG_AUTH_HTPASSWD={value!r}: expected an absolute path, or give --file PATH"]
        )
    return Path(value)


def _read_password(user: str) -> str:
    """From a prompt on a terminal (asked twice), else the first line of stdin."""
    import getpass

    from supervisor.ops import htpasswd

    if sys.stdin is not None and sys.stdin.isatty():
        try:
            password = getpass.getpass(f"password for {user}: ")
            again = getpass.getpass("again: ")
        except EOFError:  # Ctrl-D at the prompt
            raise htpasswd.HtpasswdError("no password given") from None
        if again != password:
            raise htpasswd.HtpasswdError("the two passwords differ")
        return password
    line = sys.stdin.readline() if sys.stdin is not None else ""
    return line.removesuffix("\n").removesuffix("\r")


def _status(settings: Settings, *, as_json: bool) -> int:
    from supervisor.ops import status_report

    with closing(Engine()) as engine:
        observed = engine.inspect(settings.name)
        holder = engine.inspect(f"{settings.name}{HOLDER_SUFFIX}")
        lock = maintenance.current(
            maintenance.maintenance_path(settings),
            lambda name: maintenance.collector_holds(engine.inspect(name)),
        )
        image = _described(settings, engine, observed)
    container: dict[str, Any] | None = None
    health, detail = "absent", "no container"
    if observed is not None:
        container = {
            "id": observed.id,
            "name": observed.name,
            "state": observed.state.value,
            "image": observed.image,
            "started_at": observed.started_at,
            "managed": observed.managed,
            "exit_code": observed.exit_code,
        }
        probe = Probe(settings.probe_url, settings.tls_certificate)
        try:
            code = probe(settings.health_timeout)
            health = "healthy" if is_healthy(code) else "unhealthy"
            detail = f"HTTP {code}"
        except ProbeFailed as err:
            health, detail = "unhealthy", str(err)
        finally:
            probe.close()
    report = {
        "container": container,
        "health": health,
        "detail": detail,
        "probe_url": settings.probe_url,
        "image_id": observed.image_id if observed is not None else None,
        "registry_version": image.label if image is not None else None,
        "config_path": image.layout.config_path if image is not None else None,
        "network_holder": None
        if holder is None
        else {"id": holder.id, "name": holder.name, "state": holder.state.value},
    }
    started = observed.started_at if observed is not None and observed.running else None
    report.update(status_report.gather(settings, started, datetime.now(UTC), lock))
    if health != "healthy":
        report["uptime_s"] = None
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        if container is None:
            print(f"container: {settings.name}: absent")
        else:
            print(f"container: {container['name']} {observed.short_id if observed else ''}")
            print(f"state:     {container['state']} (started {container['started_at']})")
            print(f"image:     {container['image']}")
            if image is not None:
                print(f"registry:  {image.label} ({image.layout.describe})")
            print(f"managed:   {'yes' if container['managed'] else 'no (foreign)'}")
        if holder is not None:
            print(f"network:   {holder.name} {holder.short_id} ({holder.state.value})")
        print(f"health:    {health} ({detail}) at {settings.probe_url}")
        for line in _glance_lines(report):
            print(line)
    return ExitCode.OK if health == "healthy" else STATUS_NOT_HEALTHY


def _described(
    settings: Settings, engine: Engine, observed: Observed | None
) -> images.ImageInfo | None:
    """The running container's image, for `status`: None when there is none or its layout
    cannot be read (status reports; `check` and `run` refuse)."""
    if observed is None or not observed.image_id:
        return None
    try:
        return images.describe(settings, engine, observed.image_id)
    except ConfigError:
        return None


def _glance_lines(report: dict[str, Any]) -> list[str]:
    """The human lines for what `status_report.gather` found (pure)."""
    lines = []
    uptime = report.get("uptime_s")
    lines.append(f"uptime:    {format_duration(uptime) if uptime is not None else '-'}")
    if report.get("image_id"):
        lines.append(f"image id:  {report['image_id']}")
    restarts: dict[str, int] = report.get("restarts") or {}
    total = sum(restarts.values())
    by_reason = ", ".join(f"{reason} {count}" for reason, count in sorted(restarts.items()))
    line = f"restarts:  {total}" + (f" ({by_reason})" if by_reason else "")
    if report.get("last_reason"):
        line += f"; last: {report['last_reason']} at {report.get('last_reason_at')}"
    lines.append(line)
    data = report["data_dir"]
    size = disk.human_bytes(data["size_bytes"]) + ("" if data["size_complete"] else "+")
    line = f"data dir:  {data['path']}: {size} in {data['files']} files"
    if data["free_bytes"] is not None:
        line += (
            f"; {disk.human_bytes(data['free_bytes'])} free of "
            f"{disk.human_bytes(data['total_bytes'])} ({data['free_percent']:.1f}%)"
        )
        if data["low"]:
            line += f", LOW (MY_REG_MIN_FREE={data['min_free_percent']:g}%)"
    lines.append(line)
    cert = report.get("certificate")
    lines.append(
        f"tls:       certificate expires {cert['not_after']} ({cert['days_left']:g} days)"
        if cert
        else "tls:       off"
    )
    gc = report.get("last_gc")
    if gc:
        kind = (
            "dry run"
            if gc.get("dry_run")
            else "freed " + disk.human_bytes(gc.get("freed_bytes", 0))
        )
        lines.append(f"last gc:   {gc.get('finished_at')}: {kind} ({gc.get('outcome')})")
    else:
        lines.append("last gc:   never")
    supervised = report.get("supervisor")
    if supervised is None:
        lines.append("supervisor: no state file yet")
    else:
        running = "running" if supervised.get("running") else "not running"
        lines.append(
            f"supervisor: {running} (pid {supervised.get('pid')}, {supervised.get('phase')}, "
            f"state of {supervised.get('updated_at')})"
        )
    if report.get("maintenance"):
        lines.append(f"maintenance: {report['maintenance']['task']} in progress")
    return lines
