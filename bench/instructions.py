#!/usr/bin/env python3
"""Instructions per request, counted by valgrind (callgrind): a figure that does not move with the machine's speed.

    python3 bench/instructions.py                                    # this checkout, every row
    git archive HEAD~1 mock_server openapi.yaml | tar -x -C /tmp/base
    python3 bench/instructions.py --baseline /tmp/base --rows pair,retry-400

On this kind of machine req/s and CPU time swing by 30-50 % within minutes (bench/RESULTS.md), so a change worth a
few percent cannot be told from noise by timing. Instructions retired can: each row is run in process (the WSGI
callable called directly, as bench/profile_request.py does) under `valgrind --tool=callgrind`, once with --warm
calls and once with --warm + --n, and the difference is divided by --n: start-up, imports and the first calls
cancel out. PYTHONHASHSEED is fixed; what still varies (trace ids, the clock) moves a figure by about 0.3 %.

Rows:
  pair       PUT /__mock/subtasks/10001 (re-arm to FAILED) then POST .../10001/retry (200): bench/run.py's
             retry-200; the figure is per request (of the two)
  retry-400  POST retry of 10002 (RUNNING): OCP's 400
  not-found  POST retry of 99999: 404
  get-task   GET /api/v2/tasks/instances/1000
The world's clock is stopped (clock_speed=0), so no due transitions run. Under valgrind a call takes ~50x longer,
so every answer falls into a new millisecond (served, several answers share one): per-millisecond caches count as
misses here.

--served also counts the pair served: `ocp-mock serve --workers 1 --threads 1 --clock-speed 0` under valgrind
(--trace-children), sent --warm pairs, then --n pairs, over one keep-alive connection, with callgrind_control
dumping the worker's counts after each: the figure is the worker process's instructions (granian's threads
included) per request. Next to the in-process figure it says how much work serving adds; bench/RESULTS.md
compares that with the CPU time each takes.

Instructions are not time: a cache miss or a branch missed costs many, and Python's allocator differs by pattern.
Use them to compare two versions of the same code path, and confirm the served effect with bench/variants.py.
Needs valgrind (Debian's valgrind package; installed here on demand when apt-get can run).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
ROWS = ("pair", "retry-400", "not-found", "get-task")


def child(row: str, calls: int) -> None:
    """Runs ROW CALLS times in this process (what valgrind counts)."""
    import logging

    sys.path.insert(0, str(BENCH))
    import profile_request as pr

    from mock_server.app import create_app
    from mock_server.config import Config

    logging.getLogger("ocp_mock").setLevel(logging.CRITICAL)
    folder = tempfile.mkdtemp(prefix="ocp-mock-instructions-")
    try:
        app = create_app(Config(db_path=str(Path(folder) / "w.sqlite3"), access_log=False, clock_speed=0))
        app.extensions["ocp_mock"].reset()

        def call(method, path, body=b"", headers=None):
            fn, statuses = pr.caller(app, pr.environ_for(method, path, body, headers))
            return fn, statuses

        retry = f"{pr.TASKS}/1000/subtasks/{{}}/retry"
        if row == "pair":
            put, put_st = call("PUT", f"/__mock/subtasks/{pr.ARMED}", pr.REARM, {"Content-Type": "application/json"})
            post, post_st = call("POST", retry.format(pr.ARMED), headers=pr.H)
            for _ in range(calls):
                put()
                post()
            statuses, expected = put_st + post_st, "200"
        else:
            method, path, expected = {
                "retry-400": ("POST", retry.format(pr.REFUSED), "400"),
                "not-found": ("POST", retry.format(pr.MISSING), "404"),
                "get-task": ("GET", f"{pr.TASKS}/1000", "200"),
            }[row]
            fn, statuses = call(method, path, headers=pr.H)
            for _ in range(calls):
                fn()
        wrong = [s for s in statuses if not s.startswith(expected)]
        if wrong:
            raise SystemExit(f"{row}: answered {wrong[0]!r}, expected {expected}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def ensure_valgrind() -> None:
    if shutil.which("valgrind"):
        return
    sudo = [] if os.geteuid() == 0 else (["sudo", "-n"] if shutil.which("sudo") else None)
    if sudo is None:
        raise SystemExit("valgrind is missing and this user cannot run apt-get; install it: apt-get install -y valgrind")
    subprocess.run(sudo + ["apt-get", "install", "-y", "-qq", "valgrind"], check=True,
                   env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})


def counted(python: Path, code_dir: Path | None, row: str, calls: int) -> int:
    """Instructions valgrind counted for one child run of ROW with CALLS calls."""
    env = {**os.environ, "PYTHONHASHSEED": "0",
           "PYTHONPATH": os.pathsep.join(str(p) for p in (code_dir, ROOT) if p)}
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/out",
                               str(python), str(Path(__file__).resolve()), "--child", row, "--n", str(calls)],
                              env=env, capture_output=True, text=True)
    found = re.search(r"Collected : (\d+)", proc.stderr)
    if proc.returncode or not found:
        raise SystemExit(f"{row}: valgrind run failed (rc {proc.returncode}):\n{proc.stderr[-2000:]}")
    return int(found.group(1))


def per_request(python: Path, code_dir: Path | None, row: str, warm: int, n: int) -> float:
    """ROW's instructions per request: the two valgrind runs side by side (each is one thread; two cores here)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=2) as pool:
        short, long = pool.map(lambda calls: counted(python, code_dir, row, calls), (warm, warm + n))
    return (long - short) / (n * (2 if row == "pair" else 1))


