"""OCP's AK/SK signature: the pure signing rules, then the mock's answers to signed calls (strict mode)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
import requests
import yaml

from conftest import retry_path
from mock_server import Config, create_app
from mock_server.auth import UsersFileError, load_users
from mock_server.signature import (
    SignatureError,
    SignedRequest,
    format_date,
    host_of,
    md5_payload,
    ocp_headers,
    parse_date,
    path_and_query,
    sign,
    signed_headers,
    string_to_sign,
    verify,
)

NOW = datetime(2023, 1, 17, 3, 36, 1, tzinfo=timezone.utc)
DATE = "Tue, 17 Jan 2023 03:36:01 GMT"
URL = "http://localhost" + retry_path()
UNAUTHENTICATED = "The current user has not logged on or a logon error has occurred. Please log on and try again."


# ------------------------------------------------------------------------------------------- pure rules

def test_hmac_sha1_base64_matches_the_published_vector():
    # RFC 2202-style vector: HMAC-SHA1("key", "The quick brown fox jumps over the lazy dog") = de7c9b85...d9
    assert sign("key", "The quick brown fox jumps over the lazy dog") == "3nybhbi3iqa8ino29wqQcBydtNk="


def test_md5_payload_is_upper_case_hex_and_empty_without_a_body():
    assert md5_payload(b"") == md5_payload(None) == ""
    assert md5_payload(b"abc") == "900150983CD24FB0D6963F7D28E17F72"


def test_ocp_headers_are_the_x_ocp_ones_lower_cased_sorted_and_trimmed():
    headers = {"X-OCP-Trace": " t1 ", "x-ocp-origin": "sdk", "X-Other": "no", "Content-Type": "application/json"}
    assert ocp_headers(headers) == "x-ocp-origin:sdk\nx-ocp-trace:t1"
    assert ocp_headers({"Accept": "*/*"}) == ""


def test_path_and_query_sorts_by_name_and_percent_encodes():
    assert path_and_query("/api/v2/x") == "/api/v2/x"
    query = [("size", "10"), ("name", "a b/c"), ("page", "1"), ("name", "z~_.-")]
    assert path_and_query("/api/v2/x", query) == "/api/v2/x?name=a%20b%2Fc&name=z~_.-&page=1&size=10"


def test_string_to_sign_has_the_seven_documented_lines_in_order():
    request = SignedRequest(
        method="post", path="/api/v2/tasks/instances/1000/subtasks/10001/retry",
        query=(("b", "2"), ("a", "1")),
        headers={"Content-Type": "application/json", "Date": DATE, "Host": "127.0.0.1:8080", "x-ocp-origin": "sdk"},
        body=b"{}",
    )
    assert string_to_sign(request) == "\n".join([
        "POST",
        "99914B932BD37A50B983C5E7C90AE93B",  # MD5 of "{}"
        "application/json",
        DATE,
        "127.0.0.1:8080",
        "x-ocp-origin:sdk",
        "/api/v2/tasks/instances/1000/subtasks/10001/retry?a=1&b=2",
    ])
    bare = SignedRequest(method="GET", path="/p", headers={"Date": DATE, "Host": "h"})
    assert string_to_sign(bare) == f"GET\n\n\n{DATE}\nh\n\n/p"  # empty parts leave empty lines


def test_date_must_be_rfc1123_gmt_and_within_15_minutes():
    assert parse_date(DATE, NOW) == NOW
    assert format_date(NOW) == DATE
    parse_date(format_date(NOW + timedelta(minutes=14, seconds=59)), NOW)
    for off in (timedelta(minutes=15), -timedelta(minutes=15), timedelta(hours=3)):
        with pytest.raises(SignatureError, match="within 15 minutes"):
            parse_date(format_date(NOW + off), NOW)
    for bad in ("2023-01-17T03:36:01Z", "Tue, 17 Jan 2023 03:36:01 +0800", "yesterday"):
        with pytest.raises(SignatureError, match="invalid Date header"):
            parse_date(bad, NOW)
    with pytest.raises(SignatureError, match="missing Date header"):
        parse_date(None, NOW)


def test_host_of_drops_the_default_port():
    assert host_of("http://127.0.0.1:8080/x") == "127.0.0.1:8080"
    assert host_of("http://example.com:80/x") == "example.com"
    assert host_of("https://example.com:443/x") == "example.com"
    assert host_of("https://[::1]:8443/x") == "[::1]:8443"


def test_signed_headers_round_trip_through_verify():
    headers = signed_headers("POST", URL + "?b=2&a=1", b'{"x":1}', "ak", "sk", NOW,
                             content_type="application/json", headers={"x-ocp-origin": "sdk"})
    assert headers["Date"] == DATE and headers["Content-Type"] == "application/json"
    assert headers["Authorization"].startswith("OCP-ACCESS-KEY-HMACSHA1 ak:")
    request = SignedRequest("POST", retry_path(), (("b", "2"), ("a", "1")),
                            {**headers, "Host": "localhost", "X-Ocp-Origin": "sdk"}, b'{"x":1}')
    assert verify(headers["Authorization"], request, {"ak": "sk"}.get, NOW) == "ak"
    with pytest.raises(SignatureError, match="signature mismatch"):
        verify(headers["Authorization"], request, {"ak": "other"}.get, NOW)
    tampered = SignedRequest("POST", retry_path(), (), {**headers, "Host": "localhost"}, b'{"x":2}')
    with pytest.raises(SignatureError, match="signature mismatch"):
        verify(headers["Authorization"], tampered, {"ak": "sk"}.get, NOW)


# ------------------------------------------------------------------------------------- the mock answers

@pytest.fixture
def clock(app, monkeypatch):
    """Freezes the mock's clock for signatures at NOW."""
    monkeypatch.setattr(app.extensions["ocp_mock"].auth, "clock", lambda: NOW)
    return NOW


