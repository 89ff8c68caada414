"""The task engine in time (engine.py), the clock (clock.py) and the logs (logs.py), as pure functions over slices
of seeded worlds: no store, no HTTP, no sleeping (time is an argument)."""

from __future__ import annotations

import copy
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from conftest import slice_value
from mock_server import engine
from mock_server.clock import Clock, from_datetime
from mock_server.config import SPEC_PATH
from mock_server.engine import Context, Scenario, Sub, TaskSlice
from mock_server.envelope import OcpError
from mock_server.spec import load_spec
from mock_server.world import (
    FIXTURE_FAILED_SUBTASK_ID,
    FIXTURE_TASK_ID,
    build_world,
    check_invariants,
    check_task,
    derive_task_status,
    parse_time,
)

SPEC = load_spec(str(SPEC_PATH))
SUBTASK = Draft202012Validator({"$ref": "#/components/schemas/SubtaskInstance", "components": SPEC.components},
                               format_checker=Draft202012Validator.FORMAT_CHECKER)
TZ = timezone(timedelta(hours=8))
T0 = from_datetime(datetime(2026, 11, 25, 16, 0, tzinfo=TZ))
SECOND = 1000


def slices(seed: int, task_count: int = 40, now: int = T0) -> tuple[Context, dict[int, TaskSlice]]:
    """The seeded world as the mock loads it: one slice per task, in-flight subtasks scheduled from NOW."""
    world = build_world(seed, task_count)
    ctx = Context(seed, TZ)
    by_id = {s["id"]: s for s in world.subtasks}
    loaded = {t["id"]: TaskSlice(dict(t), {i: Sub(dict(by_id[i])) for i in t["subtaskIds"]}) for t in world.tasks}
    return ctx, {tid: engine.settle(sl, now, ctx) for tid, sl in loaded.items()}


def problems(sl: TaskSlice) -> list[str]:
    docs = [sl.subs[i].doc for i in sorted(sl.subs)]
    found = check_invariants(docs) + check_task(sl.task, docs)
    for sub in sl.subs.values():
        found += [f"subtask {sub.id}: {e.message}" for e in SUBTASK.iter_errors(sub.doc)]
        if (sub.due_at is not None) != (sub.status in engine.IN_MOTION):
            found.append(f"subtask {sub.id}: {sub.status} with due_at {sub.due_at}")
    return found


def statuses(sl: TaskSlice) -> dict[int, str]:
    return {sid: sub.status for sid, sub in sorted(sl.subs.items())}


# ------------------------------------------------------------------------------------------------- scenarios

@pytest.mark.parametrize(("scenario", "plans"), [
    (Scenario(), ["succeed"] * 4),
    (Scenario(failures=2), ["fail", "fail", "succeed", "succeed"]),
    (Scenario(outcome="fail"), ["fail"] * 4),
    (Scenario(hang=True), ["hang", "succeed", "succeed", "succeed"]),
    (Scenario(hang=True, failures=1, outcome="fail"), ["hang", "fail", "fail", "fail"]),
])
def test_scenario_scripts_runs_in_order(scenario, plans):
    assert [scenario.plan(run) for run in range(4)] == plans


def test_scenario_round_trips_through_its_dict():
    for scenario in (Scenario(), Scenario("fail", 3, True, 2500), Scenario(duration_ms=1)):
        assert Scenario.from_dict(scenario.as_dict()) == scenario


def test_default_scenarios_are_seeded_and_mostly_succeed():
    ctx = Context(7, TZ)
    drawn = [engine.default_scenario(ctx, sid) for sid in range(20_000, 22_000)]
    assert drawn == [engine.default_scenario(Context(7, TZ), sid) for sid in range(20_000, 22_000)]
    assert drawn != [engine.default_scenario(Context(8, TZ), sid) for sid in range(20_000, 22_000)]
    share = sum(s == Scenario() for s in drawn) / len(drawn)
    assert 0.7 < share < 0.9
    assert {s.plan(0) for s in drawn} == {"succeed", "fail", "hang"}


