"""The API's operations, and the admin API's forced state, answered below Flask: the mock's hot path.

A request that names one of the spec's operations flows route -> authenticate -> parse parameters -> authorise ->
handler -> envelope (-> strict-mode check), the same steps as the Flask view (Mock.call, Mock.error_body,
Mock.answer_problem in app.py), without Flask's request and response objects, context locals, hooks and URL map,
which cost about 85 µs of the 100 µs a refusal took through Flask (bench/RESULTS.md).

One admin call is answered here too: `PUT /__mock/subtasks/{id}` (the forced state; bench's retry-200 workload
re-arms a subtask with it), when the admin API is on. It takes the blueprint's steps, from the same functions in
admin.py: admit (the admin token, then the world's catch-up), forced_state (id, body, checks, the change), then the
envelope, with the admin API's strict-mode check (Envelope). Its body is read as Flask's request.get_data() reads it
(read_body): through Werkzeug's own input stream, or, on a server that ends the stream itself
(`wsgi.input_terminated`, as granian does), up to its Content-Length, and only once the id is known to be an integer.

Routing is one compiled regex per operation, built from the spec's paths at start-up; a parameter matches one
path segment (`[^/]+`), as Flask's default converter does. Status lines are Werkzeug's ("404 NOT FOUND").

The dispatcher answers only what it answers exactly as the Flask path would, and hands every other request on to
Flask (`takes`, `takes_admin`):
- a path or method of neither (the rest of the admin API, the docs, Flask's 404/405 and HEAD answers);
- an operation's request with a body; an admin PUT whose Content-Length is over the body limit, or missing or not
  plain digits where the server ends the stream (Flask then reads to its end); either over the header-size limit
  (Flask answers the 413/431);
- a Transfer-Encoding header (chunked bodies are Werkzeug's to read);
- for an operation: a `Prefer` header, or a fault set that has rules for it (faults.py works on Flask's request;
  neither applies to the admin API); a fault set that cannot be read (Flask's 500);
- an Authorization header that is not HTTP Basic (the signature covers the body and the query, signature.py);
- a path, or an operation's query, that is not ASCII (Werkzeug's decoding rules apply to it).
tests/test_dispatch.py sends the same requests through both paths and compares the answers.
"""

from __future__ import annotations

import logging
import re
import time
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl

import werkzeug.urls  # noqa: F401  registers the "werkzeug.url_quote" codec error handler Flask's query parsing uses
from werkzeug.datastructures import EnvironHeaders, MultiDict  # what Flask's request.args and .headers are
from werkzeug.exceptions import HTTPException
from werkzeug.http import HTTP_STATUS_CODES
from werkzeug.wsgi import LimitedStream, get_content_length, get_input_stream

from .app import JSON, header_bytes, http_error, log_access
from .admin import PREFIX, admit, forced_state
from .envelope import CODE_GENERIC, OcpError, new_trace_id

if TYPE_CHECKING:
    from .app import Mock
    from .faults import FaultBoard
    from .spec import Operation

log = logging.getLogger("ocp_mock")
_PARAM = re.compile(r"\\\{([^}/]+)\\\}")  # a {name} in re.escape()d text
# The status lines Werkzeug's Response writes (its reason phrases, in upper case), so both paths send the same bytes.
_STATUS_LINES = {code: f"{code} {phrase.upper()}" for code, phrase in HTTP_STATUS_CODES.items()}
_EMPTY: dict = {}


def _route_regex(path: str) -> re.Pattern:
    return re.compile(_PARAM.sub(lambda m: f"(?P<{m.group(1)}>[^/]+)", re.escape(path)) + r"\Z")


def read_body(environ: dict, max_content_length: int) -> bytes:
    """The request's body as Flask's request.get_data() reads it, never past Content-Length (takes() checked it)."""
    if "wsgi.input_terminated" not in environ:
        return get_input_stream(environ, max_content_length=max_content_length).read()  # what Flask reads from
    # The server ends the stream where the body ends (granian): Werkzeug reads it to its end, as a stream whose
    # length is only bounded (a short one is no error). So is it read here, up to its Content-Length.
    length = int(environ["CONTENT_LENGTH"])
    if not length:
        return b""
    stream = environ["wsgi.input"]
    data = stream.read(length)
    if len(data) < length:  # a server may hand the body over in parts: read on to its end
        data += LimitedStream(stream, length - len(data), is_max=True).read()
    return data


def _overlap(a: str, b: str) -> bool:
    """Whether one request path could match both templates A and B (then Flask's URL map decides between them)."""
    sa, sb = a.strip("/").split("/"), b.strip("/").split("/")
    return len(sa) == len(sb) and all(x == y or x.startswith("{") or y.startswith("{") for x, y in zip(sa, sb))


