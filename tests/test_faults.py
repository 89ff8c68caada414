"""Faults (latency, 500/502/503, dropped connections, hangs; PUT/GET/DELETE /__mock/faults) and the `Prefer: code=`
header, in process (the strict `app` fixture: every answer is checked against openapi.yaml) and over HTTP against
a real `ocp-mock serve --workers 2 --strict` (the session's `served` fixture).

Latency tests use small delays and check lower bounds only; nothing here asserts an upper bound on time."""

from __future__ import annotations

import http.client
import json
import math
import random
import time
from urllib.parse import urlsplit

import pytest
import requests
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import ADMIN, VIEWER, retry_path
from mock_server.faults import DroppedConnection, Invalid, Latency, parse_faults, parse_prefer
from mock_server.config import SPEC_PATH
from mock_server.spec import load_spec
from test_http import assert_envelope

SPEC = load_spec(str(SPEC_PATH))
TASK = "/api/v2/tasks/instances/1000"
LIST = "/api/v2/tasks/instances"
LOG = "/api/v2/tasks/instances/1000/subtasks/10001/log"


def put_faults(client, *rules, seed=None, status=200):
    body = {"rules": list(rules)}
    if seed is not None:
        body["seed"] = seed
    response = client.put("/__mock/faults", json=body)
    assert response.status_code == status, response.get_data(as_text=True)
    return response.get_json()["data" if status == 200 else "error"]


def subtask(client, subtask_id):
    return client.get(f"/__mock/subtasks/{subtask_id}").get_json()["data"]["subtask"]


# ------------------------------------------------------------------------------------- the admin API

def test_no_faults_at_start(client):
    assert assert_envelope(client.get("/__mock/faults"), 200)["data"] == {"seed": 0, "rules": []}


def test_put_get_delete_round_trip(client):
    data = put_faults(client, {"operation": "getTaskInstance", "latency": 5},
                      {"route": "POST /api/v2/tasks/instances/**/retry", "rate": 0.5, "failure": 503,
                       "retryAfterSeconds": 3}, seed=9)
    assert data["seed"] == 9
    assert data["rules"][0] == {"operation": "getTaskInstance", "rate": 1.0, "latency": {"fixedMs": 5},
                                "appliesTo": ["getTaskInstance"]}
    assert data["rules"][1]["appliesTo"] == ["retrySubtask", "retryTask"]  # the route's operations
    assert assert_envelope(client.get("/__mock/faults"), 200)["data"] == data
    assert assert_envelope(client.delete("/__mock/faults"), 200)["data"] == {"seed": 0, "rules": []}
    assert client.get(TASK, headers=ADMIN).status_code == 200


def test_a_bare_list_of_rules_is_accepted(client):
    response = client.put("/__mock/faults", json=[{"operation": "listTaskInstances", "failure": 500}])
    assert assert_envelope(response, 200)["data"]["rules"][0]["failure"] == 500