def test_fixture_scenarios_do_not_depend_on_the_seed():
    for seed in (1, 2, 20241106):
        ctx = Context(seed, TZ)
        assert engine.default_scenario(ctx, FIXTURE_FAILED_SUBTASK_ID) == Scenario(duration_ms=8_000)
        assert engine.default_scenario(ctx, FIXTURE_FAILED_SUBTASK_ID + 1).hang


def test_a_run_longer_than_the_timeout_times_out():
    ctx, world = slices(3, 1)
    sub = world[FIXTURE_TASK_ID].subs[FIXTURE_FAILED_SUBTASK_ID]
    sub.scenario = Scenario(duration_ms=sub.doc["timeout"] * 1000 + 1)
    assert engine.run_plan(sub, ctx) == ("timeout", sub.doc["timeout"] * 1000)
    sub.scenario = Scenario(hang=True)
    assert engine.run_plan(sub, ctx) == ("timeout", sub.doc["timeout"] * 1000)


# --------------------------------------------------------------------------------------------- the fixture

def test_loading_schedules_only_subtasks_in_motion():
    ctx, world = slices(20241106)
    for sl in world.values():
        assert problems(sl) == []
    fixture = world[FIXTURE_TASK_ID]
    due = {sid: sub.due_at for sid, sub in fixture.subs.items()}
    assert due[10000] is None and due[10001] is None and due[10005] is None
    assert T0 < due[10004] <= T0 + engine.PICKUP_MS[1]  # READY: picked up soon
    assert T0 < due[10003] <= T0 + engine.CANCEL_MS[1]  # CANCELING: stops soon
    assert due[10002] == T0 + fixture.subs[10002].doc["timeout"] * 1000  # RUNNING, hangs: until its timeout


def test_step_applies_due_transitions_in_time_order_and_leaves_its_input_alone():
    ctx, world = slices(20241106, 1)
    loaded = world[FIXTURE_TASK_ID]
    snapshot = loaded.copy()
    later = engine.step(loaded, T0 + 60 * SECOND, ctx)
    assert loaded == snapshot
    assert statuses(later) == {10000: "SUCCESSFUL", 10001: "FAILED", 10002: "RUNNING", 10003: "FAILED",
                               10004: "SUCCESSFUL", 10005: "PENDING"}
    s4 = later.subs[10004].doc
    assert parse_time(s4["startTime"]) < parse_time(s4["finishTime"]) <= datetime.fromtimestamp((T0 + 60_000) / 1000, TZ)
    assert later.task["status"] == "RUNNING"  # 10002 still runs
    assert problems(later) == []
    assert engine.step(later, T0 + 60 * SECOND, ctx) == later  # nothing more is due by then


def test_retry_runs_the_subtask_and_its_downstream_follows():
    ctx, world = slices(20241106, 1)
    sl = engine.act_on_subtask(world[FIXTURE_TASK_ID], T0, ctx, 10002, "cancel")
    sl = engine.step(sl, T0 + 10 * SECOND, ctx)
    assert statuses(sl)[10002] == statuses(sl)[10003] == "FAILED"
    before = {sid: dict(sub.doc) for sid, sub in sl.subs.items()}
    for sid in (10001, 10002, 10003):
        sl = engine.act_on_subtask(sl, T0 + 10 * SECOND, ctx, sid, "retry")
        assert sl.subs[sid].status == "READY" and sl.subs[sid].doc["operation"] == "RETRY"
        assert sl.task["status"] == "RUNNING" and "finishTime" not in sl.task
    sl = engine.step(sl, T0 + 10 * SECOND + engine.PICKUP_MS[1], ctx)
    for sid in (10001, 10002, 10003):
        doc = sl.subs[sid].doc
        assert doc["status"] == "RUNNING", sid
        assert doc["runTime"] == before[sid]["runTime"] + 1  # it runs again
        assert doc["startTime"] == before[sid]["startTime"]  # OCP keeps the first run's start
        assert "finishTime" not in doc
    assert statuses(sl)[10005] == "PENDING"  # its upstreams have not all succeeded yet
    sl = engine.step(sl, T0 + 10 * 60 * SECOND, ctx)
    assert set(statuses(sl).values()) == {"SUCCESSFUL"}
    last_upstream = max(parse_time(sl.subs[u].doc["finishTime"]) for u in sl.subs[10005].doc["upstreams"])
    assert parse_time(sl.subs[10005].doc["startTime"]) >= last_upstream
    assert sl.task["status"] == "SUCCESSFUL" and parse_time(sl.task["finishTime"]) >= parse_time(
        sl.subs[10005].doc["finishTime"])
    assert problems(sl) == []


