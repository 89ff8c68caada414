"""pytest plugin: the mock as fixtures for any test suite (entry point `ocp_mock`, group pytest11).

Installed with the package, so a suite gets the fixtures without a conftest import. Nothing happens unless a test
asks for one of them: no server is started and no world is built otherwise.

- `ocp_mock`: a real `ocp-mock serve` process on a free loopback port (one per session, started at first use),
  with the world reset to its seed before each test. It yields an OcpMock: `.base_url`, `.url(path)`,
  `.reset(seed=None)`, `.set_state(subtask_id, status=None, operation=None)`, `.subtask(subtask_id)`.
- `ocp_mock_app` / `ocp_mock_client`: the mock in process, a fresh Flask app (and its test client) per test,
  built from `ocp_mock_config` (override that fixture to change the Config).

Extra `serve` options come from the ini key `ocp_mock_args` (e.g. `ocp_mock_args = --seed 7 --strict`).
Disable the plugin with `-p no:ocp_mock`.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

import pytest

ADMIN_TOKEN_HEADER = "X-Mock-Admin-Token"
START_TIMEOUT = 30.0


class OcpMockError(RuntimeError):
    """The mock refused an admin call (its envelope's message says why) or did not start."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class OcpMock:
    """A handle on a running mock: its address and its admin API (/__mock)."""

    def __init__(self, base_url: str, admin_token: str | None = None):
        self.base_url = base_url.rstrip("/")
        self.admin_token = admin_token

    def url(self, path: str) -> str:
        return self.base_url + ("" if path.startswith("/") else "/") + path

    def reset(self, seed: int | None = None) -> dict:
        """Puts the world back to its start-up seed (or to SEED's world); returns the counts."""
        return self._admin("POST", "/__mock/reset", {} if seed is None else {"seed": seed})

    def set_state(self, subtask_id: int, status: str | None = None, operation: str | None = None) -> dict:
        """Forces a subtask's status and/or operation (refused with OcpMockError when the world would break)."""
        body = {k: v for k, v in (("status", status), ("operation", operation)) if v is not None}
        return self._admin("PUT", f"/__mock/subtasks/{subtask_id}", body)

    def subtask(self, subtask_id: int) -> dict:
        return self._admin("GET", f"/__mock/subtasks/{subtask_id}")["subtask"]

    def _admin(self, method: str, path: str, body: dict | None = None):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url(path), data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if self.admin_token:
            request.add_header(ADMIN_TOKEN_HEADER, self.admin_token)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return json.loads(response.read())["data"]
        except urllib.error.HTTPError as exc:
            try:
                message = json.loads(exc.read())["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = exc.reason
            raise OcpMockError(f"{method} {path}: {exc.code} {message}") from None

    def __repr__(self) -> str:
        return f"OcpMock({self.base_url!r})"


class OcpMockServer:
    """`ocp-mock serve` in a child process on a free loopback port; a context manager."""

    def __init__(self, args: list[str] | tuple[str, ...] = (), workers: int = 1):
        self.args = list(args)
        self.workers = workers
        self.proc: subprocess.Popen | None = None
        self.mock: OcpMock | None = None
        self._log = None

    def start(self) -> OcpMock:
        last_error = ""
        for _attempt in range(3):  # a free port can be taken between the check and the bind
            port = free_port()
            self._log = tempfile.TemporaryFile()
            command = [sys.executable, "-m", "mock_server.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
                       "--workers", str(self.workers), "--quiet", *self.args]
            self.proc = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
            mock = OcpMock(f"http://127.0.0.1:{port}", _option(self.args, "--admin-token"))
            if self._wait_ready(mock):
                self.mock = mock
                return mock
            last_error = self.output()
            self.stop()
        raise OcpMockError("ocp-mock serve did not start:\n" + last_error)

    def _wait_ready(self, mock: OcpMock) -> bool:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(mock.url("/openapi.json"), timeout=1):
                    return True
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.05)
        return False

    def output(self) -> str:
        if self._log is None:
            return ""
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(10)
            except ProcessLookupError:
                pass
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        if self._log is not None:
            self._log.close()
            self._log = None
        self.proc = None

    def __enter__(self) -> OcpMock:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _option(args: list[str], name: str) -> str | None:
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


# ------------------------------------------------------------------------------------------- pytest hooks

def pytest_addoption(parser) -> None:
    parser.addini("ocp_mock_args", type="args", default=[],
                  help="extra `ocp-mock serve` options for the ocp_mock fixture, e.g. --seed 7 --strict")


@pytest.fixture(scope="session")
def ocp_mock_server(pytestconfig):
    """The session's `ocp-mock serve` process (started at first use, stopped at the end of the session)."""
    server = OcpMockServer(pytestconfig.getini("ocp_mock_args"))
    mock = server.start()
    try:
        yield mock
    finally:
        server.stop()


@pytest.fixture
def ocp_mock(ocp_mock_server: OcpMock) -> OcpMock:
    """The running mock, its world reset to the start-up seed before the test."""
    ocp_mock_server.reset()
    return ocp_mock_server


@pytest.fixture
def ocp_mock_config(tmp_path):
    """The Config for ocp_mock_app: a private world file, strict mode on (override to change)."""
    from mock_server import Config

    return Config(db_path=str(tmp_path / "ocp-mock-world.sqlite3"), strict=True)


@pytest.fixture
def ocp_mock_app(ocp_mock_config):
    """The mock as a Flask app, in process."""
    from mock_server import create_app

    app = create_app(ocp_mock_config)
    yield app
    app.extensions["ocp_mock"].store.close()


@pytest.fixture
def ocp_mock_client(ocp_mock_app):
    """Flask's test client for ocp_mock_app."""
    return ocp_mock_app.test_client()


__all__ = ["OcpMock", "OcpMockError", "OcpMockServer", "free_port"]
