"""The OCP checks on synthetic exchanges: each passes a conforming response, catches one deviation with a
message that reads Expected/Received, and reads what it needs from the spec."""

from __future__ import annotations

import copy
import json

import pytest

from conftest import SPEC_PATH
from contracts import checks
from contracts.checks import NOT_APPLICABLE, CheckFailure, Exchange, RequestInfo
from contracts.spec import Contract, SpecError

CONTRACT = Contract.load(SPEC_PATH)
URL = "http://ocp.test/api/v2/tasks/instances/1000/subtasks/10001/retry"
SUBTASK = {
    "createTime": "2024-11-01T08:06:59.724+08:00", "description": "Install", "downstreams": [10005], "id": 10001,
    "name": "Install", "nodeType": "JAVA_TASK", "operation": "RETRY", "parallelIdx": 0, "prohibitRollback": False,
    "runTime": 1, "seriesId": 2, "startTime": "2024-11-01T08:09:25.951+08:00", "status": "READY", "timeout": 1800,
    "upstreams": [10000],
}  # fmt: skip


def envelope(status: int, **payload) -> dict:
    return {"duration": 2, "server": "0a7c9cdf87", "status": status, "successful": 200 <= status < 300,
            "timestamp": "2026-11-25T23:53:28.107+08:00", "traceId": "2f213d765e4ade13", **payload}  # fmt: skip


def exchange(status=200, body=None, content_type="application/json", valid=True, operation="retrySubtask"):
    if body is None:
        body = envelope(200, data=SUBTASK) if status == 200 else envelope(status, error={"code": 20003, "message": "x"})
    raw = body if isinstance(body, (bytes, str)) else json.dumps(body)
    request = RequestInfo("POST", URL, operation=operation, valid=valid)
    return Exchange(request, status, {"Content-Type": content_type}, raw)


def fails(check, ex, contract=CONTRACT, **kwargs) -> CheckFailure:
    with pytest.raises(CheckFailure) as info:
        check(ex, contract, **kwargs)
    assert str(info.value).startswith("Expected: ") and "\nReceived: " in str(info.value)
    return info.value


@pytest.mark.parametrize("ex", [exchange(200), exchange(400), exchange(404, envelope(404, error={"code": 20000, "message": "m"}))])
@pytest.mark.parametrize("check", checks.RESPONSE_CHECKS, ids=lambda c: c.__name__)
def test_every_response_check_passes_conforming_responses(check, ex):
    assert check(ex, CONTRACT) in (None, NOT_APPLICABLE)


def with_data(**changes) -> dict:
    return envelope(200, data={**SUBTASK, **changes})


@pytest.mark.parametrize(
    "check, ex",
    [
        (checks.ocp_json_content_type, exchange(400, content_type="text/plain")),
        (checks.ocp_envelope_fields, exchange(200, {k: v for k, v in envelope(200, data=SUBTASK).items() if k != "server"})),
        (checks.ocp_envelope_fields, exchange(200, b"<html>oops</html>")),
        (checks.ocp_envelope_status, exchange(404, {**envelope(404, error={"code": 20000, "message": "m"}), "status": 200})),
        (checks.ocp_envelope_successful, exchange(400, {**envelope(400, error={"code": 20003, "message": "m"}), "successful": True})),
        (checks.ocp_envelope_payload, exchange(400, envelope(400, error={"code": "20003", "message": "m"}))),
        (checks.ocp_envelope_payload, exchange(200, envelope(200, data=SUBTASK, error={"code": 1, "message": "m"}))),
        (checks.ocp_trace_id, exchange(200, {**envelope(200, data=SUBTASK), "traceId": "2F213D765E4ADE13"})),
        (checks.ocp_timestamp_format, exchange(200, {**envelope(200, data=SUBTASK), "timestamp": "2026-11-25T23:53:28.107"})),
        (checks.ocp_timestamp_format, exchange(200, with_data(startTime="2024-11-01 08:09:25"))),
        (checks.ocp_duration, exchange(200, {**envelope(200, data=SUBTASK), "duration": -1})),
        (checks.ocp_duration, exchange(200, {**envelope(200, data=SUBTASK), "duration": 1.5})),
        (checks.ocp_server_id, exchange(200, {**envelope(200, data=SUBTASK), "server": ""})),
        (checks.ocp_time_order, exchange(200, with_data(createTime="2024-11-01T09:00:00.000+08:00"))),
        (checks.ocp_time_order, exchange(200, with_data(finishTime="2024-11-01T00:09:25.000Z"))),
        (checks.ocp_enum_values, exchange(200, with_data(status="ready"))),
        (checks.ocp_enum_values, exchange(200, with_data(nodeType="PYTHON_TASK"))),
        (checks.ocp_business_rule_400, exchange(400, envelope(400, error={"code": 0, "message": "m"}), valid=False)),
        (checks.ocp_business_rule_400, exchange(400, envelope(400, error={"code": 0, "message": "m", "subErrors": [{"message": "x"}]}), valid=True)),
        (checks.spec_status_declared, exchange(422, envelope(422, error={"code": 0, "message": "m"}))),
        (checks.spec_content_type, exchange(404, envelope(404, error={"code": 20000, "message": "m"}), content_type="text/json")),
        (checks.spec_body_schema, exchange(200, with_data(id="10001"))),
        (checks.spec_body_schema, exchange(200, envelope(200, data={**{k: v for k, v in SUBTASK.items() if k != "parallelIdx"}, "paralleIdx": 0}))),
    ],
    ids=lambda value: value.__name__ if callable(value) else "",
)
def test_each_response_check_catches_its_deviation(check, ex):
    failure = fails(check, ex)
    assert failure.expected and failure.received


