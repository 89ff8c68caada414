"""Every documented answer of retrySubtask, over the Flask test client."""

from __future__ import annotations

import re
import sqlite3
import threading
from datetime import datetime

import orjson
import pytest
import yaml

from conftest import ADMIN, ROOT, VIEWER, basic, retry_path
from mock_server import Config, create_app
from mock_server.world import FIXTURE_FAILED_SUBTASK_ID, FIXTURE_TASK_ID

TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d\Z")


def assert_envelope(response, status: int, data: bool = True) -> dict:
    """The body, after checking OCP's envelope; DATA False: a success without data (OCP's NoDataResponse)."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert body["status"] == status
    assert body["successful"] is (200 <= status < 300)
    assert re.fullmatch(r"[0-9a-f]{16}", body["traceId"])
    assert TIMESTAMP.match(body["timestamp"]), body["timestamp"]
    assert isinstance(body["duration"], int) and body["duration"] >= 0
    assert body["server"]
    assert list(body) == sorted(body), "OCP writes properties in alphabetical order"
    if body["successful"]:
        assert ("data" in body) is data and "error" not in body
    else:
        assert "error" in body and "data" not in body
        assert isinstance(body["error"]["code"], int)
    return body


def subtask(client, subtask_id: int) -> dict:
    return client.get(f"/__mock/subtasks/{subtask_id}").get_json()["data"]["subtask"]


def test_retry_failed_subtask_answers_like_ocp(client):
    before = subtask(client, 10001)
    assert before["status"] == "FAILED" and "finishTime" in before
    body = assert_envelope(client.post(retry_path(), headers=ADMIN), 200)
    data = body["data"]
    assert data["id"] == 10001
    assert data["status"] == "READY" and data["operation"] == "RETRY"
    assert "finishTime" not in data
    assert data["runTime"] == before["runTime"], "the retry call itself does not bump runTime"
    assert data["startTime"] == before["startTime"] and data["executor"] == before["executor"]
    assert list(data) == sorted(data)
    assert subtask(client, 10001) == data


def test_second_retry_is_refused_with_20003(client):
    assert_envelope(client.post(retry_path(), headers=ADMIN), 200)
    body = assert_envelope(client.post(retry_path(), headers=ADMIN), 400)
    assert body["error"]["code"] == 20003
    assert body["error"]["message"] == "This operation is not supported for the 10001 task in the READY state."


@pytest.mark.parametrize("sibling", [10000, 10002, 10003, 10004, 10005])
def test_retry_of_a_subtask_that_is_not_failed_is_refused(client, sibling):
    status = subtask(client, sibling)["status"]
    assert status != "FAILED"
    body = assert_envelope(client.post(retry_path(subtask_id=sibling), headers=ADMIN), 400)
    assert body["error"] == {
        "code": 20003,
        "message": f"This operation is not supported for the {sibling} task in the {status} state.",
    }
    assert subtask(client, sibling)["status"] == status


def test_retry_refused_when_operation_is_rollback(client):
    assert client.put("/__mock/subtasks/10001", json={"operation": "ROLLBACK"}).status_code == 200
    body = assert_envelope(client.post(retry_path(), headers=ADMIN), 400)
    assert body["error"] == {
        "code": 20003,
        "message": "This operation is not supported for the 10001 task in the ROLLBACK state.",
    }
    assert subtask(client, 10001)["status"] == "FAILED"


def test_retry_sets_the_task_back_to_running(client, mock):
    def task_status(task_id):
        return orjson.loads(mock.store.task(task_id)[0])["status"]

    failed = [r for r in mock.store.subtasks(status="FAILED") if r.task_id != FIXTURE_TASK_ID]
    row = failed[0]
    assert_envelope(client.post(retry_path(row.task_id, row.id), headers=ADMIN), 200)
    assert task_status(row.task_id) == "RUNNING"
    assert task_status(FIXTURE_TASK_ID) == "RUNNING"
    mock.store.close()  # writes SQLite up to date: the state file says the same
    with sqlite3.connect(mock.config.db_path) as conn:
        assert conn.execute("SELECT status FROM task WHERE id = ?", (row.task_id,)).fetchone()[0] == "RUNNING"


def test_unknown_subtask_is_404_with_20000(client):
    body = assert_envelope(client.post(retry_path(subtask_id=987654321), headers=ADMIN), 404)
    assert body["error"] == {"code": 20000, "message": "The 987654321 task does not exist."}


def test_task_id_is_not_checked_against_the_subtask(client):
    """OCP looks the subtask up by its own id only; the path's task id is not checked."""
    assert_envelope(client.post(retry_path(task_id=424242), headers=ADMIN), 200)


