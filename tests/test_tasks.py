"""The task family over HTTP (Flask test client, strict mode): every documented answer of the new operations, the
list's paging, and the lifecycle in time driven by the admin clock (the `app` fixture's clock stands still; tests
move it with POST /__mock/clock/advance, never by sleeping)."""

from __future__ import annotations

import math
import re
import threading

import orjson

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import ADMIN, VIEWER
from mock_server import Config, create_app
from mock_server.spec import load_spec
from mock_server.config import SPEC_PATH
from mock_server.clock import from_datetime
from mock_server.world import check_invariants, check_task, derive_task_status, parse_time
from test_http import assert_envelope

SPEC = load_spec(str(SPEC_PATH))
TASK_STATES = SPEC.enum("TaskState")
TASK_TYPES = SPEC.enum("TaskType")
BASE = "/api/v2/tasks/instances"
STATE_INVALID = "This operation is not supported for the {} task in the {} state."


# ------------------------------------------------------------------------------------------------- helpers

def task(client, task_id, headers=ADMIN) -> dict:
    return assert_envelope(client.get(f"{BASE}/{task_id}", headers=headers), 200)["data"]


def listing(client, query="", headers=ADMIN) -> dict:
    return assert_envelope(client.get(f"{BASE}?{query}", headers=headers), 200)["data"]


def subtask(client, task_id, subtask_id) -> dict:
    return next(s for s in task(client, task_id)["subtasks"] if s["id"] == subtask_id)


def log_of(client, task_id, subtask_id) -> str:
    return assert_envelope(client.get(f"{BASE}/{task_id}/subtasks/{subtask_id}/log", headers=ADMIN), 200)["data"]["log"]


NO_DATA = ("/skip", "/cancel")  # actions that answer with OCP's NoDataResponse


def act(client, path, status=200, headers=ADMIN) -> dict:
    return assert_envelope(client.post(f"{BASE}/{path}", headers=headers), status, data=not path.endswith(NO_DATA))


def advance(client, seconds) -> dict:
    response = client.post("/__mock/clock/advance", json={"seconds": seconds})
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()["data"]


def scenario(client, subtask_id, **body) -> dict:
    response = client.put(f"/__mock/subtasks/{subtask_id}/scenario", json=body)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()["data"]


def world(client) -> dict:
    return client.get("/__mock/world").get_json()["data"]


def assert_world_consistent(client) -> None:
    data = world(client)
    assert check_invariants(data["subtasks"]) == []
    by_id = {s["id"]: s for s in data["subtasks"]}
    for t in data["tasks"]:
        assert check_task(t, [by_id[i] for i in t["subtaskIds"]]) == []


def failed_tasks(client, *, rollback_ok=None) -> list[dict]:
    rows = listing(client, "status=FAILED&size=2000")["contents"]
    found = [task(client, r["id"]) for r in rows]
    if rollback_ok is not None:
        found = [t for t in found if t["prohibitRollback"] is not rollback_ok]
    return [t for t in found if t["operation"] != "ROLLBACK"]


# ---------------------------------------------------------------------------------------------- the list

def test_list_defaults_newest_first(client):
    data = listing(client)
    total = len(world(client)["tasks"])
    assert data["page"] == {"number": 1, "size": 10, "totalElements": total, "totalPages": math.ceil(total / 10)}
    ids = [r["id"] for r in data["contents"]]
    assert ids == sorted(ids, reverse=True) and len(ids) == 10


@pytest.mark.parametrize("size", [1, 3, 7, 10, 39, 40, 41, 2000])
def test_paging_arithmetic_and_pages_partition_the_list(client, size):
    total = len(world(client)["tasks"])
    pages = math.ceil(total / size)
    seen = []
    for number in range(1, pages + 2):
        data = listing(client, f"page={number}&size={size}&sort=id,asc")
        assert data["page"] == {"number": number, "size": size, "totalElements": total, "totalPages": pages}
        assert len(data["contents"]) == (min(size, total - (number - 1) * size) if number <= pages else 0)
        seen += [r["id"] for r in data["contents"]]
    assert seen == sorted(t["id"] for t in world(client)["tasks"])


def test_a_page_far_beyond_the_end_is_empty(client):
    data = listing(client, "page=2147483647&size=2000")
    assert data["contents"] == [] and data["page"]["number"] == 2147483647


