"""Unit tests see no ambient settings: no MY_REG_*/REGISTRY_* variables, no stray .env."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from support.certs import MakeTls, write_self_signed
from support.fake_fleet import FakeFleetStore
from support.fleet_rig import join
from support.rig import Rig

from supervisor.statedir import fleet_hold

DATA = Path(__file__).parent / "data"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    for key in list(os.environ):
        if key.startswith(("MY_REG_", "REGISTRY_", "NOTIFY_SOCKET", "WATCHDOG_")):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    yield
    structlog.reset_defaults()


@pytest.fixture
def inspect_data() -> Callable[[str], dict[str, Any]]:
    """Load a `docker inspect` dict captured from a real engine running the registry."""

    def load(name: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((DATA / f"{name}.json").read_text())
        return data

    return load


@pytest.fixture
def make_tls() -> MakeTls:
    """Write a real self-signed certificate and its key (PEM) into a directory."""
    return write_self_signed


@pytest.fixture
def rig(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Iterator[Rig]:
    rig = Rig(tmp_path, capsys)
    yield rig
    rig.engine.close_streams()  # the loop's event watcher thread ends with its stream
    left = [t.name for t in threading.enumerate() if t.name == "docker-events"]
    assert [] == left, "an event watcher thread outlived its test"


@pytest.fixture
def store(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> FakeFleetStore:
    """A fleet of one Redis, and ``rig`` a member of it (m1), the hold's clocks the rig's."""
    store = FakeFleetStore(rig.clock)
    join(rig, store)
    monkeypatch.setattr(fleet_hold, "boottime", rig.clock)
    monkeypatch.setattr(fleet_hold, "boot_id", lambda: "boot-1")
    return store
