"""Injected answers: faults per operation or route (latency; 500/502/503 in OCP's envelope; a dropped connection; a
hang), and the `Prefer: code=...` request header, which forces one answer for one call without touching the world.

Where they act: app.py's before-request hook calls `intercept(environ)` once the request is routed and its size
checked, before authentication. Only the API's operations (openapi.yaml) are subject to them; the admin API
(/__mock), /docs and the CORS preflights never are.

- Faults live in the shared store (meta key `faults`), so every worker process applies the same set. A process
  keeps its parsed copy and reads the store again only when the 8-byte change token in the file `<db>-faults`
  (mapped into every process) changed; whoever changes the faults writes a new random token after committing.
  With no fault set and no Prefer header, a request pays one 8-byte read, a comparison and a dict lookup.
- Each rule fires with its `rate`, drawn from the fault set's own generator (seeded by the set's `seed`, restarted
  whenever the set changes), so one process gives the same sequence of outcomes for the same calls.
- An injected 500/502/503 is not a declared answer of every operation: strict mode checks it against the
  ErrorResponse schema only, as it does the transport-limit answers (413, 431). A dropped connection has no
  body to check. Forced answers (Prefer) are declared answers and are checked against the operation as usual.
"""

from __future__ import annotations

import logging
import mmap
import os
import random
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
from flask import Response, current_app, g, request

from .envelope import CODE_GENERIC, OcpError, dump_data
from .spec import HTTP_METHODS, SubError

if TYPE_CHECKING:
    from flask import Flask

    from .app import Mock
    from .spec import Operation, Spec

log = logging.getLogger("ocp_mock")

MAX_RULES = 100
MAX_LATENCY_MS = 60_000
DEFAULT_TIMEOUT_S = 30.0
MAX_TIMEOUT_S = 300.0
MAX_RETRY_AFTER_S = 86_400
FAILURE_STATUSES = (500, 502, 503)
FAILURES = (*FAILURE_STATUSES, "drop", "timeout")
FAILURE_MESSAGES = {
    500: "An unexpected error occurred on the server.",  # the spec's InternalError example
    502: "Bad Gateway: the server behind the gateway did not answer.",
    503: "Service Unavailable: the server is overloaded or down for maintenance.",
}
RULE_KEYS = ("operation", "route", "rate", "latency", "failure", "timeoutSeconds", "retryAfterSeconds")
LATENCY_FORMS = ("{fixedMs: N}", "{minMs: A, maxMs: B}", "{meanMs: M, stddevMs: S}")
INJECTED_HEADER = "X-Mock-Injected"
# A dropped answer: the head goes out with this Content-Length, then the connection closes without a body byte.
DROP_CONTENT_LENGTH = 512
HEAD_FLUSH_S = 0.01  # how long the dropped answer waits so that the head is surely on the wire before the close
TOKEN_BYTES = 8
META_KEY = "faults"


class Invalid(ValueError):
    """A scenario, a fault set or a Prefer header that cannot be used. WHERE names the key (e.g.
    `faults.rules[0].rate`), MESSAGE says what it must be."""

    def __init__(self, where: str, value: Any, message: str):
        self.where, self.value, self.message = where, value, message
        super().__init__(f"{where}: {message}" if where else message)

    def as_ocp_error(self, status: int = 400, prefix: str = "") -> OcpError:
        return OcpError(status, CODE_GENERIC, f"{prefix}{self}",
                        sub_errors=[SubError("mock", self.where or "(body)", _plain(self.value), self.message)])


def _plain(value: Any) -> Any:
    """VALUE as a sub-error's rejectedValue: a scalar as it is, a container as a short description (never dumped
    whole: YAML aliases can make a small body expand into a huge value)."""
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else str(value)
    if isinstance(value, str):
        return value[:200]
    return shown(value)


