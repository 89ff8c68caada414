"""Scenarios: the files in scenarios/ (each loads and does what it says), loading and checking scenario documents,
applying them through the admin API (POST /__mock/scenarios, by name or inline YAML/JSON; GET; reset), start-up
with `ocp-mock serve --scenario FILE`, and bad files (a one-line reason, exit 1, no traceback)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from conftest import ADMIN, ROOT, Served, free_port, retry_path
from mock_server import Config, create_app
from mock_server.config import SPEC_PATH
from mock_server.faults import Invalid
from mock_server.scenarios import load_files, parse, parse_text
from mock_server.spec import load_spec
from test_http import assert_envelope

SPEC = load_spec(str(SPEC_PATH))
EXAMPLES = ROOT / "scenarios"
TASK = "/api/v2/tasks/instances/1000"


def make_client(tmp_path, *files, **config):
    app = create_app(Config(db_path=str(tmp_path / "w.sqlite3"), strict=True, clock_speed=0,
                            scenario_files=[str(f) for f in files], **config))
    return app, app.test_client()


def statuses(client, task_id=1000) -> dict[int, str]:
    rows = client.get(f"/__mock/subtasks?taskId={task_id}").get_json()["data"]
    return {r["id"]: r["status"] for r in rows}


def advance(client, seconds):
    assert client.post("/__mock/clock/advance", json={"seconds": seconds}).status_code == 200


def state(client) -> tuple:
    """Everything a scenario can change: the world, the faults, the applied list."""
    return (client.get("/__mock/world").get_json()["data"], client.get("/__mock/faults").get_json()["data"],
            client.get("/__mock/scenarios").get_json()["data"]["applied"])


@pytest.fixture
def checked(tmp_path):
    """Apps made by a test; each must have sent only answers that match openapi.yaml."""
    made = []

    def make(*files, **config):
        app, client = make_client(tmp_path / str(len(made)), *files, **config)
        made.append(app)
        return client

    yield make
    for app in made:
        assert app.extensions["ocp_mock"].violations == []


@pytest.fixture(autouse=True)
def _tmp_dirs(tmp_path):
    for i in range(4):
        (tmp_path / str(i)).mkdir()


# ------------------------------------------------------------------------------------- the examples

def test_every_example_loads():
    docs = load_files(sorted(str(p) for p in EXAMPLES.glob("*.yaml")), SPEC)
    assert {d.name for d in docs} >= {"all-failed", "flaky-agent", "outage"}
    assert all(d.description for d in docs)


def test_all_failed(checked):
    client = checked(EXAMPLES / "all-failed.yaml")
    assert statuses(client) == {10000: "SUCCESSFUL", 10001: "FAILED", 10002: "FAILED", 10003: "FAILED",
                                10004: "FAILED", 10005: "PENDING"}
    assert assert_envelope(client.get(TASK, headers=ADMIN), 200)["data"]["status"] == "FAILED"
    for sid in (10001, 10002, 10003, 10004):  # each can be retried, and succeeds
        assert client.post(retry_path(subtask_id=sid), headers=ADMIN).status_code == 200
    advance(client, 10)
    assert statuses(client)[10002] == "SUCCESSFUL" and set(statuses(client).values()) <= {"SUCCESSFUL", "READY",
                                                                                         "RUNNING"}
    advance(client, 60)
    assert set(statuses(client).values()) == {"SUCCESSFUL"}


def test_flaky_agent(checked):
    client = checked(EXAMPLES / "flaky-agent.yaml")
    t0 = time.perf_counter()
    assert client.get(TASK, headers=ADMIN).status_code == 200
    assert time.perf_counter() - t0 >= 0.8  # getTaskInstance is slow
    outcomes = []
    for _ in range(3):
        assert client.post(retry_path(), headers=ADMIN).status_code == 200
        advance(client, 10)  # pick-up (at most 2.5 s) and the 5 s run
        outcomes.append(statuses(client)[10001])
    assert outcomes == ["FAILED", "FAILED", "SUCCESSFUL"]


def test_outage(checked):
    client = checked(EXAMPLES / "outage.yaml")
    n = 1000
    answers = [client.post(retry_path(), headers=ADMIN) for _ in range(n)]  # 10001: FAILED
    unavailable = [a for a in answers if a.status_code == 503]
    assert abs(len(unavailable) - 0.3 * n) <= 4.5 * (n * 0.3 * 0.7) ** 0.5, len(unavailable)
    assert {a.status_code for a in answers} == {200, 400, 503}  # the one real retry, then refusals, and 503s
    assert all(a.headers["Retry-After"] == "5" for a in unavailable)
    task_retries = {client.post(f"{TASK}/retry", headers=ADMIN).status_code for _ in range(60)}
    assert 503 in task_retries  # task retries too (the route matches both)
    others = {client.post("/api/v2/tasks/instances/1000/subtasks/10003/skip", headers=ADMIN).status_code
              for _ in range(60)}
    assert 503 not in others and client.get(TASK, headers=ADMIN).status_code == 200


# ------------------------------------------------------------------------------------- documents

@pytest.mark.parametrize("text, where, fragment", [
    ("subtasks: {10001: {status: DONE}}", "subtasks.10001.status", "must be one of PENDING"),
    ("subtasks: {10001: {operation: RESTART}}", "subtasks.10001.operation", "SubtaskOperation"),
    ("subtasks: {10001: {state: FAILED}}", "subtasks.10001.state", "unknown key; use one of status, operation, nextRuns"),
    ("subtasks: {10001: {}}", "subtasks.10001", "is empty"),
    ("subtasks: {abc: FAILED}", "subtasks.abc", "subtask id"),
    ("subtasks: {99999999999999999999: FAILED}", "subtasks.99999999999999999999", "int64"),
    ("subtasks: [10001]", "subtasks", "must be a mapping"),
    ("subtasks: {10001: {nextRuns: {failures: -1}}}", "subtasks.10001.nextRuns.failures", "from 0 to 1000"),
    ("subtasks: {10001: {nextRuns: {failures: 1.5}}}", "subtasks.10001.nextRuns.failures", "an integer"),
    ("subtasks: {10001: {nextRuns: {outcome: explode}}}", "subtasks.10001.nextRuns.outcome", "succeed, fail"),
    ("subtasks: {10001: {nextRuns: {hang: maybe}}}", "subtasks.10001.nextRuns.hang", "true or false"),
    ("subtasks: {10001: {nextRuns: {durationSeconds: 0}}}", "subtasks.10001.nextRuns.durationSeconds", "from 0.001"),
    ("subtasks: {10001: {nextRuns: {retries: 2}}}", "subtasks.10001.nextRuns.retries", "unknown key"),
    ("faults: {rules: [{operation: nope, failure: 503}]}", "faults.rules[0].operation", "operationId"),
    ("faults: [{operation: getTaskInstance, rate: 2, failure: 503}]", "faults.rules[0].rate", "from 0 to 1"),
    ("faults: {rules: [{operation: getTaskInstance, latency: {fixedMs: 100, maxMs: 200}}]}",
     "faults.rules[0].latency", "exactly one of"),
    ("name: 'two words'\nfaults: []", "name", "letters, digits"),
    ("description: [1]\nfaults: []", "description", "a string"),
    ("colour: red", "colour", "unknown key; use one of name, description, subtasks, faults"),
    ("name: x", "", "sets nothing"),
    ("- 1\n- 2", "", "must be a mapping"),
    ("subtasks: {10001: FAILED", "", "neither YAML nor JSON (line"),
])
def test_bad_documents_say_which_key_and_how_to_fix_it(text, where, fragment):
    with pytest.raises(Invalid) as caught:
        parse_text(text, SPEC, "t", "t.yaml")
    assert caught.value.where == where and fragment in str(caught.value), str(caught.value)


def test_shorthand_and_json_keys():
    doc = parse({"subtasks": {"10001": "FAILED", 10002: {"nextRuns": {"hang": True}}}}, SPEC, "x", "inline")
    assert doc.subtasks[10001].status == "FAILED" and doc.subtasks[10002].next_runs.hang
    assert doc.faults is None  # no faults key: the faults in force are kept


def test_a_file_may_hold_several_named_documents(tmp_path):
    file = tmp_path / "two.yaml"
    file.write_text("name: a\nsubtasks: {10001: FAILED}\n---\nname: b\nfaults: []\n")
    assert [d.name for d in load_files([str(file)], SPEC)] == ["a", "b"]
    file.write_text("subtasks: {10001: FAILED}\n---\nname: b\nfaults: []\n")
    with pytest.raises(Invalid, match="needed in every document"):
        load_files([str(file)], SPEC)


def test_names_must_differ_across_files(tmp_path):
    (tmp_path / "a.yaml").write_text("name: same\nfaults: []\n")
    (tmp_path / "b.yaml").write_text("name: same\nfaults: []\n")
    with pytest.raises(Invalid, match="already used"):
        load_files([str(tmp_path / "a.yaml"), str(tmp_path / "b.yaml")], SPEC)


# ------------------------------------------------------------------------------------- the admin API

def test_listing_shows_loaded_applied_and_faults(checked):
    client = checked(EXAMPLES / "flaky-agent.yaml", EXAMPLES / "outage.yaml", apply_scenarios=False)
    data = assert_envelope(client.get("/__mock/scenarios"), 200)["data"]
    assert [s["name"] for s in data["scenarios"]] == ["flaky-agent", "outage"]
    assert data["applied"] == [] and data["faults"]["rules"] == []
    assert data["scenarios"][0]["subtasks"]["10001"]["nextRuns"]["failures"] == 2


def test_apply_by_name_stacks_and_faults_replace(checked):
    client = checked(EXAMPLES / "all-failed.yaml", EXAMPLES / "flaky-agent.yaml", EXAMPLES / "outage.yaml",
                     apply_scenarios=False)
    assert statuses(client)[10002] == "RUNNING"
    applied = assert_envelope(client.post("/__mock/scenarios", json={"name": "all-failed"}), 200)["data"]
    assert applied["applied"] == ["all-failed"] and applied["faults"] is None
    assert [s["status"] for s in applied["subtasks"]] == ["FAILED"] * 4
    assert applied["subtasks"][1]["engine"]["scenario"]["durationSeconds"] == 5
    data = assert_envelope(client.post("/__mock/scenarios", json={"name": "flaky-agent"}), 200)["data"]
    assert data["faults"]["rules"][0]["operation"] == "getTaskInstance"
    data = assert_envelope(client.post("/__mock/scenarios", json={"name": "outage"}), 200)["data"]
    assert [r.get("route") for r in data["faults"]["rules"]] == ["POST /api/v2/tasks/instances/**/retry"]  # replaced
    assert data["applied"] == ["all-failed", "flaky-agent", "outage"]
    assert statuses(client)[10002] == "FAILED"  # the world kept all-failed's states


def test_apply_inline_yaml_and_json(checked):
    client = checked()
    yaml_body = "name: mine\nsubtasks:\n  10003: {status: FAILED}\nfaults:\n  - operation: listTaskInstances\n    failure: 502\n"
    data = assert_envelope(client.post("/__mock/scenarios", data=yaml_body,
                                       headers={"Content-Type": "application/yaml"}), 200)["data"]
    assert data["name"] == "mine" and statuses(client)[10003] == "FAILED"
    assert client.get("/api/v2/tasks/instances", headers=ADMIN).status_code == 502
    data = assert_envelope(client.post("/__mock/scenarios", json={"subtasks": {"10004": "FAILED"}}), 200)["data"]
    assert data["name"] == "inline" and data["applied"] == ["mine", "inline"]


def test_reset_goes_back_to_the_seeded_world_without_faults(checked):
    client = checked(EXAMPLES / "flaky-agent.yaml", EXAMPLES / "all-failed.yaml")
    seeded = checked().get("/__mock/world").get_json()["data"]
    data = assert_envelope(client.post("/__mock/scenarios/reset"), 200)["data"]
    assert data["seed"] == 20241106
    world, faults, applied = state(client)
    assert world == seeded and faults == {"seed": 0, "rules": []} and applied == []
    assert [s["name"] for s in client.get("/__mock/scenarios").get_json()["data"]["scenarios"]] == [
        "flaky-agent", "all-failed"]  # still loaded: applicable by name
    assert client.post("/__mock/scenarios", json={"name": "flaky-agent"}).status_code == 200


@pytest.mark.parametrize("kwargs, status, fragment", [
    ({"json": {"subtasks": {"10005": "RUNNING"}}}, 409, "would break the world's consistency"),
    ({"json": {"subtasks": {"10001": "SUCCESSFUL", "10005": "RUNNING"}}}, 409, "upstream"),
    ({"json": {"subtasks": {"10001": "SUCCESSFUL", "424242": "FAILED"}}}, 404, "subtasks.424242"),
    ({"json": {"name": "nope"}}, 404, "No scenario named \"nope\""),
    ({"json": {"name": 5}}, 404, "No scenario named 5"),
    ({"json": {"subtasks": {"10001": "DONE"}}}, 400, "subtasks.10001.status"),
    ({"json": {"subtasks": {"10001": "SUCCESSFUL"}, "faults": [{"operation": "x", "failure": 503}]}}, 400,
     "faults.rules[0].operation"),
    ({"json": [1, 2]}, 400, "must be a mapping"),
    ({"json": {}}, 400, "sets nothing"),
    ({"data": ""}, 400, "A body is required"),
    ({"data": "subtasks: [unclosed"}, 400, "neither JSON nor YAML"),
    ({"data": "{bad json", "headers": {"Content-Type": "application/json"}}, 400, "not valid JSON"),
    ({"data": "a: &a [x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a]\n"
              "c: [*b, *b, *b, *b, *b, *b, *b, *b]"}, 400, "unknown key"),
    ({"data": "[" * 100_000}, 400, "nested too deeply"),
])
def test_bad_scenarios_are_refused_and_nothing_changes(checked, kwargs, status, fragment):
    client = checked(EXAMPLES / "outage.yaml")
    before = state(client)
    error = assert_envelope(client.post("/__mock/scenarios", **kwargs), status)["error"]
    assert fragment in error["message"], error["message"]
    assert state(client) == before


def test_the_admin_token_guards_the_scenarios_too(tmp_path):
    _, client = make_client(tmp_path / "0", admin_token="s3cret")
    assert client.get("/__mock/scenarios").status_code == 401
    assert client.put("/__mock/faults", json=[]).status_code == 401
    assert client.get("/__mock/scenarios", headers={"X-Mock-Admin-Token": "s3cret"}).status_code == 200


# ------------------------------------------------------------------------------------- start-up

def test_startup_applies_scenarios_in_order_and_fails_cleanly_when_it_cannot(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("subtasks: {10005: RUNNING}\n")
    with pytest.raises(Invalid, match="bad.yaml: Scenario 'bad' was not applied"):
        make_client(tmp_path / "0", bad)
    _, client = make_client(tmp_path / "1", EXAMPLES / "all-failed.yaml", EXAMPLES / "outage.yaml")
    assert client.get("/__mock/scenarios").get_json()["data"]["applied"] == ["all-failed", "outage"]


def test_served_with_scenarios_across_two_workers(tmp_path):
    server = Served("--workers", "2", "--strict", "--quiet", "--clock-speed", "0",
                    "--scenario", str(EXAMPLES / "all-failed.yaml"), "--scenario", str(EXAMPLES / "flaky-agent.yaml"))
    try:
        data = requests.get(server.base + "/__mock/scenarios", timeout=5).json()["data"]
        assert data["applied"] == ["all-failed", "flaky-agent"]
        rows = requests.get(server.base + "/__mock/subtasks?taskId=1000", timeout=5).json()["data"]
        assert [r["status"] for r in rows] == ["SUCCESSFUL", "FAILED", "FAILED", "FAILED", "FAILED", "PENDING"]
        # Any worker applies a start-up scenario by name, and every worker then answers with it.
        requests.post(server.base + "/__mock/scenarios/reset", timeout=5).raise_for_status()
        assert requests.get(server.base + TASK, auth=("admin", "admin"), timeout=5).status_code == 200
        for _ in range(4):
            requests.post(server.base + "/__mock/scenarios", json={"name": "all-failed"}, timeout=5).raise_for_status()
            with requests.Session() as session:
                assert session.post(server.base + retry_path(subtask_id=10003), auth=("admin", "admin"),
                                    timeout=5).status_code == 200
    finally:
        server.stop()


def _serve(*args: str) -> subprocess.CompletedProcess:
    cli = Path(sys.executable).with_name("ocp-mock")
    return subprocess.run([str(cli), "serve", "--port", str(free_port()), *args], capture_output=True, text=True,
                          timeout=60)


@pytest.mark.parametrize("text, fragment", [
    ("subtasks: {10001: {status: DONE}}", "subtasks.10001.status: must be one of"),
    ("faults: [{operation: getTaskInstance, rate: 1.5, failure: 503}]", "faults.rules[0].rate: must be a number"),
    ("subtasks: {10001: FAILED", "is neither YAML nor JSON"),
    ("subtasks: {10005: RUNNING}", "would break the world's consistency"),
    ("subtasks: {424242: FAILED}", "subtasks.424242: no subtask has this id"),
    (None, "cannot be read"),
])
def test_a_bad_file_at_startup_exits_with_a_one_line_reason(tmp_path, text, fragment):
    file = tmp_path / "scenario.yaml"
    if text is not None:
        file.write_text(text)
    state_file = tmp_path / "state.sqlite3"
    result = _serve("--scenario", str(file), "--state-file", str(state_file))
    assert result.returncode == 1, result
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and fragment in lines[0] and str(file) in lines[0], result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    if "would break" not in fragment and "no subtask" not in fragment:
        assert not state_file.exists()  # checked before anything was created
