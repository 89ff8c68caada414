"""OCP's rules as small checks. A check looks at one exchange (request description, status, headers, body)
and the contract, and either returns None (passed), returns NOT_APPLICABLE, or raises CheckFailure
carrying what was expected and what came back. No I/O, no printing: the runner and reports do that.

Three families:
- RESPONSE_CHECKS run on every response of every phase (the envelope, content type, enums, times, the
  400 rule, paging arithmetic, list filters, the subtask graph, and validation against the spec).
- FIXTURE_CHECKS judge the answers to the runner's fixture requests (retry semantics, auth, permissions, the
  refusals of the task family's actions).
- CROSS_CHECKS compare two answers (a task's list row and its detail).

Nothing here registers with schemathesis; `contracts.st_checks` does that on import.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson

from .spec import Contract

NOT_APPLICABLE = "not applicable"  # truthy, so schemathesis reads it as "skipped"

# OCP's error codes (they live only in the spec's prose, so they are named here, once).
CODE_GENERIC = 0
TASK_NOT_EXISTS = 20000
TASK_STATE_INVALID = 20003
TASK_PROHIBIT_ROLLBACK = 20004
NO_PERMISSION = 30014
# The lifecycle values the retry rules talk about.
FAILED, RETRY = "FAILED", "RETRY"
TIME_ORDER = ("createTime", "startTime", "finishTime")
# Names whose meaning lives in the spec's prose: a page (`data.contents` + `data.page`), the query parameters that
# choose it, the list filters, a task's subtasks and the two sides of their graph, a subtask's log.
CONTENTS, PAGE = "contents", "page"
PAGE_NUMBER, PAGE_SIZE, TOTAL_ELEMENTS, TOTAL_PAGES = "number", "size", "totalElements", "totalPages"
PAGE_PARAM, SIZE_PARAM = "page", "size"
NAME_FILTER = "name"  # "tasks whose name contains it (case-insensitive)"; other filters that name a row property: equal
SUBTASKS, UPSTREAMS, DOWNSTREAMS = "subtasks", "upstreams", "downstreams"
LOG = "log"

JSON = "application/json"
TRACE_ID = re.compile(r"[0-9a-f]{16}\Z")
# RFC 3339 section 5.6 date-time: the offset is mandatory ("Z" or +hh:mm/-hh:mm).
RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})\Z"
)


NOT_JSON = object()  # Exchange.json when the body does not parse
_ABSENT = object()


class CheckFailure(AssertionError):
    """One rule broken by one response."""

    def __init__(self, expected: str, received: str, check: str = ""):
        self.check = check
        self.expected = expected
        self.received = received
        super().__init__(f"Expected: {expected}\nReceived: {received}")


@dataclass(frozen=True)
class RequestInfo:
    """What was sent, as far as the checks care."""

    method: str
    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    operation: str | None = None  # operationId of the declared operation hit; None for an undeclared method
    path_parameters: Mapping[str, str] = field(default_factory=dict)  # as written in the URL
    valid: bool | None = None  # schema-valid with accepted credentials; None when it cannot be told
    phase: str = ""


class Exchange:
    """One request and the response to it: the (request, status, headers, body) tuple checks work on."""

    def __init__(self, request: RequestInfo, status: int, headers: Mapping[str, str], body: bytes | str):
        self.request = request
        self.status = status
        self.headers = {k.lower(): v for k, v in headers.items()}
        self.body = body.encode() if isinstance(body, str) else bytes(body)

    @cached_property
    def json(self) -> Any:
        """The parsed body, or NOT_JSON."""
        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError:
            return NOT_JSON

    @property
    def media_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip().lower()

    @property
    def bodiless(self) -> bool:
        """HTTP forbids a body here (HEAD, 1xx, 204, 304): the envelope rules do not apply."""
        return self.request.method == "HEAD" or self.status < 200 or self.status in (204, 304)

    @property
    def envelope(self) -> dict | None:
        return self.json if isinstance(self.json, dict) else None

    def excerpt(self, limit: int = 300) -> str:
        text = self.body.decode("utf-8", "replace")
        return text if len(text) <= limit else text[:limit] + "…"

    @classmethod
    def from_schemathesis(cls, case, response, contract: Contract) -> "Exchange":
        """The exchange for a schemathesis (case, response) pair (duck-typed: no schemathesis import here)."""
        op = contract.find(case.operation.method, case.operation.path)
        same_method = op is not None and case.method.upper() == op.method
        params = {name: str(value) for name, value in (case.path_parameters or {}).items()}
        generation = getattr(case.meta, "generation", None)
        positive = str(getattr(getattr(generation, "mode", None), "value", "")) == "positive"
        request = RequestInfo(
            method=case.method.upper(),
            url=response.request.url,
            headers=dict(response.request.headers),
            operation=op.operation_id if same_method else None,
            path_parameters=params,
            # a positive case carries the configured credentials; it is valid when its ids are canonical
            valid=bool(same_method and positive and contract.parameters_valid(op, params)),
            phase=str(getattr(getattr(case.meta, "phase", None), "name", "") or ""),
        )
        headers = {name: values[0] for name, values in response.headers.items() if values}
        return cls(request, response.status_code, headers, response.content)


Check = Callable[[Exchange, Contract], Any]


def _show(value: Any) -> str:
    return "(absent)" if value is _ABSENT else orjson.dumps(value, default=repr).decode()


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_rfc3339(text: Any) -> datetime | None:
    """The instant TEXT names when it is an RFC 3339 date-time with an offset, else None."""
    if not isinstance(text, str):
        return None
    return _parse_rfc3339(text)


@functools.lru_cache(maxsize=4096)  # two checks parse every time of every response, and times repeat across pages
def _parse_rfc3339(text: str) -> datetime | None:
    match = RFC3339.match(text)
    if not match:
        return None
    normalised = text.upper().replace("Z", "+00:00")
    if match.group(6) == "60":  # a leap second is valid RFC 3339; Python cannot represent it
        normalised = normalised[:17] + "59" + normalised[19:]
    try:
        return datetime.fromisoformat(normalised)
    except ValueError:
        return None


# -- response checks ------------------------------------------------------------------------------


def ocp_json_content_type(ex: Exchange, contract: Contract):
    """Every response, errors included, is sent as application/json."""
    if ex.bodiless:
        return NOT_APPLICABLE
    if ex.media_type != JSON:
        raise CheckFailure(f"Content-Type {JSON}", repr(ex.headers.get("content-type", "(none)")))


def ocp_envelope_fields(ex: Exchange, contract: Contract):
    """The body is a JSON object carrying every field the spec's Envelope requires."""
    if ex.bodiless:
        return NOT_APPLICABLE
    body = ex.envelope
    if body is None:
        raise CheckFailure("a JSON object (OCP's envelope)", f"not a JSON object: {ex.excerpt(120)!r}")
    missing = [name for name in contract.envelope_required if name not in body]
    if missing:
        raise CheckFailure(
            f"envelope fields {', '.join(contract.envelope_required)}", f"missing {', '.join(missing)}"
        )


