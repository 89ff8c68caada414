#!/usr/bin/env python3
"""Issue 6's benchmark: `ocp-mock serve` against Prism (static) and a bare Flask app on the same WSGI server.

One command (installs what is missing: wrk with apt-get, Prism with npm into bench/.tools):

    python3 bench/run.py                      # ~13 minutes: 3 rounds x 10 s x 4 workloads x 5 servers + 60 s soak
    python3 bench/run.py --duration 300       # the 5-minute RSS soak variant
    python3 bench/run.py --rounds 1 --seconds 5 --duration 20 --startup-trials 1   # a quick look
    python3 bench/run.py --servers mock,prism,bare   # without the as-shipped pair (mock-log, prism-log)
    PYTHONPATH=/tmp/snap python3 bench/run.py  # the mock_server of another checkout (e.g. `git archive HEAD`)

What runs, on 127.0.0.1, each server in its own process group (killed on exit, Ctrl-C or failure):
  mock       `.venv/bin/ocp-mock serve --port P --quiet --workers W`            (granian, W workers, no access log)
  prism      `bench/.tools/node_modules/.bin/prism mock openapi.yaml -v warn`   (static examples, no request log)
  bare       `bench/serve_wsgi.py bare` - bench/bare_app.py: Flask returning constant bodies (the mock's own
             answers, captured at start-up), on granian with the same W workers and options as `ocp-mock serve`
  mock-log   `ocp-mock serve` as shipped: its access log on (a line per request)
  prism-log  `prism mock openapi.yaml` as shipped: its default "info" log (~4 lines per request); the issue's
             reference figure for Prism (~1.6k req/s) is this one
  mock-1t    (only when named in --servers) `ocp-mock serve --quiet --workers 1 --threads 1`: one process, one
             thread (README, --threads), the fastest setting on reads and refusals, reported with its own rows
  The two *-log servers write their logs to files under logs/; each is measured (bytes per request) and emptied
  after every wrk run. The pairs compared are matched: mock with prism (both quiet), mock-log with prism-log
  (both as shipped); bare has no log.

Workloads (wrk, C connections; servers alternate within every round, in a rotating order):
  retry-200  the success path. wrk -t C -c C (one connection per wrk thread, so requests on a connection are
             sequential); each connection owns one FAILED subtask (from GET /__mock/subtasks?status=FAILED,
             topped up with admin PUTs after every reset) and alternates PUT /__mock/subtasks/{id} FAILED
             (re-arm) with POST .../{id}/retry (200). req/s and latency cover BOTH requests (both are writes
             under SQLite's lock); retries/s is half. bare: the same two calls, constant answers. Prism: POST
             retry only (it has no admin API), its static 200 example.
  retry-400  POST retry of subtask 10002 (RUNNING): OCP's 400/20003, the read-only refusal path.
             Prism gets `Prefer: code=400, example=stateInvalid` (sent to every server, ignored by the others).
  not-found  POST retry of subtask 99999: 404/20000. Prism gets `Prefer: code=404`.
  get-task   GET /api/v2/tasks/instances/1000 (the task family's read: task 1000 with its subtasks).
The mock's world is reset (POST /__mock/reset) before every run.

Also measured: time from spawning `ocp-mock serve` to its first answered request (several cold starts), the
RSS (and PSS) of each server's whole process tree (peak, sampled every 0.5 s during each run), and a soak of
the mock alone (--duration seconds of a mix of all four calls) whose RSS must stay flat.

Writes bench/out/run-<time>/results.json, results.md and logs/, and copies them to bench/out/latest.{json,md}.
wrk shares the machine's cores with the servers: compare numbers within one run only.
"""

from __future__ import annotations

import argparse
import atexit
import base64
import http.client
import json
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
TOOLS = BENCH / ".tools"
LUA = BENCH / "lua"
VENV_BIN = ROOT / ".venv" / "bin"
PRISM_BIN = TOOLS / "node_modules" / ".bin" / "prism"
PRISM_PACKAGE = "@stoplight/prism-cli@5"
AUTH = "Basic " + base64.b64encode(b"admin:admin").decode()
REARM_BODY = b'{"status":"FAILED","operation":"EXECUTE"}'


def retry_path(task_id: int, subtask_id: int) -> str:
    return f"/api/v2/tasks/instances/{task_id}/subtasks/{subtask_id}/retry"


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- processes: every one we start is in its own process group, and all of them are ended on the way out ----
_LIVE: list[subprocess.Popen] = []


