"""Experiments only (bench/variants.py, bench/profile_request.py): the mock's app factory with candidate changes
applied, so a suggested change can be measured before anyone edits mock_server/. BENCH_PATCHES=name,name,...

Candidate changes (each keeps the mock's answers byte-identical except for timestamps and trace ids):
  writelock    one threading.Lock per process around Store._write: a process's threads queue on a Python lock
               instead of all polling SQLite's file lock (SQLite's busy handler sleeps 1..100 ms between tries)
  intparams    Parameter.parse skips the compiled jsonschema check when the schema is a plain integer with a
               format range (the regex + int() + range check already decide it)
  noraise      the operation views catch OcpError and return mock.failure(...) themselves, instead of letting
               Flask's exception machinery find the error handler (handle_user_exception, MRO walk, signals)
  sharedlock   writers queue on a blocking kernel lock (fcntl.flock on a file beside the database, plus a
               threading.Lock per process) around BEGIN IMMEDIATE..COMMIT, so they never poll SQLite's lock;
               the holder also bumps an 8-byte version counter (mmap) after COMMIT
  versioncache sharedlock + Store.subtask answered from a per-process dict that is dropped whenever the shared
               version counter moved (one mmap read per request; correct across workers: a write bumps the
               counter before its answer is sent)
  thin         the spec's operations answered by a plain WSGI dispatcher in front of Flask (one compiled regex
               per operation -> authenticate -> parse parameters -> authorise -> handler -> envelope bytes);
               everything else (admin API, docs, 404/405) still goes to Flask. A prototype to price Flask's share:
               it skips the CORS headers, the size checks, strict mode and the access log.
Measurements only (they drop something the mock does, to price it; not suggestions as such):
  nohdrscan    before_request without the header-size sum over the environ (keeps t0 and the trace id)
  nomiddleware app.wsgi_app is Flask's own again: no CORS / docs WSGI layers
  readcache    Store.subtask answers from a per-process dict after the first read (WRONG across workers: an
               upper bound for "no SQLite on the read path", e.g. a shared version counter + cache)
"""

from __future__ import annotations

import os
import threading
import time

from mock_server import spec as spec_module
from mock_server import store as store_module

MODULE_PATCHES = {}
APP_PATCHES = {}


def module_patch(fn):
    MODULE_PATCHES[fn.__name__.lstrip("_")] = fn
    return fn


def app_patch(fn):
    APP_PATCHES[fn.__name__.lstrip("_")] = fn
    return fn


@module_patch
def _writelock():
    original = store_module.Store._write
    lock = threading.Lock()

    def _write(self, work):
        with lock:
            return original(self, work)

    store_module.Store._write = _write


@module_patch
def _intparams():
    original = spec_module.Parameter.parse
    simple = {"type", "format", "example", "description"}

    def parse(self, raw):
        schema = self.schema
        if schema.get("type") == "integer" and set(schema) <= simple:
            if not spec_module._INTEGER.match(raw):
                raise ValueError(self.describe_range())
            value = int(raw)
            bounds = spec_module.FORMAT_RANGES.get(schema.get("format", ""))
            if bounds and not bounds[0] <= value <= bounds[1]:
                raise ValueError(self.describe_range())
            return value
        return original(self, raw)

    spec_module.Parameter.parse = parse


_SHARED: dict = {}


def _shared(store):
    """(lock fd, mmap of the 8-byte version counter) for STORE's database, opened once per process."""
    import mmap

    key = (os.getpid(), store.path)
    found = _SHARED.get(key)
    if found is None:
        fd = os.open(store.path + ".bench-version", os.O_RDWR | os.O_CREAT, 0o600)
        if os.fstat(fd).st_size < 8:
            os.ftruncate(fd, 8)
        found = _SHARED[key] = (fd, mmap.mmap(fd, 8), threading.Lock())
    return found


def _version(store) -> int:
    return int.from_bytes(_shared(store)[1][:8], "little")


@module_patch
def _sharedlock():
    import fcntl

    original = store_module.Store._write

    def _write(self, work):
        fd, mm, tlock = _shared(self)
        with tlock:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                return original(self, work)
            finally:
                mm[:8] = ((int.from_bytes(mm[:8], "little") + 1) % 2**63).to_bytes(8, "little")
                fcntl.flock(fd, fcntl.LOCK_UN)

    store_module.Store._write = _write