@pytest.mark.parametrize("body, where", [
    ({"rules": [{"operation": "getTask", "failure": 503}]}, "rules[0].operation"),
    ({"rules": [{"failure": 503}]}, "rules[0]"),
    ({"rules": [{"operation": "getTaskInstance", "route": "/x", "failure": 503}]}, "rules[0]"),
    ({"rules": [{"operation": "getTaskInstance"}]}, "rules[0]"),
    ({"rules": [{"operation": "getTaskInstance", "failure": 504}]}, "rules[0].failure"),
    ({"rules": [{"operation": "getTaskInstance", "failure": "explode"}]}, "rules[0].failure"),
    ({"rules": [{"operation": "getTaskInstance", "failure": 503.0}]}, "rules[0].failure"),
    ({"rules": [{"operation": "getTaskInstance", "failure": True}]}, "rules[0].failure"),
    ({"rules": [{"operation": "getTaskInstance", "failure": [503]}]}, "rules[0].failure"),
    ({"rules": [{"operation": ["getTaskInstance"], "failure": 503}]}, "rules[0].operation"),
    ({"rules": [{"operation": {"id": 1}, "failure": 503}]}, "rules[0].operation"),
    ({"rules": [{"operation": "getTaskInstance", "failure": 503, "rate": 1.5}]}, "rules[0].rate"),
    ({"rules": [{"operation": "getTaskInstance", "failure": 503, "rate": -0.1}]}, "rules[0].rate"),
    ({"rules": [{"operation": "getTaskInstance", "failure": 503, "rate": "half"}]}, "rules[0].rate"),
    ({"rules": [{"operation": "getTaskInstance", "failure": 503, "rate": True}]}, "rules[0].rate"),
    ({"rules": [{"operation": "getTaskInstance", "latency": -5}]}, "rules[0].latency"),
    ({"rules": [{"operation": "getTaskInstance", "latency": 10**9}]}, "rules[0].latency"),
    ({"rules": [{"operation": "getTaskInstance", "latency": {"minMs": 50}}]}, "rules[0].latency"),
    ({"rules": [{"operation": "getTaskInstance", "latency": {"minMs": 50, "maxMs": 10}}]}, "rules[0].latency.maxMs"),
    ({"rules": [{"operation": "getTaskInstance", "latency": {"meanMs": 50, "stddevMs": "x"}}]},
     "rules[0].latency.stddevMs"),
    ({"rules": [{"operation": "getTaskInstance", "latency": "slow"}]}, "rules[0].latency"),
    ({"rules": [{"operation": "getTaskInstance", "failure": 503, "timeoutSeconds": 3}]}, "rules[0].timeoutSeconds"),
    ({"rules": [{"operation": "getTaskInstance", "failure": "timeout", "timeoutSeconds": 10**6}]},
     "rules[0].timeoutSeconds"),
    ({"rules": [{"operation": "getTaskInstance", "failure": "drop", "retryAfterSeconds": 3}]},
     "rules[0].retryAfterSeconds"),
    ({"rules": [{"operation": "getTaskInstance", "failure": 503, "colour": "red"}]}, "rules[0].colour"),
    ({"rules": [{"route": "GET /nowhere/*", "failure": 503}]}, "rules[0].route"),
    ({"rules": [{"route": "FETCH /api/v2/tasks/instances", "failure": 503}]}, "rules[0].route"),
    ({"rules": [{"route": "api/v2/tasks/instances", "failure": 503}]}, "rules[0].route"),
    ({"rules": [{"route": "POST /api/**/x/**/y/**", "failure": 503}]}, "rules[0].route"),
    ({"rules": [{"route": 7, "failure": 503}]}, "rules[0].route"),
    ({"rules": "all"}, "rules"),
    ({"rules": [{"operation": "getTaskInstance", "failure": 503}] * 101}, "rules"),
    ({"seed": -1, "rules": []}, "seed"),
    ({"seed": "x", "rules": []}, "seed"),
    ({"rule": []}, "rule"),
    ("{not json", None),
    ("", None),
    ("[" * 100_000, None),
])
def test_bad_fault_sets_are_refused_and_nothing_changes(client, body, where):
    before = put_faults(client, {"operation": "getSubtaskLog", "latency": 1})
    kwargs = {"data": body} if isinstance(body, str) else {"json": body}
    error = assert_envelope(client.put("/__mock/faults", **kwargs), 400)["error"]
    assert error["message"]
    if where is not None:
        assert error["subErrors"][0]["field"] == where, error
        assert where in error["message"]
    assert client.get("/__mock/faults").get_json()["data"] == before


def test_yaml_bodies_are_accepted(client):
    response = client.put("/__mock/faults", data="seed: 3\nrules:\n  - operation: getTaskInstance\n    failure: 502\n")
    assert assert_envelope(response, 200)["data"]["seed"] == 3
    assert client.get(TASK, headers=ADMIN).status_code == 502


