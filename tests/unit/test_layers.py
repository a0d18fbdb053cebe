"""Dependencies point one way: pure modules <- adapters and engine <- loop <- cli, and `run`
imports nothing from ops/. Read from the installed package's source with ast (every
import, also those inside functions), and from a real `run` start-up in a subprocess."""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# Modules that decide and describe, importing no I/O library and no adapter. Names are
# module paths under supervisor/; "settings" covers the whole settings package.
PURE = frozenset(
    {
        "settings",
        "spec",
        "observed",
        "reconcile",
        "backoff",
        "health",
        "layout",
        "takeover",
        "envfile",
        "redaction",
        "errors",
        "phase",
        "ready",
        "permissions",
        "canary",
        "fleet",
    }
)
# File-reading helpers that pure modules may use (settings validates the certificate and
# the htpasswd file at load): they read files and import no banned library either.
FILE_HELPERS = frozenset({"tls", "htpasswd_file", "credentials_file"})
BANNED_LIBRARIES = (
    "docker",
    "requests",
    "urllib3",
    "structlog",
    "prometheus_client",
    "sdnotify",
    "redis",
)
ROOMS = ("engine", "adapters", "loop", "statedir", "ops")
# The one use of ops/ on `run`'s path: the disk guard's gc estimate, imported inside the
# function that runs it, once the data dir's disk runs low.
LAZY_OPS_IN_LOOP = frozenset({"supervisor.ops.gc"})


def _package_dir() -> Path:
    spec = importlib.util.find_spec("supervisor")
    assert spec is not None and spec.origin is not None, "supervisor is not installed"
    return Path(spec.origin).parent


PACKAGE = _package_dir()


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _imports(module: str) -> Iterator[tuple[str, bool]]:
    """(imported module, whether at module level) for every import statement in
    ``module``; ``from a import b`` counts as a.b when that is a module of ours."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    top_level = {id(node) for node in tree.body}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, id(node) in top_level
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{module}: relative import (the package uses absolute ones)"
            assert node.module is not None
            for alias in node.names:
                name = f"{node.module}.{alias.name}"
                yield (name if name in MODULES else node.module), id(node) in top_level


def _room(module: str) -> str:
    """The first path component under supervisor/ ('settings', 'engine', 'cli', ...)."""
    return module.removeprefix("supervisor.").split(".")[0]


def _ours(name: str) -> bool:
    return name == "supervisor" or name.startswith("supervisor.")


def _library(name: str) -> str:
    return name.split(".", maxsplit=1)[0]


def test_the_package_has_the_modules_this_test_knows() -> None:
    """Every module is in a room this test names: a new one needs a decision here."""
    known = PURE | FILE_HELPERS | set(ROOMS) | {"cli", "risks", "log", "__main__", "supervisor"}
    assert set() == {_room(m) for m in MODULES} - known


def test_pure_modules_import_no_io_library_and_no_room() -> None:
    """No pure module, nor anything it imports from the package, imports docker, requests,
    urllib3, structlog, prometheus_client or sdnotify, or engine/adapters/loop/statedir/ops."""
    pure = [m for m in MODULES if _room(m) in PURE]
    seen, todo = set(pure), list(pure)
    found = []
    while todo:
        module = todo.pop()
        for name, _top in _imports(module):
            if _library(name) in BANNED_LIBRARIES:
                found.append(f"{module} imports {name}")
            elif _ours(name) and name != "supervisor":
                if _room(name) not in PURE | FILE_HELPERS:
                    found.append(f"{module} imports {name}")
                elif name not in seen:
                    seen.add(name)
                    todo.append(name)
    assert [] == found


def test_only_the_engine_imports_docker() -> None:
    """docker-py is imported under supervisor/engine/ only (not by loop/ or ops/ either)."""
    found = [
        f"{module} imports {name}"
        for module in MODULES
        if _room(module) != "engine"
        for name, _top in _imports(module)
        if _library(name) == "docker"
    ]
    assert [] == found


def test_the_loop_imports_from_ops_only_the_lazy_gc_estimate() -> None:
    """loop/ reaches ops/ only for gc's estimate, inside the function that runs it."""
    found = [
        (module, name, top)
        for module in MODULES
        if _room(module) == "loop"
        for name, top in _imports(module)
        if _room(name) == "ops" and _ours(name)
    ]
    assert all(not top for _module, _name, top in found), found
    assert {name for _module, name, _top in found} <= LAZY_OPS_IN_LOOP


def test_only_the_cli_and_ops_import_ops() -> None:
    """Outside ops/ itself, the CLI (inside its command functions) and the loop's gc
    estimate are the only importers of ops/: nothing else on `run`'s path can pull it in."""
    found = [
        f"{module} imports {name}" + ("" if not top else " at module level")
        for module in MODULES
        if _room(module) not in ("ops", "loop")
        for name, top in _imports(module)
        if _ours(name) and _room(name) == "ops" and (_room(module) != "cli" or top)
    ]
    assert [] == found


_RUN_UP_TO_THE_LOOP = """
import json, sys
import supervisor.cli as cli

# Everything `run` does before the loop starts: settings, logging, the HTTP secret, the
# notifier, the Supervisor built; the loop itself is not entered.
cli.Supervisor.run = lambda self: None
code = cli.main(["run"])
print(json.dumps({"code": code, "ops": sorted(m for m in sys.modules if m.startswith("supervisor.ops")),
                  "redis": "redis" in sys.modules}))
"""


def test_run_imports_nothing_from_ops(tmp_path: Path) -> None:
    """`registry-supervisor run`, up to its loop, loads no module of supervisor.ops (with
    an htpasswd file set, so that its validation runs too), nor redis-py outside a fleet."""
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text("admin:$2y$10$" + "a" * 53 + "\n", encoding="utf-8")
    htpasswd.chmod(0o644)
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("MY_REG_", "REGISTRY_", "NOTIFY_SOCKET", "WATCHDOG_"))
    }
    environment |= {
        "MY_REG_DIR": str(tmp_path / "data"),
        "MY_REG_STATE_DIR": str(tmp_path / "state"),
        "MY_REG_LOG_FORMAT": "json",
        "MY_REG_AUTH_HTPASSWD": str(htpasswd),
    }
    done = subprocess.run(
        [sys.executable, "-P", "-c", _RUN_UP_TO_THE_LOOP],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert 0 == done.returncode, done.stderr
    # redis-py is for fleet mode only (MY_REG_FLEET_REDIS): not loaded without it.
    assert {"code": 0, "ops": [], "redis": False} == json.loads(done.stdout.splitlines()[-1])


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _room(m) in FILE_HELPERS))
def test_file_helpers_import_nothing_of_ours_but_errors(module: str) -> None:
    """tls and htpasswd_file, which pure modules use, import no other module of ours
    (errors aside): they stay leaves."""
    found = [
        name
        for name, _top in _imports(module)
        if _ours(name) and _room(name) not in ("errors", "supervisor")
    ]
    assert [] == found
