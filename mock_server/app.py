"""create_app(config): assembles the mock. Routes come from the spec's operations; a request flows
route -> authenticate -> validate parameters -> authorise -> handler (lifecycle, store) -> envelope
(-> self-check against the spec in strict mode). Every failure is an OcpError turned into a body in one place."""

from __future__ import annotations

import atexit
import logging
import shutil
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import orjson
from flask import Flask, Response, g, request
from werkzeug.exceptions import HTTPException

from . import world as world_module
from .accesslog import log_access
from .auth import ANONYMOUS, DEFAULT_USERS, Authenticator, load_users
from .config import Config
from .envelope import CODE_GENERIC, Envelope, OcpError, invalid_parameters, new_trace_id
from .extensions import init_extensions
from .handlers import HANDLERS
from .spec import Operation, Spec, first_error, load_spec
from .runtime import Runtime
from .store import Store

if TYPE_CHECKING:
    from .signature import SignedRequest

log = logging.getLogger("ocp_mock")
JSON = "application/json"
# Answers about the request's size, made before any operation runs; they use the error envelope. Injected faults
# (faults.py, g.ocp_injected) are checked the same way: against ErrorResponse, whatever the operation declares.
TRANSPORT_LIMITS = frozenset({413, 431})


@dataclass
class Mock:
    """Everything a request needs, built once per app (or worker process)."""

    config: Config
    spec: Spec
    store: Store
    auth: Authenticator
    envelope: Envelope
    violations: list = field(default_factory=list)  # strict mode: responses that broke the contract
    runtime: Runtime | None = None  # the world in time: clock, engine, actions (set by create_app)
    after_reset: list = field(default_factory=list)  # called after each reset (faults.py: other processes notice)

    def build_world(self, seed: int):
        return world_module.build_world(seed, task_count=self.config.task_count)

    def reset(self, seed: int | None = None) -> int:
        seed = self.config.seed if seed is None else seed
        self.store.reset(seed, self.build_world)
        for hook in self.after_reset:
            hook()
        return seed

    # -- the pipeline, shared by the Flask path and the dispatcher (dispatch.py) -------------------------
    def call(self, op: Operation, path_values: dict, query, headers, authorization: str | None,
             signed: "SignedRequest | None" = None) -> tuple[int, bytes | None]:
        """authenticate -> parse parameters -> authorise -> handler: (status, data in wire form). Raises OcpError.
        SIGNED: the signed parts of the request, for the signature scheme (None: the current Flask request)."""
        user = self.auth.authenticate(authorization, signed) if op.secured else ANONYMOUS
        params, errors = op.parse_parameters(path_values, query, headers)
        if errors:
            raise invalid_parameters(errors)
        self.auth.authorize(user, op.permission)
        return HANDLERS[op.operation_id](self, params)

    def error_body(self, error: OcpError, trace_id: str, elapsed_ms: int, exc: BaseException | None = None) -> bytes:
        """The error envelope; EXC given: with its stack trace (the caller checked X-ReturnStackTrace)."""
        trace = [line.rstrip("\n") for line in traceback.format_exception(exc)] if exc is not None else None
        return self.envelope.error(error.error_object(trace), error.status, trace_id, elapsed_ms)

    def answer_problem(self, operation: Operation | None, status: int, mimetype: str | None, body: bytes,
                       injected: str | None = None, admin: bool = False) -> str | None:
        """Strict mode: what is wrong with an answer against the spec, or None. OPERATION: the API operation that
        answered (None: the admin API when ADMIN, else no route matched); INJECTED: a fault's answer."""
        if mimetype != JSON:
            return f"content type {mimetype!r} is not {JSON}"
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            return f"body is not JSON: {exc}"
        if operation is not None and status not in TRANSPORT_LIMITS and not injected:
            validator = operation.response_validator(status)
            if validator is None:
                return f"status {status} is not declared for {operation.operation_id}"
        elif admin:  # the admin API: the envelope, with data of its own
            validator = self.spec.validator("Envelope")
        else:  # no route matched: Flask's 404/405, answered in the error envelope
            validator = self.spec.validator("ErrorResponse")
        problem = first_error(validator, doc)
        if problem is None and doc.get("status") != status:
            problem = f"envelope status {doc.get('status')} differs from HTTP status {status}"
        return problem

    def contract_violation(self, method: str, path: str, problem: str) -> OcpError:
        """Records a strict-mode violation; the 500 that replaces the answer."""
        message = f"mock response for {method} {path} breaks openapi.yaml: {problem}"
        log.error(message)
        self.violations.append(message)
        return OcpError(500, CODE_GENERIC, message)

    # -- bodies (the Flask path) ----------------------------------------------------------------------
    def success(self, status: int, data: bytes) -> Response:
        body = self.envelope.success(data, status, _trace_id(), _elapsed_ms())
        return Response(body, status=status, mimetype=JSON)

    def failure(self, error: OcpError, exc: BaseException | None = None) -> Response:
        wants_trace = exc is not None and request.headers.get("X-ReturnStackTrace", "").lower() == "true"
        body = self.error_body(error, _trace_id(), _elapsed_ms(), exc if wants_trace else None)
        response = Response(body, status=error.status, mimetype=JSON)
        for name, value in error.headers.items():
            response.headers[name] = value
        return response

    def contract_problem(self, operation: Operation | None, response: Response) -> str | None:
        """What is wrong with RESPONSE (the Flask path's) against the spec, or None."""
        return self.answer_problem(operation, response.status_code, response.mimetype, response.get_data(),
                                   g.get("ocp_injected"), admin=request.blueprint is not None)


