#!/usr/bin/env python3
"""Issue 6's contract-runner figure: cases/s of `ocp-contract run` against `ocp-mock serve`, compared with plain
`st run` (schemathesis 4) on the same spec and server; the runner's own checks should add at most 25 %.

    .venv/bin/python bench/contract.py                               # 3 rounds x 2 tools, --max-examples 25 (~1 min)
    .venv/bin/python bench/contract.py --rounds 5 --max-examples 100 --seed 7
    git archive HEAD~1 contracts | tar -x -C /tmp/base && .venv/bin/python bench/contract.py --baseline /tmp/base
    make bench-contract ARGS="--rounds 1 --max-examples 10"          # a quick look

One `ocp-mock serve --port P` (its own process group on 127.0.0.1, stopped on exit, Ctrl-C, SIGTERM or failure;
with its access log on: one line per request). In every round each tool runs once (in a rotating order), the
mock's world reset (`POST /__mock/reset`) before each run:

  st     st --config-file <run dir>/st.toml run openapi.yaml --url BASE -H 'Authorization: Basic <admin:admin>'
            -n N --seed S -w 1 --phases examples,coverage,fuzzing,stateful --continue-on-failure
            --generation-with-security-parameters false --generation-database none --report junit
         st.toml holds what has no flag and the runner sets too: the stateful phase's N/4 scenarios (without
         security parameters) and positive_data_acceptance's accepted statuses (400 included).
  ocp    ocp-contract run --base-url BASE --max-examples N --seed S --quiet --report-json <run dir>/...
         (its defaults: the same four schemathesis phases and all 14 built-in checks, workers 1, plus its own phases
         and the OCP and spec checks on every response)
  ocp-base  (with --baseline DIR) the same command with PYTHONPATH=DIR: another version of contracts/ (DIR holds its
         contracts/ folder), for a before/after figure measured in the same rounds

Counted per run: **requests the server answered** (the access-log lines of the run, without `/__mock/...` and
schemathesis' `/schemathesis-probe` request; the same measure for both tools), next to each tool's own count (st's
summary "N generated", the runner's `totals.requests`); wall time from spawn to exit (start-up and spec loading
included, for both); the tool's user+system CPU; the mock's CPU. cases/s = requests / wall time. Overhead =
(st cases/s) / (ocp cases/s) - 1, per round, median over rounds (and best round against best round); the same
ratio of CPU per request, which depends less on what else the machine runs.

Writes bench/out/contract-<time>/{results.json,results.md,logs/} and prints the Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench  # noqa: E402  (bench/run.py: process groups, free ports, the Server helper, machine info)

SPEC = bench.ROOT / "openapi.yaml"
TARGET_OVERHEAD = 0.25
# One access-log line of ocp-mock: "2026-12-01 19:07:12,673 <traceId> POST /path 200 74.1ms"
_ACCESS = re.compile(r"^\S+ \S+ [0-9a-f]{16} [A-Z]+ (\S+) (\d{3}) ", re.M)
_NOT_CASES = ("/__mock/", "/schemathesis-probe")  # resets, health probes, schemathesis' reachability probe
_ST_GENERATED = re.compile(r"(\d+) generated")


def st_config(max_examples: int) -> str:
    """What plain `st run` gets through --config-file: the settings of the runner's schemathesis run that have no
    CLI flag (contracts/runner.py: STATEFUL_SHARE, POSITIVE_ACCEPTED)."""
    from contracts.runner import POSITIVE_ACCEPTED, STATEFUL_SHARE

    statuses = ", ".join(f'"{s}"' for s in POSITIVE_ACCEPTED)
    return (
        "# written by bench/contract.py: as ocp-contract configures its schemathesis run\n"
        f"[checks.positive_data_acceptance]\nexpected-statuses = [{statuses}]\n\n"
        f"[phases.stateful.generation]\nmax-examples = {max(1, max_examples // STATEFUL_SHARE)}\n"
        'with-security-parameters = false\ndatabase = "none"\n'
    )


def command(tool: str, base: str, max_examples: int, seed: int, run_dir: Path, label: str) -> list:
    if tool == "st":
        return [bench.VENV_BIN / "st", "--config-file", run_dir / "st.toml", "run", SPEC, "--url", base,
                "-H", f"Authorization: {bench.AUTH}", "-n", max_examples, "--seed", seed, "-w", 1,
                "--phases", "examples,coverage,fuzzing,stateful", "--continue-on-failure",
                "--generation-with-security-parameters", "false", "--generation-database", "none",
                "--report", "junit", "--report-dir", run_dir / "logs" / f"{label}-st-report", "--no-color"]
    return [bench.VENV_BIN / "ocp-contract", "run", "--base-url", base, "--max-examples", max_examples,
            "--seed", seed, "--quiet", "--report-json", run_dir / "logs" / f"{label}-{tool}.json"]


def tool_env(tool: str, baseline: Path | None) -> dict | None:
    return {**os.environ, "PYTHONPATH": str(baseline)} if tool == "ocp-base" else None


def contracts_source(tool: str, baseline: Path | None, run_dir: Path) -> str:
    """Where the tool's `contracts` package comes from (a baseline that does not shadow the installed one is an
    error, not a silent second run of the same code)."""
    argv = [bench.VENV_BIN / "python", "-c", "import contracts, os; print(os.path.dirname(contracts.__file__))"]
    found = subprocess.run([str(a) for a in argv], capture_output=True, text=True, cwd=run_dir,
                           env=tool_env(tool, baseline)).stdout.strip()  # fmt: skip
    if tool == "ocp-base" and not found.startswith(str(baseline)):
        raise SystemExit(f"--baseline {baseline}: ocp-contract still imports contracts from {found}; give the "
                         "directory that holds the other version's contracts/ folder")
    return found


ACCESS_LOG_LAG_S = 0.2  # longer than mock_server/accesslog.py's FLUSH_S


def served_since(access_log: Path, offset: int) -> tuple[int, dict, int]:
    """(requests that are cases, the others by path prefix, new offset) from the access log past OFFSET."""
    with open(access_log, "rb") as f:
        f.seek(offset)
        text = f.read().decode("utf-8", "replace")
        end = f.tell()
    cases, other = 0, {}
    for path, _status in _ACCESS.findall(text):
        skipped = next((p for p in _NOT_CASES if path.startswith(p)), None)
        if skipped:
            other[skipped] = other.get(skipped, 0) + 1
        else:
            cases += 1
    return cases, other, end


def tool_count(tool: str, out: str, report: Path) -> int | None:
    """The tool's own count: st's "N generated" (test cases), the runner's totals.requests (requests sent)."""
    if tool == "st":
        found = _ST_GENERATED.findall(out)
        return int(found[-1]) if found else None
    try:
        return json.loads(report.read_text())["totals"]["requests"]
    except (OSError, ValueError, KeyError):
        return None


