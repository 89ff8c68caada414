"""The world in time: the mock's clock, the engine's due transitions and the task family's actions, over the store.

Every change is one store transaction (store.py: the write lock shared by all worker processes): read the task's
slice, let the engine catch up to now (engine.step), apply the action's rule (lifecycle), let the engine react
(engine.settle), write back what changed. A change to one task is computed first outside the lock and stored only if
nothing it read has moved meanwhile (else computed again under it). So N concurrent calls of one action give
exactly one success, and a transition is applied exactly once whichever process notices it first.

`tick()` runs before every API call: one indexed read (the clock and the earliest `due_at`) decides whether anything
is due; only then does it take the write lock. A process repeats that read at most every RECHECK_S (its own action
on a task updates what it knows at once; a catch-up, a reset or a clock change makes it read again): a transition is
applied with its own due time whenever it is noticed, so this only bounds how late another process's change is seen
(10 ms), and keeps the hot path free of it. Reads take no lock.
"""

from __future__ import annotations

import threading
import time
from datetime import timezone
from typing import Callable

import orjson

from . import engine, logs
from .clock import MAX_SPEED, Clock, format_ms, wall_ms
from .engine import Context, Scenario, Sub, TaskSlice
from .envelope import dump_data, not_found
from .store import Store
from .world import ACTIVE

ADMIN_EXECUTOR = "127.0.0.1"  # the executor a state forced through the admin API gets, if it needs one
RECHECK_S = 0.010  # how long a process trusts its last look at the clock and the earliest due transition


LOADED_KEPT = 2048  # Subs kept by Runtime._load; past it they are let go at once


class LastParsed:
    """PARSE(stored form), kept for the last form seen: changes read the same stored clock and seed over and over,
    and what they parse to are values (frozen), so they share one."""

    __slots__ = ("parse", "last")

    def __init__(self, parse: Callable[[str | None], object]):
        self.parse = parse
        self.last: tuple | None = None  # (stored form, value)

    def __call__(self, raw: str | None):
        last = self.last  # once: another thread may assign it meanwhile
        if last is not None and last[0] == raw:
            return last[1]
        value = self.parse(raw)
        self.last = (raw, value)
        return value


