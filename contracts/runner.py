"""The conformance run: four phases against one server, returning a Result. Nothing here prints; progress
goes to an optional callback (the CLI writes it to stderr).

1 preflight   the server answers and accepts the credentials (otherwise: could not test, exit 2)
2 fixtures    OCP semantics on the known subtasks, before anything else can disturb them
3 fuzzing     schemathesis over the spec, positive and negative, its built-in checks on; the fixture ids
              are kept out of every generated request
4 responses   every response of every phase gets the OCP checks and is validated against the spec
"""

from __future__ import annotations

import random
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from http.cookiejar import DefaultCookiePolicy
from urllib.parse import urlsplit

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

RETRY_OPERATION = "retrySubtask"
TASK_PARAM, SUBTASK_PARAM = "taskInstanceId", "subtaskInstanceId"
DEFAULT_MAX_EXAMPLES = 100  # generated requests per operation in the fuzzing phase
UNKNOWN_SUBTASK_ID = 2**62  # an int64 no OCP deployment has reached
WRONG_PASSWORD = "ocp-contract-wrong-password"
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
    task_id: int = 1000
    failed_subtask_id: int = 10001
    non_failed_subtask_id: int = 10002
    unknown_subtask_id: int = UNKNOWN_SUBTASK_ID
    max_examples: int = DEFAULT_MAX_EXAMPLES
    seed: int | None = None
    workers: int = 1
    reset_mock: bool = True  # when the target is ocp-mock, put its world back first (the fixture is consumed)
    timeout: float = 10.0


def default_spec_path() -> str:
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


