"""The /__mock control API: inspect the world, reset it to its seed, force a subtask's state, script what a
subtask's runs do (its scenario), and read or move the mock's clock.

Answers use OCP's envelope too, so a client can treat them like any other call. The values a state may
take are read from the spec's enums; a forced state must keep the world's invariants (a subtask can only
leave PENDING once its upstreams succeeded), otherwise the call is refused and nothing changes.

The forced state (PUT /__mock/subtasks/{id}) is answered below Flask too, by dispatch.py, with the same two
functions the blueprint uses: admit (what every admin call goes through first) and forced_state.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import TYPE_CHECKING

import orjson
from flask import Blueprint, request

from .engine import MAX_DURATION_S, MAX_FAILURES, OUTCOMES, Scenario
from .clock import MAX_SPEED
from .envelope import CODE_GENERIC, OcpError, dump_data, not_found
from .spec import SubError
from .world import check_invariants

if TYPE_CHECKING:
    from .app import Mock

PREFIX = "/__mock"
TOKEN_HEADER = "X-Mock-Admin-Token"


def _bad(field: str, value, message: str) -> OcpError:
    return OcpError(400, CODE_GENERIC, f"Invalid value for {field}: {message}",
                    sub_errors=[SubError("mock", field, value, message)])


def _json_body(optional: bool = False) -> dict:
    return json_object(request.get_data(cache=False), optional)


def json_object(raw: bytes, optional: bool = False) -> dict:
    """The JSON object a body holds; every other body is a 400 (OPTIONAL: an empty body is {})."""
    if not raw.strip():
        if optional:
            return {}
        raise OcpError(400, CODE_GENERIC, "A JSON object body is required.")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise OcpError(400, CODE_GENERIC, f"The body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise OcpError(400, CODE_GENERIC, "The body must be a JSON object.")
    return body


def _subtask_id(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise _bad("subtaskId", raw, "must be an integer") from None
    if not -(2**63) <= value < 2**63:
        raise _bad("subtaskId", raw, "must be an int64")
    return value


MAX_ADVANCE_S = 10 * 365 * 24 * 3600
SCENARIO_FIELDS = ("outcome", "failures", "hang", "durationSeconds")


def _number(body: dict, field: str, low: float, high: float, integer: bool = False):
    value = body[field]
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or not low <= value <= high:
        raise _bad(field, value, f"must be {'an integer' if integer else 'a number'} from {low:g} to {high:g}")
    return value


def _scenario(body: dict) -> Scenario:
    """A Scenario from the admin API's body; every problem is a 400 naming the field."""
    unknown = sorted(set(body) - set(SCENARIO_FIELDS))
    if unknown:
        raise _bad(unknown[0], body[unknown[0]], f"unknown field; send any of {', '.join(SCENARIO_FIELDS)}")
    if body.get("outcome", "succeed") not in OUTCOMES:
        raise _bad("outcome", body["outcome"], f"must be one of {', '.join(OUTCOMES)}")
    if "failures" in body:
        _number(body, "failures", 0, MAX_FAILURES, integer=True)
    if not isinstance(body.get("hang", False), bool):
        raise _bad("hang", body["hang"], "must be true or false")
    if "durationSeconds" in body:
        seconds = _number(body, "durationSeconds", 0.001, MAX_DURATION_S)
        if seconds <= 0:
            raise _bad("durationSeconds", seconds, "must be more than 0")
    return Scenario.from_dict(body)


def admit(mock: "Mock", headers) -> None:
    """What every admin call goes through before its own work: the token check (with --admin-token), then the
    world catching up (what the admin API shows and changes is the world as it is now). HEADERS: the request's."""
    token = mock.config.admin_token
    if token:
        given = headers.get(TOKEN_HEADER, "")
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise OcpError(401, CODE_GENERIC, f"The admin API needs the {TOKEN_HEADER} header with the token "
                                              "given to ocp-mock serve --admin-token.")
    mock.runtime.tick()


def forced_state(mock: "Mock") -> Callable[[str, Callable[[], bytes]], tuple[int, bytes]]:
    """PUT /__mock/subtasks/{id} once admitted: (raw id, a reader of the raw body) -> (status, data in wire form);
    raises OcpError. The Flask view and the dispatcher (dispatch.py) both answer with it. The body is read only
    once the id is known to be an integer, as the view always did."""
    statuses = mock.spec.enum("SubtaskState")
    operations = mock.spec.enum("SubtaskOperation")
    runtime = mock.runtime

    def set_state(raw_id: str, read_body: Callable[[], bytes]) -> tuple[int, bytes]:
        subtask_id = _subtask_id(raw_id)
        body = json_object(read_body())
        unknown = sorted(set(body) - {"status", "operation"})
        if unknown:
            raise _bad(unknown[0], body[unknown[0]], "unknown field; send status and/or operation")
        status, operation = body.get("status"), body.get("operation")
        if status is None and operation is None:
            raise OcpError(400, CODE_GENERIC, "Send at least one of status, operation.")
        if status is not None and status not in statuses:
            raise _bad("status", status, f"must be one of {', '.join(statuses)}")
        if operation is not None and operation not in operations:
            raise _bad("operation", operation, f"must be one of {', '.join(operations)}")

        def keep_invariants(siblings: list[dict]) -> None:
            problems = check_invariants(siblings, changed={subtask_id})  # only this subtask's state was set
            if problems:
                raise OcpError(409, CODE_GENERIC, "The change would break the world's consistency: " + "; ".join(problems))

        return 200, mock.store.dumped(("s", subtask_id), runtime.force_state(subtask_id, status, operation,
                                                                             keep_invariants))

    return set_state