# The environ keys seen that are not headers: the server's and, with granian, the whole process environment, which
# it puts in every environ. header_bytes() skips them in one set operation (a served environ has ~50 keys, of which
# a request's headers are a handful: 5.2 -> 1.6 µs). Bounded: only servers make such keys, never a client.
_NOT_HEADERS: frozenset = frozenset()
_NOT_HEADERS_KEPT = 1024


def header_bytes(environ: dict) -> int:
    """The size of the request's headers as the size limit counts it: the HTTP_ keys and their values."""
    global _NOT_HEADERS
    total, others = 0, None
    for key in environ.keys() - _NOT_HEADERS:
        if isinstance(key, str) and key.startswith("HTTP_"):
            value = environ[key]
            if isinstance(value, str):
                total += len(key) + len(value)
        elif others is None:
            others = [key]
        else:
            others.append(key)
    if others and len(_NOT_HEADERS) < _NOT_HEADERS_KEPT:
        _NOT_HEADERS = _NOT_HEADERS.union(others)  # a new set: a reader in another thread keeps the one it took
    return total


def http_error(exc: HTTPException, method: str, path: str) -> OcpError:
    """Werkzeug's HTTP error EXC (no route, a client gone mid-body, ...) on METHOD PATH, as OCP's envelope says it."""
    headers = {}
    if exc.code == 405:
        headers["Allow"] = ", ".join(sorted(getattr(exc, "valid_methods", None) or []))
        message = f"Request method '{method}' is not supported for {path}."
    elif exc.code == 404:
        message = f"No handler found for {method} {path}."
    else:
        message = exc.description or exc.name
    return OcpError(exc.code or 500, CODE_GENERIC, message, headers=headers)


def _trace_id() -> str:
    if "ocp_trace_id" not in g:
        g.ocp_trace_id = new_trace_id()
    return g.ocp_trace_id


def _elapsed_ms() -> int:
    t0 = g.get("ocp_t0")
    return int((time.perf_counter() - t0) * 1000) if t0 else 0