def test_a_finding_names_expected_and_received():
    failure = fails(checks.ocp_enum_values, exchange(200, with_data(status="ready")))
    assert "PENDING, READY, RUNNING, CANCELING, FAILED, SUCCESSFUL" in failure.expected
    assert failure.received == '/data/status = "ready"'
    assert checks.run_check(checks.ocp_enum_values, exchange(200, with_data(status="ready")), CONTRACT).check == "ocp_enum_values"


def test_checks_read_enums_and_required_fields_from_the_spec():
    raw = copy.deepcopy(CONTRACT.raw)
    raw["components"]["schemas"]["SubtaskState"]["enum"] = ["ready", "FAILED"]
    raw["components"]["schemas"]["Envelope"]["required"].append("region")
    other = Contract.from_dict(raw)
    assert checks.ocp_enum_values(exchange(200, with_data(status="ready")), other) is None
    fails(checks.ocp_enum_values, exchange(200), other)
    assert "missing region" in fails(checks.ocp_envelope_fields, exchange(200), other).received


@pytest.mark.parametrize(
    "text, ok",
    [("2021-08-25T15:09:35.626+08:00", True), ("2021-08-25T15:09:31+08:00", True), ("2021-08-25T07:09:31Z", True),
     ("2016-12-31T23:59:60Z", True), ("2021-08-25T15:09:35.626", False), ("2021-08-25 15:09:35+08:00", False),
     ("2021-13-25T15:09:35+08:00", False), (1629875371, False)],
)  # fmt: skip
def test_rfc3339_needs_an_offset(text, ok):
    assert (checks.parse_rfc3339(text) is not None) is ok


def test_the_400_rule_leaves_other_statuses_alone():
    assert checks.ocp_business_rule_400(exchange(404, envelope(404, error={"code": 0, "message": "m"})), CONTRACT) == NOT_APPLICABLE
    assert checks.ocp_business_rule_400(exchange(400, valid=True), CONTRACT) is None  # 20003: a business rule


def test_undeclared_methods_get_the_envelope_checks_but_not_the_spec_checks():
    ex = exchange(405, envelope(405, error={"code": 0, "message": "m"}), operation=None)
    assert checks.spec_status_declared(ex, CONTRACT) == NOT_APPLICABLE
    assert checks.ocp_envelope_status(ex, CONTRACT) is None


@pytest.mark.parametrize(
    "check, ex, kwargs",
    [
        (checks.fixture_no_credentials, exchange(200), {}),
        (checks.fixture_viewer_forbidden, exchange(403, envelope(403, error={"code": 0, "message": "m"})), {}),
        (checks.fixture_retry_failed, exchange(200, with_data(status="FAILED")), {"subtask_id": 10001}),
        (checks.fixture_retry_failed, exchange(200, with_data(operation="EXECUTE")), {"subtask_id": 10001}),
        (checks.fixture_retry_failed, exchange(200), {"subtask_id": 10002}),
        (checks.fixture_retry_again, exchange(200), {}),
        (checks.fixture_unknown_subtask, exchange(404, envelope(404, error={"code": 0, "message": "m"})), {}),
    ],
    ids=lambda value: value.__name__ if callable(value) else "",
)
def test_fixture_checks(check, ex, kwargs):
    fails(check, ex, **kwargs)


