#!/usr/bin/env python3
"""The success path's writes with N threads in one process, no network: what thread contention costs a write.

    .venv/bin/python bench/write_threads.py            # 1, 4 and 8 threads
    .venv/bin/python bench/write_threads.py --threads 8 --pairs 3000

Each thread owns one FAILED subtask of the seeded world and alternates the admin PUT that re-arms it
(`{"status": "FAILED", "operation": "EXECUTE"}`) with `POST .../retry`, through the app's WSGI callable (as
bench/lua/pair.lua does over HTTP); every retry must answer 200. Reports req/s, CPU per request (user and system,
from getrusage: the whole process) and context switches. One write is stored at a time (the world's write lock), so
what grows with the threads is what handing the locks between threads costs: before the store took its turn without
blocking first (mock_server/store.py, "the write lock without a lock convoy"), 4 threads cost 2.3x the CPU of one
per request, with 2 context switches each.
"""

from __future__ import annotations

import argparse
import base64
import io
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parents[1]))

from werkzeug.test import EnvironBuilder  # noqa: E402

from mock_server import Config, create_app  # noqa: E402

AUTH = {"Authorization": "Basic " + base64.b64encode(b"admin:admin").decode()}
REARM = b'{"status":"FAILED","operation":"EXECUTE"}'


def measure(threads: int, pairs: int) -> str:
    app = create_app(Config(db_path=str(Path(tempfile.mkdtemp(prefix="ocp-bench-")) / "w.sqlite3"), clock_speed=0))
    store = app.extensions["ocp_mock"].store
    owned = [(s.id, s.task_id) for s in store.subtasks(status="FAILED")][:threads]
    if len(owned) < threads:
        raise SystemExit(f"the seeded world has {len(owned)} FAILED subtasks; ask for at most that many threads")
    failures: list[str] = []

    def work(subtask_id: int, task_id: int) -> None:
        put = EnvironBuilder(path=f"/__mock/subtasks/{subtask_id}", method="PUT", data=REARM).get_environ()
        retry = EnvironBuilder(path=f"/api/v2/tasks/instances/{task_id}/subtasks/{subtask_id}/retry", method="POST",
                               headers=AUTH).get_environ()
        for _ in range(pairs):
            environ = dict(put)
            environ["wsgi.input"] = io.BytesIO(REARM)
            b"".join(app(environ, lambda *_: None))
            status: list[str] = []
            b"".join(app(dict(retry), lambda s, *_: status.append(s)))
            if not status[0].startswith("200"):
                failures.append(status[0])
                return

    workers = [threading.Thread(target=work, args=pair) for pair in owned]
    before, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    after, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter() - t0
    if failures:
        raise SystemExit(f"a retry was not answered 200: {failures[0]}")
    requests = 2 * pairs * threads
    user, system = after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime
    return (f"{threads} thread(s): {requests / wall:7.0f} req/s, CPU {(user + system) / requests * 1e6:5.0f} µs/request "
            f"(user {user / requests * 1e6:.0f}, system {system / requests * 1e6:.0f}), context switches "
            f"{(after.ru_nvcsw - before.ru_nvcsw) / requests:.1f} voluntary, "
            f"{(after.ru_nivcsw - before.ru_nivcsw) / requests:.1f} involuntary per request")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, action="append", help="repeatable; default: 1, 4 and 8")
    p.add_argument("--pairs", type=int, default=1500, help="re-arm + retry pairs per thread")
    args = p.parse_args(argv)
    for n in args.threads or [1, 4, 8]:
        print(measure(n, args.pairs), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