def one_run(tool: str, mock: bench.Server, access_log: Path, args, run_dir: Path, label: str) -> dict:
    base = f"http://127.0.0.1:{mock.port}"
    bench.reset_world(mock.port, None)
    time.sleep(ACCESS_LOG_LAG_S)  # the reset's own line lands before the offset is taken
    offset = access_log.stat().st_size
    argv = command(tool, base, args.max_examples, args.seed, run_dir, label)
    out_path = run_dir / "logs" / f"{label}-{tool}.out"
    cpu0, mock_cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN), bench.tree_cpu_s(mock.proc.pid)
    t0 = time.perf_counter()
    # in the run directory: st keeps a .schemathesis/ cache in its working directory
    proc = bench.spawn(argv, out_path, env=tool_env(tool, args.baseline), cwd=run_dir)
    try:
        code = proc.wait(args.timeout)
    except subprocess.TimeoutExpired:
        bench.stop(proc)
        raise RuntimeError(f"{label} {tool} took over {args.timeout:.0f} s; see {out_path}") from None
    wall = time.perf_counter() - t0
    bench.stop(proc)  # reaps it and anything it left in its group
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    mock_cpu = bench.tree_cpu_s(mock.proc.pid) - mock_cpu0
    time.sleep(ACCESS_LOG_LAG_S)  # the served workers write their access lines in batches, within 50 ms
    cases, other, _ = served_since(access_log, offset)
    out = out_path.read_text(errors="replace")
    own = tool_count(tool, out, run_dir / "logs" / f"{label}-{tool}.json")
    if code not in (0, 1) or cases == 0:
        raise RuntimeError(f"{label} {tool} exited {code} after {cases} requests; see {out_path}:\n{out[-1500:]}")
    return {
        "tool": tool, "label": label, "argv": [str(a) for a in argv], "exit_code": code,
        "requests": cases, "other_requests": other, "tool_count": own,
        "wall_s": round(wall, 3), "cases_per_s": round(cases / wall, 1),
        "cpu_s": round(cpu, 2), "cpu_ms_per_request": round(cpu / cases * 1000, 3),
        "mock_cpu_s": round(mock_cpu, 2), "loadavg_1min_after": os.getloadavg()[0],
    }


def _median(values) -> float:
    return round(statistics.median(values), 4)