def test_parameter_validity_follows_the_spec():
    op = CONTRACT.operation("retrySubtask")
    assert CONTRACT.parameters_valid(op, {"taskInstanceId": "1", "subtaskInstanceId": str(2**63 - 1)}) is True
    assert CONTRACT.parameters_valid(op, {"taskInstanceId": "1", "subtaskInstanceId": str(2**63)}) is False
    assert CONTRACT.parameters_valid(op, {"taskInstanceId": "1", "subtaskInstanceId": "abc"}) is False
    assert CONTRACT.parameters_valid(op, {"taskInstanceId": "1", "subtaskInstanceId": "+5"}) is None


def test_fuzzing_copy_of_the_spec_has_no_parameter_examples():
    raw = CONTRACT.without_parameter_examples()
    path_params = [p for p in raw["components"]["parameters"].values() if p["in"] == "path"]
    assert path_params and all("example" not in p and "examples" not in p for p in path_params)
    assert "example" in CONTRACT.raw["components"]["parameters"]["subtaskInstanceId"]  # the original is untouched


def test_validators_inline_refs_and_report_what_the_refs_would():
    """Contract.validator replaces standalone $refs by their targets once; the verdicts and messages are those of
    the spec as written (validated through its refs), on valid bodies and on broken ones."""
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import best_match

    schema = CONTRACT.body_schema(CONTRACT.operation("getTaskInstance"), 200, None)
    as_written = Draft202012Validator({**schema, "components": CONTRACT.raw["components"]},
                                      format_checker=Draft202012Validator.FORMAT_CHECKER)  # fmt: skip
    assert "$ref" not in json.dumps(CONTRACT.inline(schema))
    body = copy.deepcopy(CONTRACT.raw["components"]["examples"]["TaskInstanceFailed"]["value"])
    broken = []
    for change in ("status", "createTime", "id", "subtasks", "extra"):
        b = copy.deepcopy(body)
        if change == "extra":
            b["data"]["unexpectedField"] = 1
        elif change == "subtasks":
            b["data"]["subtasks"] = [{"id": "x", "status": "ready"}]
        else:
            b["data"][change] = "lower-case" if change == "status" else ("2024-13-45" if change == "createTime" else None)
        broken.append(b)
    for instance in (body, *broken, envelope(200), [], "x"):
        error = best_match(as_written.iter_errors(instance))
        expected = None if error is None else "at /" + "/".join(map(str, error.absolute_path)) + f": {error.message}"
        assert CONTRACT.first_error(schema, instance) == expected


def test_inlining_keeps_recursive_and_constrained_refs():
    contract = Contract.from_dict({
        "openapi": "3.1.0", "paths": {},
        "components": {"schemas": {
            "Node": {"type": "object", "properties": {"child": {"$ref": "#/components/schemas/Node"},
                                                      "id": {"$ref": "#/components/schemas/Id", "description": "d"}}},
            "Id": {"type": "integer"},
            "Small": {"$ref": "#/components/schemas/Id", "maximum": 3},
        }},
    })  # fmt: skip
    node = contract.inline(contract.raw["components"]["schemas"]["Node"])
    assert node["properties"]["id"] == {"type": "integer"}  # beside a description: inlined
    assert node["properties"]["child"]["properties"]["child"] == {"$ref": "#/components/schemas/Node"}  # recursion
    small = contract.raw["components"]["schemas"]["Small"]
    assert contract.inline(small) == small  # a $ref beside a constraint stays
    assert contract.first_error(small, 4) is not None and contract.first_error(small, 2) is None
    deep = {"child": {"child": {"child": {"id": "x"}}}}
    assert "is not of type 'integer'" in contract.first_error(contract.raw["components"]["schemas"]["Node"], deep)