def post_signed(client, path=retry_path(), ak="admin-ak", sk="admin-sk", now=NOW, body=None, **kw):
    headers = signed_headers("POST", "http://localhost" + path, body, ak, sk, now, **kw)
    return client.post(path, headers={**kw.get("headers", {}), **headers}, data=body)


def error_of(response, status=401) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    return response.get_json()["error"]


def test_signed_retry_succeeds(client, clock):
    response = post_signed(client)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["data"]["status"] == "READY"


def test_signed_call_with_query_body_and_ocp_headers(client, clock):
    response = post_signed(client, retry_path() + "?zeta=1&alpha=x%20y", body=b'{"any": "body"}',
                           content_type="application/json", headers={"X-OCP-Origin": "sdk-test"})
    assert response.status_code == 200, response.get_data(as_text=True)


def test_signature_acts_with_the_keys_user_permissions(client, clock):
    assert error_of(post_signed(client, ak="viewer-ak", sk="viewer-sk"), 403)["code"] == 30014


@pytest.mark.parametrize(("authorization", "debug"), [
    ("OCP-ACCESS-KEY-HMACSHA1 nobody:c2ln", "unknown access key 'nobody'"),
    ("OCP-ACCESS-KEY-HMACSHA1 admin-ak", "malformed credentials"),
    ("OCP-ACCESS-KEY-HMACSHA1 :sig", "malformed credentials"),
    ("OCP-ACCESS-KEY-HMACSHA256 admin-ak:sig", "unsupported signature algorithm 'HMACSHA256'"),
    ("ocp-access-key-hmacsha1 admin-ak:sig", "upper case"),
])
def test_malformed_signature_headers_get_401_saying_why(client, clock, authorization, debug):
    response = client.post(retry_path(), headers={"Authorization": authorization, "Date": DATE})
    error = error_of(response)
    assert error["code"] == 0 and error["message"] == UNAUTHENTICATED
    assert debug in error["debugMessage"]
    assert response.headers["WWW-Authenticate"]


def test_wrong_secret_gets_the_servers_string_to_sign(client, clock):
    error = error_of(post_signed(client, sk="not-the-secret"))
    assert error["debugMessage"].startswith("signature mismatch")
    shown = json.loads(error["debugMessage"].split(": ", 1)[1])
    assert shown == f"POST\n\n\n{DATE}\nlocalhost\n\n{retry_path()}"


def test_a_changed_body_breaks_the_signature(client, clock):
    headers = signed_headers("POST", URL, b"{}", "admin-ak", "admin-sk", NOW)
    error = error_of(client.post(retry_path(), headers=headers, data=b'{"tampered": true}'))
    assert "signature mismatch" in error["debugMessage"]


