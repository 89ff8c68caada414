"""Optional parts of the mock, each wired into the app in one place: init_extensions(app, mock).

Three of them work below Flask, as WSGI middleware around `app.wsgi_app`:
- docs.py serves `/docs` (Swagger UI), `/openapi.json` and `/openapi.yaml`: not OCP API answers, so they are not
  put through the strict-mode contract check that Flask's after_request hook runs;
- cors.py answers browsers' preflight requests and adds the CORS headers to every answer (API, errors, docs);
- dispatch.py answers the spec's operations and the admin API's forced state (PUT /__mock/subtasks/{id}) without
  Flask's request machinery (the hot path) and hands on to Flask what it does not answer exactly as Flask would.
The order is cors(dispatch(docs(flask))): the CORS headers reach every answer.

A middleware that serves paths of its own registers a `methods(path) -> tuple | None` with `add_wsgi_route`,
so CORS preflights of those paths list their real methods, as they do for the Flask routes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from .accesslog import log_access

if TYPE_CHECKING:
    from flask import Flask

    from .app import Mock

WSGI_ROUTES = "ocp_mock.wsgi_routes"


def init_extensions(app: "Flask", mock: "Mock") -> None:
    """Called by create_app after the spec's operations are routed and before the admin API."""
    from . import cors, dispatch, docs, faults, scenarios

    faults.init_app(app, mock)  # injected faults and Prefer's forced answers (called from app.py's before-request hook)
    scenarios.init_app(app, mock)  # Config.scenario_files: loaded, and applied when Config.apply_scenarios
    docs.init_app(app, mock)
    dispatch.init_app(app, mock)  # the spec's operations and the admin PUT, answered below Flask (and the docs)
    cors.init_app(app, mock)  # last, so outermost


def add_wsgi_route(app: "Flask", methods: Callable[[str], "tuple[str, ...] | None"]) -> None:
    app.extensions.setdefault(WSGI_ROUTES, []).append(methods)


def route_methods(app: "Flask", environ: dict) -> tuple[str, ...]:
    """The methods the mock answers on the request's path: a WSGI-level route's, else the Flask routes'."""
    path = environ.get("PATH_INFO") or "/"
    for methods in app.extensions.get(WSGI_ROUTES, []):
        found = methods(path)
        if found:
            return tuple(found)
    adapter = app.url_map.bind_to_environ(environ)
    return tuple(sorted(adapter.allowed_methods()))


def log_wsgi_access(mock: "Mock", environ: dict, status: int, t0: float) -> None:
    """The access-log line for an answer made below Flask (same format as app.py's; no traceId)."""
    if mock.config.access_log:
        log_access("-", environ.get("REQUEST_METHOD"), environ.get("PATH_INFO"), status, t0)
