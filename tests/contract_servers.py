"""Servers for the contract runner's tests. Nothing here imports mock_server.

`Conforming` is an OCP task server written from openapi.yaml alone, for its eight operations: HTTP Basic with
two users (TASK_VIEWER reads, TASK_MANAGER acts), the envelope, error codes, the list with its filters, paging and
sort, task details, and the actions with the spec's rules. Its world is seven tasks (below); nothing moves on its
own (it has no engine: a retried subtask stays READY), which the contract allows. Each broken server below is a
subclass that overrides exactly one method: one deviation from the contract. BROKEN maps each to the check that
must catch it.
"""

from __future__ import annotations

import base64
import json
import math
import os
import re
import threading
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

import yaml
from flask import Flask, Response, g, request
from werkzeug.exceptions import HTTPException
from werkzeug.serving import WSGIRequestHandler, make_server

SPEC = Path(__file__).resolve().parents[1] / "openapi.yaml"
RETRY_PATH = "/api/v2/tasks/instances/{taskInstanceId}/subtasks/{subtaskInstanceId}/retry"
CST = timezone(timedelta(hours=8))
INT64 = (-(2**63), 2**63 - 1)
INT32_MAX = 2**31 - 1
T0 = datetime(2024, 11, 1, 8, 0, 0, 123000, tzinfo=CST)
TASK_STATES = ("RUNNING", "FAILED", "SUCCESSFUL")
TASK_TYPES = ("MANUAL", "SCHEDULED", "SYS_SCHEDULED", "SYS_ONCE")
SORT = re.compile(r"(id|name|status|type|createTime|startTime|finishTime)(,([aA][sS][cC]|[dD][eE][sS][cC]))?")
ACTIVE = ("READY", "RUNNING", "CANCELING")
NOT_RUN = ("PENDING", "READY")
# The subtasks (id: status, operation, upstreams, prohibitRollback) of each task (id: name, type, operation).
WORLD = {
    (1000, "Add host", "MANUAL", "EXECUTE"): {
        10000: ("SUCCESSFUL", "EXECUTE", [], False), 10001: ("FAILED", "EXECUTE", [10000], False),
        10002: ("RUNNING", "EXECUTE", [10000], False), 10003: ("PENDING", "EXECUTE", [10001, 10002], False)},
    (1001, "Restart cluster", "SCHEDULED", "EXECUTE"): {
        10010: ("SUCCESSFUL", "EXECUTE", [], False), 10011: ("FAILED", "EXECUTE", [10010], False),
        10012: ("PENDING", "EXECUTE", [10011], False)},
    (1002, "Upgrade cluster", "SYS_SCHEDULED", "EXECUTE"): {
        10020: ("SUCCESSFUL", "EXECUTE", [], False), 10021: ("SUCCESSFUL", "RETRY", [10020], False)},
    (1003, "Delete tenant", "MANUAL", "EXECUTE"): {
        10030: ("SUCCESSFUL", "EXECUTE", [], True), 10031: ("FAILED", "EXECUTE", [10030], False)},
    (1004, "Sync host info", "SYS_ONCE", "EXECUTE"): {10040: ("SUCCESSFUL", "EXECUTE", [], False)},
    (1005, "Take backup", "MANUAL", "RETRY"): {
        10050: ("SUCCESSFUL", "EXECUTE", [], False), 10051: ("CANCELING", "CANCEL", [10050], False),
        10052: ("READY", "RETRY", [10050], False)},
    (1006, "Add host", "MANUAL", "EXECUTE"): {10060: ("SUCCESSFUL", "EXECUTE", [], False)},
}  # fmt: skip


def _time(minutes: float) -> str:
    return (T0 + timedelta(minutes=minutes)).isoformat(timespec="milliseconds")


