"""`ocp-contract run`: options in, a Result out, reports written, and the exit status a CI job needs:
0 conformant, 1 not conformant, 2 could not test (with a one-line reason)."""

from __future__ import annotations

import sys

import click

from . import report
from .result import EXIT_CODES, COULD_NOT_TEST
from .runner import DEFAULT_MAX_EXAMPLES, UNKNOWN_SUBTASK_ID, Options, run as run_contract

INT64 = click.IntRange(-(2**63), 2**63 - 1)


@click.group()
@click.version_option(package_name="ocp-task-mock")
def cli() -> None:
    """Checks a server against the OCP task API contract (openapi.yaml)."""


@cli.command()
@click.option("--base-url", required=True, help="The server to check, e.g. http://127.0.0.1:8080.")
@click.option("--spec", "spec_path", type=click.Path(exists=True, dir_okay=False),
              help="The contract. Default: the openapi.yaml shipped with this package.")
@click.option("--user", default="admin", show_default=True, envvar="OCP_USER",
              help="A user with TASK_MANAGER and TASK_VIEWER.")
@click.option("--password", default="admin", show_default=True, envvar="OCP_PASSWORD", show_envvar=True)
@click.option("--viewer-user", default="viewer", show_default=True, envvar="OCP_VIEWER_USER",
              help="A user without TASK_MANAGER; '' to skip the permission check.")
@click.option("--viewer-password", default="viewer", show_default=True, envvar="OCP_VIEWER_PASSWORD", show_envvar=True)
@click.option("--task-id", type=INT64,
              help="The task of the fixture subtasks. Default: found through the read endpoints (the oldest FAILED "
                   "task with a FAILED subtask and a non-FAILED one).")
@click.option("--failed-subtask-id", type=INT64,
              help="A FAILED subtask; the run retries it (ocp-mock's world is reset first). "
                   "Default: found in the task.")
@click.option("--non-failed-subtask-id", type=INT64, help="A subtask that is not FAILED. Default: found in the task.")
@click.option("--unknown-subtask-id", default=UNKNOWN_SUBTASK_ID, show_default=True, type=INT64,
              help="A subtask (and task) id that does not exist.")
@click.option("--max-examples", default=DEFAULT_MAX_EXAMPLES, show_default=True, type=click.IntRange(1),
              help="Generated requests per operation and phase (schemathesis).")
@click.option("--fuzz-operation", "fuzz_operations", multiple=True, metavar="OPERATION_ID",
              help="Fuzz only this operation (repeatable). Default: every operation of the spec.")
@click.option("--no-fuzzing", is_flag=True, help="Skip schemathesis: the OCP phases only (a few seconds).")
@click.option("--stateful/--no-stateful", default=True, show_default=True,
              help="schemathesis' stateful phase (follows the spec's links; max-examples/4 scenarios).")
@click.option("--seed", type=click.IntRange(0), help="Seed of the generated requests (default: random, reported).")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64), help="schemathesis workers.")
@click.option("--mock-reset/--no-mock-reset", default=True, show_default=True,
              help="When the target is ocp-mock, reset its world before the run.")
@click.option("--report-json", type=click.Path(dir_okay=False, writable=True), help="Write the JSON report here.")
@click.option("--report-junit", type=click.Path(dir_okay=False, writable=True), help="Write a JUnit XML report here.")
@click.option("--report-md", type=click.Path(dir_okay=False, writable=True), help="Write a Markdown report here.")
@click.option("--quiet", is_flag=True, help="No progress lines, only the summary.")
def run(base_url, spec_path, user, password, viewer_user, viewer_password, task_id, failed_subtask_id,
        non_failed_subtask_id, unknown_subtask_id, max_examples, fuzz_operations, no_fuzzing, stateful, seed, workers,
        mock_reset,
        report_json, report_junit, report_md, quiet) -> int:
    """Check the server at --base-url; exit 0 conformant, 1 not conformant, 2 could not test."""
    given = [i for i in (failed_subtask_id, non_failed_subtask_id, unknown_subtask_id) if i is not None]
    if len(set(given)) < len(given):
        raise click.BadParameter("the failed, non-failed and unknown subtask ids must differ")
    options = Options(
        base_url=base_url, spec_path=spec_path, user=user, password=password,
        viewer_user=viewer_user or None, viewer_password=viewer_password,
        task_id=task_id, failed_subtask_id=failed_subtask_id, non_failed_subtask_id=non_failed_subtask_id,
        unknown_subtask_id=unknown_subtask_id, max_examples=max_examples, seed=seed, workers=workers,
        fuzz_operations=() if no_fuzzing else (tuple(fuzz_operations) or None), stateful=stateful,
        reset_mock=mock_reset,
    )  # fmt: skip
    progress = None if quiet else (lambda message: click.echo(message, err=True))
    try:
        result = run_contract(options, progress=progress)
    except Exception as exc:  # a bug of ours must not read as "not conformant" (1) in CI
        click.echo(f"ocp-contract: could not test: internal error: {type(exc).__name__}: {exc}", err=True)
        return EXIT_CODES[COULD_NOT_TEST]
    for path, write in ((report_json, report.write_json), (report_junit, report.write_junit),
                        (report_md, report.write_markdown)):  # fmt: skip
        if path:
            write(result, path)
    click.echo(report.summary(result), err=True)
    return result.exit_code


def main(argv: list[str] | None = None) -> None:
    """Console entry point: usage errors exit 2 with one line, like every other "could not test"."""
    try:
        code = cli.main(args=argv, prog_name="ocp-contract", standalone_mode=False)
    except click.ClickException as exc:
        click.echo(f"ocp-contract: could not test: {exc.format_message()}", err=True)
        sys.exit(EXIT_CODES[COULD_NOT_TEST])
    except (click.Abort, KeyboardInterrupt):
        click.echo("ocp-contract: interrupted", err=True)
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":  # pragma: no cover
    main()
