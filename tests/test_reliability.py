"""Reliability and security of `ocp-mock serve`: bad input, durability, shutdown, the admin token, logs."""

from __future__ import annotations

import base64
import http.client
import signal
import socket
import threading
import time

import pytest
import requests

from conftest import Served
from mock_server.config import is_loopback

RETRY = "/api/v2/tasks/instances/1000/subtasks/{}/retry"
ADMIN = ("admin", "admin")
ADMIN_HEADER = {"Authorization": "Basic " + base64.b64encode(b"admin:admin").decode()}
VIEWER_HEADER = {"Authorization": "Basic " + base64.b64encode(b"viewer:viewer").decode()}


def raw_request(port: int, method: str, path: str, headers: dict | None = None, body: bytes | None = None):
    """One request on its own connection, written byte for byte. A server may answer (413, 431) and close before
    the client has sent everything: the send is allowed to fail, the answer is read all the same."""
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except ConnectionResetError:
            pass
    response = http.client.HTTPResponse(_Replay(received))
    response.begin()
    return response.status, response.getheader("Content-Type"), response.read()


class _Replay:
    def __init__(self, data: bytes):
        self.data = data

    def makefile(self, *_args, **_kwargs):
        import io

        return io.BytesIO(self.data)


def world_of(base: str) -> dict:
    return requests.get(base + "/__mock/world", timeout=5).json()["data"]


# Each entry: (what, method, path, headers, body, expected status). None of them may change the world.
CATALOGUE = [
    ("id not a number", "POST", RETRY.format("abc"), ADMIN_HEADER, None, 400),
    ("id overflows int64", "POST", RETRY.format("9223372036854775808"), ADMIN_HEADER, None, 400),
    ("id underflows int64", "POST", RETRY.format("-9223372036854775809"), ADMIN_HEADER, None, 400),
    ("id negative", "POST", RETRY.format("-1"), ADMIN_HEADER, None, 404),
    ("id empty", "POST", RETRY.format(""), ADMIN_HEADER, None, 404),
    ("id unicode", "POST", RETRY.format("%E4%B8%AD%E6%96%87"), ADMIN_HEADER, None, 400),
    ("id with encoded slash", "POST", RETRY.format("100%2F01"), ADMIN_HEADER, None, 404),
    ("id with encoded NUL", "POST", RETRY.format("10001%00"), ADMIN_HEADER, None, 400),
    ("id with spaces", "POST", RETRY.format("%2010001%20"), ADMIN_HEADER, None, 400),
    ("id in exponent form", "POST", RETRY.format("1e4"), ADMIN_HEADER, None, 400),
    ("id in hex", "POST", RETRY.format("0x2711"), ADMIN_HEADER, None, 400),
    ("id fractional", "POST", RETRY.format("10001.0"), ADMIN_HEADER, None, 400),
    ("task id not a number", "POST", "/api/v2/tasks/instances/x/subtasks/10001/retry", ADMIN_HEADER, None, 400),
    ("garbage query string", "POST", RETRY.format(99999) + "?%zz=%%&a", ADMIN_HEADER, None, 404),
    ("very long path", "POST", "/api/v2/" + "a" * 8000, ADMIN_HEADER, None, 404),
    ("oversized header", "POST", RETRY.format(10001), {**ADMIN_HEADER, "X-Big": "x" * 40_000}, None, 431),
    ("oversized body", "POST", RETRY.format(10001), ADMIN_HEADER, b"{" * (2 * 1024 * 1024), 413),
    ("body on a call that takes none", "POST", RETRY.format(10002), ADMIN_HEADER, b"\xff\xfe{not json", 400),
    ("no credentials", "POST", RETRY.format(10001), {}, None, 401),
    ("Basic not base64", "POST", RETRY.format(10001), {"Authorization": "Basic !!!"}, None, 401),
    ("Basic without colon", "POST", RETRY.format(10001), {"Authorization": "Basic YWRtaW4="}, None, 401),
    ("Basic empty", "POST", RETRY.format(10001), {"Authorization": "Basic "}, None, 401),
    ("Basic not UTF-8", "POST", RETRY.format(10001), {"Authorization": "Basic " + base64.b64encode(b"\xff:\xfe").decode()}, None, 401),
    ("unknown scheme", "POST", RETRY.format(10001), {"Authorization": "Digest username=admin"}, None, 401),
    ("bearer token", "POST", RETRY.format(10001), {"Authorization": "Bearer abc.def.ghi"}, None, 401),
    ("wrong password", "POST", RETRY.format(10001), {"Authorization": "Basic " + base64.b64encode(b"admin:x").decode()}, None, 401),
    ("viewer acting", "POST", RETRY.format(10001), VIEWER_HEADER, None, 403),
    ("GET on an action", "GET", RETRY.format(10001), ADMIN_HEADER, None, 405),
    ("DELETE on an action", "DELETE", RETRY.format(10001), ADMIN_HEADER, None, 405),
    ("odd method", "FROB", RETRY.format(10001), ADMIN_HEADER, None, 405),
    ("OPTIONS without CORS", "OPTIONS", RETRY.format(10001), ADMIN_HEADER, None, 405),
    ("unknown path", "POST", "/api/v2/tasks/nothing", ADMIN_HEADER, None, 404),
    ("admin: malformed JSON", "PUT", "/__mock/subtasks/10001", {"Content-Type": "application/json"}, b"{oops", 400),
    ("admin: JSON not an object", "PUT", "/__mock/subtasks/10001", {"Content-Type": "application/json"}, b"[1]", 400),
    ("admin: unknown status", "PUT", "/__mock/subtasks/10001", {}, b'{"status": "DONE"}', 400),
    ("admin: lower-case status", "PUT", "/__mock/subtasks/10001", {}, b'{"status": "ready"}', 400),
    ("admin: unknown field", "PUT", "/__mock/subtasks/10001", {}, b'{"status": "READY", "x": 1}', 400),
    ("admin: inconsistent state", "PUT", "/__mock/subtasks/10005", {}, b'{"status": "SUCCESSFUL"}', 409),
    ("admin: bad seed", "POST", "/__mock/reset", {}, b'{"seed": "x"}', 400),
    ("admin: id overflow", "PUT", "/__mock/subtasks/99999999999999999999", {}, b'{"status": "FAILED"}', 400),
]


