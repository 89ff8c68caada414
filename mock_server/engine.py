"""The task engine in time: what happens to subtasks once something put them in motion.

Pure functions over one task's slice of the world (the task and all its subtasks, with the engine's bookkeeping);
no I/O and no clock reads: the time is an argument, in milliseconds of mock time. `store.py` keeps the slices,
`runtime.py` feeds them through here under the write lock.

A subtask in motion has a `due_at`: the mock time of its next automatic transition.
- READY -> RUNNING after a short pick-up delay. A first run sets startTime; a later run adds 1 to runTime
  (startTime stays the first run's, as OCP keeps it). The executor is one of the task's OCP servers.
- RUNNING -> SUCCESSFUL or FAILED when the run ends, as the subtask's scenario says; a run that would outlast
  the subtask's `timeout` fails when the timeout elapses. A rollback run (operation ROLLBACK) that succeeds, and a
  skip during a rollback (ROLLBACK_SKIP), leave the subtask PENDING again (rolled back), as OCP's engine does.
  A skip (SKIP, ROLLBACK_SKIP) always succeeds, quickly.
- CANCELING -> FAILED a short while later (the executor stopped).
`settle` then lets the engine react, as OCP's scheduler does: a PENDING subtask whose upstreams all succeeded
becomes READY (not while the task rolls back); while it rolls back, a SUCCESSFUL subtask with operation ROLLBACK
whose downstreams are all PENDING becomes READY (rollback runs downstream first); the task's status, finishTime
and prohibitRollback follow its subtasks.

What a run does is scripted by the subtask's Scenario: a hang first (until cancelled or timed out), then N
failures, then every run ends with the outcome. Without an admin override, a subtask's scenario is drawn from the
world's seed (mostly: succeed), and every delay and duration is drawn from (seed, subtask, run), so the same seed
and the same calls at the same mock times give the same world.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import timezone

from typing import Callable

from . import lifecycle, logs
from .clock import format_ms
from .world import (
    ACTIVE,
    FIXTURE_FAILED_SUBTASK_ID,
    FIXTURE_SUBTASK_IDS,
    ROLLED_BACK_OPERATIONS,
    derive_task_status,
    task_prohibits_rollback,
)

OUTCOMES = ("succeed", "fail")
# A skip's operations (lifecycle's rule); a run with one of ROLLED_BACK_OPERATIONS that succeeds leaves the subtask
# PENDING (undone); a subtask in an ACTIVE status has a transition planned.
SKIP_OPERATIONS = frozenset({lifecycle.RULES["skip"].to_operation, lifecycle.RULES["skip"].rollback_operation})
IN_MOTION = ACTIVE

# Delays in mock milliseconds: (low, high), drawn per subtask and run.
PICKUP_MS = (500, 2_500)  # READY -> RUNNING
CANCEL_MS = (1_000, 3_000)  # CANCELING -> FAILED
SKIP_RUN_MS = (200, 900)  # how long a skip "runs"
# A run's length when the scenario does not fix it: mostly seconds, sometimes a minute or two.
DURATION_BANDS_MS = (((2_000, 12_000), 6), ((12_000, 40_000), 3), ((40_000, 120_000), 1))
MAX_DURATION_S = 7 * 24 * 3600
MAX_FAILURES = 1000


@dataclass(frozen=True)
class Scenario:
    """What the runs of one subtask do, in order: a hang (if `hang`), then `failures` failed runs, then runs that
    end with `outcome`. `duration_ms` fixes how long a run takes (None: drawn per run from the seed)."""

    outcome: str = "succeed"
    failures: int = 0
    hang: bool = False
    duration_ms: int | None = None

    def plan(self, run: int) -> str:
        """How run number RUN (0-based, counted since the scenario was set) ends: hang, fail or succeed."""
        if self.hang:
            if run == 0:
                return "hang"
            run -= 1
        return "fail" if run < self.failures else self.outcome

    def as_dict(self) -> dict:
        data = {"outcome": self.outcome, "failures": self.failures, "hang": self.hang}
        if self.duration_ms is not None:
            data["durationSeconds"] = self.duration_ms / 1000
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "Scenario":
        """From the admin API's (already checked) body or the store's JSON."""
        seconds = data.get("durationSeconds")
        return cls(outcome=data.get("outcome", "succeed"), failures=int(data.get("failures", 0)),
                   hang=bool(data.get("hang", False)),
                   duration_ms=None if seconds is None else int(round(float(seconds) * 1000)))


# The seeded default: (weight, scenario). Mostly succeed; some fail once or twice first; a few always fail or hang.
DEFAULT_SCENARIOS = (
    (80, Scenario()),
    (9, Scenario(failures=1)),
    (3, Scenario(failures=2)),
    (5, Scenario(outcome="fail")),
    (3, Scenario(hang=True)),
)
# Task 1000 behaves the same whatever the seed: its FAILED subtask succeeds when retried, its RUNNING one hangs
# until cancelled (then succeeds), the others succeed.
FIXTURE_SCENARIOS = {
    FIXTURE_FAILED_SUBTASK_ID: Scenario(duration_ms=8_000),
    FIXTURE_FAILED_SUBTASK_ID + 1: Scenario(hang=True),
}


@dataclass(frozen=True)
class Context:
    seed: int
    tz: timezone


@dataclass(slots=True)
class Sub:
    """One subtask with the engine's bookkeeping. Slotted: a change makes and reads several per subtask."""

    doc: dict  # SubtaskInstance, wire form
    due_at: int | None = None  # mock ms of the next automatic transition; None when none is due
    scenario: Scenario | None = None  # set through the admin API; None: the seed's default
    runs: int = 0  # runs ended under the current scenario
    run_start: int | None = None  # mock ms the current run started (RUNNING, CANCELING)
    log: list[str] = field(default_factory=list)  # lines this change appends to the subtask's log

    @property
    def id(self) -> int:
        return self.doc["id"]

    def copy(self) -> "Sub":
        """A copy that shares the doc (a value, see TaskSlice) but not the log. (dataclasses.replace costs 4x.)"""
        return Sub(self.doc, self.due_at, self.scenario, self.runs, self.run_start, list(self.log))

    @property
    def status(self) -> str:
        return self.doc["status"]


