"""Scenarios: YAML (or JSON) documents that set the world for a session: which subtasks are in which state, what
their next runs do (the engine's per-subtask scenario: succeed, fail N times, hang), and which calls are slow or
fail (faults.py).

    name: flaky-agent                       # optional; default: the file's name without .yaml
    description: Retrying 10001 fails twice, then succeeds; reading a task takes 800 ms.
    subtasks:
      10001:
        status: FAILED                      # the spec's SubtaskState; optional
        operation: EXECUTE                  # the spec's SubtaskOperation; optional
        nextRuns: {failures: 2}             # outcome, failures, hang, durationSeconds (as PUT /__mock/subtasks/{id}/scenario)
      10002: FAILED                         # shorthand for {status: FAILED}
    faults:                                 # replaces the faults in force; leave it out to keep them
      seed: 1
      rules:
        - operation: getTaskInstance
          latency: {fixedMs: 800}

A document is checked in full when it is loaded (every problem names its key and says how to fix it). Applying one
goes through the admin set-state's rules (lifecycle.set_state, then the world's invariants) in one transaction:
either every change is made, or none (404 for an unknown subtask, 409 for a state that would break the world).
Scenarios stack: each applies on top of the world as it is; POST /__mock/scenarios/reset goes back to the seeded
world with no faults.

Files given at start-up (`ocp-mock serve --scenario FILE`, Config.scenario_files) are loaded by every process, so
any worker can apply one by name, and applied once, in order, when the mock starts (Config.apply_scenarios).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import yaml
from flask import Blueprint, current_app, request

from . import engine
from .engine import MAX_DURATION_S, MAX_FAILURES, OUTCOMES, Scenario as RunPlan
from .envelope import CODE_GENERIC, TASK_NOT_EXISTS, OcpError, dump_data
from .faults import BOARD, FaultBoard, FaultSet, Invalid, check_keys, join, number, parse_faults, shown
from .runtime import ADMIN_EXECUTOR
from .store import Store
from .world import check_invariants

if TYPE_CHECKING:
    from flask import Flask

    from .app import Mock
    from .spec import Spec

SCENARIO_KEYS = ("name", "description", "subtasks", "faults")
SUBTASK_KEYS = ("status", "operation", "nextRuns")
NEXT_RUNS_KEYS = ("outcome", "failures", "hang", "durationSeconds")
MAX_SUBTASKS = 10_000
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
APPLIED_KEY = "scenarios"  # meta: the names applied since the world was last reset (JSON list)
MAX_APPLIED = 100  # the applied list keeps the last ones
REGISTRY = "ocp_mock.scenarios"


@dataclass(frozen=True)
class SubtaskPlan:
    status: str | None
    operation: str | None
    next_runs: RunPlan | None

    def as_dict(self) -> dict:
        data: dict = {}
        if self.status:
            data["status"] = self.status
        if self.operation:
            data["operation"] = self.operation
        if self.next_runs:
            data["nextRuns"] = self.next_runs.as_dict()
        return data


@dataclass(frozen=True)
class ScenarioDoc:
    name: str
    description: str
    source: str  # the file it came from, or "inline"
    subtasks: dict[int, SubtaskPlan]
    faults: FaultSet | None  # None: the document does not touch the faults

    def summary(self) -> dict:
        data = {"name": self.name, "description": self.description, "source": self.source,
                "subtasks": {str(k): v.as_dict() for k, v in sorted(self.subtasks.items())}}
        if self.faults is not None:
            data["faults"] = self.faults.as_dict()
        return data


# ------------------------------------------------------------------------------------------------ parsing

def _next_runs(value: Any, where: str) -> RunPlan:
    check_keys(value, where, NEXT_RUNS_KEYS)
    if value.get("outcome", "succeed") not in OUTCOMES:
        raise Invalid(join(where, "outcome"), value["outcome"], f"must be one of {', '.join(OUTCOMES)}")
    if "failures" in value:
        number(value["failures"], join(where, "failures"), 0, MAX_FAILURES, integer=True)
    if not isinstance(value.get("hang", False), bool):
        raise Invalid(join(where, "hang"), value["hang"], "must be true or false")
    if "durationSeconds" in value:
        number(value["durationSeconds"], join(where, "durationSeconds"), 0.001, MAX_DURATION_S)
    return RunPlan.from_dict(value)


def _subtask_id(key: Any, where: str) -> int:
    if isinstance(key, int) and not isinstance(key, bool):
        value = key
    elif isinstance(key, str) and re.fullmatch(r"-?[0-9]{1,19}", key.strip()):
        value = int(key)
    else:
        raise Invalid(join(where, str(key)), key, "a key of subtasks must be a subtask id (an integer), e.g. 10001")
    if not -(2**63) <= value < 2**63:
        raise Invalid(join(where, str(key)), key, "must be an int64 subtask id")
    return value


def _subtasks(value: Any, where: str, spec: "Spec") -> dict[int, SubtaskPlan]:
    if not isinstance(value, dict):
        raise Invalid(where, value, "must be a mapping of subtask id to {status, operation, nextRuns} (or to a "
                                    "status), e.g. {10001: FAILED}")
    if len(value) > MAX_SUBTASKS:
        raise Invalid(where, len(value), f"names {len(value)} subtasks; at most {MAX_SUBTASKS}")
    statuses, operations = spec.enum("SubtaskState"), spec.enum("SubtaskOperation")
    plans: dict[int, SubtaskPlan] = {}
    for key, item in value.items():
        sid = _subtask_id(key, where)
        at = join(where, str(sid))
        if sid in plans:
            raise Invalid(at, key, "is given twice")
        if isinstance(item, str):
            item = {"status": item}
        check_keys(item, at, SUBTASK_KEYS, "a status or a mapping")
        if not item:
            raise Invalid(at, item, f"is empty; give at least one of {', '.join(SUBTASK_KEYS)}")
        status, operation = item.get("status"), item.get("operation")
        if status is not None and status not in statuses:
            raise Invalid(join(at, "status"), status, f"must be one of {', '.join(statuses)} (the spec's SubtaskState)")
        if operation is not None and operation not in operations:
            raise Invalid(join(at, "operation"), operation,
                          f"must be one of {', '.join(operations)} (the spec's SubtaskOperation)")
        runs = _next_runs(item["nextRuns"], join(at, "nextRuns")) if "nextRuns" in item else None
        plans[sid] = SubtaskPlan(status, operation, runs)
    return plans


def parse(value: Any, spec: "Spec", default_name: str, source: str) -> ScenarioDoc:
    """A ScenarioDoc from a parsed YAML/JSON document; raises Invalid naming the key at fault."""
    check_keys(value, "", SCENARIO_KEYS, "a mapping (a scenario document)")
    name = value.get("name", default_name)
    if not isinstance(name, str) or not NAME.match(name):
        raise Invalid("name", name, "must be 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit")
    description = value.get("description", "")
    if not isinstance(description, str):
        raise Invalid("description", description, "must be a string")
    subtasks = _subtasks(value["subtasks"], "subtasks", spec) if value.get("subtasks") is not None else {}
    faults = parse_faults(value["faults"], "faults", spec) if "faults" in value else None
    if not subtasks and faults is None:
        raise Invalid("", value, "sets nothing: give subtasks, faults or both")
    return ScenarioDoc(name, description.strip(), source, subtasks, faults)


def parse_text(text: str | bytes, spec: "Spec", default_name: str, source: str) -> list[ScenarioDoc]:
    """Every document of a YAML (or JSON) text; a text with several documents (---) needs a name in each."""
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except RecursionError:
        raise Invalid("", None, "is nested too deeply") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise Invalid("", None, f"is neither YAML nor JSON{where}: {problem}") from None
    if not docs:
        raise Invalid("", None, "is empty; a scenario sets subtasks, faults or both")
    if len(docs) > 1 and not all(isinstance(d, dict) and "name" in d for d in docs):
        raise Invalid("name", None, "is needed in every document of a file that holds several (---)")
    return [parse(doc, spec, default_name, source) for doc in docs]


def load_files(paths: list[str], spec: "Spec") -> list[ScenarioDoc]:
    """The scenarios of the files given at start-up, in order. Raises Invalid with the file's name in the message."""
    found: list[ScenarioDoc] = []
    for path in paths:
        file = Path(path)
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise Invalid("", path, f"scenario file {path}: cannot be read ({exc.__class__.__name__}: "
                                    f"{getattr(exc, 'strerror', None) or exc})") from None
        try:
            docs = parse_text(text, spec, file.stem, str(file))
        except Invalid as exc:
            raise Invalid("", exc.value, f"scenario file {path}: {exc}") from None
        for doc in docs:
            twin = next((d for d in found if d.name == doc.name), None)
            if twin is not None:
                raise Invalid("", doc.name, f"scenario file {path}: the name {doc.name!r} is already used by "
                                            f"{twin.source}; give one of them another name")
            found.append(doc)
    return found


