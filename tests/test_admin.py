"""The /__mock control API."""

from __future__ import annotations

import pytest

from conftest import ADMIN, retry_path
from mock_server import Config, create_app


def data(response, status=200):
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert body["status"] == status
    return body.get("data", body.get("error"))


def test_health_tells_seed_and_size(client):
    health = data(client.get("/__mock/health"))
    assert health["seed"] == 20241106 and health["tasks"] >= 20 and health["subtasks"] > health["tasks"]


def test_set_failed_again_makes_the_subtask_retryable(client):
    assert client.post(retry_path(), headers=ADMIN).status_code == 200
    assert client.post(retry_path(), headers=ADMIN).status_code == 400
    forced = data(client.put("/__mock/subtasks/10001", json={"status": "FAILED", "operation": "EXECUTE"}))
    assert forced["status"] == "FAILED" and "finishTime" in forced
    assert client.post(retry_path(), headers=ADMIN).status_code == 200


def test_reset_restores_the_seeded_world(client):
    before = data(client.get("/__mock/subtasks/10001"))
    assert client.post(retry_path(), headers=ADMIN).status_code == 200
    assert data(client.post("/__mock/reset"))["seed"] == 20241106
    assert data(client.get("/__mock/subtasks/10001")) == before


def test_reset_to_another_seed_and_back(client):
    original = data(client.get("/__mock/subtasks?status=FAILED"))
    data(client.post("/__mock/reset", json={"seed": 7}))
    assert data(client.get("/__mock/health"))["seed"] == 7
    assert data(client.get("/__mock/subtasks/10001"))["subtask"]["status"] == "FAILED"  # the fixture is fixed
    data(client.post("/__mock/reset"))
    assert data(client.get("/__mock/subtasks?status=FAILED")) == original


def test_list_filters(client):
    failed = data(client.get("/__mock/subtasks?status=FAILED"))
    assert failed and all(s["status"] == "FAILED" for s in failed)
    assert {s["id"] for s in data(client.get("/__mock/subtasks?taskId=1000"))} == set(range(10000, 10006))


def test_inconsistent_state_is_refused_and_nothing_changes(client):
    before = data(client.get("/__mock/subtasks/10005"))
    error = data(client.put("/__mock/subtasks/10005", json={"status": "RUNNING"}), 409)
    assert "10005" in error["message"]
    assert data(client.get("/__mock/subtasks/10005")) == before


@pytest.mark.parametrize(
    "method, path, body, status",
    [
        ("put", "/__mock/subtasks/10001", {"status": "failed"}, 400),
        ("put", "/__mock/subtasks/10001", {"operation": "RESTART"}, 400),
        ("put", "/__mock/subtasks/10001", {"colour": "red"}, 400),
        ("put", "/__mock/subtasks/10001", {}, 400),
        ("put", "/__mock/subtasks/10001", [1, 2], 400),
        ("put", "/__mock/subtasks/10001", "{not json", 400),
        ("put", "/__mock/subtasks/abc", {"status": "FAILED"}, 400),
        ("put", "/__mock/subtasks/99999999999999999999", {"status": "FAILED"}, 400),
        ("put", "/__mock/subtasks/42", {"status": "FAILED"}, 404),
        ("post", "/__mock/reset", {"seed": "seven"}, 400),
        ("post", "/__mock/reset", {"seed": -1}, 400),
        ("post", "/__mock/reset", {"seed": True}, 400),
        ("get", "/__mock/subtasks?status=DONE", None, 400),
        ("delete", "/__mock/reset", None, 405),
        ("post", "/__mock/clock/advance", {"seconds": -1}, 400),
        ("post", "/__mock/clock/advance", {"seconds": "60"}, 400),
        ("post", "/__mock/clock/advance", {"seconds": True}, 400),
        ("post", "/__mock/clock/advance", {"seconds": 1e12}, 400),
        ("post", "/__mock/clock/advance", {"minutes": 1}, 400),
        ("post", "/__mock/clock/advance", None, 400),
        ("put", "/__mock/clock", {"speed": -1}, 400),
        ("put", "/__mock/clock", {"speed": "fast"}, 400),
        ("put", "/__mock/subtasks/10001/scenario", {"outcome": "explode"}, 400),
        ("put", "/__mock/subtasks/10001/scenario", {"failures": -1}, 400),
        ("put", "/__mock/subtasks/10001/scenario", {"failures": 1.5}, 400),
        ("put", "/__mock/subtasks/10001/scenario", {"hang": "yes"}, 400),
        ("put", "/__mock/subtasks/10001/scenario", {"durationSeconds": 0}, 400),
        ("put", "/__mock/subtasks/10001/scenario", {"durationSeconds": None}, 400),
        ("put", "/__mock/subtasks/10001/scenario", {"colour": "red"}, 400),
        ("put", "/__mock/subtasks/10001/scenario", [1], 400),
        ("put", "/__mock/subtasks/x/scenario", {}, 400),
        ("put", "/__mock/subtasks/42/scenario", {}, 404),
        ("delete", "/__mock/subtasks/42/scenario", None, 404),
    ],
)
def test_bad_admin_calls_get_a_clear_error_and_change_nothing(client, method, path, body, status):
    before = data(client.get("/__mock/subtasks/10001"))
    kwargs = {"data": body} if isinstance(body, str) else {"json": body} if body is not None else {}
    response = getattr(client, method)(path, **kwargs)
    error = data(response, status)
    assert error["message"]
    assert data(client.get("/__mock/subtasks/10001")) == before


def test_admin_api_can_be_turned_off(tmp_path):
    client = create_app(Config(db_path=str(tmp_path / "w.sqlite3"), admin=False)).test_client()
    assert client.post("/__mock/reset").status_code == 404


def test_clock_stands_still_and_moves_on_request(client):
    clock = data(client.get("/__mock/clock"))
    assert clock["speed"] == 0 and data(client.get("/__mock/clock"))["nowMs"] == clock["nowMs"]
    moved = data(client.post("/__mock/clock/advance", json={"seconds": 90.5}))
    assert moved["nowMs"] == clock["nowMs"] + 90_500 and moved["tasksChanged"] >= 1  # seeded subtasks were due
    assert moved["now"].endswith("+08:00")
    assert data(client.put("/__mock/clock", json={"speed": 2}))["speed"] == 2


def test_scenario_is_shown_set_and_removed(client):
    seeded = data(client.get("/__mock/subtasks/10001"))["engine"]
    assert seeded["scenarioSource"] == "seed" and seeded["runs"] == 0
    set_ = data(client.put("/__mock/subtasks/10001/scenario", json={"outcome": "fail", "failures": 2, "hang": True,
                                                                    "durationSeconds": 4}))
    assert set_["scenario"] == {"outcome": "fail", "failures": 2, "hang": True, "durationSeconds": 4}
    assert set_["scenarioSource"] == "admin"
    assert data(client.get("/__mock/subtasks/10001"))["engine"]["scenario"] == set_["scenario"]
    assert data(client.delete("/__mock/subtasks/10001/scenario"))["scenario"] == seeded["scenario"]


def test_forced_state_moves_on_and_the_task_follows(client):
    forced = data(client.put("/__mock/subtasks/10001", json={"status": "READY", "operation": "RETRY"}))
    assert forced["status"] == "READY"
    engine = data(client.get("/__mock/subtasks/10001"))["engine"]
    assert "dueAt" in engine  # the engine picks it up
    data(client.post("/__mock/clock/advance", json={"seconds": 60}))
    assert data(client.get("/__mock/subtasks/10001"))["subtask"]["status"] == "SUCCESSFUL"
