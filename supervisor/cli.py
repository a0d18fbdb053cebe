"""Command line: run | check | status | gc | update | htpasswd. Parses arguments, dispatches,
prints for humans and maps errors to exit codes: the only place that does either.

What each command does lives elsewhere: `run` in supervisor/loop/, the others in
supervisor/ops/, imported inside their command function, so that `run` imports nothing
from ops/ (tests/unit/test_layers.py checks it).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from pathlib import Path
from types import FrameType

import structlog

from supervisor import __version__, log
from supervisor.adapters import disk
from supervisor.adapters.notify import Notifier
from supervisor.engine.client import Engine
from supervisor.errors import (
    ConfigError,
    EngineUnavailable,
    ExitCode,
    FleetUnavailable,
    MaintenanceFailed,
    SupervisorError,
    TransientError,
)
from supervisor.loop.supervisor import Supervisor
from supervisor.settings import Settings, load_settings
from supervisor.statedir.http_secret import SECRET_VARIABLE, with_fleet_secret, with_http_secret

PROG = "registry-supervisor"
# `status`: the registry is not running or not answering (LSB's "not running").
STATUS_NOT_HEALTHY = 3
# `gc`: the collection failed (the registry is restored to normal mode first).
GC_FAILED = 1
# `update`: the new image failed the gate and the previous one is back, or the update
# could not be tried (nothing changed); one line on stderr says which.
UPDATE_FAILED = 1
# `htpasswd`: Ctrl-C at the password prompt (128 + SIGINT, as a shell reports it).
INTERRUPTED = 130
FORGET_REFUSED = 1
# Fleet mode: Redis is asked this often for the fleet's HTTP secret before `run` starts.
SECRET_ATTEMPTS = 3
SECRET_RETRY_S = 1.0


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
    status.add_argument(
        "--fleet", action="store_true", help="every member of the fleet (MY_REG_FLEET_REDIS)"
    )
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
    gc.add_argument(
        "--confirm-timeout",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="fleet mode: how long members have to confirm read-only (default 120)",
    )
    gc.add_argument(
        "--collect-timeout",
        type=float,
        default=3600.0,
        metavar="SECONDS",
        help="fleet mode: the collector is killed after this (default 3600)",
    )
    forget = commands.add_parser(
        "forget-member",
        parents=[common],
        help="fleet mode: remove a host that is gone for good from the fleet's roster",
    )
    forget.add_argument("member", help="the member's name (MY_REG_FLEET_MEMBER)")
    update = commands.add_parser(
        "update",
        parents=[common],
        help="pull the configured tag; keep a new image only if the registry passes the gate",
    )
    update.add_argument("--json", action="store_true", help="print the result as one JSON object")
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
    """Run one command with ``argv`` (default: sys.argv); the process's exit code."""
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
        if args.command == "update":
            return _update(settings, as_json=args.json)
        if args.command == "forget-member" or args.fleet:
            return _fleet_command(settings, args)
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


def _secret_for_run(settings: Settings) -> tuple[Settings, str | None]:
    """The HTTP secret the registry runs with: the fleet's in fleet mode (Redis asked a
    few times; without an answer the one kept here, said in a warning). Also the fleet's
    secret as Redis confirmed it, if it is the one in use (heartbeats put it back should
    Redis lose it): never one the user set, nor one made up without Redis."""
    if settings.fleet_redis is None:
        return with_http_secret(settings), None
    from supervisor.adapters.fleet_store import FleetStore  # fleet only

    user_set = SECRET_VARIABLE in settings.registry_env
    store = FleetStore(settings.fleet_redis, settings.fleet_name)
    try:
        for attempt in range(SECRET_ATTEMPTS):
            try:
                shared = with_fleet_secret(settings, store.shared_secret)
                return shared, None if user_set else shared.registry_env[SECRET_VARIABLE]
            except FleetUnavailable as err:
                if attempt + 1 == SECRET_ATTEMPTS:
                    structlog.get_logger().warning(
                        "fleet.http_secret_unverified",
                        error=str(err),
                        detail="using the HTTP secret kept in MY_REG_STATE_DIR; members "
                        "whose secrets differ fail uploads that span them",
                    )
                time.sleep(SECRET_RETRY_S)
        return with_http_secret(settings), None
    finally:
        store.close()


def _run(settings: Settings, env_file: Path | None) -> int:
    notifier = Notifier()
    try:
        running, fleet_secret = _secret_for_run(settings)
        Supervisor(running, env_file, notifier, fleet_secret=fleet_secret).run()
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


