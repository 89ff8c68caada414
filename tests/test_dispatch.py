"""The dispatcher (dispatch.py) answers exactly as the Flask path does.

Two apps on the same seed, one with the fast path and one without, get the same requests in the same order; their
answers must be equal but for what is different on every call (traceId, timestamp, duration, the frames of a
stack trace). Each request is also checked to have been answered by the path the test expects."""

from __future__ import annotations

import base64
import re
from urllib.parse import quote

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import ADMIN, VIEWER, basic
from mock_server import Config, create_app
from mock_server import dispatch as dispatch_module
from mock_server.spec import load_spec

SPEC = load_spec(str(Config().spec_path))
TASK_PATH = "/api/v2/tasks/instances"
IDS = ("1000", "10001", "10002", "10004", "99999", "abc", "-1", "+10001", "0", "1e3", "0x10", "9223372036854775808",
       "-9223372036854775809", "10001.0", "٣", "%20", "1%2F2", "")
AUTHS = (None, ADMIN, VIEWER, basic("admin", "wrong"), basic("nobody", "x"), {"Authorization": "Basic"},
         {"Authorization": "Basic !!!"}, {"Authorization": "basic " + base64.b64encode(b"admin:admin").decode()},
         {"Authorization": "Bearer abc"}, {"Authorization": "OCP-ACCESS-KEY-HMACSHA1 admin-ak:bad"})
QUERIES = ("", "page=2&size=5", "page=0", "size=2001", "sort=name,desc", "sort=bogus", "status=FAILED",
           "status=failed", "name=install", "name=%FF", "page=1&page=2", "page=&size=", "type=INSTALL_OCP_AGENT", "x=1")


def _paths() -> list[tuple[str, str]]:
    """(method, path template with {taskInstanceId} and {subtaskInstanceId}) of every operation."""
    return [(op.method, op.path) for op in SPEC.operations.values()]


@pytest.fixture
def pair(tmp_path):
    apps = []
    for fast in (True, False):
        apps.append(create_app(Config(db_path=str(tmp_path / f"world-{fast}.sqlite3"), strict=True, clock_speed=0,
                                      fast_path=fast)))
    yield apps
    for app in apps:
        assert app.extensions["ocp_mock"].violations == []


@pytest.fixture
def answered(monkeypatch):
    """The requests the dispatcher answered, as (method, path)."""
    seen = []
    original = dispatch_module.Dispatcher.answer

    def answer(self, environ, start_response, op, path, values):
        seen.append((environ["REQUEST_METHOD"], path))
        return original(self, environ, start_response, op, path, values)

    monkeypatch.setattr(dispatch_module.Dispatcher, "answer", answer)
    return seen


def _normal(response) -> tuple:
    body = response.get_data()
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        doc = body
    had_trace = False
    if isinstance(doc, dict):
        for key in ("traceId", "timestamp", "duration"):
            assert key in doc, doc
            doc[key] = "*"
        if isinstance(doc.get("error"), dict) and "stackTrace" in doc["error"]:
            had_trace = bool(doc["error"].pop("stackTrace"))
    headers = sorted((k.lower(), v) for k, v in response.headers.items() if k.lower() != "content-length")
    return response.status_code, headers, doc, had_trace


def both(pair, method: str, path: str, **kwargs) -> tuple:
    fast, flask = (app.test_client().open(path, method=method, **kwargs) for app in pair)
    a, b = _normal(fast), _normal(flask)
    assert a == b, f"{method} {path} {kwargs}: the dispatcher and Flask answer differently"
    assert fast.status == flask.status, f"{method} {path} {kwargs}: the status lines differ"
    return a


def test_every_operation_with_ids_and_credentials(pair, answered):
    for method, template in _paths():
        for task_id in ("1000", "99999", "abc"):
            for sub_id in IDS:
                path = template.replace("{taskInstanceId}", task_id).replace("{subtaskInstanceId}", quote(sub_id))
                for auth in AUTHS:
                    both(pair, method, path, headers=auth or {})
    assert len(answered) > 1000


