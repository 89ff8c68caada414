"""ocp-contract against real servers: the mock and an independent conforming server give no finding; each
deliberately broken server is caught by the check we expect; exit 2 when the server cannot be tested.

The hand-written servers implement retrySubtask only, so they are checked against the spec cut down to it;
the mock is checked against that cut and against the whole spec."""

from __future__ import annotations

import pytest

from contract_servers import BROKEN, Conforming, SessionCookies, ViewerMayRetry, retry_only_spec, serving
from contracts.result import COULD_NOT_TEST
from contracts.runner import Options, run
from mock_server import Config, create_app

FAST = {"max_examples": 10, "seed": 20241106}


@pytest.fixture(scope="module")
def retry_spec(tmp_path_factory):
    return retry_only_spec(tmp_path_factory.mktemp("spec"))


def check_run(url: str, spec_path=None, **overrides):
    return run(Options(base_url=url, spec_path=spec_path, **{**FAST, **overrides}))


def failed_checks(result) -> list[str]:
    return sorted(name for name, check in result.checks.items() if check.status == "failed")


def findings_text(result) -> str:
    return "\n".join(f"{f.check}: expected {f.expected}; received {f.received}" for c in result.checks.values()
                     for f in c.findings)  # fmt: skip


class Recording(Conforming):
    """The conforming server, counting the requests each subtask id receives."""

    def __init__(self):
        super().__init__()
        self.hits: dict[str, int] = {}

    def retry(self, task, sub):
        self.hits[sub] = self.hits.get(sub, 0) + 1
        return super().retry(task, sub)


@pytest.mark.parametrize("whole_spec", [False, True], ids=["retry-only", "whole-spec"])
def test_the_mock_conforms(tmp_path, retry_spec, whole_spec):
    app = create_app(Config(db_path=str(tmp_path / "world.sqlite3"), strict=True))
    with serving(app) as url:
        result = check_run(url, spec_path=None if whole_spec else retry_spec)
    assert result.exit_code == 0, findings_text(result)
    assert failed_checks(result) == [] and all(c.failures == 0 for c in result.checks.values())
    assert app.extensions["ocp_mock"].violations == []
    assert result.checks["fixture_retry_failed"].status == "passed"
    assert result.checks["ocp_enum_values"].applied >= 1  # the 200 of the fixture retry was judged


def test_an_independent_conforming_server_gets_no_finding_at_all(retry_spec):
    server = Recording()
    with serving(server.app()) as url:
        result = check_run(url, retry_spec)
    assert result.exit_code == 0, findings_text(result)
    assert sum(c.failures for c in result.checks.values()) == 0
    assert {c.status for c in result.checks.values()} <= {"passed", "skipped"}
    assert result.requests > 40 and result.cases_per_second > 0
    # fuzzing never touched the fixtures: 10001 got exactly the fixture phase's five requests, 10002 one
    assert server.hits["10001"] == 5 and server.hits["10002"] == 1


def test_a_session_cookie_is_not_mistaken_for_missing_auth(retry_spec):
    with serving(SessionCookies().app()) as url:
        result = check_run(url, retry_spec)
    assert result.exit_code == 0, findings_text(result)


@pytest.mark.parametrize("server, expected_check", list(BROKEN.items()), ids=[cls.__name__ for cls in BROKEN])
def test_each_broken_server_is_caught_by_the_expected_check(server, expected_check, retry_spec):
    with serving(server().app()) as url:
        result = check_run(url, retry_spec)
    assert result.exit_code == 1
    assert expected_check in failed_checks(result), findings_text(result)
    finding = result.checks[expected_check].findings[0]
    assert finding.expected and finding.curl.startswith("curl ")


def test_a_retry_by_the_viewer_is_reported_once_not_again_as_a_failed_retry(retry_spec):
    with serving(ViewerMayRetry().app()) as url:
        result = check_run(url, retry_spec)
    assert failed_checks(result) == ["fixture_viewer_forbidden"], findings_text(result)
    assert result.checks["fixture_retry_failed"].status == "skipped"
    assert "already retried by the viewer" in result.checks["fixture_retry_failed"].skip_reason


def test_without_a_viewer_the_permission_check_is_skipped(retry_spec):
    with serving(Conforming().app()) as url:
        result = check_run(url, retry_spec, viewer_user=None)
    assert result.exit_code == 0
    assert result.checks["fixture_viewer_forbidden"].status == "skipped"


def test_an_unreachable_server_could_not_be_tested():
    result = check_run("http://127.0.0.1:9")
    assert (result.exit_code, result.outcome) == (2, COULD_NOT_TEST)
    assert "cannot reach" in result.reason


def test_refused_credentials_could_not_be_tested(retry_spec):
    with serving(Conforming().app()) as url:
        result = check_run(url, retry_spec, password="not-admin")
    assert result.exit_code == 2 and "refused the credentials of user 'admin'" in result.reason
    with serving(Conforming().app()) as url:
        result = check_run(url, retry_spec, viewer_password="nope")
    assert result.exit_code == 2 and "viewer" in result.reason


def test_a_bad_spec_could_not_be_tested(tmp_path):
    result = check_run("http://127.0.0.1:9", spec_path=str(tmp_path / "missing.yaml"))
    assert result.exit_code == 2 and "cannot read the OpenAPI spec" in result.reason
    (tmp_path / "other.yaml").write_text("openapi: 3.1.0\ninfo: {title: x, version: '1'}\npaths: {}\n")
    result = check_run("http://127.0.0.1:9", spec_path=str(tmp_path / "other.yaml"))
    assert result.exit_code == 2 and "retrySubtask" in result.reason
