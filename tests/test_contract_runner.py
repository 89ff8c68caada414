"""ocp-contract against real servers: the mock and an independent conforming server give no finding; each
deliberately broken server is caught by the check we expect; the runner finds its fixtures when not given them;
exit 2 when the server cannot be tested.

The hand-written servers (tests/contract_servers.py) implement the whole task family from the spec. Most broken
ones are caught by the runner's own phases, so their runs skip fuzzing; the few that only odd input reveals fuzz
the one operation concerned (contract_servers.FUZZ)."""

from __future__ import annotations

import pytest

from contract_servers import (
    BROKEN,
    FUZZ,
    Conforming,
    SessionCookies,
    ViewerMayRetry,
    retry_only_spec,
    serving,
)
from contracts.result import COULD_NOT_TEST
from contracts.runner import Options, run
from mock_server import Config, create_app

FAST = {"max_examples": 10, "seed": 20241106}
MOCK_FIXTURES = {"task_id": 1000, "failed_subtask_id": 10001, "non_failed_subtask_id": 10002}
FAMILY_CHECKS = ("fixture_skip_not_failed", "fixture_cancel_not_running", "fixture_subtask_log",
                 "fixture_unknown_task", "fixture_task_not_failed", "fixture_rollback_prohibited",
                 "ocp_list_row_matches_detail")  # fmt: skip


@pytest.fixture(scope="module")
def retry_spec(tmp_path_factory):
    return retry_only_spec(tmp_path_factory.mktemp("spec"))


def check_run(url: str, spec_path=None, **overrides):
    return run(Options(base_url=url, spec_path=spec_path, **{**FAST, **overrides}))


def failed_checks(result) -> list[str]:
    return sorted(name for name, check in result.checks.items() if check.status == "failed")


def findings_text(result) -> str:
    return (result.reason or "") + "\n".join(
        f"{f.check}: expected {f.expected}; received {f.received}" for c in result.checks.values() for f in c.findings
    )


class Recording(Conforming):
    """The conforming server, counting the requests schemathesis sends that name each task or subtask id."""

    def __init__(self):
        super().__init__()
        self.fuzzed: dict[str, int] = {}

    def app(self):
        from flask import request

        app = super().app()

        @app.before_request
        def record():
            if any(name.lower().startswith("x-schemathesis") for name in request.headers.keys()):
                for value in (request.view_args or {}).values():
                    self.fuzzed[value] = self.fuzzed.get(value, 0) + 1

        return app


def test_the_mock_conforms_with_fixtures_it_finds_itself(tmp_path):
    """No ids given: the runner resets the mock, finds a FAILED task through the read endpoints, and the whole
    run (every operation fuzzed, the mock's clock running) gives no finding; the same ids every time."""
    app = create_app(Config(db_path=str(tmp_path / "world.sqlite3"), strict=True))
    with serving(app) as url:
        result = check_run(url)
        again = check_run(url, fuzz_operations=())
    assert result.exit_code == 0, findings_text(result)
    assert failed_checks(result) == [] and all(c.failures == 0 for c in result.checks.values())
    assert app.extensions["ocp_mock"].violations == []
    assert result.fixtures["source"] == "discovered" and result.fixtures["task_id"] is not None
    assert again.exit_code == 0 and again.fixtures == result.fixtures  # the reset makes discovery reproducible
    for name in ("fixture_retry_failed", "fixture_skip_not_failed", "fixture_task_not_failed",
                 "ocp_list_row_matches_detail", "ocp_paging", "ocp_subtask_links", "ocp_list_filters"):  # fmt: skip
        assert result.checks[name].status == "passed", name


