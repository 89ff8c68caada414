"""CORS, so a front end served from another origin (a dev server on :3000 or :5173) can call the mock with
`fetch()` and Basic credentials.

- A preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) from an allowed origin is answered
  204 with the path's real methods, the requested headers, credentials allowed and a Max-Age. An unknown path is
  answered 204 too (with no methods), so that the real request goes out and the page reads the mock's 404 body
  instead of an opaque CORS failure.
- Every other answer to an allowed origin (successes, 4xx and 5xx envelopes, the docs) carries
  Access-Control-Allow-Origin (the origin itself, never `*`, since credentials are allowed),
  Access-Control-Allow-Credentials and Access-Control-Expose-Headers.
- `Vary: Origin` is on every answer, because the answer depends on the Origin.
- An OPTIONS that is not a preflight from an allowed origin goes on to Flask, which answers it as before:
  405 with an Allow header, in OCP's envelope.

Origins come from Config.cors_origins: exact `scheme://host[:port]` values, or "*" to reflect any origin.
An empty list turns CORS off.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from .extensions import log_wsgi_access, route_methods

if TYPE_CHECKING:
    from flask import Flask

    from .app import Mock

ANY = "*"
DEFAULT_ALLOW_HEADERS = ("Authorization", "Content-Type", "Date", "X-ReturnStackTrace")
# Response headers a page may read besides the CORS-safelisted ones (Content-Type and co.).
EXPOSE_HEADERS = ("Allow", "Date", "Retry-After", "WWW-Authenticate")
MAX_AGE_SECONDS = 600
_DEFAULT_PORTS = {"http": 80, "https": 443}


class CorsConfigError(ValueError):
    pass


def normalize_origin(text: str) -> str:
    """`scheme://host[:port]` in lower case, without a default port or a trailing slash; raises CorsConfigError."""
    raw = text.strip()
    parts = urlsplit(raw)
    try:
        port = parts.port
    except ValueError:
        port = -1
    if (parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/")
            or parts.query or parts.fragment or parts.username or port == -1):
        raise CorsConfigError(
            f"CORS origin {text!r} is not an origin; write scheme://host[:port], e.g. http://localhost:3000, "
            f"or {ANY} to allow any origin"
        )
    host = parts.hostname
    if ":" in host:
        host = f"[{host}]"
    if port is not None and port != _DEFAULT_PORTS[parts.scheme]:
        host += f":{port}"
    return f"{parts.scheme}://{host}"


class CorsPolicy:
    """Which origins may call the mock from a browser."""

    def __init__(self, origins: Iterable[str]):
        origins = [origins] if isinstance(origins, str) else list(origins)
        self.any = ANY in origins
        self.origins = frozenset(normalize_origin(o) for o in origins if o != ANY)

    def allows(self, origin: str | None) -> bool:
        if not origin:
            return False
        if self.any:
            return True
        try:
            return normalize_origin(origin) in self.origins
        except CorsConfigError:
            return False


def _add_vary(headers: list[tuple[str, str]], names: Iterable[str]) -> list[tuple[str, str]]:
    """HEADERS with one Vary header that names NAMES (distinct) after what Vary headers there named already."""
    for key, _ in headers:
        if key.lower() == "vary":
            break
    else:  # no Vary yet: most answers
        return [*headers, ("Vary", ", ".join(names))]
    present = []
    rest = []
    for key, value in headers:
        if key.lower() == "vary":
            present.extend(v.strip() for v in value.split(",") if v.strip())
        else:
            rest.append((key, value))
    for name in names:
        if name.lower() not in {p.lower() for p in present}:
            present.append(name)
    return [*rest, ("Vary", ", ".join(present))]


class CorsMiddleware:
    """WSGI middleware: the CORS layer around the whole mock."""

    def __init__(self, wsgi_app, policy: CorsPolicy, methods_for: Callable[[dict], tuple[str, ...]], mock: "Mock"):
        self.wsgi_app = wsgi_app
        self.policy = policy
        self.methods_for = methods_for
        self.mock = mock

    def __call__(self, environ, start_response):
        origin = environ.get("HTTP_ORIGIN")
        allowed = self.policy.allows(origin)
        if (allowed and environ.get("REQUEST_METHOD") == "OPTIONS"
                and environ.get("HTTP_ACCESS_CONTROL_REQUEST_METHOD")):
            return self.preflight(environ, start_response, origin)

        def start(status, headers, exc_info=None):
            headers = _add_vary(headers, ("Origin",))
            if allowed:
                headers = [h for h in headers if not h[0].lower().startswith("access-control-")]
                headers += [
                    ("Access-Control-Allow-Origin", origin),
                    ("Access-Control-Allow-Credentials", "true"),
                    ("Access-Control-Expose-Headers", ", ".join(EXPOSE_HEADERS)),
                ]
            return start_response(status, headers, exc_info)

        return self.wsgi_app(environ, start)

    def preflight(self, environ, start_response, origin: str):
        t0 = time.perf_counter()
        requested = environ.get("HTTP_ACCESS_CONTROL_REQUEST_HEADERS", "").strip()
        headers = [
            ("Access-Control-Allow-Origin", origin),
            ("Access-Control-Allow-Credentials", "true"),
            ("Access-Control-Allow-Headers", requested or ", ".join(DEFAULT_ALLOW_HEADERS)),
            ("Access-Control-Max-Age", str(MAX_AGE_SECONDS)),
            ("Content-Length", "0"),
        ]
        methods = self.methods_for(environ)
        if methods:
            headers.append(("Access-Control-Allow-Methods", ", ".join(methods)))
        if environ.get("HTTP_ACCESS_CONTROL_REQUEST_PRIVATE_NETWORK", "").lower() == "true":
            headers.append(("Access-Control-Allow-Private-Network", "true"))  # Chrome's Private Network Access
        headers = _add_vary(headers, ["Origin", "Access-Control-Request-Method", "Access-Control-Request-Headers"])
        start_response("204 No Content", headers)
        log_wsgi_access(self.mock, environ, 204, t0)
        return [b""]


def init_app(app: "Flask", mock: "Mock") -> None:
    """Wraps the app in the CORS layer, unless Config.cors_origins is empty."""
    if not mock.config.cors_origins:
        return
    policy = CorsPolicy(mock.config.cors_origins)
    app.wsgi_app = CorsMiddleware(app.wsgi_app, policy, lambda environ: route_methods(app, environ), mock)
    app.extensions["ocp_mock.cors"] = policy