def test_the_admin_api_and_docs_are_never_subject_to_faults(client):
    put_faults(client, {"route": "* /**", "failure": 503})  # every operation of the API
    assert client.get(TASK, headers=ADMIN).status_code == 503
    assert client.post(retry_path(), headers=ADMIN).status_code == 503
    assert client.get("/__mock/health").status_code == 200
    assert client.get("/__mock/faults").status_code == 200
    assert client.get("/docs/").status_code == 200
    assert client.get("/openapi.json").status_code == 200
    assert client.get("/api/v2/nowhere", headers=ADMIN).status_code == 404  # not an operation: not subject


def test_a_world_reset_clears_the_faults(client):
    put_faults(client, {"operation": "getTaskInstance", "failure": 500})
    assert client.get(TASK, headers=ADMIN).status_code == 500
    assert_envelope(client.post("/__mock/reset"), 200)
    assert client.get("/__mock/faults").get_json()["data"]["rules"] == []
    assert client.get(TASK, headers=ADMIN).status_code == 200


# ------------------------------------------------------------------------------------- what faults do

@pytest.mark.parametrize("status", [500, 502, 503])
def test_injected_failures_use_the_envelope_and_leave_the_world_alone(client, mock, status):
    put_faults(client, {"operation": "retrySubtask", "failure": status, "retryAfterSeconds": 7})
    response = client.post(retry_path(), headers=ADMIN)
    body = assert_envelope(response, status)
    assert body["error"]["code"] == 0 and body["error"]["message"]
    assert "Injected by ocp-mock" in body["error"]["debugMessage"]
    assert response.headers["Retry-After"] == "7"
    assert response.headers["X-Mock-Injected"].startswith(f"fault 1 ({status})")
    assert subtask(client, 10001)["status"] == "FAILED"  # the retry did not happen
    assert mock.violations == []  # strict mode: injected answers are checked against ErrorResponse only


def test_faults_apply_before_authentication(client):
    put_faults(client, {"operation": "getTaskInstance", "failure": 503})
    assert client.get(TASK).status_code == 503
    assert client.get(TASK, headers=VIEWER).status_code == 503


@pytest.mark.parametrize("threads, rule, warned", [
    (1, {"operation": "getTaskInstance", "latency": {"fixedMs": 60}}, True),
    (1, {"operation": "getTaskInstance", "failure": "timeout", "timeoutSeconds": 1}, True),
    (1, {"operation": "getTaskInstance", "failure": 503}, False),  # answers at once
    (1, {"operation": "getTaskInstance", "latency": 0}, False),
    (4, {"operation": "getTaskInstance", "latency": {"fixedMs": 60}}, False),
    (None, {"operation": "getTaskInstance", "latency": {"fixedMs": 60}}, False),  # not served by ocp-mock serve
])
def test_a_slow_fault_on_a_one_thread_worker_is_warned_about(tmp_path, caplog, threads, rule, warned):
    """With `--threads 1` a latency or timeout holds the worker's only thread: the first call after the faults
    change says so in the log, once, and the faults still apply."""
    from mock_server.app import create_app
    from mock_server.config import Config

    client = create_app(Config(db_path=str(tmp_path / "w.sqlite3"), threads=threads)).test_client()
    put_faults(client, rule)
    with caplog.at_level("WARNING", logger="ocp_mock"):
        for _ in range(3):
            client.get("/api/v2/tasks/instances", headers=ADMIN)
    warnings = [r.getMessage() for r in caplog.records if r.name == "ocp_mock" and "--threads 1" in r.getMessage()]
    assert len(warnings) == (1 if warned else 0), warnings
    if warned:
        assert "rule 1 (getTaskInstance" in warnings[0] and "--threads 2 or more" in warnings[0]


def test_fixed_latency_delays_the_answer(client):
    put_faults(client, {"operation": "getTaskInstance", "latency": {"fixedMs": 60}})
    t0 = time.perf_counter()
    body = assert_envelope(client.get(TASK, headers=ADMIN), 200)
    assert time.perf_counter() - t0 >= 0.060
    assert body["duration"] >= 60 and body["data"]["id"] == 1000  # the envelope's duration includes the delay


