"""The conformance run: six phases against one server, returning a Result. Nothing here prints; progress
goes to an optional callback (the CLI writes it to stderr).

1 preflight    the server answers and accepts the credentials (otherwise: could not test, exit 2)
2 discovery    the fixtures: the ids given, or found through the read endpoints (a FAILED task, its FAILED
               subtask and a non-FAILED sibling), plus a SUCCESSFUL task and a rollback-prohibited one if any
3 fixtures     OCP semantics on the fixtures, before anything else can disturb them
4 consistency  paging and list rows against task details, with a few GETs
5 fuzzing      schemathesis over the spec, positive and negative, its built-in checks on; the fixture ids
               are kept out of every generated request
6 responses    every response of every phase gets the OCP checks and is validated against the spec
"""

from __future__ import annotations

import importlib.util
import random
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from http.cookiejar import DefaultCookiePolicy
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import requests

from . import checks
from .checks import Exchange, RequestInfo
from .result import (
    COULD_NOT_TEST,
    CheckResult,
    Finding,
    PhaseStat,
    Result,
    Secrets,
    curl_line,
    finding_for,
    redacted_request,
)
from .spec import Contract, SpecError

# The operations the runner calls by name (the spec declares them; a spec without the optional ones only loses
# the checks that need them).
RETRY_OPERATION = "retrySubtask"
LIST_OPERATION, GET_OPERATION = "listTaskInstances", "getTaskInstance"
SKIP_OPERATION, CANCEL_OPERATION, LOG_OPERATION = "skipSubtask", "cancelSubtask", "getSubtaskLog"
TASK_RETRY_OPERATION, TASK_ROLLBACK_OPERATION = "retryTask", "rollbackTask"
TASK_PARAM, SUBTASK_PARAM = "taskInstanceId", "subtaskInstanceId"
# The lifecycle values discovery reasons with (the spec's prose: task status follows its subtasks).
FAILED, SUCCESSFUL, ROLLBACK = "FAILED", "SUCCESSFUL", "ROLLBACK"
IN_MOTION = frozenset({"READY", "RUNNING", "CANCELING"})  # a subtask the server moves on by itself
OLDEST_FIRST = "id,asc"

DEFAULT_MAX_EXAMPLES = 100  # generated requests per operation in the fuzzing phase
STATEFUL_SHARE = 4  # the stateful phase runs max_examples // STATEFUL_SHARE scenarios
UNKNOWN_SUBTASK_ID = 2**62  # an int64 no OCP deployment has reached
WRONG_PASSWORD = "ocp-contract-wrong-password"
DISCOVERY_PAGE_SIZE = 20  # rows of the FAILED (or SUCCESSFUL) list discovery looks at
MAX_DETAILS = 5  # task details discovery reads, at most
SCAN_PAGE_SIZE, MAX_SCAN_PAGES = 100, 10  # to find the task holding a given subtask
CONSISTENCY_PAGE_SIZE = 3  # rows compared with their details; small, so the last page is usually partial
# schemathesis' built-in checks, all of them (max_response_time needs a limit, so it is off), with what each
# requires (most have no docstring to read that from).
BUILTIN_CHECKS = {
    "not_a_server_error": "no 5xx response",
    "status_code_conformance": "a status code the spec declares for the operation",
    "content_type_conformance": "a Content-Type the spec declares for that status",
    "response_headers_conformance": "the response headers the spec declares, matching their schemas",
    "response_schema_conformance": "a body matching the schema the spec declares for that status",
    "negative_data_rejection": "a schema-invalid request is rejected with a 4xx",
    "positive_data_acceptance": "a schema-valid request is not rejected as invalid (400 is judged by ocp_business_rule_400)",
    "missing_required_header": "a request missing a required header is rejected with a 4xx",
    "unsupported_method": "a method the spec does not declare for the path is answered 405",
    "allow_header_conformance": "a 405 carries an Allow header listing the declared methods",
    "use_after_free": "a deleted resource is gone (stateful)",
    "ensure_resource_availability": "a created resource is available (stateful)",
    "ignored_auth": "an operation that declares authentication enforces it",
    "object_level_authorization": "one identity cannot read an object another identity created",
}
# positive_data_acceptance: OCP refuses some schema-valid requests with 400 by business rule (20003);
# ocp_business_rule_400 judges those 400s instead (a domain code, or subErrors with code 0).
POSITIVE_ACCEPTED = ["2XX", "3XX", "400", "401", "403", "404", "409", "429"]
PHASES = ("preflight", "discovery", "fixtures", "consistency", "fuzzing", "responses")

Progress = Callable[[str], None]


class CouldNotTest(Exception):
    """The run cannot tell whether the server conforms; the message is the one-line reason."""


