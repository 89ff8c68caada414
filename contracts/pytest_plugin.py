"""pytest plugin (entry point `pytest11: ocp_contract`): adds `--base-url` and the `--ocp-*` options, and
nothing else. Without `--base-url` it collects no test and imports nothing beyond pytest, so the project's
own test suite (or any other) is untouched. With it, `pytest --pyargs contracts --base-url URL` runs
contracts/test_conformance.py: one test per check, failing when the server does not conform; pytest exits
with 2 when the server could not be tested, as `ocp-contract run` does.
"""

from __future__ import annotations

from pathlib import Path

CONFORMANCE_TESTS = Path(__file__).with_name("test_conformance.py")


def pytest_addoption(parser) -> None:
    group = parser.getgroup("ocp-contract", "OCP contract (pytest --pyargs contracts --base-url URL)")
    try:
        group.addoption("--base-url", dest="base_url", default=None, help="the OCP server to check")
    except ValueError:  # another plugin (pytest-base-url) already defines it: share its value
        pass
    for name, default, kind, help_text in (
        ("--ocp-spec", None, str, "the contract (default: the packaged openapi.yaml)"),
        ("--ocp-user", "admin", str, "a user with TASK_MANAGER"),
        ("--ocp-password", "admin", str, "its password"),
        ("--ocp-viewer-user", "viewer", str, "a user without TASK_MANAGER ('' to skip)"),
        ("--ocp-viewer-password", "viewer", str, "its password"),
        ("--ocp-task-id", None, int, "the task of the fixture subtasks (default: found on the server)"),
        ("--ocp-failed-subtask-id", None, int, "a FAILED subtask, it gets retried (default: found in the task)"),
        ("--ocp-non-failed-subtask-id", None, int, "a subtask that is not FAILED (default: found in the task)"),
        ("--ocp-max-examples", None, int, "generated requests per operation and phase"),
        ("--ocp-fuzz-operation", None, str, "fuzz only these operationIds (comma-separated; 'none': no fuzzing)"),
        ("--ocp-seed", None, int, "seed of the generated requests"),
        ("--ocp-report-json", None, str, "write the JSON report here"),
        ("--ocp-report-md", None, str, "write the Markdown report here"),
    ):
        group.addoption(name, default=default, type=kind, help=help_text)


def pytest_ignore_collect(collection_path: Path, config):
    if collection_path == CONFORMANCE_TESTS and not config.getoption("base_url", default=None):
        return True
    return None
