#!/usr/bin/env python3
"""Where the mock's per-request time goes, without a network: calls the Flask app's WSGI callable directly,
single process, single thread.

    .venv/bin/python bench/profile_request.py              # timings + component breakdown + cProfile summary
    .venv/bin/python bench/profile_request.py --n 20000 --top 30
    PYTHONPATH=/tmp/snapshot .venv/bin/python bench/profile_request.py   # another checkout's mock_server

1. Whole requests through app(environ, start_response): the bare Flask app (bench/bare_app.py, the ceiling),
   and the mock's retry 400 (10002), 404 (99999), 200 (re-arm PUT + retry of an owned subtask), 401.
2. The mock's steps timed alone with the same objects the request uses: authentication (cached header),
   parameter parsing (regex + int + jsonschema on each path parameter), the SQLite read, the lifecycle
   refusal (building OcpError), the envelope, the Response object, the before/after hooks; the access log.
3. cProfile over the 400 path, time grouped by package and the top functions.
Numbers are microseconds of CPU time (time.thread_time) per call on this machine; compare them with each other, not across machines.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import subprocess
import logging
import os
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


def environ_for(method: str, path: str, body: bytes = b"", headers: dict | None = None) -> dict:
    builder = EnvironBuilder(path=path, method=method, data=body, headers=headers or {},
                             base_url="http://127.0.0.1:8080")
    try:
        return builder.get_environ()
    finally:
        builder.close()


def caller(app, env: dict):
    body = env.get("CONTENT_LENGTH") and env["wsgi.input"].read() or b""
    status_box = []

    def start_response(status, headers, exc_info=None):
        status_box.append(status)

    def call():
        e = dict(env)
        e["wsgi.input"] = io.BytesIO(body)
        out = app(e, start_response)
        data = b"".join(out)
        if hasattr(out, "close"):
            out.close()
        return data

    return call, status_box


def per_call_us(fn, n: int, repeat: int = 5) -> float:
    """Median over REPEAT batches of N calls, in microseconds of this thread's CPU time per call (CPU time, not
    wall time, so that other work on a shared machine hardly moves the figures)."""
    fn()
    results = []
    for _ in range(repeat):
        t0 = time.thread_time()
        for _ in range(n):
            fn()
        results.append((time.thread_time() - t0) / n * 1e6)
    return statistics.median(results)


def time_requests(n: int, patches: list[str]) -> dict:
    """Whole-request timings of the mock (optionally patched) and the bare app, in this process."""
    import bare_app
    import patched_wsgi
    from mock_server.app import create_app
    from mock_server.config import Config

    patched_wsgi.apply_module_patches(patches)
    folder = tempfile.mkdtemp(prefix="ocp-mock-profile-")
    try:
        app = patched_wsgi.apply_app_patches(
            create_app(Config(db_path=str(Path(folder) / "w.sqlite3"), access_log=False)), patches)
        h = {"Authorization": AUTH}

        def retry(sid, task=1000):
            return environ_for("POST", f"/api/v2/tasks/instances/{task}/subtasks/{sid}/retry", headers=h)

        put, _ = caller(app, environ_for("PUT", "/__mock/subtasks/10001", b'{"status":"FAILED","operation":"EXECUTE"}',
                                         {"Content-Type": "application/json"}))
        post, st = caller(app, retry(10001))

        def pair():
            put()
            post()

        out = {
            "bare 200": per_call_us(caller(bare_app.app, retry(10001))[0], n),
            "mock 400": per_call_us(caller(app, retry(10002))[0], n),
            "mock 404": per_call_us(caller(app, retry(99999))[0], n),
            "mock PUT+200": per_call_us(pair, max(1, n // 5)),
        }
        if not st[-1].startswith("200"):
            raise SystemExit(f"the mock's retry answered {st[-1]!r}, not 200: is mock_server/ mid-edit?")
        return out
    finally:
        shutil.rmtree(folder, ignore_errors=True)


WHAT_IF = ["", "intparams", "noraise", "nohdrscan", "nomiddleware", "readcache", "intparams,noraise",
           "intparams,noraise,nohdrscan,nomiddleware", "intparams,noraise,nohdrscan,nomiddleware,readcache",
           "versioncache", "thin", "thin,intparams,versioncache"]


def what_if(n: int) -> None:
    """Each candidate change in a fresh process (patches are global), alternating, median of 3 passes."""
    results: dict[str, list[dict]] = {combo: [] for combo in WHAT_IF}
    for _ in range(3):
        for combo in WHAT_IF:
            out = subprocess.run([sys.executable, __file__, "--n", str(n), "--requests-only", "--patches", combo],
                                 capture_output=True, text=True, check=True)
            results[combo].append(json.loads(out.stdout.strip().splitlines()[-1]))
    keys = list(results[""][0])
    base = {k: statistics.median(r[k] for r in results[""]) for k in keys}
    print("\n## What-if: the mock with candidate changes (bench/patched_wsgi.py), µs per request, median of 3 processes\n")
    print("| patches | " + " | ".join(keys) + " |")
    print("|---|" + "---:|" * len(keys))
    for combo, rs in results.items():
        cells = []
        for k in keys:
            v = statistics.median(r[k] for r in rs)
            cells.append(f"{v:.1f}" + ("" if not combo or k.startswith("bare") else f" ({v - base[k]:+.1f})"))
        print(f"| {combo or '(as is)'} | " + " | ".join(cells) + " |")


def main(argv=None) -> None:
    logging.getLogger("ocp_mock").setLevel(logging.CRITICAL)  # a broken path must not flood the output
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=5000, help="calls per timing batch")
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--patches", default="", help="apply bench/patched_wsgi.py patches (comma list), then time only")
    p.add_argument("--requests-only", action="store_true", help="print the whole-request timings as JSON and stop")
    p.add_argument("--no-what-if", action="store_true", help="skip the candidate-change section")
    args = p.parse_args(argv)
    n = args.n
    patches = [x for x in args.patches.split(",") if x]
    if args.requests_only:
        print(json.dumps(time_requests(n, patches)))
        return

    from flask import Response

    import bare_app
    from mock_server import lifecycle
    from mock_server.app import create_app
    from mock_server.config import Config
    from mock_server.envelope import OcpError, new_trace_id

    folder = tempfile.mkdtemp(prefix="ocp-mock-profile-")
    try:
        app = create_app(Config(db_path=str(Path(folder) / "w.sqlite3"), access_log=False))
        mock = app.extensions["ocp_mock"]
        op = mock.spec.operations["retrySubtask"]
        h = {"Authorization": AUTH}

        def retry(sid, task=1000):
            return environ_for("POST", f"/api/v2/tasks/instances/{task}/subtasks/{sid}/retry", headers=h)

        rows = {}
        bare_call, _ = caller(bare_app.app, retry(10001))
        rows["bare Flask, constant 200 (ceiling)"] = per_call_us(bare_call, n)
        bare_400, _ = caller(bare_app.app, retry(10002))
        rows["bare Flask, constant 400"] = per_call_us(bare_400, n)
        c400, s400 = caller(app, retry(10002))
        rows["mock retry 400 (10002, read-only refusal)"] = per_call_us(c400, n)
        c404, s404 = caller(app, retry(99999))
        rows["mock retry 404 (99999)"] = per_call_us(c404, n)
        c401, _ = caller(app, environ_for("POST", "/api/v2/tasks/instances/1000/subtasks/10001/retry"))
        rows["mock retry 401 (no credentials)"] = per_call_us(c401, n)
        put, sput = caller(app, environ_for("PUT", "/__mock/subtasks/10001",
                                            b'{"status":"FAILED","operation":"EXECUTE"}',
                                            {"Content-Type": "application/json"}))
        post, spost = caller(app, retry(10001))

        def pair():
            put()
            post()

        rows["mock re-arm PUT + retry 200 (two writes)"] = per_call_us(pair, max(1, n // 5))
        put()
        rows["  of which re-arm PUT alone"] = per_call_us(put, max(1, n // 5))

        def retry_only():
            mock.store.change_subtask(10001, lambda d: lifecycle.set_state(d, "FAILED", "EXECUTE", mock.envelope.now(), "x"))
            post()

        rows["  store write (re-arm, no HTTP) + retry 200"] = per_call_us(retry_only, max(1, n // 5))
        if not (s400[-1].startswith("400") and s404[-1].startswith("404") and spost[-1].startswith("200")):
            raise SystemExit(f"unexpected answers {s400[-1]!r} {s404[-1]!r} {spost[-1]!r}: is mock_server/ mid-edit?")

        # -- steps of the 400 path, alone -----------------------------------------------------------------
        steps = {}
        auth = mock.auth
        steps["auth.authenticate (cached header)"] = per_call_us(lambda: auth.authenticate(AUTH), n * 4)
        with app.test_request_context("/api/v2/tasks/instances/1000/subtasks/10002/retry", method="POST", headers=h):
            from flask import request
            pv = {"taskInstanceId": "1000", "subtaskInstanceId": "10002"}
            steps["op.parse_parameters (2 path params)"] = per_call_us(
                lambda: op.parse_parameters(pv, request.args, request.headers), n * 4)
            param = op.parameters[0]
            steps["  of which jsonschema iter_errors, one int param"] = per_call_us(
                lambda: next(iter(param.validator.iter_errors(1000)), None), n * 4)
            steps["  of which regex + int + range, one param"] = per_call_us(
                lambda: (op.parameters[0].schema.get("type") == "integer" and int("1000")), n * 4)
            steps["request.headers.get('Authorization')"] = per_call_us(
                lambda: request.headers.get("Authorization"), n * 4)
        steps["store.subtask(10002) (SQLite read, thread's connection)"] = per_call_us(lambda: mock.store.subtask(10002), n * 4)
        steps["store.subtask(99999) (SQLite read, no row)"] = per_call_us(lambda: mock.store.subtask(99999), n * 4)

        def refuse():
            try:
                lifecycle.check("retry", 10002, "RUNNING", "EXECUTE")
            except OcpError as exc:
                return exc

        steps["lifecycle.check -> OcpError (build + raise + catch)"] = per_call_us(refuse, n * 4)
        err = refuse()
        steps["envelope.error (orjson + timestamp)"] = per_call_us(
            lambda: mock.envelope.error(err.error_object(), 400, "0123456789abcdef", 0), n * 4)
        steps["  of which envelope.timestamp (datetime.now().isoformat)"] = per_call_us(mock.envelope.timestamp, n * 4)
        steps["envelope.success (200 body from stored wire form)"] = per_call_us(
            lambda: mock.envelope.success(mock.store.subtask(10003).doc, 200, "0123456789abcdef", 0), n * 4)
        steps["new_trace_id (os.urandom(8).hex())"] = per_call_us(new_trace_id, n * 4)
        body = mock.envelope.error(err.error_object(), 400, "0123456789abcdef", 0)
        steps["flask Response(body, status, mimetype)"] = per_call_us(
            lambda: Response(body, status=400, mimetype="application/json"), n * 4)
        with app.test_request_context("/api/v2/tasks/instances/1000/subtasks/10002/retry", method="POST", headers=h):
            steps["mock.failure(err, exc) (stack-trace header check + envelope + Response)"] = per_call_us(
                lambda: mock.failure(err, err), n * 2)
            steps["before_request hook (perf_counter + trace id on g)"] = per_call_us(
                lambda: app.before_request_funcs[None][0](), n * 4)
            resp = Response(body, status=400, mimetype="application/json")
            steps["after_request hook (quiet: nothing to do)"] = per_call_us(
                lambda: app.after_request_funcs[None][0](resp), n * 4)

        # -- the access log (on without --quiet) -------------------------------------------------------------
        logged = create_app(Config(db_path=str(Path(folder) / "w.sqlite3"), access_log=True))
        access = logging.getLogger("ocp_mock.access")
        devnull = open(os.devnull, "w")
        handler = logging.StreamHandler(devnull)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        access.addHandler(handler)
        access.setLevel(logging.INFO)
        access.propagate = False
        c400_logged, _ = caller(logged, retry(10002))
        rows["mock retry 400 with access log (to /dev/null)"] = per_call_us(c400_logged, n)
        access.removeHandler(handler)
        devnull.close()

        width = max(len(k) for k in (*rows, *steps)) + 2
        print(f"## Whole requests via the WSGI callable (CPU µs per request, median of 5 x {n})\n")
        for k, v in rows.items():
            print(f"{k:<{width}} {v:8.1f}")
        print("\n## Steps of the 400 path, each alone (µs per call)\n")
        for k, v in steps.items():
            print(f"{k:<{width}} {v:8.2f}")

        # -- cProfile over the 400 path, then over the write path (re-arm PUT + retry 200) --------------------
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(n):
            c400()
        prof.disable()
        profile_summary(prof, n, "mock retry 400", args.top)
        prof = cProfile.Profile()
        m = max(1, n // 5)
        prof.enable()
        for _ in range(m):
            pair()
        prof.disable()
        profile_summary(prof, m, "mock re-arm PUT + retry 200 (two writes)", args.top)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if not args.no_what_if:
        what_if(max(1000, n // 2))


def profile_summary(prof, n: int, label: str, top: int) -> None:
    if True:
        stats = pstats.Stats(prof)
        total = sum(v[2] for v in stats.stats.values())  # tottime
        groups: dict[str, float] = {}
        for (filename, _line, _fn), v in stats.stats.items():
            f = filename.replace("\\", "/")
            if "/mock_server/" in f:
                key = "mock_server/" + f.rsplit("/", 1)[1]
            elif "/site-packages/" in f:
                key = f.split("/site-packages/", 1)[1].split("/", 1)[0]
            elif f.startswith("~") or f == "~":
                key = "builtins (C: sqlite3, os.urandom, str/bytes ops, ...)"
            else:
                key = "stdlib: " + f.rsplit("/", 1)[-1]
            groups[key] = groups.get(key, 0.0) + v[2]
        print(f"\n## cProfile, {label} x {n}: share of own time by package (the profiler's overhead inflates "
              "small calls, so read shares, not µs)\n")
        for k, v in sorted(groups.items(), key=lambda kv: -kv[1])[:15]:
            print(f"{k:<60} {v / total:6.1%}")
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(top)
        print(f"\n## cProfile, {label}: top functions by own time\n")
        print("\n".join(line for line in out.getvalue().splitlines() if line.strip())[:8000])


if __name__ == "__main__":
    main()
