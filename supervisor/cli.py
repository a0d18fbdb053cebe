"""Command line: run | check | status. The only place that prints for humans or exits."""

from __future__ import annotations

import argparse
import errno
import json
import socket
import sys
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

import structlog

from supervisor import __version__, log
from supervisor.container import Engine
from supervisor.errors import ConfigError, EngineUnavailable, ExitCode
from supervisor.health import Probe, ProbeFailed, is_healthy
from supervisor.notify import Notifier
from supervisor.settings import Settings, effective, load_settings
from supervisor.supervise import Supervisor

PROG = "registry-supervisor"
# `status`: the registry is not running or not answering (LSB's "not running").
STATUS_NOT_HEALTHY = 3


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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    env_file: Path | None = getattr(args, "env_file", None)
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
        return _status(settings, as_json=args.json)
    except ConfigError as err:
        _print_problems(err.problems)
        return ExitCode.CONFIG
    except EngineUnavailable as err:
        print(f"{PROG}: Docker engine unreachable: {err}", file=sys.stderr)
        return ExitCode.UNAVAILABLE


def _print_problems(problems: list[str]) -> None:
    for line in problems:
        print(f"{PROG}: {line}", file=sys.stderr)


def _run(settings: Settings, env_file: Path | None) -> int:
    notifier = Notifier()
    try:
        Supervisor(settings, env_file, notifier).run()
    except (ConfigError, EngineUnavailable):
        raise
    except Exception:  # noqa: BLE001 (the last line of defence: log, exit 70)
        # A bug: say so loudly, leave the registry serving, let systemd restart us.
        structlog.get_logger().exception("supervisor.crashed")
        return ExitCode.SOFTWARE
    finally:
        notifier.close()
    return ExitCode.OK


def _port_owner(settings: Settings) -> str | None:
    """None when the port can be bound now, else a short description of the holder."""
    family = socket.AF_INET6 if ":" in settings.bind else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((settings.bind, settings.port))
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                return "in use"
            raise
    return None


def _check(settings: Settings) -> int:
    for key, value in effective(settings).items():
        print(f"{key}={value}")
    with closing(Engine()) as engine:
        return _check_engine(settings, engine)


def _check_engine(settings: Settings, engine: Engine) -> int:
    engine.ping()
    version = engine.api.version().get("Version", "?")
    print(f"# docker engine: reachable (version {version})")
    image_id = engine.image_id(settings.image_ref)
    if image_id is not None:
        print(f"# image {settings.image_ref}: present ({image_id[:19]})")
    else:
        print(f"# image {settings.image_ref}: not present (MY_REG_PULL={settings.pull.value})")
    observed = engine.inspect(settings.name)
    if _port_owner(settings) is not None:
        if observed is None or settings.port not in observed.published:
            raise ConfigError(
                [
                    f"MY_REG_PORT={settings.port}: expected a free port; "
                    f"{settings.bind}:{settings.port} is in use by another process"
                ]
            )
        holder = "our container" if observed.managed else "a foreign container run replaces"
        print(f"# port {settings.port}: held by {holder} {observed.name}")
    else:
        print(f"# port {settings.port}: free")
    if settings.tls_dir is not None:
        certificate = settings.tls_dir / settings.tls_crt
        tls_key = settings.tls_dir / settings.tls_key
        print(f"# tls: certificate {certificate}, key {tls_key}")
    print("# ok")
    return ExitCode.OK


def _status(settings: Settings, *, as_json: bool) -> int:
    with closing(Engine()) as engine:
        observed = engine.inspect(settings.name)
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
        probe = Probe(settings.probe_url)
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
    }
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        if container is None:
            print(f"container: {settings.name}: absent")
        else:
            print(f"container: {container['name']} {observed.short_id if observed else ''}")
            print(f"state:     {container['state']} (started {container['started_at']})")
            print(f"image:     {container['image']}")
            print(f"managed:   {'yes' if container['managed'] else 'no (foreign)'}")
        print(f"health:    {health} ({detail}) at {settings.probe_url}")
    return ExitCode.OK if health == "healthy" else STATUS_NOT_HEALTHY