def test_uniform_latency_is_at_least_its_minimum(client):
    put_faults(client, {"operation": "getTaskInstance", "latency": {"minMs": 20, "maxMs": 40}})
    for _ in range(3):
        t0 = time.perf_counter()
        assert client.get(TASK, headers=ADMIN).status_code == 200
        assert time.perf_counter() - t0 >= 0.020


def test_latency_and_failure_together(client):
    put_faults(client, {"operation": "getTaskInstance", "latency": 30, "failure": 502})
    t0 = time.perf_counter()
    assert client.get(TASK, headers=ADMIN).status_code == 502
    assert time.perf_counter() - t0 >= 0.030


def test_latency_distributions_draw_as_declared():
    rng = random.Random(5)
    uniform = [Latency("uniform", 100, 300).draw(rng) for _ in range(4000)]
    assert min(uniform) >= 100 and max(uniform) <= 300 and abs(sum(uniform) / len(uniform) - 200) < 5
    normal = [Latency("normal", 500, 100).draw(rng) for _ in range(4000)]
    mean = sum(normal) / len(normal)
    sd = math.sqrt(sum((x - mean) ** 2 for x in normal) / len(normal))
    assert abs(mean - 500) < 10 and abs(sd - 100) < 8
    assert min(Latency("normal", 10, 1000).draw(rng) for _ in range(1000)) == 0.0  # clamped: never negative
    assert Latency("fixed", 800).draw(rng) == 800


def _binomial_ok(hits: int, n: int, p: float) -> bool:
    return abs(hits - n * p) <= 4.5 * math.sqrt(n * p * (1 - p))


def test_rates_are_honoured_and_reproducible_with_a_seed(client):
    def run(n=2000) -> list[int]:
        put_faults(client, {"operation": "getTaskInstance", "rate": 0.25, "failure": 503}, seed=11)
        return [client.get(TASK, headers=ADMIN).status_code for _ in range(n)]

    first = run()
    hits = first.count(503)
    assert set(first) == {200, 503} and _binomial_ok(hits, len(first), 0.25), hits
    assert run() == first  # the same seed, the same calls: the same answers (in one process)
    put_faults(client, {"operation": "getTaskInstance", "rate": 0.25, "failure": 503}, seed=12)
    other = [client.get(TASK, headers=ADMIN).status_code for _ in range(2000)]
    assert other != first and _binomial_ok(other.count(503), 2000, 0.25)


def test_rate_zero_never_fires_and_rate_one_always(client):
    put_faults(client, {"operation": "getTaskInstance", "rate": 0, "failure": 503},
               {"operation": "listTaskInstances", "rate": 1, "failure": 500})
    assert {client.get(TASK, headers=ADMIN).status_code for _ in range(200)} == {200}
    assert {client.get(LIST, headers=ADMIN).status_code for _ in range(50)} == {500}


def test_route_patterns_match_request_paths(client):
    put_faults(client, {"route": "POST /api/v2/tasks/instances/1000/subtasks/10002/*", "failure": 502},
               {"route": "GET /api/v2/tasks/instances/{taskInstanceId}", "failure": 500})
    assert client.post(retry_path(subtask_id=10002), headers=ADMIN).status_code == 502
    assert client.post("/api/v2/tasks/instances/1000/subtasks/10002/cancel", headers=ADMIN).status_code == 502
    assert client.post(retry_path(subtask_id=10003), headers=ADMIN).status_code == 400  # another subtask
    assert client.get(TASK, headers=ADMIN).status_code == 500
    assert client.get(LIST, headers=ADMIN).status_code == 200  # the list is not /instances/{id}
    assert client.get(LOG, headers=ADMIN).status_code == 200


def test_the_first_failure_that_fires_answers(client):
    put_faults(client, {"operation": "getTaskInstance", "failure": 502}, {"operation": "getTaskInstance", "failure": 500})
    assert client.get(TASK, headers=ADMIN).status_code == 502