@pytest.mark.parametrize(
    "headers, debug",
    [
        ({}, None),
        (basic("admin", "wrong"), None),
        (basic("nobody", "admin"), None),
        ({"Authorization": "Bearer abc"}, "unsupported authorization scheme; use HTTP Basic"),
        ({"Authorization": "Basic !!!notbase64"}, "malformed Basic credentials"),
        ({"Authorization": "Basic " + "YWRtaW4="}, "malformed Basic credentials"),  # "admin" without a colon
    ],
)
def test_missing_or_wrong_credentials_get_401(client, headers, debug):
    response = client.post(retry_path(), headers=headers)
    body = assert_envelope(response, 401)
    assert body["error"]["code"] == 0
    assert body["error"]["message"] == (
        "The current user has not logged on or a logon error has occurred. Please log on and try again."
    )
    assert body["error"].get("debugMessage") == debug
    assert response.headers["WWW-Authenticate"].startswith("Basic")
    assert subtask(client, 10001)["status"] == "FAILED"


def test_viewer_gets_403_and_changes_nothing(client):
    body = assert_envelope(client.post(retry_path(), headers=VIEWER), 403)
    assert body["error"] == {
        "code": 30014,
        "message": "You are not authorized to perform the corresponding operation. Contact the administrator.",
    }
    assert subtask(client, 10001)["status"] == "FAILED"


@pytest.mark.parametrize(
    "raw, field",
    [
        ("abc", "subtaskInstanceId"),
        ("1.5", "subtaskInstanceId"),
        ("9223372036854775808", "subtaskInstanceId"),
        ("-9223372036854775809", "subtaskInstanceId"),
        ("%20", "subtaskInstanceId"),
        ("%E4%B8%AD", "subtaskInstanceId"),
    ],
)
def test_malformed_ids_get_400_with_sub_errors(client, raw, field):
    body = assert_envelope(client.post(retry_path(subtask_id=raw), headers=ADMIN), 400)
    assert body["error"]["code"] == 0
    sub = body["error"]["subErrors"]
    assert [s["field"] for s in sub] == [field]
    assert sub[0]["object"] == "retrySubtask"
    assert "between -9223372036854775808 and 9223372036854775807" in sub[0]["message"]


def test_both_ids_malformed_names_both(client):
    body = assert_envelope(client.post(retry_path(task_id="x", subtask_id="y"), headers=ADMIN), 400)
    assert {s["field"] for s in body["error"]["subErrors"]} == {"taskInstanceId", "subtaskInstanceId"}


def test_int64_extremes_are_valid_ids(client):
    for raw in ("9223372036854775807", "-9223372036854775808", "0"):
        assert_envelope(client.post(retry_path(subtask_id=raw), headers=ADMIN), 404)


def test_unknown_path_and_wrong_method_use_the_envelope(client):
    body = assert_envelope(client.post("/api/v2/nothing", headers=ADMIN), 404)
    assert body["error"]["code"] == 0
    response = client.get(retry_path(), headers=ADMIN)
    assert_envelope(response, 405)
    assert "POST" in response.headers["Allow"]


def test_stack_trace_only_on_request(client):
    plain = assert_envelope(client.post(retry_path(subtask_id=5), headers=ADMIN), 404)
    assert "stackTrace" not in plain["error"]
    traced = assert_envelope(
        client.post(retry_path(subtask_id=5), headers={**ADMIN, "X-ReturnStackTrace": "true"}), 404
    )
    assert traced["error"]["stackTrace"] and all(isinstance(line, str) for line in traced["error"]["stackTrace"])


def test_unexpected_errors_are_500_in_the_envelope(client, mock, monkeypatch):
    def boom(*_):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(mock.store, "subtask", boom)
    body = assert_envelope(client.post(retry_path(), headers=ADMIN), 500)
    assert "disk on fire" not in str(body)
    traced = assert_envelope(client.post(retry_path(), headers={**ADMIN, "X-ReturnStackTrace": "true"}), 500)
    assert any("disk on fire" in line for line in traced["error"]["stackTrace"])


