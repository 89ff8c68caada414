"""CORS: preflights from allowed origins, CORS headers on every answer, and OPTIONS left as it was otherwise."""

from __future__ import annotations

import pytest
import requests

from conftest import ADMIN, VIEWER, Served, retry_path
from mock_server import Config, create_app
from mock_server.cors import DEFAULT_ALLOW_HEADERS, CorsConfigError, normalize_origin

DEV = "http://localhost:3000"
VITE = "http://127.0.0.1:5173"


def preflight(client, path=retry_path(), origin=DEV, method="POST", headers="authorization,content-type", **extra):
    h = {"Origin": origin, "Access-Control-Request-Method": method, **extra}
    if headers:
        h["Access-Control-Request-Headers"] = headers
    return client.options(path, headers=h)


def vary(response) -> set[str]:
    return {v.strip().lower() for v in response.headers.get("Vary", "").split(",") if v.strip()}


def assert_cors(response, origin=DEV):
    assert response.headers["Access-Control-Allow-Origin"] == origin
    assert response.headers["Access-Control-Allow-Credentials"] == "true"
    assert "origin" in vary(response)


def test_preflight_from_an_allowed_origin_is_answered_204(client):
    response = preflight(client)
    assert response.status_code == 204 and response.get_data() == b""
    assert_cors(response)
    assert response.headers["Access-Control-Allow-Methods"] == "POST"
    assert response.headers["Access-Control-Allow-Headers"] == "authorization,content-type"
    assert int(response.headers["Access-Control-Max-Age"]) > 0
    assert {"origin", "access-control-request-method", "access-control-request-headers"} <= vary(response)


def test_preflight_without_requested_headers_lists_the_usual_ones(client):
    response = preflight(client, origin=VITE, headers=None)
    assert response.status_code == 204
    allowed = response.headers["Access-Control-Allow-Headers"]
    for name in ("Authorization", "Content-Type", "X-ReturnStackTrace", "Date"):
        assert name in allowed
    assert allowed == ", ".join(DEFAULT_ALLOW_HEADERS)


@pytest.mark.parametrize(("path", "methods"), [
    ("/__mock/subtasks/10001", {"GET", "PUT", "PATCH"}),
    ("/__mock/reset", {"POST"}),
    ("/docs", {"GET", "HEAD"}),
    ("/openapi.json", {"GET", "HEAD"}),
])
def test_preflight_lists_the_paths_real_methods(client, path, methods):
    response = preflight(client, path=path, method="GET")
    assert response.status_code == 204
    assert methods <= {m.strip() for m in response.headers["Access-Control-Allow-Methods"].split(",")}


def test_preflight_of_an_unknown_path_lets_the_real_request_read_the_404(client):
    response = preflight(client, path="/api/v2/nothing")
    assert response.status_code == 204 and "Access-Control-Allow-Methods" not in response.headers
    real = client.post("/api/v2/nothing", headers={**ADMIN, "Origin": DEV})
    assert real.status_code == 404 and real.get_json()["error"]["code"] == 0
    assert_cors(real)


def test_private_network_preflight_is_allowed(client):
    response = preflight(client, **{"Access-Control-Request-Private-Network": "true"})
    assert response.headers["Access-Control-Allow-Private-Network"] == "true"


def test_options_without_cors_headers_keeps_the_405_envelope(client):
    response = client.options(retry_path(), headers=ADMIN)
    assert response.status_code == 405 and response.headers["Allow"] == "POST"
    assert response.get_json()["error"]["code"] == 0
    assert "Access-Control-Allow-Origin" not in response.headers


def test_preflight_from_another_origin_is_not_answered(client):
    response = preflight(client, origin="http://evil.example:3000")
    assert response.status_code == 405 and response.headers["Allow"] == "POST"
    assert "Access-Control-Allow-Origin" not in response.headers
    assert "origin" in vary(response)


def test_options_with_origin_but_no_request_method_is_a_405_readable_by_the_page(client):
    response = client.options(retry_path(), headers={"Origin": DEV})
    assert response.status_code == 405
    assert_cors(response)