@dataclass
class TaskSlice:
    """One task and all its subtasks. The task and subtask dicts are values: a change replaces them (a new dict),
    never edits them in place, so a copy of the slice shares them safely.

    A copy shares its Subs too, until it changes one: `edit` gives the slice a Sub of its own first (copy on
    write). So a change copies only the subtasks it touches, and a Sub that is the same object in two slices is the
    same value (Runtime._save skips it). Every change to a Sub in this module goes through `edit`."""

    task: dict  # the task as stored (TaskInstance fields without subtasks, plus subtaskIds)
    subs: dict[int, Sub]  # every subtask of the task, by id
    mine: set = field(default_factory=set, compare=False, repr=False)  # ids of the Subs this slice may change

    def copy(self) -> "TaskSlice":
        return TaskSlice(self.task, dict(self.subs))

    def edit(self, sid: int) -> Sub:
        """The slice's Sub SID, to change: its own copy (made now unless it has one)."""
        if sid in self.mine:
            return self.subs[sid]
        sub = self.subs[sid] = self.subs[sid].copy()
        self.mine.add(sid)
        return sub


def rng(ctx: Context, *key) -> random.Random:
    """A generator that depends only on the seed and KEY (a str seed: stable across processes and runs)."""
    return random.Random(":".join(map(str, (ctx.seed, *key))))


_DRAWS: dict = {}
DRAWS_KEPT = 8192  # past it the memo starts afresh


def draw(ctx: Context, key: tuple, pick: Callable, *args):
    """PICK(rng(ctx, *KEY), *ARGS), kept per process: the same key always draws the same value, and seeding a
    generator from a string costs ~6 µs (a retry draws its pick-up delay again each time it is re-armed)."""
    memo_key = (ctx.seed, key, pick, args)
    value = _DRAWS.get(memo_key)
    if value is None:
        if len(_DRAWS) >= DRAWS_KEPT:
            _DRAWS.clear()
        value = _DRAWS[memo_key] = pick(rng(ctx, *key), *args)
    return value


def _weighted(r: random.Random, options: tuple, weights: tuple):
    return r.choices(options, weights)[0]


def _run_length(r: random.Random) -> int:
    bands, weights = zip(*DURATION_BANDS_MS)
    return r.randint(*r.choices(bands, weights)[0])


