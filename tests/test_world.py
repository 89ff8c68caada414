"""Tests for mock_server/world.py: the seeded world of tasks and subtasks."""

from __future__ import annotations

import copy
import hashlib
import ipaddress
import os
import random
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import orjson
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # plain pytest, no tests/__init__.py, no conftest: make mock_server importable
    sys.path.insert(0, str(ROOT))

from mock_server.world import (  # noqa: E402
    DEFAULT_SEED,
    FINISHED,
    FIXTURE_FAILED_SUBTASK_ID,
    FIXTURE_TASK_ID,
    STARTED,
    STEP_NAMES,
    TASK_TEMPLATES,
    World,
    build_world,
    check_invariants,
    derive_task_status,
    format_time,
    parse_time,
)

SPEC = yaml.safe_load((ROOT / "openapi.yaml").read_text(encoding="utf-8"))
SUBTASK_VALIDATOR = Draft202012Validator(
    {"$ref": "#/components/schemas/SubtaskInstance", "components": SPEC["components"]},
    format_checker=Draft202012Validator.FORMAT_CHECKER,
)

DEFAULT_WORLD = build_world()
SEEDS = st.integers(0, 2**32 - 1)


def world_bytes(world: World) -> bytes:
    return orjson.dumps(world.tasks + world.subtasks)


def by_id(world: World) -> dict[int, dict]:
    return {s["id"]: s for s in world.subtasks}


def task_subtasks(world: World, task: dict) -> list[dict]:
    subs = by_id(world)
    return [subs[i] for i in task["subtaskIds"]]


# ---------------------------------------------------------------------------------------------
# The fixture task
# ---------------------------------------------------------------------------------------------

FIXTURE_SHAPE = {
    # id: (status, name, parallelIdx, upstreams, downstreams)
    10000: ("SUCCESSFUL", "Check host environment", -1, [], [10001, 10002, 10003, 10004]),
    10001: ("FAILED", "Install ocp agent", 0, [10000], [10005]),
    10002: ("RUNNING", "Install ocp agent", 1, [10000], [10005]),
    10003: ("CANCELING", "Install ocp agent", 2, [10000], [10005]),
    10004: ("READY", "Install ocp agent", 3, [10000], [10005]),
    10005: ("PENDING", "Start ocp agent", -1, [10001, 10002, 10003, 10004], []),
}


@pytest.mark.parametrize("seed", [DEFAULT_SEED, 0, 1, 2**32 - 1])
def test_fixture_task_shape(seed):
    world = build_world(seed)
    task = world.tasks[0]
    assert task["id"] == FIXTURE_TASK_ID == 1000
    assert task["status"] == "RUNNING"
    assert task["operation"] == "EXECUTE"
    assert task["subtaskIds"] == [10000, 10001, 10002, 10003, 10004, 10005]
    assert "finishTime" not in task
    assert [s["id"] for s in world.subtasks[:6]] == list(FIXTURE_SHAPE)
    for s in world.subtasks[:6]:
        status, name, pidx, up, down = FIXTURE_SHAPE[s["id"]]
        assert (s["status"], s["name"], s["description"]) == (status, name, name)
        assert (s["parallelIdx"], s["upstreams"], s["downstreams"]) == (pidx, up, down)
        assert s["operation"] == "EXECUTE"
        assert s["runTime"] == 1
        assert s["nodeType"] == "JAVA_TASK"
        assert s["createTime"] == task["createTime"]
        assert ("startTime" in s) == ("executor" in s) == (status in STARTED)
        assert ("finishTime" in s) == (status in FINISHED)
        assert world.subtask_task[s["id"]] == FIXTURE_TASK_ID
    failed = by_id(world)[FIXTURE_FAILED_SUBTASK_ID]
    assert failed["status"] == "FAILED" and failed["operation"] == "EXECUTE"