def shown(value: Any) -> str:
    """A value as the user wrote it, briefly, for messages."""
    if isinstance(value, dict):
        keys = [str(k) for k in list(value)[:5]]
        return "a mapping {" + ", ".join(keys) + (", ...}" if len(value) > 5 else "}")
    if isinstance(value, (list, tuple)):
        return f"a list of {len(value)} item{'s' if len(value) != 1 else ''}"
    if isinstance(value, str):
        return orjson.dumps(value[:80]).decode() + ("..." if len(value) > 80 else "")
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return repr(value)[:80]


def join(where: str, key: Any) -> str:
    if isinstance(key, int):
        return f"{where}[{key}]"
    return f"{where}.{key}" if where else str(key)


def check_keys(value: Any, where: str, allowed: tuple[str, ...], what: str = "a mapping") -> dict:
    if not isinstance(value, dict):
        raise Invalid(where, value, f"must be {what} with the keys {', '.join(allowed)}; got {shown(value)}")
    for key in value:
        if key not in allowed:
            raise Invalid(join(where, key), value[key], f"unknown key; use one of {', '.join(allowed)}")
    return value


def number(value: Any, where: str, low: float, high: float, integer: bool = False) -> float:
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or not low <= value <= high:
        raise Invalid(where, value, f"must be {'an integer' if integer else 'a number'} from {low:g} to {high:g}; "
                                    f"got {shown(value)}")
    return value


# ------------------------------------------------------------------------------------------ the fault set

@dataclass(frozen=True)
class Latency:
    kind: str  # fixed, uniform, normal
    a: float  # fixed: the delay; uniform: min; normal: mean (ms)
    b: float = 0.0  # uniform: max; normal: standard deviation (ms)

    def draw(self, rng: random.Random) -> float:
        """A delay in milliseconds, from 0 to MAX_LATENCY_MS."""
        if self.kind == "fixed":
            return self.a
        if self.kind == "uniform":
            return rng.uniform(self.a, self.b)
        return min(MAX_LATENCY_MS, max(0.0, rng.normalvariate(self.a, self.b)))

    def as_dict(self) -> dict:
        return {"fixed": lambda: {"fixedMs": self.a}, "uniform": lambda: {"minMs": self.a, "maxMs": self.b},
                "normal": lambda: {"meanMs": self.a, "stddevMs": self.b}}[self.kind]()

    def describe(self) -> str:
        return {"fixed": f"{self.a:g} ms", "uniform": f"{self.a:g}-{self.b:g} ms",
                "normal": f"{self.a:g}±{self.b:g} ms"}[self.kind]

    @classmethod
    def parse(cls, value: Any, where: str) -> "Latency":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return cls("fixed", number(value, where, 0, MAX_LATENCY_MS))
        if not isinstance(value, dict) or not value:
            raise Invalid(where, value, f"must be milliseconds or one of {', '.join(LATENCY_FORMS)}; got {shown(value)}")
        keys = set(value)
        ms = lambda key: number(value[key], join(where, key), 0, MAX_LATENCY_MS)  # noqa: E731
        if keys == {"fixedMs"}:
            return cls("fixed", ms("fixedMs"))
        if keys == {"minMs", "maxMs"}:
            low, high = ms("minMs"), ms("maxMs")
            if low > high:
                raise Invalid(join(where, "maxMs"), high, f"must not be less than minMs ({low:g})")
            return cls("uniform", low, high)
        if keys == {"meanMs", "stddevMs"}:
            return cls("normal", ms("meanMs"), ms("stddevMs"))
        raise Invalid(where, value, f"has the keys {', '.join(sorted(map(str, keys)))}; use exactly one of "
                                    f"{', '.join(LATENCY_FORMS)} (all in milliseconds, at most {MAX_LATENCY_MS})")