@dataclass
class Options:
    base_url: str
    spec_path: str | None = None  # None: the spec shipped with the package
    user: str = "admin"
    password: str = "admin"
    viewer_user: str | None = "viewer"
    viewer_password: str | None = "viewer"
    # The fixtures. None: found through the read endpoints (see Fixtures); given ones are used as they are.
    task_id: int | None = None
    failed_subtask_id: int | None = None
    non_failed_subtask_id: int | None = None
    unknown_subtask_id: int = UNKNOWN_SUBTASK_ID
    max_examples: int = DEFAULT_MAX_EXAMPLES
    fuzz_operations: tuple[str, ...] | None = None  # the operations schemathesis fuzzes: None all, () none
    stateful: bool = True  # schemathesis' stateful phase: it follows the spec's links (list -> task -> actions)
    seed: int | None = None
    workers: int = 1
    reset_mock: bool = True  # when the target is ocp-mock, put its world back first (the fixture is consumed)
    timeout: float = 10.0


@dataclass
class Fixtures:
    """What the fixture checks act on, and how the runner came by it."""

    task_id: int | None = None
    failed_subtask_id: int | None = None
    non_failed_subtask_id: int | None = None
    source: str = "given"  # "given" (all three ids given) or "discovered"
    how: str = ""
    task: dict | None = None  # the fixture task's detail as discovery read it (None: not read)
    quiet_subtask_id: int | None = None  # a non-FAILED subtask of the task that cannot move on by itself
    successful_task_id: int | None = None  # a SUCCESSFUL task: task retry and rollback must refuse it
    prohibited_task_id: int | None = None  # a FAILED task with prohibitRollback: rollback must refuse it (20004)
    notes: list[str] = field(default_factory=list)

    @property
    def subtask_ids(self) -> set[str]:
        """Every subtask of the fixture task, and the fixture subtasks: fuzzing keeps off all of them."""
        ids = {str(i) for i in (self.failed_subtask_id, self.non_failed_subtask_id) if i is not None}
        return ids | {str(_id(s.get("id"))) for s in _subtasks(self.task)}

    def as_dict(self) -> dict:
        return {
            "source": self.source,
            "how": self.how,
            "task_id": self.task_id,
            "failed_subtask_id": self.failed_subtask_id,
            "non_failed_subtask_id": self.non_failed_subtask_id,
            "quiet_subtask_id": self.quiet_subtask_id,
            "successful_task_id": self.successful_task_id,
            "prohibited_task_id": self.prohibited_task_id,
        }


def default_spec_path() -> str:
    """The openapi.yaml shipped beside the mock_server package (its spec.SPEC_PATH), found without importing the
    package: that would load the mock's Flask app, a tenth of a second of every run for nothing."""
    found = importlib.util.find_spec("mock_server")
    shipped = Path(found.origin).with_name("openapi.yaml") if found is not None and found.origin else None
    if shipped is not None and shipped.is_file():
        return str(shipped)
    from mock_server.config import SPEC_PATH

    return str(SPEC_PATH)


def run(options: Options, progress: Progress | None = None) -> Result:
    """Checks the server at options.base_url against the spec; never raises for a server's behaviour."""
    spec_path = options.spec_path or default_spec_path()
    seed = options.seed if options.seed is not None else random.randrange(2**32)
    result = Result(target=options.base_url, spec_path=str(spec_path), spec_sha256="", seed=seed)
    started = time.perf_counter()
    try:
        _check_url(options.base_url)
        contract = Contract.load(spec_path)
        result.spec_sha256 = contract.sha256
        _Run(options, contract, result, progress or (lambda message: None)).all_phases()
    except (CouldNotTest, SpecError) as exc:
        result.outcome, result.reason = COULD_NOT_TEST, str(exc)
    result.seconds = time.perf_counter() - started
    return result.finish()


def _check_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CouldNotTest(f"--base-url must be an http(s) URL such as http://127.0.0.1:8080, got {url!r}")
    if parts.username or parts.password:
        raise CouldNotTest("--base-url must not carry credentials; give them with --user/--password")