def scenario_of(sub: Sub, ctx: Context) -> Scenario:
    if sub.scenario is not None:
        return sub.scenario
    return default_scenario(ctx, sub.id)


def default_scenario(ctx: Context, subtask_id: int) -> Scenario:
    if subtask_id in FIXTURE_SUBTASK_IDS:
        return FIXTURE_SCENARIOS.get(subtask_id, Scenario())
    weights, scenarios = zip(*DEFAULT_SCENARIOS)
    return draw(ctx, ("scenario", subtask_id), _weighted, scenarios, weights)


# ------------------------------------------------------------------------------------------------ plans

def _run_key(sub: Sub) -> tuple:
    return (sub.id, sub.runs, sub.doc.get("runTime", 1), sub.doc.get("operation"))


def run_plan(sub: Sub, ctx: Context) -> tuple[str, int]:
    """(how the current run ends, its length in ms): succeed, fail, timeout (a hang, or a run longer than the
    subtask's timeout) or skip."""
    if sub.doc.get("operation") in SKIP_OPERATIONS:
        return "skip", draw(ctx, ("skip", *_run_key(sub)), random.Random.randint, *SKIP_RUN_MS)
    timeout_ms = int(sub.doc.get("timeout", 1800)) * 1000
    scenario = scenario_of(sub, ctx)
    plan = scenario.plan(sub.runs)
    if plan == "hang":
        return "timeout", timeout_ms
    length = scenario.duration_ms
    if length is None:
        length = draw(ctx, ("duration", *_run_key(sub)), _run_length)
    if length >= timeout_ms:
        return "timeout", timeout_ms
    return plan, max(1, length)


def _executor(sl: TaskSlice, sub: Sub, ctx: Context) -> str:
    servers = sorted({sl.task["executor"], *(s.doc["executor"] for s in sl.subs.values() if "executor" in s.doc)})
    return draw(ctx, ("executor", *_run_key(sub)), random.Random.choice, tuple(servers))


def thread_of(sub: Sub, ctx: Context) -> str:
    return f"task-executor-{draw(ctx, ('thread', *_run_key(sub)), random.Random.randint, 1, 8)}"


# ------------------------------------------------------------------------------------------ transitions

def _stamp(ms: int, ctx: Context) -> str:
    return format_ms(ms, ctx.tz)


def _set_doc(sub: Sub, **changes) -> None:
    doc = dict(sub.doc)
    for key, value in changes.items():
        if value is None:
            doc.pop(key, None)
        else:
            doc[key] = value
    sub.doc = dict(sorted(doc.items()))


def _start(sl: TaskSlice, sub: Sub, t: int, ctx: Context) -> None:
    """READY -> RUNNING at T."""
    if "startTime" in sub.doc:
        _set_doc(sub, runTime=sub.doc.get("runTime", 1) + 1)
    else:
        _set_doc(sub, startTime=_stamp(t, ctx))
    _set_doc(sub, status="RUNNING", executor=_executor(sl, sub, ctx))
    sub.run_start = t
    outcome, length = run_plan(sub, ctx)
    sub.due_at = t + length
    sub.log.extend(logs.start_lines(sub.doc, t, ctx.tz, thread_of(sub, ctx)))


def _finish(sub: Sub, t: int, ctx: Context, cancelled: bool = False) -> None:
    """RUNNING (or CANCELING) -> its end state at T."""
    outcome, length = run_plan(sub, ctx)
    thread = thread_of(sub, ctx)
    start = sub.run_start if sub.run_start is not None else t
    sub.log.extend(logs.progress_lines(sub.doc, ctx.seed, _run_key(sub), start, length, t, ctx.tz, thread))
    if cancelled:
        outcome = "cancelled"
    if outcome != "skip":
        sub.runs += 1  # a skip does no work: it does not use up the scenario
    if outcome in ("succeed", "skip"):
        if sub.doc.get("operation") in ROLLED_BACK_OPERATIONS:
            _set_doc(sub, status="PENDING", finishTime=None)
        else:
            _set_doc(sub, status="SUCCESSFUL", finishTime=_stamp(t, ctx))
    else:
        _set_doc(sub, status="FAILED", finishTime=_stamp(t, ctx))
    sub.log.extend(logs.end_lines(sub.doc, outcome, t, ctx.tz, thread, ctx.seed, _run_key(sub)))
    sub.run_start = None
    sub.due_at = None