def test_smaller_world_is_a_prefix():
    small = build_world(task_count=1)
    assert small.tasks == DEFAULT_WORLD.tasks[:1] and small.subtasks == DEFAULT_WORLD.subtasks[:6]
    mid = build_world(task_count=17)
    assert mid.tasks == DEFAULT_WORLD.tasks[:17]
    assert mid.subtasks == DEFAULT_WORLD.subtasks[: len(mid.subtasks)]


def test_ids_layout():
    world = DEFAULT_WORLD
    assert [t["id"] for t in world.tasks] == list(range(1000, 1040))
    assert [s["id"] for s in world.subtasks] == list(range(10000, 10000 + len(world.subtasks)))
    flat = [i for t in world.tasks for i in t["subtaskIds"]]
    assert flat == [s["id"] for s in world.subtasks]
    assert world.subtask_task == {i: t["id"] for t in world.tasks for i in t["subtaskIds"]}


# ---------------------------------------------------------------------------------------------
# Determinism
# ---------------------------------------------------------------------------------------------


def test_same_seed_same_bytes():
    assert world_bytes(build_world()) == world_bytes(DEFAULT_WORLD)
    assert world_bytes(build_world(12345, 25)) == world_bytes(build_world(12345, 25))


def test_different_seeds_differ():
    assert world_bytes(build_world(1)) != world_bytes(build_world(2))
    assert world_bytes(build_world(DEFAULT_SEED)) != world_bytes(build_world(DEFAULT_SEED + 1))


def test_independent_of_global_random_state():
    random.seed(1)
    a = world_bytes(build_world(99))
    random.seed(2)
    random.random()
    b = world_bytes(build_world(99))
    assert a == b


def test_independent_of_hash_seed():
    code = (
        "import hashlib, orjson\n"
        "from mock_server.world import build_world\n"
        "w = build_world()\n"
        "print(hashlib.sha256(orjson.dumps(w.tasks + w.subtasks)).hexdigest())\n"
    )
    expected = hashlib.sha256(world_bytes(DEFAULT_WORLD)).hexdigest()
    for hash_seed in ("0", "4242"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        out = subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
        )
        assert out.stdout.strip() == expected


def test_import_is_light():
    code = "import sys\nimport mock_server.world\nprint('faker' in sys.modules)\n"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_build_world_is_fast():
    build_world(3)  # Faker imported and warmed up
    start = time.perf_counter()
    build_world(4, task_count=40)
    assert time.perf_counter() - start < 0.5


# ---------------------------------------------------------------------------------------------
# Properties over many seeds
# ---------------------------------------------------------------------------------------------


