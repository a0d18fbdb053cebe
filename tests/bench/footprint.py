"""Footprint of the supervisor itself: start-to-READY, peak RSS, idle CPU.

    .venv/bin/python tests/bench/footprint.py [--rounds N] [--cpu-seconds S] [--out DIR]

- start-to-READY: the supervisor is exec'd with NOTIFY_SOCKET pointing at a datagram socket
  we bind; timed from right before the exec to the arrival of READY=1 (sent once /v2/ first
  answers). "fresh": no container, the image present (create + start + first probe);
  "adopt": our container already running (restart of the supervisor alone).
- steady state: after READY and a warm-up, utime+stime from /proc/PID/stat over S seconds
  (default 60) at the default probe interval, as a share of one core; then VmHWM (peak RSS)
  from /proc/PID/status. NOTIFY_SOCKET stays set, as under systemd (a STATUS per second).

Also run by recovery.py, whose report carries these figures next to the recovery table.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import benchlib as b

START_TIMEOUT_S = 60.0
WARMUP_S = 5.0


def start_to_ready(workdir: Path, rounds: int) -> dict[str, Any]:
    """Median start-to-READY, fresh (no container) and adopting a running container."""
    name = f"{b.unique_prefix()}-fp"
    port = b.free_port()
    data = workdir / f"{name}-data"
    client = b.api()
    fresh: list[float] = []
    adopt: list[float] = []
    try:
        for _ in range(rounds):
            b.remove_container(client, name)
            fresh.append(_one_start(workdir, name, port, data))
        # Leave the container running: MY_REG_STOP_ON_EXIT=false, same spec.
        b.remove_container(client, name)
        _one_start(workdir, name, port, data, MY_REG_STOP_ON_EXIT="false")
        for _ in range(rounds):
            adopt.append(_one_start(workdir, name, port, data, MY_REG_STOP_ON_EXIT="false"))
    finally:
        b.remove_container(client, name)
        client.close()
    return {
        "fresh_s": [round(x, 4) for x in fresh],
        "adopt_s": [round(x, 4) for x in adopt],
        "fresh_median_s": round(b.median(fresh), 4),
        "adopt_median_s": round(b.median(adopt), 4),
    }


def _one_start(workdir: Path, name: str, port: int, data: Path, **extra: str) -> float:
    env_file = b.supervisor_env_file(workdir, name, port, data, **extra)
    notify = b.NotifySocket(workdir / "notify-start.sock", clock=b.now)
    sup = None
    try:
        sup = b.start_supervisor(env_file, notify_socket=str(notify.path))
        ready = notify.wait_for("READY=1", START_TIMEOUT_S)
        if not b.answers(port, timeout=2.0):
            raise RuntimeError(f"{name}: READY=1 sent but /v2/ does not answer")
        return ready - sup.started_at
    finally:
        if sup is not None:
            sup.stop(timeout=b.STOP_TIMEOUT_S)
        notify.close()


def steady(workdir: Path, cpu_seconds: float) -> dict[str, Any]:
    """CPU share of one core over ``cpu_seconds`` of steady running; peak RSS after."""
    name = f"{b.unique_prefix()}-fp"
    port = b.free_port()
    env_file = b.supervisor_env_file(workdir, name, port, workdir / f"{name}-data")
    notify = b.NotifySocket(workdir / "notify-steady.sock", clock=b.now)
    client = b.api()
    sup = None
    try:
        sup = b.start_supervisor(env_file, notify_socket=str(notify.path))
        notify.wait_for("READY=1", START_TIMEOUT_S)
        time.sleep(WARMUP_S)
        ticks0, t0 = b.cpu_ticks(sup.pid), b.now()
        time.sleep(cpu_seconds)
        ticks1, t1 = b.cpu_ticks(sup.pid), b.now()
        status = b.proc_status(sup.pid)
        restarts = [e for e in sup.events() if e.get("event") == "container.restarting"]
    finally:
        if sup is not None:
            sup.stop(timeout=b.STOP_TIMEOUT_S)
        notify.close()
        b.remove_container(client, name)
        client.close()
    cpu_s = (ticks1 - ticks0) / b.CLK_TCK
    return {
        "window_s": round(t1 - t0, 2),
        "cpu_s": cpu_s,
        "cpu_percent_of_one_core": round(100 * cpu_s / (t1 - t0), 3),
        "vm_hwm_kib": status["VmHWM"],
        "vm_hwm_mib": round(status["VmHWM"] / 1024, 1),
        "vm_rss_kib": status["VmRSS"],
        "threads": status["Threads"],
        "notify_messages": len(notify.messages),
        "restarts_during_window": len(restarts),
    }


def measure(workdir: Path, rounds: int, cpu_seconds: float) -> dict[str, Any]:
    return {
        "start_to_ready": start_to_ready(workdir, rounds),
        "steady": steady(workdir, cpu_seconds),
        "settings": {
            "interval_s": b.HEALTH_INTERVAL_S,
            "timeout_s": b.HEALTH_TIMEOUT_S,
            "retries": b.HEALTH_RETRIES,
        },
    }


def markdown(fp: dict[str, Any]) -> str:
    st, sd = fp["start_to_ready"], fp["steady"]
    return "\n".join(
        [
            "| footprint | measured |",
            "|---|---|",
            f"| start-to-READY, fresh (create + start + first 200), median of "
            f"{len(st['fresh_s'])} | {st['fresh_median_s']:.3f} s "
            f"(worst {max(st['fresh_s']):.3f} s) |",
            f"| start-to-READY, adopting a running container, median of "
            f"{len(st['adopt_s'])} | {st['adopt_median_s']:.3f} s "
            f"(worst {max(st['adopt_s']):.3f} s) |",
            f"| peak RSS (VmHWM) after {sd['window_s']:.0f} s steady | "
            f"{sd['vm_hwm_mib']} MiB ({sd['vm_hwm_kib']} kB); VmRSS {sd['vm_rss_kib']} kB; "
            f"{sd['threads']} threads |",
            f"| CPU over {sd['window_s']:.0f} s steady (probe every "
            f"{b.HEALTH_INTERVAL_S:g} s, STATUS to NOTIFY_SOCKET) | "
            f"{sd['cpu_percent_of_one_core']:.3f} % of one core ({sd['cpu_s']:.2f} s CPU) |",
        ]
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="start-to-READY rounds (each kind)")
    parser.add_argument("--cpu-seconds", type=float, default=60.0, help="steady CPU window")
    parser.add_argument("--out", type=Path, default=None, help="write footprint.md/json here")
    parser.add_argument("--supervisor-src", type=Path, default=b.REPO,
                        help="tree holding the supervisor/ package to run (default: this checkout)")  # fmt: skip
    parser.add_argument("--supervisor-rev", default=None, metavar="REV",
                        help="run supervisor/ as committed at REV of this checkout (e.g. HEAD)")  # fmt: skip
    args = parser.parse_args()
    b.wait_engine(10)
    started = b.utc_now()
    workdir = Path(tempfile.mkdtemp(prefix="rs-bench-"))
    try:
        source = b.snapshot_supervisor(args.supervisor_src.resolve(), workdir, args.supervisor_rev)
        fp = measure(workdir, args.rounds, args.cpu_seconds)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    fp = {
        "date": started,
        "machine": b.machine(),
        "command": b.command_line(),
        "supervisor_source": source,
        **fp,
    }
    m = fp["machine"]
    text = "\n".join(
        [
            f"- Date: {started}; {m['nproc']} CPUs, Linux {m['kernel']}, Docker {m['docker']}",
            f"- Supervisor: {b.describe_source(source)}",
            f"- Command: `{fp['command']}`",
            "",
            markdown(fp),
        ]
    )
    print(text)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "footprint.md").write_text(text + "\n")
        (args.out / "footprint.json").write_text(json.dumps(fp, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