def _id(value: Any) -> int | None:
    """An id (a Long: an integer, or a string of digits) as an int; None when it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"-?[0-9]{1,19}", value):
        return int(value)
    return None


def _upper(value: Any) -> str:
    """A status or operation, compared leniently (a lower-case one is ocp_enum_values' finding, not discovery's)."""
    return value.upper() if isinstance(value, str) else ""


def _subtasks(task: dict | None) -> list[dict]:
    items = (task or {}).get("subtasks")
    return [s for s in items if isinstance(s, dict) and _id(s.get("id")) is not None] if isinstance(items, list) else []


def _retryable(subtask: dict) -> bool:
    return _upper(subtask.get("status")) == FAILED and _upper(subtask.get("operation")) != ROLLBACK


def _has_fixtures(subtasks: list[dict]) -> bool:
    """A FAILED subtask to retry and a non-FAILED one are among SUBTASKS."""
    return any(_retryable(s) for s in subtasks) and any(_upper(s.get("status")) != FAILED for s in subtasks)


def _quiet(task: dict, subtask: dict) -> bool:
    """SUBTASK is not FAILED and cannot move on by itself: its task is finished (FAILED or SUCCESSFUL, so none of
    its subtasks is in motion), or it is SUCCESSFUL and its task is not rolling back."""
    status = _upper(subtask.get("status"))
    if status in ("", FAILED) or status in IN_MOTION:
        return False
    return _upper(task.get("status")) in (FAILED, SUCCESSFUL) or (
        status == SUCCESSFUL and _upper(task.get("operation")) != ROLLBACK
    )


class _Run:
    def __init__(self, options: Options, contract: Contract, result: Result, progress: Progress):
        self.options = options
        self.contract = contract
        self.result = result
        self.progress = progress
        self.retry = contract.operation(RETRY_OPERATION)
        if self.retry is None:
            raise CouldNotTest(f"{contract.path} declares no operation {RETRY_OPERATION!r}; the fixture checks need it")
        self.can_read = contract.operation(LIST_OPERATION) is not None and contract.operation(GET_OPERATION) is not None
        unknown = sorted(set(options.fuzz_operations or ()) - {op.operation_id for op in contract.operations})
        if unknown:
            raise CouldNotTest(f"--fuzz-operation {', '.join(unknown)}: {contract.path} declares no such operation")
        self.admin = (options.user, options.password)
        self.viewer = (options.viewer_user, options.viewer_password or "") if options.viewer_user else None
        users = {options.user: (options.password, "OCP_PASSWORD")}
        if self.viewer:
            users[self.viewer[0]] = (self.viewer[1], "OCP_VIEWER_PASSWORD")
        self.secrets = Secrets(users)
        self.session = requests.Session()
        # No cookies: a session cookie from the user's request must not authenticate the credential-less one.
        self.session.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))
        self.exchanges: list[Exchange] = []
        self.phase = PhaseStat("")
        self.fx = Fixtures()
        self._failed_details: dict[int, dict] = {}  # FAILED tasks discovery read: id -> detail
        self._lock = threading.Lock()

    def all_phases(self) -> None:
        for name in PHASES:
            self.phase = PhaseStat(name)
            self.result.phases.append(self.phase)
            self.progress(f"[{len(self.result.phases)}/{len(PHASES)}] {name}")
            started = time.perf_counter()
            try:
                getattr(self, {"fixtures": "fixture_semantics", "fuzzing": "fuzz"}.get(name, name))()
            finally:
                self.phase.seconds = time.perf_counter() - started

    # -- bookkeeping -------------------------------------------------------------------------------
    def check(self, name: str, source: str, description: str = "") -> CheckResult:
        if name not in self.result.checks:
            self.result.checks[name] = CheckResult(name, source, description)
        return self.result.checks[name]

    def judge(self, check: checks.Check, ex: Exchange, **kwargs) -> bool:
        """Runs CHECK on EX and records the outcome; True when it passed."""
        record = self.result.checks.get(check.__name__) or self.check(check.__name__, _source(check),
                                                                       checks.describe(check))  # fmt: skip
        outcome = checks.run_check(check, ex, self.contract, **kwargs)
        if outcome == checks.NOT_APPLICABLE:
            return True
        record.applied += 1
        if isinstance(outcome, checks.CheckFailure):
            record.add(finding_for(outcome, ex, self.secrets))
            return False
        return True

    def skip(self, check: checks.Check, reason: str) -> None:
        record = self.check(check.__name__, _source(check), checks.describe(check))
        record.skip_reason = record.skip_reason or reason

    def call(self, operation_id: str, auth: tuple[str, str] | None | bool = True, query: dict | None = None,
             **values: Any) -> Exchange:
        """Sends OPERATION_ID with the path VALUES and QUERY as AUTH (True: the user; None: no credentials) and
        keeps the exchange."""
        auth = self.admin if auth is True else auth
        op = self.contract.operation(operation_id)
        url = op.url(self.options.base_url, values) + (f"?{urlencode(query, safe=',')}" if query else "")
        try:
            response = self.session.request(op.method, url, auth=auth, timeout=self.options.timeout,
                                            allow_redirects=False)  # fmt: skip
        except requests.RequestException as exc:
            raise CouldNotTest(f"cannot reach {self.options.base_url}: {_network_reason(exc)}") from None
        request = RequestInfo(
            method=op.method,
            url=url,
            headers=dict(response.request.headers),
            operation=op.operation_id,
            path_parameters={k: str(v) for k, v in values.items()},
            valid=auth == self.admin,
            phase=self.phase.name,
        )
        ex = Exchange(request, response.status_code, dict(response.headers), response.content)
        self.exchanges.append(ex)
        self.phase.requests += 1
        return ex

    def send(self, subtask_id: int, auth: tuple[str, str] | None, task_id: int | None = None) -> Exchange:
        """POSTs the retry of SUBTASK_ID (in the fixture task) as AUTH (None: no credentials)."""
        task = task_id if task_id is not None else self.fx.task_id
        return self.call(RETRY_OPERATION, auth, **{TASK_PARAM: task, SUBTASK_PARAM: subtask_id})

    def has(self, operation_id: str) -> bool:
        return self.contract.operation(operation_id) is not None

    # -- 1 preflight -------------------------------------------------------------------------------
    def preflight(self) -> None:
        if self.options.reset_mock:
            self._reset_mock()
        unknown = self.options.unknown_subtask_id  # refused either way: nothing changes on the server
        for who, auth in (("user", self.admin), ("viewer user", self.viewer)):
            if auth is None:
                continue
            ex = self.send(unknown, auth, task_id=self.options.task_id if self.options.task_id is not None else unknown)
            if ex.status == 401:
                raise CouldNotTest(f"the server refused the credentials of {who} {auth[0]!r} (HTTP 401)")

    def _reset_mock(self) -> None:
        """ocp-mock (recognised by its /__mock/health) is put back to its start-up world, so that the FAILED
        fixture is FAILED again however many runs came before. Any other server is left alone."""
        base = self.options.base_url.rstrip("/")
        try:
            health = self.session.get(f"{base}/__mock/health", timeout=self.options.timeout)
            if health.status_code == 200 and "seed" in (health.json().get("data") or {}):
                self.session.post(f"{base}/__mock/reset", timeout=self.options.timeout).raise_for_status()
                self.result.notes.append("the target is ocp-mock: its world was reset to its start-up seed first")
        except (requests.RequestException, ValueError, AttributeError):
            pass  # not the mock (or unreachable, which the next request reports)

    # -- 2 discovery -------------------------------------------------------------------------------
    def discovery(self) -> None:
        o = self.options
        fx = self.fx = Fixtures(o.task_id, o.failed_subtask_id, o.non_failed_subtask_id)
        if None not in (o.task_id, o.failed_subtask_id, o.non_failed_subtask_id):
            fx.source, fx.how = "given", "given (--task-id, --failed-subtask-id, --non-failed-subtask-id)"
            if self.has(GET_OPERATION):
                fx.task = self._detail(o.task_id)  # to know which subtask stays still; the ids are used as given
        else:
            if not self.can_read:
                raise CouldNotTest(
                    f"no fixture ids given and {self.contract.path} declares no {LIST_OPERATION} and "
                    f"{GET_OPERATION} to find them with; give --task-id, --failed-subtask-id and "
                    "--non-failed-subtask-id"
                )
            fx.source = "discovered"
            self._discover()
        if fx.task is not None:
            n_first = sorted(_subtasks(fx.task), key=lambda s: _id(s["id"]) != fx.non_failed_subtask_id)
            fx.quiet_subtask_id = next(
                (_id(s["id"]) for s in n_first if _quiet(fx.task, s) and _id(s["id"]) != fx.failed_subtask_id), None
            )
        if self.can_read:
            self._find_successful_task()
            self._find_prohibited_task()
        line = (f"fixtures ({fx.source}): task {fx.task_id}, FAILED subtask {fx.failed_subtask_id}, non-FAILED subtask "
                f"{fx.non_failed_subtask_id}{self._status_of(fx.non_failed_subtask_id)}; {fx.how}")  # fmt: skip
        self.progress(f"      {line}")
        self.result.notes.append(line)
        self.result.fixtures = fx.as_dict()

    def _status_of(self, subtask_id: int | None) -> str:
        found = next((s for s in _subtasks(self.fx.task) if _id(s["id"]) == subtask_id), None)
        return f" ({found['status']})" if found and isinstance(found.get("status"), str) else ""

    def _detail(self, task_id: int) -> dict | None:
        """The task's detail (getTaskInstance), or None when the server does not answer 200 with one."""
        ex = self.call(GET_OPERATION, **{TASK_PARAM: task_id})
        data = (ex.envelope or {}).get("data")
        if ex.status == 200 and isinstance(data, dict):
            if _upper(data.get("status")) == FAILED:
                self._failed_details[task_id] = data
            return data
        return None

    def _rows(self, query: dict, purpose: str) -> tuple[list[dict], str]:
        """The rows of one list page, and the request's URL; could not test when it does not answer a page."""
        ex = self.call(LIST_OPERATION, query=query)
        data = (ex.envelope or {}).get("data")
        rows = data.get(checks.CONTENTS) if isinstance(data, dict) else None
        where = f"GET {urlsplit(ex.request.url).path}?{urlencode(query, safe=',')}"
        if ex.status != 200 or not isinstance(rows, list):
            raise CouldNotTest(f"{purpose}: {where} answered HTTP {ex.status} without a page of tasks; give "
                               "--task-id, --failed-subtask-id and --non-failed-subtask-id")  # fmt: skip
        return [r for r in rows if isinstance(r, dict) and _id(r.get("id")) is not None], where

    def _discover(self) -> None:
        o, fx = self.options, self.fx
        if o.task_id is not None:
            task = self._detail(o.task_id)
            if task is None:
                raise CouldNotTest(f"task {o.task_id} (--task-id): {GET_OPERATION} did not answer 200 with the task")
            fx.how = f"the subtasks of task {o.task_id} (--task-id), read with {GET_OPERATION}"
        elif o.failed_subtask_id is not None or o.non_failed_subtask_id is not None:
            task = self._task_holding({i for i in (o.failed_subtask_id, o.non_failed_subtask_id) if i is not None})
        else:
            task = self._oldest_failed_task()
        fx.task, fx.task_id = task, _id(task.get("id"))
        subs = _subtasks(task)
        if fx.failed_subtask_id is None:
            fx.failed_subtask_id = next((_id(s["id"]) for s in subs if _retryable(s)), None)
        if fx.non_failed_subtask_id is None:
            others = [s for s in subs if _upper(s.get("status")) != FAILED and _id(s["id"]) != fx.failed_subtask_id]
            still = [s for s in others if _upper(s.get("status")) not in IN_MOTION]  # prefer one that stays as it is
            fx.non_failed_subtask_id = next((_id(s["id"]) for s in still + others), None)
        if fx.failed_subtask_id is None or fx.non_failed_subtask_id is None:
            missing = "a non-FAILED subtask" if fx.failed_subtask_id is not None else "a retryable FAILED subtask"
            raise CouldNotTest(
                f"task {fx.task_id} has no {missing}; give --failed-subtask-id and --non-failed-subtask-id"
            )

    def _oldest_failed_task(self) -> dict:
        """The oldest FAILED task that has a FAILED subtask to retry and a non-FAILED one, read in full."""
        query = {"status": FAILED, "sort": OLDEST_FIRST, "size": DISCOVERY_PAGE_SIZE}
        rows, where = self._rows(query, "finding a FAILED task")
        read = 0
        for row in rows:
            short = _subtasks(row)
            if short and not _has_fixtures(short):
                continue  # the row's short form already says no
            if read == MAX_DETAILS:
                break
            task, read = self._detail(_id(row["id"])), read + 1
            if _has_fixtures(_subtasks(task)):
                self.fx.how = (f"the oldest FAILED task with a FAILED subtask to retry and a non-FAILED sibling "
                                     f"({where}, then {GET_OPERATION})")  # fmt: skip
                return task
        raise CouldNotTest(
            f"found no fixture: no FAILED task with a FAILED subtask to retry (operation not ROLLBACK) and a "
            f"non-FAILED sibling among the {len(rows)} rows of {where} ({read} read in full); fail a task on the "
            "server, or give --task-id, --failed-subtask-id and --non-failed-subtask-id"
        )

    def _task_holding(self, subtask_ids: set[int]) -> dict:
        """The task whose list row holds every subtask id given, read in full."""
        shown = ", ".join(map(str, sorted(subtask_ids)))
        for page in range(1, MAX_SCAN_PAGES + 1):
            query = {"sort": OLDEST_FIRST, "size": SCAN_PAGE_SIZE, "page": page}
            rows, where = self._rows(query, f"finding the task of subtask {shown}")
            for row in rows:
                if subtask_ids <= {_id(s["id"]) for s in _subtasks(row)}:
                    task = self._detail(_id(row["id"]))
                    if task is None:
                        break
                    self.fx.how = f"the task whose list row holds subtask {shown} ({where}, then {GET_OPERATION})"
                    return task
            if len(rows) < SCAN_PAGE_SIZE:
                break
        raise CouldNotTest(f"no listed task holds subtask {shown} (looked at up to {MAX_SCAN_PAGES * SCAN_PAGE_SIZE} "
                           "tasks); give --task-id too")  # fmt: skip

    def _find_successful_task(self) -> None:
        """A SUCCESSFUL task other than the fixture task: task retry and rollback must refuse it (it stays still)."""
        try:
            rows, _ = self._rows({"status": SUCCESSFUL, "sort": OLDEST_FIRST, "size": DISCOVERY_PAGE_SIZE},
                                 "finding a SUCCESSFUL task")  # fmt: skip
        except CouldNotTest:
            return  # the list's answer is judged with the others; only the checks that need the task are skipped
        self.fx.successful_task_id = next(
            (_id(r["id"]) for r in rows if _upper(r.get("status")) == SUCCESSFUL and _id(r["id"]) != self.fx.task_id),
            None)  # fmt: skip

    def _find_prohibited_task(self) -> None:
        """A FAILED task other than the fixture task whose prohibitRollback is true, among at most MAX_DETAILS
        FAILED tasks read in full (those discovery read count)."""
        fx = self.fx

        def prohibited(task_id: int, task: dict | None) -> bool:
            return (task is not None and task_id != fx.task_id and task.get("prohibitRollback") is True
                    and _upper(task.get("status")) == FAILED)  # fmt: skip

        found = next((i for i, t in self._failed_details.items() if prohibited(i, t)), None)
        if found is None and len(self._failed_details) < MAX_DETAILS:
            try:
                rows, _ = self._rows({"status": FAILED, "sort": OLDEST_FIRST, "size": DISCOVERY_PAGE_SIZE},
                                     "finding a task whose rollback is prohibited")  # fmt: skip
            except CouldNotTest:
                return
            for row in rows:
                task_id = _id(row["id"])
                if task_id in self._failed_details or task_id == fx.task_id:
                    continue
                if len(self._failed_details) >= MAX_DETAILS:
                    break
                task = self._detail(task_id)
                self._failed_details.setdefault(task_id, task or {})
                if prohibited(task_id, task):
                    found = task_id
                    break
        fx.prohibited_task_id = found

    # -- 3 fixtures --------------------------------------------------------------------------------
    def fixture_semantics(self) -> None:
        o, fx = self.options, self.fx
        consumed = None  # who retried the FAILED fixture, once someone has
        wrong_password = WRONG_PASSWORD + ("!" if o.password == WRONG_PASSWORD else "")
        for auth in (None, (o.user, wrong_password)):
            ex = self.send(fx.failed_subtask_id, auth)
            self.judge(checks.fixture_no_credentials, ex)
            consumed = consumed or (_ok(ex) and "a request without valid credentials")
        # The viewer goes before the successful retry, so that "changes nothing" is observable.
        if self.viewer is None:
            self.skip(checks.fixture_viewer_forbidden, "no viewer user given (--viewer-user)")
        elif consumed:
            self.skip(checks.fixture_viewer_forbidden, f"the FAILED fixture was already retried by {consumed}")
        else:
            ex = self.send(fx.failed_subtask_id, self.viewer)
            self.judge(checks.fixture_viewer_forbidden, ex)
            consumed = _ok(ex) and f"the viewer {self.viewer[0]!r}"
        # The family's refusals act on subtasks and tasks that stay as they are, never on the FAILED fixture.
        self._family_refusals()
        if consumed:
            self.skip(checks.fixture_retry_failed, f"the FAILED fixture was already retried by {consumed}")
        else:
            ex = self.send(fx.failed_subtask_id, self.admin)
            if not self.judge(checks.fixture_retry_failed, ex, subtask_id=fx.failed_subtask_id) and ex.status == 400:
                self.result.notes.append(
                    f"subtask {fx.failed_subtask_id} was refused a retry: if it was not FAILED when the run began "
                    "(an earlier run retried it), reset the server's world or pass --failed-subtask-id"
                )
        self.judge(checks.fixture_retry_again, self.send(fx.failed_subtask_id, self.admin))
        self.judge(checks.fixture_retry_non_failed, self.send(fx.non_failed_subtask_id, self.admin))
        self.judge(checks.fixture_unknown_subtask, self.send(o.unknown_subtask_id, self.admin))

    def _family_refusals(self) -> None:
        fx, unknown = self.fx, self.options.unknown_subtask_id
        if not self.has(GET_OPERATION):
            quiet_reason = f"the spec declares no {GET_OPERATION} to see which subtask of task {fx.task_id} stays still"
        elif fx.task is None:
            quiet_reason = f"{GET_OPERATION} did not answer 200 for task {fx.task_id}: its subtasks are unknown"
        else:
            quiet_reason = (f"task {fx.task_id} has no subtask sure to stay as it is (not FAILED, and its task "
                            "finished or it SUCCESSFUL)")  # fmt: skip
        for operation, check in ((SKIP_OPERATION, checks.fixture_skip_not_failed),
                                 (CANCEL_OPERATION, checks.fixture_cancel_not_running)):  # fmt: skip
            if not self.has(operation):
                self.skip(check, f"the spec declares no {operation}")
            elif fx.quiet_subtask_id is None:
                self.skip(check, quiet_reason)
            else:
                self.judge(check, self.call(operation, **{TASK_PARAM: fx.task_id, SUBTASK_PARAM: fx.quiet_subtask_id}))
        if self.has(LOG_OPERATION):
            ex = self.call(LOG_OPERATION, **{TASK_PARAM: fx.task_id, SUBTASK_PARAM: fx.failed_subtask_id})
            self.judge(checks.fixture_subtask_log, ex)
        else:
            self.skip(checks.fixture_subtask_log, f"the spec declares no {LOG_OPERATION}")
        if self.has(GET_OPERATION):
            self.judge(checks.fixture_unknown_task, self.call(GET_OPERATION, **{TASK_PARAM: unknown}))
        else:
            self.skip(checks.fixture_unknown_task, f"the spec declares no {GET_OPERATION}")
        for operation in (TASK_RETRY_OPERATION, TASK_ROLLBACK_OPERATION):
            if not self.has(operation):
                self.skip(checks.fixture_task_not_failed, f"the spec declares no {operation}")
            elif fx.successful_task_id is None:
                self.skip(checks.fixture_task_not_failed,
                          f"found no SUCCESSFUL task ({LIST_OPERATION}, status SUCCESSFUL)")  # fmt: skip
            else:
                self.judge(checks.fixture_task_not_failed, self.call(operation, **{TASK_PARAM: fx.successful_task_id}))
        if not self.has(TASK_ROLLBACK_OPERATION):
            self.skip(checks.fixture_rollback_prohibited, f"the spec declares no {TASK_ROLLBACK_OPERATION}")
        elif fx.prohibited_task_id is None:
            self.skip(checks.fixture_rollback_prohibited,
                      f"no FAILED task with prohibitRollback true among the {len(self._failed_details)} FAILED tasks "
                      "read in full")  # fmt: skip
        else:
            ex = self.call(TASK_ROLLBACK_OPERATION, **{TASK_PARAM: fx.prohibited_task_id})
            self.judge(checks.fixture_rollback_prohibited, ex)

    # -- 4 consistency -----------------------------------------------------------------------------
    def consistency(self) -> None:
        """Paging and rows: one small page of the oldest tasks, each row's task in full, the same page again (a
        value that changed between the two is not compared), then the last page and the one past it. The
        per-response checks (ocp_paging, ...) judge the pages in phase 6."""
        if not self.can_read:
            self.skip(checks.ocp_list_row_matches_detail, f"the spec declares no {LIST_OPERATION} and {GET_OPERATION}")
            return
        query = {"sort": OLDEST_FIRST, "page": 1, "size": CONSISTENCY_PAGE_SIZE}
        first = self.call(LIST_OPERATION, query=query)
        rows = [r for r in self._page(first)[0] if _id(r.get("id")) is not None][:CONSISTENCY_PAGE_SIZE]
        details = [(row, self.call(GET_OPERATION, **{TASK_PARAM: _id(row["id"])})) for row in rows]
        again = {_id(r.get("id")): r for r in self._page(self.call(LIST_OPERATION, query=query))[0]}
        for row, ex in details:
            if _id(row["id"]) in again:  # a row that left the page between the two fetches cannot be judged
                self.judge(checks.ocp_list_row_matches_detail, ex, row=row, row_again=again[_id(row["id"])])
        if not details:
            self.skip(checks.ocp_list_row_matches_detail, f"{LIST_OPERATION} listed no task (HTTP {first.status})")
        pages = self._page(first)[1]
        size = {"size": CONSISTENCY_PAGE_SIZE}
        if pages is not None:
            if pages > 1:
                self.call(LIST_OPERATION, query={"page": pages, **size})
            self.call(LIST_OPERATION, query={"page": pages + 1, **size})

    @staticmethod
    def _page(ex: Exchange) -> tuple[list[dict], int | None]:
        data = (ex.envelope or {}).get("data") if ex.status == 200 else None
        rows = data.get(checks.CONTENTS) if isinstance(data, dict) else None
        page = data.get(checks.PAGE) if isinstance(data, dict) else None
        pages = page.get(checks.TOTAL_PAGES) if isinstance(page, dict) else None
        rows = [r for r in rows if isinstance(r, dict)] if isinstance(rows, list) else []
        return rows, pages if isinstance(pages, int) and not isinstance(pages, bool) and 0 <= pages < 10**6 else None

    # -- 3 fuzzing ---------------------------------------------------------------------------------
    def fuzz(self) -> None:
        import schemathesis
        from schemathesis.engine import events
        from schemathesis.hooks import GLOBAL_HOOK_DISPATCHER

        o = self.options
        if o.fuzz_operations == ():
            for name in BUILTIN_CHECKS:
                record = self.check(name, "schemathesis", _builtin_description(name))
                record.skip_reason = "fuzzing is off (--no-fuzzing)"
            return
        schema = schemathesis.openapi.from_dict(self.contract.without_parameter_examples(), config=schemathesis.Config())
        if o.fuzz_operations:
            schema = schema.include(operation_id=list(o.fuzz_operations))
        schema.config.update(
            base_url=o.base_url, basic_auth=self.admin, continue_on_failure=True, workers=o.workers,
            request_timeout=o.timeout,
        )  # fmt: skip
        schema.config.seed = self.result.seed
        schema.config.generation.update(max_examples=o.max_examples, with_security_parameters=False, database="none")
        schema.config.checks.update(included_check_names=list(BUILTIN_CHECKS))
        schema.config.checks.positive_data_acceptance.expected_statuses = POSITIVE_ACCEPTED
        stateful = o.stateful and self._linked(o.fuzz_operations)
        schema.config.phases.update(phases=["examples", "coverage", "fuzzing"] + (["stateful"] if stateful else []))
        # A stateful scenario is several calls (up to schemathesis' max_steps): a quarter as many scenarios as
        # --max-examples keeps the phase at about a third of the requests.
        schema.config.phases.stateful.generation.update(max_examples=max(1, o.max_examples // STATEFUL_SHARE),
                                                        with_security_parameters=False, database="none")  # fmt: skip

        fixtures = {TASK_PARAM: {str(self.fx.task_id)}, SUBTASK_PARAM: self.fx.subtask_ids}

        def names_a_fixture(values) -> bool:
            return any(str((values or {}).get(name)) in ids for name, ids in fixtures.items())

        def filter_path_parameters(ctx, path_parameters):
            """Generated requests, for every operation, never name the fixture task or any of its subtasks (the
            spec's parameter examples are dropped too)."""
            return not names_a_fixture(path_parameters)

        def before_call(ctx, case, kwargs):
            """The stateful phase fills path parameters from earlier answers (a list's first task, a task's first
            subtask), past filter_path_parameters: a request that would name a fixture names the unknown id
            instead, so it is refused (404) and changes nothing."""
            if case.operation.schema is schema and names_a_fixture(case.path_parameters):
                for name in fixtures:
                    if name in case.path_parameters:
                        case.path_parameters[name] = o.unknown_subtask_id

        last_report = [time.monotonic()]

        def after_call(ctx, case, response):
            ex = Exchange.from_schemathesis(case, response, self.contract)
            ex.request = replace(ex.request, phase=f"fuzzing/{ex.request.phase}")
            with self._lock:
                self.exchanges.append(ex)
                self.phase.requests += 1
                if time.monotonic() - last_report[0] >= 1.0:
                    last_report[0] = time.monotonic()
                    self.progress(f"      schemathesis: {self.phase.requests} cases")

        schema.hooks.register_hook_with_name(filter_path_parameters, "filter_path_parameters")
        schema.hooks.register_hook_with_name(after_call, "after_call")

        # before_call exists only as a global hook: registered for this run (it touches only this schema's cases)
        GLOBAL_HOOK_DISPATCHER.register_hook_with_name(before_call, "before_call")
        try:
            for event in schemathesis.engine.from_schema(schema).execute():
                if isinstance(event, events.PhaseStarted) and event.phase.is_enabled:
                    self.progress(f"      schemathesis phase: {event.phase.name.value}")
                elif isinstance(event, events.ScenarioFinished):
                    self._collect(event.recorder, event.phase.value)
                elif isinstance(event, events.NonFatalError):
                    if isinstance(event.value, requests.RequestException):
                        self._network_error(event)
                    else:
                        raise CouldNotTest(f"schemathesis failed in its {event.label} step: {_first_line(event.value)}")
                elif isinstance(event, events.FatalError):
                    raise CouldNotTest(f"schemathesis failed: {_first_line(event.exception)}")
        finally:
            GLOBAL_HOOK_DISPATCHER.unregister(before_call)
        for name in BUILTIN_CHECKS:
            self.check(name, "schemathesis", _builtin_description(name))

    def _linked(self, operations: tuple[str, ...] | None) -> bool:
        """Whether the spec links one of OPERATIONS (None: all) to another (schemathesis' stateful phase needs it)."""
        fuzzed = {op.operation_id for op in self.contract.operations} if operations is None else set(operations)
        for op in self.contract.operations:
            if op.operation_id not in fuzzed:
                continue
            for response in op.responses.values():
                for link in (response.get("links") or {}).values():
                    if self.contract.resolve(link).get("operationId") in fuzzed:
                        return True
        return False

    def _collect(self, recorder, phase: str) -> None:
        """Folds the built-in checks' outcomes of one schemathesis scenario into the result."""
        for case_id, nodes in recorder.checks.items():
            for node in nodes:
                record = self.check(node.name, "schemathesis", _builtin_description(node.name))
                record.applied += 1
                if node.status != "failure" or node.failure_info is None:  # Status is a StrEnum
                    continue
                failure = node.failure_info.failure
                interaction = recorder.interactions.get(failure.case_id or case_id)
                record.add(self._st_finding(node.name, phase, failure, interaction))

    def _st_finding(self, name: str, phase: str, failure, interaction) -> Finding:
        request = interaction.request if interaction else None
        response = interaction.response if interaction else None
        headers = {k: v[0] for k, v in request.headers.items()} if request else {}
        method, url = (request.method, request.uri) if request else ("?", "?")
        body = (response.content or b"").decode("utf-8", "replace") if response is not None else ""
        message = " ".join(f"{failure.title}: {failure.message}".split()).rstrip(":")
        return Finding(
            check=name,
            phase=f"fuzzing/{phase}",
            expected=_builtin_description(name),
            received=message[:500],
            status=response.status_code if response is not None else None,
            body_excerpt=body[:300] + ("…" if len(body) > 300 else ""),
            request=redacted_request(method, url, headers, self.secrets),
            curl=curl_line(method, url, headers, self.secrets, request.body if request else None),
        )

    def _network_error(self, event) -> None:
        """A generated request got no answer (dropped connection, timeout): a finding, not a crash."""
        record = self.check("server_answers", "ocp", "The server answers every request (no dropped connection or timeout).")
        record.applied += 1
        record.add(Finding("server_answers", "fuzzing", "an HTTP response", _network_reason(event.value), None, "",
                           {"method": "?", "url": event.label, "headers": {}}, ""))

    # -- 4 every response ----------------------------------------------------------------------------
    def responses(self) -> None:
        for ex in self.exchanges:
            for check in checks.RESPONSE_CHECKS:
                self.judge(check, ex)
        self.phase.requests = 0  # nothing sent: this phase judges what the others received


def _ok(ex: Exchange) -> bool:
    return 200 <= ex.status < 300


def _source(check: checks.Check) -> str:
    return check.__name__.split("_", 1)[0]  # fixture, ocp or spec


def _network_reason(exc: requests.RequestException) -> str:
    if isinstance(exc, requests.Timeout):
        return "no answer in time"
    errno = re.search(r"\[Errno -?\d+\] ([^'\")]+)", str(exc))  # "[Errno 111] Connection refused"
    return errno.group(1).strip() if errno else _first_line(exc)


def _first_line(exc: BaseException | str) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


def _builtin_description(name: str) -> str:
    return f"schemathesis' {name}: {BUILTIN_CHECKS[name]}" if name in BUILTIN_CHECKS else f"schemathesis' {name}"
