"""Reports and the command line: the JSON shape, JUnit that parses, Markdown with the score, no password
anywhere, and `ocp-contract run` against a real `ocp-mock serve` with the documented exit statuses."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from contract_servers import Conforming, TraceIdUpperCase, serving
from contracts import report
from contracts.cli import main
from contracts.runner import Options, run

BIN = Path(sys.executable).parent
SECRET = "s3cret-Pa55"


class SecretPasswords(TraceIdUpperCase):
    """A broken server whose users have passwords a report must never show."""

    users = {"boss": (SECRET, {"TASK_MANAGER", "TASK_VIEWER"}), "guest": (SECRET + "-v", {"TASK_VIEWER"})}


@pytest.fixture(scope="module")
def broken_result():
    with serving(SecretPasswords().app()) as url:
        return run(Options(base_url=url, user="boss", password=SECRET, viewer_user="guest", viewer_password=SECRET + "-v",
                           max_examples=10, seed=1, fuzz_operations=("retrySubtask",)))  # fmt: skip


def test_json_report_shape(broken_result, tmp_path):
    report.write_json(broken_result, tmp_path / "r.json")
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["format"] == report.REPORT_FORMAT
    assert set(doc) >= {"target", "spec", "seed", "outcome", "exit_code", "score", "totals", "phases", "fixtures",
                        "checks"}  # fmt: skip
    assert [p["name"] for p in doc["phases"]] == ["preflight", "discovery", "fixtures", "consistency", "fuzzing",
                                                  "responses"]  # fmt: skip
    assert doc["fixtures"]["source"] == "discovered" and doc["fixtures"]["failed_subtask_id"] == 10011
    assert len(doc["spec"]["sha256"]) == 64 and doc["seed"] == 1
    assert (doc["outcome"], doc["exit_code"]) == ("not_conformant", 1)
    totals = doc["totals"]
    assert totals["checks"] == totals["passed"] + totals["failed"] + totals["skipped"] == len(doc["checks"])
    by_name = {c["name"]: c for c in doc["checks"]}
    trace = by_name["ocp_trace_id"]
    assert trace["status"] == "failed" and trace["failures"] >= 1
    finding = trace["findings"][0]
    assert set(finding) == {"check", "phase", "expected", "received", "request", "curl", "occurrences"}
    assert set(finding["received"]) == {"message", "status", "body_excerpt"}
    assert finding["request"]["headers"].get("Authorization", "Basic boss:***").endswith(":***")
    assert by_name["ocp_envelope_status"]["status"] == "passed"


def test_junit_report_parses_with_failures(broken_result, tmp_path):
    report.write_junit(broken_result, tmp_path / "r.xml")
    suite = ET.parse(tmp_path / "r.xml").getroot()
    assert suite.tag == "testsuite" and int(suite.get("failures")) >= 1
    failed = [case.get("name") for case in suite.iter("testcase") if case.find("failure") is not None]
    assert "ocp_trace_id" in failed
    assert "Expected: traceId of 16 lower-case hex" in suite.find(".//testcase[@name='ocp_trace_id']/failure").text


def test_markdown_report_has_the_score_and_findings_by_check(broken_result, tmp_path):
    report.write_markdown(broken_result, tmp_path / "r.md")
    text = (tmp_path / "r.md").read_text()
    passed = broken_result.count("passed")
    assert f"Conformance score: {broken_result.score:.1%} ({passed} of " in text
    assert "### `ocp_trace_id`" in text and "```sh\n  curl " in text


def test_no_report_shows_a_password(broken_result, tmp_path):
    import base64

    report.write_json(broken_result, tmp_path / "r.json")
    report.write_junit(broken_result, tmp_path / "r.xml")
    report.write_markdown(broken_result, tmp_path / "r.md")
    texts = [(tmp_path / name).read_text() for name in ("r.json", "r.xml", "r.md")] + [report.summary(broken_result)]
    token = base64.b64encode(f"boss:{SECRET}".encode()).decode()
    for text in texts:
        assert SECRET not in text and token not in text
    curls = [f.curl for c in broken_result.checks.values() for f in c.findings]
    assert any('-u "boss:$OCP_PASSWORD"' in curl for curl in curls)


def test_cli_exit_statuses_and_reports(tmp_path, capsys):
    with serving(Conforming().app()) as url:
        with pytest.raises(SystemExit) as done:
            main(["run", "--base-url", url, "--fuzz-operation", "getTaskInstance", "--max-examples", "5", "--seed", "3",
                  "--quiet",
                  "--report-json", str(tmp_path / "r.json"), "--report-md", str(tmp_path / "r.md"),
                  "--report-junit", str(tmp_path / "r.xml")])  # fmt: skip
    assert done.value.code == 0
    assert "ocp-contract: conformant" in capsys.readouterr().err
    assert json.loads((tmp_path / "r.json").read_text())["outcome"] == "conformant"
    with serving(TraceIdUpperCase().app()) as url:
        with pytest.raises(SystemExit) as done:
            main(["run", "--base-url", url, "--no-fuzzing", "--quiet"])
    assert done.value.code == 1
    for argv in (["run", "--base-url", "http://127.0.0.1:9"], ["run"], ["run", "--base-url", "x", "--spec", "/nope.yaml"],
                 ["run", "--base-url", "http://127.0.0.1:9", "--max-examples", "0"],
                 ["run", "--base-url", "http://127.0.0.1:9", "--failed-subtask-id", "7", "--non-failed-subtask-id", "7"]):  # fmt: skip
        with pytest.raises(SystemExit) as done:
            main(argv)
        assert done.value.code == 2, argv
        last = capsys.readouterr().err.strip().splitlines()[-1]
        assert last.startswith("ocp-contract: could not test: "), last


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_ocp_contract_command_against_ocp_mock_serve(tmp_path):
    port = _free_port()
    mock = subprocess.Popen([BIN / "ocp-mock", "serve", "--port", str(port), "--quiet", "--workers", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        url = f"http://127.0.0.1:{port}"
        command = [BIN / "ocp-contract", "run", "--base-url", url, "--fuzz-operation", "retrySubtask",
                   "--max-examples", "3", "--report-json", tmp_path / "r.json"]  # fmt: skip
        found = []
        for _ in range(2):  # twice: the second run resets the mock's world, so its FAILED fixture is FAILED again
            done = subprocess.run(command, capture_output=True, text=True, timeout=120, env={**os.environ})
            assert done.returncode == 0, done.stderr
            doc = json.loads((tmp_path / "r.json").read_text())
            assert doc["totals"]["failed"] == 0
            found.append(doc["fixtures"])
        assert found[0] == found[1] and found[0]["source"] == "discovered"  # the same fixtures both times
        assert "[5/6] fuzzing" in done.stderr and "cases/s" in done.stderr
        assert f"fixtures (discovered): task {found[0]['task_id']}" in done.stderr
    finally:
        mock.terminate()
        mock.wait(timeout=10)


def _pytest(*args: str) -> subprocess.CompletedProcess:
    """pytest --pyargs contracts, loading only our plugin (other plugins' start-up would dominate the time)."""
    command = [sys.executable, "-m", "pytest", "--pyargs", "contracts", "-q", "-p", "no:cacheprovider",
               "-p", "contracts.pytest_plugin", *args]  # fmt: skip
    env = {**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    return subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=Path(__file__).parent, env=env)


def test_pytest_entry_point_has_the_same_exit_meaning():
    from importlib.metadata import entry_points

    assert "contracts.pytest_plugin" in [e.value for e in entry_points(group="pytest11")]
    inert = _pytest()
    assert inert.returncode == 5 and "no tests ran" in inert.stdout  # without --base-url: nothing collected
    assert _pytest("--base-url", "http://127.0.0.1:9").returncode == 2
    with serving(TraceIdUpperCase().app()) as url:
        broken = _pytest("--base-url", url, "--ocp-fuzz-operation", "retrySubtask", "--ocp-max-examples", "3")
    assert broken.returncode == 1, broken.stdout
    assert "FAILED" in broken.stdout and "test_check[ocp_trace_id]" in broken.stdout