def _transition(sl: TaskSlice, sub: Sub, t: int, ctx: Context) -> None:
    if sub.status == "READY":
        _start(sl, sub, t, ctx)
    elif sub.status == "RUNNING":
        _finish(sub, t, ctx)
    elif sub.status == "CANCELING":
        _finish(sub, t, ctx, cancelled=True)
    else:  # nothing is due in a resting state
        sub.due_at = None


def _schedule(sub: Sub, t: int, ctx: Context) -> None:
    """Gives a subtask in motion that has no due time one, from T; clears it for a resting one."""
    if sub.status not in IN_MOTION:
        sub.due_at = None
        sub.run_start = None
        return
    if sub.due_at is not None:
        return
    if sub.status == "READY":
        sub.due_at = t + draw(ctx, ("pickup", *_run_key(sub)), random.Random.randint, *PICKUP_MS)
    elif sub.status == "RUNNING":
        if sub.run_start is None:
            sub.run_start = t
        sub.due_at = max(t, sub.run_start + run_plan(sub, ctx)[1])
    else:  # CANCELING
        sub.due_at = t + draw(ctx, ("cancel", *_run_key(sub)), random.Random.randint, *CANCEL_MS)


def _settle(sl: TaskSlice, t: int, ctx: Context) -> None:
    subs = sl.subs
    rolling_back = sl.task.get("operation") == "ROLLBACK"
    statuses = []
    # One pass: what makes a subtask READY reads its neighbours' statuses, which no edit here changes from or to
    # the status it looks for (PENDING -> READY is never SUCCESSFUL; SUCCESSFUL -> READY is never PENDING), so the
    # order does not matter; what follows for a subtask reads only that subtask. (edit replaces a value, never adds
    # a key: safe while iterating.)
    for sid, sub in subs.items():
        doc = sub.doc
        status = doc["status"]
        if rolling_back:
            if status == "SUCCESSFUL" and doc.get("operation") == "ROLLBACK":
                for d in doc["downstreams"]:
                    if d in subs and subs[d].doc["status"] != "PENDING":
                        break
                else:
                    sub = sl.edit(sid)
                    _set_doc(sub, status="READY", finishTime=None)
                    sub.due_at = None
                    status = "READY"
        elif status == "PENDING":
            for u in doc["upstreams"]:
                if u in subs and subs[u].doc["status"] != "SUCCESSFUL":
                    break
            else:
                sub = sl.edit(sid)
                _set_doc(sub, status="READY")
                sub.due_at = None
                status = "READY"
        statuses.append(status)
        if status not in IN_MOTION:  # _schedule's resting case, inline: most subtasks rest
            if sub.due_at is not None or sub.run_start is not None:
                sub = sl.edit(sid)
                sub.due_at = sub.run_start = None
        elif sub.due_at is None:
            _schedule(sl.edit(sid), t, ctx)
    _settle_task(sl, t, ctx, statuses)


def _settle_task(sl: TaskSlice, t: int, ctx: Context, statuses: list[str] | None = None) -> None:
    """STATUSES: the subtasks' statuses, when the caller has them."""
    old = sl.task
    members = [sub.doc for sub in sl.subs.values()]  # the rules below do not depend on the order
    status = derive_task_status(statuses if statuses is not None else (s["status"] for s in members),
                                old.get("operation"))
    prohibit = task_prohibits_rollback(members)
    if (old.get("status") == status and old.get("prohibitRollback") is prohibit
            and ("finishTime" in old) == (status != "RUNNING")):
        return  # nothing moves: the task stays the same value (most changes of one subtask)
    task = dict(old)
    if status == "RUNNING":
        task.pop("finishTime", None)
    elif task.get("status") != status or "finishTime" not in task:
        task["finishTime"] = _stamp(t, ctx)
    task["status"] = status
    task["prohibitRollback"] = prohibit
    sl.task = dict(sorted(task.items()))


# ------------------------------------------------------------------------------------------- public API

def settle(sl: TaskSlice, t: int, ctx: Context) -> TaskSlice:
    """The slice after the engine reacted at T to its current state (see the module doc), as a new slice."""
    sl = sl.copy()
    _settle(sl, t, ctx)
    return sl