def ocp_envelope_status(ex: Exchange, contract: Contract):
    """The envelope's `status` equals the HTTP status."""
    body = ex.envelope
    if body is None or "status" not in body:
        return NOT_APPLICABLE
    if not _is_int(body["status"]) or body["status"] != ex.status:
        raise CheckFailure(f"status {ex.status} (the HTTP status)", f"status {_show(body['status'])}")


def ocp_envelope_successful(ex: Exchange, contract: Contract):
    """`successful` is true exactly when the HTTP status is 2xx."""
    body = ex.envelope
    if body is None or "successful" not in body:
        return NOT_APPLICABLE
    expected = 200 <= ex.status < 300
    if body["successful"] is not expected:
        raise CheckFailure(
            f"successful {str(expected).lower()} (HTTP {ex.status})", f"successful {_show(body['successful'])}"
        )


def ocp_envelope_payload(ex: Exchange, contract: Contract):
    """A success carries no `error`, and `data` wherever the spec's schema requires it (operations that
    return nothing, such as skipSubtask, send no `data`); a failure carries `error` (an object with an
    integer `code`) and no `data`."""
    body = ex.envelope
    if body is None:
        return NOT_APPLICABLE
    if 200 <= ex.status < 300:
        schema = _declared_schema(ex, contract)
        needs_data = schema is not None and "data" in contract.required(schema)
        if "error" in body or (needs_data and "data" not in body):
            expected = "`data` and no `error`" if needs_data else "no `error`"
            raise CheckFailure(f"{expected} on HTTP {ex.status}", f"fields {', '.join(sorted(body))}")
        return None
    error = body.get("error", _ABSENT)
    if "data" in body or not isinstance(error, dict) or not _is_int(error.get("code")):
        code = error.get("code", _ABSENT) if isinstance(error, dict) else _ABSENT
        raise CheckFailure(
            f"`error` with an integer `code` and no `data` on HTTP {ex.status}",
            f"error {_show(error) if not isinstance(error, dict) else 'code ' + _show(code)}"
            + (", and `data`" if "data" in body else ""),
        )