def test_fail_twice_then_succeed():
    ctx, world = slices(20241106, 1)
    sl = engine.set_scenario(world[FIXTURE_TASK_ID], T0, ctx, 10001, Scenario(failures=2, duration_ms=5_000))
    now, outcomes = T0, []
    for attempt in range(3):
        sl = engine.act_on_subtask(sl, now, ctx, 10001, "retry")
        now += 60 * SECOND
        sl = engine.step(sl, now, ctx)
        outcomes.append((sl.subs[10001].status, sl.subs[10001].doc["runTime"]))
    assert outcomes == [("FAILED", 2), ("FAILED", 3), ("SUCCESSFUL", 4)]
    with pytest.raises(OcpError, match="SUCCESSFUL state"):
        engine.act_on_subtask(sl, now, ctx, 10001, "retry")


def test_hang_until_cancelled():
    ctx, world = slices(20241106, 1)
    sl = engine.set_scenario(world[FIXTURE_TASK_ID], T0, ctx, 10001, Scenario(hang=True))
    sl = engine.act_on_subtask(sl, T0, ctx, 10001, "retry")
    sl = engine.step(sl, T0 + 20 * 60 * SECOND, ctx)  # timeout is 30 minutes
    assert sl.subs[10001].status == "RUNNING"
    sl = engine.act_on_subtask(sl, T0 + 20 * 60 * SECOND, ctx, 10001, "cancel")
    assert sl.subs[10001].status == "CANCELING" and sl.task["status"] == "RUNNING"
    sl = engine.step(sl, T0 + 21 * 60 * SECOND, ctx)
    assert sl.subs[10001].status == "FAILED"
    assert any("cancelled" in line for line in sl.subs[10001].log)
    sl = engine.act_on_subtask(sl, T0 + 21 * 60 * SECOND, ctx, 10001, "retry")  # the hang is used up
    sl = engine.step(sl, T0 + 30 * 60 * SECOND, ctx)
    assert sl.subs[10001].status == "SUCCESSFUL"


def test_a_hang_ends_at_the_timeout():
    ctx, world = slices(20241106, 1)
    sl = engine.set_scenario(world[FIXTURE_TASK_ID], T0, ctx, 10001, Scenario(hang=True))
    sl = engine.act_on_subtask(sl, T0, ctx, 10001, "retry")
    sl = engine.step(sl, T0 + 2 * 3600 * SECOND, ctx)
    assert sl.subs[10001].status == "FAILED"
    assert any("timed out after 1800 seconds" in line for line in sl.subs[10001].log)


def test_skip_succeeds_without_running_the_scenario():
    ctx, world = slices(20241106, 1)
    sl = engine.set_scenario(world[FIXTURE_TASK_ID], T0, ctx, 10001, Scenario(outcome="fail"))
    sl = engine.act_on_subtask(sl, T0, ctx, 10001, "skip")
    assert (sl.subs[10001].status, sl.subs[10001].doc["operation"]) == ("READY", "SKIP")
    sl = engine.step(sl, T0 + 30 * SECOND, ctx)
    assert sl.subs[10001].status == "SUCCESSFUL" and sl.subs[10001].runs == 0