def test_the_body_walk_is_shared_by_the_checks_and_follows_the_exchange():
    ex = exchange(200)
    nodes = checks._nodes(ex, CONTRACT)
    assert nodes and checks._nodes(ex, CONTRACT) is nodes  # worked out once
    assert ("/data/status", CONTRACT.schema("SubtaskState"), "READY") in nodes
    other = Exchange(ex.request, 400, ex.headers, json.dumps(envelope(400, error={"code": 20003, "message": "x"})))
    assert checks._nodes(other, CONTRACT) is not nodes


def test_the_default_spec_is_the_mocks_without_importing_it():
    import subprocess
    import sys

    code = ("import sys; from contracts.runner import default_spec_path; p = default_spec_path(); "
            "assert 'mock_server' not in sys.modules, 'imported'; from mock_server.config import SPEC_PATH; "
            "assert p == str(SPEC_PATH), (p, SPEC_PATH)")  # fmt: skip
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_bad_spec_is_a_spec_error(tmp_path):
    (tmp_path / "bad.yaml").write_text("openapi: [\n")
    (tmp_path / "swagger.yaml").write_text("swagger: '2.0'\npaths: {}\n")
    for name in ("bad.yaml", "swagger.yaml", "missing.yaml"):
        with pytest.raises(SpecError):
            Contract.load(tmp_path / name)


