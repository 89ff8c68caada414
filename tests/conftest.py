"""Shared fixtures: a strict mock app (every response checked against openapi.yaml) and its clients."""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mock_server import Config, create_app

ROOT = Path(__file__).resolve().parents[1]
SPEC_PATH = ROOT / "openapi.yaml"


def basic(user: str, password: str) -> dict:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


ADMIN = basic("admin", "admin")
VIEWER = basic("viewer", "viewer")


def slice_value(sl) -> tuple:
    """Everything an engine.TaskSlice holds, as values copied out (to tell whether anything changed it)."""
    return (dict(sl.task), {sid: (dict(s.doc), s.due_at, s.scenario, s.runs, s.run_start, tuple(s.log))
                            for sid, s in sl.subs.items()})


def retry_path(task_id=1000, subtask_id=10001) -> str:
    return f"/api/v2/tasks/instances/{task_id}/subtasks/{subtask_id}/retry"


@pytest.fixture
def app(tmp_path):
    # The clock stands still: a test moves it (POST /__mock/clock/advance), so nothing changes behind its back.
    app = create_app(Config(db_path=str(tmp_path / "world.sqlite3"), strict=True, clock_speed=0))
    yield app
    mock = app.extensions["ocp_mock"]
    assert mock.violations == [], "the mock sent responses that break openapi.yaml"


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def mock(app):
    return app.extensions["ocp_mock"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Served:
    """A real `ocp-mock serve` process (granian workers), as a user starts it."""

    def __init__(self, *args: str, port: int | None = None):
        self.port = port or free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        cli = Path(sys.executable).with_name("ocp-mock")
        self.proc = subprocess.Popen(
            [str(cli), "serve", "--port", str(self.port), *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
        )
        self.wait_ready()

    def wait_ready(self, timeout: float = 20) -> None:
        import requests

        deadline = time.monotonic() + timeout
        while True:
            try:
                requests.post(self.base + "/api/v2/ping", timeout=1)
                return
            except requests.ConnectionError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.kill()
                    raise RuntimeError("ocp-mock serve did not start:\n" + self.output())
                time.sleep(0.05)

    def output(self) -> str:
        return self.proc.stdout.read().decode(errors="replace") if self.proc.stdout else ""

    def signal(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM to the server (as a service manager sends it), then SIGKILL to all that is left."""
        try:
            self.proc.send_signal(signal.SIGTERM)
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return -1
        finally:
            self.signal(signal.SIGKILL)  # workers a failed shutdown left behind
            self.proc.wait(10)


@pytest.fixture(scope="session")
def served():
    """One `ocp-mock serve --workers 2 --strict` for the session, its clock stopped (a test moves it with
    POST /__mock/clock/advance); tests reset the world they need."""
    server = Served("--workers", "2", "--strict", "--quiet", "--clock-speed", "0")
    yield server.base
    server.stop()