# ------------------------------------------------------------------------------------------------ applying

def applied(store: Store) -> list[str]:
    raw = store.meta_value(APPLIED_KEY)
    return orjson.loads(raw) if raw else []


def apply(mock: "Mock", board: FaultBoard, doc: ScenarioDoc) -> dict:
    """Applies DOC to the world in one transaction; raises OcpError (404, 409) and changes nothing when it cannot."""
    store, runtime = mock.store, mock.runtime
    refuse = f"Scenario {doc.name!r} was not applied (nothing changed): "

    def work(conn, change):
        by_task: dict[int, list[int]] = {}
        for sid in sorted(doc.subtasks):
            task_id = store.task_id_of(conn, sid)
            if task_id is None:
                raise OcpError(404, TASK_NOT_EXISTS, f"{refuse}subtasks.{sid}: no subtask has this id in the current "
                                                     f"world (seed {store.meta(conn, 'seed')}).")
            by_task.setdefault(task_id, []).append(sid)
        for task_id, sids in sorted(by_task.items()):
            change(task_id, lambda sl, now, ctx, sids=sids: _apply_to_task(doc, sids, sl, now, ctx, refuse))
        if doc.faults is not None:
            board.write(conn, doc.faults)
        names = [*orjson.loads(store.meta(conn, APPLIED_KEY) or "[]"), doc.name][-MAX_APPLIED:]
        store.set_meta(conn, APPLIED_KEY, orjson.dumps(names).decode())
        return names

    names = runtime.batch(work)
    if doc.faults is not None:
        board.changed()
    result = {"name": doc.name, "applied": names, "subtasks": []}
    for sid in sorted(doc.subtasks):
        row = store.subtask(sid)
        if row is not None:
            result["subtasks"].append({"id": sid, "taskId": row.task_id, "status": row.status,
                                       "operation": row.operation, "engine": runtime.subtask_engine_state(sid)})
    faults = board.current()
    result["faults"] = faults.as_dict() if faults else None
    return result