def test_the_mock_conforms_with_its_fixed_fixture_ids(tmp_path):
    app = create_app(Config(db_path=str(tmp_path / "world.sqlite3"), strict=True))
    with serving(app) as url:
        result = check_run(url, fuzz_operations=(), **MOCK_FIXTURES)
    assert result.exit_code == 0, findings_text(result)
    assert result.fixtures["source"] == "given" and result.fixtures["failed_subtask_id"] == 10001
    # 10002 is RUNNING (it hangs), so the skip and cancel refusals use a subtask of task 1000 that stays still
    assert result.fixtures["quiet_subtask_id"] not in (None, 10001, 10002)
    assert result.checks["fixture_retry_failed"].status == "passed"
    assert result.checks["fixture_cancel_not_running"].status == "passed"


def test_an_independent_conforming_server_gets_no_finding_at_all():
    server = Recording()
    with serving(server.app()) as url:
        result = check_run(url)
    assert result.exit_code == 0, findings_text(result)
    assert sum(c.failures for c in result.checks.values()) == 0
    assert {c.status for c in result.checks.values()} <= {"passed", "skipped"}
    assert result.requests > 200 and result.cases_per_second > 0
    # discovery: the oldest FAILED task (1001), its FAILED subtask and the first sibling that stays still
    assert {k: result.fixtures[k] for k in ("source", "task_id", "failed_subtask_id", "non_failed_subtask_id",
                                            "successful_task_id", "prohibited_task_id")} == {
        "source": "discovered", "task_id": 1001, "failed_subtask_id": 10011, "non_failed_subtask_id": 10010,
        "successful_task_id": 1002, "prohibited_task_id": 1003}  # fmt: skip
    assert any("fixtures (discovered): task 1001" in note for note in result.notes)
    assert all(result.checks[name].status == "passed" for name in FAMILY_CHECKS)
    # fuzzing, of every operation, never named the fixture task or any of its subtasks
    assert sum(server.fuzzed.values()) > 100
    assert {i: n for i, n in server.fuzzed.items() if i in {"1001", "10010", "10011", "10012"}} == {}


class FixtureTaskListedFirst(Recording):
    """Conforming too (the spec does not check the order): lists the fixture task first whatever is asked, so
    the stateful phase's link from the list to its first task always leads to the fixture."""

    def list_rows(self, tasks, page, size):
        return super().list_rows(sorted(tasks, key=lambda t: t["id"] != 1001), page, size)


def test_the_stateful_phase_keeps_off_the_fixtures_too():
    server = FixtureTaskListedFirst()
    linked = ("listTaskInstances", "getTaskInstance", "retrySubtask", "skipSubtask", "cancelSubtask")
    with serving(server.app()) as url:
        result = check_run(url, fuzz_operations=linked, max_examples=12)
    assert result.exit_code == 0, findings_text(result)
    assert result.fixtures["task_id"] == 1001
    assert {i: n for i, n in server.fuzzed.items() if i in {"1001", "10010", "10011", "10012"}} == {}
    assert server.fuzzed.get(str(2**62), 0) >= 1  # the link to task 1001 was followed, and sent to the unknown id


def test_given_fixture_ids_are_used_as_given():
    with serving(Conforming().app()) as url:
        result = check_run(url, fuzz_operations=(), **MOCK_FIXTURES)
    assert result.exit_code == 0, findings_text(result)
    assert result.fixtures["source"] == "given"
    assert (result.fixtures["task_id"], result.fixtures["failed_subtask_id"]) == (1000, 10001)


@pytest.mark.parametrize(
    "given, found",
    [({"task_id": 1000}, (1000, 10001, 10000)), ({"failed_subtask_id": 10031}, (1003, 10031, 10030)),
     ({"non_failed_subtask_id": 10012}, (1001, 10011, 10012))],
)  # fmt: skip
def test_discovery_completes_partly_given_ids(given, found):
    with serving(Conforming().app()) as url:
        result = check_run(url, fuzz_operations=(), **given)
    assert result.exit_code == 0, findings_text(result)
    fx = result.fixtures
    assert (fx["task_id"], fx["failed_subtask_id"], fx["non_failed_subtask_id"]) == found


class NoFailedTask(Conforming):
    def __init__(self):
        super().__init__()
        for subtask in self.subtasks.values():
            if subtask["status"] == "FAILED":
                subtask["status"] = "SUCCESSFUL"


