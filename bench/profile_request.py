#!/usr/bin/env python3
"""Where the mock's per-request time goes, without a network: calls WSGI callables directly, in this process,
single thread, and times them in CPU time (time.thread_time, so other work on a shared machine hardly moves them).

    .venv/bin/python bench/profile_request.py              # the table, the steps, cProfile of the 400 and 200 paths
    .venv/bin/python bench/profile_request.py --n 5000 --passes 7 --top 30
    .venv/bin/python bench/profile_request.py --profile-path flask   # cProfile the Flask path instead
    PYTHONPATH=/tmp/snapshot .venv/bin/python bench/profile_request.py   # another checkout's mock_server

1. Whole requests through app(environ, start_response), for the mock as shipped (the fast path: the spec's
   operations answered by mock_server/dispatch.py below Flask) and for the mock with Config(fast_path=False)
   (every request through Flask), side by side; the ceilings are bench/bare_app.py's plain WSGI callable
   (next to the fast path) and its bare Flask app (next to the Flask path), answering constants.
   Rows: retry 400 (10002, RUNNING: the read-only refusal), 404 (99999), 401 (no credentials), GET task 1000,
   GET a list page (page=1&size=10), GET subtask 10001's log, retry 200 of 10001 alone (re-armed to FAILED
   between calls, outside the timed region, through mock.runtime.force_state) and the admin PUT re-arm alone
   (the subtask retried between calls, untimed; on the fast path the dispatcher answers this admin call too), and
   the two as bench/run.py's retry-200 sends them (re-arm, then retry, both timed; the figure is per request).
   Both apps use clock_speed=0 (no due transitions, so no catch-up writes: deterministic). Each pass resets both
   worlds, then times every row on both apps in turn; a cell is the median of the passes. `via` says who
   answered on the fast-path app (checked once per row, untimed).
2. The pipeline's steps, each alone, with the objects a request uses (auth.authenticate, parse_parameters,
   the SQLite read behind store.subtask, a store.memo hit, lifecycle.check's refusal, envelope.success/error,
   new_trace_id).
3. cProfile over the retry 400 path and the retry 200 path (only the timed calls: the re-arm is outside the
   profiler): share of own time by package, and the top functions.
Numbers are microseconds of CPU time per request on this machine; compare them with each other, not across
machines.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import logging
import pstats
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.append(str(ROOT))  # after PYTHONPATH: `PYTHONPATH=/other/checkout` profiles that checkout

from werkzeug.test import EnvironBuilder  # noqa: E402

AUTH = "Basic YWRtaW46YWRtaW4="
H = {"Authorization": AUTH}
TASKS = "/api/v2/tasks/instances"
ARMED, REFUSED, MISSING = 10001, 10002, 99999  # FAILED at reset, RUNNING at reset, no such subtask
REARM = b'{"status":"FAILED","operation":"EXECUTE"}'


def environ_for(method: str, path: str, body: bytes = b"", headers: dict | None = None, query: str = "") -> dict:
    builder = EnvironBuilder(path=path, method=method, data=body, headers=headers or {}, query_string=query,
                             base_url="http://127.0.0.1:8080")
    try:
        env = builder.get_environ()
    finally:
        builder.close()
    env["wsgi.input"] = env["wsgi.input"].read()  # kept as bytes; each call gets a fresh stream
    return env


def caller(app, env: dict):
    """A no-argument call of APP with a copy of ENV; the status lines it answered go to the returned list."""
    body = env["wsgi.input"]
    statuses: list[str] = []

    def start_response(status, headers, exc_info=None):
        statuses.append(status)

    def call():
        e = dict(env)
        e["wsgi.input"] = io.BytesIO(body)
        out = app(e, start_response)
        data = b"".join(out)
        if hasattr(out, "close"):
            out.close()
        return data

    return call, statuses


def batch_us(fn, n: int) -> float:
    """CPU µs per call of FN over N calls in a row (after one untimed call)."""
    fn()
    t0 = time.thread_time()
    for _ in range(n):
        fn()
    return (time.thread_time() - t0) / n * 1e6


def _clock_pair_us(n: int = 20000) -> float:
    t0 = time.thread_time()
    for _ in range(n):
        time.thread_time()
        time.thread_time()
    return (time.thread_time() - t0) / n * 1e6


CLOCK_PAIR_US = 0.0  # set in main(): the cost of the two clock reads around a call timed alone


def alone_us(fn, setup, n: int) -> float:
    """CPU µs per call of FN, SETUP run before each call outside the timed region (less the clock reads)."""
    setup()
    fn()
    total = 0.0
    for _ in range(n):
        setup()
        t0 = time.thread_time()
        fn()
        total += time.thread_time() - t0
    return max(0.0, total / n * 1e6 - CLOCK_PAIR_US)


def median_us(fn, n: int, passes: int) -> float:
    return statistics.median(batch_us(fn, n) for _ in range(passes))


class Target:
    """One mock app, with its rows' calls."""

    def __init__(self, name: str, app):
        self.name, self.app = name, app
        self.mock = app.extensions["ocp_mock"]

    def rearm(self) -> None:
        self.mock.runtime.force_state(ARMED, "FAILED", "EXECUTE", lambda siblings: None)

    def retried(self) -> None:
        if self.mock.store.subtask(ARMED).status != "FAILED":  # the row before left it READY
            self.rearm()
        self.mock.runtime.subtask_action(ARMED, "retry")

    def rows(self) -> dict[str, tuple]:
        """row -> (call, statuses, expected status, setup or None)"""
        app = self.app

        def retry(sid, headers=H):
            return environ_for("POST", f"{TASKS}/1000/subtasks/{sid}/retry", headers=headers)

        specs = {
            "retry 400 (10002 RUNNING)": (retry(REFUSED), "400", None),
            "retry 404 (99999)": (retry(MISSING), "404", None),
            "retry 401 (no credentials)": (retry(ARMED, {}), "401", None),
            "GET task 1000": (environ_for("GET", f"{TASKS}/1000", headers=H), "200", None),
            "GET list page=1&size=10": (environ_for("GET", TASKS, headers=H, query="page=1&size=10"), "200", None),
            "GET subtask 10001 log": (environ_for("GET", f"{TASKS}/1000/subtasks/{ARMED}/log", headers=H), "200", None),
            "retry 200 alone (re-arm untimed)": (retry(ARMED), "200", self.rearm),
            "admin PUT re-arm alone (retry untimed)": (
                environ_for("PUT", f"/__mock/subtasks/{ARMED}", REARM, {"Content-Type": "application/json"}),
                "200", self.retried),
        }
        out = {}
        for label, (env, expected, setup) in specs.items():
            call, statuses = caller(app, env)
            out[label] = (call, statuses, expected, setup)
        # retry-200 of bench/run.py in process: the re-arm and the retry one after the other, both timed, the
        # figure per request (of the two)
        put_call, _ = caller(app, specs["admin PUT re-arm alone (retry untimed)"][0])
        retry_call, retry_statuses = caller(app, specs["retry 200 alone (re-arm untimed)"][0])
        out["re-arm PUT + retry 200 pair, per request (retry-200)"] = (Pair(put_call, retry_call), retry_statuses,
                                                                       "200", None)
        return out