@pytest.mark.parametrize("status", TASK_STATES)
def test_filter_by_status(client, status):
    expected = sorted((t["id"] for t in world(client)["tasks"] if t["status"] == status), reverse=True)
    data = listing(client, f"status={status}&size=2000")
    assert [r["id"] for r in data["contents"]] == expected and data["page"]["totalElements"] == len(expected)


@pytest.mark.parametrize("task_type", TASK_TYPES)
def test_filter_by_type(client, task_type):
    expected = [t["id"] for t in world(client)["tasks"] if t["type"] == task_type]
    assert sorted(r["id"] for r in listing(client, f"type={task_type}&size=2000")["contents"]) == expected


def test_filter_by_name_is_a_case_insensitive_substring_and_filters_combine(client):
    tasks = world(client)["tasks"]
    rows = listing(client, "name=AGENT&size=2000")["contents"]
    assert {r["id"] for r in rows} == {t["id"] for t in tasks if "agent" in t["name"].lower()} != set()
    rows = listing(client, "name=agent&status=SUCCESSFUL&type=MANUAL&size=2000")["contents"]
    assert {r["id"] for r in rows} == {t["id"] for t in tasks if "agent" in t["name"].lower()
                                       and t["status"] == "SUCCESSFUL" and t["type"] == "MANUAL"}
    assert listing(client, "name=no-such-task")["page"] == {"number": 1, "size": 10, "totalElements": 0,
                                                            "totalPages": 0}


@pytest.mark.parametrize("key", ["id", "name", "status", "type", "createTime", "startTime", "finishTime"])
@pytest.mark.parametrize("direction", ["asc", "desc", "DESC", "Asc", None])
def test_sort(client, key, direction):
    query = f"sort={key}" + (f",{direction}" if direction else "")
    ids = [r["id"] for r in listing(client, query + "&size=2000")["contents"]]
    tasks = sorted(world(client)["tasks"], key=lambda t: t["id"])

    def order(t):
        if key not in t:
            return (0, 0)
        return (1, parse_time(t[key]) if key.endswith("Time") else t[key])

    assert ids == [t["id"] for t in sorted(tasks, key=order, reverse=(direction or "asc").lower() == "desc")]
    if key == "finishTime":  # running tasks have none: first ascending, last descending
        running = {t["id"] for t in tasks if "finishTime" not in t}
        edge = ids[: len(running)] if (direction or "asc").lower() == "asc" else ids[-len(running):]
        assert set(edge) == running


@pytest.mark.parametrize(("query", "field"), [
    ("page=0", "page"), ("page=-1", "page"), ("page=abc", "page"), ("page=1.5", "page"), ("page=2147483648", "page"),
    ("size=0", "size"), ("size=2001", "size"), ("size=x", "size"),
    ("sort=foo", "sort"), ("sort=id,up", "sort"), ("sort=id,desc,name", "sort"), ("sort=", "sort"),
    ("sort=id%0A", "sort"), ("sort=creator", "sort"),
    ("status=DONE", "status"), ("status=running", "status"), ("status=", "status"),
    ("type=ONCE", "type"),
])
def test_bad_query_parameters_get_400_naming_them(client, query, field):
    body = assert_envelope(client.get(f"{BASE}?{query}", headers=ADMIN), 400)
    assert body["error"]["code"] == 0
    assert [e["field"] for e in body["error"]["subErrors"]] == [field]
    assert body["error"]["subErrors"][0]["object"] == "listTaskInstances"


def test_several_bad_parameters_are_all_named(client):
    body = assert_envelope(client.get(f"{BASE}?page=0&size=0&status=X", headers=ADMIN), 400)
    assert {e["field"] for e in body["error"]["subErrors"]} == {"page", "size", "status"}


def test_list_rows_agree_with_the_task_detail(client):
    for row in listing(client, "size=2000")["contents"]:
        detail = task(client, row["id"])
        for key in ("id", "name", "creator", "status", "startTime", "finishTime"):
            assert row.get(key) == detail.get(key), (row["id"], key)
        assert row["subtasks"] == [{k: s[k] for k in ("id", "name", "description", "status", "operation")}
                                   for s in detail["subtasks"]]


# -------------------------------------------------------------------------------------------- the detail

