#!/usr/bin/env python3
"""Where a served request's CPU goes: inside the app, in the rest of granian's request thread, or in granian's
I/O threads; the mock against the bare Flask ceiling, on the same server settings (bench/RESULTS.md, 2026-12-07).

    python3 bench/request_thread.py                          # 1 worker x 1 thread, retry-200, 3 rounds of 8 s
    python3 bench/request_thread.py --workers 2 --threads 4 --rounds 5

Each server is bench/serve_wsgi.py with --timed: its app is wrapped by `timed_app` below, which adds up
time.thread_time() across every call of the app (the app's own CPU: what the mock's code or Flask's dispatch
spends, including the body it reads) and writes the sum to a file at each round's end (SIGUSR1). The driver runs
bench/run.py's retry-200 workload (re-arm PUT + retry, one FAILED subtask per connection) against each server in
turn, and reads every thread's CPU time and context switches from /proc before and after each run. Per request it
prints: req/s; the whole tree's CPU; the app's own CPU; each thread name's CPU (granian's request threads are
`python`, its I/O threads `tokio-rt-worker`) and voluntary / involuntary switches. Medians of the rounds.
Compare within one run: the machine's speed moves by a third within an hour.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
TARGET_ENV, FACTORY_ENV, OUT_ENV = "BENCH_TIMED_TARGET", "BENCH_TIMED_FACTORY", "BENCH_TIMED_OUT"


def timed_app():
    """granian's factory: the app named by BENCH_TIMED_TARGET ("module:attr"), its calls' CPU time added up."""
    import importlib

    module, _, attr = os.environ[TARGET_ENV].partition(":")
    inner = getattr(importlib.import_module(module), attr)
    if os.environ.get(FACTORY_ENV) == "1":
        inner = inner()
    totals = [0, 0.0]  # calls, CPU seconds inside the app (+= under the interpreter lock: exact enough here)
    out = Path(os.environ[OUT_ENV]) / f"{os.getpid()}.txt"

    def dump(*_):
        out.write_text(f"{totals[0]} {totals[1]}\n")

    signal.signal(signal.SIGUSR1, dump)

    def app(environ, start_response):
        t0 = time.thread_time()
        try:
            return inner(environ, start_response)
        finally:
            totals[0] += 1
            totals[1] += time.thread_time() - t0

    return app


def _threads(pids: list[int]) -> dict[tuple, tuple[int, int, int]]:
    """(pid, tid, name) -> (voluntary switches, involuntary switches, CPU ticks) of every thread of PIDS."""
    out = {}
    for pid in pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            base = f"/proc/{pid}/task/{tid}"
            try:
                status = open(f"{base}/status").read()
                name = open(f"{base}/comm").read().strip()
                stat = open(f"{base}/stat").read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            vol = int(status.split("\nvoluntary_ctxt_switches:")[1].split()[0])
            invol = int(status.split("nonvoluntary_ctxt_switches:")[1].split()[0])
            out[(pid, tid, name)] = (vol, invol, int(stat[11]) + int(stat[12]))
    return out


def _in_app(folder: Path, pids: list[int]) -> tuple[int, float]:
    """(calls, CPU seconds) inside the app so far, over every worker of the server."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGUSR1)
        except OSError:
            pass
    time.sleep(0.3)
    calls, cpu = 0, 0.0
    for file in folder.glob("*.txt"):
        n, s = file.read_text().split()
        calls, cpu = calls + int(n), cpu + float(s)
    return calls, cpu


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--threads", type=int, default=1, help="granian blocking threads a worker")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=int, default=8)
    p.add_argument("--connections", type=int, default=32)
    args = p.parse_args(argv)

    sys.path.insert(0, str(BENCH))
    import tempfile

    import run  # bench/run.py: servers, wrk, the retry-200 world

    run.ensure_tools(["mock", "bare"], install=True)
    tmp = Path(tempfile.mkdtemp(prefix="ocp-request-thread-"))
    logs = tmp / "logs"
    logs.mkdir()
    planner = run.make_servers(["mock"], 2, tmp / "bodies.json")["mock"]  # plans the world, captures the bodies
    planner.start(logs)
    world = run.plan_world(planner.port, args.connections)
    run.capture_bodies(planner.port, world, tmp / "bodies.json")
    planner.stop()

    servers = {}
    for name in ("mock", "bare"):
        folder = tmp / name
        folder.mkdir()
        port = run.free_port()
        env = {**os.environ, OUT_ENV: str(folder), "BENCH_BARE_BODIES": str(tmp / "bodies.json"),
               "PYTHONPATH": os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), str(BENCH), str(run.ROOT)]))}
        argv = [run.VENV_BIN / "python", BENCH / "serve_wsgi.py", name, "--port", port, "--workers", args.workers,
                "--blocking-threads", args.threads, "--timed"]
        servers[name] = (run.Server(name, argv, env=env, port=port), folder)
    rows: dict[str, list[dict]] = {name: [] for name in servers}
    try:
        for server, _ in servers.values():
            server.start(logs)
        workload = run.WORKLOADS["retry-200"]
        for rnd in range(args.rounds):
            order = list(servers)[rnd % 2:] + list(servers)[:rnd % 2]
            for name in order:
                server, folder = servers[name]
                if name == "mock":
                    run.reset_world(server.port, world)
                workers = [pid for pid in run.tree_pids(server.proc.pid) if pid != server.proc.pid] or [server.proc.pid]
                pids = run.tree_pids(server.proc.pid)
                app_before, before = _in_app(folder, workers), _threads(pids)
                r = run.run_wrk(server, workload, args.seconds, args.connections, 2, world, logs, f"round {rnd + 1} {name}")
                app_after, after = _in_app(folder, workers), _threads(pids)
                n = max(1, r["requests"])
                tick_us = 1e6 / os.sysconf("SC_CLK_TCK")
                by_name: dict[str, list[float]] = {}
                for key, (v, i, cpu) in after.items():
                    b = before.get(key, (0, 0, 0))
                    acc = by_name.setdefault(key[2], [0.0, 0.0, 0.0])
                    acc[0] += (cpu - b[2]) * tick_us / n
                    acc[1] += (v - b[0]) / n
                    acc[2] += (i - b[1]) / n
                calls = app_after[0] - app_before[0]
                if calls <= 0:  # the workers did not write their sums (SIGUSR1): no figure rather than a wrong one
                    raise SystemExit(f"{name}: no in-app time was reported; see {logs}")
                row = {"rps": r["rps"], "cpu": r["cpu_us_per_req"], "unexpected": r["unexpected"],
                       "app": (app_after[1] - app_before[1]) / max(1, calls) * 1e6,
                       "threads": {k: v for k, v in by_name.items() if v[0] >= 0.5}}
                rows[name].append(row)
                run.log(f"round {rnd + 1} {name:4}: {row['rps']:7.0f} req/s, {row['cpu']:5.0f} µs CPU a request, "
                        f"{row['app']:5.1f} in the app; " + ", ".join(
                            f"{k} {v[0]:.1f} µs ({v[1]:.2f} + {v[2]:.2f} switches)" for k, v in row["threads"].items()))
    finally:
        run.stop_all()
    print(f"\n{args.workers} worker(s) x {args.threads} thread(s), retry-200, {args.rounds} x {args.seconds} s, "
          f"medians of the rounds (µs a request):\n")
    print("| server | req/s | tree CPU | in the app | per thread name: CPU (voluntary + involuntary switches) | unexpected |")
    print("|---|---:|---:|---:|---|---:|")
    for name, runs in rows.items():
        def med(key: str) -> float:
            return statistics.median(x[key] for x in runs)

        def thread(name: str, i: int) -> float:  # i: 0 CPU, 1 voluntary, 2 involuntary switches
            return statistics.median(x["threads"].get(name, (0, 0, 0))[i] for x in runs)

        per = ", ".join(f"{k} {thread(k, 0):.1f} ({thread(k, 1):.2f} + {thread(k, 2):.2f})"
                        for k in sorted({k for x in runs for k in x["threads"]}))
        print(f"| {name} | {med('rps'):.0f} | {med('cpu'):.0f} | {med('app'):.1f} | {per} | "
              f"{sum(x['unexpected'] for x in runs)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
