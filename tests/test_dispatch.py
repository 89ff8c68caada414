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
from werkzeug.exceptions import ClientDisconnected
from werkzeug.test import EnvironBuilder, run_wsgi_app
from werkzeug.wrappers import Response

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


def make_pair(folder, **options) -> list:
    """Two apps on the same seed and OPTIONS (strict unless said otherwise), the first with the fast path."""
    folder.mkdir(parents=True, exist_ok=True)
    options = {"strict": True, "clock_speed": 0, **options}
    apps = [create_app(Config(db_path=str(folder / f"world-{fast}.sqlite3"), fast_path=fast, **options))
            for fast in (True, False)]
    # The same stopped clock in both worlds, so that the times a forced state writes are the same too.
    clock = apps[0].extensions["ocp_mock"].store.clock_and_next_due()[0]
    mock = apps[1].extensions["ocp_mock"]
    mock.store.transaction(lambda conn: mock.store.set_meta(conn, "clock", clock))
    mock.runtime.forget()
    return apps


@pytest.fixture
def pair(tmp_path):
    apps = make_pair(tmp_path)
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


# -- the admin API's PUT /__mock/subtasks/{id} (the forced state), answered by the dispatcher too ---------------------

REARM = b'{"status":"FAILED","operation":"EXECUTE"}'
SUBTASK_IDS = ("10000", "10001", "10002", "10003", "10004", "10005", " 10001 ", "1_0001", "10001\\t", "..", ".")
BODIES = (REARM, b'{"status": "FAILED"}', b'{"operation": "RETRY"}', b'{"status": "SUCCESSFUL", "operation": "SKIP"}',
          b'{"status": "RUNNING"}', b'{"status": "PENDING"}', b"{}", b'{"x": 1}', b'{"status": "FAILED", "zz": [1]}',
          b'{"status": "failed"}', b'{"operation": "execute"}', b'{"status": null}', b'{"status": null, '
          b'"operation": null}', b'{"status": 1}', b'{"status": ["FAILED"]}', b'{"status": 123456789012345678901}',
          b'{"x": 9007199254740993}', b"[]", b'"FAILED"', b"1", b"null", b"true", b"x", b"{", b'{"status": "FAILED"',
          b"", b"  \n ", b"\xff\xfe", b'{"status": "\xc3\xa9"}', b'{"status": "FAILED"} trailing', b"\x00",
          b'{"status": "FAILED", "status": "READY"}', b'{"status": 1e400}', b"[" * 600 + b"]" * 600)
CONTENT_TYPES = (None, "application/json", "text/plain", "application/x-www-form-urlencoded",
                 "multipart/form-data; boundary=b", "application/json; charset=latin-1")


def admin_path(raw_id: str) -> str:
    return "/__mock/subtasks/" + quote(raw_id, safe="")


def put(pair, raw_id: str, body: bytes | None = REARM, headers: dict | None = None, **kwargs) -> tuple:
    return both(pair, "PUT", admin_path(raw_id), data=body, headers=headers or {}, **kwargs)


def test_admin_put_bodies_and_ids(pair, answered):
    expected = []
    for raw_id in IDS + SUBTASK_IDS:
        for body in BODIES:
            put(pair, raw_id, body)
            if raw_id and raw_id.isascii():  # "" is a path of no route; a non-ASCII path goes to Flask
                expected.append(("PUT", "/__mock/subtasks/" + raw_id))
    assert answered == expected


def test_admin_put_answers_and_refusals(pair, answered):
    statuses = [put(pair, "10001", REARM)[0],  # the re-arm of bench's retry-200 workload
                put(pair, "10005", b'{"status": "RUNNING"}')[0],  # its upstream has not succeeded
                put(pair, "99999", REARM)[0], put(pair, "abc", REARM)[0], put(pair, "10001", b'{"x": 1}')[0],
                put(pair, "10001", b"[1]")[0], put(pair, "10001", b"{")[0], put(pair, "10001", b'{"status": "NO"}')[0]]
    assert statuses == [200, 409, 404, 400, 400, 400, 400, 400]
    assert len(answered) == len(statuses)
    worlds = [app.test_client().get("/__mock/world").get_json()["data"] for app in pair]
    assert worlds[0] == worlds[1]