def _apply_to_task(doc: ScenarioDoc, sids: list[int], sl, now: int, ctx, refuse: str):
    """The task's slice after DOC's states (the admin set-state's rule, each in turn, then the invariants over the
    end result) and run plans."""
    for sid in sids:
        plan = doc.subtasks[sid]
        if plan.status or plan.operation:
            sl = engine.force_state(sl, now, ctx, sid, plan.status, plan.operation, ADMIN_EXECUTOR, lambda _: None)
    problems = check_invariants([sl.subs[i].doc for i in sorted(sl.subs)])
    if problems:
        raise OcpError(409, CODE_GENERIC, f"{refuse}it would break the world's consistency: {'; '.join(problems)}. "
                                          "A subtask leaves PENDING only once its upstreams are SUCCESSFUL: set "
                                          "them in the same scenario.")
    for sid in sids:
        plan = doc.subtasks[sid]
        if plan.next_runs is not None:
            sl = engine.set_scenario(sl, now, ctx, sid, plan.next_runs)
    return sl


def reset(mock: "Mock") -> dict:
    """The seeded world of the start-up seed, no faults, no scenario applied: a world reset drops the stored faults
    and the applied list with the rest of the world's meta (and faults.py's reset hook tells every process)."""
    seed = mock.reset()
    return {"seed": seed, **mock.store.counts()}