def ocp_trace_id(ex: Exchange, contract: Contract):
    """`traceId` is 16 lower-case hexadecimal characters."""
    body = ex.envelope
    if body is None or "traceId" not in body:
        return NOT_APPLICABLE
    value = body["traceId"]
    if not isinstance(value, str) or not TRACE_ID.match(value):
        raise CheckFailure("traceId of 16 lower-case hex characters", f"traceId {_show(value)}")


def ocp_timestamp_format(ex: Exchange, contract: Contract):
    """The envelope's `timestamp`, and every body field the spec types `format: date-time`, is an RFC 3339
    date-time with an offset (checked here explicitly: validators often skip formats)."""
    body = ex.envelope
    if body is None:
        return NOT_APPLICABLE
    values = {"/timestamp": body["timestamp"]} if "timestamp" in body else {}
    for where, sub, value in _nodes(ex, contract) or ():
        if sub.get("format") == "date-time":
            values[where] = value
    if not values:
        return NOT_APPLICABLE
    bad = {where: value for where, value in values.items() if parse_rfc3339(value) is None}
    if bad:
        where, value = next(iter(bad.items()))
        raise CheckFailure(
            "RFC 3339 date-times with an offset, e.g. 2021-08-25T15:09:35.626+08:00", f"{where} = {_show(value)}"
        )


def ocp_duration(ex: Exchange, contract: Contract):
    """`duration` is a non-negative integer (milliseconds)."""
    body = ex.envelope
    if body is None or "duration" not in body:
        return NOT_APPLICABLE
    value = body["duration"]
    if not _is_int(value) or value < 0:
        raise CheckFailure("duration a non-negative integer", f"duration {_show(value)}")


def ocp_server_id(ex: Exchange, contract: Contract):
    """`server` is a non-empty string."""
    body = ex.envelope
    if body is None or "server" not in body:
        return NOT_APPLICABLE
    value = body["server"]
    if not isinstance(value, str) or not value:
        raise CheckFailure("server a non-empty string", f"server {_show(value)}")


def ocp_time_order(ex: Exchange, contract: Contract):
    """In `data` and every object inside it (a subtask, a task and each of its subtasks, a list row):
    createTime <= startTime <= finishTime, for those present."""
    body = ex.envelope
    subjects = [node for node in _objects((body or {}).get("data")) if sum(k in node for k in TIME_ORDER) >= 2]
    if not subjects:
        return NOT_APPLICABLE
    for node in subjects:
        times = [(k, parse_rfc3339(node[k])) for k in TIME_ORDER if k in node]
        times = [(k, t) for k, t in times if t is not None]  # unparsable ones are ocp_timestamp_format's
        for (k1, t1), (k2, t2) in zip(times, times[1:]):
            if t1 > t2:
                raise CheckFailure(f"{k1} <= {k2}", f"{k1} {node[k1]} is after {k2} {node[k2]}")
    return None


