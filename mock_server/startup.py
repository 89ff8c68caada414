"""`ocp-mock serve`'s start-up work, done in a short-lived child process before granian starts its workers: check
the users and scenario files, build (or open) the world, apply the scenarios.

Granian's main process forks the workers and then only supervises them. Done there, this work would leave it
holding the app (Flask, jsonschema, Faker, the world: ~25 MB of RSS) for the life of the server, and every worker
would start as a copy of it. So the main process imports only click, granian and light modules (cli.py,
config.py, this one); the child imports the app, and its memory goes when it exits.

The child gets the same sys.path as this process (as multiprocessing's spawn does), so it imports the same
mock_server whatever the current directory holds. It gets a JSON request as its first argument and writes one
JSON answer on stdout: {"seed": N, "scenarios": [names]} or {"error": one line, "param": the option at fault or null}.
"""

from __future__ import annotations

import json
import subprocess
import sys

from .config import Config

_CHILD = "import sys; sys.path[:] = sys.argv[2:]; from mock_server.startup import main; main(sys.argv[1])"


class Preparation:
    """prepare() running in a child process, started at once (the caller meanwhile imports granian);
    USERS_FILE and SCENARIO_FILES as given on the command line, for the messages."""

    def __init__(self, config: Config, users_file: str | None, scenario_files: list[str]):
        request = json.dumps({"config": config.to_json(), "users_file": users_file, "scenario_files": scenario_files})
        self._child = subprocess.Popen([sys.executable, "-c", _CHILD, request, *sys.path], stdin=subprocess.DEVNULL,
                                       stdout=subprocess.PIPE, text=True)

    def stop(self) -> None:
        """Ends the child if it is still at work."""
        if self._child.poll() is None:
            self._child.kill()
            self._child.wait()

    def answer(self) -> dict:
        """Waits for the child; its answer (see the module's docstring)."""
        out, _ = self._child.communicate()
        try:
            return json.loads(out)
        except ValueError:  # it died before answering (its stderr is ours: the reason is above)
            return {"error": f"the start-up process ended with status {self._child.returncode} before the world "
                             "was ready", "param": None}


def prepare(config: Config, users_file: str | None, scenario_files: list[str]) -> dict:
    """Checks the users file, then the scenario files (in full, before anything is created), then seeds or opens
    the world and applies the scenarios once; leaves the world of --seed in Config.world_cache for the workers'
    resets. The answer: as the module's docstring says."""
    from .auth import UsersFileError, load_users

    if users_file:
        try:
            load_users(users_file)
        except UsersFileError as exc:
            return {"error": str(exc), "param": "--users"}
    from .app import create_app
    from .scenarios import load_files
    from .spec import load_spec
    from .world import build_world, share_built_worlds

    share_built_worlds(config.world_cache)
    try:
        names = [d.name for d in load_files(scenario_files, load_spec(config.spec_path))] if scenario_files else []
        store = create_app(config).extensions["ocp_mock"].store
        seed = store.seed()
        store.close()
    except ValueError as exc:
        return {"error": str(exc), "param": None}
    build_world(config.seed, config.task_count)  # for the workers' resets (already built unless the file held one)
    return {"seed": seed, "scenarios": names}


def main(request_json: str) -> None:
    """The child's entry point (see _CHILD)."""
    try:
        request = json.loads(request_json)
        answer = prepare(Config.from_json(request["config"]), request["users_file"], request["scenario_files"])
    except KeyboardInterrupt:  # Ctrl-C reaches the whole process group; the parent reports it
        sys.exit(130)
    sys.stdout.write(json.dumps(answer) + "\n")