def served_pair(python: Path, warm: int, n: int) -> float:
    """Instructions per request of the pair, served (see the module doc)."""
    import base64
    import http.client

    sys.path.insert(0, str(BENCH))
    import run

    port = int(run.free_port())
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "PYTHONHASHSEED": "0"}
        proc = subprocess.Popen(["valgrind", "--tool=callgrind", "--trace-children=yes",
                                 f"--callgrind-out-file={tmp}/cg.%p", str(python.parent / "ocp-mock"), "serve",
                                 "--quiet", "--workers", "1", "--threads", "1", "--clock-speed", "0",
                                 "--port", str(port)],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            deadline = time.monotonic() + 300
            while True:  # under valgrind the start takes ~40 s
                try:
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
                    conn.request("GET", "/__mock/health")
                    health = conn.getresponse()
                    health.read()
                    if health.status == 200:
                        break
                except OSError:
                    pass
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit("ocp-mock serve did not answer under valgrind")
                time.sleep(2)
            auth = {"Authorization": "Basic " + base64.b64encode(b"admin:admin").decode()}

            def pairs(count: int) -> None:
                for _ in range(count):
                    for method, path, body, headers in (
                            ("PUT", "/__mock/subtasks/10001", b'{"status":"FAILED","operation":"EXECUTE"}',
                             {"Content-Type": "application/json"}),
                            ("POST", "/api/v2/tasks/instances/1000/subtasks/10001/retry", b"", auth)):
                        conn.request(method, path, body=body, headers=headers)
                        answer = conn.getresponse()
                        answer.read()
                        if answer.status != 200:
                            raise SystemExit(f"served pair: {method} {path} answered {answer.status}")

            def dump() -> dict[str, int]:
                subprocess.run(["callgrind_control", "--dump"], capture_output=True, check=False)
                time.sleep(2)
                totals = {}
                for f in Path(tmp).glob("cg.*.*"):
                    text = f.read_text(errors="replace")
                    found = re.search(r"^summary: (\d+)", text, re.M)
                    if "serve" in text[:4000] and found:
                        totals[f.name] = int(found.group(1))
                return totals

            pairs(warm)
            before = dump()
            pairs(n)
            after = dump()
        finally:
            os.killpg(proc.pid, 15)
            proc.wait(timeout=60)
    fresh = {k: v for k, v in after.items() if k not in before}  # the parts dumped after the N pairs
    if not fresh:
        raise SystemExit("callgrind_control dumped nothing: is valgrind's callgrind_control on PATH?")
    return max(fresh.values()) / (2 * n)  # the worker's part (the others counted almost nothing meanwhile)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated, of: {', '.join(ROWS)}")
    p.add_argument("--baseline", type=Path, help="another version's mock_server/ lives in DIR/mock_server")
    p.add_argument("--warm", type=int, default=50, help="calls in the shorter run (start-up and warm-up cancel out)")
    p.add_argument("--n", type=int, default=200, help="calls more in the longer run")
    p.add_argument("--served", action="store_true", help="also count the pair served (this checkout; ~2 min more)")
    p.add_argument("--out", type=Path, default=BENCH / "out")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(args.child, args.n)
        return 0
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    for r in rows:
        if r not in ROWS:
            raise SystemExit(f"unknown row {r!r}; known: {', '.join(ROWS)}")
    if args.baseline and not (args.baseline / "mock_server" / "__init__.py").is_file():
        raise SystemExit(f"--baseline {args.baseline}: no mock_server/ in it")
    python = ROOT / ".venv" / "bin" / "python"
    if not python.exists():
        subprocess.run(["make", "-C", str(ROOT), ".venv/.installed"], check=True)
    ensure_valgrind()
    versions = {"this checkout": None}
    if args.baseline:
        versions = {"baseline": args.baseline.resolve(), **versions}
    result = {"rows": {}, "baseline": str(args.baseline) if args.baseline else None, "warm": args.warm, "n": args.n}
    for row in rows:
        result["rows"][row] = {name: per_request(python, d, row, args.warm, args.n) for name, d in versions.items()}
        print(f"{row}: " + ", ".join(f"{k} {v:,.0f}" for k, v in result["rows"][row].items()), file=sys.stderr)
    if args.served:
        result["served_pair"] = served_pair(python, args.warm, args.n)
        print(f"pair served: {result['served_pair']:,.0f}", file=sys.stderr)
    head = " | ".join(versions)
    lines = [f"| row | {head} |" + (" change |" if args.baseline else ""),
             "|---|" + "---:|" * (len(versions) + (1 if args.baseline else 0))]
    for row, figures in result["rows"].items():
        cells = " | ".join(f"{v:,.0f}" for v in figures.values())
        change = f" {figures['this checkout'] / figures['baseline'] - 1:+.1%} |" if args.baseline else ""
        lines.append(f"| {row} | {cells} |{change}")
    if args.served:
        pair = result["rows"].get("pair", {}).get("this checkout")
        extra = f" ({result['served_pair'] / pair - 1:+.0%} on the pair in process)" if pair else ""
        lines += ["", f"Served, 1 worker x 1 thread, the worker process: {result['served_pair']:,.0f} per request of "
                  f"the pair{extra}."]
    table = "\n".join(["Instructions per request (callgrind, in process):", "", *lines])
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (args.out / f"instructions-{stamp}.json").write_text(json.dumps(result, indent=2))
    (args.out / f"instructions-{stamp}.md").write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