def _subtask(sid: int, task_index: int, status: str, operation: str, upstreams: list, downstreams: list,
             prohibit: bool) -> dict:
    base = task_index * 60
    doc = {
        "id": sid, "seriesId": sid % 10 + 1, "name": f"Step {sid}", "description": f"Step {sid}", "timeout": 1800,
        "status": status, "operation": operation, "runTime": 1, "createTime": _time(base), "nodeType": "JAVA_TASK",
        "parallelIdx": -1, "upstreams": upstreams, "downstreams": downstreams, "prohibitRollback": prohibit,
    }  # fmt: skip
    if status not in ("PENDING", "READY") or operation == "RETRY":
        doc.update(startTime=_time(base + 1 + sid % 10), executor="10.0.0.7")
    if status in ("FAILED", "SUCCESSFUL"):
        doc["finishTime"] = _time(base + 2 + sid % 10)
    return doc


def _world() -> tuple[dict, dict]:
    tasks, subtasks = {}, {}
    for index, ((tid, name, kind, operation), subs) in enumerate(WORLD.items()):
        downstreams = {sid: [d for d, spec in subs.items() if sid in spec[2]] for sid in subs}
        for sid, (status, sub_operation, upstreams, prohibit) in subs.items():
            subtasks[sid] = _subtask(sid, index, status, sub_operation, upstreams, downstreams[sid], prohibit)
        tasks[tid] = {
            "id": tid, "name": name, "taskDefinitionId": 20 + index, "type": kind, "operation": operation,
            "creator": {"name": "system" if kind.startswith("SYS") else "admin"}, "executor": "10.0.0.7",
            "createTime": _time(index * 60), "startTime": _time(index * 60 + 0.5),
            "finishTime": _time(index * 60 + 30), "subtasks": sorted(subs),
        }  # fmt: skip
    return tasks, subtasks