def test_without_a_failed_task_to_find_the_run_could_not_test(retry_spec):
    with serving(NoFailedTask().app()) as url:
        result = check_run(url, fuzz_operations=())
    assert (result.exit_code, result.outcome) == (2, COULD_NOT_TEST)
    assert result.reason.startswith("found no fixture: no FAILED task") and "--task-id" in result.reason
    with serving(Conforming().app()) as url:
        result = check_run(url, retry_spec)  # a spec without the read endpoints cannot find fixtures
    assert result.exit_code == 2 and "declares no listTaskInstances" in result.reason


def test_a_spec_with_retry_only_still_works_with_given_ids(retry_spec):
    with serving(Conforming().app()) as url:
        result = check_run(url, retry_spec, **MOCK_FIXTURES)
    assert result.exit_code == 0, findings_text(result)
    assert result.checks["fixture_retry_failed"].status == "passed"
    for name in FAMILY_CHECKS:
        assert result.checks[name].status == "skipped" and "declares no" in result.checks[name].skip_reason


def test_a_session_cookie_is_not_mistaken_for_missing_auth():
    with serving(SessionCookies().app()) as url:
        result = check_run(url, fuzz_operations=("retrySubtask",))
    assert result.exit_code == 0, findings_text(result)


@pytest.mark.parametrize("server, expected_check", list(BROKEN.items()), ids=[cls.__name__ for cls in BROKEN])
def test_each_broken_server_is_caught_by_the_expected_check(server, expected_check):
    fuzz = (FUZZ[server],) if server in FUZZ else ()
    with serving(server().app()) as url:
        result = check_run(url, fuzz_operations=fuzz)
    assert result.exit_code == 1, findings_text(result)
    assert expected_check in failed_checks(result), findings_text(result)
    finding = result.checks[expected_check].findings[0]
    assert finding.expected and finding.curl.startswith("curl ")


def test_a_retry_by_the_viewer_is_reported_once_not_again_as_a_failed_retry():
    with serving(ViewerMayRetry().app()) as url:
        result = check_run(url, fuzz_operations=())
    assert failed_checks(result) == ["fixture_viewer_forbidden"], findings_text(result)
    assert result.checks["fixture_retry_failed"].status == "skipped"
    assert "already retried by the viewer" in result.checks["fixture_retry_failed"].skip_reason


def test_without_a_viewer_the_permission_check_is_skipped():
    with serving(Conforming().app()) as url:
        result = check_run(url, viewer_user=None, fuzz_operations=())
    assert result.exit_code == 0
    assert result.checks["fixture_viewer_forbidden"].status == "skipped"


def test_an_unreachable_server_could_not_be_tested():
    result = check_run("http://127.0.0.1:9")
    assert (result.exit_code, result.outcome) == (2, COULD_NOT_TEST)
    assert "cannot reach" in result.reason


def test_refused_credentials_could_not_be_tested():
    with serving(Conforming().app()) as url:
        result = check_run(url, password="not-admin")
    assert result.exit_code == 2 and "refused the credentials of user 'admin'" in result.reason
    with serving(Conforming().app()) as url:
        result = check_run(url, viewer_password="nope")
    assert result.exit_code == 2 and "viewer" in result.reason


def test_a_bad_spec_or_operation_could_not_be_tested(tmp_path):
    result = check_run("http://127.0.0.1:9", spec_path=str(tmp_path / "missing.yaml"))
    assert result.exit_code == 2 and "cannot read the OpenAPI spec" in result.reason
    (tmp_path / "other.yaml").write_text("openapi: 3.1.0\ninfo: {title: x, version: '1'}\npaths: {}\n")
    result = check_run("http://127.0.0.1:9", spec_path=str(tmp_path / "other.yaml"))
    assert result.exit_code == 2 and "retrySubtask" in result.reason
    result = check_run("http://127.0.0.1:9", fuzz_operations=("deleteEverything",))
    assert result.exit_code == 2 and "--fuzz-operation deleteEverything" in result.reason