def assert_world_ok(world: World) -> None:
    assert check_invariants(world.subtasks) == []
    subs = by_id(world)
    for s in world.subtasks:
        errors = sorted(SUBTASK_VALIDATOR.iter_errors(s), key=str)
        assert not errors, f"subtask {s['id']}: {errors[0].message}"
        assert list(s) == sorted(s)
    for task in world.tasks:
        assert list(task) == sorted(task)
        members = [subs[i] for i in task["subtaskIds"]]
        assert members, task
        assert task["subtaskIds"] == sorted(task["subtaskIds"])
        # each task's subtasks alone are a closed, valid graph
        assert check_invariants(members) == []
        statuses = [s["status"] for s in members]
        assert task["status"] == derive_task_status(statuses)
        if all(x == "SUCCESSFUL" for x in statuses):
            assert task["status"] == "SUCCESSFUL"
        elif "FAILED" in statuses and not {"RUNNING", "CANCELING", "READY"} & set(statuses):
            assert task["status"] == "FAILED"
        else:
            assert task["status"] == "RUNNING"
        ops = {s["operation"] for s in members}
        assert task["operation"] == ("ROLLBACK" if "ROLLBACK" in ops else "RETRY" if "RETRY" in ops else "EXECUTE")
        assert ("finishTime" in task) == (task["status"] != "RUNNING")
        assert task["type"] in ("MANUAL", "SCHEDULED", "SYS_SCHEDULED")
        assert task["creator"]["name"]
        ipaddress.IPv4Address(task["executor"])
        created, started = parse_time(task["createTime"]), parse_time(task["startTime"])
        assert created <= started
        starts = [parse_time(s["startTime"]) for s in members if "startTime" in s]
        finishes = [parse_time(s["finishTime"]) for s in members if "finishTime" in s]
        if starts:
            assert started <= min(starts)
        if "finishTime" in task:
            assert max(finishes) <= parse_time(task["finishTime"])
        for s in members:
            assert s["createTime"] == task["createTime"]
            for u in s["upstreams"]:
                assert world.subtask_task[u] == task["id"]  # edges stay inside a task
        # coherent state: steps (a parallel group is one step) SUCCESSFUL up to the first step that
        # is not, everything after that step PENDING
        steps: list[list[dict]] = []
        for s in members:
            if steps and (s["name"], s["upstreams"]) == (steps[-1][0]["name"], steps[-1][0]["upstreams"]):
                steps[-1].append(s)
            else:
                steps.append([s])
        open_steps = [i for i, step in enumerate(steps) if any(s["status"] != "SUCCESSFUL" for s in step)]
        if open_steps:
            for step in steps[open_steps[0] + 1 :]:
                assert all(s["status"] == "PENDING" for s in step), task["id"]
        for s in members:
            if s["operation"] == "RETRY" and s["status"] != "READY":
                assert s["runTime"] >= 2


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(SEEDS)
def test_world_properties_any_seed(seed):
    world = build_world(seed)
    assert world.seed == seed
    assert len(world.tasks) == 40
    assert_world_ok(world)
    failed_tasks = [t for t in world.tasks if any(s["status"] == "FAILED" for s in task_subtasks(world, t))]
    assert len(failed_tasks) >= 3


@settings(max_examples=30, deadline=None)
@given(SEEDS, st.integers(1, 60))
def test_world_properties_any_size(seed, task_count):
    world = build_world(seed, task_count)
    assert len(world.tasks) == task_count
    assert_world_ok(world)
    if task_count >= 20:
        failed = [t for t in world.tasks[1:] if any(s["status"] == "FAILED" for s in task_subtasks(world, t))]
        assert len(failed) >= 3


def test_default_world_has_a_mix():
    world = DEFAULT_WORLD
    failed = [t for t in world.tasks if any(s["status"] == "FAILED" for s in task_subtasks(world, t))]
    assert len(failed) >= 5
    statuses = {t["status"] for t in world.tasks}
    assert statuses == {"RUNNING", "FAILED", "SUCCESSFUL"}
    assert {t["type"] for t in world.tasks} >= {"MANUAL"}
    assert sum(t["type"] == "MANUAL" for t in world.tasks) > len(world.tasks) / 2
    assert any(s["parallelIdx"] >= 1 for s in world.subtasks[6:])  # parallel groups outside the fixture
    retryable = [s for s in world.subtasks if s["status"] == "FAILED" and s["operation"] != "ROLLBACK"]
    assert len(retryable) >= 5


# ---------------------------------------------------------------------------------------------
# Realistic data
# ---------------------------------------------------------------------------------------------