def test_the_dispatcher_answers_the_common_calls_and_hands_on_the_rest(pair, answered):
    retry = f"{TASK_PATH}/1000/subtasks/10001/retry"
    both(pair, "POST", retry, headers=ADMIN)  # 200
    both(pair, "POST", retry, headers=ADMIN)  # 400 (now READY)
    both(pair, "POST", retry)  # 401
    both(pair, "POST", retry, headers=VIEWER)  # 403
    both(pair, "GET", f"{TASK_PATH}/1000", headers=ADMIN)
    both(pair, "GET", TASK_PATH, headers=ADMIN, query_string="page=1&size=3")
    assert answered == [("POST", retry)] * 4 + [("GET", f"{TASK_PATH}/1000"), ("GET", TASK_PATH)]
    answered.clear()
    handed_on = [
        ("POST", retry, {"headers": {**ADMIN, "Prefer": "code=404"}}),
        ("POST", retry, {"headers": ADMIN, "data": b"{}"}),
        ("POST", retry, {"headers": {"Authorization": "OCP-ACCESS-KEY-HMACSHA1 admin-ak:bad"}}),
        ("POST", retry, {"headers": {**ADMIN, "X-Big": "x" * 20_000}}),  # 431
        ("HEAD", f"{TASK_PATH}/1000", {"headers": ADMIN}),
        ("GET", f"{TASK_PATH}/1000/", {"headers": ADMIN}),
        ("DELETE", retry, {"headers": ADMIN}),  # 405
        ("GET", "/__mock/health", {}),
        ("GET", f"{TASK_PATH}/é", {"headers": ADMIN}),
    ]
    for method, path, kwargs in handed_on:
        both(pair, method, path, **kwargs)
    assert answered == []


def test_queries(pair, answered):
    for query in QUERIES:
        for auth in (ADMIN, VIEWER, None):
            both(pair, "GET", TASK_PATH, headers=auth or {}, query_string=query)
    assert len(answered) == len(QUERIES) * 3


def test_stack_trace_on_request(pair, answered):
    status, _, doc, had_trace = both(pair, "POST", f"{TASK_PATH}/1000/subtasks/abc/retry",
                                     headers={**ADMIN, "X-ReturnStackTrace": "true"})
    assert status == 400 and had_trace
    assert answered


def test_faults_hand_the_operation_on(pair, answered):
    for app in pair:
        put = app.test_client().put("/__mock/faults", json={"rules": [{"operation": "getTaskInstance",
                                                                       "failure": 503}]})
        assert put.status_code == 200, put.get_data(as_text=True)
    assert both(pair, "GET", f"{TASK_PATH}/1000", headers=ADMIN)[0] == 503
    assert both(pair, "POST", f"{TASK_PATH}/1000/subtasks/10002/retry", headers=ADMIN)[0] == 400
    assert answered == [("POST", f"{TASK_PATH}/1000/subtasks/10002/retry")]


def test_the_state_both_paths_leave_is_the_same(pair):
    for sub_id in (10000, 10001, 10002, 10003, 10004, 10005):
        for action in ("retry", "skip", "cancel"):
            both(pair, "POST", f"{TASK_PATH}/1000/subtasks/{sub_id}/{action}", headers=ADMIN)
    for action in ("retry", "rollback"):
        both(pair, "POST", f"{TASK_PATH}/1000/{action}", headers=ADMIN)
    worlds = [app.test_client().get("/__mock/world").get_json()["data"] for app in pair]
    assert worlds[0] == worlds[1]


SEGMENT = st.text(st.characters(min_codepoint=32, max_codepoint=0x2FF, blacklist_characters="/?#"), max_size=24)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_requests_get_the_same_answer(pair, data):
    method, template = data.draw(st.sampled_from(_paths()))
    method = data.draw(st.sampled_from([method, method, "GET", "POST", "PUT"]))
    path = re.sub(r"\{[^}]+\}", lambda _: quote(data.draw(SEGMENT), safe=""), template)
    if data.draw(st.booleans()):
        path += data.draw(st.sampled_from(["", "/", "/x", "//"]))
    query = data.draw(st.one_of(st.sampled_from(QUERIES),
                                st.text(st.characters(min_codepoint=33, max_codepoint=126, blacklist_characters="#"),
                                        max_size=30)))
    auth = data.draw(st.sampled_from(AUTHS))
    both(pair, method, path, headers=auth or {}, query_string=query)