class Registry:
    """The scenarios loaded at start-up, by name (every process loads the same files)."""

    def __init__(self, docs: list[ScenarioDoc]):
        self.docs = {d.name: d for d in docs}

    def get(self, name: Any) -> ScenarioDoc:
        if not isinstance(name, str) or name not in self.docs:
            known = ", ".join(self.docs) or "none (start the mock with --scenario FILE)"
            raise OcpError(404, CODE_GENERIC, f"No scenario named {shown(name)} was loaded at start-up; loaded: {known}. "
                                              "Or send the scenario itself (YAML or JSON) as the body.")
        return self.docs[name]


def init_app(app: "Flask", mock: "Mock") -> None:
    """Loads Config.scenario_files and, when Config.apply_scenarios, applies them in order. Raises ValueError
    (Invalid) with a one-line reason when a file is bad or cannot be applied."""
    config = mock.config
    docs = load_files(config.scenario_files, mock.spec) if config.scenario_files else []
    app.extensions[REGISTRY] = Registry(docs)
    if config.apply_scenarios:
        board = app.extensions[BOARD]
        for doc in docs:
            try:
                apply(mock, board, doc)
            except OcpError as exc:
                raise Invalid("", doc.source, f"scenario file {doc.source}: {exc.message}") from None


# -------------------------------------------------------------------------------------------- admin API

def _body() -> Any:
    raw = request.get_data(cache=False)
    if not raw.strip():
        raise OcpError(400, CODE_GENERIC, "A body is required: a scenario (YAML or JSON), or {\"name\": ...} of one "
                                          "loaded at start-up.")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        if "json" in (request.mimetype or ""):
            raise OcpError(400, CODE_GENERIC, "The body is not valid JSON.") from None
    try:
        return yaml.safe_load(raw)
    except RecursionError:
        raise OcpError(400, CODE_GENERIC, "The body is nested too deeply.") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise OcpError(400, CODE_GENERIC, f"The body is neither JSON nor YAML{where}: "
                                          f"{getattr(exc, 'problem', None) or exc}") from None


def make_blueprint(mock: "Mock") -> Blueprint:
    """/__mock/scenarios and /__mock/faults, nested in the admin blueprint (its token check and clock catch-up)."""
    bp = Blueprint("scenarios", __name__)

    def board() -> FaultBoard:
        return current_app.extensions[BOARD]

    def registry() -> Registry:
        return current_app.extensions[REGISTRY]

    def ok(data) -> object:
        return mock.success(200, dump_data(data))

    def faults_state() -> dict:
        faults = board().current()
        return faults.as_dict() if faults else {"seed": 0, "rules": []}

    @bp.get("/scenarios")
    def list_scenarios():
        return ok({"scenarios": [d.summary() for d in registry().docs.values()], "applied": applied(mock.store),
                   "faults": faults_state()})

    @bp.post("/scenarios")
    def apply_scenario():
        body = _body()
        try:
            if isinstance(body, dict) and set(body) == {"name"}:  # one loaded at start-up
                doc = registry().get(body["name"])
            else:
                doc = parse(body, mock.spec, "inline", "inline")
        except Invalid as exc:
            raise exc.as_ocp_error(prefix="Invalid scenario: ") from None
        return ok(apply(mock, board(), doc))

    @bp.post("/scenarios/reset")
    def reset_scenarios():
        return ok(reset(mock))

    @bp.get("/faults")
    def get_faults():
        return ok(faults_state())

    @bp.put("/faults")
    def put_faults():
        body = _body()
        try:
            faults = parse_faults({"rules": body} if isinstance(body, list) else body, "", mock.spec)
        except Invalid as exc:
            raise exc.as_ocp_error(prefix="Invalid fault set: ") from None
        board().set(faults)
        return ok(faults_state())

    @bp.delete("/faults")
    def delete_faults():
        board().set(None)
        return ok(faults_state())

    return bp