def test_missing_invalid_or_skewed_date_gets_401_saying_why(client, clock):
    headers = signed_headers("POST", URL, None, "admin-ak", "admin-sk", NOW)
    no_date = {"Authorization": headers["Authorization"]}
    assert "missing Date header" in error_of(client.post(retry_path(), headers=no_date))["debugMessage"]
    bad = {**no_date, "Date": "2023-01-17T03:36:01Z"}
    assert "invalid Date header" in error_of(client.post(retry_path(), headers=bad))["debugMessage"]
    old = error_of(post_signed(client, now=NOW - timedelta(minutes=20)))["debugMessage"]
    assert "1200 s behind" in old and "within 15 minutes" in old
    ahead = error_of(post_signed(client, now=NOW + timedelta(minutes=16)))["debugMessage"]
    assert "ahead of" in ahead


def test_a_signed_header_is_not_accepted_again_after_its_date_expires(app, client, monkeypatch):
    auth = app.extensions["ocp_mock"].auth
    monkeypatch.setattr(auth, "clock", lambda: NOW)
    path = retry_path(subtask_id=99999)
    headers = signed_headers("POST", "http://localhost" + path, None, "admin-ak", "admin-sk", NOW)
    assert client.post(path, headers=headers).status_code == 404
    monkeypatch.setattr(auth, "clock", lambda: NOW + timedelta(minutes=30))
    assert "within 15 minutes" in error_of(client.post(path, headers=headers))["debugMessage"]


def test_basic_still_works_and_other_schemes_are_refused(client):
    from conftest import ADMIN

    assert client.post(retry_path(), headers=ADMIN).status_code == 200
    error = error_of(client.post(retry_path(), headers={"Authorization": "Bearer x"}))
    assert error["debugMessage"] == "unsupported authorization scheme; use HTTP Basic"


# ----------------------------------------------------------------------------------------- users file

def write_users(tmp_path, users) -> str:
    path = tmp_path / "users.yaml"
    path.write_text(yaml.safe_dump({"users": users}))
    return str(path)


def test_users_file_access_keys_sign_calls(tmp_path, monkeypatch):
    users = write_users(tmp_path, [
        {"name": "sdk", "password": "pw", "permissions": ["TASK_MANAGER"],
         "accessKeys": [{"accessKeyId": "AK1", "accessKeySecret": "SK1"}, {"accessKeyId": "AK2", "accessKeySecret": "SK2"}]},
    ])
    app = create_app(Config(db_path=str(tmp_path / "w.sqlite3"), users_file=users, strict=True))
    monkeypatch.setattr(app.extensions["ocp_mock"].auth, "clock", lambda: NOW)
    client = app.test_client()
    assert post_signed(client, ak="AK2", sk="SK2").status_code == 200
    assert "unknown access key 'admin-ak'" in error_of(post_signed(client))["debugMessage"]
    assert app.extensions["ocp_mock"].violations == []


@pytest.mark.parametrize(("keys", "match"), [
    ("AK1", "must be a list"),
    ([{"accessKeyId": "AK1"}], "accessKeySecret"),
    ([{"accessKeyId": "", "accessKeySecret": "x"}], "non-empty"),
    ([{"accessKeyId": "A K", "accessKeySecret": "x"}], "spaces"),
])
def test_bad_access_keys_are_refused_with_a_reason(tmp_path, keys, match):
    users = write_users(tmp_path, [{"name": "a", "password": "b", "accessKeys": keys}])
    with pytest.raises(UsersFileError, match=match):
        load_users(users)


def test_an_access_key_belongs_to_one_user(tmp_path):
    key = [{"accessKeyId": "AK", "accessKeySecret": "x"}]
    users = write_users(tmp_path, [{"name": "a", "password": "b", "accessKeys": key},
                                   {"name": "c", "password": "d", "accessKeys": key}])
    with pytest.raises(UsersFileError, match="both 'a' and 'c'"):
        load_users(users)


# ------------------------------------------------------------------------------------------ over HTTP

def test_signed_call_over_http_with_requests(served):
    """The helper's Host (with the port) matches what a real HTTP client sends to `ocp-mock serve`."""
    requests.post(served + "/__mock/reset", timeout=5).raise_for_status()
    url = served + retry_path() + "?trace=1"
    response = requests.post(url, headers=signed_headers("POST", url, None, "admin-ak", "admin-sk"), timeout=5)
    assert response.status_code == 200, response.text
    assert response.json()["data"]["operation"] == "RETRY"