def next_due(sl: TaskSlice) -> tuple[int, int] | None:
    """(due time, subtask id) of the earliest due transition, or None."""
    due = [(s.due_at, sid) for sid, s in sl.subs.items() if s.due_at is not None]
    return min(due) if due else None


def step(sl: TaskSlice, now: int, ctx: Context) -> TaskSlice:
    """The slice with every transition due by NOW applied, in time order (ties: lowest subtask id first), each at
    its own due time, and the engine's reactions to each. A new slice; SL is not changed."""
    sl = sl.copy()
    while True:
        due = next_due(sl)
        if due is None or due[0] > now:
            return sl
        t, sid = due
        _transition(sl, sl.edit(sid), t, ctx)
        _settle(sl, t, ctx)


def act_on_subtask(sl: TaskSlice, now: int, ctx: Context, subtask_id: int, action: str) -> TaskSlice:
    """The slice after the API action (retry, skip, cancel: lifecycle.RULES) on one of its subtasks at NOW, the
    engine caught up before and reacting after. Raises OCP's 400 when the action is not legal then."""
    sl = step(sl, now, ctx)
    sub = sl.edit(subtask_id)
    sub.doc = lifecycle.apply(action, sub.doc, sl.task.get("operation"))
    sub.due_at = None  # what was planned for it no longer holds
    _settle(sl, now, ctx)
    return sl


def act_on_task(sl: TaskSlice, now: int, ctx: Context, action: str) -> TaskSlice:
    """The slice after the API action on the task (retry, rollback: lifecycle.TASK_RULES) at NOW."""
    sl = step(sl, now, ctx)
    ids = sorted(sl.subs)
    sl.task, docs = lifecycle.apply_task(action, sl.task, [sl.subs[i].doc for i in ids])
    for sid, doc in zip(ids, docs):
        if doc != sl.subs[sid].doc:
            sub = sl.edit(sid)
            sub.doc, sub.due_at = doc, None
    _settle(sl, now, ctx)
    return sl


def force_state(sl: TaskSlice, now: int, ctx: Context, subtask_id: int, status: str | None, operation: str | None,
                executor: str, check: Callable[[list[dict]], None]) -> TaskSlice:
    """The slice after the admin API forced a subtask's state at NOW (lifecycle.set_state); CHECK sees the task's
    subtasks afterwards and may raise to refuse."""
    sl = step(sl, now, ctx)
    sub = sl.edit(subtask_id)
    sub.doc = lifecycle.set_state(sub.doc, status or sub.status, operation, _stamp(now, ctx), executor)
    sub.due_at = None
    check([sl.subs[i].doc for i in sorted(sl.subs)])
    _settle(sl, now, ctx)
    return sl


def set_scenario(sl: TaskSlice, now: int, ctx: Context, subtask_id: int, scenario: Scenario | None) -> TaskSlice:
    """The slice after a subtask's scenario was set (None: back to the seed's) at NOW; its run count restarts."""
    sl = step(sl, now, ctx)
    sub = sl.edit(subtask_id)
    _replan(sub, now, ctx)
    sub.scenario, sub.runs = scenario, 0
    _settle(sl, now, ctx)
    return sl


def running_log(sub: Sub, now: int, ctx: Context) -> list[str]:
    """The lines a run in progress has written by NOW (not yet stored: they are stored when the run ends)."""
    if sub.status not in ("RUNNING", "CANCELING") or sub.run_start is None:
        return []
    outcome, length = run_plan(sub, ctx)
    return logs.progress_lines(sub.doc, ctx.seed, _run_key(sub), sub.run_start, length, now, ctx.tz,
                               thread_of(sub, ctx))


def _replan(sub: Sub, now: int, ctx: Context) -> None:
    """Before a subtask's scenario changes: a run in progress keeps (stores) the lines written so far and
    goes on from NOW under the new scenario: a RUNNING one is re-planned (setting `hang` on it makes it hang from
    now), a CANCELING one still stops when it was going to."""
    if sub.status in ("RUNNING", "CANCELING") and sub.run_start is not None:
        sub.log.extend(running_log(sub, now, ctx))
        sub.run_start = now
        if sub.status == "RUNNING":
            sub.due_at = None
