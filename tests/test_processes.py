"""The real server: `ocp-mock serve` over HTTP, and the exactly-one-200 rule across worker processes."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from mock_server import Config, create_app
from mock_server.store import Store
from mock_server.world import check_invariants

RETRY = "/api/v2/tasks/instances/1000/subtasks/{}/retry"
ADMIN = ("admin", "admin")


def test_served_retry_then_refusal(served):
    requests.post(served + "/__mock/reset", timeout=5).raise_for_status()
    first = requests.post(served + RETRY.format(10001), auth=ADMIN, timeout=5)
    assert first.status_code == 200 and first.headers["Content-Type"] == "application/json"
    assert first.json()["data"]["operation"] == "RETRY"
    second = requests.post(served + RETRY.format(10001), auth=ADMIN, timeout=5)
    assert second.status_code == 400 and second.json()["error"]["code"] == 20003
    assert requests.post(served + RETRY.format(10001), timeout=5).status_code == 401
    assert requests.post(served + RETRY.format(10001), auth=("viewer", "viewer"), timeout=5).status_code == 403
    assert requests.post(served + RETRY.format(99999), auth=ADMIN, timeout=5).status_code == 404


def test_served_exactly_one_200_across_workers(served):
    """Many concurrent retries of each FAILED subtask, spread over both worker processes: one 200 each."""
    requests.post(served + "/__mock/reset", timeout=5).raise_for_status()
    failed = [s["id"] for s in requests.get(served + "/__mock/subtasks?status=FAILED", timeout=5).json()["data"]]
    assert len(failed) >= 3

    def call(sid):
        with requests.Session() as session:  # a connection per call, so both workers answer
            return sid, session.post(served + RETRY.format(sid), auth=ADMIN, timeout=30).status_code

    with ThreadPoolExecutor(32) as pool:
        results = list(pool.map(call, [sid for sid in failed for _ in range(16)]))
    for sid in failed:
        codes = sorted(code for s, code in results if s == sid)
        assert codes == [200] + [400] * 15, (sid, codes)
    world = requests.get(served + "/__mock/world", timeout=5).json()["data"]
    assert check_invariants(world["subtasks"]) == []
    retried = {s["id"]: s for s in world["subtasks"] if s["id"] in failed}
    assert all(s["status"] == "READY" and s["operation"] == "RETRY" for s in retried.values())
    task_of = {sid: t["id"] for t in world["tasks"] for sid in t["subtaskIds"]}
    assert all(t["status"] == "RUNNING" for t in world["tasks"] if t["id"] in {task_of[s] for s in failed})


@pytest.mark.parametrize("action, status", [("skip", "FAILED"), ("cancel", "RUNNING"), ("retry", "FAILED")])
def test_served_subtask_actions_happen_once_across_workers(served, action, status):
    """skip, cancel and retry fired concurrently at every subtask they apply to, over both workers: one success
    each, the rest refused with 20003, and the world consistent afterwards."""
    requests.post(served + "/__mock/reset", timeout=5).raise_for_status()
    rows = requests.get(served + f"/__mock/subtasks?status={status}", timeout=5).json()["data"]
    targets = [(r["taskId"], r["id"]) for r in rows if action != "retry" or r["operation"] != "ROLLBACK"]
    assert targets

    def call(target):
        task_id, sid = target
        url = f"{served}/api/v2/tasks/instances/{task_id}/subtasks/{sid}/{action}"
        with requests.Session() as session:
            response = session.post(url, auth=ADMIN, timeout=30)
        return sid, response.status_code, response.json().get("error", {}).get("code")

    with ThreadPoolExecutor(32) as pool:
        results = list(pool.map(call, [t for t in targets for _ in range(8)]))
    for _, sid in targets:
        outcomes = sorted((code, err) for s, code, err in results if s == sid)
        assert outcomes == [(200, None)] + [(400, 20003)] * 7, (action, sid, outcomes)
    world = requests.get(served + "/__mock/world", timeout=5).json()["data"]
    assert check_invariants(world["subtasks"]) == []


def _retry_in_process(db_path: str, barrier, queue) -> None:
    client = create_app(Config(db_path=db_path)).test_client()
    barrier.wait()
    response = client.post(RETRY.format(10001), headers={"Authorization": "Basic YWRtaW46YWRtaW4="})
    queue.put(response.status_code)


def test_exactly_one_200_across_processes_sharing_a_world(tmp_path):
    db_path = str(tmp_path / "world.sqlite3")
    create_app(Config(db_path=db_path))  # seed the world once, as `ocp-mock serve` does
    ctx = multiprocessing.get_context("spawn")
    n = 8
    barrier, queue = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_retry_in_process, args=(db_path, barrier, queue)) for _ in range(n)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    codes = sorted(queue.get(timeout=5) for _ in range(n))
    assert codes == [200] + [400] * (n - 1)


STRESS_JOURNAL = 4096 + 12 * 1024  # a journal this small wraps every dozen records or so


def _hammer(db_path: str, own: int, shared: int, rounds: int, barrier, queue) -> None:
    """In a process of its own: ROUNDS times, one change to OWN's run count and one to SHARED's (read, add one,
    write: every process adds to it, so a lost update shows in the total), each followed by a read of both; reads
    of a count must never go backwards."""
    from mock_server import store as store_module

    store_module.JOURNAL_BYTES = STRESS_JOURNAL
    store = store_module.Store(db_path)

    def add_one(sid):
        def work(conn):
            row = conn.sub(sid)
            store_module.Store.save_subtask(conn, sid, row.status, row.operation, row.doc, row.due_at, row.scenario,
                                            row.runs + 1, row.run_start)
        return work

    seen = {own: store.subtask(own).runs, shared: 0}
    first = seen[own]
    problems = []
    barrier.wait()
    try:
        for i in range(rounds):
            for sid in (own, shared):
                store.transaction(add_one(sid), optimistic=bool(i % 2))
                for look in (own, shared):
                    runs = store.subtask(look).runs
                    if runs < seen[look]:
                        problems.append(f"{look}: {runs} after {seen[look]}")
                    seen[look] = runs
            if store.subtask(own).runs != first + i + 1:
                problems.append(f"{own}: {store.subtask(own).runs} after {i + 1} changes of its own")
    except Exception as exc:  # noqa: BLE001  reported, so the test fails at once instead of waiting for it
        problems.append(f"{own}: {exc!r}")
    queue.put((own, problems, store._u64(store_module._GEN)))
    store.close()


def test_processes_that_write_and_read_through_many_wraps_lose_nothing_and_never_go_back(tmp_path):
    """Real processes (they read each other's records without the file lock, and through wraps under it): every
    change is kept, every process's reads only move forward, and the shared count is the sum of all changes."""
    from mock_server import store as store_module

    db_path = str(tmp_path / "world.sqlite3")
    create_app(Config(db_path=db_path, clock_speed=0)).extensions["ocp_mock"].store.close()
    seeded = Store(db_path)
    shared, *owns = [row.id for row in seeded.subtasks()][1:6]
    before = {row.id: row.runs for row in seeded.subtasks()}
    seeded.close()
    ctx = multiprocessing.get_context("spawn")
    rounds = 150
    barrier, queue = ctx.Barrier(len(owns)), ctx.Queue()
    procs = [ctx.Process(target=_hammer, args=(db_path, own, shared, rounds, barrier, queue)) for own in owns]
    for p in procs:
        p.start()
    results = [queue.get(timeout=120) for _ in owns]
    for p in procs:
        p.join(30)
    assert [problems for _, problems, _ in results] == [[]] * len(owns)
    assert max(gen for _, _, gen in results) > 5, "the journal wrapped, again and again"
    store_module.JOURNAL_BYTES, size = STRESS_JOURNAL, store_module.JOURNAL_BYTES
    try:
        store = store_module.Store(db_path)
        after = {sid: store.subtask(sid).runs - before[sid] for sid in (shared, *owns)}
        store.close()
    finally:
        store_module.JOURNAL_BYTES = size
    assert after == {shared: rounds * len(owns), **{own: rounds for own in owns}}


def test_served_reads_never_lag_a_change_made_by_another_worker(served):
    """Reads are kept per worker under the world's version: after any acknowledged change, every worker's next
    read shows it (each call on a new connection, so both workers answer)."""
    requests.post(served + "/__mock/reset", timeout=5).raise_for_status()
    task = served + "/api/v2/tasks/instances/1000"
    page = served + "/api/v2/tasks/instances?page=1&size=2000"

    def status_of(url, sid):
        with requests.Session() as session:
            body = session.get(url, auth=ADMIN, timeout=5).json()["data"]
        rows = body["subtasks"] if "subtasks" in body else next(t for t in body["contents"] if t["id"] == 1000)["subtasks"]
        return next(s["status"] for s in rows if s["id"] == sid)

    with ThreadPoolExecutor(8) as pool:
        for _ in range(10):
            put = requests.put(served + "/__mock/subtasks/10001", json={"status": "FAILED", "operation": "EXECUTE"},
                               timeout=5)
            assert put.status_code == 200, put.text
            assert set(pool.map(lambda url: status_of(url, 10001), [task, page] * 8)) == {"FAILED"}
            with requests.Session() as session:
                assert session.post(served + RETRY.format(10001), auth=ADMIN, timeout=5).status_code == 200
            assert set(pool.map(lambda url: status_of(url, 10001), [task, page] * 8)) == {"READY"}
            with requests.Session() as session:
                assert session.post(served + RETRY.format(10001), auth=ADMIN, timeout=5).status_code == 400


def _set_status(conn, subtask_id: int, status: str) -> None:
    """Inside a store transaction: the subtask's status column alone (its wire form is left as it is)."""
    from mock_server.store import Store

    row = conn.sub(subtask_id)
    if row is not None:
        Store.save_subtask(conn, subtask_id, status, row.operation, row.doc, row.due_at, row.scenario, row.runs,
                           row.run_start)


def test_a_change_through_one_store_is_seen_by_another_at_once(tmp_path):
    """Two Store objects on one file stand for two worker processes: each keeps its own memo."""
    from mock_server.store import MEMO_LIMIT, Store

    db_path = str(tmp_path / "world.sqlite3")
    create_app(Config(db_path=db_path, clock_speed=0))
    a, b = Store(db_path), Store(db_path)
    read = lambda store: store.memo(("subtask", 10001), lambda: store.subtask(10001)).status  # noqa: E731
    assert read(a) == read(b) == "FAILED"
    a.transaction(lambda conn: _set_status(conn, 10001, "READY"))
    assert read(b) == "READY" and read(a) == "READY"
    with a.dry_run():  # rolled back: nothing changed, and both keep what they have
        a.transaction(lambda conn: _set_status(conn, 10001, "FAILED"))
    assert read(b) == "READY"
    for i in range(MEMO_LIMIT * 2):  # ids without end (a fuzzer's) do not grow the memo without end
        b.memo(("subtask", i), lambda: None)
    assert len(b._memo) <= MEMO_LIMIT
    a.transaction(lambda conn: _set_status(conn, 10001, "FAILED"))
    assert read(b) == "FAILED" and len(b._memo) == 1, "what a change made stale is let go at the next look"


def test_the_command_line_imports_none_of_the_app():
    """granian's main process imports cli.py and forks the workers from itself: it holds neither the app's libraries
    nor the world (startup.py builds it in a child process)."""
    import subprocess
    import sys

    code = "import sys, mock_server.cli; print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in " \
           "{'flask', 'werkzeug', 'jsonschema', 'yaml', 'faker', 'orjson', 'sqlite3'} or m in " \
           "{'mock_server.app', 'mock_server.spec', 'mock_server.world', 'mock_server.store'})))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True)
    assert result.stdout.strip() == ""


def test_shared_worlds_are_the_worlds_built(tmp_path):
    from mock_server import world

    built = world.build_world(7, task_count=12)
    world.share_built_worlds(str(tmp_path))
    try:
        first, again = world.build_world(7, task_count=12), world.build_world(7, task_count=12)
    finally:
        world.share_built_worlds(None)
    assert [p.name for p in tmp_path.iterdir()] == ["world-7-12.json"]  # built once, then read
    assert first == again == built


def test_the_memo_keeps_within_its_byte_budget_and_outlives_writes_that_change_nothing(tmp_path):
    from mock_server.store import MEMO_BUDGET, Store

    db_path = str(tmp_path / "world.sqlite3")
    create_app(Config(db_path=db_path, clock_speed=0))
    store = Store(db_path)
    big = b"x" * (MEMO_BUDGET // 4)
    for i in range(10):
        store.memo(("page", i), lambda: big)
    assert sum(len(v) for _, v in store._memo.values()) <= MEMO_BUDGET
    store.memo(("kept", 1), lambda: b"1")
    store.transaction(lambda conn: _set_status(conn, -1, "FAILED"))  # no such row
    assert store.memo(("kept", 1), lambda: b"recomputed") == b"1", "a write that changed no row keeps the memo"