def test_task_detail_has_its_subtasks_consistent(client):
    data = world(client)
    for stored in data["tasks"]:
        detail = task(client, stored["id"])
        assert "subtaskIds" not in detail
        ids = [s["id"] for s in detail["subtasks"]]
        assert ids == sorted(ids) == stored["subtaskIds"]
        assert detail["status"] == derive_task_status((s["status"] for s in detail["subtasks"]), detail["operation"])
        by_id = {s["id"]: s for s in detail["subtasks"]}
        for s in detail["subtasks"]:  # upstream/downstream symmetry inside one task
            for u in s["upstreams"]:
                assert s["id"] in by_id[u]["downstreams"]
            for d in s["downstreams"]:
                assert s["id"] in by_id[d]["upstreams"]
        assert check_invariants(detail["subtasks"]) == []


def test_viewer_reads_everything(client):
    assert listing(client, headers=VIEWER)["contents"]
    assert task(client, 1000, headers=VIEWER)["id"] == 1000
    response = client.get(f"{BASE}/1000/subtasks/10001/log", headers=VIEWER)
    assert_envelope(response, 200)


@pytest.mark.parametrize("path", ["", "/1000", "/1000/subtasks/10001/log"])
def test_reads_need_credentials(client, path):
    assert assert_envelope(client.get(f"{BASE}{path}"), 401)["error"]["code"] == 0


@pytest.mark.parametrize("method, path, missing", [
    ("get", "/99999", 99999), ("post", "/99999/retry", 99999), ("post", "/-1/rollback", -1),
    ("post", "/1000/subtasks/99999/skip", 99999), ("post", "/1000/subtasks/0/cancel", 0),
    ("get", "/1000/subtasks/99999/log", 99999), ("get", "/9223372036854775807", 9223372036854775807),
])
def test_unknown_ids_get_404_with_20000(client, method, path, missing):
    body = assert_envelope(getattr(client, method)(f"{BASE}{path}", headers=ADMIN), 404)
    assert body["error"] == {"code": 20000, "message": f"The {missing} task does not exist."}


@pytest.mark.parametrize("method, path, field, operation", [
    ("get", "/abc", "taskInstanceId", "getTaskInstance"),
    ("post", "/1.5/retry", "taskInstanceId", "retryTask"),
    ("post", "/9223372036854775808/rollback", "taskInstanceId", "rollbackTask"),
    ("post", "/1000/subtasks/x/skip", "subtaskInstanceId", "skipSubtask"),
    ("post", "/1000/subtasks/%20/cancel", "subtaskInstanceId", "cancelSubtask"),
    ("get", "/1000/subtasks/1e4/log", "subtaskInstanceId", "getSubtaskLog"),
])
def test_malformed_ids_get_400_with_sub_errors(client, method, path, field, operation):
    body = assert_envelope(getattr(client, method)(f"{BASE}{path}", headers=ADMIN), 400)
    assert body["error"]["code"] == 0
    assert [(e["field"], e["object"]) for e in body["error"]["subErrors"]] == [(field, operation)]


@pytest.mark.parametrize("path", ["/1000/retry", "/1000/rollback", "/1000/subtasks/10001/skip",
                                  "/1000/subtasks/10002/cancel"])
def test_actions_need_task_manager(client, path):
    before = world(client)
    assert assert_envelope(client.post(f"{BASE}{path}", headers=VIEWER), 403)["error"]["code"] == 30014
    assert assert_envelope(client.post(f"{BASE}{path}"), 401)["error"]["code"] == 0
    assert world(client) == before


# ------------------------------------------------------------------------------------------- task retry

def test_task_retry_reruns_its_failed_subtasks(client):
    target = failed_tasks(client)[0]
    failed = {s["id"] for s in target["subtasks"] if s["status"] == "FAILED"}
    data = act(client, f"{target['id']}/retry")["data"]
    assert (data["status"], data["operation"]) == ("RUNNING", "RETRY") and "finishTime" not in data
    for before, after in zip(target["subtasks"], data["subtasks"]):
        if before["id"] in failed:
            assert (after["status"], after["operation"]) == ("READY", "RETRY") and "finishTime" not in after
            assert after["runTime"] == before["runTime"]  # the engine counts the run when it starts
        else:
            assert after == before
    assert task(client, target["id"]) == data
    body = act(client, f"{target['id']}/retry", 400)
    assert body["error"] == {"code": 20003, "message": STATE_INVALID.format(target["id"], "RUNNING")}
    assert_world_consistent(client)


