"""A floor for the success path: the least a stateful mock does for bench/run.py's retry-200 pair, as a plain WSGI
callable (bench/variants.py `lean`).

Per request it does what any mock that keeps state across worker processes must do, and nothing more:
- route by regex, check the Basic credentials against one constant, parse the integer ids;
- the admin PUT: read the body, parse its JSON, check the status against the spec's enum;
- under a write lock shared by the threads (a lock) and the worker processes (flock on a file): read the subtask's
  status from memory shared by the workers (one byte per subtask in a mapped file), refuse a retry that is not of a
  FAILED subtask (400), write the new status;
- build the subtask's new document and answer it in OCP's envelope, serialised with orjson (a timestamp, a trace id).

What it leaves out, against `ocp-mock serve`: the task's status and every other subtask (the engine's settling, its
timed transitions and run plans), the subtask's log, the world's invariants on a forced state, the journal that
lets a worker replay another's change and a later start recover it, the clock, faults, CORS, Prefer. So it prices
the pair's two requests with state but without the mock's model of OCP; it is not a mock.

The statuses start as the seeded world's for the ids the workloads use (REFUSED_ID RUNNING, NOT_FOUND_ID absent,
any other id FAILED). The documents are the mock's own answer to a re-arm, captured by bench/run.py
(BENCH_BARE_BODIES), with the id and the changed fields set per request. BENCH_LEAN_STATE names the shared file;
bench/serve_wsgi.py makes one per server.
"""

from __future__ import annotations

import ctypes
import fcntl
import mmap
import os
import re
import secrets
import threading
from datetime import datetime, timedelta, timezone

import orjson

from bare_app import BODIES, JSON, NOT_FOUND_ID, REFUSED_ID

SLOTS = 1 << 16  # one byte per subtask id, modulo this
STATUSES = ("FAILED", "READY", "RUNNING", "SUCCESSFUL", "PENDING", "CANCELING")  # code = index + 1; 0: as seeded
FAILED, READY, RUNNING = 1, 2, 3
AUTHORIZATION = "Basic YWRtaW46YWRtaW4="  # admin:admin, as bench/run.py sends
TZ = timezone(timedelta(hours=8))
RETRY = re.compile(r"/api/v2/tasks/instances/(\d+)/subtasks/(\d+)/retry\Z")
FORCE = re.compile(r"/__mock/subtasks/(\d+)\Z")
SERVER = orjson.loads(BODIES["put_200"])["server"]
BASE = orjson.loads(BODIES["put_200"])["data"]  # a re-armed (FAILED) subtask, as the mock answers it


def _shared() -> tuple[mmap.mmap, int]:
    path = os.environ["BENCH_LEAN_STATE"]
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    if os.fstat(fd).st_size < SLOTS:
        os.ftruncate(fd, SLOTS)
    return mmap.mmap(fd, SLOTS), fd


# flock without giving up the interpreter lock, as mock_server/store.py takes its file lock
_FLOCK = ctypes.PyDLL(None, use_errno=True).flock
_FLOCK.restype = ctypes.c_int
_state: tuple[mmap.mmap, int] | None = None
_turn = threading.Lock()


def _status(slots: mmap.mmap, sid: int) -> int:
    code = slots[sid % SLOTS]
    if code:
        return code
    return RUNNING if sid == REFUSED_ID else FAILED


def _now() -> str:
    return datetime.now(TZ).isoformat(timespec="milliseconds")


def _envelope(status: int, data: dict | None = None, error: dict | None = None) -> bytes:
    out = {"duration": 0, "server": SERVER, "status": status, "successful": status < 400, "timestamp": _now(),
           "traceId": secrets.token_hex(8)}
    if data is not None:
        out["data"] = data
    if error is not None:
        out["error"] = error
    return orjson.dumps(out, option=orjson.OPT_SORT_KEYS)


def _answer(start_response, status: int, body: bytes):
    start_response(f"{status} {'OK' if status == 200 else 'ERROR'}",
                   [("Content-Type", JSON), ("Content-Length", str(len(body)))])
    return [body]


def _change(sid: int, allowed_from: int | None, to: int) -> int | None:
    """Under the write lock: the subtask's status before; it becomes TO unless ALLOWED_FROM is given and differs."""
    global _state
    with _turn:
        if _state is None:
            _state = _shared()
        slots, fd = _state
        if _FLOCK(fd, fcntl.LOCK_EX | fcntl.LOCK_NB) != 0:
            fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            before = _status(slots, sid)
            if allowed_from is None or before == allowed_from:
                slots[sid % SLOTS] = to
            return before
        finally:
            _FLOCK(fd, fcntl.LOCK_UN)


def app(environ, start_response):
    path = environ.get("PATH_INFO", "")
    method = environ.get("REQUEST_METHOD")
    if method == "PUT" and (m := FORCE.match(path)):
        sid = int(m[1])
        try:
            body = orjson.loads(environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0)))
        except (ValueError, orjson.JSONDecodeError):
            return _answer(start_response, 400, _envelope(400, error={"code": 10000, "message": "Bad JSON."}))
        status = body.get("status") if isinstance(body, dict) else None
        if status not in STATUSES:
            return _answer(start_response, 400, _envelope(400, error={"code": 10000, "message": "Bad status."}))
        _change(sid, None, STATUSES.index(status) + 1)
        doc = {**BASE, "id": sid, "status": status, "operation": body.get("operation", BASE["operation"]),
               "finishTime": _now()}
        return _answer(start_response, 200, _envelope(200, doc))
    if method == "POST" and (m := RETRY.match(path)):
        if environ.get("HTTP_AUTHORIZATION") != AUTHORIZATION:
            return _answer(start_response, 401, _envelope(401, error={"code": 10000, "message": "Unauthorized."}))
        sid = int(m[2])
        if sid == NOT_FOUND_ID:
            return _answer(start_response, 404, _envelope(404, error={"code": 20000,
                                                                      "message": f"The {sid} task does not exist."}))
        before = _change(sid, FAILED, READY)
        if before != FAILED:
            return _answer(start_response, 400, _envelope(400, error={
                "code": 20003, "message": f"This operation is not supported for the {sid} task in the "
                                          f"{STATUSES[before - 1]} state."}))
        doc = {k: v for k, v in BASE.items() if k != "finishTime"}
        doc.update(id=sid, status="READY", operation="RETRY")
        return _answer(start_response, 200, _envelope(200, doc))
    return _answer(start_response, 404, _envelope(404, error={"code": 20000, "message": "No such path."}))
