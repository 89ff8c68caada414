"""Servers for the contract runner's tests. Nothing here imports mock_server.

`Conforming` is an OCP task server written from openapi.yaml alone, for its retrySubtask operation (the
tests check it against `retry_only_spec`, the project's spec cut down to that operation): HTTP Basic with
two users, the envelope, error codes, and a world of six subtasks (10001 FAILED, 10002 RUNNING). Each
broken server below is a subclass that overrides exactly one method: one deviation from the contract.
BROKEN maps each to the check that must catch it.
"""

from __future__ import annotations

import base64
import json
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
T0 = datetime(2024, 11, 1, 8, 0, 0, 123000, tzinfo=CST)


def _time(minutes: int) -> str:
    return (T0 + timedelta(minutes=minutes)).isoformat(timespec="milliseconds")


def _subtask(sid: int, status: str, started: bool, finished: bool, operation: str = "EXECUTE") -> dict:
    doc = {
        "id": sid, "seriesId": sid - 9999, "name": f"Step {sid}", "description": f"Step {sid}", "timeout": 1800,
        "status": status, "operation": operation, "runTime": 1, "createTime": _time(0), "nodeType": "JAVA_TASK",
        "parallelIdx": -1, "upstreams": [sid - 1] if sid > 10000 else [], "downstreams": [sid + 1],
        "prohibitRollback": False,
    }  # fmt: skip
    if started:
        doc.update(startTime=_time(1), executor="10.0.0.7")
    if finished:
        doc["finishTime"] = _time(2)
    return doc


class Conforming:
    """The request path, one overridable method per decision."""

    users = {"admin": ("admin", {"TASK_MANAGER", "TASK_VIEWER"}), "viewer": ("viewer", {"TASK_VIEWER"})}

    def __init__(self):
        self.lock = threading.Lock()
        self.subtasks = {
            10000: _subtask(10000, "SUCCESSFUL", True, True),
            10001: _subtask(10001, "FAILED", True, True),
            10002: _subtask(10002, "RUNNING", True, False),
            10003: _subtask(10003, "PENDING", False, False),
            10004: _subtask(10004, "READY", False, False, operation="RETRY"),
            10005: _subtask(10005, "CANCELING", True, False, operation="CANCEL"),
        }

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

    def may_retry(self, user: str) -> bool:
        return "TASK_MANAGER" in self.users[user][1]

    def unauthenticated(self) -> Response:
        return self.error(401, 0, "The current user has not logged on.", headers={"WWW-Authenticate": "Basic"})

    def forbidden(self) -> Response:
        return self.error(403, 30014, "You are not authorized to perform the corresponding operation.")

    # -- parameters ----------------------------------------------------------------------------------
    def parse_id(self, name: str, text: str) -> int | None:
        if re.fullmatch(r"[+-]?[0-9]+", text) and INT64[0] <= int(text) <= INT64[1]:
            return int(text)
        return None

    def bad_parameter(self, name: str, text: str) -> Response:
        sub_error = {"field": name, "message": "must be an int64", "object": "retrySubtask", "rejectedValue": text}
        return self.error(400, 0, f"Invalid request parameter: {name}.", subErrors=[sub_error])

    # -- lifecycle -----------------------------------------------------------------------------------
    def retryable(self, subtask: dict) -> bool:
        return subtask["status"] == "FAILED" and subtask.get("operation") != "ROLLBACK"

    def apply_retry(self, subtask: dict) -> None:
        subtask.update(status="READY", operation="RETRY")
        subtask.pop("finishTime", None)

    def not_found(self, sid) -> Response:
        return self.error(404, 20000, f"The {sid} task does not exist.")

    def wire(self, subtask: dict) -> dict:
        """The subtask as sent: sorted keys, Longs beyond 2^53 as strings (ours are small)."""
        return dict(sorted(subtask.items()))

    def retry(self, task: str, sub: str) -> Response:
        user = self.authenticate(request.headers.get("Authorization"))
        if user is None:
            return self.unauthenticated()
        for name, text in (("taskInstanceId", task), ("subtaskInstanceId", sub)):
            if self.parse_id(name, text) is None:
                return self.bad_parameter(name, text)
        if not self.may_retry(user):
            return self.forbidden()
        sid = self.parse_id("subtaskInstanceId", sub)
        with self.lock:
            subtask = self.subtasks.get(sid)
            if subtask is None:
                return self.not_found(sid)
            if not self.retryable(subtask):
                return self.error(400, 20003, f"This operation is not supported for the {sid} task in the "
                                              f"{subtask['status']} state.")  # fmt: skip
            self.apply_retry(subtask)
            return self.respond(200, {"data": self.wire(subtask)})

    # -- the app -------------------------------------------------------------------------------------
    def app(self) -> Flask:
        app = Flask(f"ocp-{type(self).__name__}")
        app.add_url_rule(
            "/api/v2/tasks/instances/<task>/subtasks/<sub>/retry", "retry", self.retry, methods=["POST"],
            provide_automatic_options=False,
        )  # fmt: skip

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
        return {**super().wire(subtask), "createTime": _time(5)}


class NoAuthRequired(Conforming):
    def authenticate(self, header):
        return super().authenticate(header) or "admin"


class ViewerMayRetry(Conforming):
    def may_retry(self, user):
        return True


class ForbiddenWithCode0(Conforming):
    def forbidden(self):
        return self.error(403, 0, "Forbidden.")


class RetryOfRunningAllowed(Conforming):
    def retryable(self, subtask):
        return subtask["status"] in ("FAILED", "RUNNING")


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
    def bad_parameter(self, name, text):
        return self.error(400, 0, f"Invalid request parameter: {name}.")


class UnsafeLongsRejected(Conforming):
    """Refuses ids beyond JavaScript's safe range, which the spec's int64 allows."""

    def parse_id(self, name, text):
        value = super().parse_id(name, text)
        return value if value is not None and abs(value) <= 2**53 - 1 else None


class BadIdAnswered422(Conforming):
    def bad_parameter(self, name, text):
        return self.error(422, 0, f"Invalid request parameter: {name}.", subErrors=[{"message": "bad"}])


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
    RetryOfRunningAllowed: "fixture_retry_non_failed",
    SecondRetryAllowed: "fixture_retry_again",
    RetryKeepsFailed: "fixture_retry_failed",
    NotFoundWithCode0: "fixture_unknown_subtask",
    CrashOnNonNumericId: "not_a_server_error",
    BadIdWithoutSubErrors: "ocp_business_rule_400",
    UnsafeLongsRejected: "ocp_business_rule_400",
    BadIdAnswered422: "spec_status_declared",
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
    thread = threading.Thread(target=server.serve_forever, daemon=True)
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
