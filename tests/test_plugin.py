"""The pytest plugin (entry point `ocp_mock`), exercised on throwaway suites with pytester."""

from __future__ import annotations

import socket

import pytest

import mock_server.pytest_plugin as plugin

pytest_plugins = ["pytester"]

SUITE = '''
import base64, json, urllib.error, urllib.request
import pytest
from mock_server.pytest_plugin import OcpMockError

RETRY = "/api/v2/tasks/instances/1000/subtasks/{}/retry"
ADMIN = "Basic " + base64.b64encode(b"admin:admin").decode()
SEEN = []

def post(url):
    request = urllib.request.Request(url, method="POST", headers={"Authorization": ADMIN})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())

def test_retry_against_the_served_mock(ocp_mock, tmp_path_factory):
    SEEN.append(ocp_mock.base_url)
    (tmp_path_factory.getbasetemp() / "port").write_text(ocp_mock.base_url.rsplit(":", 1)[1])
    status, body = post(ocp_mock.url(RETRY.format(10001)))
    assert status == 200 and body["data"]["status"] == "READY"
    assert ocp_mock.subtask(10001)["status"] == "READY"

def test_the_world_is_reset_before_each_test(ocp_mock):
    SEEN.append(ocp_mock.base_url)
    assert ocp_mock.subtask(10001)["status"] == "FAILED"
    assert post(ocp_mock.url(RETRY.format(10001)))[0] == 200

def test_set_state_makes_a_subtask_retryable(ocp_mock):
    SEEN.append(ocp_mock.base_url)
    assert post(ocp_mock.url(RETRY.format(10001)))[0] == 200
    assert post(ocp_mock.url(RETRY.format(10001)))[0] == 400
    ocp_mock.set_state(10001, status="FAILED", operation="EXECUTE")
    assert post(ocp_mock.url(RETRY.format(10001)))[0] == 200

def test_a_refused_state_raises_with_the_mocks_reason(ocp_mock):
    with pytest.raises(OcpMockError, match="400 .*status"):
        ocp_mock.set_state(10001, status="BOGUS")

def test_one_server_for_the_session(ocp_mock, ocp_mock_server):
    assert ocp_mock is ocp_mock_server
    assert len(set(SEEN)) == 1 and len(SEEN) == 3

def test_the_ini_args_reach_serve(ocp_mock):
    assert ocp_mock.reset()["seed"] == 7

def test_in_process_client(ocp_mock_client, ocp_mock_app):
    response = ocp_mock_client.post(RETRY.format(10001), headers={"Authorization": ADMIN})
    assert response.status_code == 200 and response.get_json()["data"]["operation"] == "RETRY"
    assert ocp_mock_app.extensions["ocp_mock"].violations == []
'''


def port_is_closed(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) != 0


def test_fixtures_drive_a_real_server_and_reset_it_between_tests(pytester):
    pytester.makeini("[pytest]\nocp_mock_args = --seed 7\n")
    pytester.makepyfile(test_consumer=SUITE)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--basetemp", str(pytester.path / "tmp"))
    result.assert_outcomes(passed=7)
    port = int((pytester.path / "tmp" / "port").read_text())
    assert port_is_closed(port), "the session's server is stopped when the session ends"


def test_suites_that_do_not_use_the_fixtures_start_nothing(pytester, monkeypatch):
    started = []
    monkeypatch.setattr(plugin.OcpMockServer, "start", lambda self: started.append(self) or pytest.fail("started"))
    pytester.makepyfile(test_plain="def test_nothing_to_do_with_the_mock():\n    assert 1 + 1 == 2\n")
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert started == []


def test_the_plugin_is_registered_by_its_entry_point_and_can_be_disabled(pytester):
    pytester.makepyfile(test_uses="def test_uses(ocp_mock_client):\n    pass\n")
    listed = pytester.runpytest("--fixtures", "-p", "no:cacheprovider")
    assert "ocp_mock_client" in listed.stdout.str() and "ocp_mock " in listed.stdout.str() + " "
    disabled = pytester.runpytest("-p", "no:ocp_mock", "-p", "no:cacheprovider")
    disabled.assert_outcomes(errors=1)
    assert "fixture 'ocp_mock_client' not found" in disabled.stdout.str()


def test_a_server_that_cannot_start_says_why():
    server = plugin.OcpMockServer(["--users", "/nonexistent/users.yaml"])
    with pytest.raises(plugin.OcpMockError, match="did not start"):
        server.start()
    assert server.proc is None