class Dispatcher:
    """WSGI middleware in front of Flask that answers the spec's operations itself (see the module doc)."""

    def __init__(self, wsgi_app, mock: "Mock", board: "FaultBoard | None" = None):
        self.wsgi_app = wsgi_app
        self.mock = mock
        self.board = board
        ops = list(mock.spec.operations.values())
        ambiguous = {o.operation_id for o in ops for p in ops
                     if p is not o and p.method == o.method and _overlap(p.path, o.path)}
        self.routes: dict[str, tuple[tuple[re.Pattern, "Operation"], ...]] = {}
        for op in ops:
            if op.operation_id not in ambiguous:  # such paths stay with Flask's URL map, which ranks rules
                self.routes[op.method] = (*self.routes.get(op.method, ()), (_route_regex(op.path), op))
        if mock.config.admin:  # the admin API's forced state: the route `None` stands for (no spec path is PUT)
            self.set_state = forced_state(mock)
            self.routes["PUT"] = (*self.routes.get("PUT", ()), (_route_regex(PREFIX + "/subtasks/{raw_id}"), None))
        self.max_header_bytes = mock.config.max_header_bytes
        self.max_body_bytes = mock.config.max_body_bytes  # create_app gives it Flask too, as MAX_CONTENT_LENGTH
        self.strict = mock.config.strict
        self.access_log = mock.config.access_log

    def __call__(self, environ, start_response):
        routes = self.routes.get(environ.get("REQUEST_METHOD"))
        if routes is not None:
            path = environ.get("PATH_INFO") or "/"
            for regex, op in routes:
                match = regex.match(path)
                if match is not None:
                    try:
                        takes = self.takes(environ, op, path)
                    except Exception:  # noqa: BLE001  (the fault board's read failed): Flask answers, in the envelope
                        takes = False
                    if takes:
                        return self.answer(environ, start_response, op, path, match.groupdict())
                    break
        return self.wsgi_app(environ, start_response)

    def takes(self, environ: dict, op: "Operation | None", path: str) -> bool:
        """Whether this request is one the dispatcher answers exactly as the Flask path would (OP None: the admin
        API's PUT /__mock/subtasks/{id})."""
        if op is None:
            return self.takes_admin(environ, path)
        if "HTTP_PREFER" in environ or "HTTP_TRANSFER_ENCODING" in environ:
            return False
        if environ.get("CONTENT_LENGTH") not in (None, "", "0"):
            return False
        authorization = environ.get("HTTP_AUTHORIZATION")
        if authorization is not None and authorization[:6].lower() != "basic ":
            return False
        if not path.isascii() or not environ.get("QUERY_STRING", "").isascii():
            return False
        if header_bytes(environ) > self.max_header_bytes:
            return False
        if self.board is not None:
            faults = self.board.current()
            if faults is not None and op.operation_id in faults.by_operation:
                return False
        return True

    def takes_admin(self, environ: dict, path: str) -> bool:
        """takes() for the admin PUT, which has a body. Faults and Prefer never apply to the admin API."""
        if "HTTP_TRANSFER_ENCODING" in environ or not path.isascii():
            return False
        length = environ.get("CONTENT_LENGTH")
        if length is None:  # Werkzeug reads no body then, unless the server ends the stream (Flask reads it all)
            if "wsgi.input_terminated" in environ:
                return False
        elif "wsgi.input_terminated" in environ and not (length.isdigit() and length.isascii()):
            return False  # Werkzeug would read the stream to its end, not to this Content-Length
        elif (get_content_length(environ) or 0) > self.max_body_bytes:  # Flask's 413
            return False
        if header_bytes(environ) > self.max_header_bytes:  # Flask's 431
            return False
        if self.board is not None:
            self.board.current()  # Flask's before-request hook reads it too: if the read fails, Flask answers
        return True

    def answer(self, environ: dict, start_response, op: "Operation | None", path: str, path_values: dict):
        mock = self.mock
        t0 = time.perf_counter()
        trace_id = new_trace_id()
        method = environ["REQUEST_METHOD"]
        headers: list[tuple[str, str]] = []
        try:
            if op is None:  # the admin API's PUT /__mock/subtasks/{id}
                admit(mock, EnvironHeaders(environ))
                status, data = self.set_state(path_values["raw_id"],
                                              lambda: read_body(environ, self.max_body_bytes))
            else:
                qs = environ.get("QUERY_STRING")
                query = MultiDict(parse_qsl(qs, keep_blank_values=True, errors="werkzeug.url_quote")) if qs else _EMPTY
                status, data = mock.call(op, path_values, query, EnvironHeaders(environ),
                                         environ.get("HTTP_AUTHORIZATION"))
            body = mock.envelope.success(data, status, trace_id, int((time.perf_counter() - t0) * 1000))
        except Exception as exc:  # noqa: BLE001  every failure is an answer in OCP's envelope
            if isinstance(exc, OcpError):
                error = exc
            elif isinstance(exc, HTTPException):  # the body's read: the client left before sending all of it
                error = http_error(exc, method, path)
            else:
                log.exception("unexpected error on %s %s", method, path)
                error = OcpError(500, CODE_GENERIC, "An unexpected error occurred on the server.")
            wants_trace = environ.get("HTTP_X_RETURNSTACKTRACE", "").lower() == "true"
            status, headers = error.status, list(error.headers.items())
            body = mock.error_body(error, trace_id, int((time.perf_counter() - t0) * 1000),
                                   exc if wants_trace else None)
        if self.strict:
            problem = mock.answer_problem(op, status, JSON, body, admin=op is None)
            if problem:
                error = mock.contract_violation(method, path, problem)
                status, headers = error.status, []
                body = mock.error_body(error, trace_id, int((time.perf_counter() - t0) * 1000))
        if self.access_log:
            log_access(trace_id, method, path, status, t0)
        start_response(_STATUS_LINES.get(status) or f"{status} UNKNOWN",
                       [("Content-Type", JSON), ("Content-Length", str(len(body))), *headers])
        return [body]


def init_app(app, mock: "Mock") -> None:
    """Puts the dispatcher in front of Flask (and the docs), unless Config.fast_path is off."""
    if not mock.config.fast_path:
        return
    from .faults import BOARD

    app.wsgi_app = Dispatcher(app.wsgi_app, mock, app.extensions.get(BOARD))