def test_catalogue_is_large_enough():
    assert len(CATALOGUE) >= 25


@pytest.mark.parametrize("what, method, path, headers, body, expected", CATALOGUE, ids=[c[0] for c in CATALOGUE])
def test_malformed_request_gets_a_4xx_in_the_envelope_and_changes_nothing(served, what, method, path, headers,
                                                                         body, expected):
    port = int(served.rsplit(":", 1)[1])
    before = world_of(served)
    status, content_type, raw = raw_request(port, method, path, headers, body)
    assert status == expected, raw[:300]
    assert content_type == "application/json"
    envelope = requests.models.complexjson.loads(raw)
    assert envelope["status"] == status and envelope["successful"] is False
    assert isinstance(envelope["error"]["code"], int) and envelope["error"]["message"]
    assert "stackTrace" not in envelope["error"]
    assert world_of(served) == before, "a refused request changed the world"


def test_slow_clients_are_cut_off(tmp_path):
    server = Served("--quiet", "--workers", "1", "--header-timeout", "0.5")
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(b"POST /api/v2/tasks/instances/1000/subtasks/10001/retry HTTP/1.1\r\nHost: x\r\n")
            started = time.monotonic()
            try:
                leftover = sock.recv(1024)  # the server closes (or answers 408) instead of waiting forever
            except ConnectionResetError:
                leftover = b""
            assert time.monotonic() - started < 5
            assert leftover == b"" or leftover.startswith(b"HTTP/1.1 408")
        assert requests.post(server.base + RETRY.format(99), auth=ADMIN, timeout=5).status_code == 404
    finally:
        server.stop()