def spawn(argv: list, log_path: Path, env: dict | None = None, cwd: Path = ROOT) -> subprocess.Popen:
    with open(log_path, "ab") as out:
        proc = subprocess.Popen([str(a) for a in argv], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    _LIVE.append(proc)
    return proc


def stop(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM to the process group, SIGKILL after GRACE seconds, then SIGKILL to anything left in the group."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
    try:  # workers orphaned by a leader that died first
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if proc in _LIVE:
        _LIVE.remove(proc)


def stop_all() -> None:
    for proc in list(_LIVE):
        stop(proc, grace=5.0)


def _on_signal(signum, _frame):
    raise SystemExit(128 + signum)


atexit.register(stop_all)
for _sig in (signal.SIGTERM, signal.SIGHUP):
    signal.signal(_sig, _on_signal)
signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C ends the run even if started with SIGINT ignored


# -- memory of a process tree ----------------------------------------------------------------------------
def tree_pids(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def _kb(path: str, key: str) -> int:
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_processes(root: int) -> list[dict]:
    """Each process of the tree: pid, command (short), RSS and PSS in MB."""
    out = []
    for pid in tree_pids(root):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        out.append({"pid": pid, "cmd": cmd[:120], "rss_mb": round(_kb(f"/proc/{pid}/status", "VmRSS:") / 1024, 1),
                    "pss_mb": round(_kb(f"/proc/{pid}/smaps_rollup", "Pss:") / 1024, 1),
                    "threads": _kb(f"/proc/{pid}/status", "Threads:")})
    return out


_TICK = os.sysconf("SC_CLK_TCK")


def tree_cpu_s(root: int) -> float:
    """User + system CPU seconds used so far by every process of the tree (all their threads, dead ones too).
    Unlike req/s, CPU per request hardly depends on what else the machine is running."""
    total = 0
    for pid in tree_pids(root):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            continue
    return total / _TICK


def tree_memory_mb(root: int) -> tuple[float, float, int]:
    """(RSS summed over the tree, PSS summed over the tree, number of processes), in MB."""
    pids = tree_pids(root)
    rss = sum(_kb(f"/proc/{p}/status", "VmRSS:") for p in pids)
    pss = sum(_kb(f"/proc/{p}/smaps_rollup", "Pss:") for p in pids)
    return rss / 1024, pss / 1024, len(pids)


class MemorySampler:
    """Samples a tree's memory every INTERVAL seconds on a thread; keeps the timeline."""

    def __init__(self, root: int, interval: float = 0.5):
        self.root, self.interval = root, interval
        self.samples: list[tuple[float, float, float, int]] = []  # (t, rss, pss, processes)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._t0 = time.monotonic()

    def _run(self):
        while not self._stop.is_set():
            rss, pss, n = tree_memory_mb(self.root)
            self.samples.append((round(time.monotonic() - self._t0, 2), round(rss, 1), round(pss, 1), n))
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def peak(self) -> tuple[float, float]:
        if not self.samples:
            return 0.0, 0.0
        return max(s[1] for s in self.samples), max(s[2] for s in self.samples)


# -- HTTP ---------------------------------------------------------------------------------------------------
def call(port: int, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
         timeout: float = 10.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- servers ------------------------------------------------------------------------------------------------
@dataclass
class Server:
    name: str
    argv: list
    env: dict | None = None
    port: int = 0
    proc: subprocess.Popen | None = None
    startup_s: float | None = None

    def start(self, logs: Path, timeout: float = 90.0) -> float:
        """Spawns the server and returns the seconds until it answered its first request (any HTTP answer to
        an authenticated POST retry)."""
        t0 = time.perf_counter()
        self.proc = spawn(self.argv, logs / f"{self.name}.log", self.env)
        probe = retry_path(1000, 10002)
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with code {self.proc.returncode} before answering; "
                                   f"see {logs / (self.name + '.log')}")
            try:
                call(self.port, "POST", probe, b"", {"Authorization": AUTH}, timeout=2)
                self.startup_s = time.perf_counter() - t0
                return self.startup_s
            except (OSError, http.client.HTTPException):
                if time.perf_counter() - t0 > timeout:
                    raise RuntimeError(f"{self.name} did not answer within {timeout:.0f} s") from None
                time.sleep(0.005)

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)
            self.proc = None

    def memory(self) -> tuple[float, float, int]:
        return tree_memory_mb(self.proc.pid)


SERVERS = ("mock", "prism", "bare", "mock-log", "prism-log")
# Run only when named: the mock with one process and one thread (README, --threads).
FAST = "mock-1t"
FAST_ARGS = ("--threads", "1")
# The servers that write a log line per request: their log is measured (bytes per request) and emptied after
# every wrk run, so a run's logs stay small (Prism's default log is ~200 bytes a request, the mock's ~90).
LOGGING = ("mock-log", "prism-log")


def is_prism(name: str) -> bool:
    return name.startswith("prism")


def is_mock(name: str) -> bool:
    return name.startswith("mock")


def mock_argv(port: int, workers: int, quiet: bool = True, extra=()) -> list:
    """`ocp-mock serve` on PORT with WORKERS workers (QUIET: no access log), then EXTRA options."""
    return [VENV_BIN / "ocp-mock", "serve", "--port", port, *(["--quiet"] if quiet else []), "--workers", workers,
            *extra]


def make_servers(names: list[str], workers: int, bodies_file: Path, mock_args: list[str] = ()) -> dict[str, Server]:
    servers = {}
    for name in names:
        port = free_port()
        if name in ("mock", "mock-log"):
            # mock-log: as shipped, with its access log (a line per request); mock: --quiet
            servers[name] = Server(name, mock_argv(port, workers, quiet=name == "mock", extra=mock_args), port=port)
        elif name == FAST:
            servers[name] = Server(name, mock_argv(port, 1, extra=(*FAST_ARGS, *mock_args)), port=port)
        elif name in ("prism", "prism-log"):
            # prism: -v warn, no per-request log lines, as the mock runs with --quiet. prism-log: as shipped, its
            # default "info" level (~4 lines per request), the Prism that the reference figure measured.
            quiet = ["-v", "warn"] if name == "prism" else []
            argv = [PRISM_BIN, "mock", ROOT / "openapi.yaml", "--host", "127.0.0.1", "--port", port, *quiet]
            servers[name] = Server(name, argv, port=port)
        elif name == "bare":
            env = {**os.environ, "BENCH_BARE_BODIES": str(bodies_file)}
            argv = [VENV_BIN / "python", BENCH / "serve_wsgi.py", "bare", "--port", port, "--workers", workers]
            servers[name] = Server(name, argv, env=env, port=port)
        else:
            raise SystemExit(f"unknown server {name!r}; known: {', '.join((*SERVERS, FAST))}")
    return servers


# -- the mock's world between runs --------------------------------------------------------------------------
@dataclass
class World:
    """Which subtasks the retry-200 workload owns, and the admin PUTs that make enough of them FAILED."""

    arm_sequence: list[int] = field(default_factory=list)  # PUT to FAILED after every reset, in this order
    owned: list[tuple[int, int]] = field(default_factory=list)  # (subtask id, task id), one per connection


def reset_world(port: int, world: World | None) -> None:
    status, body = call(port, "POST", "/__mock/reset", b"")
    if status != 200:
        raise RuntimeError(f"POST /__mock/reset answered {status}: {body[:200]!r}")
    for sid in world.arm_sequence if world else ():
        status, body = call(port, "PUT", f"/__mock/subtasks/{sid}", REARM_BODY)
        if status != 200:
            raise RuntimeError(f"re-arming subtask {sid} answered {status}: {body[:200]!r}")


REFUSED_ID, NOT_FOUND_ID = 10002, 99999  # the retry-400 and not-found workloads' subtasks: never owned or armed


def failed_subtasks(port: int) -> list[tuple[int, int]]:
    status, body = call(port, "GET", "/__mock/subtasks?status=FAILED")
    if status != 200:
        raise RuntimeError(f"GET /__mock/subtasks?status=FAILED answered {status}")
    return [(s["id"], s["taskId"]) for s in json.loads(body)["data"]
            if s.get("operation") != "ROLLBACK" and s["id"] not in (REFUSED_ID, NOT_FOUND_ID)]


def plan_world(port: int, needed: int) -> World:
    """After a reset: the FAILED subtasks, topped up to NEEDED by forcing others to FAILED through the admin API
    (the ones whose upstreams allow it; the others are refused with 409 and skipped)."""
    reset_world(port, None)
    world = World()
    owned = failed_subtasks(port)
    if len(owned) < needed:
        _, body = call(port, "GET", "/__mock/subtasks")
        for s in json.loads(body)["data"]:
            if len(owned) >= needed:
                break
            if s["status"] == "FAILED" or s["id"] in (REFUSED_ID, NOT_FOUND_ID):
                continue
            status, _ = call(port, "PUT", f"/__mock/subtasks/{s['id']}", REARM_BODY)
            if status == 200:
                world.arm_sequence.append(s["id"])
                owned = failed_subtasks(port)
    world.owned = owned[:needed]
    if len(world.owned) < needed:
        log(f"warning: only {len(world.owned)} retryable subtasks for {needed} connections; connections share "
            "subtasks, so some retries will be 400s")
    return world


def capture_bodies(port: int, world: World, path: Path) -> dict:
    """The mock's own answers, for the bare app's constants (same bytes, same shapes)."""
    reset_world(port, world)
    sid, tid = world.owned[0]
    bodies = {
        "put_200": call(port, "PUT", f"/__mock/subtasks/{sid}", REARM_BODY)[1],
        "retry_200": call(port, "POST", retry_path(tid, sid), b"", {"Authorization": AUTH})[1],
        "retry_400": call(port, "POST", retry_path(1000, REFUSED_ID), b"", {"Authorization": AUTH})[1],
        "retry_404": call(port, "POST", retry_path(1000, NOT_FOUND_ID), b"", {"Authorization": AUTH})[1],
        "health": call(port, "GET", "/__mock/health")[1],
        "task_200": call(port, "GET", "/api/v2/tasks/instances/1000", None, {"Authorization": AUTH})[1],
    }
    reset_world(port, None)
    for key, want in (("put_200", 200), ("retry_200", 200), ("retry_400", 400), ("retry_404", 404), ("task_200", 200)):
        if json.loads(bodies[key]).get("status") != want:
            raise RuntimeError(f"captured {key} is not a {want}: {bodies[key][:200]!r}")
    text = {k: v.decode() for k, v in bodies.items()}
    path.write_text(json.dumps(text, indent=1))
    return {k: len(v) for k, v in bodies.items()}


# -- workloads and wrk ---------------------------------------------------------------------------------------
@dataclass
class Workload:
    name: str
    script: str  # for the mock and bare
    path: str  # URL path wrk is given (the scripts that own subtasks build their own)
    prefer: str
    expected: set
    one_connection_per_thread: bool
    method: str = "POST"
    kind: str = "retry"  # how post.lua labels its counts
    prism_script: str = "post.lua"
    prism_expected: set = field(default_factory=set)
    needs_world: bool = False

    def script_for(self, server: str) -> str:
        return self.prism_script if is_prism(server) else self.script

    def expected_for(self, server: str) -> set:
        return (self.prism_expected or self.expected) if is_prism(server) else self.expected


WORKLOADS = {
    "retry-200": Workload("retry-200", "pair.lua", retry_path(1000, 10001), "code=200", {"put:200", "retry:200"},
                          one_connection_per_thread=True, prism_expected={"retry:200"}, needs_world=True),
    "retry-400": Workload("retry-400", "post.lua", retry_path(1000, 10002), "code=400, example=stateInvalid",
                          {"retry:400"}, one_connection_per_thread=False),
    "not-found": Workload("not-found", "post.lua", retry_path(1000, 99999), "code=404", {"retry:404"},
                          one_connection_per_thread=False),
    "get-task": Workload("get-task", "post.lua", "/api/v2/tasks/instances/1000", "code=200", {"get:200"},
                         one_connection_per_thread=False, method="GET", kind="get"),
}
SOAK = Workload("soak", "mixed.lua", retry_path(1000, 10002), "", {"put:200", "retry:200", "refused:400",
                "missing:404"}, one_connection_per_thread=True, needs_world=True)


_WRK_JSON = re.compile(r"^BENCH_JSON (\{.*\})\s*$", re.M)


def run_wrk(server: Server, workload: Workload, seconds: float, connections: int, threads: int,
            world: World | None, logs: Path, label: str, sample_every: float = 0.5) -> dict:
    threads = connections if workload.one_connection_per_thread else min(threads, connections)
    env = {**os.environ, "BENCH_LUA_DIR": str(LUA), "BENCH_PREFER": workload.prefer if is_prism(server.name) else "", "BENCH_METHOD": workload.method,
           "BENCH_KIND": workload.kind,
           "BENCH_SUBTASKS": ",".join(f"{s}:{t}" for s, t in (world.owned if world else []))}
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency", "--timeout", "10s",
            "-s", str(LUA / workload.script_for(server.name)), f"http://127.0.0.1:{server.port}{workload.path}"]
    cpu0 = tree_cpu_s(server.proc.pid)
    with MemorySampler(server.proc.pid, sample_every) as sampler:
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            output, _ = proc.communicate(timeout=seconds + 60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    cpu_s = tree_cpu_s(server.proc.pid) - cpu0
    with open(logs / "wrk.log", "a") as f:
        f.write(f"==== {label}: {' '.join(argv)}\n{output}\n")
    match = _WRK_JSON.search(output)
    if proc.returncode != 0 or not match:
        raise RuntimeError(f"wrk failed on {label} (exit {proc.returncode}):\n{output[-2000:]}")
    data = json.loads(match.group(1))
    seconds_run = data["duration_us"] / 1e6
    lat = data["latency_us"]
    counts = data["counts"]
    expected = workload.expected_for(server.name)
    rss_peak, pss_peak = sampler.peak()
    return {
        "workload": workload.name, "server": server.name, "label": label,
        "wrk": {"threads": threads, "connections": connections, "seconds": seconds, "script": workload.script_for(server.name)},
        "requests": data["requests"],
        "rps": round(data["requests"] / seconds_run, 1),
        "retries_200_per_s": round(counts.get("retry:200", 0) / seconds_run, 1),
        "p50_ms": lat["p50"] / 1000, "p90_ms": lat["p90"] / 1000, "p99_ms": lat["p99"] / 1000,
        "p999_ms": lat["p999"] / 1000, "max_ms": lat["max"] / 1000, "mean_ms": round(lat["mean"] / 1000, 3),
        "socket_errors": sum(data["errors"][k] for k in ("connect", "read", "write", "timeout")),
        "errors": data["errors"],
        "counts": counts,
        "unexpected": sum(v for k, v in counts.items() if k not in expected),
        "bytes_per_response": round(data["bytes"] / max(1, data["requests"]), 1),
        "server_cpu_s": round(cpu_s, 2),
        "loadavg_1min_after": os.getloadavg()[0],
        "cpu_us_per_req": round(cpu_s / max(1, data["requests"]) * 1e6, 1),
        "rss_peak_mb": rss_peak, "pss_peak_mb": pss_peak,
        "memory_timeline": sampler.samples if workload is SOAK else None,
    }


# -- install what is missing ----------------------------------------------------------------------------------
def ensure_tools(servers: list[str], install: bool) -> None:
    def need(what: str, how: str):
        raise SystemExit(f"{what} is missing; install it ({how}) or run without --no-install")

    if not (VENV_BIN / "ocp-mock").exists():
        if not install:
            need(".venv with ocp-mock", "make serve or make .venv/.installed")
        log("creating .venv (make .venv/.installed)")
        subprocess.run(["make", "-C", str(ROOT), ".venv/.installed"], check=True)
    if shutil.which("wrk") is None:
        if not install:
            need("wrk", "apt-get install -y wrk")
        sudo = [] if os.geteuid() == 0 else (["sudo", "-n"] if shutil.which("sudo") else None)
        if sudo is None:
            raise SystemExit("wrk is missing and this user cannot run apt-get; install it: apt-get install -y wrk")
        log("installing wrk with apt-get")
        subprocess.run(sudo + ["apt-get", "update", "-qq"], check=True)
        subprocess.run(sudo + ["apt-get", "install", "-y", "-qq", "wrk"], check=True,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    if any(map(is_prism, servers)) and not PRISM_BIN.exists():
        if not install:
            need("Prism", f"npm install --prefix bench/.tools {PRISM_PACKAGE}")
        if shutil.which("npm") is None:
            raise SystemExit("Prism needs npm (Node.js); install nodejs/npm or run with --servers mock,bare")
        log(f"installing {PRISM_PACKAGE} into {TOOLS}")
        TOOLS.mkdir(parents=True, exist_ok=True)
        subprocess.run(["npm", "install", "--prefix", str(TOOLS), "--no-audit", "--no-fund", "--loglevel", "error",
                        PRISM_PACKAGE], check=True)


def _first_line(argv: list) -> str:
    try:
        out = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=30)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "?"


def machine(servers: list[str]) -> dict:
    model = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    versions = _first_line([VENV_BIN / "python", "-c",
                            "import importlib.metadata as m, sys; print(sys.version.split()[0], *[f'{p}={m.version(p)}' "
                            "for p in ('granian', 'flask', 'werkzeug', 'orjson')])"]).split()
    info = {
        "mock_server": _first_line([VENV_BIN / "python", "-c", "import mock_server, os; print(os.path.dirname(mock_server.__file__))"]),
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "memory_gb": round(_kb("/proc/meminfo", "MemTotal:") / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": versions[0] if versions else "?",
        "packages": " ".join(versions[1:]),
        "wrk": _first_line(["wrk", "-v"]).split(" [")[0],
    }
    try:
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip()
        info["git"] = head + (" + uncommitted changes" if dirty else "")
        if not info["mock_server"].startswith(str(ROOT)):
            info["git"] = f"mock_server from {info['mock_server']} (PYTHONPATH); work tree at {info['git']}"
    except OSError:
        info["git"] = "?"
    info["loadavg_at_start"] = open("/proc/loadavg").read().split()[:3]
    if any(map(is_prism, servers)):
        info["prism"] = _first_line([PRISM_BIN, "--version"])
        info["node"] = _first_line(["node", "--version"])
    return info


# -- summary --------------------------------------------------------------------------------------------------
def summarise(runs: list[dict], workloads: list[str], servers: list[str]) -> dict:
    table = {}
    for wl in workloads:
        for srv in servers:
            rs = [r for r in runs if r["workload"] == wl and r["server"] == srv]
            if not rs:
                continue
            table[f"{wl}/{srv}"] = {
                "workload": wl, "server": srv, "rounds": len(rs),
                "rps_median": round(statistics.median(r["rps"] for r in rs), 1),
                "rps_min": min(r["rps"] for r in rs), "rps_max": max(r["rps"] for r in rs),
                "retries_200_per_s_median": round(statistics.median(r["retries_200_per_s"] for r in rs), 1),
                "p50_ms_median": round(statistics.median(r["p50_ms"] for r in rs), 2),
                "p99_ms_median": round(statistics.median(r["p99_ms"] for r in rs), 2),
                "p99_ms_max": round(max(r["p99_ms"] for r in rs), 2),
                "socket_errors": sum(r["socket_errors"] for r in rs),
                "unexpected": sum(r["unexpected"] for r in rs),
                "requests": sum(r["requests"] for r in rs),
                "bytes_per_response": rs[0]["bytes_per_response"],
                "cpu_us_per_req_median": round(statistics.median(r["cpu_us_per_req"] for r in rs), 1),
                "rss_peak_mb": max(r["rss_peak_mb"] for r in rs),
                "pss_peak_mb": max(r["pss_peak_mb"] for r in rs),
            }
            if "log_bytes_per_req" in rs[0]:
                table[f"{wl}/{srv}"]["log_bytes_per_req"] = round(statistics.median(r["log_bytes_per_req"] for r in rs), 1)
    return table


def soak_verdict(timeline: list, warmup_s: float = 10.0, window_s: float = 10.0) -> dict:
    if not timeline:
        return {}
    end = timeline[-1][0]
    warm = [s for s in timeline if s[0] >= min(warmup_s, end / 3)]
    first = [s[1] for s in warm if s[0] < warm[0][0] + window_s] or [warm[0][1]]
    last = [s[1] for s in warm if s[0] > end - window_s] or [warm[-1][1]]
    start_mb, end_mb = statistics.median(first), statistics.median(last)
    growth = end_mb - start_mb
    minutes = max((end - warm[0][0]) / 60, 1e-9)
    return {"rss_start_mb": round(start_mb, 1), "rss_end_mb": round(end_mb, 1), "rss_max_mb": max(s[1] for s in timeline),
            "pss_max_mb": max(s[2] for s in timeline), "growth_mb": round(growth, 1),
            "growth_mb_per_min": round(growth / minutes, 2),
            "flat": growth <= max(2.0, 0.02 * start_mb)}


def evaluate(result: dict) -> list[dict]:
    t = result["table"]
    targets = []

    def row(name, value, met):
        targets.append({"target": name, "value": value, "met": met})

    def ratio_row(name, ours, theirs, floor, percent=False):
        """A row for OURS/THEIRS req/s against FLOOR, when both servers ran."""
        if ours and theirs:
            ratio = ours["rps_median"] / theirs["rps_median"]
            shown = f"{ratio:.0%}" if percent else f"{ratio:.2f}x"
            row(name, f"{shown} ({ours['rps_median']:.0f} vs {theirs['rps_median']:.0f})", ratio >= floor)

    for wl in result["workloads"]:
        mock, prism, bare, fast = (t.get(f"{wl}/{s}") for s in ("mock", "prism", "bare", FAST))
        ratio_row(f"{wl}: >= 5x Prism static req/s", mock, prism, 5)
        ratio_row(f"{wl}: >= 5x Prism static req/s, both as shipped (request logs on: mock-log / prism-log)",
                  t.get(f"{wl}/mock-log"), t.get(f"{wl}/prism-log"), 5)
        ratio_row(f"{wl}: >= 80% of bare Flask on granian", mock, bare, 0.8, percent=True)
        ratio_row(f"{wl}: >= 5x Prism static req/s, the mock with one process and one thread ({FAST}: --workers 1 --threads 1)",
                  fast, prism, 5)
        ratio_row(f"{wl}: >= 80% of bare Flask on granian, {FAST}", fast, bare, 0.8, percent=True)
        if mock:
            row(f"{wl}: p99 <= 25 ms at {result['config']['connections']} connections",
                f"{mock['p99_ms_median']:.1f} ms (median of rounds; worst {mock['p99_ms_max']:.1f})",
                mock["p99_ms_median"] <= 25)
    mem = [v["rss_peak_mb"] for k, v in t.items() if is_mock(v["server"])]
    soak = result.get("soak") or {}
    if soak.get("verdict"):
        mem.append(soak["verdict"]["rss_max_mb"])
    if mem:
        row("mock total RSS <= 150 MB (whole tree, peak)", f"{max(mem):.0f} MB", max(mem) <= 150)
    if soak.get("verdict"):
        v = soak["verdict"]
        row(f"mock RSS flat over {soak['seconds']} s soak",
            f"{v['rss_start_mb']:.0f} -> {v['rss_end_mb']:.0f} MB ({v['growth_mb']:+.1f} MB, {v['growth_mb_per_min']:+.2f} MB/min)",
            v["flat"])
    starts = result.get("startup", {}).get("mock") or []
    if starts:
        row("ocp-mock serve answers within 1.5 s of start",
            f"median {statistics.median(starts):.2f} s, worst {max(starts):.2f} s ({len(starts)} starts)",
            max(starts) <= 1.5)
    return targets


def markdown(result: dict) -> str:
    m, c = result["machine"], result["config"]
    lines = [
        f"# Benchmark run {result['started']}",
        "",
        f"Machine: {m['cpus']} CPUs ({m['cpus_usable']} usable), {m['cpu_model']}, {m['memory_gb']} GB, Linux {m['kernel']}; "
        f"Python {m['python']} ({m['packages']}); {m['wrk']}; tree {m.get('git')}; load average at start {' '.join(m.get('loadavg_at_start', []))}"
        + (f"; Prism {m.get('prism')} on Node {m.get('node')}" if "prism" in m else "") + ".",
        "",
        f"Command: `{result['command']}`",
        "",
        f"{c['rounds']} rounds x {c['seconds']} s per server and workload, servers alternating; {c['connections']} connections; "
        f"wrk -t{c['threads']} (-t{c['connections']} for retry-200); {c['workers']} granian workers for mock and bare. "
        "wrk shares the cores with the servers: compare within this run only.",
        "",
        "| workload | server | req/s (median) | min-max | p50 ms | p99 ms (median / worst) | socket errors | unexpected status | bytes/resp | server CPU µs/req | RSS MB (tree, peak) | PSS MB | log bytes/req |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for v in result["table"].values():
        rps = f"{v['rps_median']:.0f}"
        if v["workload"] == "retry-200" and not is_prism(v["server"]):
            rps += f" ({v['retries_200_per_s_median']:.0f} retries/s)"
        lines.append(
            f"| {v['workload']} | {v['server']} | {rps} | {v['rps_min']:.0f}-{v['rps_max']:.0f} | {v['p50_ms_median']:.1f} | "
            f"{v['p99_ms_median']:.1f} / {v['p99_ms_max']:.1f} | {v['socket_errors']} | {v['unexpected']} / {v['requests']} | "
            f"{v['bytes_per_response']:.0f} | {v['cpu_us_per_req_median']:.0f} | {v['rss_peak_mb']:.0f} | {v['pss_peak_mb']:.0f} | "
            + (f"{v['log_bytes_per_req']:.0f} |" if "log_bytes_per_req" in v else "- |"))
    lines += ["", "| workload | mock / Prism req/s (both quiet) | mock-log / prism-log req/s (both as shipped) | mock / bare Flask req/s | bare / mock server CPU per request | mock p99 ms |",
              "|---|---:|---:|---:|---:|---:|"]
    for wl in result["workloads"]:
        t = result["table"]
        mock, prism, bare = (t.get(f"{wl}/{s}") for s in ("mock", "prism", "bare"))
        if not mock:
            continue
        shipped, prism_shipped = t.get(f"{wl}/mock-log"), t.get(f"{wl}/prism-log")
        lines.append(f"| {wl} | " + (f"{mock['rps_median'] / prism['rps_median']:.2f}x" if prism else "-") + " | "
                     + (f"{shipped['rps_median'] / prism_shipped['rps_median']:.2f}x" if shipped and prism_shipped else "-")
                     + " | " + (f"{mock['rps_median'] / bare['rps_median']:.0%}" if bare else "-") + " | "
                     + (f"{bare['cpu_us_per_req_median'] / mock['cpu_us_per_req_median']:.0%}" if bare else "-")
                     + f" | {mock['p99_ms_median']:.1f} |")
    st = result.get("startup", {})
    if st:
        lines += ["", "Time from spawn to first answered request: " + "; ".join(
            f"{k} " + ", ".join(f"{x:.2f}" for x in v) + " s" for k, v in st.items() if v) + "."]
    soak = result.get("soak") or {}
    if soak.get("verdict"):
        v, r = soak["verdict"], soak["run"]
        lines += ["", f"Soak ({soak['seconds']} s, mock alone, mixed PUT/200/400/404 load, {r['rps']:.0f} req/s, p99 {r['p99_ms']:.1f} ms, "
                  f"{r['unexpected']} unexpected of {r['requests']}): RSS {v['rss_start_mb']} -> {v['rss_end_mb']} MB "
                  f"(growth {v['growth_mb']:+.1f} MB, {v['growth_mb_per_min']:+.2f} MB/min, max {v['rss_max_mb']} MB, PSS max {v['pss_max_mb']} MB): "
                  + ("flat" if v["flat"] else "NOT flat") + "."]
    lines += ["", "| target | figure | met |", "|---|---|---|"]
    for t in result["targets"]:
        lines.append(f"| {t['target']} | {t['value']} | {'met' if t['met'] else 'NOT met'} |")
    return "\n".join(lines) + "\n"


# -- main -----------------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3, help="rounds; every server runs every workload once per round")
    p.add_argument("--seconds", type=int, default=10, help="length of one wrk run")
    p.add_argument("--warmup", type=int, default=3, help="unrecorded wrk run per server and workload before round 1")
    p.add_argument("--duration", type=int, default=60,
                   help="seconds of the mock's RSS soak (0: skip); 300 for the 5-minute variant")
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--threads", type=int, default=2, help="wrk threads for retry-400/not-found")
    p.add_argument("--workers", type=int, default=2, help="granian workers of mock and bare")
    p.add_argument("--servers", default=",".join(SERVERS),
                   help=f"mock and prism run quiet; mock-log and prism-log as shipped, a log line per request; {FAST} only when named")
    p.add_argument("--workloads", default=",".join(WORKLOADS))
    p.add_argument("--startup-trials", type=int, default=3, help="extra cold starts of ocp-mock serve to time")
    p.add_argument("--out", type=Path, default=BENCH / "out")
    p.add_argument("--no-install", action="store_true", help="fail instead of installing wrk/Prism")
    p.add_argument("--mock-args", default="", help="extra arguments for ocp-mock serve, e.g. '--clock-speed 0'")
    args = p.parse_args(argv)

    servers_wanted = [s.strip() for s in args.servers.split(",") if s.strip()]
    workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    for w in workloads:
        if w not in WORKLOADS:
            raise SystemExit(f"unknown workload {w!r}; known: {', '.join(WORKLOADS)}")
    if "mock" not in servers_wanted:
        raise SystemExit("--servers must include mock")
    ensure_tools(servers_wanted, install=not args.no_install)

    started = time.strftime("%Y-%m-%d %H:%M:%S")
    run_dir = args.out / f"run-{time.strftime('%Y%m%d-%H%M%S')}"
    logs = run_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    result = {
        "started": started,
        "command": "python3 bench/run.py" + ("" if argv is None and len(sys.argv) == 1 else " " + " ".join(argv if argv is not None else sys.argv[1:])),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "machine": machine(servers_wanted),
        "workloads": workloads,
        "servers": servers_wanted,
        "startup": {},
        "runs": [],
    }
    log(f"machine: {result['machine']}")
    servers = make_servers(servers_wanted, args.workers, run_dir / "bare_bodies.json", shlex.split(args.mock_args))

    try:
        # 1. cold starts of the mock: spawn -> first answered request
        starts = []
        for i in range(args.startup_trials):
            trial = make_servers(["mock"], args.workers, run_dir / "unused.json", shlex.split(args.mock_args))["mock"]
            trial.name = f"mock-start{i + 1}"
            starts.append(round(trial.start(logs), 3))
            trial.stop()
            log(f"ocp-mock serve start {i + 1}: first answer after {starts[-1]:.2f} s")

        # 2. the servers: mock first (the bare app serves the mock's own bodies)
        mock = servers["mock"]
        starts.append(round(mock.start(logs), 3))
        result["startup"]["mock"] = starts
        world = plan_world(mock.port, args.connections)
        log(f"retry-200 owns {len(world.owned)} FAILED subtasks ({len(world.arm_sequence)} forced to FAILED after each reset)")
        result["bodies"] = capture_bodies(mock.port, world, run_dir / "bare_bodies.json")
        result["owned_subtasks"] = world.owned
        for name, srv in servers.items():
            if name != "mock":
                result["startup"][name] = [round(srv.start(logs), 3)]
            log(f"{name} answering on :{srv.port} (first answer after {srv.startup_s:.2f} s)")
        result["idle_memory"] = {n: tree_processes(s.proc.pid) for n, s in servers.items()}

        order = list(servers)

        def one(server: Server, wl: Workload, seconds: float, label: str) -> dict:
            if is_mock(server.name):
                reset_world(server.port, world if wl.needs_world else None)
            log_file = logs / f"{server.name}.log"
            logged = log_file.stat().st_size if server.name in LOGGING else 0
            r = run_wrk(server, wl, seconds, args.connections, args.threads, world, logs, label)
            if server.name in LOGGING:  # the server appends (O_APPEND): emptying the file is safe
                r["log_bytes_per_req"] = round((log_file.stat().st_size - logged) / max(1, r["requests"]), 1)
                os.truncate(log_file, 0)
            return r

        # 3. warm-up, then the rounds, servers alternating in a rotating order
        if args.warmup > 0:
            for wl in workloads:
                for name in order:
                    one(servers[name], WORKLOADS[wl], args.warmup, f"warmup {wl} {name}")
            log("warm-up done")
        for rnd in range(args.rounds):
            rotated = order[rnd % len(order):] + order[:rnd % len(order)]
            for wl in workloads:
                for name in rotated:
                    r = one(servers[name], WORKLOADS[wl], args.seconds, f"round {rnd + 1} {wl} {name}")
                    r["round"] = rnd + 1
                    result["runs"].append(r)
                    log(f"round {rnd + 1} {wl:9} {name:5}: {r['rps']:8.0f} req/s  p50 {r['p50_ms']:6.2f} ms  "
                        f"p99 {r['p99_ms']:7.2f} ms  unexpected {r['unexpected']}  errors {r['socket_errors']}  "
                        f"RSS {r['rss_peak_mb']:.0f} MB")

        result["memory_after_rounds"] = {n: tree_processes(s.proc.pid) for n, s in servers.items()}

        # 4. the soak: the mock alone; the others are stopped so they do not compete
        if args.duration > 0:
            for name, srv in servers.items():
                if name != "mock":
                    srv.stop()
            log(f"soak: {args.duration:.0f} s of mixed load on the mock alone")
            r = one(mock, SOAK, args.duration, "soak")
            timeline = r.pop("memory_timeline")
            result["soak"] = {"seconds": args.duration, "run": r, "timeline": timeline,
                              "verdict": soak_verdict(timeline), "processes_after": tree_processes(mock.proc.pid)}
            log(f"soak: {r['rps']:.0f} req/s, p99 {r['p99_ms']:.1f} ms, {result['soak']['verdict']}")
    finally:
        for srv in servers.values():
            srv.stop()
        stop_all()

    for r in result["runs"]:
        r.pop("memory_timeline", None)
    result["table"] = summarise(result["runs"], workloads, servers_wanted)
    result["targets"] = evaluate(result)
    md = markdown(result)
    (run_dir / "results.json").write_text(json.dumps(result, indent=1))
    (run_dir / "results.md").write_text(md)
    shutil.copyfile(run_dir / "results.json", args.out / "latest.json")
    shutil.copyfile(run_dir / "results.md", args.out / "latest.md")
    print(md)
    log(f"wrote {run_dir}/results.json and results.md (also {args.out}/latest.*)")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        stop_all()
        log("interrupted; servers stopped")
        sys.exit(130)