def test_admin_put_content_types_and_headers(pair, answered):
    for content_type in CONTENT_TYPES:
        for body in (REARM, b"status=FAILED", b"--b\r\nContent-Disposition: form-data; name=status\r\n\r\nFAILED\r\n--b--"):
            for extra in ({}, {"X-ReturnStackTrace": "true"}, {"X-ReturnStackTrace": "TRUE"}, {"Prefer": "code=500"},
                          ADMIN, {"Authorization": "Bearer x"}):
                headers = {**extra, **({"Content-Type": content_type} if content_type else {})}
                put(pair, "10001", body, headers)
                put(pair, "abc", body, headers)
    both(pair, "PUT", admin_path("10001"), json={"status": "FAILED"})
    both(pair, "PUT", admin_path("10001"), data={"status": "FAILED"})  # a form, as the test client encodes it
    assert len(answered) == len(CONTENT_TYPES) * 3 * 6 * 2 + 2
    _, _, _, had_trace = put(pair, "10001", b"x", {"X-ReturnStackTrace": "true"})
    assert had_trace


def test_admin_put_content_length_as_werkzeug_reads_it(pair, answered):
    """The body is read as Flask reads it: up to Content-Length (a malformed one is 0), or to the end of a stream
    the server terminates (wsgi.input_terminated, as granian sets it: the stream ends where its Content-Length
    says, or earlier if the client left); a client gone mid-body is Werkzeug's 400."""
    taken = ("5", "0", "abc", " 41", "+41", "-1", "", "41", "42", "4200")
    for length in taken:
        for body in (REARM, b""):
            put(pair, "10001", body, environ_overrides={"CONTENT_LENGTH": length})
    terminated = [("41", REARM), ("4200", REARM), ("41", REARM[:20]), ("0", b""), ("5", b"")]
    for length, body in terminated:
        put(pair, "10001", body, environ_overrides={"CONTENT_LENGTH": length, "wsgi.input_terminated": True})
    assert len(answered) == len(taken) * 2 + len(terminated)
    gone = put(pair, "10001", REARM, environ_overrides={"CONTENT_LENGTH": "4200"})  # the client left mid-body
    assert gone[0] == 400 and gone[2]["error"]["message"] == ClientDisconnected.description
    answered.clear()
    for length in (None, "abc", " 41"):  # a terminated stream: Flask reads it to its end, not to a Content-Length
        both_raw(pair, "PUT", admin_path("10001"), REARM, {"CONTENT_LENGTH": length, "wsgi.input_terminated": True})
    put(pair, "10001", REARM, {"Transfer-Encoding": "chunked"})
    put(pair, "10001", REARM, {"Transfer-Encoding": "identity"})
    assert answered == []


def test_read_body_reads_a_body_handed_over_in_parts():
    """A server's input stream may return less than asked for: the body is read on to its Content-Length (or to
    the stream's end, which is no error on a terminated stream)."""
    import io

    class Trickle(io.RawIOBase):  # hands over at most 7 bytes a read
        def __init__(self, data: bytes):
            self.data = data

        def readable(self):
            return True

        def readinto(self, buffer):
            n = min(7, len(buffer), len(self.data))
            buffer[:n], self.data = self.data[:n], self.data[n:]
            return n

    for length, want in ((str(len(REARM)), REARM), ("4200", REARM), ("5", REARM[:5]), ("0", b"")):
        environ = {"CONTENT_LENGTH": length, "wsgi.input_terminated": True, "wsgi.input": Trickle(REARM)}
        assert dispatch_module.read_body(environ, 2**20) == want, length


