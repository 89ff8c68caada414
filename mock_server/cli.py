"""`ocp-mock`: serve the mock on a production WSGI server (granian), or print its seeded world."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import click

from .config import (CONFIG_ENV, DEFAULT_CLOCK_SPEED, DEFAULT_HOST, DEFAULT_PORT, DEFAULT_SEED, DEFAULT_WORKERS,
                     Config, is_loopback)
from .startup import Preparation


@click.group()
@click.version_option(package_name="ocp-task-mock")
def main() -> None:
    """Mock of the OceanBase Cloud Platform (OCP) task API, driven by openapi.yaml."""


@main.command()
@click.option("--host", default=DEFAULT_HOST, show_default=True, help="Address to bind (loopback by default).")
@click.option("--port", default=DEFAULT_PORT, show_default=True, type=click.IntRange(0, 65535))
@click.option("--seed", default=DEFAULT_SEED, show_default=True, type=click.IntRange(0, 2**63 - 1),
              help="Seed of the world: the same seed gives the same tasks and subtasks.")
@click.option("--workers", default=DEFAULT_WORKERS, show_default=True, type=click.IntRange(1, 64),
              help="Worker processes; they share one world.")
@click.option("--users", "users_file", type=click.Path(exists=True, dir_okay=False),
              help="YAML/JSON file: users: [{name, password, permissions: [TASK_MANAGER, TASK_VIEWER]}].")
@click.option("--no-auth", is_flag=True, help="Accept every request without credentials (front-end work).")
@click.option("--strict", is_flag=True, help="Check every response against openapi.yaml; a mismatch becomes a 500.")
@click.option("--spec", "spec_path", type=click.Path(exists=True, dir_okay=False), help="Another openapi.yaml.")
@click.option("--quiet", is_flag=True, help="No access log.")
@click.option("--clock-speed", default=DEFAULT_CLOCK_SPEED, show_default=True, type=click.FloatRange(0, 1_000_000),
              help="Mock seconds per real second for the subtasks' lifecycle (0: the clock moves only through "
                   "POST /__mock/clock/advance).")
@click.option("--state-file", type=click.Path(dir_okay=False),
              help="Keep the world in this file across restarts (created from --seed when missing); "
                   "every acknowledged change is on disk.")
@click.option("--admin-token", envvar="OCP_MOCK_ADMIN_TOKEN",
              help="Require X-Mock-Admin-Token on /__mock calls; needed to have the admin API off loopback.")
@click.option("--threads", default=4, show_default=True, type=click.IntRange(1, 256),
              help="Threads per worker (each slow call, such as an injected latency, holds one).")
@click.option("--header-timeout", default=10.0, show_default=True, type=click.FloatRange(0.1, 600),
              help="Seconds a client may take to send its request headers.")
@click.option("--cors-origin", "cors_origins", multiple=True, metavar="ORIGIN",
              help="Origin whose pages may call the mock from a browser (repeatable; '*' reflects any origin). "
                   "Default: localhost and 127.0.0.1 on ports 3000 and 5173.")
@click.option("--scenario", "scenario_files", multiple=True, metavar="FILE",
              help="Scenario file (YAML): subtask states, what their next runs do, faults. Applied at start-up, in "
                   "order; also applicable later by name (POST /__mock/scenarios). Repeatable.")
def serve(host, port, seed, workers, users_file, no_auth, strict, spec_path, quiet, state_file, admin_token,
          threads, header_timeout, cors_origins, clock_speed, scenario_files) -> None:
    """Serve the mock (admin API under /__mock on loopback, or anywhere with --admin-token)."""
    folder = tempfile.mkdtemp(prefix="ocp-mock-")
    preparation = None
    try:
        config = Config(
            seed=seed,
            db_path=str(Path(state_file).resolve()) if state_file else str(Path(folder) / "world.sqlite3"),
            durable=bool(state_file),
            auth=not no_auth,
            users_file=str(Path(users_file).resolve()) if users_file else None,
            admin=is_loopback(host) or bool(admin_token),
            admin_token=admin_token or None,
            strict=strict,
            access_log=not quiet,
            clock_speed=clock_speed,
            world_cache=folder,
            threads=threads,
        )
        if spec_path:
            config.spec_path = str(Path(spec_path).resolve())
        if cors_origins:
            config.cors_origins = list(cors_origins)
        config.scenario_files = [str(Path(f).resolve()) for f in scenario_files]
        # Checks the files, seeds the world and applies the scenarios once, in a child process: granian's main
        # process stays lean (startup.py). A bad file: one line, exit 2 for --users (as click's own checks), else 1.
        preparation = Preparation(config, users_file, list(scenario_files))
        from granian import Granian  # meanwhile
        from granian.constants import Interfaces
        from granian.http import HTTP1Settings

        answer = preparation.answer()
        if "error" in answer:
            if answer["param"]:
                raise click.BadParameter(answer["error"], param_hint=answer["param"])
            raise click.ClickException(answer["error"])
        kept_seed, scenario_names = answer["seed"], answer["scenarios"]
        config.apply_scenarios = False  # applied once above; the workers only load them
        os.environ[CONFIG_ENV] = config.to_json()
        if state_file and kept_seed != seed:
            click.echo(f"ocp-mock: {state_file} holds a world of seed {kept_seed}; serving it as it is "
                       "(POST /__mock/reset starts afresh)", err=True)
        admin = "off (give --admin-token to use it off loopback)"
        if config.admin:
            admin = "on at /__mock" + (" (token required)" if admin_token else "")
        click.echo(
            f"ocp-mock: serving OCP task API on http://{host}:{port} (seed {kept_seed}, {workers} worker(s), "
            f"auth {'off' if no_auth else 'on'}, admin {admin}"
            f"{', state in ' + state_file if state_file else ''}"
            f"{', scenarios ' + ', '.join(scenario_names) + ' applied' if scenario_names else ''})",
            err=True,
        )
        _limit_malloc_arenas()
        Granian(
            target="mock_server.wsgi:app_from_env",
            factory=True,
            address=host,
            port=port,
            interface=Interfaces.WSGI,
            workers=workers,
            log_access=False,
            workers_kill_timeout=5,  # a worker that does not stop within 5 s of SIGTERM is killed
            # A few threads per worker rather than granian's dozens: measured with 2 and 4, p99 of writes fell from
            # ~1 s to ~0.1 s and of reads by half, at the same or better req/s and 20-35 MB less memory
            # (bench/RESULTS.md). Injected latency holds a thread, hence --threads.
            blocking_threads=threads,
            http1_settings=HTTP1Settings(header_read_timeout=int(header_timeout * 1000)),
        ).serve()
    finally:
        if preparation is not None:
            preparation.stop()  # a start-up child still at work when serve gives up (Ctrl-C, an import error)
        shutil.rmtree(folder, ignore_errors=True)


def _limit_malloc_arenas(arenas: int = 2) -> None:
    """At most ARENAS glibc malloc arenas in each worker, as MALLOC_ARENA_MAX does (unless that is set already).
    glibc gives every thread that allocates an arena of its own: under load (bench/run.py) a worker's threads,
    granian's and --threads, grew it by 4-7 MB of RSS, by 2-4 MB with two arenas (the tree's peak: 137 -> 132 MB),
    with no change in req/s that the runs could see. mallopt() covers the workers granian forks from this
    process; the variable, any it starts afresh."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return
    os.environ["MALLOC_ARENA_MAX"] = str(arenas)
    try:
        import ctypes

        ctypes.CDLL(None).mallopt(-8, arenas)  # -8: M_ARENA_MAX (malloc.h)
    except (OSError, AttributeError):  # not glibc (macOS has no mallopt; musl's ignores it)
        pass


@main.command()
@click.option("--seed", default=DEFAULT_SEED, show_default=True, type=click.IntRange(0, 2**63 - 1))
@click.option("--task-count", default=40, show_default=True, type=click.IntRange(1, 10_000))
def world(seed, task_count) -> None:
    """Print the seeded world (tasks and subtasks) as JSON."""
    import orjson

    from .world import build_world

    w = build_world(seed, task_count=task_count)
    sys.stdout.buffer.write(orjson.dumps({"seed": w.seed, "tasks": w.tasks, "subtasks": w.subtasks},
                                         option=orjson.OPT_INDENT_2) + b"\n")


if __name__ == "__main__":  # pragma: no cover
    main()