def test_a_dropped_connection_in_process_raises(client):
    put_faults(client, {"operation": "getTaskInstance", "failure": "drop"})
    with pytest.raises(DroppedConnection):
        client.get(TASK, headers=ADMIN).get_data()
    assert client.get(LIST, headers=ADMIN).status_code == 200


def test_a_timeout_hangs_then_drops(client):
    put_faults(client, {"operation": "getTaskInstance", "failure": "timeout", "timeoutSeconds": 0.05})
    t0 = time.perf_counter()
    with pytest.raises(DroppedConnection):
        client.get(TASK, headers=ADMIN).get_data()
    assert time.perf_counter() - t0 >= 0.05


# ------------------------------------------------------------------------------------- Prefer: code=

@pytest.mark.parametrize("header, status, code, message", [
    ("code=404", 404, 20000, "The 99999 task does not exist."),
    ("code=400, error=20003", 400, 20003, "This operation is not supported for the 10002 task in the RUNNING state."),
    ("code=400", 400, 20003, "This operation is not supported for the 10002 task in the RUNNING state."),
    ("code=403", 403, 30014, "You are not authorized to perform the corresponding operation. Contact the administrator."),
    ("code=500", 500, 0, "An unexpected error occurred on the server."),
    ("CODE=500; x=1, foo", 500, 0, "An unexpected error occurred on the server."),
    ("code=404, error=12345", 404, 12345, "The 99999 task does not exist."),  # the status's example message
])
def test_prefer_forces_an_error_without_touching_the_world(client, mock, header, status, code, message):
    response = client.post(retry_path(), headers={**ADMIN, "Prefer": header})
    error = assert_envelope(response, status)["error"]
    assert (error["code"], error["message"]) == (code, message)
    assert response.headers["X-Mock-Injected"].startswith("prefer code=")
    assert subtask(client, 10001)["status"] == "FAILED"
    assert mock.violations == []


def test_prefer_a_bad_parameter_copies_the_examples_sub_errors(client):
    error = assert_envelope(client.post(retry_path(), headers={**ADMIN, "Prefer": "code=400, error=0"}), 400)["error"]
    assert error["subErrors"][0]["field"] == "subtaskInstanceId"


def test_prefer_401_carries_the_challenge_and_needs_no_credentials(client):
    response = client.get(TASK, headers={"Prefer": "code=401"})
    assert assert_envelope(response, 401)["error"]["code"] == 0
    assert response.headers["WWW-Authenticate"].startswith("Basic")
    assert client.get(TASK, headers={**VIEWER, "Prefer": "code=404"}).status_code == 404


def test_prefer_200_answers_normally_but_changes_nothing(client):
    before = client.get("/__mock/world").get_json()["data"]
    response = client.post(retry_path(), headers={**ADMIN, "Prefer": "code=200"})
    data = assert_envelope(response, 200)["data"]
    assert (data["id"], data["status"], data["operation"]) == (10001, "READY", "RETRY")
    assert client.get("/__mock/world").get_json()["data"] == before
    assert client.post(retry_path(), headers=ADMIN).status_code == 200  # still retryable for real


def test_prefer_200_falls_back_to_the_specs_example_when_the_call_cannot_succeed(client):
    response = client.post(retry_path(subtask_id=10005), headers={**ADMIN, "Prefer": "code=200"})
    data = assert_envelope(response, 200)["data"]
    assert data["id"] == 13000333  # the spec's example
    assert "cannot succeed now" in response.headers["X-Mock-Injected"]
    skip = client.post("/api/v2/tasks/instances/1000/subtasks/10005/skip", headers={**ADMIN, "Prefer": "code=200"})
    assert_envelope(skip, 200, data=False)  # skip's NoDataResponse


