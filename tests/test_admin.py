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