def make_blueprint(mock: "Mock") -> Blueprint:
    bp = Blueprint("mock_admin", __name__, url_prefix=PREFIX)
    statuses = mock.spec.enum("SubtaskState")
    runtime = mock.runtime
    set_state = forced_state(mock)

    @bp.before_request
    def before_call():
        admit(mock, request.headers)

    def ok(data) -> object:
        return mock.success(200, dump_data(data))

    @bp.get("/health")
    def health():
        return ok({"seed": mock.store.seed(), **mock.store.counts()})

    @bp.get("/world")
    def whole_world():
        """Every task and subtask as stored now (the world after every change so far)."""
        tasks, subtasks = mock.store.dump()
        return ok({"seed": mock.store.seed(), "tasks": tasks, "subtasks": subtasks})

    @bp.post("/reset")
    def reset():
        body = _json_body(optional=True)
        seed = body.get("seed", mock.config.seed)
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
            raise _bad("seed", seed, "must be a non-negative integer")
        mock.reset(seed)
        return ok({"seed": seed, **mock.store.counts()})

    @bp.get("/subtasks")
    def list_subtasks():
        status = request.args.get("status")
        if status is not None and status not in statuses:
            raise _bad("status", status, f"must be one of {', '.join(statuses)}")
        task_id = request.args.get("taskId")
        rows = mock.store.subtasks(status=status, task_id=_subtask_id(task_id) if task_id else None)
        return ok([
            {"id": r.id, "taskId": r.task_id, "status": r.status, "operation": r.operation,
             "name": r.load()["name"]}
            for r in rows
        ])

    @bp.get("/subtasks/<raw_id>")
    def get_subtask(raw_id: str):
        row = mock.store.subtask(_subtask_id(raw_id))
        if row is None:
            raise not_found(raw_id)
        return ok({"taskId": row.task_id, "subtask": row.load(), "engine": runtime.subtask_engine_state(row.id)})

    @bp.route("/subtasks/<raw_id>", methods=["PUT", "PATCH"])
    def set_subtask(raw_id: str):
        return mock.success(*set_state(raw_id, lambda: request.get_data(cache=False)))

    @bp.route("/subtasks/<raw_id>/scenario", methods=["PUT", "DELETE"])
    def set_scenario(raw_id: str):
        """PUT: what the subtask's next runs do; DELETE: back to the seed's choice. Either starts its count anew."""
        subtask_id = _subtask_id(raw_id)
        scenario = _scenario(_json_body()) if request.method == "PUT" else None
        runtime.set_scenario(subtask_id, scenario)
        return ok({"subtaskId": subtask_id, **runtime.subtask_engine_state(subtask_id)})

    def clock_state(**extra) -> object:
        clock = runtime.clock()
        now = clock.now_ms()
        data = {"now": runtime.format(now), "nowMs": now, "speed": clock.speed, **extra}
        due = mock.store.clock_and_next_due()[1]
        if due is not None:
            data["nextDue"] = runtime.format(due)
        return ok(data)

    @bp.get("/clock")
    def get_clock():
        return clock_state()

    @bp.put("/clock")
    def set_clock():
        body = _json_body()
        unknown = sorted(set(body) - {"speed"})
        if unknown or "speed" not in body:
            raise OcpError(400, CODE_GENERIC, "Send {\"speed\": S}: mock seconds per real second (0 stops the clock).")
        runtime.set_speed(float(_number(body, "speed", 0, MAX_SPEED)))
        return clock_state()

    @bp.post("/clock/advance")
    def advance_clock():
        body = _json_body()
        unknown = sorted(set(body) - {"seconds"})
        if unknown or "seconds" not in body:
            raise OcpError(400, CODE_GENERIC, "Send {\"seconds\": N}: how far to move the clock forward.")
        seconds = _number(body, "seconds", 0, MAX_ADVANCE_S)
        _, changed = runtime.advance(int(round(seconds * 1000)))
        return clock_state(tasksChanged=changed)

    from .scenarios import make_blueprint as scenarios_blueprint

    bp.register_blueprint(scenarios_blueprint(mock))  # /scenarios, /scenarios/reset, /faults (the token check applies)
    return bp