@dataclass(frozen=True)
class Rule:
    number: int  # 1-based, as listed
    operation: str | None
    route: str | None
    path_re: re.Pattern | None  # route rules: the request paths they match
    operations: tuple[str, ...]  # the operations the rule can apply to
    rate: float
    latency: Latency | None
    failure: int | str | None
    timeout_s: float
    retry_after_s: int | None

    def as_dict(self) -> dict:
        data: dict = {"operation": self.operation} if self.operation else {"route": self.route}
        data["rate"] = self.rate
        if self.latency:
            data["latency"] = self.latency.as_dict()
        if self.failure is not None:
            data["failure"] = self.failure
        if self.failure == "timeout":
            data["timeoutSeconds"] = self.timeout_s
        if self.retry_after_s is not None:
            data["retryAfterSeconds"] = self.retry_after_s
        data["appliesTo"] = list(self.operations)
        return data

    @property
    def holds_thread(self) -> bool:
        """Whether an answer under this rule waits (a latency, a timeout), holding the thread that serves it."""
        return (self.latency is not None and (self.latency.kind != "fixed" or self.latency.a > 0)) \
            or self.failure == "timeout"

    def describe(self) -> str:
        what = [self.latency.describe() if self.latency else "", str(self.failure) if self.failure else ""]
        target = self.operation or self.route
        return f"rule {self.number} ({target}: {' then '.join(w for w in what if w)}, rate {self.rate:g})"


@dataclass
class FaultSet:
    seed: int
    rules: tuple[Rule, ...]
    by_operation: dict[str, tuple[Rule, ...]] = field(default_factory=dict)
    rng: random.Random = field(default_factory=random.Random)

    def __post_init__(self):
        grouped: dict[str, list[Rule]] = {}
        for rule in self.rules:
            for op in rule.operations:
                grouped.setdefault(op, []).append(rule)
        self.by_operation = {op: tuple(rules) for op, rules in grouped.items()}
        self.rng = random.Random(f"faults:{self.seed}")

    def as_dict(self) -> dict:
        return {"seed": self.seed, "rules": [r.as_dict() for r in self.rules]}

    def stored(self) -> str:
        """What the store keeps: the set as given (without the derived appliesTo)."""
        return orjson.dumps({"seed": self.seed, "rules": [
            {k: v for k, v in r.as_dict().items() if k != "appliesTo"} for r in self.rules]}).decode()

    def draw(self, rules: tuple[Rule, ...], path: str) -> tuple[float, Rule | None]:
        """(added latency in ms, the failure to answer with or None) for one call to PATH, given the RULES of its
        operation (by_operation). Every rule that matches is drawn, in order: the latencies of those that fire add
        up, and the first failure that fires is the answer."""
        delay, failure = 0.0, None
        for rule in rules:
            if rule.path_re is not None and rule.path_re.fullmatch(path) is None:
                continue
            if rule.rate < 1 and not self.rng.random() < rule.rate:
                continue
            if rule.latency is not None:
                delay += rule.latency.draw(self.rng)
            if failure is None and rule.failure is not None:
                failure = rule
        return delay, failure


EMPTY = FaultSet(0, ())


def _route_parts(route: Any, where: str) -> tuple[str | None, list[str]]:
    if not isinstance(route, str) or not route.strip() or len(route) > 500:
        raise Invalid(where, route, "must be a string (at most 500 characters) such as "
                                    "\"POST /api/v2/tasks/instances/*/retry\"")
    words = route.split()
    if len(words) == 1:
        method, path = None, words[0]
    elif len(words) == 2:
        method, path = words[0].upper(), words[1]
    else:
        raise Invalid(where, route, "must be \"METHOD /path\" or \"/path\" (one space, no query string)")
    if method == "*":
        method = None
    if method is not None and method.lower() not in HTTP_METHODS:
        raise Invalid(where, route, f"{method} is not an HTTP method; use GET, POST, ... or *")
    if not path.startswith("/") or "?" in path or "//" in path:
        raise Invalid(where, route, "the path must start with / and hold no query string "
                                    "(* is one path segment, ** one or more, {name} is like *)")
    segments = path.strip("/").split("/") if path.strip("/") else []
    segments = [s for i, s in enumerate(segments) if not (s == "**" and i and segments[i - 1] == "**")]
    if segments.count("**") > 2:
        raise Invalid(where, route, "may hold ** at most twice")
    return method, segments


