"""The ceiling: a bare Flask app that answers every benchmarked request with a constant body.

Same routes as the mock's benchmarked calls, same framework (Flask/Werkzeug), served by the same WSGI server
(granian, same worker count). It does nothing per request beyond Flask's dispatch: no auth, no parameter
checks, no store, no envelope. The bodies are the mock's own answers, captured by bench/run.py at start-up
(BENCH_BARE_BODIES, a JSON file), so sizes and shapes match byte for byte; without it, built-in ones of the
same shape are used.
"""

from __future__ import annotations

import json
import os

from flask import Flask, Response

_DEFAULT = {
    "retry_200": '{"data":{"createTime":"2024-11-01T08:06:59.724+08:00","description":"Install ocp agent",'
                 '"downstreams":[10005],"executor":"10.65.100.225","id":10001,"name":"Install ocp agent",'
                 '"nodeType":"JAVA_TASK","operation":"RETRY","parallelIdx":0,"prohibitRollback":false,"runTime":1,'
                 '"seriesId":2,"startTime":"2024-11-01T08:09:25.951+08:00","status":"READY","timeout":1800,'
                 '"upstreams":[10000]},"duration":0,"server":"0a7c9cdf87","status":200,"successful":true,'
                 '"timestamp":"2026-11-25T23:53:28.107+08:00","traceId":"2f213d765e4ade13"}',
    "retry_400": '{"duration":0,"error":{"code":20003,"message":"This operation is not supported for the 10002 task '
                 'in the RUNNING state."},"server":"0a7c9cdf87","status":400,"successful":false,'
                 '"timestamp":"2026-11-25T23:55:41.809+08:00","traceId":"1db3a1493a64b03b"}',
    "retry_404": '{"duration":0,"error":{"code":20000,"message":"The 99999 task does not exist."},'
                 '"server":"0a7c9cdf87","status":404,"successful":false,'
                 '"timestamp":"2026-11-25T23:55:41.817+08:00","traceId":"083a0fdb51ab7898"}',
}
_DEFAULT["put_200"] = _DEFAULT["retry_200"]
_DEFAULT["health"] = _DEFAULT["retry_200"]
_DEFAULT["task_200"] = _DEFAULT["retry_200"]


def _bodies() -> dict[str, bytes]:
    path = os.environ.get("BENCH_BARE_BODIES")
    loaded = json.loads(open(path, encoding="utf-8").read()) if path else {}
    return {k: loaded.get(k, v).encode() for k, v in _DEFAULT.items()}


BODIES = _bodies()
NOT_FOUND_ID = int(os.environ.get("BENCH_NOT_FOUND_ID", "99999"))
REFUSED_ID = int(os.environ.get("BENCH_REFUSED_ID", "10002"))
JSON = "application/json"

app = Flask(__name__)


@app.post("/api/v2/tasks/instances/<int:task_id>/subtasks/<int:subtask_id>/retry")
def retry(task_id: int, subtask_id: int):
    if subtask_id == NOT_FOUND_ID:
        return Response(BODIES["retry_404"], status=404, mimetype=JSON)
    if subtask_id == REFUSED_ID:
        return Response(BODIES["retry_400"], status=400, mimetype=JSON)
    return Response(BODIES["retry_200"], status=200, mimetype=JSON)


@app.get("/api/v2/tasks/instances/<int:task_id>")
def task(task_id: int):
    return Response(BODIES["task_200"], status=200, mimetype=JSON)


@app.put("/__mock/subtasks/<int:subtask_id>")
def rearm(subtask_id: int):
    return Response(BODIES["put_200"], status=200, mimetype=JSON)


@app.get("/__mock/health")
def health():
    return Response(BODIES["health"], status=200, mimetype=JSON)


def raw_app(environ, start_response):
    """No framework at all: the same constant answers from a plain WSGI callable (bench/variants.py `raw`), to
    price Flask/Werkzeug's own share of a request."""
    path = environ.get("PATH_INFO", "")
    if environ.get("REQUEST_METHOD") == "PUT":
        status, body = "200 OK", BODIES["put_200"]
    elif environ.get("REQUEST_METHOD") == "GET":
        status, body = "200 OK", BODIES["task_200"]
    elif path.endswith(f"/{NOT_FOUND_ID}/retry"):
        status, body = "404 NOT FOUND", BODIES["retry_404"]
    elif path.endswith(f"/{REFUSED_ID}/retry"):
        status, body = "400 BAD REQUEST", BODIES["retry_400"]
    else:
        status, body = "200 OK", BODIES["retry_200"]
    start_response(status, [("Content-Type", JSON), ("Content-Length", str(len(body)))])
    return [body]