class Runtime:
    def __init__(self, store: Store, tz: timezone, clock_speed: float):
        if not 0 <= clock_speed <= MAX_SPEED:
            raise ValueError(f"clock_speed must be from 0 (stopped) to {MAX_SPEED:g}, got {clock_speed!r}")
        self.store = store
        self.tz = tz
        self.clock_speed = clock_speed
        self._clock: Clock | None = None  # the clock at tick()'s last look
        self._parsed_clock = LastParsed(Clock.loads)  # the stored clock, parsed once per stored form
        self._parsed_ctx = LastParsed(lambda seed: Context(int(seed or 0), tz))  # the same for the seed
        self._due: int | None = None  # the earliest due transition at the last look
        self._look_again = 0.0  # time.monotonic() after which tick() looks again
        self._catching = threading.Lock()  # held by the thread applying due transitions
        # subtask id -> (row, the Sub loaded from it): a slice shares its Subs with every slice loaded or changed
        # from it, and none of them edits one (engine.TaskSlice: copy on write), so a row loads once
        self._loaded: dict[int, tuple] = {}
        store.after_load = self._after_load

    # -- the clock ---------------------------------------------------------------------------------------
    def _read_clock(self, conn) -> Clock:
        raw = self.store.meta(conn, "clock")
        if raw is None:  # a world loaded before the clock existed
            clock = Clock.start(self.clock_speed)
            self.store.set_meta(conn, "clock", clock.dumps())
            return clock
        return self._parsed_clock(raw)

    def sync_clock(self) -> None:
        """Applies the configured speed if the world's clock was started with another one (a restart with a new
        --clock-speed); a speed set through the admin API stays until then."""
        clock = self.clock()
        if clock.configured != self.clock_speed:
            def work(conn):
                current = self._read_clock(conn)
                if current.configured != self.clock_speed:
                    self.store.set_meta(conn, "clock",
                                        current.with_speed(self.clock_speed, configured=self.clock_speed).dumps())

            self.store.transaction(work)
            self.forget()

    def clock(self) -> Clock:
        raw = self.store.clock_and_next_due()[0]
        return Clock.loads(raw) if raw else Clock.start(self.clock_speed)

    def now_ms(self) -> int:
        return self.clock().now_ms()

    def format(self, ms: int) -> str:
        """A mock time as the wire writes times."""
        return format_ms(ms, self.tz)

    def advance(self, ms: int) -> tuple[Clock, int]:
        """Moves the clock MS forward and applies everything that fell due, in time order. (clock, transitions)."""
        def work(conn):
            clock = self._read_clock(conn).advanced(ms)
            self.store.set_meta(conn, "clock", clock.dumps())
            return clock, self._catch_up(conn, clock.now_ms())

        try:
            return self.store.transaction(work)
        finally:
            self.forget()

    def set_speed(self, speed: float) -> Clock:
        def work(conn):
            clock = self._read_clock(conn).with_speed(speed)
            self.store.set_meta(conn, "clock", clock.dumps())
            return clock

        try:
            return self.store.transaction(work)
        finally:
            self.forget()

    # -- due transitions -------------------------------------------------------------------------------------
    def tick(self) -> None:
        """Applies the transitions that are due, if any. Costs one indexed read (at most every RECHECK_S)."""
        mono = time.monotonic()
        if mono >= self._look_again:
            raw, self._due = self.store.clock_and_next_due()
            self._look_again = mono + RECHECK_S
            if raw is not None:
                self._clock = self._parsed_clock(raw)
        due, clock = self._due, self._clock  # once each: other threads assign them meanwhile
        if due is not None and clock is not None and due <= clock.now_ms(wall_ms()):
            # One thread of the process applies them; the others answer from the world as it is (at most one
            # catch-up behind, as they would be 10 ms before) instead of queueing for the write lock.
            if self._catching.acquire(blocking=False):
                try:
                    self.catch_up()
                finally:
                    self._catching.release()

    def forget(self) -> None:
        """This process changed the world or the clock: the next tick() looks again."""
        self._look_again = 0.0

    def catch_up(self) -> int:
        """Applies every due transition; returns how many tasks changed."""
        try:
            return self.store.transaction(lambda conn: self._catch_up(conn, self._read_clock(conn).now_ms()))
        finally:
            self.forget()

    def _catch_up(self, conn, now: int) -> int:
        ctx = self._ctx(conn)
        task_ids = self.store.task_ids(conn, due_by=now)
        for task_id in task_ids:
            before, logged = self._load(conn, task_id)
            self._save(conn, before, engine.step(before, now, ctx), ctx, logged)
        return len(task_ids)

    def _after_load(self, conn) -> None:
        """A world was just loaded: its in-flight subtasks start moving from now."""
        self.forget()
        now = self._read_clock(conn).now_ms()
        ctx = self._ctx(conn)
        for task_id in self.store.active_task_ids(conn, ACTIVE):
            before, logged = self._load(conn, task_id)
            self._save(conn, before, engine.settle(before, now, ctx), ctx, logged)

    # -- slices ----------------------------------------------------------------------------------------------
    def _ctx(self, conn) -> Context:
        return self._parsed_ctx(self.store.meta(conn, "seed"))

    def _load(self, conn, task_id: int) -> tuple[TaskSlice | None, set[int]]:
        task_doc, rows, logged = self.store.task_rows(conn, task_id)
        if task_doc is None:
            return None, logged
        parsed, loaded = self.store.parsed, self._loaded
        subs = {}
        for r in rows:
            hit = loaded.get(r.id)  # once: another thread may assign it meanwhile
            if hit is not None and hit[0] == r:  # (the doc is most often the same bytes object: no compare)
                subs[r.id] = hit[1]
                continue
            sub = subs[r.id] = Sub(parsed(("s", r.id), r.doc), r.due_at,
                                   Scenario.from_dict(orjson.loads(r.scenario)) if r.scenario else None,
                                   r.runs, r.run_start)
            if len(loaded) >= LOADED_KEPT:
                loaded.clear()
            loaded[r.id] = (r, sub)
        return TaskSlice(parsed(("t", task_id), task_doc), subs), logged

    def _save(self, conn, before: TaskSlice, after: TaskSlice, ctx: Context, logged: set[int]) -> None:
        remember = self.store.remember
        if after.task is not before.task and after.task != before.task:  # the engine keeps an unchanged task
            doc = dump_data(after.task)
            remember(("t", after.task["id"]), doc, after.task)
            self.store.save_task(conn, after.task["id"], after.task["status"], doc)
        for sid, sub in after.subs.items():
            old = before.subs[sid]
            if sub is old:  # the engine changed it not (engine.TaskSlice: copy on write); a loaded Sub logs nothing
                continue
            if (sub.doc, sub.due_at, sub.scenario, sub.runs, sub.run_start) != (
                    old.doc, old.due_at, old.scenario, old.runs, old.run_start):
                doc = dump_data(sub.doc) if sub.doc is not old.doc else self.store.wire_of(conn, sid)
                remember(("s", sid), doc, sub.doc)
                self.store.save_subtask(conn, sid, sub.status, sub.doc.get("operation"), doc,
                                        sub.due_at, orjson.dumps(sub.scenario.as_dict()).decode() if sub.scenario else None,
                                        sub.runs, sub.run_start)
            # A subtask's log is stored from its first change on, starting with the log the seeded world gave it.
            if sub.log or (sid not in logged and sub.doc != old.doc):
                first = None if sid in logged else logs.seeded_log(old.doc, ctx.seed, ctx.tz)
                self.store.append_log(conn, sid, first, sub.log)

    def _change(self, task_id, entity_id, change: Callable[[TaskSlice, int, Context], TaskSlice],
                member: int | None = None) -> TaskSlice:
        """Runs CHANGE(slice, now, ctx) on the task's slice under the write lock and saves what it returns.
        TASK_ID may be a function of the connection (a subtask's task). 404 (ENTITY_ID) when there is no such task.
        MEMBER: a subtask the slice must hold; when it does not (TASK_ID was read before a reset to another seed
        replaced the world), its task is looked up again."""
        def work(conn):
            tid = task_id(conn) if callable(task_id) else task_id
            before, logged = self._load(conn, tid) if tid is not None else (None, set())
            if member is not None and before is not None and member not in before.subs:
                tid = self.store.task_id_of(conn, member)
                before, logged = self._load(conn, tid) if tid is not None else (None, set())
            if before is None:
                raise not_found(entity_id)
            ctx = self._ctx(conn)
            after = change(before, self._read_clock(conn).now_ms(), ctx)
            self._save(conn, before, after, ctx, logged)
            return after

        after = self.store.transaction(work, optimistic=True)
        self._noted(after)
        return after

    def _noted(self, after: TaskSlice) -> None:
        """This process just changed one task: the earliest due transition it knows of is the earlier of the one it
        had and the task's own, so tick() needs no fresh look (another read per write cost 15 % of a write's CPU
        with 8 threads). If the change removed the earliest one, tick() finds nothing due at that time, and looks."""
        due = [sub.due_at for sub in after.subs.values() if sub.due_at is not None]
        if due:
            known = self._due  # once: tick() in another thread may assign it meanwhile
            self._due = min(due) if known is None else min(known, *due)

    def batch(self, work: Callable[..., object]):
        """Runs WORK(conn, change) in one transaction, where change(task_id, fn) runs fn(slice, now, ctx) on the task's
        slice and saves what it returns: several tasks' changes are all saved, or none if WORK raises (scenarios.py)."""
        def run(conn):
            now, ctx = self._read_clock(conn).now_ms(), self._ctx(conn)

            def change(task_id: int, fn: Callable[[TaskSlice, int, Context], TaskSlice]) -> TaskSlice:
                before, logged = self._load(conn, task_id)
                if before is None:
                    raise not_found(task_id)
                after = fn(before, now, ctx)
                self._save(conn, before, after, ctx, logged)
                return after

            return work(conn, change)

        try:
            return self.store.transaction(run)
        finally:
            self.forget()

    def _of_subtask(self, subtask_id: int):
        return lambda conn: self.store.task_id_of(conn, subtask_id)

    # -- actions (each: engine.py's pure function, under the write lock) ---------------------------------------
    def subtask_action(self, subtask_id: int, action: str, task_id: int | None = None) -> dict:
        """retry, skip or cancel (lifecycle.RULES); the subtask afterwards. TASK_ID, when the caller has read it,
        saves looking it up under the lock (checked there: a reset may have replaced the world since)."""
        after = self._change(task_id if task_id is not None else self._of_subtask(subtask_id), subtask_id,
                             lambda sl, now, ctx: engine.act_on_subtask(sl, now, ctx, subtask_id, action),
                             member=subtask_id)
        return after.subs[subtask_id].doc

    def task_action(self, task_id: int, action: str) -> TaskSlice:
        """retry or rollback (lifecycle.TASK_RULES); the task afterwards."""
        return self._change(task_id, task_id, lambda sl, now, ctx: engine.act_on_task(sl, now, ctx, action))

    def force_state(self, subtask_id: int, status: str | None, operation: str | None,
                    check: Callable[[list[dict]], None]) -> dict:
        """The admin API's forced state (lifecycle.set_state); CHECK sees the task's subtasks and may refuse."""
        after = self._change(self._of_subtask(subtask_id), subtask_id, lambda sl, now, ctx: engine.force_state(
            sl, now, ctx, subtask_id, status, operation, ADMIN_EXECUTOR, check))
        return after.subs[subtask_id].doc

    def set_scenario(self, subtask_id: int, scenario: Scenario | None) -> TaskSlice:
        """Sets (None: removes) the subtask's scenario; its run count starts again from 0."""
        return self._change(self._of_subtask(subtask_id), subtask_id,
                            lambda sl, now, ctx: engine.set_scenario(sl, now, ctx, subtask_id, scenario))

    # -- reads -----------------------------------------------------------------------------------------------
    def task_instance(self, task_id: int) -> dict | None:
        """The TaskInstance (wire form, as a dict), or None."""
        found = self.store.task(task_id)
        if found is None:
            return None
        task_doc, sub_docs = found
        return wire_task(orjson.loads(task_doc), [orjson.loads(d) for d in sub_docs])

    def subtask_log(self, subtask_id: int) -> str | None:
        """The log as it reads now: what is stored (kept per world version) and the lines of a run in progress."""
        found = self.store.memo(("log", subtask_id), lambda: self._stored_log(subtask_id))
        if found is None:
            return None
        row, base, ctx = found
        sub = Sub(orjson.loads(row.doc), row.due_at,
                  Scenario.from_dict(orjson.loads(row.scenario)) if row.scenario else None, row.runs, row.run_start)
        return logs.join(base, engine.running_log(sub, self.now_ms(), ctx))

    def _stored_log(self, subtask_id: int) -> tuple | None:
        found = self.store.subtask_run(subtask_id)
        if found is None:
            return None
        row, text = found
        ctx = Context(self.store.seed() or 0, self.tz)
        return row, text if text is not None else logs.seeded_log(orjson.loads(row.doc), ctx.seed, ctx.tz), ctx

    def subtask_engine_state(self, subtask_id: int) -> dict | None:
        """What the engine knows of a subtask, for the admin API."""
        found = self.store.subtask_run(subtask_id)
        if found is None:
            return None
        row, _ = found
        ctx = Context(self.store.seed() or 0, self.tz)
        scenario = Scenario.from_dict(orjson.loads(row.scenario)) if row.scenario else engine.default_scenario(ctx, row.id)
        state = {"scenario": scenario.as_dict(), "scenarioSource": "admin" if row.scenario else "seed",
                 "runs": row.runs}
        if row.due_at is not None:
            state["dueAt"] = self.format(row.due_at)
        return state


def wire_task(task: dict, subtasks: list[dict]) -> dict:
    """The TaskInstance a client sees: the stored task without its bookkeeping, with its subtasks in full."""
    data = {k: v for k, v in task.items() if k != "subtaskIds"}
    data["subtasks"] = sorted(subtasks, key=lambda s: s["id"])
    return dict(sorted(data.items()))