def test_no_auth_mode_accepts_anonymous_calls(tmp_path):
    client = create_app(Config(db_path=str(tmp_path / "w.sqlite3"), auth=False, strict=True)).test_client()
    assert_envelope(client.post(retry_path()), 200)


def test_users_file_adds_users(tmp_path):
    users = tmp_path / "users.yaml"
    users.write_text(yaml.safe_dump({"users": [
        {"name": "ops", "password": "s3cret", "permissions": ["TASK_MANAGER"]},
        {"name": "ro", "password": "ro", "permissions": ["TASK_VIEWER"]},
    ]}))
    client = create_app(Config(db_path=str(tmp_path / "w.sqlite3"), users_file=str(users), strict=True)).test_client()
    assert_envelope(client.post(retry_path(), headers=basic("admin", "admin")), 401)
    assert_envelope(client.post(retry_path(), headers=basic("ro", "ro")), 403)
    assert_envelope(client.post(retry_path(), headers=basic("ops", "s3cret")), 200)


@pytest.mark.parametrize("content", [
    "users: []", "nothing: 1", "users: [{name: a}]", "users: [{name: a, password: b, permissions: [ROOT]}]", ":\n- [",
])
def test_bad_users_file_is_refused_with_a_reason(tmp_path, content):
    from mock_server.auth import UsersFileError

    users = tmp_path / "users.yaml"
    users.write_text(content)
    with pytest.raises(UsersFileError, match="users"):
        create_app(Config(db_path=str(tmp_path / "w.sqlite3"), users_file=str(users)))


def test_timestamps_are_rfc3339_with_the_configured_offset(tmp_path):
    client = create_app(Config(db_path=str(tmp_path / "w.sqlite3"), utc_offset="-05:30")).test_client()
    body = client.post(retry_path(), headers=ADMIN).get_json()
    assert body["timestamp"].endswith("-05:30")
    assert datetime.fromisoformat(body["timestamp"]).utcoffset().total_seconds() == -5.5 * 3600


@pytest.mark.parametrize("offset, ms, expected", [
    ("+08:00", 1_700_000_000_123, "2023-11-15T06:13:20.123+08:00"),
    ("-05:30", 1_700_000_000_007, "2023-11-14T16:43:20.007-05:30"),
    ("+00:00", 1_700_000_000_999, "2023-11-14T22:13:20.999+00:00"),
    ("+08:00", 1_700_063_999_999, "2023-11-15T23:59:59.999+08:00"),  # the next millisecond is the next day
])
def test_the_envelope_timestamp_is_the_millisecond_of_the_answer(monkeypatch, offset, ms, expected):
    """The date and time are formatted once per second, the milliseconds per call: the next millisecond gets its
    own, also when it starts the next second."""
    from mock_server import envelope

    env = envelope.Envelope("srv", offset)
    monkeypatch.setattr(envelope.time, "time_ns", lambda: ms * 1_000_000 + 456_789)
    assert env.timestamp().decode() == expected
    assert env.timestamp().decode() == expected
    monkeypatch.setattr(envelope.time, "time_ns", lambda: (ms + 1) * 1_000_000)
    later = datetime.fromisoformat(env.timestamp().decode())
    assert (later - datetime.fromisoformat(expected)).total_seconds() == 0.001


def test_exactly_one_of_many_concurrent_retries_succeeds(app):
    barrier = threading.Barrier(24)
    statuses = []

    def worker():
        client = app.test_client()
        barrier.wait()
        statuses.append(client.post(retry_path(), headers=ADMIN).status_code)

    threads = [threading.Thread(target=worker) for _ in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [200] + [400] * 23


def test_the_doc_example_ids_work_out_of_the_box(client):
    spec = yaml.safe_load((ROOT / "openapi.yaml").read_text())
    params = spec["components"]["parameters"]
    assert (params["taskInstanceId"]["example"], params["subtaskInstanceId"]["example"]) == (
        FIXTURE_TASK_ID, FIXTURE_FAILED_SUBTASK_ID)
