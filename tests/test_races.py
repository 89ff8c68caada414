"""Interleavings that threads and worker processes can produce, replayed in order: each must end in an answer
from the rules (never a 500)."""

from __future__ import annotations

from conftest import ADMIN, slice_value
from mock_server import lifecycle
from mock_server.engine import Scenario, Sub, TaskSlice
from mock_server.runtime import Runtime
from mock_server.world import build_world


def _moved_subtask(seed: int) -> tuple[int, int, int, int]:
    """(subtask, its task under SEED, another seed, its task there): a FAILED subtask that another seed's world
    puts in another task."""
    here = build_world(seed, 40)
    for other in range(1, 50):
        there = build_world(other, 40)
        for s in here.subtasks:
            sid = s["id"]
            if s["status"] == "FAILED" and sid in there.subtask_task and there.subtask_task[sid] != here.subtask_task[sid]:
                return sid, here.subtask_task[sid], other, there.subtask_task[sid]
    raise AssertionError("no subtask changes task between seeds")


def test_a_reset_to_another_seed_between_the_check_and_the_write(app, client, mock, monkeypatch):
    """The handler reads the subtask (and its task) lock-free, then another worker replaces the world: the action
    applies to the subtask in the world as it is, never to the task id read before."""
    sid, task_id, other_seed, _ = _moved_subtask(mock.config.seed)
    original = lifecycle.check

    def check_then_reset(*args, **kwargs):
        original(*args, **kwargs)
        monkeypatch.setattr(lifecycle, "check", original)
        mock.reset(other_seed)  # as POST /__mock/reset {"seed": N} in another worker would, at this moment

    monkeypatch.setattr(lifecycle, "check", check_then_reset)
    response = client.post(f"/api/v2/tasks/instances/{task_id}/subtasks/{sid}/retry", headers=ADMIN)
    body = response.get_json()
    assert response.status_code in (200, 400), body
    if response.status_code == 200:
        assert body["data"]["id"] == sid and body["data"]["status"] == "READY"
    else:
        assert body["error"]["code"] == 20003


class _RacedRuntime(Runtime):
    """A runtime whose known earliest due time another thread sets to None after the first look (tick() found
    nothing due in a read older than this thread's commit)."""

    def __init__(self):  # noqa: D107  only what _noted uses
        self.looks = 0

    @property
    def _due(self):
        self.looks += 1
        return 5 if self.looks == 1 else None

    @_due.setter
    def _due(self, value):
        self.set_to = value


def test_noting_a_change_reads_the_known_due_time_once():
    runtime = _RacedRuntime()
    runtime._noted(TaskSlice({"id": 1}, {1: Sub({"id": 1, "status": "RUNNING"}, due_at=7)}))
    assert runtime.looks == 1 and runtime.set_to == 5


def test_a_load_shares_the_subs_of_rows_that_did_not_change(mock):
    """Runtime._load keeps the Sub it made from each row: a task loaded again shares the Subs of the rows that
    stayed as they were, makes new ones for those that changed, and always holds what loading afresh gives (after
    a change, a scenario set and a reset to another seed alike)."""
    runtime, store = mock.runtime, mock.store

    def load(task_id: int = 1000) -> TaskSlice:
        return store.transaction(lambda conn: runtime._load(conn, task_id))[0]

    def afresh(task_id: int = 1000) -> TaskSlice:
        runtime._loaded.clear()
        return load(task_id)

    first = load()
    again = load()
    assert all(again.subs[sid] is first.subs[sid] for sid in first.subs)
    runtime.subtask_action(10001, "retry")
    after = load()
    assert after.subs[10001] is not first.subs[10001] and after.subs[10001].status == "READY"
    changed = {sid for sid in first.subs if after.subs[sid].doc != first.subs[sid].doc}
    assert 10001 in changed
    assert all(after.subs[sid] is first.subs[sid] for sid in first.subs if sid not in changed)
    assert slice_value(after) == slice_value(afresh())
    runtime.set_scenario(10003, Scenario(outcome="fail"))
    assert load().subs[10003].scenario == Scenario(outcome="fail")
    assert slice_value(load()) == slice_value(afresh())
    before_reset = load()
    mock.reset(mock.config.seed + 1)
    reloaded = load()
    assert slice_value(reloaded) == slice_value(afresh())
    assert reloaded.subs[10003].scenario is None and before_reset.subs[10003].scenario is not None