def _private_db() -> str:
    folder = tempfile.mkdtemp(prefix="ocp-mock-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return str(Path(folder) / "world.sqlite3")


def create_app(config: Config | None = None, **overrides) -> Flask:
    """The Flask app for CONFIG (defaults from Config; keyword overrides for tests)."""
    config = config or Config()
    for key, value in overrides.items():
        if not hasattr(config, key):
            raise TypeError(f"unknown config option {key!r}")
        setattr(config, key, value)
    if config.db_path is None:
        config.db_path = _private_db()

    spec = load_spec(config.spec_path)
    users = load_users(config.users_file) if config.users_file else DEFAULT_USERS
    mock = Mock(
        config=config,
        spec=spec,
        store=Store(config.db_path, durable=config.durable),
        auth=Authenticator(users, enabled=config.auth),
        envelope=Envelope(config.server_id, config.utc_offset),
    )
    mock.runtime = Runtime(mock.store, mock.envelope.tz, config.clock_speed)  # before seeding: it schedules the world
    mock.store.ensure_seeded(config.seed, mock.build_world)
    mock.runtime.sync_clock()

    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = config.max_body_bytes
    # An empty path segment (`/instances//retry`) is a path of no route: OCP's 404 envelope, not Werkzeug's
    # HTML redirect to the path with the slashes merged.
    app.url_map.merge_slashes = False
    app.json.sort_keys = True
    app.extensions["ocp_mock"] = mock

    _add_operations(app, mock)
    init_extensions(app, mock)
    if config.admin:
        from .admin import make_blueprint

        app.register_blueprint(make_blueprint(mock))
    _add_error_handlers(app, mock)
    _add_hooks(app, mock)
    return app


def _add_operations(app: Flask, mock: Mock) -> None:
    missing = sorted(set(mock.spec.operations) - set(HANDLERS))
    if missing:
        raise RuntimeError(f"openapi.yaml declares operations with no handler: {', '.join(missing)}")
    for op in mock.spec.operations.values():
        # No automatic OPTIONS: a method the spec does not declare gets OCP's 405 with an Allow header.
        app.add_url_rule(op.flask_rule, endpoint=op.operation_id, view_func=_view(mock, op), methods=[op.method],
                         provide_automatic_options=False)


def _view(mock: Mock, op: Operation):
    def view(**path_values):
        status, data = mock.call(op, path_values, request.args, request.headers, request.headers.get("Authorization"))
        return mock.success(status, data)

    view.__name__ = op.operation_id
    return view


def _add_error_handlers(app: Flask, mock: Mock) -> None:
    @app.errorhandler(OcpError)
    def ocp_error(exc: OcpError):
        return mock.failure(exc, exc)

    @app.errorhandler(HTTPException)
    def http_exception(exc: HTTPException):
        return mock.failure(http_error(exc, request.method, request.path), exc)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        log.exception("unexpected error on %s %s", request.method, request.path)
        return mock.failure(OcpError(500, CODE_GENERIC, "An unexpected error occurred on the server."), exc)


def _add_hooks(app: Flask, mock: Mock) -> None:
    strict = mock.config.strict
    log_access_on = mock.config.access_log

    max_header_bytes = mock.config.max_header_bytes
    max_body_bytes = mock.config.max_body_bytes
    intercept = app.extensions.get("ocp_mock.intercept")  # faults.py: injected faults, Prefer's forced answers

    @app.before_request
    def start():
        g.ocp_t0 = time.perf_counter()
        g.ocp_trace_id = new_trace_id()
        environ = request.environ
        if header_bytes(environ) > max_header_bytes:
            raise OcpError(431, CODE_GENERIC, f"Request headers are larger than {max_header_bytes} bytes.")
        if (request.content_length or 0) > max_body_bytes:
            raise OcpError(413, CODE_GENERIC, f"Request body is larger than {max_body_bytes} bytes.")
        if intercept is not None:  # routed and within the limits: an injected answer replaces the operation's
            return intercept(environ)

    @app.after_request
    def finish(response: Response):
        if strict and g.get("ocp_injected") != "drop":  # a dropped connection has no body to check
            op = mock.spec.operations.get(request.endpoint or "") if request.blueprint is None else None
            problem = mock.contract_problem(op, response)
            if problem:
                response = mock.failure(mock.contract_violation(request.method, request.path, problem))
        if log_access_on:
            log_access(g.get("ocp_trace_id", "-"), request.method, request.path, response.status_code,
                       g.get("ocp_t0", time.perf_counter()))
        return response