@pytest.mark.parametrize("header, fragment", [
    ("code=418", "declared: 200, 400, 401, 403, 404, 500"),
    ("code=503", "not declared for retrySubtask"),
    ("code=abc", "not an HTTP status"),
    ("code=", "not an HTTP status"),
    ("code=200, error=20003", "error status"),
    ("code=400, error=x", "int32"),
    ("code=400, error=99999999999", "int32"),
    ("error=20003", "needs code="),
])
def test_a_bad_prefer_header_is_a_clear_400(client, header, fragment):
    error = assert_envelope(client.post(retry_path(), headers={**ADMIN, "Prefer": header}), 400)["error"]
    assert fragment in error["message"] and error["subErrors"][0]["field"] == "Prefer"
    assert subtask(client, 10001)["status"] == "FAILED"


def test_other_preferences_are_ignored(client):
    response = client.post(retry_path(), headers={**ADMIN, "Prefer": "return=minimal, respond-async"})
    assert assert_envelope(response, 200)["data"]["status"] == "READY"
    assert "X-Mock-Injected" not in response.headers


def test_prefer_is_ignored_outside_the_api(client):
    assert client.get("/__mock/health", headers={"Prefer": "code=500"}).status_code == 200
    assert client.get("/api/v2/nowhere", headers={**ADMIN, "Prefer": "code=500"}).status_code == 404


def test_prefer_wins_over_an_injected_failure_but_not_over_latency(client):
    put_faults(client, {"operation": "getTaskInstance", "latency": 30, "failure": 503})
    t0 = time.perf_counter()
    assert client.get(TASK, headers={**ADMIN, "Prefer": "code=404"}).status_code == 404
    assert time.perf_counter() - t0 >= 0.030


@pytest.mark.parametrize("op", sorted(SPEC.operations))
def test_every_declared_status_can_be_forced(client, mock, op):
    operation = SPEC.operations[op]
    path = operation.path.replace("{taskInstanceId}", "1000").replace("{subtaskInstanceId}", "10001")
    for status in sorted(int(s) for s in operation.responses if s.isdigit()):
        response = client.open(path, method=operation.method, headers={**ADMIN, "Prefer": f"code={status}"})
        assert response.status_code == status, (op, status, response.get_data(as_text=True))
    assert mock.violations == []


def test_parse_prefer():
    assert parse_prefer("code=503") == (503, None)
    assert parse_prefer('code="400", error=20003') == (400, 20003)
    assert parse_prefer("return=minimal") is None
    with pytest.raises(Invalid):
        parse_prefer("code=5030")


def test_parse_faults_messages_name_the_key():
    with pytest.raises(Invalid) as caught:
        parse_faults({"rules": [{"operation": "getTaskInstance", "latency": {"fixedMs": -1}}]}, "faults", SPEC)
    assert str(caught.value).startswith("faults.rules[0].latency.fixedMs: must be a number from 0 to 60000")


# ------------------------------------------------------------------------------------- over HTTP

@pytest.fixture
def live(served):
    """The session's real server (2 workers, strict), with its faults and world put back afterwards."""
    yield served
    requests.delete(served + "/__mock/faults", timeout=5).raise_for_status()
    requests.post(served + "/__mock/reset", timeout=5).raise_for_status()


AUTH = ("admin", "admin")


def test_served_faults_are_seen_by_both_workers(live):
    requests.put(live + "/__mock/faults", json={"rules": [{"operation": "listTaskInstances", "failure": 503}]},
                 timeout=5).raise_for_status()
    workers, statuses = set(), set()
    for _ in range(200):  # a new connection per call: granian's workers take turns
        with requests.Session() as session:
            response = session.get(live + LIST, auth=AUTH, timeout=5)
        statuses.add(response.status_code)
        workers.add(response.headers["X-Mock-Injected"].rsplit(" ", 1)[1])
        if len(workers) >= 2 and _ >= 20:
            break
    assert statuses == {503} and len(workers) == 2, (statuses, workers)
    requests.delete(live + "/__mock/faults", timeout=5).raise_for_status()
    # At once (no wait): every worker sees the change on its next request.
    after = {requests.Session().get(live + LIST, auth=AUTH, timeout=5).status_code for _ in range(20)}
    assert after == {200}


