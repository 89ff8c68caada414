"""The ocp-contract run as pytest tests: `pytest --pyargs contracts --base-url URL [--ocp-... ]`.

One run per session; one test per check (a failing test lists that check's findings) and a last test for
the verdict. When the server cannot be tested (unreachable, credentials refused), pytest exits with 2.
Collected only with --base-url (see contracts/pytest_plugin.py).
"""

from __future__ import annotations

import pytest

from contracts import checks, report, runner

CHECK_NAMES = [c.__name__ for c in (*checks.FIXTURE_CHECKS, *checks.RESPONSE_CHECKS, *checks.CROSS_CHECKS)] + list(
    runner.BUILTIN_CHECKS
)


def _fuzz_operations(text: str | None) -> tuple[str, ...] | None:
    if text is None:
        return None
    return () if text.strip().lower() == "none" else tuple(t.strip() for t in text.split(",") if t.strip())


@pytest.fixture(scope="session")
def ocp_result(pytestconfig):
    opt = pytestconfig.getoption
    options = runner.Options(
        base_url=opt("base_url"),
        spec_path=opt("ocp_spec"),
        user=opt("ocp_user"),
        password=opt("ocp_password"),
        viewer_user=opt("ocp_viewer_user") or None,
        viewer_password=opt("ocp_viewer_password"),
        task_id=opt("ocp_task_id"),
        failed_subtask_id=opt("ocp_failed_subtask_id"),
        non_failed_subtask_id=opt("ocp_non_failed_subtask_id"),
        max_examples=opt("ocp_max_examples") or runner.DEFAULT_MAX_EXAMPLES,
        fuzz_operations=_fuzz_operations(opt("ocp_fuzz_operation")),
        seed=opt("ocp_seed"),
    )
    result = runner.run(options)
    if opt("ocp_report_json"):
        report.write_json(result, opt("ocp_report_json"))
    if opt("ocp_report_md"):
        report.write_markdown(result, opt("ocp_report_md"))
    if result.reason:
        pytest.exit(f"ocp-contract: could not test: {result.reason}", returncode=2)
    return result


@pytest.mark.parametrize("name", CHECK_NAMES)
def test_check(ocp_result, name):
    check = ocp_result.checks.get(name)
    if check is None or check.status == "skipped":
        pytest.skip(check.skip_reason if check and check.skip_reason else "applied to no response")
    if check.status == "failed":
        text = "\n".join(report.finding_text(f) for f in check.findings)
        pytest.fail(f"{name}: {check.failures} failing response(s)\n{check.description}\n\n{text}", pytrace=False)


def test_conformant(ocp_result):
    assert ocp_result.exit_code == 0, report.summary(ocp_result)