def both_raw(pair, method: str, path: str, body: bytes, environ: dict) -> tuple:
    """both(), for an environ the test client would not make: ENVIRON's values replace the built ones (None: the
    key is left out)."""
    answers = []
    for app in pair:
        built = EnvironBuilder(path=path, method=method, data=body).get_environ()
        built.update(environ)
        answers.append(_normal(Response(*run_wsgi_app(app, {k: v for k, v in built.items() if v is not None}))))
    assert answers[0] == answers[1], f"{method} {path} {environ}: the dispatcher and Flask answer differently"
    return answers[0]


def test_admin_put_over_the_limits_goes_to_flask(tmp_path, answered):
    pair = make_pair(tmp_path, max_body_bytes=64)
    at_limit = b'{"status": "FAILED", "operation": "EXECUTE"}'.ljust(64)
    assert put(pair, "10001", at_limit)[0] == 200
    assert len(answered) == 1
    assert put(pair, "10001", at_limit + b" ")[0] == 413
    assert put(pair, "10001", REARM, {"X-Big": "x" * 20_000})[0] == 431
    assert put(pair, "10001", REARM, environ_overrides={"CONTENT_LENGTH": "65"})[0] == 413
    assert len(answered) == 1


@pytest.mark.parametrize("token", [None, "s3cret"])
def test_admin_put_and_the_admin_token(tmp_path, answered, token):
    pair = make_pair(tmp_path, admin_token=token)
    for given in (None, "s3cret", "wrong", "s3cret ", "S3CRET", "", "\xe9"):
        headers = {} if given is None else {"X-Mock-Admin-Token": given}
        for raw_id, body in (("10001", REARM), ("abc", REARM), ("10001", b"x"), ("99999", REARM)):
            status = put(pair, raw_id, body, {**headers, "X-ReturnStackTrace": "true"})[0]
            if token and given != token:
                assert status == 401
    assert len(answered) == 7 * 4


def test_admin_put_with_the_admin_api_off(tmp_path, answered):
    pair = make_pair(tmp_path, admin=False)
    assert put(pair, "10001")[0] == 404
    assert put(pair, "10001", b"x", {"Origin": "http://localhost:3000"})[0] == 404
    assert answered == []


def test_admin_put_with_cors(pair, answered):
    for origin in ("http://localhost:3000", "http://127.0.0.1:5173", "http://evil.example", "null"):
        for raw_id, body in (("10001", REARM), ("abc", REARM), ("10001", b"x")):
            put(pair, raw_id, body, {"Origin": origin})
    preflight = {"Origin": "http://localhost:3000", "Access-Control-Request-Method": "PUT"}
    both(pair, "OPTIONS", admin_path("10001"), headers=preflight)  # the CORS layer's own answer
    assert len(answered) == 12


def test_admin_put_not_strict(tmp_path, answered):
    pair = make_pair(tmp_path, strict=False)
    for raw_id, body in (("10001", REARM), ("abc", REARM), ("10001", b"x"), ("10005", b'{"status": "RUNNING"}')):
        put(pair, raw_id, body)
    assert len(answered) == 4


def test_admin_put_strict_violation(pair, answered, monkeypatch):
    """A forced state whose answer broke the contract would be the same logged 500 on both paths."""
    from mock_server import envelope

    real = envelope.Envelope.success
    monkeypatch.setattr(envelope.Envelope, "success",
                        lambda self, data, status, *a: real(self, data, status + 1 if data else status, *a))
    assert put(pair, "10001")[0] == 500
    for app in pair:
        violations = app.extensions["ocp_mock"].violations
        assert len(violations) == 1 and "PUT /__mock/subtasks/10001" in violations[0]
        violations.clear()
    assert len(answered) == 1


def test_admin_put_access_log(tmp_path, answered, caplog):
    pair = make_pair(tmp_path, access_log=True)
    lines = []
    for app in pair:
        caplog.clear()
        with caplog.at_level("INFO", logger="ocp_mock.access"):
            client = app.test_client()
            for raw_id, body in (("10001", REARM), ("abc", REARM), ("10001", b"x"), ("10005", b'{"status": "RUNNING"}')):
                client.put(admin_path(raw_id), data=body)
        lines.append([r.getMessage().split(" ")[1:-1] for r in caplog.records if r.name == "ocp_mock.access"])
    assert lines[0] == lines[1] and len(lines[0]) == 4
    assert lines[0][0] == ["PUT", "/__mock/subtasks/10001", "200"]
    assert len(answered) == 4