def ocp_enum_values(ex: Exchange, contract: Contract):
    """Every value the spec types as an enum is exactly one of the listed values (case matters)."""
    nodes = _nodes(ex, contract)
    if nodes is None:
        return NOT_APPLICABLE
    seen = False
    for where, sub, value in nodes:
        if "enum" in sub:
            seen = True
            if value not in sub["enum"]:
                raise CheckFailure(f"{where} one of {', '.join(map(str, sub['enum']))}", f"{where} = {_show(value)}")
    return None if seen else NOT_APPLICABLE


def ocp_business_rule_400(ex: Exchange, contract: Contract):
    """A 400 with error.code 0 is a validation failure and names what it rejected in `subErrors`; a
    schema-valid request refused with 400 is a business-rule refusal and carries a domain code (e.g. 20003)."""
    error = (ex.envelope or {}).get("error")
    if ex.status != 400 or not isinstance(error, dict) or not _is_int(error.get("code")):
        return NOT_APPLICABLE
    if error["code"] != CODE_GENERIC:
        return None
    if ex.request.valid:
        raise CheckFailure(
            "a schema-valid request is not refused as invalid: a domain error code such as "
            f"{TASK_STATE_INVALID} if a business rule refuses it",
            f"400 with error.code 0 for {ex.request.method} {ex.request.url}",
        )
    sub_errors = error.get("subErrors")
    if not isinstance(sub_errors, list) or not sub_errors:
        raise CheckFailure("error.subErrors naming the rejected parameter on a 400 with code 0",
                           f"subErrors {_show(error.get('subErrors', _ABSENT))}")
    return None


def _page_of(ex: Exchange, contract: Contract):
    """(operation, data) when EX is a 2xx answer of an operation whose data the spec declares as a page
    (`contents` + `page`), else None."""
    op = contract.operation(ex.request.operation)
    if op is None or not 200 <= ex.status < 300:
        return None
    props = contract.properties(contract.data_schema(op, ex.status) or {})
    data = (ex.envelope or {}).get("data")
    if CONTENTS not in props or PAGE not in props or not isinstance(data, dict):
        return None
    return op, data