def test_rollback_runs_downstream_first_and_ends_with_every_subtask_pending():
    ctx, world = slices(20241106)
    failed = [sl for sl in world.values() if sl.task["status"] == "FAILED" and not sl.task["prohibitRollback"]]
    for sl in failed:
        sl = engine.act_on_task(sl, T0, ctx, "rollback")
        assert sl.task["operation"] == "ROLLBACK" and sl.task["status"] == "RUNNING"
        ran = [s for s in sl.subs.values() if "startTime" in s.doc]
        assert all(s.doc["operation"] == "ROLLBACK" for s in ran)
        seen_pending: set[int] = set()
        now = T0
        while sl.task["status"] == "RUNNING":
            for sub in sl.subs.values():
                if sub.status == "READY":  # a subtask rolls back only once its downstreams are undone
                    assert all(sl.subs[d].status == "PENDING" for d in sub.doc["downstreams"])
            sl = engine.step(sl, now, ctx)
            assert problems(sl) == []
            seen_pending |= {sid for sid, s in sl.subs.items() if s.status == "PENDING"}
            now += 5 * SECOND
            for sid, sub in sl.subs.items():  # rollbacks never fail here: keep the walk finite
                if sub.status == "FAILED":
                    sl = engine.act_on_subtask(sl, now, ctx, sid, "skip")
        assert sl.task["status"] == "SUCCESSFUL" and "finishTime" in sl.task
        assert set(statuses(sl).values()) == {"PENDING"}
        assert derive_task_status(statuses(sl).values(), "ROLLBACK") == "SUCCESSFUL"


def test_task_retry_reruns_every_failed_subtask():
    ctx, world = slices(20241106)
    sl = next(sl for sl in world.values() if sl.task["status"] == "FAILED")
    failed = [sid for sid, s in sl.subs.items() if s.status == "FAILED"]
    after = engine.act_on_task(sl, T0, ctx, "retry")
    assert after.task["operation"] == "RETRY" and after.task["status"] == "RUNNING"
    assert all((after.subs[s].status, after.subs[s].doc["operation"]) == ("READY", "RETRY") for s in failed)
    with pytest.raises(OcpError, match="RUNNING state"):
        engine.act_on_task(after, T0, ctx, "retry")


def test_same_seed_same_calls_same_world():
    def run(seed):
        ctx, world = slices(seed, 12)
        now = T0
        for tid, sl in sorted(world.items()):
            for sid, sub in sorted(sl.subs.items()):
                if sub.status == "FAILED" and sub.doc.get("operation") != "ROLLBACK":
                    sl = engine.act_on_subtask(sl, now, ctx, sid, "retry")
            world[tid] = engine.step(sl, now + 3600 * SECOND, ctx)
        return {tid: (sl.task, {sid: (s.doc, s.log) for sid, s in sl.subs.items()}) for tid, sl in world.items()}

    assert run(11) == run(11)
    assert run(11) != run(12)


# -------------------------------------------------------------------------------------------- properties

ACTIONS = st.one_of(
    st.tuples(st.just("advance"), st.one_of(st.integers(0, 15 * SECOND), st.integers(0, 3 * 3600 * SECOND))),
    st.tuples(st.just("subtask"), st.sampled_from(("retry", "skip", "cancel")), st.integers(0, 10_000)),
    st.tuples(st.just("task"), st.sampled_from(("retry", "rollback")), st.integers(0, 10_000)),
    st.tuples(st.just("scenario"), st.integers(0, 10_000),
              st.none() | st.builds(Scenario, st.sampled_from(engine.OUTCOMES), st.integers(0, 3), st.booleans(),
                                    st.none() | st.integers(1, 4_000_000))),
)