def _is_param(segment: str) -> bool:
    return segment.startswith("{") and segment.endswith("}")


def _segment_re(segment: str) -> str:
    if segment == "**":
        return "[^/]+(?:/[^/]+)*"
    if segment == "*" or _is_param(segment):
        return "[^/]+"
    if "*" in segment:
        return "[^/]*".join(re.escape(part) for part in segment.split("*"))
    return re.escape(segment)


def _could_match(pattern: list[str], template: list[str]) -> bool:
    """Whether a request path matched by PATTERN can route to the operation whose path is TEMPLATE."""
    if not pattern:
        return not template
    head = pattern[0]
    if head == "**":
        return any(_could_match(pattern[1:], template[i:]) for i in range(1, len(template) + 1))
    if not template:
        return False
    seg = template[0]
    fits = head == "*" or _is_param(head) or _is_param(seg) or re.fullmatch(_segment_re(head), seg) is not None
    return fits and _could_match(pattern[1:], template[1:])


def _failure(value: Any, where: str) -> int | str | None:
    """500, 502, 503 (also written as strings), drop, timeout, or None."""
    if value is None or value in ("drop", "timeout"):
        return value
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value in FAILURE_STATUSES:
        return value
    raise Invalid(where, value, f"must be one of {', '.join(map(str, FAILURES))}")


def parse_rule(value: Any, where: str, number_: int, spec: "Spec") -> Rule:
    check_keys(value, where, RULE_KEYS, "a fault rule (a mapping)")
    ops = spec.operations
    if ("operation" in value) == ("route" in value):
        raise Invalid(where, value, "needs exactly one of operation (an operationId, e.g. retrySubtask) or route "
                                    "(e.g. \"POST /api/v2/tasks/instances/*/retry\")")
    operation = route = path_re = None
    if "operation" in value:
        operation = value["operation"]
        if not isinstance(operation, str) or operation not in ops:
            raise Invalid(join(where, "operation"), operation,
                          f"is not an operationId of openapi.yaml; use one of {', '.join(sorted(ops))}")
        targets = (operation,)
    else:
        route = value["route"]
        method, segments = _route_parts(route, join(where, "route"))
        targets = tuple(op.operation_id for op in ops.values()
                        if method in (None, op.method) and _could_match(segments, op.path.strip("/").split("/")))
        if not targets:
            raise Invalid(join(where, "route"), route, "matches no operation of openapi.yaml; paths are e.g. " +
                          ", ".join(sorted({f'{op.method} {op.path}' for op in ops.values()})[:3]))
        path_re = re.compile("/" + "/".join(_segment_re(s) for s in segments))
    rate = float(number(value.get("rate", 1), join(where, "rate"), 0, 1))
    latency = Latency.parse(value["latency"], join(where, "latency")) if "latency" in value else None
    failure = _failure(value.get("failure"), join(where, "failure"))
    if latency is None and failure is None:
        raise Invalid(where, value, "needs latency, failure or both")
    timeout_s = DEFAULT_TIMEOUT_S
    if "timeoutSeconds" in value:
        if failure != "timeout":
            raise Invalid(join(where, "timeoutSeconds"), value["timeoutSeconds"], "only goes with failure: timeout")
        timeout_s = float(number(value["timeoutSeconds"], join(where, "timeoutSeconds"), 0.001, MAX_TIMEOUT_S))
    retry_after = None
    if "retryAfterSeconds" in value:
        if failure not in FAILURE_STATUSES:
            raise Invalid(join(where, "retryAfterSeconds"), value["retryAfterSeconds"],
                          "only goes with failure: 500, 502 or 503 (it sets the Retry-After header)")
        retry_after = int(number(value["retryAfterSeconds"], join(where, "retryAfterSeconds"), 0, MAX_RETRY_AFTER_S,
                                 integer=True))
    return Rule(number_, operation, route, path_re, targets, rate, latency, failure, timeout_s, retry_after)