def test_admin_put_with_faults(pair, answered, monkeypatch):
    """Faults never apply to the admin API; a fault board that cannot be read is Flask's 500 on both paths."""
    for app in pair:
        rules = {"rules": [{"operation": "retrySubtask", "failure": 503}, {"route": "/**", "failure": 500}]}
        assert app.test_client().put("/__mock/faults", json=rules).status_code == 200
    assert put(pair, "10001")[0] == 200
    assert put(pair, "10001", headers={"Prefer": "code=503"})[0] == 200
    assert len(answered) == 2
    from mock_server.faults import FaultBoard

    def broken(self):
        raise RuntimeError("the store cannot be read")

    monkeypatch.setattr(FaultBoard, "current", broken)
    assert put(pair, "10001")[0] == 500
    assert len(answered) == 2


ADMIN_KEYS = st.sampled_from(["status", "operation", "x", ""]) | st.text(max_size=6)
ADMIN_VALUES = (st.sampled_from(["FAILED", "READY", "RUNNING", "SUCCESSFUL", "PENDING", "CANCELED", "EXECUTE",
                                 "RETRY", "SKIP", "CANCEL", "ROLLBACK", "failed", ""]) | st.none() | st.booleans()
                | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False) | st.text(max_size=8) | st.lists(st.integers(-5, 5), max_size=2))
ADMIN_BODIES = st.one_of(
    st.dictionaries(ADMIN_KEYS, ADMIN_VALUES, max_size=3).map(orjson.dumps),
    st.binary(max_size=40),
    st.sampled_from(BODIES),
    st.recursive(st.none() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=5), lambda v: st.lists(v, max_size=3), max_leaves=6)
    .map(orjson.dumps),
)
ADMIN_IDS = st.one_of(st.sampled_from(SUBTASK_IDS + IDS), st.integers(min_value=9990, max_value=10050).map(str),
                      st.integers().map(str), SEGMENT)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw_id=ADMIN_IDS, body=ADMIN_BODIES, content_type=st.sampled_from(CONTENT_TYPES), trace=st.booleans())
def test_random_admin_puts_get_the_same_answer(pair, answered, raw_id, body, content_type, trace):
    headers = {**({"Content-Type": content_type} if content_type else {}),
               **({"X-ReturnStackTrace": "true"} if trace else {})}
    before = len(answered)
    put(pair, raw_id, body, headers)
    assert len(answered) - before == (1 if raw_id and raw_id.isascii() and "/" not in raw_id else 0), raw_id


_ENV_KEYS = st.one_of(st.sampled_from(["HTTP_HOST", "HTTP_X_A", "HTTP_", "PATH", "HOME", "CONTENT_LENGTH", "wsgi.input",
                                       "REQUEST_METHOD", "HTTP_PROXY"]),
                      st.text(min_size=0, max_size=12), st.text(max_size=8).map(lambda t: "HTTP_" + t))
_ENV_VALUES = st.one_of(st.text(max_size=40), st.integers(), st.none(), st.binary(max_size=8))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.dictionaries(_ENV_KEYS, _ENV_VALUES, max_size=12), min_size=1, max_size=4))
def test_header_bytes_counts_what_the_plain_sum_counts(environs):
    """header_bytes() skips the keys it has learnt are not headers: over any run of environs (which teaches it
    keys), it answers as the plain sum over HTTP_ keys with str values."""
    from mock_server.app import header_bytes

    for environ in environs:
        plain = sum(len(k) + len(v) for k, v in environ.items() if k.startswith("HTTP_") and isinstance(v, str))
        assert header_bytes(environ) == plain