def _calls(action: tuple, now: int, ctx: Context, world: dict[int, TaskSlice]) -> list[tuple]:
    """What ACTIONS' ACTION does to WORLD at NOW: (task id, the engine call on its slice, the refusals it may
    raise as (status, code)) for each slice it touches."""
    ids = sorted(world)
    owner = {sid: tid for tid, sl in world.items() for sid in sl.subs}
    subtask = sorted(owner)
    if action[0] == "advance":
        return [(tid, lambda sl: engine.step(sl, now, ctx), ()) for tid in ids]
    if action[0] == "subtask":
        sid = subtask[action[2] % len(subtask)]
        return [(owner[sid], lambda sl: engine.act_on_subtask(sl, now, ctx, sid, action[1]), ((400, 20003),))]
    if action[0] == "task":
        return [(ids[action[2] % len(ids)], lambda sl: engine.act_on_task(sl, now, ctx, action[1]),
                 ((400, 20003), (400, 20004)))]
    sid = subtask[action[1] % len(subtask)]
    return [(owner[sid], lambda sl: engine.set_scenario(sl, now, ctx, sid, action[2]), ())]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), actions=st.lists(ACTIONS, min_size=1, max_size=25))
def test_invariants_hold_after_every_action_and_every_clock_move(seed, actions):
    ctx, world = slices(seed, 6)
    now = T0
    for action in actions:
        if action[0] == "advance":
            now += action[1]
        for tid, call, refusals in _calls(action, now, ctx, world):
            try:
                world[tid] = call(world[tid])
            except OcpError as refused:
                assert (refused.status, refused.code) in refusals
        for sl in world.values():
            assert problems(sl) == []
            docs = [s.doc for s in sl.subs.values()]
            assert sl.task["status"] == derive_task_status((d["status"] for d in docs), sl.task["operation"])
            assert all(s.due_at is None or s.due_at > now for s in sl.subs.values()) or action[0] != "advance"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), actions=st.lists(ACTIONS, min_size=1, max_size=25))
def test_a_change_leaves_its_input_slice_as_it_was(seed, actions):
    """TaskSlice copies on write: the result shares the Subs it did not change with the input, so a change that
    edited a shared Sub in place would alter the slice the runtime saves against (Runtime._save), and one that
    read a Sub another slice had changed would differ from the same change made on its own."""
    ctx, world = slices(seed, 6)
    now = T0
    for action in actions:
        if action[0] == "advance":
            now += action[1]
        for tid, call, _ in _calls(action, now, ctx, world):
            before = world[tid]
            value = slice_value(before)
            try:
                after = call(before)
            except OcpError:
                after = before
            assert slice_value(before) == value
            try:  # the same change on a slice that shares nothing with anything gives the same value
                alone = call(copy.deepcopy(before))
            except OcpError:
                alone = before
            assert slice_value(alone) == slice_value(after)
            world[tid] = after


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), reads=st.lists(st.integers(0, 40 * 60 * SECOND), min_size=1, max_size=6))
def test_a_running_log_only_grows(seed, reads):
    ctx, world = slices(seed, 1)
    sl = engine.set_scenario(world[FIXTURE_TASK_ID], T0, ctx, 10001, Scenario(hang=True))
    sl = engine.act_on_subtask(sl, T0, ctx, 10001, "retry")
    sl = engine.step(sl, T0 + engine.PICKUP_MS[1], ctx)
    sub = sl.subs[10001]
    shown = [sub.log + engine.running_log(sub, T0 + at, ctx) for at in sorted(reads)]
    for earlier, later in zip(shown, shown[1:]):
        assert later[: len(earlier)] == earlier
    final = engine.step(sl, T0 + 2 * 3600 * SECOND, ctx).subs[10001].log
    for lines in shown:
        assert final[: len(lines)] == lines


# ------------------------------------------------------------------------------------------------- the clock

def test_clock_runs_at_its_speed_from_its_anchor():
    clock = Clock.start(2.0, now_wall=1_000)
    assert clock.now_ms(1_000) == 1_000 and clock.now_ms(1_500) == 2_000
    assert clock.now_ms(900) == 1_000  # the machine's clock went back: mock time does not
    moved = clock.advanced(60_000, now_wall=1_500)
    assert moved.now_ms(1_500) == 62_000 and moved.now_ms(2_000) == 63_000
    stopped = moved.with_speed(0, now_wall=2_000)
    assert stopped.now_ms(10_000) == 63_000 and stopped.configured == 2.0
    assert Clock.loads(stopped.dumps()) == stopped