def summarise(runs: list[dict], tools: list[str]) -> dict:
    by_tool = {t: [r for r in runs if r["tool"] == t] for t in tools}
    table = {
        t: {
            "runs": len(rs),
            "requests": _median(r["requests"] for r in rs),
            "requests_range": [min(r["requests"] for r in rs), max(r["requests"] for r in rs)],
            "tool_count": _median(r["tool_count"] or 0 for r in rs),
            "wall_s": _median(r["wall_s"] for r in rs),
            "cases_per_s": _median(r["cases_per_s"] for r in rs),
            "cases_per_s_range": [min(r["cases_per_s"] for r in rs), max(r["cases_per_s"] for r in rs)],
            "cases_per_s_best": max(r["cases_per_s"] for r in rs),
            "cpu_s": _median(r["cpu_s"] for r in rs),
            "cpu_ms_per_request": _median(r["cpu_ms_per_request"] for r in rs),
            "mock_cpu_s": _median(r["mock_cpu_s"] for r in rs),
            "exit_codes": sorted({r["exit_code"] for r in rs}),
        }
        for t, rs in by_tool.items()
    }
    rounds = sorted({r["round"] for r in runs})
    ours = [t for t in tools if t != "st"]
    per_round = []
    for n in rounds:
        got = {r["tool"]: r for r in runs if r["round"] == n}
        st = got["st"]
        per_round.append({"round": n, **{
            t: {"overhead": round(st["cases_per_s"] / got[t]["cases_per_s"] - 1, 4),
                "cpu_overhead": round(got[t]["cpu_ms_per_request"] / st["cpu_ms_per_request"] - 1, 4)}
            for t in ours}})  # fmt: skip
    overhead = {t: _median(r[t]["overhead"] for r in per_round) for t in ours}
    return {
        "tools": table,
        "per_round": per_round,
        "overhead": overhead,
        "cpu_overhead": {t: _median(r[t]["cpu_overhead"] for r in per_round) for t in ours},
        # the least disturbed run of each (the machine is shared): best cases/s against best cases/s
        "best_overhead": {t: round(table["st"]["cases_per_s_best"] / table[t]["cases_per_s_best"] - 1, 4) for t in ours},
        "target": TARGET_OVERHEAD,
        "met": overhead["ocp"] <= TARGET_OVERHEAD,
    }