def test_executors_are_private_ipv4():
    addresses = {s["executor"] for s in DEFAULT_WORLD.subtasks if "executor" in s}
    addresses |= {t["executor"] for t in DEFAULT_WORLD.tasks}
    assert addresses
    for a in addresses:
        ip = ipaddress.IPv4Address(a)
        assert str(ip) == a
        assert any(ip in ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"))
        assert a.rsplit(".", 1)[1] not in ("0", "255")


@pytest.mark.parametrize("seed", [DEFAULT_SEED, 7, 31337])
def test_names_come_from_templates(seed):
    world = build_world(seed)
    templates = {t.name: t for t in TASK_TEMPLATES}
    subs = by_id(world)
    for task in world.tasks:
        template = templates[task["name"]]
        assert task["taskDefinitionId"] == template.definition_id
        members = [subs[i] for i in task["subtaskIds"]]
        # collapse parallel groups back into steps: the step names in template order
        steps, prev = [], None
        for s in members:
            key = (s["name"], tuple(s["upstreams"]))
            if key != prev:
                steps.append(s)
            prev = key
        assert [s["name"] for s in steps] == [step.name for step in template.steps]
        for step, first in zip(template.steps, steps):
            group = [s for s in members if s["name"] == step.name and s["upstreams"] == first["upstreams"]]
            if step.parallel:
                assert [s["parallelIdx"] for s in group] == list(range(len(group)))
            else:
                assert [s["parallelIdx"] for s in group] == [-1]
        assert [s["seriesId"] for s in members] == list(range(1, len(members) + 1))
    for s in world.subtasks:
        assert s["name"] in STEP_NAMES
        assert s["description"] == s["name"]
        assert s["timeout"] in (600, 1800, 3600)
        assert s["nodeType"] == "JAVA_TASK"


def test_ocp_provider():
    from faker import Faker
    from faker.providers import BaseProvider

    from mock_server.world import OcpProvider

    assert issubclass(OcpProvider, BaseProvider)
    fake = Faker()
    fake.add_provider(OcpProvider)
    fake.seed_instance(5)
    first = [fake.ocp_executor(), fake.ocp_timeout(), fake.ocp_task_template().name, fake.ocp_server_pool(3)]
    fake.seed_instance(5)
    assert [fake.ocp_executor(), fake.ocp_timeout(), fake.ocp_task_template().name, fake.ocp_server_pool(3)] == first
    for _ in range(200):
        ip = ipaddress.IPv4Address(fake.ocp_executor())
        assert ip.is_private
    pool = fake.ocp_server_pool(3)
    assert len(set(pool)) == 3 and len({a.rsplit(".", 1)[0] for a in pool}) == 1
    assert fake.ocp_task_template() in TASK_TEMPLATES


def test_times_are_plus_eight_with_millis():
    for s in DEFAULT_WORLD.subtasks:
        for key in ("createTime", "startTime", "finishTime"):
            if key in s:
                assert s[key].endswith("+08:00")
                assert len(s[key]) == len("2021-08-25T15:09:35.626+08:00")
                assert s[key] >= "2024-11-01T08:00:00.000+08:00"


# ---------------------------------------------------------------------------------------------
# format_time
# ---------------------------------------------------------------------------------------------


def test_format_time():
    tz8 = timezone(timedelta(hours=8))
    assert format_time(datetime(2021, 8, 25, 15, 9, 35, 626000, tzinfo=tz8)) == "2021-08-25T15:09:35.626+08:00"
    assert format_time(datetime(2021, 8, 25, 15, 9, 31, tzinfo=tz8)) == "2021-08-25T15:09:31.000+08:00"
    assert format_time(datetime(2021, 8, 25, 15, 9, 31, 999999, tzinfo=tz8)) == "2021-08-25T15:09:31.999+08:00"
    assert format_time(datetime(2021, 8, 25, 7, 9, 31, tzinfo=timezone.utc)) == "2021-08-25T07:09:31.000+00:00"
    with pytest.raises(ValueError):
        format_time(datetime(2021, 8, 25, 15, 9, 31))
    dt = datetime(2024, 11, 6, 3, 13, 28, 123000, tzinfo=tz8)
    assert parse_time(format_time(dt)) == dt


@settings(max_examples=300, deadline=None)
@given(ms=st.integers(-62_135_596_800_000 + 86_400_000, 253_402_300_799_999 - 86_400_000),
       offset_min=st.integers(-23 * 60 - 59, 23 * 60 + 59), again=st.integers(-1500, 1500))
def test_format_ms_writes_what_format_time_writes(ms, offset_min, again):
    """format_ms formats each second once: any millisecond of any second, in any offset, and a second one near it
    (the same second or the next, as a change stamps), reads as format_time writes it."""
    from mock_server.clock import format_ms, to_datetime

    tz = timezone(timedelta(minutes=offset_min))
    for at in (ms, ms + again, ms):
        assert format_ms(at, tz) == format_time(to_datetime(at, tz))


def test_parse_time_keeps_a_bounded_memo_and_still_refuses():
    """parse_time remembers the texts it parsed (a forced state's invariants parse the same times on every call):
    a text gives the same time every time, the memo never holds more than its bound, and what is not a time
    with an offset is refused whatever the memo holds."""
    from mock_server import world as world_module

    start = datetime(2024, 1, 1, tzinfo=timezone(timedelta(hours=8)))
    texts = [format_time(start + timedelta(milliseconds=i)) for i in range(world_module.PARSED_TIMES_KEPT + 50)]
    for i, text in enumerate(texts):
        assert parse_time(text) == start + timedelta(milliseconds=i)
        assert len(world_module._PARSED_TIMES) <= world_module.PARSED_TIMES_KEPT
    assert parse_time(texts[-1]) is parse_time(texts[-1])
    assert parse_time("2024-01-01T00:00:00Z") == datetime(2024, 1, 1, tzinfo=timezone.utc)
    for bad in ("2024-01-01T00:00:00", "yesterday", "", 5, None):
        for _ in range(2):
            with pytest.raises(ValueError):
                parse_time(bad)


# ---------------------------------------------------------------------------------------------
# check_invariants catches each kind of violation
# ---------------------------------------------------------------------------------------------


def _set(d, key, value):
    d[key] = value


def _shift(value: str, seconds: float) -> str:
    return format_time(parse_time(value) + timedelta(seconds=seconds))


MUTATIONS = {
    # name: (subtask id the message must name, mutate(subtasks_by_id))
    "drop downstream link": (10001, lambda s: s[10000]["downstreams"].remove(10001)),
    "drop upstream link": (10005, lambda s: s[10005]["upstreams"].remove(10002)),
    "finishTime on RUNNING": (10002, lambda s: _set(s[10002], "finishTime", _shift(s[10002]["startTime"], 5))),
    "finishTime on READY": (10004, lambda s: _set(s[10004], "finishTime", s[10000]["finishTime"])),
    "no finishTime on SUCCESSFUL": (10000, lambda s: s[10000].pop("finishTime")),
    "no finishTime on FAILED": (10001, lambda s: s[10001].pop("finishTime")),
    "no startTime on RUNNING": (10002, lambda s: (s[10002].pop("startTime"), s[10002].pop("executor"))),
    "no startTime on CANCELING": (10003, lambda s: s[10003].pop("startTime")),
    "startTime without executor": (10002, lambda s: s[10002].pop("executor")),
    "executor without startTime": (10004, lambda s: _set(s[10004], "executor", "10.0.0.1")),
    "startTime on PENDING": (
        10005,
        lambda s: (_set(s[10005], "startTime", s[10002]["startTime"]), _set(s[10005], "executor", "10.0.0.1")),
    ),
    "swap start and finish": (
        10000,
        lambda s: s[10000].update(startTime=s[10000]["finishTime"], finishTime=s[10000]["startTime"]),
    ),
    "createTime after startTime": (10002, lambda s: _set(s[10002], "createTime", _shift(s[10002]["startTime"], 1))),
    "start before upstream finish": (
        10002,
        lambda s: _set(s[10002], "startTime", _shift(s[10000]["finishTime"], -0.5)),
    ),
    "unparsable time": (10000, lambda s: _set(s[10000], "finishTime", "yesterday")),
    "naive time": (10000, lambda s: _set(s[10000], "finishTime", "2024-11-01T09:00:00.000")),
    "cycle": (
        10000,
        lambda s: (s[10005]["downstreams"].append(10000), s[10000]["upstreams"].append(10005)),
    ),
    "self reference": (10005, lambda s: (s[10005]["downstreams"].append(10005), s[10005]["upstreams"].append(10005))),
    "unknown upstream": (10005, lambda s: _set(s[10005], "upstreams", [10001, 10002, 10003, 10004, 99999])),
    "unsorted downstreams": (10000, lambda s: s[10000]["downstreams"].reverse()),
    "description differs": (10003, lambda s: _set(s[10003], "description", "Something else")),
    "parallelIdx below -1": (10002, lambda s: _set(s[10002], "parallelIdx", -2)),
    "parallelIdx not int": (10002, lambda s: _set(s[10002], "parallelIdx", "1")),
    "runTime zero": (10000, lambda s: _set(s[10000], "runTime", 0)),
    "unknown status": (10002, lambda s: _set(s[10002], "status", "DONE")),
    "unknown operation": (10001, lambda s: _set(s[10001], "operation", "REDO")),
    "READY before upstreams done": (10005, lambda s: _set(s[10005], "status", "READY")),
    "RUNNING under a RUNNING upstream": (
        10001,
        lambda s: (_set(s[10000], "status", "RUNNING"), s[10000].pop("finishTime")),
    ),
}


@pytest.mark.parametrize("name", list(MUTATIONS))
def test_check_invariants_catches(name):
    target, mutate = MUTATIONS[name]
    subtasks = copy.deepcopy(DEFAULT_WORLD.subtasks)
    assert check_invariants(subtasks) == []
    mutate({s["id"]: s for s in subtasks})
    messages = check_invariants(subtasks)
    assert messages, name
    assert all(isinstance(m, str) and m.startswith("subtask ") for m in messages)
    assert any(str(target) in m for m in messages), messages


class _ListSeenByTheLoop(list):
    """A list that _own_links' fast path (exact lists only) leaves to its general loop."""


@pytest.mark.parametrize("ids", [
    [], [10001], [10001, 10002], [10002, 10001], [10001, 10001], [10000], [10000, 10001], [99999],
    [True], [False, 10001], [10001.0], ["10001"], [None], [{}], [[10001]], [{}, 10001], [10001, [1]],
])
def test_the_fast_path_of_own_links_gives_what_the_general_loop_gives(ids):
    from mock_server.world import _own_links

    by_id = {sid: {} for sid in (10000, 10001, 10002)}
    fast_errors, loop_errors = [], []
    fast = _own_links(10000, {"upstreams": list(ids), "downstreams": list(ids)}, by_id, fast_errors)
    loop = _own_links(10000, {"upstreams": _ListSeenByTheLoop(ids), "downstreams": _ListSeenByTheLoop(ids)},
                      by_id, loop_errors)
    assert fast == loop
    assert fast_errors == [e.replace("_ListSeenByTheLoop", "list") for e in loop_errors]
    assert all(type(v) is list for v in fast.values())


def test_check_invariants_duplicate_id():
    subtasks = copy.deepcopy(DEFAULT_WORLD.subtasks[:6])
    subtasks.append(copy.deepcopy(subtasks[5]))
    messages = check_invariants(subtasks)
    assert messages and any("10005" in m and "duplicate" in m for m in messages)


def test_check_invariants_one_message_per_violation():
    subtasks = copy.deepcopy(DEFAULT_WORLD.subtasks)
    subs = {s["id"]: s for s in subtasks}
    subs[10000]["downstreams"].remove(10001)
    subs[10003]["description"] = "x"
    assert len(check_invariants(subtasks)) == 2


def test_check_invariants_cycle_reported_once():
    subtasks = copy.deepcopy(DEFAULT_WORLD.subtasks[:6])
    subs = {s["id"]: s for s in subtasks}
    for s in subtasks:  # make the statuses irrelevant: all PENDING, never started
        s["status"] = "PENDING"
        for key in ("startTime", "finishTime", "executor"):
            s.pop(key, None)
    subs[10005]["downstreams"] = [10000]
    subs[10000]["upstreams"] = [10005]
    messages = check_invariants(subtasks)
    assert len(messages) == 1 and "cycle" in messages[0] and "10000" in messages[0]


def test_check_invariants_accepts_retry_and_skip_outcomes():
    subtasks = copy.deepcopy(DEFAULT_WORLD.subtasks)
    subs = {s["id"]: s for s in subtasks}
    retried = subs[FIXTURE_FAILED_SUBTASK_ID]
    retried.update(status="READY", operation="RETRY")
    del retried["finishTime"]
    assert "startTime" in retried and "executor" in retried
    assert check_invariants(subtasks) == []
    # every FAILED subtask of the world may be retried or skipped
    for s in subtasks:
        if s["status"] == "FAILED":
            s.update(status="READY", operation="SKIP" if s["id"] % 2 else "RETRY")
            del s["finishTime"]
    assert check_invariants(subtasks) == []


def test_check_invariants_accepts_generators_and_junk():
    assert check_invariants(s for s in DEFAULT_WORLD.subtasks) == []
    assert check_invariants([]) == []
    messages = check_invariants([None, {"name": "x"}])
    assert len(messages) == 2


def test_check_invariants_reports_an_unhashable_status_or_operation():
    """A status or operation of another type (a list, an object) is a violation to report, not a TypeError."""
    for field, value in (("status", []), ("operation", {})):
        subtasks = copy.deepcopy(DEFAULT_WORLD.subtasks[:6])
        subtasks[0][field] = value
        if field == "operation":
            subtasks[0]["status"] = "PENDING"
        messages = check_invariants(subtasks)
        assert any(m.startswith(f"subtask {subtasks[0]['id']}: {field} {value!r} is not one of") for m in messages)


def test_check_invariants_reports_an_unhashable_link_also_when_focused():
    """A list where an id belongs, in a subtask's links: reported by the whole check and by the focused one (the
    admin API's forced state on a state file edited by hand), not a TypeError."""
    subtasks = copy.deepcopy(DEFAULT_WORLD.subtasks[:6])
    subtasks[1]["upstreams"] = [[1]]
    message = f"subtask {subtasks[1]['id']}: upstreams [[1]] is not a list of subtask ids"
    assert message in check_invariants(subtasks)
    assert message in check_invariants(subtasks, changed={subtasks[1]["id"]})
    assert message in check_invariants(subtasks, changed={subtasks[1]["id"], subtasks[2]["id"]})


@settings(max_examples=150, deadline=None)
@given(seed=SEEDS, pick=st.integers(0, 10_000), data=st.data())
def test_the_focused_check_finds_what_the_whole_check_finds(seed, pick, data):
    """check_invariants(..., changed={id}) after a state-only change of one subtask of a valid task (what the
    admin API's forced state is) reports exactly what the whole check reports."""
    from mock_server import lifecycle
    from mock_server.world import SUBTASK_OPERATIONS, SUBTASK_STATES

    world = build_world(seed, task_count=6)
    subs = by_id(world)
    task = world.tasks[pick % len(world.tasks)]
    members = [dict(subs[i]) for i in task["subtaskIds"]]
    target = members[pick % len(members)]
    status = data.draw(st.sampled_from(SUBTASK_STATES))
    operation = data.draw(st.sampled_from((None, *SUBTASK_OPERATIONS)))
    when = data.draw(st.datetimes(datetime(2024, 1, 1), datetime(2027, 1, 1), timezones=st.just(timezone.utc)))
    changed = lifecycle.set_state(target, status, operation, format_time(when), "127.0.0.1")
    if data.draw(st.booleans()):  # also a time out of order, as a hand-made state might have
        changed = {**changed, "createTime": format_time(when + timedelta(days=400))}
    after = [changed if s["id"] == target["id"] else s for s in members]
    assert check_invariants(after, changed={target["id"]}) == check_invariants(after)


# Values of another shape than the mock writes, for any field the focused check reads.
_JUNK_VALUES = (None, "", "x", -5, -1, 0, 1.5, True, [], [10000], [10001, 10001], {}, "2024-13-01T00:00:00",
                "2024-11-01T08:00:00", "2024-11-01T08:00:00.000+08:00", "2030-01-01T00:00:00.000Z")
_JUNK = st.sampled_from(_JUNK_VALUES)
_GONE = object()
_FIELDS = ("status", "operation", "description", "name", "parallelIdx", "runTime", "createTime", "startTime",
           "finishTime", "executor", "upstreams", "downstreams")


def test_the_focused_check_reports_every_single_bad_field_of_the_changed_subtask():
    """Every state a subtask can be forced to, with each field the check reads set to each value of another shape
    (or taken away), one at a time, on each subtask of task 1000 and on each of its neighbours: the focused check
    (its fast verdict first) reports what the whole check reports, or, for a neighbour or a link, passes only what
    the message-giving loop passes."""
    from mock_server import lifecycle
    from mock_server.world import ANCHOR, SUBTASK_STATES, _check_focused, _focused_holds

    members = [dict(s) for s in DEFAULT_WORLD.subtasks if s["id"] in DEFAULT_WORLD.tasks[0]["subtaskIds"]]
    stamp = format_time(ANCHOR + timedelta(days=2))
    # the task's own times too: sound values in every order against each other
    times = sorted({s[k] for s in members for k in ("createTime", "startTime", "finishTime") if k in s})
    for at, target in enumerate(members):
        for status in SUBTASK_STATES:
            forced = lifecycle.set_state(target, status, None, stamp, "127.0.0.1")
            for i in range(len(members)):
                for field in _FIELDS:
                    for value in (*_JUNK_VALUES, *times, _GONE):
                        after = [forced if s["id"] == target["id"] else s for s in members]
                        doc = dict(after[i])
                        if value is _GONE:
                            doc.pop(field, None)
                        else:
                            doc[field] = value
                            if field == "startTime":  # one that ran: with an executor (not alone a violation)
                                doc.setdefault("executor", "127.0.0.1")
                        after[i] = doc
                        if i == at and field not in ("upstreams", "downstreams"):
                            assert check_invariants(after, changed={target["id"]}) == check_invariants(after), \
                                (target["id"], status, field, value)
                        docs = {s["id"]: s for s in after}
                        if _focused_holds(docs, target["id"]):
                            assert _check_focused(docs, target["id"], []) == [], (target["id"], status, i, field, value)


@settings(max_examples=500, deadline=None)
@given(seed=SEEDS, pick=st.integers(0, 10_000), data=st.data())
def test_the_focused_checks_fast_verdict_never_passes_what_the_full_check_refuses(seed, pick, data):
    """The forced state's check answers the passing case from a verdict without messages (world._focused_holds).
    With state fields of another shape (or taken away) on the changed subtask, the focused check still reports exactly
    what the whole check reports; with its links or a neighbour changed too, the verdict passes only what the
    message-giving loop (world._check_focused) passes."""
    from mock_server import lifecycle
    from mock_server.world import ANCHOR, SUBTASK_OPERATIONS, SUBTASK_STATES, _check_focused, _focused_holds

    world = build_world(seed, task_count=6)
    subs = by_id(world)
    task = world.tasks[pick % len(world.tasks)]
    members = [dict(subs[i]) for i in task["subtaskIds"]]
    at = pick % len(members)
    target = members[at]
    changed = lifecycle.set_state(target, data.draw(st.sampled_from(SUBTASK_STATES)),
                                  data.draw(st.sampled_from((None, *SUBTASK_OPERATIONS))),
                                  format_time(ANCHOR + timedelta(hours=data.draw(st.integers(0, 2000)))), "127.0.0.1")
    after = [changed if s["id"] == target["id"] else s for s in members]
    state_only = True  # what check_invariants' focus presumes: only the changed subtask's state, links as they were
    for _ in range(data.draw(st.integers(0, 3))):
        i = data.draw(st.sampled_from((at, at, data.draw(st.integers(0, len(after) - 1)))))
        doc = dict(after[i])
        field = data.draw(st.sampled_from(_FIELDS))
        state_only &= i == at and field not in ("upstreams", "downstreams")
        if data.draw(st.booleans()):
            doc[field] = data.draw(_JUNK)
        else:
            doc.pop(field, None)
        after[i] = doc
    if state_only:
        assert check_invariants(after, changed={target["id"]}) == check_invariants(after)
    docs = {s["id"]: s for s in after}
    if _focused_holds(docs, target["id"]):
        assert _check_focused(docs, target["id"], []) == []