def test_served_dropped_connection_is_a_head_then_a_close(live):
    requests.put(live + "/__mock/faults", json={"rules": [{"operation": "getTaskInstance", "failure": "drop"}]},
                 timeout=5).raise_for_status()
    url = urlsplit(live)
    for _ in range(10):  # what any HTTP client sees, every time
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=5)
        try:
            conn.request("GET", TASK, headers={"Authorization": ADMIN["Authorization"]})
            response = conn.getresponse()
            assert response.status == 200 and response.getheader("Content-Length") == "512"
            with pytest.raises(http.client.IncompleteRead) as caught:
                response.read()
            assert caught.value.partial == b""  # not one byte of the body
        finally:
            conn.close()
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        requests.get(live + TASK, auth=AUTH, timeout=5)
    assert requests.get(live + LIST, auth=AUTH, timeout=5).status_code == 200  # the server is fine


def test_served_timeout_hangs_past_the_clients_patience(live):
    requests.put(live + "/__mock/faults", json={"rules": [
        {"operation": "getSubtaskLog", "failure": "timeout", "timeoutSeconds": 1}]}, timeout=5).raise_for_status()
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.get(live + LOG, auth=AUTH, timeout=0.2)
    assert requests.get(live + TASK, auth=AUTH, timeout=5).status_code == 200


def test_served_latency_and_injected_errors_pass_strict_mode(live):
    requests.put(live + "/__mock/faults", json={"rules": [
        {"operation": "getTaskInstance", "latency": 50, "failure": 502}]}, timeout=5).raise_for_status()
    t0 = time.perf_counter()
    response = requests.get(live + TASK, auth=AUTH, timeout=5)
    assert time.perf_counter() - t0 >= 0.050
    assert response.status_code == 502 and response.json()["error"]["code"] == 0  # not strict mode's 500


def test_served_prefer_header_from_a_browser_origin(live):
    origin = "http://localhost:3000"
    preflight = requests.options(live + TASK, headers={"Origin": origin, "Access-Control-Request-Method": "GET",
                                                       "Access-Control-Request-Headers": "authorization, prefer"},
                                 timeout=5)
    assert preflight.status_code == 204 and "prefer" in preflight.headers["Access-Control-Allow-Headers"].lower()
    response = requests.get(live + TASK, auth=AUTH, headers={"Origin": origin, "Prefer": "code=404"}, timeout=5)
    assert response.status_code == 404 and response.headers["Access-Control-Allow-Origin"] == origin
    assert response.json()["error"]["code"] == 20000


# ------------------------------------------------------------------------------------- any input


_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True),
                     st.sampled_from(["", "drop", "timeout", "503", "FAILED", "getTaskInstance", "retrySubtask",
                                      "POST /api/v2/tasks/instances/**/retry", "* /**", "/x", "10001", "seed"]),
                     st.text(max_size=8))
_KEYS = st.sampled_from(["seed", "rules", "operation", "route", "rate", "latency", "failure", "timeoutSeconds",
                         "retryAfterSeconds", "fixedMs", "minMs", "maxMs", "meanMs", "stddevMs", "name",
                         "description", "subtasks", "faults", "status", "operation", "nextRuns", "outcome",
                         "failures", "hang", "durationSeconds", "10001", "10005", "x"])
_JSON = st.recursive(_SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_KEYS, inner, max_size=5),
                     max_leaves=25)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=_JSON)
def test_any_body_gets_an_answer_never_a_500(client, body):
    """Whatever JSON or YAML arrives at /__mock/faults and /__mock/scenarios: an envelope with a 2xx or a 4xx."""
    for raw, kind in ((json.dumps(body), "application/json"), (yaml.safe_dump(body), "application/yaml")):
        for method, path in (("PUT", "/__mock/faults"), ("POST", "/__mock/scenarios")):
            response = client.open(path, method=method, data=raw, headers={"Content-Type": kind})
            assert response.status_code in (200, 400, 404, 409), (path, body, response.get_data(as_text=True))
            assert response.get_json()["status"] == response.status_code
    client.post("/__mock/scenarios/reset")