def test_importing_checks_registers_nothing_with_schemathesis():
    import subprocess
    import sys

    code = (
        "import contracts.checks, contracts.runner, contracts.pytest_plugin;"
        "from schemathesis.checks import CHECKS, load_all_checks; load_all_checks();"
        "assert not [n for n in CHECKS.get_all_names() if n.startswith(('ocp_', 'spec_'))]"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_st_checks_work_inside_schemathesis():
    import schemathesis
    from schemathesis.checks import CHECKS
    from schemathesis.core.failures import FailureGroup

    from contract_servers import TraceIdUpperCase, serving
    from contracts import st_checks

    try:
        assert "ocp_trace_id" in CHECKS.get_all_names()
        schema = schemathesis.openapi.from_dict(CONTRACT.without_parameter_examples(), config=schemathesis.Config())
        with serving(TraceIdUpperCase().app()) as url:
            schema.config.update(base_url=url, basic_auth=("admin", "admin"))
            case = schema["/api/v2/tasks/instances/{taskInstanceId}/subtasks/{subtaskInstanceId}/retry"]["POST"].Case(
                path_parameters={"taskInstanceId": 1, "subtaskInstanceId": 99999}
            )
            response = case.call()
        with pytest.raises(FailureGroup) as info:
            case.validate_response(response, checks=[CHECKS.get_one("ocp_trace_id")])
        assert "Expected: traceId of 16 lower-case hex" in str(info.value.exceptions[0])
        case.validate_response(response, checks=[CHECKS.get_one("ocp_envelope_status")])  # that one holds
    finally:
        for check in st_checks.REGISTERED:  # registration is global: leave the process as we found it
            CHECKS.unregister(check.__name__)


def test_every_check_is_documented():
    from conftest import ROOT
    from contracts.runner import BUILTIN_CHECKS

    doc = (ROOT / "docs" / "contract-runner.md").read_text(encoding="utf-8")
    names = [c.__name__ for c in (*checks.FIXTURE_CHECKS, *checks.RESPONSE_CHECKS, *checks.CROSS_CHECKS)] + list(BUILTIN_CHECKS)
    assert [name for name in names if f"`{name}`" not in doc] == []


# -- the task family -------------------------------------------------------------------------------------

LIST_URL = "http://ocp.test/api/v2/tasks/instances"
TASK_URL = "http://ocp.test/api/v2/tasks/instances/1003"
LIST_BODY = CONTRACT.operation("listTaskInstances").responses["200"]["content"]["application/json"]["example"]
TASK_BODY = CONTRACT.raw["components"]["examples"]["TaskInstanceFailed"]["value"]


def family(operation: str, url: str, body, status: int = 200, method: str = "GET") -> Exchange:
    return Exchange(RequestInfo(method, url, operation=operation, valid=True), status,
                    {"Content-Type": "application/json"}, json.dumps(body))  # fmt: skip


def a_page(url: str, number: int, size: int, total: int, rows: int, pages: int | None = None) -> Exchange:
    row = LIST_BODY["data"]["contents"][0]
    page = {"number": number, "size": size, "totalElements": total,
            "totalPages": -(-total // size) if pages is None else pages}  # fmt: skip
    return family("listTaskInstances", url, envelope(200, data={"contents": [row] * rows, "page": page}))


def a_task(**changes) -> Exchange:
    data = copy.deepcopy(TASK_BODY["data"])
    data.update(changes)
    return family("getTaskInstance", TASK_URL, {**TASK_BODY, "data": data})


@pytest.mark.parametrize("check", checks.RESPONSE_CHECKS, ids=lambda c: c.__name__)
def test_the_specs_own_family_examples_pass_every_response_check(check):
    for ex in (family("listTaskInstances", LIST_URL, LIST_BODY), family("getTaskInstance", TASK_URL, TASK_BODY),
               family("retryTask", TASK_URL + "/retry", CONTRACT.raw["components"]["examples"]["TaskInstanceRetried"]["value"], method="POST"),
               a_page(LIST_URL + "?page=3&size=3", 3, 3, 7, 1), a_page(LIST_URL + "?page=9&size=3", 9, 3, 7, 0),
               a_page(LIST_URL + "?status=FAILED&size=2000", 1, 2000, 0, 0)):  # fmt: skip
        assert check(ex, CONTRACT) in (None, NOT_APPLICABLE), ex.request.url


@pytest.mark.parametrize(
    "ex, expected",
    [
        (a_page(LIST_URL + "?size=3", 1, 3, 7, 3, pages=2), "ceil(7 / 3) = 3"),
        (a_page(LIST_URL + "?size=3", 1, 3, 0, 0, pages=1), "ceil(0 / 3) = 0"),
        (a_page(LIST_URL + "?page=2&size=3", 1, 3, 7, 3), "page.number 2 (the requested page)"),
        (a_page(LIST_URL, 1, 20, 7, 7), "page.size 10 (the requested size)"),  # the spec's default size
        (a_page(LIST_URL + "?size=3", 1, 3, 7, 2), "3 row(s) on page 1 of 3"),
        (a_page(LIST_URL + "?page=3&size=3", 3, 3, 7, 3), "1 row(s) on page 3 of 3"),
        (a_page(LIST_URL + "?page=4&size=3", 4, 3, 7, 1), "0 row(s) past the last page"),
    ],
)
def test_paging_arithmetic(ex, expected):
    assert expected in fails(checks.ocp_paging, ex).expected


def test_paging_leaves_invalid_requests_to_negative_data_rejection():
    assert checks.ocp_paging(a_page(LIST_URL + "?size=0", 1, 3, 7, 0), CONTRACT) == NOT_APPLICABLE
    assert checks.ocp_paging(a_page(LIST_URL + "?page=1&page=2", 1, 10, 7, 0), CONTRACT) == NOT_APPLICABLE
    assert CONTRACT.query_values(CONTRACT.operation("listTaskInstances"), LIST_URL + "?page=2&status=FAILED") == {
        "status": "FAILED", "page": 2, "size": 10, "sort": "id,desc"}  # fmt: skip


def test_list_filters():
    row = LIST_BODY["data"]["contents"][0]  # Restart cluster, FAILED
    ok = family("listTaskInstances", LIST_URL + "?status=FAILED&name=RESTART", LIST_BODY)
    assert checks.ocp_list_filters(ok, CONTRACT) is None
    assert "status \"RUNNING\"" in fails(checks.ocp_list_filters, family("listTaskInstances", LIST_URL + "?status=RUNNING", LIST_BODY)).expected
    fails(checks.ocp_list_filters, family("listTaskInstances", LIST_URL + "?name=backup", LIST_BODY))
    assert checks.ocp_list_filters(family("listTaskInstances", LIST_URL + "?name=%C3%9F", LIST_BODY), CONTRACT) == NOT_APPLICABLE
    assert checks.ocp_list_filters(family("listTaskInstances", LIST_URL + "?type=SCHEDULED", LIST_BODY), CONTRACT) == NOT_APPLICABLE
    assert row["status"] == "FAILED"


def test_subtask_links_are_symmetric_inside_a_task():
    subtasks = copy.deepcopy(TASK_BODY["data"]["subtasks"])
    subtasks[0]["downstreams"] = []  # 10022 still names 10021 as its upstream
    failure = fails(checks.ocp_subtask_links, a_task(subtasks=subtasks))
    assert "10021 lists 10022 among its downstreams" in failure.expected
    subtasks = copy.deepcopy(TASK_BODY["data"]["subtasks"])
    subtasks[2]["downstreams"] = [99999]
    assert "not a subtask of this task" in fails(checks.ocp_subtask_links, a_task(subtasks=subtasks)).received
    assert checks.ocp_subtask_links(exchange(200), CONTRACT) == NOT_APPLICABLE  # one subtask: no graph to judge


def test_task_enums_and_times_are_checked_like_subtasks():
    assert fails(checks.ocp_enum_values, a_task(status="failed")).received == '/data/status = "failed"'
    fails(checks.ocp_enum_values, a_task(type="manual"))
    fails(checks.ocp_enum_values, a_task(operation="SKIP"))  # a SubtaskOperation, not a TaskOperation
    assert "createTime <= startTime" in fails(checks.ocp_time_order, a_task(createTime="2024-11-01T10:00:00.000+08:00")).expected
    rows = copy.deepcopy(LIST_BODY)
    rows["data"]["contents"][0]["finishTime"] = "2024-11-01T09:00:00.000+08:00"  # before its startTime
    fails(checks.ocp_time_order, family("listTaskInstances", LIST_URL, rows))


def row_changed(**changes) -> dict:
    return {**copy.deepcopy(LIST_BODY["data"]["contents"][0]), **changes}


def test_a_list_row_agrees_with_its_detail():
    row = row_changed()
    assert checks.ocp_list_row_matches_detail(a_task(), CONTRACT, row=row, row_again=row) is None
    failure = fails(checks.ocp_list_row_matches_detail, a_task(), row=row_changed(status="RUNNING"),
                    row_again=row_changed(status="RUNNING"))  # fmt: skip
    assert failure.expected.endswith('status "RUNNING"') and failure.received == 'status "FAILED" in the detail'
    reordered = row_changed(subtasks=row["subtasks"][::-1])
    assert "in the row's order" in fails(checks.ocp_list_row_matches_detail, a_task(), row=reordered, row_again=reordered).expected
    subtasks = copy.deepcopy(row["subtasks"])
    subtasks[1]["status"] = "READY"
    stale = row_changed(subtasks=subtasks)
    assert "subtasks/1 (id 10022) status" in fails(checks.ocp_list_row_matches_detail, a_task(), row=stale, row_again=stale).expected
    missing = family("getTaskInstance", TASK_URL, envelope(404, error={"code": 20000, "message": "m"}), status=404)
    fails(checks.ocp_list_row_matches_detail, missing, row=row, row_again=row)


def test_a_task_that_moves_between_the_two_list_fetches_is_not_a_finding():
    # the row said RUNNING, the detail (fetched next) FAILED, the row fetched again FAILED: it moved on
    before = row_changed(status="RUNNING", finishTime=None)
    del before["finishTime"]
    assert checks.ocp_list_row_matches_detail(a_task(), CONTRACT, row=before, row_again=row_changed()) is None
    # but what did not move must still agree
    renamed = {**before, "name": "Restart"}
    fails(checks.ocp_list_row_matches_detail, a_task(), row=renamed, row_again={**row_changed(), "name": "Restart"})


@pytest.mark.parametrize(
    "check, ex",
    [
        (checks.fixture_skip_not_failed, exchange(200, envelope(200))),
        (checks.fixture_cancel_not_running, exchange(404, envelope(404, error={"code": 20000, "message": "m"}))),
        (checks.fixture_subtask_log, exchange(200, envelope(200, data={"log": ["a", "b"]}))),
        (checks.fixture_subtask_log, exchange(404, envelope(404, error={"code": 20000, "message": "m"}))),
        (checks.fixture_unknown_task, exchange(404, envelope(404, error={"code": 0, "message": "m"}))),
        (checks.fixture_task_not_failed, exchange(200)),
        (checks.fixture_rollback_prohibited, exchange(400, envelope(400, error={"code": 20003, "message": "m"}))),
    ],
    ids=lambda value: value.__name__ if callable(value) else "",
)
def test_family_fixture_checks(check, ex):
    fails(check, ex)
    assert checks.fixture_subtask_log(exchange(200, envelope(200, data={"log": ""})), CONTRACT) is None
