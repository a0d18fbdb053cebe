"""Planned restarts under load: failed client operations, supervisor beside Docker.

Real clients (the docker CLI: `docker pull` after `docker rmi`, and `docker push` of a
fresh `docker import`ed image of random bytes, each in its own loop) run against one
registry on loopback while it is restarted on purpose ``--rounds`` times:

- supervisor: `registry-supervisor run` at its defaults (the registry drains 5 s on
  SIGTERM); each round edits the env file (REGISTRY_LOG_FIELDS_RUN alternates 1 and 2: a
  changed spec, a harmless variable) and sends SIGHUP: the old container is stopped
  (`docker stop`), removed, and a new one created and started in the same holder;
- docker: the seed's `docker run -d --restart always -p 127.0.0.1:PORT:5000 ... registry`,
  and each round a `docker restart` of it (Docker's own way to apply a change).

Each client operation is one CLI command, with the daemon's own retries (it retries a
layer up to 5 times; a manifest request, and the /v2/ ping, it does not). A prober asks
GET /v2/ every 20 ms meanwhile, so each restart's window without an answer is measured.

Writes DIR/planned.md and DIR/planned.json (default DIR: tests/bench/results). Needs root,
a running engine and the `registry:latest` test image. Every container and image it makes
is named rs-bench-<hex>-... and removed at the end.
"""

from __future__ import annotations

import argparse
import json
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import benchlib as b

RESULTS = b.REPO / "tests" / "bench" / "results"
PROBE_EVERY_S = 0.02
PROBE_TIMEOUT_S = 0.3
CLI_TIMEOUT_S = 120.0


@dataclass
class Op:
    kind: str  # pull | push
    start: float
    end: float
    ok: bool
    error: str = ""


@dataclass
class Gap:
    """One stretch of failed probes: from the last answer before it to the first after."""

    last_ok: float
    first_ok_after: float

    @property
    def seconds(self) -> float:
        return self.first_ok_after - self.last_ok


def import_random_image(ref: str, size: int) -> None:
    """A one-file image of ``size`` random bytes (tests/support/docker.py's tar)."""
    tar = b.random_image_tar(f"rs-bench/{secrets.token_hex(4)}.bin", size)
    subprocess.run(
        ["docker", "import", "-", ref], input=tar, capture_output=True,
        timeout=CLI_TIMEOUT_S, check=True,
    )  # fmt: skip


