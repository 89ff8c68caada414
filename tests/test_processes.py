"""The real server: `ocp-mock serve` over HTTP, and the exactly-one-200 rule across worker processes."""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from mock_server import Config, create_app

RETRY = "/api/v2/tasks/instances/1000/subtasks/{}/retry"
ADMIN = ("admin", "admin")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served():
    """`ocp-mock serve` with two worker processes, as a user starts it."""
    port = free_port()
    cli = Path(sys.executable).with_name("ocp-mock")
    proc = subprocess.Popen(
        [str(cli), "serve", "--port", str(port), "--workers", "2", "--strict"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            requests.get(base + "/__mock/health", timeout=1)
            break
        except requests.ConnectionError:
            if proc.poll() is not None or time.monotonic() > deadline:
                os.killpg(proc.pid, signal.SIGKILL)
                pytest.fail("ocp-mock serve did not start:\n" + proc.stdout.read().decode(errors="replace"))
            time.sleep(0.05)
    yield base
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def test_served_retry_then_refusal(served):
    requests.post(served + "/__mock/reset", timeout=5).raise_for_status()
    first = requests.post(served + RETRY.format(10001), auth=ADMIN, timeout=5)
    assert first.status_code == 200 and first.headers["Content-Type"] == "application/json"
    assert first.json()["data"]["operation"] == "RETRY"
    second = requests.post(served + RETRY.format(10001), auth=ADMIN, timeout=5)
    assert second.status_code == 400 and second.json()["error"]["code"] == 20003
    assert requests.post(served + RETRY.format(10001), timeout=5).status_code == 401
    assert requests.post(served + RETRY.format(10001), auth=("viewer", "viewer"), timeout=5).status_code == 403
    assert requests.post(served + RETRY.format(99999), auth=ADMIN, timeout=5).status_code == 404


def test_served_exactly_one_200_across_workers(served):
    """Many concurrent retries of each FAILED subtask, spread over both worker processes: one 200 each."""
    requests.post(served + "/__mock/reset", timeout=5).raise_for_status()
    failed = [s["id"] for s in requests.get(served + "/__mock/subtasks?status=FAILED", timeout=5).json()["data"]]
    assert len(failed) >= 3

    def call(sid):
        with requests.Session() as session:  # a connection per call, so both workers answer
            return sid, session.post(served + RETRY.format(sid), auth=ADMIN, timeout=30).status_code

    with ThreadPoolExecutor(32) as pool:
        results = list(pool.map(call, [sid for sid in failed for _ in range(16)]))
    for sid in failed:
        codes = sorted(code for s, code in results if s == sid)
        assert codes == [200] + [400] * 15, (sid, codes)


def _retry_in_process(db_path: str, barrier, queue) -> None:
    client = create_app(Config(db_path=db_path)).test_client()
    barrier.wait()
    response = client.post(RETRY.format(10001), headers={"Authorization": "Basic YWRtaW46YWRtaW4="})
    queue.put(response.status_code)


def test_exactly_one_200_across_processes_sharing_a_world(tmp_path):
    db_path = str(tmp_path / "world.sqlite3")
    create_app(Config(db_path=db_path))  # seed the world once, as `ocp-mock serve` does
    ctx = multiprocessing.get_context("spawn")
    n = 8
    barrier, queue = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_retry_in_process, args=(db_path, barrier, queue)) for _ in range(n)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    codes = sorted(queue.get(timeout=5) for _ in range(n))
    assert codes == [200] + [400] * (n - 1)