@module_patch
def _versioncache():
    _sharedlock()
    original = store_module.Store.subtask
    local = threading.local()

    def subtask(self, subtask_id):
        version = _version(self)
        cache = getattr(local, "cache", None)
        if cache is None or local.version != version or local.pid != os.getpid():
            cache = local.cache = {}
            local.version, local.pid = version, os.getpid()
        row = cache.get(subtask_id, _MISSING)
        if row is _MISSING:
            row = cache[subtask_id] = original(self, subtask_id)  # None (no such subtask) is cached too
        return row

    store_module.Store.subtask = subtask


_MISSING = object()


@module_patch
def _readcache():
    original = store_module.Store.subtask
    cache = {}

    def subtask(self, subtask_id):
        row = cache.get(subtask_id)
        if row is None:
            row = cache[subtask_id] = original(self, subtask_id)
        return row

    store_module.Store.subtask = subtask


@app_patch
def _noraise(app, mock):
    from mock_server.envelope import OcpError

    for op_id in mock.spec.operations:
        view = app.view_functions[op_id]

        def wrapped(_view=view, **path_values):
            try:
                return _view(**path_values)
            except OcpError as exc:
                return mock.failure(exc, exc)

        app.view_functions[op_id] = wrapped


@app_patch
def _nohdrscan(app, mock):
    from flask import g

    from mock_server.envelope import new_trace_id

    def start():
        g.ocp_t0 = time.perf_counter()
        g.ocp_trace_id = new_trace_id()

    app.before_request_funcs[None] = [start]


@app_patch
def _nomiddleware(app, mock):
    from flask import Flask

    app.wsgi_app = Flask.wsgi_app.__get__(app)


@app_patch
def _thin(app, mock):
    import re

    from mock_server.app import HANDLERS
    from mock_server.auth import ANONYMOUS
    from mock_server.envelope import OcpError, invalid_parameters, new_trace_id

    routes = []
    for op in mock.spec.operations.values():
        pattern = re.sub(r"\\\{([^}/]+)\\\}", r"(?P<\1>[^/]+)", re.escape(op.path))
        routes.append((op.method, re.compile(pattern + r"\Z"), op, HANDLERS[op.operation_id]))
    flask_app = app.wsgi_app
    envelope, auth = mock.envelope, mock.auth
    reasons = {200: "200 OK", 400: "400 Bad Request", 401: "401 Unauthorized", 403: "403 Forbidden",
               404: "404 Not Found"}

    class Headers(dict):
        pass

    def thin(environ, start_response):
        method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "")
        for op_method, regex, op, handler in routes:
            if op_method != method:
                continue
            m = regex.match(path)
            if m is None:
                continue
            t0 = time.perf_counter()
            trace = new_trace_id()
            extra = []
            try:
                user = auth.authenticate(environ.get("HTTP_AUTHORIZATION")) if op.secured else ANONYMOUS
                params, errors = op.parse_parameters(m.groupdict(), {}, {})
                if errors:
                    raise invalid_parameters(errors)
                auth.authorize(user, op.permission)
                status, data = handler(mock, params)
                body = envelope.success(data, status, trace, int((time.perf_counter() - t0) * 1000))
            except OcpError as exc:
                status = exc.status
                body = envelope.error(exc.error_object(), status, trace, int((time.perf_counter() - t0) * 1000))
                extra = list(exc.headers.items())
            start_response(reasons.get(status, f"{status} X"), [("Content-Type", "application/json"),
                                                               ("Content-Length", str(len(body))), *extra])
            return [body]
        return flask_app(environ, start_response)

    app.wsgi_app = thin


def apply_module_patches(names):
    for name in names:
        if name in MODULE_PATCHES:
            MODULE_PATCHES[name]()
        elif name not in APP_PATCHES:
            raise SystemExit(f"unknown patch {name!r}; known: {', '.join([*MODULE_PATCHES, *APP_PATCHES])}")


def apply_app_patches(app, names):
    mock = app.extensions["ocp_mock"]
    for name in names:
        if name in APP_PATCHES:
            APP_PATCHES[name](app, mock)
    return app


def app_from_env():
    from mock_server.wsgi import app_from_env as real_factory

    names = [n for n in os.environ.get("BENCH_PATCHES", "").split(",") if n]
    apply_module_patches(names)
    return apply_app_patches(real_factory(), names)