def markdown(result: dict) -> str:
    s, cfg, m = result["summary"], result["config"], result["machine"]
    names = {"st": "plain `st run`", "ocp": "`ocp-contract run`", "ocp-base": "`ocp-contract run`, --baseline"}
    lines = [
        f"### Contract runner vs plain st run: {result['started']}",
        "",
        f"`{result['command']}`: {len(s['per_round'])} round(s), `--max-examples {cfg['max_examples']}`, "
        f"`--seed {cfg['seed']}`, workers 1; {m['cpus_usable']} CPU(s) ({m['cpu_model']}), load average at start "
        f"{' '.join(m['loadavg_at_start'])}; {m['git']}; schemathesis {result['schemathesis']}.",
        "",
        "| tool | requests served | own count | wall s | cases/s (range) | tool CPU s | CPU ms/request | mock CPU s | exit |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for tool in result["tools"]:
        t = s["tools"][tool]
        lo, hi = t["requests_range"]
        reqs = f"{t['requests']:.0f}" if lo == hi else f"{t['requests']:.0f} ({lo} to {hi})"
        lines.append(
            f"| {names[tool]} | {reqs} | {t['tool_count']:.0f} | {t['wall_s']:.2f} | {t['cases_per_s']:.1f} "
            f"({t['cases_per_s_range'][0]:.1f} to {t['cases_per_s_range'][1]:.1f}) | {t['cpu_s']:.2f} | "
            f"{t['cpu_ms_per_request']:.2f} | {t['mock_cpu_s']:.2f} | {', '.join(map(str, t['exit_codes']))} |"
        )
    lines.append("")
    for tool in s["overhead"]:
        rounds = ", ".join(f"{r[tool]['overhead'] * 100:+.1f} %" for r in s["per_round"])
        cpu_rounds = ", ".join(f"{r[tool]['cpu_overhead'] * 100:+.1f} %" for r in s["per_round"])
        verdict = f"; target <= {s['target'] * 100:.0f} %: **{'met' if s['met'] else 'NOT met'}**" if tool == "ocp" else ""
        lines += [
            f"**Overhead of {names[tool]}** (st cases/s / its cases/s - 1, median of the rounds): "
            f"**{s['overhead'][tool] * 100:+.1f} %** (rounds: {rounds}){verdict}. Best round against best round: "
            f"{s['best_overhead'][tool] * 100:+.1f} %. CPU per request, it / st - 1 (median): "
            f"{s['cpu_overhead'][tool] * 100:+.1f} % (rounds: {cpu_rounds}).",
            "",
        ]
    lines += [
        "Medians over the rounds. *requests served*: requests the mock's access log shows for the run, without "
        "`/__mock/...` and schemathesis' `/schemathesis-probe`; *own count*: st's \"N generated\" test cases, the "
        "runner's `totals.requests`; *wall s*: spawn to exit, start-up included; *cases/s* = requests served / wall "
        "s; *tool CPU*: user + system CPU of the tool's process; *mock CPU*: of the mock's process tree meanwhile.",
    ]
    if "ocp-base" in result["tools"]:
        lines.append(f"`--baseline`: contracts/ from {result['contracts']['ocp-base']}.")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3, help="rounds; each tool runs once a round, in a rotating order")
    p.add_argument("--max-examples", type=int, default=25, help="schemathesis' max examples per operation (both tools)")
    p.add_argument("--seed", type=int, default=1, help="the seed of every run (both tools, every round)")
    p.add_argument("--warmup", type=int, default=1, help="unrecorded runs of each tool first (at --max-examples 5)")
    p.add_argument("--workers", type=int, default=2, help="workers of ocp-mock serve")
    p.add_argument("--timeout", type=float, default=600, help="seconds one tool run may take")
    p.add_argument("--baseline", type=Path, metavar="DIR",
                   help="also run ocp-contract with PYTHONPATH=DIR, a directory holding another version's contracts/")
    p.add_argument("--out", type=Path, default=bench.BENCH / "out")
    args = p.parse_args(argv)
    args.baseline = args.baseline.resolve() if args.baseline else None
    tools = ["st", "ocp"] + (["ocp-base"] if args.baseline else [])
    if args.rounds < 1 or args.max_examples < 1:
        raise SystemExit("--rounds and --max-examples must be at least 1")
    for exe in ("ocp-mock", "st", "ocp-contract"):
        if not (bench.VENV_BIN / exe).exists():
            raise SystemExit(f".venv/bin/{exe} is missing: make .venv/.installed-test")

    run_dir = args.out / f"contract-{time.strftime('%Y%m%d-%H%M%S')}"
    logs = run_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    (run_dir / "st.toml").write_text(st_config(args.max_examples))
    machine = bench.machine([])
    machine.pop("wrk", None)
    result = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": "python bench/contract.py" + "".join(f" {a}" for a in (sys.argv[1:] if argv is None else argv)),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "machine": machine,
        "schemathesis": bench._first_line([bench.VENV_BIN / "st", "--version"]).split()[-1],
        "st_toml": st_config(args.max_examples),
        "tools": tools,
        "contracts": {t: contracts_source(t, args.baseline, run_dir) for t in tools if t != "st"},
        "runs": [],
    }
    bench.log(f"machine: {machine}")
    port = bench.free_port()
    mock = bench.Server("mock", bench.mock_argv(port, args.workers, quiet=False), port=port)  # access log on
    access_log = logs / "mock.log"
    try:
        mock.start(logs)
        bench.log(f"ocp-mock serve answering on :{port} (access log {access_log})")
        for i in range(args.warmup):
            for tool in tools:
                warm = argparse.Namespace(**{**vars(args), "max_examples": 5})
                r = one_run(tool, mock, access_log, warm, run_dir, f"warmup{i + 1}")
                bench.log(f"warm-up {tool}: {r['requests']} requests in {r['wall_s']:.1f} s")
        for n in range(1, args.rounds + 1):
            for tool in tools[(n - 1) % len(tools):] + tools[:(n - 1) % len(tools)]:  # a rotating order
                r = one_run(tool, mock, access_log, args, run_dir, f"round{n}")
                r["round"] = n
                result["runs"].append(r)
                bench.log(f"round {n} {tool:8}: {r['requests']:5} requests (own count {r['tool_count']}) in "
                          f"{r['wall_s']:6.2f} s = {r['cases_per_s']:6.1f} cases/s, CPU {r['cpu_s']:.2f} s, "
                          f"exit {r['exit_code']}")
    finally:
        mock.stop()
        bench.stop_all()

    result["summary"] = summarise(result["runs"], tools)
    md = markdown(result)
    (run_dir / "results.json").write_text(json.dumps(result, indent=1))
    (run_dir / "results.md").write_text(md)
    print(md)
    bench.log(f"wrote {run_dir}/results.json and results.md")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        bench.stop_all()
        bench.log("interrupted; the mock stopped")
        sys.exit(130)