def ocp_paging(ex: Exchange, contract: Contract):
    """A page adds up: `page.number` and `page.size` are the requested ones (the spec's defaults when left out),
    `totalPages` = ceil(`totalElements` / `size`), and `contents` holds exactly the rows that page can hold: `size`
    on a full page, the rest on the last one, none past the end."""
    found = _page_of(ex, contract)
    if found is None:
        return NOT_APPLICABLE
    op, data = found
    page, contents = data.get(PAGE), data.get(CONTENTS)
    keys = (PAGE_NUMBER, PAGE_SIZE, TOTAL_ELEMENTS, TOTAL_PAGES)
    fields = [page.get(k) for k in keys] if isinstance(page, dict) else []
    requested = contract.query_values(op, ex.request.url)
    if not isinstance(contents, list) or not fields or not all(_is_int(v) for v in fields) or requested is None:
        return NOT_APPLICABLE  # the shape is spec_body_schema's; an invalid request is negative_data_rejection's
    number, size, total, pages = fields
    for param, got, key in ((PAGE_PARAM, number, PAGE_NUMBER), (SIZE_PARAM, size, PAGE_SIZE)):
        if param in requested and got != requested[param]:
            raise CheckFailure(f"page.{key} {requested[param]} (the requested {param})", f"page.{key} {got}")
    if size < 1:
        return NOT_APPLICABLE  # an impossible size is the schema's finding
    if pages != -(-total // size):
        raise CheckFailure(
            f"page.totalPages = ceil(totalElements / size) = ceil({total} / {size}) = {-(-total // size)}",
            f"page.totalPages {pages}",
        )
    expected = max(0, min(size, total - (number - 1) * size))
    if len(contents) != expected:
        where = "past the last page" if expected == 0 else f"on page {number} of {pages}"
        raise CheckFailure(
            f"{expected} row(s) {where} ({total} in all, {size} a page)", f"{len(contents)} row(s) in data.contents"
        )
    return None


def ocp_list_filters(ex: Exchange, contract: Contract):
    """Every row of a filtered page matches the filters: a filter that names a row property (`status`) equals it,
    and the row's `name` contains the `name` filter, case-insensitively (judged for ASCII filters only, where
    case-insensitive has one meaning)."""
    found = _page_of(ex, contract)
    if found is None:
        return NOT_APPLICABLE
    op, data = found
    rows = data.get(CONTENTS)
    sent = {name for name, _ in parse_qsl(urlsplit(ex.request.url).query, keep_blank_values=True)}
    requested = contract.query_values(op, ex.request.url)
    row_props = contract.properties(contract.items_schema(contract.data_schema(op, ex.status), CONTENTS) or {})
    if not isinstance(rows, list) or requested is None:
        return NOT_APPLICABLE
    filters = {k: v for k, v in requested.items() if k in sent and k in row_props}
    if NAME_FILTER in filters and not filters[NAME_FILTER].isascii():
        del filters[NAME_FILTER]
    if not filters or not rows:
        return NOT_APPLICABLE
    for index, row in enumerate(rows):
        if not isinstance(row, dict):
            continue
        for name, wanted in filters.items():
            got = row.get(name, _ABSENT)
            if name == NAME_FILTER:
                if not isinstance(got, str) or wanted.lower() not in got.lower():
                    raise CheckFailure(f"every row's {name} contains {wanted!r} (any case)",
                                       f"contents/{index}/{name} = {_show(got)}")  # fmt: skip
            elif got != wanted:
                raise CheckFailure(f"every row's {name} {_show(wanted)} (the filter)",
                                   f"contents/{index}/{name} = {_show(got)}")  # fmt: skip
    return None


def _long(value: Any) -> Any:
    """A Long as a comparable key: 10001 and "10001" are the same id."""
    if isinstance(value, str) and re.fullmatch(r"-?[0-9]+", value):
        return int(value)
    return value if _is_int(value) else repr(value)


def ocp_subtask_links(ex: Exchange, contract: Contract):
    """Inside one task the subtask graph is symmetric: B is among A's downstreams exactly when A is among B's
    upstreams, and every upstream and downstream is a subtask of the same task."""
    nodes = _nodes(ex, contract)
    if nodes is None:
        return NOT_APPLICABLE
    seen = False
    for where, sub, value in nodes:
        if not isinstance(value, dict):
            continue
        items = contract.items_schema(sub, SUBTASKS)
        if items is None:
            continue
        if not {UPSTREAMS, DOWNSTREAMS} <= set(contract.properties(items)):
            continue
        subtasks = [s for s in value.get(SUBTASKS) or [] if isinstance(s, dict) and "id" in s]
        sides = {
            _long(s["id"]): {side: [_long(i) for i in s.get(side) or [] if not isinstance(i, (dict, list))]
                             for side in (UPSTREAMS, DOWNSTREAMS)}
            for s in subtasks
        }  # fmt: skip
        seen = seen or bool(sides)
        for sid, links in sides.items():
            for side, other_side in ((UPSTREAMS, DOWNSTREAMS), (DOWNSTREAMS, UPSTREAMS)):
                for other in links[side]:
                    if other not in sides:
                        task = _show(value.get("id", _ABSENT))
                        raise CheckFailure(f"the {side} of subtask {sid} are subtasks of task {task}",
                                           f"{where}/{SUBTASKS}: subtask {sid} names {other} among its {side}, not a "
                                           "subtask of this task")  # fmt: skip
                    if sid not in sides[other][other_side]:
                        raise CheckFailure(f"subtask {other} lists {sid} among its {other_side} ({sid} lists {other} "
                                           f"among its {side})",
                                           f"{where}/{SUBTASKS}: subtask {other} has {other_side} "
                                           f"{_show(sides[other][other_side])}")  # fmt: skip
    return None if seen else NOT_APPLICABLE


def spec_status_declared(ex: Exchange, contract: Contract):
    """The status is one the spec declares for the operation."""
    op = contract.operation(ex.request.operation)
    if op is None:
        return NOT_APPLICABLE
    if op.response(ex.status) is None:
        raise CheckFailure(f"one of {', '.join(op.responses)} for {op.label}", str(ex.status))


def spec_content_type(ex: Exchange, contract: Contract):
    """The Content-Type is one the spec declares for that status."""
    op = contract.operation(ex.request.operation)
    content = ((op.response(ex.status) if op else None) or {}).get("content")
    if not content:
        return NOT_APPLICABLE
    declared = [t.split(";")[0].strip().lower() for t in content]
    if ex.media_type not in declared:
        raise CheckFailure(f"Content-Type {' or '.join(declared)}", repr(ex.headers.get("content-type", "(none)")))


def spec_body_schema(ex: Exchange, contract: Contract):
    """The body matches the schema the spec declares for that status."""
    schema = _declared_schema(ex, contract)
    if schema is None:
        return NOT_APPLICABLE
    if ex.json is NOT_JSON:
        raise CheckFailure(f"a JSON body matching the {ex.status} response schema", f"not JSON: {ex.excerpt(120)!r}")
    problem = contract.first_error(schema, ex.json)
    if problem:
        raise CheckFailure(f"a body matching the {ex.status} response schema", problem)


def _declared_schema(ex: Exchange, contract: Contract) -> dict | None:
    op = contract.operation(ex.request.operation)
    return contract.body_schema(op, ex.status, ex.media_type) if op else None


def _nodes(ex: Exchange, contract: Contract) -> list[tuple[str, dict, Any]] | None:
    """Contract.walk of EX's body over the schema declared for it, as a list, or None when there is no declared
    schema or no JSON object. Several checks read it: it is worked out once per exchange (and schema)."""
    schema, body = _declared_schema(ex, contract), ex.envelope
    if schema is None or body is None:
        return None
    cached = ex.__dict__.get("_walked")
    if cached is None or cached[0] is not schema or cached[1] is not body:
        cached = ex._walked = (schema, body, list(contract.walk(schema, body)))
    return cached[2]


def _objects(node: Any):
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _objects(value)
    elif isinstance(node, list):
        for value in node:
            yield from _objects(value)


RESPONSE_CHECKS: tuple[Check, ...] = (
    ocp_json_content_type,
    ocp_envelope_fields,
    ocp_envelope_status,
    ocp_envelope_successful,
    ocp_envelope_payload,
    ocp_trace_id,
    ocp_timestamp_format,
    ocp_duration,
    ocp_server_id,
    ocp_time_order,
    ocp_enum_values,
    ocp_business_rule_400,
    ocp_paging,
    ocp_list_filters,
    ocp_subtask_links,
    spec_status_declared,
    spec_content_type,
    spec_body_schema,
)


# -- fixture checks: the answer to one known request -------------------------------------------------


def _expect_error(ex: Exchange, status: int, code: int) -> None:
    error = (ex.envelope or {}).get("error")
    got_code = error.get("code", _ABSENT) if isinstance(error, dict) else _ABSENT
    if ex.status != status or got_code != code or not _is_int(got_code):
        got = f"with error.code {_show(got_code)}" if got_code is not _ABSENT else "without error.code"
        raise CheckFailure(f"HTTP {status} with error.code {code}", f"HTTP {ex.status} {got}")


def fixture_no_credentials(ex: Exchange, contract: Contract):
    """A retry without credentials, or with a wrong password, is refused with 401 (error.code 0)."""
    _expect_error(ex, 401, CODE_GENERIC)


def fixture_viewer_forbidden(ex: Exchange, contract: Contract):
    """A retry by a user without TASK_MANAGER is refused with 403 (error.code 30014) and changes nothing."""
    _expect_error(ex, 403, NO_PERMISSION)


def fixture_retry_failed(ex: Exchange, contract: Contract, subtask_id: int | None = None):
    """Retrying the FAILED fixture answers 200 with that subtask, operation RETRY and a status no longer FAILED."""
    data = (ex.envelope or {}).get("data")
    if ex.status != 200 or not isinstance(data, dict):
        code = ((ex.envelope or {}).get("error") or {}).get("code", _ABSENT)
        raise CheckFailure("HTTP 200 with the retried subtask in `data`", f"HTTP {ex.status}, error.code {_show(code)}")
    got = {"id": data.get("id", _ABSENT), "operation": data.get("operation", _ABSENT), "status": data.get("status", _ABSENT)}
    if subtask_id is not None and str(got["id"]) != str(subtask_id):
        raise CheckFailure(f"data.id {subtask_id}", f"data.id {_show(got['id'])}")
    if got["operation"] != RETRY or got["status"] == FAILED or got["status"] is _ABSENT:
        raise CheckFailure(
            f"data.operation {RETRY} and data.status no longer {FAILED}",
            f"data.operation {_show(got['operation'])}, data.status {_show(got['status'])}",
        )


def fixture_retry_again(ex: Exchange, contract: Contract):
    """Retrying the same subtask again (it is no longer FAILED) is refused with 400 (error.code 20003)."""
    _expect_error(ex, 400, TASK_STATE_INVALID)


def fixture_retry_non_failed(ex: Exchange, contract: Contract):
    """Retrying a subtask that is not FAILED is refused with 400 (error.code 20003)."""
    _expect_error(ex, 400, TASK_STATE_INVALID)


def fixture_unknown_subtask(ex: Exchange, contract: Contract):
    """Retrying a subtask that does not exist answers 404 (error.code 20000)."""
    _expect_error(ex, 404, TASK_NOT_EXISTS)


def fixture_skip_not_failed(ex: Exchange, contract: Contract):
    """Skipping a subtask that is not FAILED is refused with 400 (error.code 20003)."""
    _expect_error(ex, 400, TASK_STATE_INVALID)


def fixture_cancel_not_running(ex: Exchange, contract: Contract):
    """Cancelling a subtask that is not RUNNING is refused with 400 (error.code 20003)."""
    _expect_error(ex, 400, TASK_STATE_INVALID)


def fixture_subtask_log(ex: Exchange, contract: Contract):
    """The log of the FAILED fixture answers 200 with `data.log` a string."""
    data = (ex.envelope or {}).get("data")
    log = data.get(LOG, _ABSENT) if isinstance(data, dict) else _ABSENT
    if ex.status != 200 or not isinstance(log, str):
        raise CheckFailure(f"HTTP 200 with data.{LOG} a string", f"HTTP {ex.status}, data.{LOG} {_show(log)[:80]}")


def fixture_unknown_task(ex: Exchange, contract: Contract):
    """Getting a task that does not exist answers 404 (error.code 20000)."""
    _expect_error(ex, 404, TASK_NOT_EXISTS)


def fixture_task_not_failed(ex: Exchange, contract: Contract):
    """Retrying, or rolling back, a task that is not FAILED (a SUCCESSFUL one) is refused with 400 (error.code
    20003)."""
    _expect_error(ex, 400, TASK_STATE_INVALID)


def fixture_rollback_prohibited(ex: Exchange, contract: Contract):
    """Rolling back a FAILED task whose `prohibitRollback` is true is refused with 400 (error.code 20004)."""
    _expect_error(ex, 400, TASK_PROHIBIT_ROLLBACK)


FIXTURE_CHECKS: tuple[Check, ...] = (
    fixture_no_credentials,
    fixture_viewer_forbidden,
    fixture_retry_failed,
    fixture_retry_again,
    fixture_retry_non_failed,
    fixture_unknown_subtask,
    fixture_skip_not_failed,
    fixture_cancel_not_running,
    fixture_subtask_log,
    fixture_unknown_task,
    fixture_task_not_failed,
    fixture_rollback_prohibited,
)


# -- cross checks: two answers that must agree ---------------------------------------------------------


def ocp_list_row_matches_detail(ex: Exchange, contract: Contract, row: dict | None = None,
                                row_again: dict | None = None, list_operation: str = "listTaskInstances"):
    """A task's list row agrees with its detail (getTaskInstance): every property the row declares that the
    detail declares too has the same value, and the row's subtasks are the detail's, in the same order, with the
    same values. The row is fetched twice, before and after the detail; a value that changed between the two
    (the task moved on) is not compared (ROW_AGAIN None: the task is known to stand still, compare everything)."""
    list_op, detail_op = contract.operation(list_operation), contract.operation(ex.request.operation)
    detail = (ex.envelope or {}).get("data")
    if not isinstance(row, dict) or list_op is None or detail_op is None:
        return NOT_APPLICABLE
    task = _show(row.get("id", _ABSENT))
    if ex.status != 200 or not isinstance(detail, dict):
        raise CheckFailure(f"HTTP 200 with the detail of listed task {task}", f"HTTP {ex.status}")
    row_schema = contract.items_schema(contract.data_schema(list_op), CONTENTS) or {}
    detail_props = contract.properties(contract.data_schema(detail_op) or {})
    again = row_again if isinstance(row_again, dict) else row

    def compare(props: dict, mine: dict, mine_again: dict, theirs: dict, where: str) -> None:
        for name, schema in props.items():
            if name not in detail_props or name == SUBTASKS:
                continue
            value, value_again = mine.get(name, _ABSENT), mine_again.get(name, _ABSENT)
            if value != value_again:
                continue  # it moved while we looked
            got = theirs.get(name, _ABSENT)
            if got != value:
                raise CheckFailure(
                    f"the detail of listed task {task} agrees with its row: {where}{name} {_show(value)}",
                    f"{where}{name} {_show(got)} in the detail",
                )

    compare(contract.properties(row_schema), row, again, detail, "")
    sub_props = contract.properties(contract.items_schema(row_schema, SUBTASKS) or {})
    rows_subs, detail_subs = row.get(SUBTASKS), detail.get(SUBTASKS)
    if sub_props and isinstance(rows_subs, list) and isinstance(detail_subs, list):
        ids = [_long(s.get("id")) if isinstance(s, dict) else None for s in rows_subs]
        detail_ids = [_long(s.get("id")) if isinstance(s, dict) else None for s in detail_subs]
        if ids != detail_ids:
            raise CheckFailure(f"the detail of listed task {task} has the row's subtasks in the row's order: {ids}",
                               f"subtasks {detail_ids} in the detail")  # fmt: skip
        again_subs = again.get(SUBTASKS) if isinstance(again.get(SUBTASKS), list) else rows_subs
        for index, (mine, theirs) in enumerate(zip(rows_subs, detail_subs)):
            mine_again = again_subs[index] if index < len(again_subs) and isinstance(again_subs[index], dict) else mine
            if isinstance(mine, dict) and isinstance(theirs, dict):
                compare(sub_props, mine, mine_again, theirs, f"subtasks/{index} (id {ids[index]}) ")
    return None


CROSS_CHECKS: tuple[Check, ...] = (ocp_list_row_matches_detail,)


def describe(check: Callable) -> str:
    """The one-paragraph description of a check: its docstring, on one line."""
    return " ".join((check.__doc__ or "").split())


def run_check(check: Check, ex: Exchange, contract: Contract, **kwargs) -> CheckFailure | str | None:
    """Runs CHECK: None (passed), NOT_APPLICABLE, or the CheckFailure, named after the check."""
    try:
        outcome = check(ex, contract, **kwargs)
    except CheckFailure as failure:
        failure.check = failure.check or check.__name__
        return failure
    return NOT_APPLICABLE if outcome == NOT_APPLICABLE else None