class _Run:
    def __init__(self, options: Options, contract: Contract, result: Result, progress: Progress):
        self.options = options
        self.contract = contract
        self.result = result
        self.progress = progress
        self.retry = contract.operation(RETRY_OPERATION)
        if self.retry is None:
            raise CouldNotTest(f"{contract.path} declares no operation {RETRY_OPERATION!r}; the fixture checks need it")
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
        self._lock = threading.Lock()

    def all_phases(self) -> None:
        for name, step in (
            ("preflight", self.preflight),
            ("fixtures", self.fixtures),
            ("fuzzing", self.fuzz),
            ("responses", self.responses),
        ):
            self.phase = PhaseStat(name)
            self.result.phases.append(self.phase)
            self.progress(f"[{len(self.result.phases)}/4] {name}")
            started = time.perf_counter()
            try:
                step()
            finally:
                self.phase.seconds = time.perf_counter() - started

    # -- bookkeeping -------------------------------------------------------------------------------
    def check(self, name: str, source: str, description: str = "") -> CheckResult:
        if name not in self.result.checks:
            self.result.checks[name] = CheckResult(name, source, description)
        return self.result.checks[name]

    def judge(self, check: checks.Check, ex: Exchange, **kwargs) -> bool:
        """Runs CHECK on EX and records the outcome; True when it passed."""
        record = self.check(check.__name__, _source(check), checks.describe(check))
        outcome = checks.run_check(check, ex, self.contract, **kwargs)
        if outcome == checks.NOT_APPLICABLE:
            return True
        record.applied += 1
        if isinstance(outcome, checks.CheckFailure):
            record.add(finding_for(outcome, ex, self.secrets))
            return False
        return True

    def skip(self, check: checks.Check, reason: str) -> None:
        self.check(check.__name__, _source(check), checks.describe(check)).skip_reason = reason

    def send(self, subtask_id: int, auth: tuple[str, str] | None) -> Exchange:
        """POSTs the retry of SUBTASK_ID as AUTH (None: no credentials) and keeps the exchange."""
        values = {TASK_PARAM: self.options.task_id, SUBTASK_PARAM: subtask_id}
        url = self.retry.url(self.options.base_url, values)
        try:
            response = self.session.post(url, auth=auth, timeout=self.options.timeout, allow_redirects=False)
        except requests.RequestException as exc:
            raise CouldNotTest(f"cannot reach {self.options.base_url}: {_network_reason(exc)}") from None
        request = RequestInfo(
            method=self.retry.method,
            url=url,
            headers=dict(response.request.headers),
            operation=self.retry.operation_id,
            path_parameters={k: str(v) for k, v in values.items()},
            valid=auth == self.admin,
            phase=self.phase.name,
        )
        ex = Exchange(request, response.status_code, dict(response.headers), response.content)
        self.exchanges.append(ex)
        self.phase.requests += 1
        return ex

    # -- 1 preflight -------------------------------------------------------------------------------
    def preflight(self) -> None:
        if self.options.reset_mock:
            self._reset_mock()
        unknown = self.options.unknown_subtask_id  # refused either way: nothing changes on the server
        for who, auth in (("user", self.admin), ("viewer user", self.viewer)):
            if auth is None:
                continue
            ex = self.send(unknown, auth)
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

    # -- 2 fixtures --------------------------------------------------------------------------------
    def fixtures(self) -> None:
        o = self.options
        consumed = None  # who retried the FAILED fixture, once someone has
        wrong_password = WRONG_PASSWORD + ("!" if o.password == WRONG_PASSWORD else "")
        for auth in (None, (o.user, wrong_password)):
            ex = self.send(o.failed_subtask_id, auth)
            self.judge(checks.fixture_no_credentials, ex)
            consumed = consumed or (_ok(ex) and "a request without valid credentials")
        # The viewer goes before the successful retry, so that "changes nothing" is observable.
        if self.viewer is None:
            self.skip(checks.fixture_viewer_forbidden, "no viewer user given (--viewer-user)")
        elif consumed:
            self.skip(checks.fixture_viewer_forbidden, f"the FAILED fixture was already retried by {consumed}")
        else:
            ex = self.send(o.failed_subtask_id, self.viewer)
            self.judge(checks.fixture_viewer_forbidden, ex)
            consumed = _ok(ex) and f"the viewer {self.viewer[0]!r}"
        if consumed:
            self.skip(checks.fixture_retry_failed, f"the FAILED fixture was already retried by {consumed}")
        else:
            ex = self.send(o.failed_subtask_id, self.admin)
            if not self.judge(checks.fixture_retry_failed, ex, subtask_id=o.failed_subtask_id) and ex.status == 400:
                self.result.notes.append(
                    f"subtask {o.failed_subtask_id} was refused a retry: if it was not FAILED when the run began "
                    "(an earlier run retried it), reset the server's world or pass --failed-subtask-id"
                )
        self.judge(checks.fixture_retry_again, self.send(o.failed_subtask_id, self.admin))
        self.judge(checks.fixture_retry_non_failed, self.send(o.non_failed_subtask_id, self.admin))
        self.judge(checks.fixture_unknown_subtask, self.send(o.unknown_subtask_id, self.admin))

    # -- 3 fuzzing ---------------------------------------------------------------------------------
    def fuzz(self) -> None:
        import schemathesis
        from schemathesis.engine import events

        o = self.options
        schema = schemathesis.openapi.from_dict(self.contract.without_parameter_examples(), config=schemathesis.Config())
        schema.config.update(
            base_url=o.base_url, basic_auth=self.admin, continue_on_failure=True, workers=o.workers,
            request_timeout=o.timeout,
        )  # fmt: skip
        schema.config.seed = self.result.seed
        schema.config.generation.update(max_examples=o.max_examples, with_security_parameters=False, database="none")
        schema.config.checks.update(included_check_names=list(BUILTIN_CHECKS))
        schema.config.checks.positive_data_acceptance.expected_statuses = POSITIVE_ACCEPTED
        # No stateful phase: it follows the spec's links into the server's real tasks (retrying and rolling
        # back whatever a list returns), so it could not keep away from the fixtures.
        schema.config.phases.update(phases=["examples", "coverage", "fuzzing"])

        fixtures = {TASK_PARAM: {str(o.task_id)}, SUBTASK_PARAM: {str(o.failed_subtask_id), str(o.non_failed_subtask_id)}}

        def filter_path_parameters(ctx, path_parameters):
            """Generated requests never name a fixture (the spec's parameter examples are dropped too)."""
            values = path_parameters or {}
            return not any(str(values.get(name)) in ids for name, ids in fixtures.items())

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
        for name in BUILTIN_CHECKS:
            self.check(name, "schemathesis", _builtin_description(name))

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