def parse_faults(value: Any, where: str, spec: "Spec") -> FaultSet:
    """A FaultSet from `{seed, rules: [...]}` (or a bare list of rules, seed 0); raises Invalid."""
    if isinstance(value, list):
        value = {"rules": value}
    check_keys(value, where, ("seed", "rules"), "a mapping")
    seed = int(number(value.get("seed", 0), join(where, "seed"), 0, 2**63 - 1, integer=True))
    rules = value.get("rules", [])
    if not isinstance(rules, list):
        raise Invalid(join(where, "rules"), rules, "must be a list of rules")
    if len(rules) > MAX_RULES:
        raise Invalid(join(where, "rules"), len(rules), f"holds {len(rules)} rules; at most {MAX_RULES}")
    return FaultSet(seed, tuple(parse_rule(r, join(join(where, "rules"), i), i + 1, spec) for i, r in enumerate(rules)))


# ------------------------------------------------------------------------------------ the shared board

class FaultBoard:
    """This process's view of the fault set in force. Reads the store only when the shared change token moved."""

    def __init__(self, store, spec: "Spec", threads: int | None = None):
        self.store = store
        self.spec = spec
        self.threads = threads  # per worker (Config.threads): with 1, a slow rule is warned about
        fd = os.open(f"{store.path}-faults", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if os.fstat(fd).st_size < TOKEN_BYTES:
                os.ftruncate(fd, TOKEN_BYTES)
            self._token = mmap.mmap(fd, TOKEN_BYTES)
        finally:
            os.close(fd)
        self._state: tuple[bytes | None, FaultSet | None] = (None, None)  # (token seen, set; None: no fault)

    def current(self) -> FaultSet | None:
        """The fault set in force, or None when there is none (the common case: one 8-byte read)."""
        token = self._token[:TOKEN_BYTES]
        seen, faults = self._state
        if token == seen:
            return faults
        faults = self._load()
        self._state = (token, faults)  # one assignment: threads never see a token with another token's set
        if faults is not None and self.threads == 1:
            slow = [rule.describe() for rule in faults.rules if rule.holds_thread]
            if slow:
                log.warning("ocp-mock: fault %s %s the only thread of worker %d (--threads 1) while waiting: "
                            "every other call on that worker waits with it. Serve with --threads 2 or more to keep "
                            "them apart.", "; ".join(slow), "holds" if len(slow) == 1 else "hold", os.getpid())
        return faults

    def _load(self) -> FaultSet | None:
        raw = self.store.meta_value(META_KEY)
        if not raw:
            return None
        try:
            faults = parse_faults(orjson.loads(raw), "faults", self.spec)
        except (ValueError, orjson.JSONDecodeError) as exc:  # a state file from another spec: ignore, say why
            log.error("ignoring the stored fault set: %s", exc)
            return None
        return faults if faults.rules else None

    def changed(self) -> None:
        """Call after committing a change to the faults (or a reset of the world): every process reads them again."""
        self._token[:TOKEN_BYTES] = os.urandom(TOKEN_BYTES)

    def set(self, faults: FaultSet | None) -> None:
        """Replaces the fault set in force (None or an empty set: no faults), for every process."""
        self.store.transaction(lambda conn: self.write(conn, faults))
        self.changed()

    @staticmethod
    def write(conn, faults: FaultSet | None) -> None:
        """Inside a store transaction: stores FAULTS (the caller calls changed() after the commit)."""
        from .store import Store

        Store.set_meta(conn, META_KEY, (faults or EMPTY).stored())


# ------------------------------------------------------------------------------------ Prefer: code=...

def parse_prefer(header: str) -> tuple[int, int | None] | None:
    """(status, error code or None) from `Prefer: code=503` / `code=400, error=20003`; None when the header holds
    no `code` preference (other preferences are ignored, as RFC 7240 asks). Raises Invalid."""
    prefs: dict[str, str] = {}
    for part in header.split(","):
        item = part.split(";", 1)[0].strip()
        if item:
            name, _, value = item.partition("=")
            prefs[name.strip().lower()] = value.strip().strip('"')
    if "code" not in prefs:
        if "error" in prefs:
            raise Invalid("Prefer", header, "error= needs code=, e.g. Prefer: code=400, error=20003")
        return None
    code = prefs["code"]
    if not re.fullmatch(r"[1-5][0-9][0-9]", code):
        raise Invalid("Prefer", header, f"code={code} is not an HTTP status; write e.g. Prefer: code=500")
    error = prefs.get("error")
    if error is not None:
        if not re.fullmatch(r"-?[0-9]{1,10}", error) or not -(2**31) <= int(error) < 2**31:
            raise Invalid("Prefer", header, f"error={error} is not an OCP error code (an int32), e.g. error=20003")
        if code.startswith("2"):
            raise Invalid("Prefer", header, f"error= goes with an error status, not code={code}")
    return int(code), None if error is None else int(error)


class Examples:
    """The spec's examples per (operation, status): the bodies forced answers are made from."""

    def __init__(self, spec: "Spec"):
        self._by: dict[tuple[str, int], list[dict]] = {}
        for op in spec.operations.values():
            raw = spec.resolve(spec.raw["paths"][op.path])[op.method.lower()]
            for status, response in raw.get("responses", {}).items():
                if not str(status).isdigit():
                    continue
                media = spec.resolve(response).get("content", {}).get("application/json", {})
                bodies = [media["example"]] if "example" in media else []
                bodies += [spec.resolve(e).get("value") for e in media.get("examples", {}).values()]
                self._by[(op.operation_id, int(status))] = [b for b in bodies if isinstance(b, dict)]

    def declared(self, op: "Operation") -> list[int]:
        return sorted(s for (o, s) in self._by if o == op.operation_id)

    def error(self, op: "Operation", status: int, code: int | None) -> dict:
        """The error object of a forced STATUS: the example's with that code if any, else the first example's
        message (with CODE), else a plain message."""
        errors = [b["error"] for b in self._by.get((op.operation_id, status), []) if isinstance(b.get("error"), dict)]
        same = [e for e in errors if code is None or e.get("code") == code]
        if same:
            return dict(same[0])
        if errors:
            return {"code": code, "message": errors[0].get("message", "")}
        return {"code": CODE_GENERIC if code is None else code, "message": f"Status {status} forced by the Prefer header."}

    def success(self, op: "Operation", status: int) -> dict | None:
        bodies = self._by.get((op.operation_id, status), [])
        return bodies[0] if bodies else None


# --------------------------------------------------------------------------------------- the request path

class DroppedConnection(ConnectionAbortedError):
    """Raised to WSGI servers other than granian (and to Flask's test client) by a dropped answer's body."""


class DropBody:
    """The body of a dropped answer. Granian has sent the head (with a Content-Length) by the time it asks for the
    first chunk; a chunk that is not bytes ends the body there, and since the Content-Length is not met the server
    closes the connection. Other servers get DroppedConnection, and abort the connection their own way."""

    def __init__(self, granian: bool):
        self.granian = granian

    def __iter__(self):
        return self

    def __next__(self):
        if self.granian:
            time.sleep(HEAD_FLUSH_S)  # the head is flushed while the body is pending: the client always gets it
            return None
        raise DroppedConnection("the mock dropped the connection (an injected fault)")

    def close(self) -> None:
        pass


def _marked(response: Response, what: str) -> Response:
    response.headers[INJECTED_HEADER] = f"{what}; worker {os.getpid()}"
    return response


def make_interceptor(mock: "Mock", board: FaultBoard):
    operations = mock.spec.operations
    examples = Examples(mock.spec)

    def failure_answer(rule: Rule, environ: dict) -> Response:
        if rule.failure == "timeout":
            time.sleep(rule.timeout_s)
        if rule.failure in ("drop", "timeout"):
            g.ocp_injected = "drop"
            response = Response(DropBody(environ.get("SERVER_SOFTWARE") == "Granian"), status=200,
                                direct_passthrough=True, headers={"Content-Type": "application/json",
                                                                  "Content-Length": str(DROP_CONTENT_LENGTH)})
            return _marked(response, f"fault {rule.number} ({rule.failure})")
        g.ocp_injected = "error"
        headers = {} if rule.retry_after_s is None else {"Retry-After": str(rule.retry_after_s)}
        error = OcpError(rule.failure, CODE_GENERIC, FAILURE_MESSAGES[rule.failure], headers=headers,
                         extra={"debugMessage": f"Injected by ocp-mock: fault {rule.describe()}."})
        return _marked(mock.failure(error), f"fault {rule.number} ({rule.failure})")

    def forced(op: "Operation", header: str, status: int, code: int | None) -> Response:
        declared = examples.declared(op)
        if status not in declared:
            raise Invalid("Prefer", header, f"code={status} is not declared for {op.operation_id}; "
                                            f"declared: {', '.join(map(str, declared))}").as_ocp_error()
        what = f"prefer code={status}" + ("" if code is None else f", error={code}")
        if status >= 300:
            error = examples.error(op, status, code)
            extra = {k: v for k, v in error.items() if k not in ("code", "message")}
            headers = {"WWW-Authenticate": 'Basic realm="ocp"'} if status == 401 else {}
            return _marked(mock.failure(OcpError(status, error["code"], error["message"], extra=extra,
                                                 headers=headers)), what)
        # A 2xx: the normal answer, computed in a transaction that is rolled back (the world does not change).
        reason = "the call answered another status"
        with mock.store.dry_run():
            try:
                response = current_app.view_functions[request.endpoint](**(request.view_args or {}))
                if response.status_code == status:
                    return _marked(response, what)
            except OcpError as exc:
                reason = f"the call cannot succeed now: {exc.message}"
        example = examples.success(op, status) or {}
        data = example.get("data")
        return _marked(mock.success(status, None if data is None else dump_data(data)),
                       f"{what}; the spec's example ({reason})")

    def intercept(environ: dict) -> Response | None:
        faults = board.current()
        prefer = environ.get("HTTP_PREFER")
        if faults is None and prefer is None:
            return None
        req = request._get_current_object()
        op = operations.get(req.endpoint)  # None: the admin API (endpoints "blueprint.name"), a path the API lacks
        if op is None:
            return None
        rules = faults.by_operation.get(op.operation_id) if faults is not None else None
        if rules is None and prefer is None:
            return None
        delay, failure = faults.draw(rules, req.path) if rules else (0.0, None)
        if delay > 0:
            time.sleep(delay / 1000)
        if prefer is not None:
            try:
                wanted = parse_prefer(prefer)
            except Invalid as exc:
                raise exc.as_ocp_error() from None
            if wanted is not None:
                return forced(op, prefer, *wanted)
        if failure is not None:
            return failure_answer(failure, environ)
        return None

    return intercept


INTERCEPT = "ocp_mock.intercept"
BOARD = "ocp_mock.faults"


def init_app(app: "Flask", mock: "Mock") -> None:
    """Wires the faults and the Prefer header into the request path (app.py's before-request hook calls
    app.extensions[INTERCEPT]) and lets every process notice a reset of the world."""
    board = FaultBoard(mock.store, mock.spec, mock.config.threads)
    app.extensions[BOARD] = board
    app.extensions[INTERCEPT] = make_interceptor(mock, board)
    mock.after_reset.append(board.changed)  # a reset clears the stored faults: every process must notice