class Pair:
    """Two calls timed as one; `requests`: what a figure for it is divided by."""

    requests = 2

    def __init__(self, *calls):
        self.calls = calls

    def __call__(self):
        for call in self.calls:
            call()


def via(target: Target, call, setup) -> str:
    """Who answered CALL on TARGET's app: the dispatcher, or Flask behind it (one untimed call)."""
    from mock_server.dispatch import Dispatcher

    dispatcher = target.app.wsgi_app  # the middleware chain (cors.py, dispatch.py, docs.py) down to Flask's own
    while not isinstance(dispatcher, Dispatcher):
        dispatcher = getattr(dispatcher, "wsgi_app", None)
        if dispatcher is None:
            return "Flask"
    inner, seen = dispatcher.wsgi_app, []

    def spy(environ, start_response):
        seen.append(1)
        return inner(environ, start_response)

    if setup:
        setup()
    dispatcher.wsgi_app = spy
    try:
        call()
    finally:
        dispatcher.wsgi_app = inner
    return "Flask" if seen else "dispatcher"


def whole_requests(fast: Target, flask: Target, n: int, passes: int) -> str:
    import bare_app

    rows = {t.name: t.rows() for t in (fast, flask)}
    labels = list(rows[fast.name])
    times: dict[tuple[str, str], list[float]] = {}
    ceiling = {"raw": [], "bare": []}
    ceil_env = environ_for("POST", f"{TASKS}/1000/subtasks/{ARMED}/retry", headers=H)
    raw_call, _ = caller(bare_app.raw_app, ceil_env)
    bare_call, bare_st = caller(bare_app.app, ceil_env)
    writes = max(1, n // 5)
    answered = {label: via(fast, rows[fast.name][label][0], rows[fast.name][label][3]) for label in labels}
    for _ in range(passes):
        ceiling["raw"].append(batch_us(raw_call, n))
        ceiling["bare"].append(batch_us(bare_call, n))
        for t in (fast, flask):
            t.mock.reset()
        for label in labels:
            for t in (fast, flask):
                call, statuses, expected, setup = rows[t.name][label]
                us = alone_us(call, setup, writes) if setup else batch_us(call, writes if isinstance(call, Pair) else n)
                us /= getattr(call, "requests", 1)
                times.setdefault((t.name, label), []).append(us)
                if not statuses[-1].startswith(expected):
                    raise SystemExit(f"{t.name}: {label} answered {statuses[-1]!r}, not {expected}: "
                                     "is mock_server/ mid-edit?")
    if not bare_st[-1].startswith("200"):
        raise SystemExit(f"bench/bare_app.py answered {bare_st[-1]!r}")

    lines = [f"## Whole requests via the WSGI callable (CPU µs per request, median of {passes} passes; "
             f"{n} calls a pass, {writes} for the rows timed alone)", "",
             "| request | fast path (as shipped) | Flask path (fast_path=False) | Flask − fast | via (fast path) |",
             "|---|---:|---:|---:|---|",
             f"| ceiling: constant 200 (raw WSGI / bare Flask) | {statistics.median(ceiling['raw']):.1f} | "
             f"{statistics.median(ceiling['bare']):.1f} | "
             f"{statistics.median(ceiling['bare']) - statistics.median(ceiling['raw']):+.1f} | bench/bare_app.py |"]
    for label in labels:
        a = statistics.median(times[(fast.name, label)])
        b = statistics.median(times[(flask.name, label)])
        lines.append(f"| {label} | {a:.1f} | {b:.1f} | {b - a:+.1f} | {answered[label]} |")
    return "\n".join(lines)


def steps(fast: Target, n: int, passes: int) -> str:
    from mock_server import lifecycle
    from mock_server.dispatch import EnvironHeaders
    from mock_server.envelope import OcpError, new_trace_id

    mock = fast.mock
    mock.reset()
    op = mock.spec.operations["retrySubtask"]
    env = environ_for("POST", f"{TASKS}/1000/subtasks/{REFUSED}/retry", headers=H)
    headers = EnvironHeaders(env)
    path_values = {"taskInstanceId": "1000", "subtaskInstanceId": str(REFUSED)}
    store = mock.store
    store.memo(("subtask", REFUSED), lambda: store.subtask(REFUSED))

    def refuse():
        try:
            lifecycle.check("retry", REFUSED, "RUNNING", "EXECUTE")
        except OcpError as exc:
            return exc

    err = refuse()
    data = store.subtask(10003).doc
    trace = new_trace_id()
    out = {
        "auth.authenticate (cached header)": lambda: mock.auth.authenticate(AUTH),
        "op.parse_parameters (2 integer path params)": lambda: op.parse_parameters(path_values, {}, headers),
        "store.subtask(10002) (SQLite read, thread's connection)": lambda: store.subtask(REFUSED),
        "store.subtask(99999) (SQLite read, no row)": lambda: store.subtask(MISSING),
        "store.memo hit (('subtask', 10002))": lambda: store.memo(("subtask", REFUSED), lambda: store.subtask(REFUSED)),
        "lifecycle.check -> OcpError (build + raise + catch)": refuse,
        "envelope.error (400 body)": lambda: mock.envelope.error(err.error_object(), 400, trace, 0),
        "envelope.success (200 body from stored wire form)": lambda: mock.envelope.success(data, 200, trace, 0),
        "  of which envelope.timestamp": mock.envelope.timestamp,
        "new_trace_id": new_trace_id,
    }
    width = max(map(len, out)) + 2
    lines = [f"## Steps of the fast path, each alone (CPU µs per call, median of {passes} x {n * 4})", ""]
    for label, fn in out.items():
        lines.append(f"{label:<{width}} {median_us(fn, n * 4, passes):8.2f}")
    return "\n".join(lines)


def profile_summary(prof, n: int, label: str, top: int) -> str:
    stats = pstats.Stats(prof)
    total = sum(v[2] for v in stats.stats.values()) or 1.0  # tottime
    groups: dict[str, float] = {}
    for (filename, _line, _fn), v in stats.stats.items():
        f = filename.replace("\\", "/")
        if "/mock_server/" in f:
            key = "mock_server/" + f.rsplit("/", 1)[1]
        elif "/site-packages/" in f:
            key = f.split("/site-packages/", 1)[1].split("/", 1)[0]
        elif f == "~" or f.startswith("~"):
            key = "builtins (C: sqlite3, orjson, str/bytes ops, ...)"
        else:
            key = "stdlib: " + f.rsplit("/", 1)[-1]
        groups[key] = groups.get(key, 0.0) + v[2]
    lines = [f"## cProfile, {label} x {n}: share of own time by package (the profiler's overhead inflates "
             "small calls, so read shares, not µs)", ""]
    for k, v in sorted(groups.items(), key=lambda kv: -kv[1])[:15]:
        lines.append(f"{k:<60} {v / total:6.1%}")
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(top)
    lines += ["", f"## cProfile, {label}: top functions by own time", ""]
    lines.append("\n".join(line for line in out.getvalue().splitlines() if line.strip())[:8000])
    return "\n".join(lines)


def profiles(target: Target, n: int, top: int) -> str:
    rows = target.rows()
    target.mock.reset()
    c400 = rows["retry 400 (10002 RUNNING)"][0]
    c200, st200 = rows["retry 200 alone (re-arm untimed)"][:2]
    c400()
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(n):
        c400()
    prof.disable()
    parts = [profile_summary(prof, n, f"retry 400, {target.name}", top)]
    m = max(1, n // 5)
    prof = cProfile.Profile()
    for _ in range(m):
        target.rearm()
        prof.enable()
        c200()
        prof.disable()
    if not st200[-1].startswith("200"):
        raise SystemExit(f"retry answered {st200[-1]!r}, not 200")
    parts.append(profile_summary(prof, m, f"retry 200 alone (re-arm not profiled), {target.name}", top))
    return "\n\n".join(parts)


def main(argv=None) -> None:
    global CLOCK_PAIR_US
    logging.getLogger("ocp_mock").setLevel(logging.CRITICAL)  # a broken path must not flood the output
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=2000, help="calls per row and pass (a fifth of it for the writes)")
    p.add_argument("--passes", type=int, default=5, help="passes; each cell is their median")
    p.add_argument("--top", type=int, default=25, help="functions listed per cProfile section")
    p.add_argument("--profile-path", choices=["fast", "flask", "none"], default="fast",
                   help="which app the cProfile sections run on (none: skip them)")
    args = p.parse_args(argv)

    from mock_server.app import create_app
    from mock_server.config import Config

    CLOCK_PAIR_US = min(_clock_pair_us() for _ in range(3))
    folder = tempfile.mkdtemp(prefix="ocp-mock-profile-")
    try:
        def make(name: str, fast_path: bool) -> Target:
            config = Config(db_path=str(Path(folder) / f"{name}.sqlite3"), access_log=False, clock_speed=0,
                            fast_path=fast_path)
            return Target(name, create_app(config))

        fast, flask = make("fast path", True), make("Flask path", False)
        print(whole_requests(fast, flask, args.n, args.passes))
        print()
        print(steps(fast, args.n, args.passes))
        if args.profile_path != "none":
            print()
            print(profiles(fast if args.profile_path == "fast" else flask, args.n, args.top))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
