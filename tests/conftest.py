"""Shared fixtures: a strict mock app (every response checked against openapi.yaml) and its clients."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from mock_server import Config, create_app

ROOT = Path(__file__).resolve().parents[1]
SPEC_PATH = ROOT / "openapi.yaml"


def basic(user: str, password: str) -> dict:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


ADMIN = basic("admin", "admin")
VIEWER = basic("viewer", "viewer")


def retry_path(task_id=1000, subtask_id=10001) -> str:
    return f"/api/v2/tasks/instances/{task_id}/subtasks/{subtask_id}/retry"


@pytest.fixture
def app(tmp_path):
    app = create_app(Config(db_path=str(tmp_path / "world.sqlite3"), strict=True))
    yield app
    mock = app.extensions["ocp_mock"]
    assert mock.violations == [], "the mock sent responses that break openapi.yaml"


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def mock(app):
    return app.extensions["ocp_mock"]
