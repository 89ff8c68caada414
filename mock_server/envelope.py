"""OCP's response envelope and error codes: every body the mock sends is made here.

Properties are written in alphabetical order, as OCP's Jackson configuration does, and absent values are
omitted rather than written as null.
"""

from __future__ import annotations

import random
import time
from datetime import datetime, timedelta, timezone

import orjson

from .clock import format_ms

# OCP error codes (ErrorCodes in OCP's task framework and its REST exception handler).
CODE_GENERIC = 0
TASK_NOT_EXISTS = 20000
TASK_STATE_INVALID = 20003
TASK_PROHIBIT_ROLLBACK = 20004
NO_PERMISSION = 30014

MSG_UNAUTHENTICATED = (
    "The current user has not logged on or a logon error has occurred. Please log on and try again."
)
MSG_FORBIDDEN = "You are not authorized to perform the corresponding operation. Contact the administrator."
MAX_SAFE_LONG = 2**53 - 1


class OcpError(Exception):
    """Any failure the mock answers with OCP's error envelope."""

    def __init__(self, status: int, code: int, message: str, *, sub_errors=None, headers=None, extra=None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.sub_errors = sub_errors or []
        self.headers = headers or {}
        self.extra = extra or {}

    def error_object(self, stack_trace: list[str] | None = None) -> dict:
        error: dict = {"code": self.code, "message": self.message, **self.extra}
        if stack_trace:
            error["stackTrace"] = stack_trace
        if self.sub_errors:
            error["subErrors"] = [e.as_dict() for e in self.sub_errors]
        return dict(sorted(error.items()))


def not_found(entity_id) -> OcpError:
    return OcpError(404, TASK_NOT_EXISTS, f"The {entity_id} task does not exist.")


def state_invalid(entity_id, state: str) -> OcpError:
    return OcpError(
        400, TASK_STATE_INVALID, f"This operation is not supported for the {entity_id} task in the {state} state."
    )


def prohibit_rollback(task_id) -> OcpError:
    return OcpError(400, TASK_PROHIBIT_ROLLBACK, f"Task {task_id} can not rollback.")


def unauthenticated(reason: str | None = None) -> OcpError:
    extra = {"debugMessage": reason} if reason else None
    return OcpError(401, CODE_GENERIC, MSG_UNAUTHENTICATED, headers={"WWW-Authenticate": 'Basic realm="ocp"'}, extra=extra)


def forbidden() -> OcpError:
    return OcpError(403, NO_PERMISSION, MSG_FORBIDDEN)


def invalid_parameters(sub_errors) -> OcpError:
    names = ", ".join(e.field for e in sub_errors)
    return OcpError(400, CODE_GENERIC, f"Invalid request parameter: {names}.", sub_errors=sub_errors)


def _long_safe(value):
    """Longs beyond JavaScript's safe range are written as strings, as OCP's server does."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return str(value) if abs(value) > MAX_SAFE_LONG else value
    if isinstance(value, list):
        return [_long_safe(v) for v in value]
    if isinstance(value, dict):
        return {k: _long_safe(v) for k, v in value.items()}
    return value


def dump_data(obj) -> bytes:
    """Serialises a `data` object once, in wire form (sorted keys, big Longs as strings).
    orjson refuses integers beyond 53 bits under OPT_STRICT_INTEGER; only then is the object walked."""
    try:
        return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS | orjson.OPT_STRICT_INTEGER)
    except orjson.JSONEncodeError:
        return orjson.dumps(_long_safe(obj), option=orjson.OPT_SORT_KEYS)


def new_trace_id() -> str:
    """16 hex digits, as OCP's traceId. Not a secret: the random module's generator (reseeded in every forked
    worker) is several times cheaper than os.urandom, which was a tenth of a served request's time."""
    return f"{random.getrandbits(64):016x}"


def parse_offset(text: str) -> timezone:
    sign = -1 if text.startswith("-") else 1
    hours, minutes = text.lstrip("+-").split(":")
    return timezone(sign * timedelta(hours=int(hours), minutes=int(minutes)))


class Envelope:
    """Builds envelope bodies. `data` arrives already serialised, so a request never re-serialises it."""

    def __init__(self, server_id: str, utc_offset: str):
        self.tz = parse_offset(utc_offset)
        self._server = orjson.dumps(server_id)

    def now(self) -> datetime:
        return datetime.now(self.tz)

    def timestamp(self) -> bytes:
        """Now, to the millisecond, in the server's offset (clock.format_ms: at thousands of answers a second most
        fall into a second already formatted)."""
        return format_ms(time.time_ns() // 1_000_000, self.tz).encode()

    def success(self, data: bytes | None, status: int, trace_id: str, duration_ms: int) -> bytes:
        """DATA None: OCP's NoDataResponse, the envelope alone."""
        return b"".join(
            (
                b'{"data":' if data is not None else b"", data or b"",
                b',"duration":' if data is not None else b'{"duration":', str(duration_ms).encode(),
                b',"server":', self._server,
                b',"status":', str(status).encode(),
                b',"successful":true,"timestamp":"', self.timestamp(),
                b'","traceId":"', trace_id.encode(), b'"}',
            )
        )

    def error(self, error: dict, status: int, trace_id: str, duration_ms: int) -> bytes:
        return b"".join(
            (
                b'{"duration":', str(duration_ms).encode(),
                b',"error":', dump_data(error),  # big ints (a rejected value) become strings
                b',"server":', self._server,
                b',"status":', str(status).encode(),
                b',"successful":false,"timestamp":"', self.timestamp(),
                b'","traceId":"', trace_id.encode(), b'"}',
            )
        )
