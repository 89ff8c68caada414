"""The interactive API page: `GET /docs` serves Swagger UI for the spec the mock serves, with "try it out" against
the mock itself. Every asset comes from the installed `swagger-ui-py` package (Swagger UI 5, which reads
OpenAPI 3.1); the page's Content-Security-Policy lets it load scripts, styles and images from the mock only.

Routes (GET and HEAD):
- `/docs` (and `/docs/`): the page;
- `/docs/init.js`: the page's start-up script (points Swagger UI at /openapi.json);
- `/docs/static/<file>`: Swagger UI's files (a fixed list);
- `/openapi.yaml`: the spec file, byte for byte;
- `/openapi.json`: the same document as JSON, with this mock's own address (from the request's Host) put first
  in `servers`, so "try it out" calls the mock the page came from, whatever its port.

These answers are made below Flask (WSGI middleware), since they are not OCP API answers: no envelope, and no
strict-mode check against the spec. Another method on these paths gets OCP's 405 envelope with an Allow header.
"""

from __future__ import annotations

import html
import importlib.util
import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

from werkzeug.utils import send_file
from werkzeug.wrappers import Response

from .envelope import CODE_GENERIC, new_trace_id
from .extensions import add_wsgi_route, log_wsgi_access

if TYPE_CHECKING:
    from flask import Flask

    from .app import Mock

log = logging.getLogger("ocp_mock")

DOCS = "/docs"
INIT_JS = "/docs/init.js"
STATIC = "/docs/static/"
SPEC_JSON = "/openapi.json"
SPEC_YAML = "/openapi.yaml"
READ_METHODS = ("GET", "HEAD")
ASSETS = {
    "swagger-ui.css": "text/css",  # werkzeug adds "; charset=utf-8" to text types
    "swagger-ui-bundle.js": "text/javascript",
    "favicon-32x32.png": "image/png",
    "favicon-16x16.png": "image/png",
    "LICENSE": "text/plain",
}
ASSET_MAX_AGE = 3600
CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
       "connect-src *; object-src 'none'; base-uri 'self'; frame-ancestors 'self'")

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>{title}</title>
  <link rel="stylesheet" href="{base}/docs/static/swagger-ui.css">
  <link rel="icon" type="image/png" sizes="32x32" href="{base}/docs/static/favicon-32x32.png">
  <link rel="icon" type="image/png" sizes="16x16" href="{base}/docs/static/favicon-16x16.png">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="{base}/docs/static/swagger-ui-bundle.js"></script>
  <script src="{base}/docs/init.js"></script>
</body>
</html>
"""

INIT = """window.addEventListener("load", function () {{
  window.ui = SwaggerUIBundle({{
    url: {spec_url},
    dom_id: "#swagger-ui",
    deepLinking: true,
    displayRequestDuration: true,
    showExtensions: true,
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout"
  }});
}});
"""


def static_dir() -> Path | None:
    """Swagger UI's files inside the installed swagger-ui-py package (found without importing it)."""
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "static"
    return folder if (folder / "swagger-ui-bundle.js").is_file() else None


class DocsSite:
    """WSGI middleware that answers the docs' paths and passes everything else on."""

    def __init__(self, wsgi_app, mock: "Mock"):
        self.wsgi_app = wsgi_app
        self.mock = mock
        self.spec_file = Path(mock.spec.path)
        self.static = static_dir()
        if self.static is None:
            log.warning("swagger-ui-py is not installed: /docs will answer 503 (pip install swagger-ui-py)")
        info = mock.spec.raw.get("info", {})
        self.title = f"{info.get('title', 'API')} {info.get('version', '')}".strip() + " (ocp-mock)"

    def methods(self, path: str) -> tuple[str, ...] | None:
        if path in (DOCS, DOCS + "/", INIT_JS, SPEC_JSON, SPEC_YAML):
            return READ_METHODS
        if path.startswith(STATIC) and path[len(STATIC):] in ASSETS:
            return READ_METHODS
        return None

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO") or "/"
        if self.methods(path) is None:
            return self.wsgi_app(environ, start_response)
        t0 = time.perf_counter()
        method = environ.get("REQUEST_METHOD", "GET")
        if method not in READ_METHODS:
            response = self.error(405, f"Request method '{method}' is not supported for {path}.",
                                  {"Allow": ", ".join(READ_METHODS)})
        else:
            response = self.answer(path, environ)
        log_wsgi_access(self.mock, environ, response.status_code, t0)
        return response(environ, start_response)

    # -- answers -----------------------------------------------------------------------------------
    def answer(self, path: str, environ) -> Response:
        base = environ.get("SCRIPT_NAME", "").rstrip("/")
        if path == SPEC_YAML:
            return send_file(self.spec_file, environ, mimetype="application/yaml", max_age=0)
        if path == SPEC_JSON:
            body = json.dumps(self.served_spec(environ), ensure_ascii=False, default=str, indent=2)
            return Response(body, mimetype="application/json", headers={"Cache-Control": "no-cache"})
        if self.static is None:
            return self.error(503, "The docs page needs the swagger-ui-py package: pip install swagger-ui-py.")
        if path.startswith(STATIC):
            name = path[len(STATIC):]
            return send_file(self.static / name, environ, mimetype=ASSETS[name], max_age=ASSET_MAX_AGE)
        if path == INIT_JS:
            script = INIT.format(spec_url=json.dumps(base + SPEC_JSON))
            return Response(script, mimetype="text/javascript", headers={"Cache-Control": "no-cache"})
        page = PAGE.format(title=html.escape(self.title), base=html.escape(base))
        return Response(page, mimetype="text/html", headers={
            "Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"})

    def served_spec(self, environ) -> dict:
        """The spec with this mock's own address first in `servers` (the others kept, without duplicates)."""
        scheme = environ.get("wsgi.url_scheme", "http")
        host = environ.get("HTTP_HOST") or f"{environ.get('SERVER_NAME')}:{environ.get('SERVER_PORT')}"
        own = f"{scheme}://{host}{environ.get('SCRIPT_NAME', '').rstrip('/')}"
        spec = dict(self.mock.spec.raw)
        others = [s for s in spec.get("servers", []) if isinstance(s, dict) and s.get("url") != own]
        spec["servers"] = [{"url": own, "description": "this mock (the address this document was fetched from)"},
                           *others]
        return spec

    def error(self, status: int, message: str, headers: dict | None = None) -> Response:
        body = self.mock.envelope.error({"code": CODE_GENERIC, "message": message}, status, new_trace_id(), 0)
        return Response(body, status=status, mimetype="application/json", headers=headers or {})


def init_app(app: "Flask", mock: "Mock") -> None:
    site = DocsSite(app.wsgi_app, mock)
    app.wsgi_app = site
    add_wsgi_route(app, site.methods)