@pytest.mark.parametrize(("headers", "path", "status"), [
    (ADMIN, retry_path(), 200),
    (ADMIN, retry_path(subtask_id=10002), 400),
    ({}, retry_path(), 401),
    (VIEWER, retry_path(), 403),
    (ADMIN, retry_path(subtask_id=99999), 404),
])
def test_every_answer_to_an_allowed_origin_carries_cors_headers(client, headers, path, status):
    response = client.post(path, headers={**headers, "Origin": DEV})
    assert response.status_code == status
    assert_cors(response)
    exposed = response.headers["Access-Control-Expose-Headers"]
    assert "WWW-Authenticate" in exposed and "Allow" in exposed


def test_wrong_method_answer_carries_cors_headers(client):
    response = client.get(retry_path(), headers={**ADMIN, "Origin": DEV})
    assert response.status_code == 405
    assert_cors(response)


def test_other_origins_get_no_cors_headers_but_vary(client):
    response = client.post(retry_path(), headers={**ADMIN, "Origin": "http://localhost:4000"})
    assert response.status_code == 200
    assert "Access-Control-Allow-Origin" not in response.headers
    assert "origin" in vary(response)
    assert "origin" in vary(client.post(retry_path(), headers=ADMIN))


def test_star_reflects_any_origin_never_a_literal_star(tmp_path):
    app = create_app(Config(db_path=str(tmp_path / "w.sqlite3"), strict=True, cors_origins=["*"]))
    client = app.test_client()
    for origin in ("https://app.example", "http://10.0.0.7:8000", "null"):
        response = client.post(retry_path(subtask_id=99999), headers={**ADMIN, "Origin": origin})
        assert response.headers["Access-Control-Allow-Origin"] == origin
    assert app.extensions["ocp_mock"].violations == []


def test_configured_origins_are_normalised(tmp_path):
    app = create_app(Config(db_path=str(tmp_path / "w.sqlite3"), cors_origins=["HTTP://App.Test:80/", "https://x.test:8443"]))
    client = app.test_client()
    assert preflight(client, origin="http://app.test").status_code == 204
    assert preflight(client, origin="https://x.test:8443").status_code == 204
    assert preflight(client, origin="https://x.test").status_code == 405


def test_an_empty_origin_list_turns_cors_off(tmp_path):
    client = create_app(Config(db_path=str(tmp_path / "w.sqlite3"), cors_origins=[])).test_client()
    assert preflight(client).status_code == 405
    response = client.post(retry_path(), headers={**ADMIN, "Origin": DEV})
    assert "Access-Control-Allow-Origin" not in response.headers and "Vary" not in response.headers


@pytest.mark.parametrize("bad", ["localhost:3000", "ftp://x", "http://x/path", "http://", "http://x:99999"])
def test_a_bad_origin_is_refused_at_start_with_a_reason(tmp_path, bad):
    with pytest.raises(CorsConfigError, match="scheme://host"):
        create_app(Config(db_path=str(tmp_path / "w.sqlite3"), cors_origins=[bad]))


def test_normalize_origin():
    assert normalize_origin("http://LocalHost:3000/") == "http://localhost:3000"
    assert normalize_origin("https://a.test:443") == "https://a.test"
    assert normalize_origin("http://[::1]:3000") == "http://[::1]:3000"


def test_serve_takes_cors_origin_options():
    server = Served("--workers", "1", "--quiet", "--cors-origin", "http://app.test:4000", "--cors-origin", VITE)
    try:
        for origin in ("http://app.test:4000", VITE):
            response = requests.options(server.base + retry_path(), timeout=5, headers={
                "Origin": origin, "Access-Control-Request-Method": "POST"})
            assert response.status_code == 204 and response.headers["Access-Control-Allow-Origin"] == origin
        default = requests.options(server.base + retry_path(), timeout=5, headers={
            "Origin": DEV, "Access-Control-Request-Method": "POST"})
        assert default.status_code == 405, "--cors-origin replaces the default origins"
    finally:
        server.stop()


def test_vary_is_one_header_that_keeps_what_the_answer_named():
    from mock_server.cors import _add_vary

    plain = [("Content-Type", "application/json")]
    assert _add_vary(plain, ("Origin",)) == [("Content-Type", "application/json"), ("Vary", "Origin")]
    assert plain == [("Content-Type", "application/json")]  # the answer's own list is left as it was
    named = [("vary", "Accept-Encoding, origin"), ("X-A", "1"), ("Vary", "Cookie")]
    assert _add_vary(named, ("Origin", "Access-Control-Request-Method")) == [
        ("X-A", "1"), ("Vary", "Accept-Encoding, origin, Cookie, Access-Control-Request-Method")]