def test_task_retry_is_refused_after_a_failed_rollback(client):
    target = failed_tasks(client, rollback_ok=True)[0]
    for s in target["subtasks"]:
        scenario(client, s["id"], outcome="fail")  # every rollback run fails
    act(client, f"{target['id']}/rollback")
    advance(client, 600)
    after = task(client, target["id"])
    assert (after["status"], after["operation"]) == ("FAILED", "ROLLBACK")
    body = act(client, f"{target['id']}/retry", 400)
    assert body["error"] == {"code": 20003, "message": STATE_INVALID.format(target["id"], "ROLLBACK")}
    failed = next(s for s in after["subtasks"] if s["status"] == "FAILED")
    assert failed["operation"] == "ROLLBACK"
    body = act(client, f"1/subtasks/{failed['id']}/retry", 400)  # nor can its subtask be retried
    assert body["error"]["message"] == STATE_INVALID.format(failed["id"], "ROLLBACK")


# ---------------------------------------------------------------------------------------- task rollback

def test_rollback_walks_back_and_ends_successful(client):
    target = failed_tasks(client, rollback_ok=True)[-1]
    for s in target["subtasks"]:
        scenario(client, s["id"])  # every run succeeds
    data = act(client, f"{target['id']}/rollback")["data"]
    assert (data["status"], data["operation"]) == ("RUNNING", "ROLLBACK")
    pending = {s["id"] for s in target["subtasks"] if s["status"] == "PENDING"}
    for s in data["subtasks"]:
        if s["id"] in pending:
            assert s["status"] == "PENDING" and s["operation"] != "ROLLBACK"
        else:
            assert s["operation"] == "ROLLBACK"
            assert (s["status"] == "READY") is all(d in pending for d in s["downstreams"])
    advance(client, 3600)
    after = task(client, target["id"])
    assert after["status"] == "SUCCESSFUL" and "finishTime" in after
    assert {s["status"] for s in after["subtasks"]} == {"PENDING"}
    assert act(client, f"{target['id']}/rollback", 400)["error"]["code"] == 20003
    assert_world_consistent(client)


def test_rollback_is_refused_with_20004_once_a_prohibiting_subtask_ran(client):
    """Task "Delete tenant": its "Drop tenant" step prohibits rollback. Let it run and fail there."""
    target = next(t for t in failed_tasks(client) if t["name"] == "Delete tenant")
    first, lock, drop = target["subtasks"][:3]
    assert first["status"] == "FAILED" and drop["name"] == "Drop tenant" and drop["prohibitRollback"]
    assert not target["prohibitRollback"]  # it has not run yet
    scenario(client, first["id"])
    scenario(client, lock["id"])
    scenario(client, drop["id"], outcome="fail")
    act(client, f"{target['id']}/subtasks/{first['id']}/retry")
    advance(client, 3600)
    after = task(client, target["id"])
    assert [s["status"] for s in after["subtasks"][:3]] == ["SUCCESSFUL", "SUCCESSFUL", "FAILED"]
    assert after["status"] == "FAILED" and after["prohibitRollback"] is True
    body = act(client, f"{target['id']}/rollback", 400)
    assert body["error"] == {"code": 20004, "message": f"Task {target['id']} can not rollback."}
    assert task(client, target["id"]) == after


def test_rollback_of_a_task_that_is_not_failed_is_20003(client):
    body = act(client, "1000/rollback", 400)
    assert body["error"] == {"code": 20003, "message": STATE_INVALID.format(1000, "RUNNING")}


# ------------------------------------------------------------------------------------ skip and cancel

def test_skip_answers_without_data_and_the_subtask_completes(client):
    body = act(client, "1000/subtasks/10001/skip")
    assert "data" not in body and "error" not in body
    after = subtask(client, 1000, 10001)
    assert (after["status"], after["operation"]) == ("READY", "SKIP") and "finishTime" not in after
    assert task(client, 1000)["status"] == "RUNNING"
    advance(client, 30)
    assert subtask(client, 1000, 10001)["status"] == "SUCCESSFUL"
    body = act(client, "1000/subtasks/10001/skip", 400)
    assert body["error"] == {"code": 20003, "message": STATE_INVALID.format(10001, "SUCCESSFUL")}


def test_skip_during_a_rollback_is_a_rollback_skip(client):
    target = failed_tasks(client, rollback_ok=True)[0]
    for s in target["subtasks"]:
        scenario(client, s["id"], outcome="fail")
    act(client, f"{target['id']}/rollback")
    advance(client, 600)
    failed = next(s for s in task(client, target["id"])["subtasks"] if s["status"] == "FAILED")
    act(client, f"{target['id']}/subtasks/{failed['id']}/skip")
    assert subtask(client, target["id"], failed["id"])["operation"] == "ROLLBACK_SKIP"
    advance(client, 30)
    assert subtask(client, target["id"], failed["id"])["status"] == "PENDING"  # undone


