"""The seeded world of OCP task instances and subtask instances served by the mock.

``build_world(seed)`` makes a deterministic set of tasks, each a small DAG of subtasks, in the wire
form of ``openapi.yaml``'s ``SubtaskInstance``: keys in alphabetical order, optional fields absent
rather than null, times ISO-8601 in +08:00 with milliseconds.

Task 1000 is a fixed fixture whatever the seed (subtask 10001 is FAILED and can be retried);
the other tasks are drawn from realistic OCP task templates with Faker, seeded locally.

``check_invariants(subtasks)`` checks the rules every subtask list must keep, also after the mock
has changed subtasks (a retried subtask is READY with operation RETRY and keeps startTime and executor).

Importing this module is cheap: Faker is imported only by ``build_world``, and not at all for a world already in
the folder given to ``share_built_worlds`` (`ocp-mock serve`'s processes share the worlds they built there).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, NamedTuple

import orjson

from .config import DEFAULT_SEED, SPEC_PATH
from .spec import load_spec

__all__ = [
    "DEFAULT_SEED",
    "FIXTURE_TASK_ID",
    "FIXTURE_FAILED_SUBTASK_ID",
    "FINISHED",
    "STARTED",
    "SUBTASK_STATES",
    "SUBTASK_OPERATIONS",
    "TASK_STATES",
    "TASK_OPERATIONS",
    "TASK_TYPES",
    "NODE_TYPE",
    "TZ",
    "ANCHOR",
    "Step",
    "TaskTemplate",
    "TASK_TEMPLATES",
    "FIXTURE_TEMPLATE",
    "STEP_NAMES",
    "World",
    "build_world",
    "share_built_worlds",
    "check_invariants",
    "derive_task_status",
    "task_prohibits_rollback",
    "check_task",
    "format_time",
    "parse_time",
]  # OcpProvider is importable too, but built on first access (it imports Faker)

FIXTURE_TASK_ID = 1000
FIXTURE_FAILED_SUBTASK_ID = 10001
FIRST_SUBTASK_ID = 10000

FINISHED = frozenset({"FAILED", "SUCCESSFUL"})
STARTED = frozenset({"RUNNING", "CANCELING", "FAILED", "SUCCESSFUL"})

# Every enum is the spec's (one fact, one place).
_SPEC = load_spec(str(SPEC_PATH))
SUBTASK_STATES = _SPEC.enum("SubtaskState")
SUBTASK_OPERATIONS = _SPEC.enum("SubtaskOperation")
TASK_STATES = _SPEC.enum("TaskState")
TASK_OPERATIONS = _SPEC.enum("TaskOperation")
TASK_TYPES = _SPEC.enum("TaskType")
NODE_TYPE = _SPEC.enum("NodeType")[0]

TZ = timezone(timedelta(hours=8))
ANCHOR = datetime(2024, 11, 1, 8, 0, 0, tzinfo=TZ)

# Statuses during which a task still has work in flight: a task with any of these is RUNNING (and the engine has a
# transition planned for the subtask).
ACTIVE = frozenset({"READY", "RUNNING", "CANCELING"})
# A subtask whose rollback (or skip during a rollback) finished is PENDING again, with these operations; it keeps
# the startTime and executor of the runs it had.
ROLLED_BACK_OPERATIONS = frozenset({"ROLLBACK", "ROLLBACK_SKIP"})


# --------------------------------------------------------------------------------------------
# Task templates
# --------------------------------------------------------------------------------------------


class Step(NamedTuple):
    """One node of a task template; a parallel step becomes one subtask per host."""

    name: str
    parallel: bool = False


def _p(name: str) -> Step:
    return Step(name, True)


@dataclass(frozen=True)
class TaskTemplate:
    name: str
    definition_id: int
    steps: tuple[Step, ...]
    type: str = "MANUAL"
    weight: int = 10


# Steps whose subtasks cannot be rolled back; a task holding one has prohibitRollback true.
_PROHIBIT_ROLLBACK_STEPS = frozenset(
    {"Drop tenant", "Drop resource pool", "Upgrade OBServer", "Run upgrade post script"}
)

FIXTURE_TEMPLATE = TaskTemplate(
    "Add host",
    11,
    (Step("Check host environment"), _p("Install ocp agent"), Step("Start ocp agent")),
)

TASK_TEMPLATES: tuple[TaskTemplate, ...] = (
    FIXTURE_TEMPLATE,
    TaskTemplate(
        "Install OCP agent on hosts",
        12,
        (
            Step("Check host environment"),
            Step("Register host"),
            _p("Install ocp agent"),
            Step("Start ocp agent"),
            Step("Check ocp agent status"),
            Step("Clean up install package"),
        ),
    ),
    TaskTemplate(
        "Uninstall OCP agent",
        13,
        (Step("Stop ocp agent"), _p("Uninstall ocp agent"), Step("Clean up install package")),
        weight=6,
    ),
    TaskTemplate(
        "Create cluster",
        21,
        (
            Step("Check host environment"),
            _p("Pull OceanBase image"),
            _p("Initialize OBServer"),
            Step("Bootstrap cluster"),
            Step("Create proxyro user"),
            Step("Register cluster"),
        ),
    ),
    TaskTemplate(
        "Upgrade cluster",
        22,
        (
            Step("Check cluster status"),
            Step("Pull OceanBase image"),
            _p("Upgrade OBServer"),
            Step("Run upgrade post script"),
            Step("Check cluster version"),
        ),
        weight=6,
    ),
    TaskTemplate(
        "Restart cluster",
        23,
        (Step("Check cluster status"), _p("Restart OBServer"), Step("Check OBServer status")),
        weight=6,
    ),
    TaskTemplate(
        "Create tenant",
        31,
        (
            Step("Check cluster resources"),
            Step("Create resource pool"),
            Step("Create tenant"),
            Step("Set tenant parameters"),
            Step("Set tenant whitelist"),
        ),
    ),
    TaskTemplate(
        "Delete tenant",
        32,
        (
            Step("Check tenant status"),
            Step("Lock tenant"),
            Step("Drop tenant"),
            Step("Drop resource pool"),
            Step("Clean up tenant metadata"),
        ),
        weight=6,
    ),
    TaskTemplate(
        "Take backup",
        41,
        (
            Step("Check backup configuration"),
            Step("Take full backup"),
            Step("Validate backup"),
            Step("Clean up expired backups"),
        ),
        type="SCHEDULED",
        weight=8,
    ),
    TaskTemplate(
        "Sync host info",
        51,
        (_p("Collect host info"), Step("Update host metadata")),
        type="SYS_SCHEDULED",
        weight=4,
    ),
    TaskTemplate(
        "Clean up expired logs",
        52,
        (_p("Clean up OBServer logs"), Step("Report cleanup result")),
        type="SYS_SCHEDULED",
        weight=3,
    ),
)

STEP_NAMES = frozenset(step.name for t in TASK_TEMPLATES for step in t.steps)


# --------------------------------------------------------------------------------------------
# Times
# --------------------------------------------------------------------------------------------


def format_time(dt: datetime) -> str:
    """ISO-8601 with offset, milliseconds always written: ``2021-08-25T15:09:35.626+08:00``."""
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise ValueError(f"format_time needs an aware datetime, got naive {dt!r}")
    return dt.isoformat(timespec="milliseconds")


_PARSED_TIMES: dict[str, datetime] = {}  # text -> its datetime (a value: datetimes are immutable)
PARSED_TIMES_KEPT = 4096  # past it the memo starts afresh


def parse_time(value: str) -> datetime:
    """Parse a wire time (ISO-8601 with offset; ``Z`` accepted). Raises ValueError if invalid or naive.
    Each text is parsed once per process (up to PARSED_TIMES_KEPT of them): a forced state's invariants parse its
    subtask's and its neighbours' times on every call."""
    dt = _PARSED_TIMES.get(value) if type(value) is str else None
    if dt is not None:
        return dt
    if not isinstance(value, str):
        raise ValueError(f"not a string: {value!r}")
    text = value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        raise ValueError(f"no UTC offset: {value!r}")
    if len(_PARSED_TIMES) >= PARSED_TIMES_KEPT:
        _PARSED_TIMES.clear()
    _PARSED_TIMES[value] = dt
    return dt


def _t(ms: int) -> str:
    """Format a time given in milliseconds after ANCHOR."""
    return format_time(ANCHOR + timedelta(milliseconds=ms))


def derive_task_status(statuses: Iterable[str], operation: str | None = None) -> str:
    """A task's status from its subtasks' statuses (and the task's operation).

    SUCCESSFUL if every subtask is SUCCESSFUL (while the task rolls back, OPERATION ROLLBACK: if every
    subtask is PENDING again, as OCP's TaskCoordinator decides); FAILED if one is FAILED and none is
    READY, RUNNING or CANCELING; RUNNING otherwise.
    """
    seen = set(statuses)
    if seen <= ({"PENDING"} if operation == "ROLLBACK" else {"SUCCESSFUL"}):
        return "SUCCESSFUL"
    if "FAILED" in seen and not (seen & ACTIVE):
        return "FAILED"
    return "RUNNING"


def task_prohibits_rollback(subtasks: Iterable[Mapping]) -> bool:
    """OCP's rule (TaskInstanceManagerImpl.prohibitRollback): a task cannot be rolled back once a subtask that
    prohibits rollback has run, i.e. is neither PENDING nor READY."""
    return any(s["prohibitRollback"] and s["status"] not in ("PENDING", "READY") for s in subtasks)


# --------------------------------------------------------------------------------------------
# Faker provider (built lazily so that importing this module does not import Faker)
# --------------------------------------------------------------------------------------------

_PROVIDER_CLASS: type | None = None


def _ocp_provider_class() -> type:
    global _PROVIDER_CLASS
    if _PROVIDER_CLASS is not None:
        return _PROVIDER_CLASS

    from faker.providers import BaseProvider

    class OcpProvider(BaseProvider):
        """OCP-shaped fake data: task templates, OCP server addresses, timeouts, durations."""

        def _choices(self, population, weights):
            return self.generator.random.choices(population, weights=weights, k=1)[0]

        def ocp_task_template(self) -> TaskTemplate:
            return self._choices(TASK_TEMPLATES, [t.weight for t in TASK_TEMPLATES])

        def ocp_private_network(self) -> str:
            """The first three octets of a private /24: 10.x.y, 172.16-31.y or 192.168.y."""
            kind = self._choices(("10", "172", "192"), (5, 3, 2))
            if kind == "10":
                return f"10.{self.random_int(0, 255)}.{self.random_int(0, 255)}"
            if kind == "172":
                return f"172.{self.random_int(16, 31)}.{self.random_int(0, 255)}"
            return f"192.168.{self.random_int(0, 255)}"

        def ocp_executor(self, network: str | None = None) -> str:
            """An IPv4 host address in a private range (never .0 or .255)."""
            net = network or self.ocp_private_network()
            return f"{net}.{self.random_int(1, 254)}"

        def ocp_server_pool(self, size: int = 3) -> list[str]:
            """Addresses of an OCP cluster's servers: distinct hosts in one private /24."""
            net = self.ocp_private_network()
            hosts = self.generator.random.sample(range(1, 255), size)
            return [f"{net}.{h}" for h in hosts]

        def ocp_timeout(self) -> int:
            return self._choices((600, 1800, 3600), (5, 4, 2))

        def ocp_host_count(self) -> int:
            return self._choices((1, 2, 3, 4, 5), (2, 5, 5, 3, 1))

        def ocp_step_duration_ms(self) -> int:
            """How long one subtask ran: mostly seconds, sometimes minutes."""
            lo, hi = self._choices(
                ((150, 2_000), (2_000, 30_000), (30_000, 240_000), (240_000, 540_000)),
                (4, 5, 3, 1),
            )
            return self.random_int(lo, hi)

        def ocp_creator(self, task_type: str) -> str:
            if task_type == "SYS_SCHEDULED":
                return "system"
            if task_type == "SCHEDULED" or self.generator.random.random() < 0.5:
                return "admin"
            return self.generator.user_name()

    _PROVIDER_CLASS = OcpProvider
    return OcpProvider


def __getattr__(name: str) -> Any:  # module attribute OcpProvider, built on first access
    if name == "OcpProvider":
        return _ocp_provider_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _make_faker(seed: int):
    from faker import Faker

    fake = Faker("en_US")
    fake.seed_instance(seed)
    fake.add_provider(_ocp_provider_class())
    return fake


# --------------------------------------------------------------------------------------------
# The world
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class World:
    seed: int
    tasks: list[dict]  # task dicts, ordered by id
    subtasks: list[dict]  # SubtaskInstance dicts (wire form), ordered by id
    subtask_task: dict[int, int]  # subtask id -> task id


class _Member(NamedTuple):
    """The planned state of one subtask: status, operation, runTime."""

    status: str
    operation: str = "EXECUTE"
    run_time: int = 1


def _emit_task(
    fake,
    *,
    task_id: int,
    template: TaskTemplate,
    plan: list[list[_Member]],
    timeouts: list[int],
    first_sid: int,
    create_ms: int,
    servers: list[str],
    task_type: str,
    creator: str,
) -> tuple[dict, list[dict]]:
    """Build one task and its subtasks from a plan (one list of members per template step)."""
    rnd = fake.random
    start_ms = create_ms + rnd.randint(5, 800)
    create = _t(create_ms)
    cursor = start_ms  # the time the current step may start (after its upstreams finished)
    previous_ids: list[int] = []
    level_ids: list[list[int]] = []
    sid = first_sid
    for members in plan:
        level_ids.append(list(range(sid, sid + len(members))))
        sid += len(members)

    subtasks: list[dict] = []
    last_finish = start_ms
    series = 0
    for li, (step, members) in enumerate(zip(template.steps, plan)):
        ids = level_ids[li]
        downstream = level_ids[li + 1] if li + 1 < len(level_ids) else []
        finishes: list[int] = []
        for idx, (sub_id, member) in enumerate(zip(ids, members)):
            series += 1
            d: dict[str, Any] = {
                "id": sub_id,
                "seriesId": series,
                "name": step.name,
                "description": step.name,
                "timeout": timeouts[li],
                "status": member.status,
                "operation": member.operation,
                "runTime": member.run_time,
                "createTime": create,
                "nodeType": NODE_TYPE,
                "parallelIdx": idx if step.parallel else -1,
                "upstreams": list(previous_ids),
                "downstreams": list(downstream),
                "prohibitRollback": step.name in _PROHIBIT_ROLLBACK_STEPS,
            }
            if member.status in STARTED:
                s_ms = cursor + rnd.randint(20, 1500)
                d["startTime"] = _t(s_ms)
                d["executor"] = rnd.choice(servers)
                if member.status in FINISHED:
                    dur = min(fake.ocp_step_duration_ms(), timeouts[li] * 1000 - 1)
                    f_ms = s_ms + dur
                    d["finishTime"] = _t(f_ms)
                    finishes.append(f_ms)
                    last_finish = max(last_finish, f_ms)
            subtasks.append(dict(sorted(d.items())))
        if finishes:
            cursor = max(finishes)
        previous_ids = ids

    ops = {s["operation"] for s in subtasks}
    operation = "ROLLBACK" if "ROLLBACK" in ops else "RETRY" if "RETRY" in ops else "EXECUTE"
    status = derive_task_status((s["status"] for s in subtasks), operation)
    task: dict[str, Any] = {
        "id": task_id,
        "name": template.name,
        "taskDefinitionId": template.definition_id,
        "status": status,
        "type": task_type,
        "operation": operation,
        "creator": {"name": creator},
        "executor": servers[0] if task_type == "SYS_SCHEDULED" else rnd.choice(servers),
        "createTime": create,
        "startTime": _t(start_ms),
        "prohibitRollback": task_prohibits_rollback(subtasks),
        "subtaskIds": [s["id"] for s in subtasks],
    }
    if status != "RUNNING":
        task["finishTime"] = _t(last_finish + rnd.randint(10, 500))
    return dict(sorted(task.items())), subtasks


def _fixture_plan() -> list[list[_Member]]:
    return [
        [_Member("SUCCESSFUL")],
        [_Member("FAILED"), _Member("RUNNING"), _Member("CANCELING"), _Member("READY")],
        [_Member("PENDING")],
    ]


# The subtasks of the fixture task, whatever the seed.
FIXTURE_SUBTASK_IDS = range(FIRST_SUBTASK_ID, FIRST_SUBTASK_ID + sum(map(len, _fixture_plan())))


def _plan_task(fake, scenario: str, sizes: list[int]) -> list[list[_Member]]:
    """Statuses for a task in a coherent state.

    A prefix of steps SUCCESSFUL; then, for "FAILED", one step with failed member(s); for
    "RUNNING", one step in flight; everything after that step PENDING.
    """
    rnd = fake.random
    n = len(sizes)
    stop = n if scenario == "SUCCESSFUL" else rnd.randrange(n)
    plan: list[list[_Member]] = []
    for li, size in enumerate(sizes):
        if li < stop:
            statuses = ["SUCCESSFUL"] * size
        elif li > stop:
            statuses = ["PENDING"] * size
        elif scenario == "FAILED":
            statuses = ["FAILED" if rnd.random() < 0.4 else "SUCCESSFUL" for _ in range(size)]
            statuses[rnd.randrange(size)] = "FAILED"
        else:  # RUNNING
            if size == 1:
                statuses = [rnd.choices(("RUNNING", "READY", "CANCELING"), (8, 2, 1))[0]]
            else:
                statuses = [
                    rnd.choices(("RUNNING", "SUCCESSFUL", "READY", "FAILED", "CANCELING"), (5, 4, 2, 1, 1))[0]
                    for _ in range(size)
                ]
                statuses[rnd.randrange(size)] = "RUNNING"
        members = []
        for st in statuses:
            if st == "FAILED" and scenario == "FAILED" and rnd.random() < 0.12:
                members.append(_Member(st, "ROLLBACK", 1))  # the rollback of this step failed
            elif st in ("RUNNING", "FAILED", "SUCCESSFUL") and rnd.random() < 0.06:
                members.append(_Member(st, "RETRY", rnd.choice((2, 2, 2, 3))))
            else:
                members.append(_Member(st))
        plan.append(members)
    return plan


_SHARED: Path | None = None  # share_built_worlds' folder


def share_built_worlds(folder: str | None) -> None:
    """From now on, build_world keeps each world it builds in FOLDER (a private folder that the processes of one
    server share, and that lives no longer than the code that wrote it) and returns the one there when it has
    been built before, by this process or another. So a worker that resets to the seed it started with never
    imports Faker (~8 MB of RSS in each process). None: build every time."""
    global _SHARED
    _SHARED = Path(folder) if folder else None


def build_world(seed: int = DEFAULT_SEED, task_count: int = 40) -> World:
    """Build the deterministic world for ``seed``: task 1000 (the fixture) then tasks 1001.. ."""
    if task_count < 1:
        raise ValueError("task_count must be at least 1 (the fixture task)")
    if _SHARED is None:
        return _build_world(seed, task_count)
    file = _SHARED / f"world-{seed}-{task_count}.json"
    try:
        doc = orjson.loads(file.read_bytes())
        return World(seed, doc["tasks"], doc["subtasks"], dict(doc["subtask_task"]))
    except FileNotFoundError:
        pass
    world = _build_world(seed, task_count)
    part = file.with_name(f"{file.name}.{os.getpid()}-{threading.get_ident()}")
    part.write_bytes(orjson.dumps({"tasks": world.tasks, "subtasks": world.subtasks,
                                   "subtask_task": list(world.subtask_task.items())}))
    os.replace(part, file)  # whole or absent for the other processes
    return world


def _build_world(seed: int, task_count: int) -> World:
    fake = _make_faker(seed)
    rnd = fake.random
    servers = fake.ocp_server_pool(3)

    tasks: list[dict] = []
    subtasks: list[dict] = []
    subtask_task: dict[int, int] = {}
    n_failed = 0

    create_ms = rnd.randint(0, 30 * 60_000)
    sid = FIRST_SUBTASK_ID
    for i in range(task_count):
        task_id = FIXTURE_TASK_ID + i
        if i == 0:
            template = FIXTURE_TEMPLATE
            plan = _fixture_plan()
            timeouts = [600, 1800, 600]
            task_type, creator = "MANUAL", "admin"
        else:
            # The task's end state: a seeded draw, turned FAILED when too few FAILED tasks came so far
            # (at least 3 among tasks 1001..1019), decided task by task so that a smaller world is a
            # prefix of a larger one with the same seed.
            scenario = rnd.choices(("SUCCESSFUL", "FAILED", "RUNNING"), (50, 30, 20))[0]
            if scenario != "FAILED" and n_failed < (i + 1) // 6:
                scenario = "FAILED"
            n_failed += scenario == "FAILED"
            template = fake.ocp_task_template()
            hosts = fake.ocp_host_count()
            sizes = [hosts if step.parallel else 1 for step in template.steps]
            plan = _plan_task(fake, scenario, sizes)
            timeouts = [fake.ocp_timeout() for _ in template.steps]
            task_type = template.type
            creator = fake.ocp_creator(task_type)
        task, subs = _emit_task(
            fake,
            task_id=task_id,
            template=template,
            plan=plan,
            timeouts=timeouts,
            first_sid=sid,
            create_ms=create_ms,
            servers=servers,
            task_type=task_type,
            creator=creator,
        )
        tasks.append(task)
        subtasks.extend(subs)
        for s in subs:
            subtask_task[s["id"]] = task_id
        sid += len(subs)
        create_ms += rnd.randint(2 * 60_000, 6 * 3_600_000)

    return World(seed=seed, tasks=tasks, subtasks=subtasks, subtask_task=subtask_task)


# --------------------------------------------------------------------------------------------
# Invariants
# --------------------------------------------------------------------------------------------


def _is_int(v: Any) -> bool:
    return type(v) is int or (isinstance(v, int) and not isinstance(v, bool))


_TIME_KEYS = ("createTime", "startTime", "finishTime")  # a subtask's times, in the order they must follow


def _check_one(sid: int, s: Mapping) -> tuple[list[str], dict[str, datetime]]:
    errs: list[str] = []
    p = f"subtask {sid}:"
    status = s.get("status")
    if status not in SUBTASK_STATES:
        errs.append(f"{p} status {status!r} is not one of {', '.join(SUBTASK_STATES)}")
    if "operation" in s and s["operation"] not in SUBTASK_OPERATIONS:
        errs.append(f"{p} operation {s['operation']!r} is not one of {', '.join(SUBTASK_OPERATIONS)}")
    if s.get("description") != s.get("name"):
        errs.append(f"{p} description {s.get('description')!r} differs from name {s.get('name')!r}")
    pidx = s.get("parallelIdx")
    if not _is_int(pidx) or pidx < -1:
        errs.append(f"{p} parallelIdx {pidx!r} is neither -1 nor a non-negative integer")
    if "runTime" in s and (not _is_int(s["runTime"]) or s["runTime"] < 1):
        errs.append(f"{p} runTime {s['runTime']!r} is not an integer >= 1")

    has_finish = "finishTime" in s
    if status in SUBTASK_STATES and has_finish != (status in FINISHED):
        if has_finish:
            errs.append(f"{p} has finishTime but status {status} is not finished")
        else:
            errs.append(f"{p} status {status} has no finishTime")
    has_start = "startTime" in s
    # (a status or operation that is not one of the spec's may be unhashable: the sets below would raise)
    if status in SUBTASK_STATES and status in STARTED and not has_start:
        errs.append(f"{p} status {status} has no startTime")
    if status == "PENDING" and has_start and not (isinstance(s.get("operation"), str)
                                                  and s["operation"] in ROLLED_BACK_OPERATIONS):
        errs.append(f"{p} status PENDING has a startTime although it never ran")
    if has_start != ("executor" in s):
        if has_start:
            errs.append(f"{p} has startTime but no executor")
        else:
            errs.append(f"{p} has executor but no startTime")
    elif "executor" in s and (not isinstance(s["executor"], str) or not s["executor"]):
        errs.append(f"{p} executor {s['executor']!r} is not a non-empty string")

    times: dict[str, datetime] = {}
    for key in _TIME_KEYS:
        if key in s:
            try:
                times[key] = parse_time(s[key])
            except (ValueError, TypeError) as exc:
                errs.append(f"{p} {key} {s[key]!r} is not an ISO-8601 time with offset ({exc})")
    order = [k for k in _TIME_KEYS if k in times]
    for a, b in zip(order, order[1:]):
        if times[a] > times[b]:
            errs.append(f"{p} {a} {s[a]} is after {b} {s[b]}")
    return errs, times


def _known(o: Any, by_id: Mapping) -> bool:
    """Whether O is the id of a subtask in BY_ID; False for an unhashable O (a list where an id belongs), which
    _own_links reports."""
    try:
        return o in by_id
    except TypeError:
        return False


def _times(s: Mapping) -> dict[str, datetime]:
    """A subtask's times that parse (a neighbour's, under check_invariants' focus)."""
    parsed = {key: _time_of(s, key) for key in _TIME_KEYS}
    return {key: dt for key, dt in parsed.items() if dt is not None}


def _time_of(s: Mapping, key: str) -> datetime | None:
    """One of a subtask's times, when it has it and it parses."""
    if key not in s:
        return None
    try:
        return parse_time(s[key])
    except (ValueError, TypeError):
        return None


def check_invariants(subtasks: Iterable[dict], changed: Iterable[int] | None = None) -> list[str]:
    """Check the world's rules over ``subtasks``; returns [] when all hold.

    One readable message per violation, each starting with ``subtask <id>:``. The subtasks may be
    any set that is closed under upstream/downstream links (e.g. a whole world, or one task's).
    A READY subtask may keep startTime and executor (the state a retry or skip leaves), and so may a PENDING one
    whose operation is ROLLBACK or ROLLBACK_SKIP (a subtask rolled back: it ran, and was undone).

    ``changed``: the ids of the subtasks whose state (status, operation, times, executor) a change just set, in a
    set that kept every rule before and whose links the change left alone (the admin API's forced state). Then
    only the rules that can have broken are checked: each changed subtask's own, and those between it and its
    upstreams and downstreams (of a neighbour, only its times and links take part: it kept its own rules); the
    links' shape, their symmetry and cycles, which the change did not touch, are not looked at again. The answer
    is the same as without ``changed`` (tests/test_world.py), for about a quarter of the work on task 1000 (16
    against 69 µs, in one process, alternating); one changed subtask (the admin API's case) has its own loop,
    _check_focused, and before it a verdict without messages, _focused_holds, which answers the case that passes.
    """
    errors: list[str] = []
    by_id: dict[int, Mapping] = {}
    for i, s in enumerate(subtasks):
        if type(s) is not dict and not isinstance(s, Mapping):  # (the ABC check alone costs ~0.3 µs a subtask)
            errors.append(f"subtask #{i}: is not an object ({type(s).__name__})")
            continue
        sid = s.get("id")
        if not _is_int(sid):
            errors.append(f"subtask #{i} (id {sid!r}): id is not an integer")
            continue
        if sid in by_id:
            errors.append(f"subtask {sid}: duplicate id")
            continue
        by_id[sid] = s

    focus = None if changed is None else {sid for sid in changed if sid in by_id}
    if focus is not None and len(focus) == 1:  # the admin API's forced state: one subtask
        sid = next(iter(focus))
        if not errors and _focused_holds(by_id, sid):
            return errors
        return _check_focused(by_id, sid, errors)
    near = by_id if focus is None else focus | {
        o for sid in focus for field in ("upstreams", "downstreams")
        for o in (by_id[sid].get(field) if isinstance(by_id[sid].get(field), list) else ()) if _known(o, by_id)}
    times: dict[int, dict[str, datetime]] = {}
    links: dict[int, dict[str, list[int]]] = {}
    for sid, s in by_id.items():
        if sid not in near:
            continue
        if focus is not None and sid not in focus:  # a neighbour the change left alone kept its own rules:
            times[sid] = _times(s)  # only its times and links take part
            links[sid] = {field: [o for o in s[field] if _known(o, by_id)] if isinstance(s.get(field), list) else []
                          for field in ("upstreams", "downstreams")}
            continue
        errs, times[sid] = _check_one(sid, s)
        errors.extend(errs)
        links[sid] = _own_links(sid, s, by_id, errors)

    # Both directions agree; a started subtask's upstreams are done.
    for sid, s in by_id.items():
        if sid not in near:
            continue
        for field, mirror in (("upstreams", "downstreams"), ("downstreams", "upstreams")):
            for o in links[sid][field] if focus is None else ():
                if sid not in links[o].get(mirror, ()):
                    errors.append(
                        f"subtask {sid}: lists {o} in its {field} but subtask {o} "
                        f"does not list {sid} in its {mirror}"
                    )
        # with a focus: the pairs that hold a changed subtask (each changed one's upstreams, and it as an upstream)
        ups = [u for u in links[sid]["upstreams"] if focus is None or sid in focus or u in focus]
        status = s.get("status")
        if status in SUBTASK_STATES and status != "PENDING":
            for u in ups:
                ust = by_id[u].get("status")
                if ust != "SUCCESSFUL":
                    errors.append(f"subtask {sid}: status {status} but its upstream {u} is {ust}, not SUCCESSFUL")
        start = times[sid].get("startTime")
        if start is not None and status != "PENDING":  # a rolled-back subtask ran before its upstreams' rollback
            for u in ups:
                ufin = times[u].get("finishTime")
                if ufin is not None and start < ufin:
                    errors.append(
                        f"subtask {sid}: startTime {s['startTime']} is before its upstream {u}'s "
                        f"finishTime {by_id[u]['finishTime']}"
                    )

    if focus is None:
        errors.extend(_find_cycles(by_id, links))
    return errors


_INT_ONLY = frozenset({int})


def _sound_links(sid: int, ids: Any, by_id: Mapping[int, Mapping]) -> bool:
    """Whether IDS is the list of a sound subtask SID, checked in C: exact ints (no bool, nothing unhashable),
    sorted without duplicates, not SID, all known: what _own_links' loop would find nothing wrong with."""
    if type(ids) is not list or not set(map(type, ids)) <= _INT_ONLY:
        return False
    unique = set(ids)
    return sid not in unique and unique <= by_id.keys() and ids == sorted(unique)


def _own_links(sid: int, s: Mapping, by_id: Mapping[int, Mapping], errors: list[str]) -> dict[str, list[int]]:
    """A subtask's upstreams and downstreams that name other known subtasks; what is wrong with them goes to ERRORS."""
    links = {}
    for field in ("upstreams", "downstreams"):
        ids = s.get(field)
        if _sound_links(sid, ids, by_id):
            links[field] = list(ids)
            continue
        if not isinstance(ids, list) or not all(_is_int(x) for x in ids):
            errors.append(f"subtask {sid}: {field} {ids!r} is not a list of subtask ids")
            links[field] = []
            continue
        if ids != sorted(set(ids)):
            errors.append(f"subtask {sid}: {field} {ids} is not sorted without duplicates")
        good = []
        for o in dict.fromkeys(ids):
            if o == sid:
                errors.append(f"subtask {sid}: lists itself in its {field}")
            elif o not in by_id:
                errors.append(f"subtask {sid}: {field} references unknown subtask {o}")
            else:
                good.append(o)
        links[field] = good
    return links


_STATE_SET = frozenset(SUBTASK_STATES)
_OPERATION_SET = frozenset(SUBTASK_OPERATIONS)


def _focused_holds(by_id: Mapping[int, Mapping], sid: int) -> bool:
    """Whether _check_focused(BY_ID, SID) would find nothing, decided without its messages: True only when each of
    its rules holds for the shapes the mock writes (exact ints, string times that parse); False when one fails or
    a value has any other shape, and then _check_focused says what is wrong. One function and no message text:
    the admin API's forced state checks on every call, and this is the case that passes (about half the cost)."""
    s = by_id[sid]
    status = s.get("status")
    if type(status) is not str or status not in _STATE_SET:
        return False
    operation = s.get("operation")
    if (operation is not None or "operation" in s) and (type(operation) is not str or operation not in _OPERATION_SET):
        return False
    if s.get("description") != s.get("name"):
        return False
    pidx = s.get("parallelIdx")
    if type(pidx) is not int or pidx < -1:
        return False
    if "runTime" in s and (type(s["runTime"]) is not int or s["runTime"] < 1):
        return False
    has_start = "startTime" in s
    if ("finishTime" in s) != (status in FINISHED) or (status in STARTED and not has_start):
        return False
    if status == "PENDING" and has_start and operation not in ROLLED_BACK_OPERATIONS:
        return False
    if has_start != ("executor" in s) or (has_start and (type(s["executor"]) is not str or not s["executor"])):
        return False
    last = start = finish = None
    for key in _TIME_KEYS:
        if key in s:
            dt = _time_of(s, key)
            if dt is None:
                return False
            if last is not None and last > dt:
                return False
            last = dt
            if key == "startTime":
                start = dt
            elif key == "finishTime":
                finish = dt
    ups, downs = s.get("upstreams"), s.get("downstreams")
    if not (_sound_links(sid, ups, by_id) and _sound_links(sid, downs, by_id)):
        return False
    if status != "PENDING":
        for u in ups:
            upstream = by_id[u]
            if upstream.get("status") != "SUCCESSFUL":
                return False
            if start is not None:
                ufin = _time_of(upstream, "finishTime")
                if ufin is not None and start < ufin:
                    return False
    for other in set(ups).union(downs):  # the neighbours that name SID among their upstreams (once is enough)
        o = by_id[other]
        oups = o.get("upstreams")
        if not isinstance(oups, list) or sid not in oups:
            continue
        ostatus = o.get("status")
        if ostatus == "PENDING":
            continue
        if status != "SUCCESSFUL" and ostatus in SUBTASK_STATES:
            return False
        if finish is not None:
            ostart = _time_of(o, "startTime")
            if ostart is not None and ostart < finish:
                return False
    return True


def _check_focused(by_id: Mapping[int, Mapping], sid: int, errors: list[str]) -> list[str]:
    """check_invariants with one changed subtask, SID: the same messages in the same order as its general loops
    give (tests/test_world.py), with the work only that subtask needs. The general loops would visit every
    subtask twice and parse every neighbour's times; this looks at the subtask's own rules and links, then, in
    the subtasks' order, at the pairs that hold it: it with each of its upstreams, each downstream with it."""
    s = by_id[sid]
    errs, own_times = _check_one(sid, s)
    errors.extend(errs)
    links = _own_links(sid, s, by_id, errors)
    near = {o for field in ("upstreams", "downstreams")
            for o in (s.get(field) if isinstance(s.get(field), list) else ()) if _known(o, by_id)}
    status = s.get("status")
    for other, o in by_id.items():
        if other == sid:
            ups = links["upstreams"]
            if status in SUBTASK_STATES and status != "PENDING":
                for u in ups:
                    ust = by_id[u].get("status")
                    if ust != "SUCCESSFUL":
                        errors.append(f"subtask {sid}: status {status} but its upstream {u} is {ust}, not SUCCESSFUL")
            start = own_times.get("startTime")
            if start is not None and status != "PENDING":
                for u in ups:
                    ufin = _time_of(by_id[u], "finishTime")
                    if ufin is not None and start < ufin:
                        errors.append(f"subtask {sid}: startTime {s['startTime']} is before its upstream {u}'s "
                                      f"finishTime {by_id[u]['finishTime']}")
            continue
        if other not in near:
            continue
        # a neighbour: its pairs with SID, SID as its upstream (as often as its upstreams name it)
        ups = o.get("upstreams")
        named = [u for u in ups if u == sid] if isinstance(ups, list) else []
        if not named:
            continue
        ostatus = o.get("status")
        if ostatus in SUBTASK_STATES and ostatus != "PENDING":
            for u in named:
                if status != "SUCCESSFUL":
                    errors.append(f"subtask {other}: status {ostatus} but its upstream {u} is {status}, not SUCCESSFUL")
        start = _time_of(o, "startTime")
        if start is not None and ostatus != "PENDING":
            ufin = own_times.get("finishTime")
            for u in named:
                if ufin is not None and start < ufin:
                    errors.append(f"subtask {other}: startTime {o['startTime']} is before its upstream {u}'s "
                                  f"finishTime {s['finishTime']}")
    return errors


def _find_cycles(by_id: Mapping[int, Mapping], links: Mapping[int, Mapping[str, list[int]]]) -> list[str]:
    """One message per dependency cycle found by a depth-first search (edges from either side)."""
    succ: dict[int, set[int]] = {sid: set() for sid in by_id}
    for sid in by_id:
        for d in links[sid]["downstreams"]:
            succ[sid].add(d)
        for u in links[sid]["upstreams"]:
            succ[u].add(sid)
    ordered = {sid: sorted(v) for sid, v in succ.items()}
    errors: list[str] = []
    state: dict[int, int] = {}  # 1 on the current path, 2 done
    for root in sorted(by_id):
        if root in state:
            continue
        state[root] = 1
        path = [root]
        stack = [iter(ordered[root])]
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
                continue
            mark = state.get(nxt)
            if mark is None:
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(ordered[nxt]))
            elif mark == 1:
                cycle = path[path.index(nxt):] + [nxt]
                errors.append(f"subtask {nxt}: dependency cycle {' -> '.join(map(str, cycle))}")
    return errors


def check_task(task: Mapping, subtasks: Iterable[Mapping]) -> list[str]:
    """The rules that tie a task to its subtasks (SUBTASKS: exactly the task's); [] when all hold."""
    members = list(subtasks)
    p = f"task {task.get('id')}:"
    errors = []
    if task.get("subtaskIds") is not None and task["subtaskIds"] != [s["id"] for s in members]:
        errors.append(f"{p} subtaskIds {task['subtaskIds']} differ from its subtasks {[s['id'] for s in members]}")
    expected = derive_task_status((s["status"] for s in members), task.get("operation"))
    if task.get("status") != expected:
        errors.append(f"{p} status {task.get('status')} but its subtasks make it {expected}")
    if ("finishTime" in task) != (task.get("status") != "RUNNING"):
        errors.append(f"{p} status {task.get('status')} {'with' if 'finishTime' in task else 'without'} a finishTime")
    if task.get("prohibitRollback") != task_prohibits_rollback(members):
        errors.append(f"{p} prohibitRollback {task.get('prohibitRollback')} disagrees with its subtasks")
    finishes = [parse_time(s["finishTime"]) for s in members if "finishTime" in s]
    if "finishTime" in task and finishes and parse_time(task["finishTime"]) < max(finishes):
        errors.append(f"{p} finishTime {task['finishTime']} is before a subtask's finishTime")
    return errors