def cli(*args: str) -> tuple[bool, str]:
    """Run `docker ARGS`; (succeeded, its last stderr line)."""
    try:
        done = subprocess.run(
            ["docker", *args], capture_output=True, text=True, timeout=CLI_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired:
        return False, f"timed out after {CLI_TIMEOUT_S} s"
    lines = done.stderr.strip().splitlines()
    return done.returncode == 0, lines[-1] if lines else ""


class Clients:
    """A puller and a pusher, each looping until stopped; every operation recorded."""

    def __init__(self, port: int, prefix: str, images: int, size: int) -> None:
        self.port, self.prefix, self.size = port, prefix, size
        self.ops: list[Op] = []
        self.pushed_refs: set[str] = set()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.pull_refs = [f"127.0.0.1:{port}/{prefix}/pull{i}:v1" for i in range(images)]
        self._threads = [
            threading.Thread(target=self._pull_loop, daemon=True),
            threading.Thread(target=self._push_loop, daemon=True),
        ]

    def seed(self) -> None:
        """Push the images the puller pulls (before any restart)."""
        for ref in self.pull_refs:
            import_random_image(ref, self.size)
            ok, err = cli("push", ref)
            if not ok:
                raise RuntimeError(f"seeding {ref}: {err}")

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(CLI_TIMEOUT_S * 2)

    def _record(self, kind: str, start: float, ok: bool, err: str) -> None:
        with self._lock:
            self.ops.append(Op(kind, start, b.now(), ok, "" if ok else err))

    def _pull_loop(self) -> None:
        turn = 0
        while not self._stop.is_set():
            ref = self.pull_refs[turn % len(self.pull_refs)]
            turn += 1
            cli("rmi", ref)  # absent locally: the pull fetches manifest and layer
            start = b.now()
            ok, err = cli("pull", ref)
            self._record("pull", start, ok, err)

    def _push_loop(self) -> None:
        turn = 0
        while not self._stop.is_set():
            ref = f"127.0.0.1:{self.port}/{self.prefix}/push:{turn}"
            turn += 1
            import_random_image(ref, self.size)  # a new layer every time: a real upload
            start = b.now()
            ok, err = cli("push", ref)
            self._record("push", start, ok, err)
            cli("rmi", ref)

    def cleanup(self) -> None:
        for ref in self.pull_refs:
            cli("rmi", ref)


class Prober:
    """GET /v2/ every PROBE_EVERY_S on a fresh connection; the stretches without an answer."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.samples: list[tuple[float, bool]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            t = b.now()
            self.samples.append((t, b.answers(self.port, PROBE_TIMEOUT_S)))
            self._stop.wait(max(0.0, t + PROBE_EVERY_S - b.now()))

    def gaps(self) -> list[Gap]:
        found, last_ok, failing = [], None, False
        for t, ok in self.samples:
            if ok:
                if failing and last_ok is not None:
                    found.append(Gap(last_ok, t))
                last_ok, failing = t, False
            else:
                failing = True
        return found


@dataclass
class Series:
    subject: str
    restarts: int = 0
    restart_s: list[float] = field(default_factory=list)  # trigger -> answering again
    gaps_s: list[float] = field(default_factory=list)
    ops: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        pulls = [o for o in self.ops if o["kind"] == "pull"]
        pushes = [o for o in self.ops if o["kind"] == "push"]
        errors = Counter(f"{o['kind']}: {o['error']}" for o in self.ops if not o["ok"])
        return {
            "subject": self.subject,
            "restarts": self.restarts,
            "pulls": len(pulls),
            "pull_failures": sum(not o["ok"] for o in pulls),
            "pushes": len(pushes),
            "push_failures": sum(not o["ok"] for o in pushes),
            "failed": sum(not o["ok"] for o in self.ops),
            "gap_median_s": b.median(self.gaps_s) if self.gaps_s else 0.0,
            "gap_max_s": max(self.gaps_s, default=0.0),
            "gaps": len(self.gaps_s),
            "restart_median_s": b.median(self.restart_s) if self.restart_s else None,
            "errors": dict(errors.most_common()),
        }


def run_series(
    subject: str, port: int, prefix: str, args: argparse.Namespace, restart: Any
) -> Series:
    """Clients and prober on ``port``; ``restart(round)`` ``--rounds`` times, settling between."""
    series = Series(subject)
    clients = Clients(port, prefix, args.images, args.size)
    clients.seed()
    prober = Prober(port)
    prober.start()
    clients.start()
    b.sleep_until(b.now() + args.settle)
    try:
        for round_no in range(args.rounds):
            t0 = b.now()
            restart(round_no)
            series.restart_s.append(
                b.wait_answering(port, 60.0, f"{subject} round {round_no}") - t0
            )
            series.restarts += 1
            b.sleep_until(b.now() + args.settle)
            print(f"{subject}: round {round_no + 1}/{args.rounds} done", file=sys.stderr)
    finally:
        clients.stop()
        prober.stop()
        clients.cleanup()
    series.gaps_s = [round(g.seconds, 3) for g in prober.gaps()]
    series.ops = [asdict(o) for o in clients.ops]
    return series


def supervisor_series(args: argparse.Namespace, workdir: Path, prefix: str) -> Series:
    name, port = f"{prefix}-sup", b.free_port()
    data = workdir / "sup-data"
    extra = {"REGISTRY_LOG_FIELDS_RUN": "0", "MY_REG_STATE_DIR": str(workdir / "sup-state")}
    env_file = b.supervisor_env_file(workdir, name, port, data, **extra)
    sup = b.start_supervisor(env_file)
    try:
        sup.wait_for_event("registry.healthy", 60.0)

        def restart(round_no: int) -> None:
            text = env_file.read_text()
            old = next(line for line in text.splitlines() if "REGISTRY_LOG_FIELDS_RUN" in line)
            env_file.write_text(text.replace(old, f"REGISTRY_LOG_FIELDS_RUN={1 + round_no % 2}"))
            since = sup.mark()
            sup.send(signal.SIGHUP)
            sup.wait_for_event("container.created", 60.0, since=since)

        return run_series("supervisor", port, prefix, args, restart)
    finally:
        sup.send(signal.SIGTERM)
        sup.wait_exit(b.STOP_TIMEOUT_S)
        client = b.api()
        b.remove_container(client, name)
        client.close()


def docker_series(args: argparse.Namespace, workdir: Path, prefix: str) -> Series:
    name, port = f"{prefix}-docker", b.free_port()
    data = workdir / "docker-data"
    data.mkdir()
    b.docker_cli(*b.seed_run_argv(name, port, data))
    try:
        b.wait_answering(port, 60.0, "seed registry")
        return run_series("docker", port, prefix, args, lambda _: b.docker_cli("restart", name))
    finally:
        client = b.api()
        b.remove_container(client, name)
        client.close()


def render(report: dict[str, Any]) -> str:
    sup, dock = (report["series"][k]["summary"] for k in ("supervisor", "docker"))
    rows = [
        ("planned restarts", "restarts", "{}"),
        ("client operations (pull + push)", None, None),
        ("pulls (failed)", None, None),
        ("pushes (failed)", None, None),
        ("failed client operations", "failed", "{}"),
        ("window without an answer, median", "gap_median_s", "{:.3f} s"),
        ("window without an answer, worst", "gap_max_s", "{:.3f} s"),
        ("restart trigger -> answering, median", "restart_median_s", "{:.3f} s"),
    ]
    lines = [
        "# Planned restarts under load",
        "",
        f"- Date: {report['date']} (run took {report['took_s']:.0f} s)",
        f"- Machine: {report['machine_line']}",
        f"- Supervisor: {report['source']}",
        f"- Command: `{report['command']}`",
        f"- {report['rounds']} planned restarts per subject; clients: one `docker pull` loop "
        f"(after `docker rmi`, {report['images']} images) and one `docker push` loop (a new "
        f"`docker import` of {report['size']} random bytes each time); {report['settle']:g} s "
        "between restarts; GET /v2/ probed every 20 ms.",
        "",
        "| | supervisor (SIGHUP, changed spec) | Docker (`docker restart`) |",
        "|---|---|---|",
    ]
    for label, key, fmt in rows:
        if key is None:
            if label.startswith("client"):
                values = [str(s["pulls"] + s["pushes"]) for s in (sup, dock)]
            elif label.startswith("pulls"):
                values = [f"{s['pulls']} ({s['pull_failures']})" for s in (sup, dock)]
            else:
                values = [f"{s['pushes']} ({s['push_failures']})" for s in (sup, dock)]
        else:
            values = ["n/a" if s[key] is None else fmt.format(s[key]) for s in (sup, dock)]
        lines.append(f"| {label} | {values[0]} | {values[1]} |")
    ratio = "n/a" if not dock["failed"] else f"{sup['failed'] / dock['failed']:.2f}"
    lines += ["", f"Failed operations, supervisor / Docker: {ratio}.", ""]
    for s in (sup, dock):
        lines.append(f"Errors, {s['subject']} ({s['failed']}):")
        lines += [f"- {n} x `{e}`" for e, n in s["errors"].items()] or ["- none"]
        lines.append("")
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=10, help="planned restarts per subject")
    parser.add_argument("--settle", type=float, default=4.0, help="seconds between restarts")
    parser.add_argument("--images", type=int, default=3, help="images the puller cycles through")
    parser.add_argument("--size", type=int, default=256 * 1024, help="bytes per image layer")
    parser.add_argument("--subjects", default="supervisor,docker")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--keep-workdir", action="store_true")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    started, date = b.now(), b.utc_now()
    workdir = Path(tempfile.mkdtemp(prefix="rs-bench-planned-"))
    prefix = b.unique_prefix()
    source = b.snapshot_supervisor(b.REPO, workdir)
    series: dict[str, Any] = {}
    try:
        for subject in args.subjects.split(","):
            run = supervisor_series if subject == "supervisor" else docker_series
            result = run(args, workdir, prefix)
            series[subject] = {"summary": result.summary(), **asdict(result)}
    finally:
        if not args.keep_workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    m = b.machine()
    report = {
        "date": date,
        "took_s": b.now() - started,
        "machine": m,
        "machine_line": (
            f"{m['nproc']} CPUs ({m['cpu']}), {m['os']}, Linux {m['kernel']}, "
            f"Docker {m['docker']} (API {m['docker_api']}), Python {m['python']}"
        ),
        "source": b.describe_source(source),
        "command": b.command_line(),
        "rounds": args.rounds,
        "settle": args.settle,
        "images": args.images,
        "size": args.size,
        "series": series,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "planned.json").write_text(json.dumps(report, indent=2) + "\n")
    if {"supervisor", "docker"} <= series.keys():
        text = render(report)
        (args.out / "planned.md").write_text(text + "\n")
        print(text)
    else:
        print(json.dumps({k: v["summary"] for k, v in series.items()}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