@pytest.mark.parametrize("sibling", [10000, 10002, 10003, 10004, 10005])
def test_skip_needs_failed(client, sibling):
    status = subtask(client, 1000, sibling)["status"]
    body = act(client, f"1000/subtasks/{sibling}/skip", 400)
    assert body["error"] == {"code": 20003, "message": STATE_INVALID.format(sibling, status)}


def test_cancel_answers_without_data_then_the_subtask_fails(client):
    body = act(client, "1000/subtasks/10002/cancel")
    assert "data" not in body
    canceling = subtask(client, 1000, 10002)
    assert canceling["status"] == "CANCELING" and canceling["operation"] == "EXECUTE"
    assert task(client, 1000)["status"] == "RUNNING"
    advance(client, 5)
    failed = subtask(client, 1000, 10002)
    assert failed["status"] == "FAILED" and parse_time(failed["finishTime"]) > parse_time(failed["startTime"])
    assert "cancelled" in log_of(client, 1000, 10002).splitlines()[-2]


@pytest.mark.parametrize("sibling", [10000, 10001, 10003, 10004, 10005])
def test_cancel_needs_running(client, sibling):
    status = subtask(client, 1000, sibling)["status"]
    body = act(client, f"1000/subtasks/{sibling}/cancel", 400)
    assert body["error"] == {"code": 20003, "message": STATE_INVALID.format(sibling, status)}


def test_subtask_actions_do_not_check_the_task_in_the_path(client):
    act(client, "424242/subtasks/10002/cancel")
    act(client, "1/subtasks/10001/skip")


@pytest.mark.parametrize("path", ["1000/subtasks/10001/skip", "1000/subtasks/10002/cancel", "{failed}/retry",
                                  "1000/subtasks/10001/retry"])