class Conforming:
    """The request path, one overridable method per decision."""

    max_page_size = 2000
    users = {"admin": ("admin", {"TASK_MANAGER", "TASK_VIEWER"}), "viewer": ("viewer", {"TASK_VIEWER"})}

    def __init__(self):
        self.lock = threading.RLock()
        self.tasks, self.subtasks = _world()
        self.task_of = {sid: tid for tid, task in self.tasks.items() for sid in task["subtasks"]}

    # -- envelope ------------------------------------------------------------------------------------
    def trace_id(self) -> str:
        return os.urandom(8).hex()

    def timestamp(self) -> str:
        return datetime.now(CST).isoformat(timespec="milliseconds")

    def duration(self) -> int:
        return 1

    def server_id(self) -> str:
        return "c0ffee0001"

    def envelope(self, status: int, payload: dict) -> dict:
        body = {
            "duration": self.duration(), "server": self.server_id(), "status": status,
            "successful": 200 <= status < 300, "timestamp": self.timestamp(), "traceId": self.trace_id(), **payload,
        }  # fmt: skip
        return dict(sorted(body.items()))

    def content_type(self, status: int) -> str:
        return "application/json"

    def respond(self, status: int, payload: dict, headers: dict | None = None) -> Response:
        body = json.dumps(self.envelope(status, payload))
        return Response(body, status=status, content_type=self.content_type(status), headers=headers or {})

    def ok(self, data=None) -> Response:
        return self.respond(200, {} if data is None else {"data": data})

    def error(self, status: int, code: int, message: str, **extra) -> Response:
        headers = extra.pop("headers", None)
        return self.respond(status, {"error": {"code": code, "message": message, **extra}}, headers)

    # -- auth ----------------------------------------------------------------------------------------
    def authenticate(self, header: str | None) -> str | None:
        """The user name HEADER proves, or None."""
        scheme, _, token = (header or "").partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            name, _, password = base64.b64decode(token, validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        known = self.users.get(name)
        return name if known and known[0] == password else None

    def may(self, user: str, permission: str) -> bool:
        return permission in self.users[user][1]

    def unauthenticated(self) -> Response:
        return self.error(401, 0, "The current user has not logged on.", headers={"WWW-Authenticate": "Basic"})

    def forbidden(self) -> Response:
        return self.error(403, 30014, "You are not authorized to perform the corresponding operation.")

    # -- parameters ----------------------------------------------------------------------------------
    def parse_id(self, name: str, text: str) -> int | None:
        if re.fullmatch(r"[+-]?[0-9]+", text) and INT64[0] <= int(text) <= INT64[1]:
            return int(text)
        return None

    def bad_parameter(self, name: str, text: str, operation: str = "retrySubtask", message: str = "must be an int64"):
        return self.bad_parameters([{"field": name, "message": message, "object": operation, "rejectedValue": text}])

    def bad_parameters(self, sub_errors: list[dict]) -> Response:
        names = ", ".join(e["field"] for e in sub_errors)
        return self.error(400, 0, f"Invalid request parameter: {names}.", subErrors=sub_errors)

    def guard(self, operation: str, permission: str, ids: dict[str, str]):
        """Authenticates, parses the path ids, authorises: (user, parsed ids) or the refusal to send."""
        user = self.authenticate(request.headers.get("Authorization"))
        if user is None:
            return None, self.unauthenticated()
        parsed = {}
        for name, text in ids.items():
            parsed[name] = self.parse_id(name, text)
            if parsed[name] is None:
                return None, self.bad_parameter(name, text, operation)
        if not self.may(user, permission):
            return None, self.forbidden()
        return parsed, None

    # -- the world as sent ---------------------------------------------------------------------------
    def not_found(self, sid) -> Response:
        return self.error(404, 20000, f"The {sid} task does not exist.")

    def task_not_found(self, tid) -> Response:
        return self.error(404, 20000, f"The {tid} task does not exist.")

    def state_invalid(self, entity_id, state: str) -> Response:
        return self.error(400, 20003, f"This operation is not supported for the {entity_id} task in the {state} state.")

    def wire(self, subtask: dict) -> dict:
        """The subtask as sent: sorted keys, Longs beyond 2^53 as strings (ours are small)."""
        return dict(sorted(subtask.items()))

    def task_status(self, task: dict) -> str:
        statuses = {self.subtasks[sid]["status"] for sid in task["subtasks"]}
        if task["operation"] == "ROLLBACK" and statuses == {"PENDING"}:
            return "SUCCESSFUL"
        if task["operation"] != "ROLLBACK" and statuses == {"SUCCESSFUL"}:
            return "SUCCESSFUL"
        if "FAILED" in statuses and not statuses & set(ACTIVE):
            return "FAILED"
        return "RUNNING"

    def prohibits_rollback(self, task: dict) -> bool:
        return any(self.subtasks[s]["prohibitRollback"] and self.subtasks[s]["status"] not in NOT_RUN for s in task["subtasks"])

    def task_wire(self, task: dict) -> dict:
        status = self.task_status(task)
        doc = {k: v for k, v in task.items() if k not in ("subtasks", "finishTime")}
        doc.update(status=status, prohibitRollback=self.prohibits_rollback(task),
                   subtasks=[self.wire(self.subtasks[sid]) for sid in task["subtasks"]])  # fmt: skip
        if status != "RUNNING":
            doc["finishTime"] = task["finishTime"]
        return dict(sorted(doc.items()))

    def row(self, task: dict) -> dict:
        """A list row (BasicTaskInstance): the detail's fields, subtasks in their short form."""
        detail = self.task_wire(task)
        row = {k: detail[k] for k in ("creator", "finishTime", "id", "name", "startTime", "status") if k in detail}
        row["subtasks"] = [{k: s[k] for k in ("description", "id", "name", "operation", "status") if k in s}
                           for s in detail["subtasks"]]  # fmt: skip
        return row

    # -- lifecycle -----------------------------------------------------------------------------------
    def retryable(self, subtask: dict) -> bool:
        return subtask["status"] == "FAILED" and subtask.get("operation") != "ROLLBACK"

    def apply_retry(self, subtask: dict) -> None:
        subtask.update(status="READY", operation="RETRY")
        subtask.pop("finishTime", None)

    def skippable(self, subtask: dict) -> bool:
        return subtask["status"] == "FAILED"

    def cancellable(self, subtask: dict) -> bool:
        return subtask["status"] == "RUNNING"

    def task_retryable(self, task: dict) -> bool:
        return self.task_status(task) == "FAILED" and task["operation"] != "ROLLBACK"

    def rollback_refusal(self, task: dict) -> Response | None:
        if self.task_status(task) != "FAILED":
            return self.state_invalid(task["id"], self.task_status(task))
        if self.prohibits_rollback(task):
            return self.error(400, 20004, f"Task {task['id']} can not rollback.")
        return None

    def log(self, subtask: dict) -> str:
        if "startTime" not in subtask:
            return ""
        start = subtask["startTime"][:23].replace("T", " ")
        lines = [f"{start} INFO [task-executor-1] c.o.o.t.e.runner.SubtaskRunner: Start subtask {subtask['id']}"]
        if subtask["status"] in ("FAILED", "SUCCESSFUL"):
            lines.append(f"{start} INFO [task-executor-1] c.o.o.t.e.runner.SubtaskRunner: Set state for subtask: "
                         f"{subtask['id']}, operation:{subtask['operation']}, state: {subtask['status']}")  # fmt: skip
        return "\n".join(lines)

    # -- subtask operations --------------------------------------------------------------------------
    def subtask_action(self, operation: str, permission: str, task: str, sub: str, act) -> Response:
        parsed, refusal = self.guard(operation, permission, {"taskInstanceId": task, "subtaskInstanceId": sub})
        if refusal is not None:
            return refusal
        sid = parsed["subtaskInstanceId"]  # like OCP, the task id in the path is not checked
        with self.lock:
            subtask = self.subtasks.get(sid)
            if subtask is None:
                return self.not_found(sid)
            return act(subtask)

    def retry(self, task: str, sub: str) -> Response:
        def act(subtask):
            if not self.retryable(subtask):
                return self.state_invalid(subtask["id"], subtask["status"])
            self.apply_retry(subtask)
            return self.ok(self.wire(subtask))

        return self.subtask_action("retrySubtask", "TASK_MANAGER", task, sub, act)

    def skip(self, task: str, sub: str) -> Response:
        def act(subtask):
            if not self.skippable(subtask):
                return self.state_invalid(subtask["id"], subtask["status"])
            rolling_back = self.tasks[self.task_of[subtask["id"]]]["operation"] == "ROLLBACK"
            subtask.update(status="READY", operation="ROLLBACK_SKIP" if rolling_back else "SKIP")
            subtask.pop("finishTime", None)
            return self.ok()

        return self.subtask_action("skipSubtask", "TASK_MANAGER", task, sub, act)

    def cancel(self, task: str, sub: str) -> Response:
        def act(subtask):
            if not self.cancellable(subtask):
                return self.state_invalid(subtask["id"], subtask["status"])
            subtask["status"] = "CANCELING"
            return self.ok()

        return self.subtask_action("cancelSubtask", "TASK_MANAGER", task, sub, act)

    def subtask_log(self, task: str, sub: str) -> Response:
        return self.subtask_action("getSubtaskLog", "TASK_VIEWER", task, sub, lambda s: self.ok({"log": self.log(s)}))

    # -- task operations -----------------------------------------------------------------------------
    def task_action(self, operation: str, permission: str, task: str, act) -> Response:
        parsed, refusal = self.guard(operation, permission, {"taskInstanceId": task})
        if refusal is not None:
            return refusal
        tid = parsed["taskInstanceId"]
        with self.lock:
            found = self.tasks.get(tid)
            if found is None:
                return self.task_not_found(tid)
            return act(found)

    def get_task(self, task: str) -> Response:
        return self.task_action("getTaskInstance", "TASK_VIEWER", task, lambda t: self.ok(self.task_wire(t)))

    def retry_task(self, task: str) -> Response:
        def act(found):
            if not self.task_retryable(found):
                state = "ROLLBACK" if found["operation"] == "ROLLBACK" else self.task_status(found)
                return self.state_invalid(found["id"], state)
            found["operation"] = "RETRY"
            for sid in found["subtasks"]:
                if self.subtasks[sid]["status"] == "FAILED":
                    self.apply_retry(self.subtasks[sid])
            return self.ok(self.task_wire(found))

        return self.task_action("retryTask", "TASK_MANAGER", task, act)

    def rollback_task(self, task: str) -> Response:
        def act(found):
            refusal = self.rollback_refusal(found)
            if refusal is not None:
                return refusal
            found["operation"] = "ROLLBACK"
            subs = [self.subtasks[sid] for sid in found["subtasks"]]
            ran = [s for s in subs if s["status"] not in NOT_RUN]
            for s in ran:
                s["operation"] = "ROLLBACK"
            for s in ran:
                if all(self.subtasks[d]["status"] == "PENDING" for d in s["downstreams"]):
                    s["status"] = "READY"
                    s.pop("finishTime", None)
            return self.ok(self.task_wire(found))

        return self.task_action("rollbackTask", "TASK_MANAGER", task, act)

    def list_rows(self, tasks: list[dict], page: int, size: int) -> list[dict]:
        return [self.row(t) for t in tasks[(page - 1) * size: page * size]]

    def page(self, total: int, page: int, size: int) -> dict:
        return {"number": page, "size": size, "totalElements": total, "totalPages": math.ceil(total / size)}

    def matches(self, task: dict, name: str | None, status: str | None, kind: str | None) -> bool:
        return ((name is None or name.casefold() in task["name"].casefold())
                and (status is None or self.task_status(task) == status) and (kind is None or task["type"] == kind))  # fmt: skip

    def list_tasks(self) -> Response:
        user = self.authenticate(request.headers.get("Authorization"))
        if user is None:
            return self.unauthenticated()
        args, errors = request.args, []

        def bad(name, message):
            errors.append({"field": name, "message": message, "object": "listTaskInstances", "rejectedValue": args[name]})

        def integer(name, default, high):
            if name not in args:
                return default
            text = args[name]
            if not re.fullmatch(r"[+-]?[0-9]+", text) or not 1 <= int(text) <= high:
                bad(name, f"must be an integer between 1 and {high}")
                return default
            return int(text)

        page, size = integer("page", 1, INT32_MAX), integer("size", 10, self.max_page_size)
        for name, values in (("status", TASK_STATES), ("type", TASK_TYPES)):
            if name in args and args[name] not in values:
                bad(name, f"must be one of {', '.join(values)}")
        sort = args.get("sort", "id,desc")
        shape = SORT.fullmatch(sort)
        if shape is None:
            bad("sort", "must be a task property, optionally followed by ,asc or ,desc")
        if errors:
            return self.bad_parameters(errors)
        if not self.may(user, "TASK_VIEWER"):
            return self.forbidden()
        key, descending = shape.group(1), (shape.group(3) or "asc").lower() == "desc"
        with self.lock:
            details = {tid: self.task_wire(t) for tid, t in self.tasks.items()}
            chosen = [t for t in self.tasks.values() if self.matches(t, args.get("name"), args.get("status"), args.get("type"))]
            chosen.sort(key=lambda t: t["id"])
            chosen.sort(key=lambda t: (1, details[t["id"]][key]) if key in details[t["id"]] else (0, ""), reverse=descending)
            return self.ok({"contents": self.list_rows(chosen, page, size), "page": self.page(len(chosen), page, size)})

    # -- the app -------------------------------------------------------------------------------------
    def app(self) -> Flask:
        app = Flask(f"ocp-{type(self).__name__}")
        base = "/api/v2/tasks/instances"
        for rule, view, method in (
            (base, self.list_tasks, "GET"),
            (f"{base}/<task>", self.get_task, "GET"),
            (f"{base}/<task>/retry", self.retry_task, "POST"),
            (f"{base}/<task>/rollback", self.rollback_task, "POST"),
            (f"{base}/<task>/subtasks/<sub>/retry", self.retry, "POST"),
            (f"{base}/<task>/subtasks/<sub>/skip", self.skip, "POST"),
            (f"{base}/<task>/subtasks/<sub>/cancel", self.cancel, "POST"),
            (f"{base}/<task>/subtasks/<sub>/log", self.subtask_log, "GET"),
        ):
            app.add_url_rule(rule, view.__name__, view, methods=[method], provide_automatic_options=False)

        @app.errorhandler(HTTPException)
        def http_error(exc: HTTPException):
            headers = {"Allow": ", ".join(exc.valid_methods)} if getattr(exc, "valid_methods", None) else None
            return self.error(exc.code or 500, 0, exc.description or exc.name, headers=headers)

        @app.errorhandler(Exception)
        def crash(exc: Exception):
            return self.error(500, 0, "An unexpected error occurred on the server.")

        return app


# -- broken servers: one deviation each --------------------------------------------------------------


class LowerCaseStatus(Conforming):
    def wire(self, subtask):
        return {**super().wire(subtask), "status": subtask["status"].lower()}


class UnknownOperationValue(Conforming):
    def apply_retry(self, subtask):
        super().apply_retry(subtask)
        subtask["operation"] = "RETRYING"


class IdAsString(Conforming):
    def wire(self, subtask):
        return {**super().wire(subtask), "id": str(subtask["id"])}


class DocTypoParalleIdx(Conforming):
    def wire(self, subtask):
        doc = super().wire(subtask)
        doc["paralleIdx"] = doc.pop("parallelIdx")
        return dict(sorted(doc.items()))


class MissingServerField(Conforming):
    def envelope(self, status, payload):
        body = super().envelope(status, payload)
        del body["server"]
        return body


class EnvelopeStatusAlways200(Conforming):
    def envelope(self, status, payload):
        return {**super().envelope(status, payload), "status": 200}


class SuccessfulOnErrors(Conforming):
    def envelope(self, status, payload):
        return {**super().envelope(status, payload), "successful": True}


class ErrorCodeAsString(Conforming):
    def error(self, status, code, message, **extra):
        return super().error(status, str(code), message, **extra)


class TextPlainErrors(Conforming):
    def content_type(self, status):
        return "text/plain" if status >= 400 else "application/json"


class TimestampWithoutOffset(Conforming):
    def timestamp(self):
        return datetime.now().isoformat(timespec="milliseconds")


class TraceIdUpperCase(Conforming):
    def trace_id(self):
        return os.urandom(8).hex().upper()


class NegativeDuration(Conforming):
    def duration(self):
        return -1


class EmptyServerId(Conforming):
    def server_id(self):
        return ""


class CreateTimeAfterStartTime(Conforming):
    def wire(self, subtask):
        return {**super().wire(subtask), "createTime": _time(10_000)}


class NoAuthRequired(Conforming):
    def authenticate(self, header):
        return super().authenticate(header) or "admin"


class ViewerMayRetry(Conforming):
    def may(self, user, permission):
        return True


class ForbiddenWithCode0(Conforming):
    def forbidden(self):
        return self.error(403, 0, "Forbidden.")


class RetryOfNonFailedAllowed(Conforming):
    """Retries any subtask but a READY one (so a second retry is still refused)."""

    def retryable(self, subtask):
        return subtask["status"] != "READY"


class SecondRetryAllowed(Conforming):
    def retryable(self, subtask):
        return subtask["status"] in ("FAILED", "READY")


class RetryKeepsFailed(Conforming):
    def apply_retry(self, subtask):
        subtask["operation"] = "RETRY"


class NotFoundWithCode0(Conforming):
    def not_found(self, sid):
        return self.error(404, 0, f"The {sid} task does not exist.")


class CrashOnNonNumericId(Conforming):
    def parse_id(self, name, text):
        return int(text)  # ValueError on "abc": the app answers 500


class BadIdWithoutSubErrors(Conforming):
    def bad_parameter(self, name, text, *args):
        return self.error(400, 0, f"Invalid request parameter: {name}.")


class UnsafeLongsRejected(Conforming):
    """Refuses ids beyond JavaScript's safe range, which the spec's int64 allows."""

    def parse_id(self, name, text):
        value = super().parse_id(name, text)
        return value if value is not None and abs(value) <= 2**53 - 1 else None


class BadIdAnswered422(Conforming):
    def bad_parameter(self, name, text, *args):
        return self.error(422, 0, f"Invalid request parameter: {name}.", subErrors=[{"message": "bad"}])


# -- broken in the task family ------------------------------------------------------------------------


class TotalPagesRoundedDown(Conforming):
    def page(self, total, page, size):
        return {**super().page(total, page, size), "totalPages": total // size}


class PageNumberFromZero(Conforming):
    def page(self, total, page, size):
        return {**super().page(total, page, size), "number": page - 1}


class PastTheEndRepeatsLastPage(Conforming):
    def list_rows(self, tasks, page, size):
        last = max(1, math.ceil(len(tasks) / size))
        return super().list_rows(tasks, min(page, last), size)


class ShortPages(Conforming):
    """Drops the last row of every full page."""

    def list_rows(self, tasks, page, size):
        rows = super().list_rows(tasks, page, size)
        return rows[:-1] if len(rows) == size else rows


class ListRowSubtasksReversed(Conforming):
    def row(self, task):
        row = super().row(task)
        return {**row, "subtasks": row["subtasks"][::-1]}


class ListRowStaleName(Conforming):
    def row(self, task):
        return {**super().row(task), "name": task["name"] + " (old)"}


class StatusFilterIgnored(Conforming):
    def matches(self, task, name, status, kind):
        return super().matches(task, name, None, kind)


class AsymmetricSubtaskLinks(Conforming):
    """Each subtask lists its upstreams, but no subtask lists its downstreams."""

    def wire(self, subtask):
        return {**super().wire(subtask), "downstreams": []}


class LowerCaseTaskStatus(Conforming):
    """Sends the task's status in lower case (in the detail and the list rows; the filter still works)."""

    def task_wire(self, task):
        doc = super().task_wire(task)
        return {**doc, "status": doc["status"].lower()}


class TaskCreatedAfterItStarted(Conforming):
    def task_wire(self, task):
        return {**super().task_wire(task), "createTime": _time(10_000)}


class SkipOfNonFailedAllowed(Conforming):
    def skippable(self, subtask):
        return subtask["status"] != "RUNNING"


class CancelOfNonRunningAllowed(Conforming):
    def cancellable(self, subtask):
        return subtask["status"] != "FAILED"


class RollbackIgnoresProhibit(Conforming):
    """Says prohibitRollback but rolls back anyway."""

    def rollback_refusal(self, task):
        if self.task_status(task) != "FAILED":
            return self.state_invalid(task["id"], self.task_status(task))
        return None


class RetryOfSuccessfulTaskAllowed(Conforming):
    def task_retryable(self, task):
        return self.task_status(task) in ("FAILED", "SUCCESSFUL")


class UnknownTaskWithCode0(Conforming):
    def task_not_found(self, tid):
        return self.error(404, 0, f"The {tid} task does not exist.")


class LogAsLines(Conforming):
    def log(self, subtask):
        return super().log(subtask).splitlines()


class UnboundedPageSize(Conforming):
    max_page_size = INT32_MAX


class CrashOnNonNumericPage(Conforming):
    def list_tasks(self):
        if "page" in request.args:
            int(request.args["page"])  # ValueError on "abc": the app answers 500
        return super().list_tasks()


# broken server -> the check that must catch it
BROKEN = {
    LowerCaseStatus: "ocp_enum_values",
    UnknownOperationValue: "ocp_enum_values",
    IdAsString: "spec_body_schema",
    DocTypoParalleIdx: "spec_body_schema",
    MissingServerField: "ocp_envelope_fields",
    EnvelopeStatusAlways200: "ocp_envelope_status",
    SuccessfulOnErrors: "ocp_envelope_successful",
    ErrorCodeAsString: "ocp_envelope_payload",
    TextPlainErrors: "ocp_json_content_type",
    TimestampWithoutOffset: "ocp_timestamp_format",
    TraceIdUpperCase: "ocp_trace_id",
    NegativeDuration: "ocp_duration",
    EmptyServerId: "ocp_server_id",
    CreateTimeAfterStartTime: "ocp_time_order",
    NoAuthRequired: "fixture_no_credentials",
    ViewerMayRetry: "fixture_viewer_forbidden",
    ForbiddenWithCode0: "fixture_viewer_forbidden",
    RetryOfNonFailedAllowed: "fixture_retry_non_failed",
    SecondRetryAllowed: "fixture_retry_again",
    RetryKeepsFailed: "fixture_retry_failed",
    NotFoundWithCode0: "fixture_unknown_subtask",
    CrashOnNonNumericId: "not_a_server_error",
    BadIdWithoutSubErrors: "ocp_business_rule_400",
    UnsafeLongsRejected: "ocp_business_rule_400",
    BadIdAnswered422: "spec_status_declared",
    # the task family
    TotalPagesRoundedDown: "ocp_paging",
    PageNumberFromZero: "ocp_paging",
    PastTheEndRepeatsLastPage: "ocp_paging",
    ShortPages: "ocp_paging",
    ListRowSubtasksReversed: "ocp_list_row_matches_detail",
    ListRowStaleName: "ocp_list_row_matches_detail",
    StatusFilterIgnored: "ocp_list_filters",
    AsymmetricSubtaskLinks: "ocp_subtask_links",
    LowerCaseTaskStatus: "ocp_enum_values",
    TaskCreatedAfterItStarted: "ocp_time_order",
    SkipOfNonFailedAllowed: "fixture_skip_not_failed",
    CancelOfNonRunningAllowed: "fixture_cancel_not_running",
    RollbackIgnoresProhibit: "fixture_rollback_prohibited",
    RetryOfSuccessfulTaskAllowed: "fixture_task_not_failed",
    UnknownTaskWithCode0: "fixture_unknown_task",
    LogAsLines: "fixture_subtask_log",
    UnboundedPageSize: "negative_data_rejection",
    CrashOnNonNumericPage: "not_a_server_error",
}
# The broken servers only fuzzing reveals (odd input), with the operation to fuzz; the others are caught by the
# runner's own phases, so their tests skip fuzzing (it would only cost time).
FUZZ = {
    CrashOnNonNumericId: "retrySubtask",
    BadIdWithoutSubErrors: "retrySubtask",
    BadIdAnswered422: "retrySubtask",
    UnboundedPageSize: "listTaskInstances",
    CrashOnNonNumericPage: "listTaskInstances",
}


class _QuietHandler(WSGIRequestHandler):
    def log(self, *args) -> None:  # no access log in test output
        pass


def retry_only_spec(folder: Path) -> str:
    """The project's spec with retrySubtask as its only operation, written to FOLDER; returns its path."""
    raw = yaml.safe_load(SPEC.read_text(encoding="utf-8"))
    raw["paths"] = {RETRY_PATH: raw["paths"][RETRY_PATH]}
    raw["paths"][RETRY_PATH]["post"]["responses"]["200"].pop("links", None)  # they name dropped operations
    path = Path(folder) / "retry-only.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return str(path)


@contextmanager
def serving(app):
    """Serves the WSGI APP on a free loopback port in a thread; yields its base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=5)


class SessionCookies(Conforming):
    """Conforming too: like Spring, it hands out a session cookie on login and accepts it instead of
    credentials later. A request with neither credentials nor the cookie still gets 401."""

    def __init__(self):
        super().__init__()
        self.sessions: dict[str, str] = {}

    def authenticate(self, header):
        user = super().authenticate(header)
        if user is None:
            return self.sessions.get(request.cookies.get("SESSION", ""))
        g.new_session = os.urandom(8).hex()
        self.sessions[g.new_session] = user
        return user

    def respond(self, status, payload, headers=None):
        response = super().respond(status, payload, headers)
        if g.get("new_session"):
            response.set_cookie("SESSION", g.pop("new_session"))
        return response
