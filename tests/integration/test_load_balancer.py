"""The shipped HAProxy example in front of a real supervisor: its backend server is UP only
while the supervisor's `/ready` says so.

HAProxy runs on loopback from packaging/haproxy/registry-supervisor.cfg itself, with only
its addresses changed (the frontend, the one server, the stats socket), so the test checks
the example operators copy. The server's state is read from HAProxy's stats socket.
"""

from __future__ import annotations

import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from support.net import free_port, haproxy_show_stat

from supervisor.statedir import maintenance

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).parents[2] / "packaging" / "haproxy" / "registry-supervisor.cfg"
WAIT_TIMEOUT = 30.0
# The drain a planned replacement keeps /ready at 503: several of the example's 1 s checks.
DRAIN_S = 5


class HAProxy:
    """One haproxy process of the test's own, from the shipped example."""

    def __init__(self, root: Path, registry_port: int, metrics_port: int) -> None:
        self.port = free_port()
        self.socket_path = root / "haproxy.sock"
        self.config = root / "haproxy.cfg"
        self.log_path = root / "haproxy.log"
        text = EXAMPLE.read_text()
        text = text.replace("/run/haproxy/registry.sock", str(self.socket_path))
        text = text.replace("bind :5000", f"bind 127.0.0.1:{self.port}")
        servers = re.compile(r"^    server .*\n", re.MULTILINE)
        assert 3 == len(servers.findall(text)), "the example's server lines changed"
        text = servers.sub("", text) + (
            f"    server member 127.0.0.1:{registry_port} port {metrics_port}\n"
        )
        self.config.write_text(text)
        subprocess.run(["haproxy", "-c", "-q", "-f", str(self.config)], check=True, timeout=30)
        with self.log_path.open("wb") as log:
            # -db: stay in the foreground, so the test owns (and ends) this very process.
            self.proc = subprocess.Popen(
                ["haproxy", "-db", "-f", str(self.config)], stdout=log, stderr=log
            )

    def show_stat(self) -> list[dict[str, str]]:
        """`show stat` on the stats socket, one dict per proxy or server line."""
        return haproxy_show_stat(self.socket_path)

    def member(self) -> dict[str, str]:
        """The stats of the backend's one server."""
        (row,) = [r for r in self.show_stat() if r["svname"] == "member"]
        return row

    def wait_for(self, status: str, what: str = "") -> dict[str, str]:
        """Wait until the server's status is exactly ``status`` (UP or DOWN, not a
        transition such as "UP 1/2"); fail saying what was awaited."""
        return wait_until(
            lambda: _if(self._member_or_none(), lambda r: r["status"] == status),
            f"the HAProxy server to be {status}{what}",
            last=self._member_or_none,
        )

    def _member_or_none(self) -> dict[str, str] | None:
        if self.proc.poll() is not None:
            pytest.fail(f"haproxy exited {self.proc.returncode}: {self.log_path.read_text()}")
        try:
            return self.member()
        except OSError:
            return None  # the socket is not there yet

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def _if(row: dict[str, str] | None, ok: Callable[[dict[str, str]], bool]) -> Any:
    return row if row is not None and ok(row) else None


def wait_until(find: Callable[[], Any], what: str, *, last: Callable[[], Any] | None = None) -> Any:
    deadline = time.monotonic() + WAIT_TIMEOUT
    while True:
        found = find()
        if found is not None:
            return found
        if time.monotonic() > deadline:
            seen = last() if last is not None else None
            pytest.fail(f"timed out after {WAIT_TIMEOUT} s waiting for {what}; last: {seen}")
        time.sleep(0.05)


@pytest.fixture
def member(deployment: Any, tmp_path: Path) -> Iterator[tuple[Any, Any, HAProxy, int]]:
    """A healthy supervisor with /ready on its metrics port, and HAProxy in front of it."""
    metrics_port = free_port()
    deployment.write_env(
        MY_REG_STATE_DIR=str(tmp_path / "state"),
        MY_REG_METRICS_ADDR=f"127.0.0.1:{metrics_port}",
        MY_REG_READY_DRAIN=DRAIN_S,
        MY_REG_CANARY_INTERVAL=0,
    )
    sup = deployment.start()
    lb = HAProxy(tmp_path, deployment.port, metrics_port)
    try:
        yield deployment, sup, lb, metrics_port
    finally:
        lb.close()


def test_ready_answers_200_while_healthy_and_haproxy_serves_pulls(member):
    """Healthy: /ready is 200 `ready` (HEAD too), the HAProxy server UP after its checks,
    and an image pushed to the registry pulls through HAProxy."""
    deployment, _sup, lb, metrics_port = member
    answer = requests.get(f"http://127.0.0.1:{metrics_port}/ready", timeout=5)
    assert (200, "ready\n") == (answer.status_code, answer.text)
    assert 200 == requests.head(f"http://127.0.0.1:{metrics_port}/ready", timeout=5).status_code
    row = lb.wait_for("UP")
    assert "L7OK" == row["check_status"]
    image = deployment.push_image()
    deployment.assert_pullable(image, port=lb.port)


def test_maintenance_takes_the_member_out_until_it_ends(member):
    """While the maintenance lock is held (as `gc` holds it) the server is DOWN, /ready
    answering 503 `maintenance`; after its release, UP again."""
    deployment, sup, lb, metrics_port = member
    lb.wait_for("UP")
    since = sup.mark()
    path = deployment.root / "state" / f"maintenance-{deployment.name}"
    lock = maintenance.acquire(
        path, maintenance.GARBAGE_COLLECTION, f"{deployment.name}-gc", lambda _name: False
    )
    try:
        sup.wait_for_event("maintenance.started", since=since)
        lb.wait_for("DOWN", " during maintenance")
        answer = requests.get(f"http://127.0.0.1:{metrics_port}/ready", timeout=5)
        assert (503, "maintenance\n") == (answer.status_code, answer.text)
    finally:
        maintenance.release(path, lock)
    sup.wait_for_event("maintenance.ended", since=since)
    lb.wait_for("UP", " after maintenance")


def test_a_reload_that_replaces_the_registry_drains_it_first(member):
    """A reload with a changed spec: the server goes DOWN while the old container still
    runs (MY_REG_READY_DRAIN), then the new one is created, and the server is UP again."""
    deployment, sup, lb, _metrics_port = member
    lb.wait_for("UP")
    old = deployment.running()
    deployment.write_env(MY_REG_MEMORY="256m")
    since = sup.mark()
    sup.send(signal.SIGHUP)
    restarting = sup.wait_for_event("container.restarting", since=since, reason="spec-changed")
    assert DRAIN_S == restarting["delay_s"]
    lb.wait_for("DOWN", " while the replacement drains")
    assert old.id == deployment.running().id, "the old container was stopped before the drain"
    assert [] == sup.find("container.created", since=since)
    sup.wait_for_event("container.created", since=since)
    sup.wait_for_event("registry.healthy", since=since)
    lb.wait_for("UP", " after the replacement")
    assert old.id != deployment.running().id