def test_state_file_survives_sigkill_with_every_acknowledged_change(tmp_path):
    state = tmp_path / "state.sqlite3"
    # The clock stands still, so an acknowledged retry is still READY after the restart (not already running).
    server = Served("--quiet", "--state-file", str(state), "--clock-speed", "0")
    acknowledged: list[int] = []
    # Subtasks whose operation is not RETRY yet: an acknowledged retry leaves operation RETRY whatever the
    # subtask does next (the mock's clock runs it again, and it may succeed or fail).
    failed = [s["id"] for s in requests.get(server.base + "/__mock/subtasks?status=FAILED", timeout=5).json()["data"]
              if s["operation"] != "RETRY"]
    stop = threading.Event()

    def writer(ids):
        with requests.Session() as session:
            for sid in ids:
                if stop.is_set():
                    return
                try:
                    r = session.post(server.base + RETRY.format(sid), auth=ADMIN, timeout=5)
                except requests.RequestException:
                    return
                if r.status_code == 200:
                    acknowledged.append(sid)

    threads = [threading.Thread(target=writer, args=(failed[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    while len(acknowledged) < max(1, len(failed) // 2) and any(t.is_alive() for t in threads):
        time.sleep(0.001)
    server.signal(signal.SIGKILL)  # in the middle of the writes
    stop.set()
    for t in threads:
        t.join()
    server.proc.wait(10)
    assert acknowledged

    again = Served("--quiet", "--state-file", str(state), "--clock-speed", "0")
    try:
        world = world_of(again.base)
        by_id = {s["id"]: s for s in world["subtasks"]}
        for sid in acknowledged:
            assert by_id[sid]["operation"] == "RETRY", sid
        from mock_server.world import check_invariants

        assert check_invariants(world["subtasks"]) == []
    finally:
        again.stop()


def test_sigterm_shuts_down_gracefully_and_keeps_state(tmp_path):
    state = tmp_path / "state.sqlite3"
    server = Served("--quiet", "--state-file", str(state))
    assert requests.post(server.base + RETRY.format(10001), auth=ADMIN, timeout=5).status_code == 200
    assert server.stop() == 0
    again = Served("--quiet", "--state-file", str(state))
    try:
        assert requests.post(again.base + RETRY.format(10001), auth=ADMIN, timeout=5).status_code == 400
    finally:
        again.stop()


def test_a_file_that_is_not_a_state_file_is_refused_and_left_alone(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    junk = tmp_path / "notes.txt"
    junk.write_bytes(b"my precious notes\n" * 100)
    cli = Path(sys.executable).with_name("ocp-mock")
    result = subprocess.run([str(cli), "serve", "--state-file", str(junk), "--port", "1"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert "not a usable state file" in result.stderr
    assert "Traceback" not in result.stderr
    assert junk.read_bytes() == b"my precious notes\n" * 100


def test_admin_token_guards_the_admin_api():
    server = Served("--quiet", "--admin-token", "s3cret-token")
    try:
        assert requests.get(server.base + "/__mock/health", timeout=5).status_code == 401
        wrong = requests.get(server.base + "/__mock/health", headers={"X-Mock-Admin-Token": "nope"}, timeout=5)
        assert wrong.status_code == 401 and wrong.json()["error"]["code"] == 0
        ok = requests.get(server.base + "/__mock/health", headers={"X-Mock-Admin-Token": "s3cret-token"}, timeout=5)
        assert ok.status_code == 200
    finally:
        server.stop()


def test_loopback_detection():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost") and is_loopback("127.8.0.1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5") and not is_loopback("example.org")


def test_access_log_never_shows_credentials():
    server = Served("--workers", "1")
    try:
        secret = base64.b64encode(b"admin:admin").decode()
        requests.post(server.base + RETRY.format(10001), auth=ADMIN, timeout=5)
        requests.post(server.base + RETRY.format(10001), headers={"Authorization": "Basic !!secret!!"}, timeout=5)
    finally:
        server.stop()
    log = server.output()
    assert "POST /api/v2/tasks/instances/1000/subtasks/10001/retry 200" in log
    assert secret not in log and "!!secret!!" not in log and "Authorization" not in log
