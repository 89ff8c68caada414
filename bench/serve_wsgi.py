"""Serve a WSGI app with explicit server options: the bare-Flask ceiling of bench/run.py, and the variants of
bench/variants.py. With --server granian (the default) it starts granian as `ocp-mock serve` does
(mock_server/cli.py): Granian(..., interface=WSGI, workers=N, log_access=False, workers_kill_timeout=5,
blocking_threads=4, http1 header_read_timeout=10 s).serve(); only the options passed here differ.
`--blocking-threads 0` leaves granian's own default (backpressure / 2: 256 threads a worker with 2 workers).

    python bench/serve_wsgi.py bare --port 18082 --workers 2
    python bench/serve_wsgi.py mock --port 18081 --workers 2 --blocking-threads 8   # the mock's app factory
    python bench/serve_wsgi.py mock --port 18081 --config fast_path=false           # every request through Flask
    python bench/serve_wsgi.py mock --port 18081 --server gunicorn-gthread --threads 8   # needs gunicorn
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("app", choices=["bare", "raw", "lean", "mock"])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--blocking-threads", type=int, default=4,
                   help="granian threads per worker (default 4, as ocp-mock serve; 0: granian's own default)")
    p.add_argument("--backpressure", type=int)
    p.add_argument("--runtime-threads", type=int)
    p.add_argument("--runtime-mode", choices=["auto", "st", "mt"])
    p.add_argument("--server", choices=["granian", "gunicorn-gthread", "gunicorn-sync"], default="granian")
    p.add_argument("--threads", type=int, default=8, help="gunicorn gthread threads per worker")
    p.add_argument("--config", action="append", default=[], metavar="FIELD=JSON",
                   help="mock only: a Config field, e.g. clock_speed=0 or fast_path=false")
    p.add_argument("--timed", action="store_true",
                   help="granian only: the app wrapped by bench/request_thread.py's timed_app (its own CPU time)")
    args = p.parse_args(argv)

    # An inherited PYTHONPATH comes first, so `PYTHONPATH=/some/checkout` benchmarks that checkout's mock_server.
    inherited = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    for path in (str(BENCH), str(ROOT)):
        if path not in sys.path:
            sys.path.insert(len(inherited), path)
    os.environ["PYTHONPATH"] = os.pathsep.join([*inherited, str(BENCH), str(ROOT)])

    folder = None
    if args.app == "mock":  # what `ocp-mock serve --quiet` does before starting granian
        from mock_server.app import create_app
        from mock_server.config import Config
        from mock_server.wsgi import CONFIG_ENV

        folder = tempfile.mkdtemp(prefix="ocp-mock-bench-")
        import json

        config = Config(db_path=str(Path(folder) / "world.sqlite3"), access_log=False)
        for item in args.config:
            key, _, value = item.partition("=")
            if not hasattr(config, key):
                raise SystemExit(f"Config has no field {key!r}")
            setattr(config, key, json.loads(value))
        create_app(config).extensions["ocp_mock"].store.close()
        os.environ[CONFIG_ENV] = config.to_json()
        target, factory = "mock_server.wsgi:app_from_env", True
    elif args.app == "raw":
        target, factory = "bare_app:raw_app", False
    elif args.app == "lean":  # its workers share one state file, made afresh for this server
        folder = tempfile.mkdtemp(prefix="ocp-mock-bench-lean-")
        os.environ["BENCH_LEAN_STATE"] = str(Path(folder) / "statuses")
        target, factory = "lean_app:app", False
    else:
        target, factory = "bare_app:app", False

    if args.server.startswith("gunicorn"):
        from gunicorn.app.wsgiapp import run

        worker = ["-k", "gthread", "--threads", str(args.threads)] if args.server == "gunicorn-gthread" else ["-k", "sync"]
        sys.argv = ["gunicorn", "-w", str(args.workers), *worker, "-b", f"127.0.0.1:{args.port}",
                    "--log-level", "warning", "--backlog", "1024", target + ("()" if factory else "")]
        try:
            run()
        finally:
            if folder:
                shutil.rmtree(folder, ignore_errors=True)
        return

    if args.timed:  # bench/request_thread.py reads the sum
        from request_thread import FACTORY_ENV, TARGET_ENV

        os.environ[TARGET_ENV], os.environ[FACTORY_ENV] = target, "1" if factory else "0"
        target, factory = "request_thread:timed_app", True

    from granian import Granian
    from granian.constants import Interfaces, RuntimeModes
    from granian.http import HTTP1Settings

    options = {}
    if args.blocking_threads:
        options["blocking_threads"] = args.blocking_threads
    if args.backpressure is not None:
        options["backpressure"] = args.backpressure
    if args.runtime_threads is not None:
        options["runtime_threads"] = args.runtime_threads
    if args.runtime_mode is not None:
        options["runtime_mode"] = RuntimeModes(args.runtime_mode)
    try:
        Granian(target=target, factory=factory, address="127.0.0.1", port=args.port, interface=Interfaces.WSGI,
                workers=args.workers, log_access=False, workers_kill_timeout=5,
                http1_settings=HTTP1Settings(header_read_timeout=10_000), **options).serve()
    finally:
        if folder:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