def _fleet_command(settings: Settings, args: argparse.Namespace) -> int:
    """`status --fleet` and `forget-member`: exit 69 when Redis does not answer."""
    from supervisor.adapters.fleet_store import FleetStore  # fleet only
    from supervisor.ops.fleet_report import fleet_report, forget, report_lines

    if settings.fleet_redis is None:
        print(f"{PROG}: {args.command}: MY_REG_FLEET_REDIS is not set (no fleet)", file=sys.stderr)
        return ExitCode.CONFIG
    with closing(FleetStore(settings.fleet_redis, settings.fleet_name)) as store:
        try:
            if args.command == "forget-member":
                out, text = forget(store, args.member)
                if not out:
                    print(f"{PROG}: forget-member: {text}", file=sys.stderr)
                    return FORGET_REFUSED
                print(text)
                return ExitCode.OK
            report = fleet_report(store)
        except FleetUnavailable as err:
            print(f"{PROG}: {args.command}: {err}", file=sys.stderr)
            return ExitCode.UNAVAILABLE
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print("\n".join(report_lines(report)))
    return ExitCode.OK if not report["warnings"] else STATUS_NOT_HEALTHY


def _fleet_gc(settings: Settings, redis_url: str, args: argparse.Namespace) -> int:
    from supervisor.adapters.fleet_store import FleetStore  # fleet only
    from supervisor.ops.fleet_gc import FleetGarbageCollection

    with closing(Engine()) as engine, closing(FleetStore(redis_url, settings.fleet_name)) as store:
        try:
            collection = FleetGarbageCollection(
                settings,
                engine,
                store,
                delete_untagged=args.delete_untagged,
                confirm_timeout_s=args.confirm_timeout,
                collect_timeout_s=args.collect_timeout,
            )
            with _interruptible():
                result = collection.run()
        except MaintenanceFailed as err:
            print(f"{PROG}: gc: {err}", file=sys.stderr)
            return GC_FAILED
        except KeyboardInterrupt:
            print(f"{PROG}: gc: interrupted; collector killed, lease released", file=sys.stderr)
            return INTERRUPTED
    if args.json:
        print(json.dumps(result.as_dict(), indent=2))
        return ExitCode.OK
    print(
        f"fleet gc {result.lease}: {len(result.members)} members read-only "
        f"({', '.join(result.members)}) after {result.confirmed_after_s:.1f} s; "
        f"collected in {result.collect_s:.1f} s"
    )
    print(
        f"eligible for deletion: {result.blobs_eligible} blobs and "
        f"{result.manifests_eligible} manifests; members go back to normal one at a time"
    )
    return ExitCode.OK


def _gc(settings: Settings, args: argparse.Namespace) -> int:
    from supervisor.ops.gc import GarbageCollection

    # The HTTP secret is part of the spec: the normal container must come back identical.
    settings = with_http_secret(settings)
    if settings.fleet_redis is not None and not args.dry_run:
        return _fleet_gc(settings, settings.fleet_redis, args)
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


def _update(settings: Settings, *, as_json: bool) -> int:
    from supervisor.ops.update import Update

    # The HTTP secret is part of the spec: the container must come back as `run` makes it.
    settings = with_http_secret(settings)
    with closing(Engine()) as engine:
        try:
            with _interruptible():
                result = Update(settings, engine).run()
        except MaintenanceFailed as err:
            print(f"{PROG}: update: {err}", file=sys.stderr)
            return UPDATE_FAILED
        except KeyboardInterrupt:
            print(f"{PROG}: update: interrupted; the previous image is back", file=sys.stderr)
            return INTERRUPTED
    if as_json:
        print(json.dumps(result.as_dict(), indent=2))
    elif result.outcome == "up-to-date":
        print(f"{result.image}: up to date ({result.image_id}); nothing changed")
    elif result.outcome == "updated":
        print(f"{result.image}: updated {result.previous_image_id} -> {result.image_id}")
        print(f"gate passed: healthy; manifest check: {result.manifest_check}")
    if result.outcome == "rolled-back":
        print(
            f"{PROG}: update: {result.image_id} failed the gate ({result.why}); rolled back to "
            f"{result.previous_image_id}, and {result.image} names it again",
            file=sys.stderr,
        )
        return UPDATE_FAILED
    return ExitCode.OK


def _check(settings: Settings) -> int:
    from supervisor.ops.check import check

    # Each line as it is found: what was checked before a refusal stays on the screen.
    for line in check(settings):
        print(line)
    return ExitCode.OK


def _htpasswd(user: str, file: Path | None, env_file: Path | None) -> int:
    """Add or update one user; the password never comes from argv."""
    from supervisor.ops import htpasswd

    path: Path | None = None
    try:
        path = file or htpasswd.configured_file(env_file)
        htpasswd.check_not_symlink(path)  # before the prompt; set_password refuses it too
        written = htpasswd.set_password(path, user, htpasswd.read_password(user))
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


def _status(settings: Settings, *, as_json: bool) -> int:
    from supervisor.ops.status_report import status

    report, lines = status(settings)
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        for line in lines:
            print(line)
    return ExitCode.OK if report["health"] == "healthy" else STATUS_NOT_HEALTHY