def test_exactly_one_of_many_concurrent_calls_succeeds(app, client, path):
    path = path.format(failed=failed_tasks(client)[0]["id"])
    barrier = threading.Barrier(16)
    codes = []

    def call():
        own = app.test_client()
        barrier.wait()
        codes.append(own.post(f"{BASE}/{path}", headers=ADMIN).status_code)

    threads = [threading.Thread(target=call) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(codes) == [200] + [400] * 15


# ----------------------------------------------------------------------------------- the lifecycle in time

def test_after_a_retry_the_subtask_runs_and_its_downstream_follows(client):
    before = subtask(client, 1000, 10001)
    act(client, "1000/subtasks/10001/retry")
    advance(client, 3)  # picked up: running again
    running = subtask(client, 1000, 10001)
    assert running["status"] == "RUNNING" and running["runTime"] == before["runTime"] + 1
    assert running["startTime"] == before["startTime"] and running["executor"]
    advance(client, 60)
    done = subtask(client, 1000, 10001)
    assert done["status"] == "SUCCESSFUL" and parse_time(done["finishTime"]) > parse_time(before["finishTime"])
    assert subtask(client, 1000, 10005)["status"] == "PENDING"  # 10002 still runs (it hangs), 10003 failed
    act(client, "1000/subtasks/10002/cancel")
    advance(client, 5)
    act(client, "1000/subtasks/10002/retry")
    act(client, "1000/subtasks/10003/retry")
    advance(client, 3600)
    detail = task(client, 1000)
    assert {s["status"] for s in detail["subtasks"]} == {"SUCCESSFUL"}
    last = detail["subtasks"][-1]
    assert all(parse_time(last["startTime"]) >= parse_time(s["finishTime"]) for s in detail["subtasks"][1:5])
    assert detail["status"] == "SUCCESSFUL" and parse_time(detail["finishTime"]) >= parse_time(last["finishTime"])
    assert_world_consistent(client)


def test_fail_n_times_then_succeed(client):
    scenario(client, 10001, failures=2, durationSeconds=5)
    seen = []
    for _ in range(3):
        act(client, "1000/subtasks/10001/retry")
        advance(client, 30)
        s = subtask(client, 1000, 10001)
        seen.append((s["status"], s["runTime"]))
    assert seen == [("FAILED", 2), ("FAILED", 3), ("SUCCESSFUL", 4)]
    assert log_of(client, 1000, 10001).count("ERROR") == 3  # the seeded failure and two more


def test_hang_until_cancelled(client):
    scenario(client, 10001, hang=True)
    act(client, "1000/subtasks/10001/retry")
    advance(client, 1500)  # 25 minutes: still within its 30-minute timeout
    assert subtask(client, 1000, 10001)["status"] == "RUNNING"
    act(client, "1000/subtasks/10001/cancel")
    advance(client, 5)
    assert subtask(client, 1000, 10001)["status"] == "FAILED"


def test_logs_grow_and_never_change_what_was_shown(client):
    seeded = log_of(client, 1000, 10001)
    assert "Set state for subtask: 10001, operation:EXECUTE, state: FAILED" in seeded
    assert log_of(client, 1000, 10005) == ""  # never ran
    act(client, "1000/subtasks/10001/retry")
    shown = [log_of(client, 1000, 10001)]
    for seconds in (2, 1, 1, 2, 60):
        advance(client, seconds)
        shown.append(log_of(client, 1000, 10001))
    for earlier, later in zip(shown, shown[1:]):
        assert later.startswith(earlier)
    assert shown[0] == seeded and len(set(shown)) >= 4
    new = shown[-1][len(seeded):].strip().splitlines()
    assert "operation: RETRY, runTime: 2" in new[0]
    assert new[-1].endswith("Set state for subtask: 10001, operation:RETRY, state: SUCCESSFUL")
    assert all(line[:4].isdigit() and " [task-executor-" in line for line in new)


def test_reset_restores_the_world_and_keeps_the_clock(client):
    clock = client.get("/__mock/clock").get_json()["data"]
    act(client, "1000/subtasks/10001/retry")
    advance(client, 60)
    client.post("/__mock/reset")
    assert subtask(client, 1000, 10001)["status"] == "FAILED"
    assert log_of(client, 1000, 10001).count("\n") < 10
    assert client.get("/__mock/clock").get_json()["data"]["nowMs"] >= clock["nowMs"] + 60_000


def test_same_seed_same_calls_same_world(tmp_path):
    """Two mocks of one seed, given the same calls at the same mock times, end in the same world. Their clocks
    started at different real times, so every time the engine wrote is compared relative to its clock's start."""
    stamp = re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d\.\d{3}(?:[+-]\d\d:\d\d)?")

    def run(name):
        client = create_app(Config(db_path=str(tmp_path / name), clock_speed=0)).test_client()
        start = client.get("/__mock/clock").get_json()["data"]["nowMs"]
        for t in failed_tasks(client):
            act(client, f"{t['id']}/retry")
        advance(client, 7200)
        data = world(client)
        logs = [log_of(client, 1, s["id"]) for s in data["subtasks"]]

        def relative(match):
            text = match.group(0)
            at = parse_time(text if "T" in text else text.replace(" ", "T") + "+08:00")
            ms = from_datetime(at)
            return f"start+{ms - start}" if ms >= start else text

        return stamp.sub(relative, orjson.dumps([data, logs]).decode())

    assert run("a.sqlite3") == run("b.sqlite3")


@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
@given(seed=st.integers(0, 2**31), moves=st.lists(st.tuples(
    st.sampled_from(["retry", "skip", "cancel", "task-retry", "rollback", "advance"]), st.integers(0, 10_000)),
    min_size=1, max_size=12))
def test_random_calls_and_clock_moves_keep_the_world_consistent(tmp_path_factory, seed, moves):
    app = create_app(Config(db_path=str(tmp_path_factory.mktemp("w") / "w.sqlite3"), seed=seed, task_count=6,
                            strict=True, clock_speed=0))
    client = app.test_client()
    subtasks = sorted(s["id"] for s in world(client)["subtasks"])
    tasks = sorted(t["id"] for t in world(client)["tasks"])
    for move, pick in moves:
        if move == "advance":
            advance(client, pick % 900)
        elif move in ("task-retry", "rollback"):
            code = client.post(f"{BASE}/{tasks[pick % len(tasks)]}/{move.removeprefix('task-')}", headers=ADMIN)
            assert code.status_code in (200, 400)
        else:
            code = client.post(f"{BASE}/1/subtasks/{subtasks[pick % len(subtasks)]}/{move}", headers=ADMIN)
            assert code.status_code in (200, 400)
        assert_world_consistent(client)
        for row in listing(client, "size=2000")["contents"]:
            assert row["status"] == task(client, row["id"])["status"]
    assert app.extensions["ocp_mock"].violations == []
