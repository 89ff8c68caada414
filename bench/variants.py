#!/usr/bin/env python3
"""Server options of the mock, and its Flask path, measured side by side (the same harness as bench/run.py).

    python3 bench/variants.py                                  # every variant, retry-400 and retry-200
    python3 bench/variants.py --variants default,flask-path,bare --workloads retry-400,get-task --rounds 3 --seconds 10
    git archive HEAD~1 mock_server openapi.yaml | tar -x -C /tmp/base     # another version, in the same rounds:
    python3 bench/variants.py --variants default,baseline --baseline /tmp/base --workloads retry-200

`default` is `ocp-mock serve` as shipped (2 workers, 4 granian blocking threads a worker). Every other variant is
the mock's own app factory (mock_server.wsgi:app_from_env) started by bench/serve_wsgi.py, which starts granian with
the same options as `ocp-mock serve`, so a variant differs from `default` only in what its argv names: another
granian setting, another server (gunicorn), or a Config field (`--config FIELD=JSON`, e.g. `flask-path`:
fast_path=false, every request through Flask instead of mock_server/dispatch.py). `bare` and `raw` are the
ceilings (bench/bare_app.py) on the same server options; `lean` (bench/lean_app.py) is the floor of a stateful
answer to retry-200's pair: shared statuses under a cross-process lock, the envelope, no model of OCP.
`baseline` is `default` with the mock_server/ of --baseline DIR first on PYTHONPATH (a checkout or `git archive` of another version). mock_server/ is not edited.
Variants run alternately, in a rotating order, several rounds; the world is reset before every run.
gunicorn is installed on demand into bench/.tools/py (pip --target), not into .venv.
Writes bench/out/variants-<time>.json and .md (and bench/out/variants-latest.md).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # noqa: E402  (bench/run.py: servers, wrk, world helpers)

PYTOOLS = run.TOOLS / "py"
SERVE = [run.VENV_BIN / "python", run.BENCH / "serve_wsgi.py"]

# name -> (description, argv after `serve_wsgi.py APP`, app); serve_wsgi.py's defaults are ocp-mock serve's
VARIANTS = {
    "default": ("ocp-mock serve as shipped: 2 workers, 4 blocking threads per worker (--threads 4)", None, "mock"),
    "baseline": ("`default` with --baseline DIR's mock_server/ (another version, same rounds)", None, "mock"),
    "default-log": ("`default` with its access log on (no --quiet): the mock as shipped", None, "mock"),
    "baseline-log": ("`baseline` with its access log on", None, "mock"),
    "baseline-threads1": ("`baseline` with --threads 1", ["--threads", "1"], "cli"),
    "threads1": ("`ocp-mock serve --threads 1`: one blocking thread per worker", ["--threads", "1"], "cli"),
    "threads2": ("`ocp-mock serve --threads 2`", ["--threads", "2"], "cli"),
    "threads8": ("`ocp-mock serve --threads 8`", ["--threads", "8"], "cli"),
    "workers1": ("`ocp-mock serve --workers 1`: one process (4 threads), no journal shared between workers",
                 ["--workers", "1"], "cli"),
    "workers1-t1": ("`ocp-mock serve --workers 1 --threads 1`", ["--workers", "1", "--threads", "1"], "cli"),
    "workers1-t2": ("`ocp-mock serve --workers 1 --threads 2`", ["--workers", "1", "--threads", "2"], "cli"),
    "flask-path": ("every request through Flask (--config fast_path=false): prices the dispatcher",
                   ["--config", "fast_path=false", "--blocking-threads", "4"], "mock"),
    "clock0": ("the mock's clock stopped (--clock-speed 0): no due transitions, so no catch-up writes",
               ["--config", "clock_speed=0"], "mock"),
    "bt2+clock0": ("blocking_threads=2, clock stopped", ["--blocking-threads", "2", "--config", "clock_speed=0"], "mock"),
    "bt1": ("granian blocking_threads=1", ["--blocking-threads", "1"], "mock"),
    "bt2": ("granian blocking_threads=2", ["--blocking-threads", "2"], "mock"),
    "bt4": ("granian blocking_threads=4 (default's threading, started by serve_wsgi.py)", ["--blocking-threads", "4"], "mock"),
    "bt8": ("granian blocking_threads=8", ["--blocking-threads", "8"], "mock"),
    "bt-granian": ("granian's own default threads (backpressure / 2: 256 a worker with 2 workers)",
                   ["--blocking-threads", "0"], "mock"),
    "bp8": ("granian backpressure=8 (blocking_threads 4)", ["--backpressure", "8"], "mock"),
    "rt2": ("granian runtime_threads=2", ["--runtime-threads", "2"], "mock"),
    "w1": ("granian 1 worker", ["--workers", "1"], "mock"),
    "w3": ("granian 3 workers", ["--workers", "3"], "mock"),
    "w1+bt1": ("granian 1 worker, blocking_threads=1: no contention at all", ["--workers", "1", "--blocking-threads", "1"], "mock"),
    "w1+bt2": ("granian 1 worker, blocking_threads=2", ["--workers", "1", "--blocking-threads", "2"], "mock"),
    "gthread": ("gunicorn gthread 2 workers x 8 threads", ["--server", "gunicorn-gthread", "--threads", "8"], "mock"),
    "bare": ("bare Flask constant, 4 blocking threads (the Flask ceiling)", [], "bare"),
    "raw": ("plain WSGI callable returning the same constants, no Flask, 4 blocking threads", [], "raw"),
    "lean": ("the least a stateful mock does for retry-200 (bench/lean_app.py: shared statuses under a "
             "cross-process lock, envelope by orjson), plain WSGI, 4 blocking threads", [], "lean"),
    "bare-bt1": ("bare Flask constant, granian blocking_threads=1", ["--blocking-threads", "1"], "bare"),
    "bare-bt2": ("bare Flask constant, granian blocking_threads=2", ["--blocking-threads", "2"], "bare"),
}


def ensure_gunicorn() -> None:
    if (PYTOOLS / "gunicorn").exists():
        return
    run.log("installing gunicorn into bench/.tools/py")
    subprocess.run([str(run.VENV_BIN / "python"), "-m", "pip", "install", "-q", "--target", str(PYTOOLS), "gunicorn"],
                   check=True)


def make_server(name: str, workers: int, bodies: Path, baseline: Path | None = None) -> run.Server:
    _desc, extra, app = VARIANTS[name]
    port = run.free_port()
    if app == "cli" or extra is None:  # ocp-mock serve itself (cli: with other options)
        argv = run.mock_argv(port, workers, quiet=not name.endswith("-log"), extra=extra or ())
        env = None if not name.startswith("baseline") else \
            {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(baseline), os.environ.get("PYTHONPATH")]))}
        return run.Server(name, argv, env=env, port=port)
    env = {**os.environ, "BENCH_BARE_BODIES": str(bodies),
           "PYTHONPATH": os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), str(PYTOOLS), str(run.BENCH), str(run.ROOT)]))}
    argv = [*SERVE, app, "--port", port, "--workers", workers, *extra]
    return run.Server(name, argv, env=env, port=port)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--workloads", default="retry-400,retry-200")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--seconds", type=int, default=8)
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", type=Path, default=run.BENCH / "out")
    p.add_argument("--baseline", type=Path, help="the `baseline` variant's mock_server/ lives in DIR/mock_server")
    args = p.parse_args(argv)
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    for n in names:
        if n not in VARIANTS:
            raise SystemExit(f"unknown variant {n!r}; known: {', '.join(VARIANTS)}")
    if any(n.startswith("baseline") for n in names) and not (args.baseline and (args.baseline / "mock_server" / "__init__.py").is_file()):
        raise SystemExit("the baseline variant needs --baseline DIR, with DIR/mock_server/ in it")
    baseline = args.baseline.resolve() if args.baseline else None
    run.ensure_tools([], install=True)
    if any("gunicorn" in " ".join(map(str, VARIANTS[n][1] or [])) for n in names):
        ensure_gunicorn()

    stamp = time.strftime("%Y%m%d-%H%M%S")
    logs = args.out / f"variants-{stamp}-logs"
    logs.mkdir(parents=True, exist_ok=True)
    bodies = logs / "bare_bodies.json"
    servers: dict[str, run.Server] = {}
    runs = []
    try:
        # a mock first, for the world plan and the bare app's bodies
        for n in names:
            if VARIANTS[n][2] in ("mock", "cli"):
                servers[n] = make_server(n, args.workers, bodies, baseline)
                servers[n].start(logs)
                world = run.plan_world(servers[n].port, args.connections)
                run.capture_bodies(servers[n].port, world, bodies)
                break
        else:
            raise SystemExit("pick at least one mock variant")
        for n in names:
            if n not in servers:
                servers[n] = make_server(n, args.workers, bodies, baseline)
                servers[n].start(logs)
            run.log(f"{n}: answering on :{servers[n].port} after {servers[n].startup_s:.2f} s")
        for wl in workloads:  # warm-up
            for n in names:
                if VARIANTS[n][2] in ("mock", "cli"):
                    run.reset_world(servers[n].port, world if run.WORKLOADS[wl].needs_world else None)
                run.run_wrk(servers[n], run.WORKLOADS[wl], 2, args.connections, args.threads, world, logs, f"warmup {wl} {n}")
        for rnd in range(args.rounds):
            order = names[rnd % len(names):] + names[:rnd % len(names)]
            for wl in workloads:
                for n in order:
                    srv = servers[n]
                    if VARIANTS[n][2] in ("mock", "cli"):
                        run.reset_world(srv.port, world if run.WORKLOADS[wl].needs_world else None)
                    r = run.run_wrk(srv, run.WORKLOADS[wl], args.seconds, args.connections, args.threads, world, logs,
                                    f"round {rnd + 1} {wl} {n}")
                    r["variant"] = n
                    if n.endswith("-log"):  # its access log: kept small (the server appends, so emptying is safe)
                        os.truncate(logs / f"{n}.log", 0)
                    r.pop("memory_timeline", None)
                    runs.append(r)
                    run.log(f"round {rnd + 1} {wl:9} {n:24}: {r['rps']:8.0f} req/s  {r['cpu_us_per_req']:5.0f} µs CPU/req  p50 {r['p50_ms']:6.2f}  "
                            f"p99 {r['p99_ms']:7.2f} ms  unexpected {r['unexpected']}  RSS {r['rss_peak_mb']:.0f} MB")
    finally:
        for srv in servers.values():
            srv.stop()
        run.stop_all()

    lines = [f"# Variants {stamp}", "", f"Command: `python3 bench/variants.py {' '.join(sys.argv[1:])}`", "",
             f"{args.rounds} rounds x {args.seconds} s, {args.connections} connections, variants alternating. "
             "Ratios are to `default` (ocp-mock serve as shipped) in the same run.", ""]
    summary = {}
    for wl in workloads:
        lines += [f"## {wl}", "", "| variant | what | req/s (median) | vs default | server CPU µs/req | vs default | p50 ms | p99 ms (median) | unexpected | RSS MB |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        base = base_cpu = None
        for n in names:
            rs = [r for r in runs if r["variant"] == n and r["workload"] == wl]
            if not rs:
                continue
            s = {"rps": statistics.median(r["rps"] for r in rs), "p50": statistics.median(r["p50_ms"] for r in rs),
                 "p99": statistics.median(r["p99_ms"] for r in rs), "unexpected": sum(r["unexpected"] for r in rs),
                 "rss": max(r["rss_peak_mb"] for r in rs), "cpu": statistics.median(r["cpu_us_per_req"] for r in rs)}
            summary[f"{wl}/{n}"] = s
            if n == "default":
                base, base_cpu = s["rps"], s["cpu"]
            rel = f"{s['rps'] / base:.2f}x" if base else "-"
            rel_cpu = f"{s['cpu'] / base_cpu:.2f}x" if base else "-"
            lines.append(f"| {n} | {VARIANTS[n][0]} | {s['rps']:.0f} | {rel} | {s['cpu']:.0f} | {rel_cpu} | {s['p50']:.1f} | {s['p99']:.1f} | "
                         f"{s['unexpected']} | {s['rss']:.0f} |")
        lines.append("")
    md = "\n".join(lines)
    (args.out / f"variants-{stamp}.json").write_text(json.dumps({"runs": runs, "summary": summary}, indent=1))
    (args.out / f"variants-{stamp}.md").write_text(md)
    (args.out / "variants-latest.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        run.stop_all()
        sys.exit(130)
