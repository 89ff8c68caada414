"""The store's journal: every process's copy of the world follows every change, through wraps and reloads; SQLite
gets every change (written behind, or through with `durable`); a killed run's changes are replayed at the next
start; a record is only ever plain data. Two Store objects on one file stand for two worker processes."""

from __future__ import annotations

import fcntl
import multiprocessing
import os
import pickle
import sqlite3
import threading
import time

import orjson
import pytest

from mock_server import Config, create_app, store as store_module
from mock_server.store import MAX_LOG_CHARS, Store, StoreError, _append_log

ARMED = 10001  # FAILED in the seeded world


def _runs(conn, sid: int) -> int:
    return conn.sub(sid).runs


def _bump(store: Store, sid: int, by: int = 1, optimistic: bool = False) -> int:
    """A change through STORE: the subtask's run count goes up by BY (a column no engine rule reads here)."""
    def work(conn):
        row = conn.sub(sid)
        Store.save_subtask(conn, sid, row.status, row.operation, row.doc, row.due_at, row.scenario, row.runs + by,
                           row.run_start)
        return row.runs + by

    return store.transaction(work, optimistic=optimistic)


def _sqlite_rows(path: str) -> dict:
    with sqlite3.connect(path) as conn:
        return {"subtask": conn.execute("SELECT id, status, doc, due_at, scenario, runs, run_start FROM subtask "
                                        "ORDER BY id").fetchall(),
                "task": conn.execute("SELECT id, status, doc FROM task ORDER BY id").fetchall(),
                "log": conn.execute("SELECT subtask_id, text FROM subtask_log ORDER BY subtask_id").fetchall()}


def _image_rows(store: Store) -> dict:
    image = store._view()
    return {"subtask": [(r.id, r.status, r.doc, r.due_at, r.scenario, r.runs, r.run_start)
                        for _, r in sorted(image.subs.items())],
            "task": [(i, s, d) for i, (s, d) in sorted(image.tasks.items())],
            "log": sorted(image.logs.items())}


@pytest.fixture()
def world(tmp_path) -> str:
    path = str(tmp_path / "world.sqlite3")
    create_app(Config(db_path=path, clock_speed=0)).extensions["ocp_mock"].store.close()
    return path


@pytest.fixture(params=[True, False], ids=["read-on", "file-lock-only"])
def read_on(request, monkeypatch) -> bool:
    """Both ways a lagging process catches up: reading on without the file lock (where the machine's store order
    allows it, store._READ_ON) and always under the file lock."""
    if request.param and not store_module._READ_ON:
        pytest.skip("this machine's processes read the journal under the file lock only")
    monkeypatch.setattr(store_module, "_READ_ON", request.param)
    return request.param


def test_two_processes_follow_each_other_through_many_wraps(world, monkeypatch, read_on):
    monkeypatch.setattr(store_module, "JOURNAL_BYTES", store_module.START + 16 * 1024)  # a wrap every few records
    a, b = Store(world), Store(world)
    sids = [r.id for r in a.subtasks()][:12]
    expected = {sid: a.subtask(sid).runs for sid in sids}
    gens = set()
    for i in range(300):
        writer, reader = (a, b) if i % 3 else (b, a)
        sid = sids[i % len(sids)]
        expected[sid] = _bump(writer, sid, optimistic=bool(i % 2))
        gens.add(store_module._U64.unpack_from(writer._journal, store_module._GEN)[0])
        if i % 7 == 0:  # the reader looks now and then: sometimes a whole wrap behind, sometimes several
            assert reader.subtask(sid).runs == expected[sid]
    assert len(gens) > 5, "the journal wrapped, again and again"
    assert {sid: a.subtask(sid).runs for sid in sids} == {sid: b.subtask(sid).runs for sid in sids} == expected
    c = Store(world)  # a process that starts now: SQLite, then what the journal has after it
    assert {sid: c.subtask(sid).runs for sid in sids} == expected
    for s in (a, b, c):
        s.close()
    assert _sqlite_rows(world) == _image_rows(c)


def _read_in_a_thread(store: Store, sid: int) -> tuple[threading.Thread, list]:
    got: list = []
    thread = threading.Thread(target=lambda: got.append(store.subtask(sid).runs), daemon=True)
    thread.start()
    return thread, got


def test_a_lagging_process_reads_on_while_another_holds_the_file_lock(world, read_on):
    """Records of the generation a process is at are read on without the file lock: a read after another
    process's change answers with it even while a third holds the lock (a writer storing its change). Under the
    file lock only, the read waits for it."""
    a, b = Store(world), Store(world)
    a.subtask(ARMED)  # a's copy is at the journal's head
    runs = [_bump(b, ARMED), _bump(b, ARMED, optimistic=True)][-1]
    other = os.open(world + ".lock", os.O_RDWR)
    try:
        fcntl.flock(other, fcntl.LOCK_EX)
        thread, got = _read_in_a_thread(a, ARMED)
        thread.join(timeout=0.5 if not read_on else 10)
        assert got == ([runs] if read_on else []), "read on, or waiting for the file lock"
        fcntl.flock(other, fcntl.LOCK_UN)
        thread.join(timeout=10)
        assert got == [runs]
    finally:
        os.close(other)
    assert _image_rows(a) == _image_rows(b)
    for s in (a, b):
        s.close()


def test_a_process_a_wrap_behind_does_not_read_the_next_generation_as_its_own(world, monkeypatch, read_on):
    """A is at some point of the journal; B wraps it and writes on past that point. The bytes after A's point
    are now the next generation's, starting mid-way: A must reload (SQLite, then the new records), not read on."""
    monkeypatch.setattr(store_module, "JOURNAL_BYTES", store_module.START + 16 * 1024)
    a, b = Store(world), Store(world)
    sids = [r.id for r in a.subtasks()][:6]
    for i in range(4):
        _bump(b, sids[i % len(sids)])
    a.subtask(ARMED)
    at_end = a._u64(store_module._END)
    gen = b._u64(store_module._GEN)
    i = 0
    while b._u64(store_module._GEN) == gen or b._u64(store_module._END) <= at_end:
        _bump(b, sids[i % len(sids)], by=i + 1)  # records of different sizes over time
        i += 1
    assert b._u64(store_module._GEN) == gen + 1
    assert _image_rows(a) == _image_rows(b)
    for s in (a, b):
        s.close()


@pytest.mark.parametrize("how", ["wrap", "reset"])
def test_a_read_half_way_through_a_wrap_or_reset_never_misses_acknowledged_changes(world, monkeypatch, how,
                                                                                    read_on):
    """A's copy is at the start of a generation; B acknowledges changes, then starts a wrap (or a reset), which
    puts END back at START before it moves GEN: the head then reads where A's copy is. A read by A at that moment
    must still show every change B acknowledged."""
    monkeypatch.setattr(store_module, "JOURNAL_BYTES", store_module.START + 16 * 1024)
    a, b = Store(world), Store(world)
    b._sql(lambda conn: conn.execute("UPDATE meta SET value = value WHERE key = 'seed'"))  # a new generation
    a.subtask(ARMED)
    assert store_module._HEAD_FIELDS.unpack(a._at)[1] == store_module.START, "A is at the generation's start"
    acked, seen, threads = {}, [], []
    put = b._put

    def spy(offset, value):
        put(offset, value)
        if not threads and offset == store_module._END and value == store_module.START:  # half way
            threads.append(threading.Thread(target=lambda: seen.append((acked[ARMED], a.subtask(ARMED).runs)),
                                            daemon=True))
            threads[0].start()
            threads[0].join(0.3)  # a read that answers at once answers now; one that waits for the lock, later

    acked[ARMED] = _bump(b, ARMED)
    b._put = spy
    if how == "wrap":
        while not threads:
            acked[ARMED] = _bump(b, ARMED)
    else:
        for _ in range(3):
            acked[ARMED] = _bump(b, ARMED)
        b._sql(lambda conn: conn.execute("UPDATE meta SET value = value WHERE key = 'seed'"))
    b._put = put
    threads[0].join(10)
    (acknowledged, read), = seen
    assert read >= acknowledged, "A's read missed changes B had acknowledged before the wrap or reset began"
    assert a.subtask(ARMED).runs == b.subtask(ARMED).runs
    for s in (a, b):
        s.close()


class _WrapsWhileCopied:
    """A's journal mapping, through which the copy of the records a lagging reader reads on starts another
    process's burst of changes (WRITE) that wraps the journal: what the copy holds is then partly the next
    generation."""

    def __init__(self, journal, write):
        self.journal, self.write = journal, write

    def __getitem__(self, key):
        if isinstance(key, slice) and key.start is not None and key.start >= store_module.START and self.write:
            write, self.write = self.write, None
            write()
        return self.journal[key]

    def __getattr__(self, name):
        return getattr(self.journal, name)

    def __len__(self):
        return len(self.journal)


def test_a_wrap_during_a_read_on_sends_the_reader_to_the_file_lock(world, monkeypatch):
    """B wraps the journal (and writes past where A had read to) while A copies the records it lags by: A must
    not apply those bytes, and catches up under the file lock instead, to the world B has."""
    if not store_module._READ_ON:
        pytest.skip("this machine's processes read the journal under the file lock only")
    monkeypatch.setattr(store_module, "JOURNAL_BYTES", store_module.START + 16 * 1024)
    a, b = Store(world), Store(world)
    sids = [r.id for r in a.subtasks()][:6]
    for sid in sids:
        _bump(b, sid)
    a.subtask(ARMED)
    for sid in sids:  # records A has not read yet
        _bump(b, sid, by=3)
    wraps = []

    def burst():
        gen = b._u64(store_module._GEN)
        while b._u64(store_module._GEN) == gen or b._u64(store_module._END) < store_module.START + 8 * 1024:
            for sid in sids:
                _bump(b, sid, by=5)
        wraps.append(b._u64(store_module._GEN) - gen)

    real, catch_ups = a._journal, []
    locked = a._catch_up

    def catch_up():  # under the file lock: the mapping itself again
        catch_ups.append(a._journal is not real)
        a._journal = real
        return locked()

    monkeypatch.setattr(a, "_catch_up", catch_up)
    a._journal = _WrapsWhileCopied(real, burst)
    assert a.subtask(ARMED).runs == b.subtask(ARMED).runs
    assert wraps and wraps[0] >= 1, "a wrap came during the copy"
    assert catch_ups[:1] == [True], "A left the read on for the file lock"
    assert _image_rows(a) == _image_rows(b)
    for s in (a, b):
        s.close()


def test_sqlite_is_written_behind_and_through_with_durable(world):
    behind = Store(world)
    sid = ARMED
    before = _sqlite_rows(world)
    _bump(behind, sid)
    assert _sqlite_rows(world) == before, "written behind: not yet"
    behind.close()
    assert _sqlite_rows(world) == _image_rows(behind)
    through = Store(world, durable=True)
    runs = _bump(through, sid)
    with sqlite3.connect(world) as conn:  # on disk before the change returns
        assert conn.execute("SELECT runs FROM subtask WHERE id = ?", (sid,)).fetchone()[0] == runs
    assert behind.subtask(sid).runs == runs  # and the other process sees it too


def _write_and_die(path: str, sid: int, n: int) -> None:
    store = Store(path)
    for _ in range(n):
        _bump(store, sid)
    os._exit(0)  # killed: no close, nothing written behind


def _change_in_a_fork(store: Store, parent_fd: int, out) -> None:
    try:
        runs = _bump(store, ARMED)
        out.send((runs, store._pid == os.getpid(), store._turn_fd != parent_fd))
    finally:
        os._exit(0)


def test_a_store_used_across_a_fork_takes_its_own_descriptors_in_the_child(world):
    """The store notes the process it opened its descriptors in without asking the system every time (a fork
    tells it): a child that goes on with its parent's Store object locks through a descriptor of its own (an
    inherited one would share the parent's file lock), and its change reaches the parent."""
    store = Store(world)
    before = _bump(store, ARMED)
    parent_fd = store._turn_fd
    ctx = multiprocessing.get_context("fork")
    receive, send = ctx.Pipe(False)
    proc = ctx.Process(target=_change_in_a_fork, args=(store, parent_fd, send))
    proc.start()
    assert receive.poll(60)
    runs, own_pid, own_fd = receive.recv()
    proc.join(60)
    assert (runs, own_pid, own_fd) == (before + 1, True, True)
    assert store._pid == os.getpid() and store._turn_fd == parent_fd
    assert store.subtask(ARMED).runs == before + 1  # the parent follows the child's change
    assert _bump(store, ARMED) == before + 2


def test_a_killed_runs_changes_are_replayed_at_the_next_start(world):
    with sqlite3.connect(world) as conn:
        runs = conn.execute("SELECT runs FROM subtask WHERE id = ?", (ARMED,)).fetchone()[0]
    ctx = multiprocessing.get_context("spawn")
    proc = ctx.Process(target=_write_and_die, args=(world, ARMED, 5))
    proc.start()
    proc.join(60)
    with sqlite3.connect(world) as conn:
        assert conn.execute("SELECT runs FROM subtask WHERE id = ?", (ARMED,)).fetchone()[0] == runs
    fresh = Store(world)
    assert fresh.subtask(ARMED).runs == runs + 5
    with sqlite3.connect(world) as conn:  # the start that found it alone wrote it into SQLite
        assert conn.execute("SELECT runs FROM subtask WHERE id = ?", (ARMED,)).fetchone()[0] == runs + 5


def test_a_journal_left_by_another_state_file_is_not_replayed(tmp_path):
    one, two = str(tmp_path / "one.sqlite3"), str(tmp_path / "two.sqlite3")
    for path in (one, two):
        create_app(Config(db_path=path, clock_speed=0)).extensions["ocp_mock"].store.close()
    ctx = multiprocessing.get_context("spawn")
    proc = ctx.Process(target=_write_and_die, args=(one, ARMED, 3))
    proc.start()
    proc.join(60)
    os.replace(one + ".journal", two + ".journal")  # two's own journal is replaced by one's, with records
    with sqlite3.connect(two) as conn:
        runs = conn.execute("SELECT runs FROM subtask WHERE id = ?", (ARMED,)).fetchone()[0]
    assert Store(two).subtask(ARMED).runs == runs, "one's records were not applied to two"
    with sqlite3.connect(two) as conn:
        assert conn.execute("SELECT runs FROM subtask WHERE id = ?", (ARMED,)).fetchone()[0] == runs


def test_a_record_larger_than_the_journal_goes_through_sqlite_and_everyone_reloads(world, monkeypatch):
    monkeypatch.setattr(store_module, "JOURNAL_BYTES", store_module.START + 256)
    a, b = Store(world), Store(world)
    assert b.subtask(ARMED).status == "FAILED"
    runs = _bump(a, ARMED)  # a subtask row with its wire form is larger than 256 bytes
    assert b.subtask(ARMED).runs == runs
    with sqlite3.connect(world) as conn:
        assert conn.execute("SELECT runs FROM subtask WHERE id = ?", (ARMED,)).fetchone()[0] == runs


def test_a_change_computed_outside_the_lock_is_computed_again_when_what_it_read_moved(world):
    a, b = Store(world), Store(world)
    start = a.subtask(ARMED).runs
    calls = []

    def work(conn):
        row = conn.sub(ARMED)
        if not calls:  # another process stores a change to the same row meanwhile
            _bump(b, ARMED, by=10)
        calls.append(row.runs)
        Store.save_subtask(conn, ARMED, row.status, row.operation, row.doc, row.due_at, row.scenario, row.runs + 1,
                           row.run_start)

    a.transaction(work, optimistic=True)
    assert calls == [start, start + 10], "run again under the lock, on the world as it was then"
    assert a.subtask(ARMED).runs == b.subtask(ARMED).runs == start + 11, "no change lost"


RETRY = "/api/v2/tasks/instances/1000/subtasks/{}/retry"


def _lagging(store: Store, sid: int) -> str:
    """The subtask's status in STORE's copy of the world as it is, without catching up with other processes."""
    return store._image.subs[sid].status


def test_a_retry_is_decided_on_the_world_as_it_is_not_on_a_process_that_lags(world):
    """Two apps on one state file stand for two workers. Each process answers from its own copy of the world;
    a retry's first look at the subtask may lag the other process, so neither a refusal nor a success may rest
    on it: A saw 10002 RUNNING, B forced it to FAILED, A retries it; B retried 10001 (READY), A still saw it
    FAILED and refuses."""
    from conftest import ADMIN

    a, b = (create_app(Config(db_path=world, clock_speed=0)) for _ in range(2))
    store_a = a.extensions["ocp_mock"].store
    assert a.test_client().get("/api/v2/tasks/instances/1000", headers=ADMIN).status_code == 200  # A, at the head
    assert _lagging(store_a, ARMED) == "FAILED" and _lagging(store_a, 10002) == "RUNNING"
    assert b.test_client().put("/__mock/subtasks/10002", json={"status": "FAILED"}).status_code == 200
    assert _lagging(store_a, 10002) == "RUNNING", "A lags B"
    retried = a.test_client().post(RETRY.format(10002), headers=ADMIN)
    assert retried.status_code == 200 and retried.json["data"]["status"] == "READY"
    assert b.test_client().post(RETRY.format(ARMED), headers=ADMIN).status_code == 200  # B moves on: A lags again
    assert _lagging(store_a, ARMED) == "FAILED", "A lags B"
    refused = a.test_client().post(RETRY.format(ARMED), headers=ADMIN)
    assert refused.status_code == 400 and refused.json["error"]["code"] == 20003
    assert "READY" in refused.json["error"]["message"]
    rows = b.extensions["ocp_mock"].store
    assert rows.subtask(ARMED).status == "READY" and rows.subtask(10002).status == "READY"


def test_concurrent_optimistic_changes_lose_nothing(world):
    stores = [Store(world) for _ in range(3)]
    sids = [r.id for r in stores[0].subtasks()][:4]
    base = {sid: stores[0].subtask(sid).runs for sid in sids}

    def hammer(store: Store, k: int) -> None:
        for i in range(150):
            _bump(store, sids[(i + k) % len(sids)], optimistic=True)

    threads = [threading.Thread(target=hammer, args=(stores[k % 3], k)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    total = sum(stores[1].subtask(sid).runs - base[sid] for sid in sids)
    assert total == 6 * 150
    assert _image_rows(stores[0]) == _image_rows(stores[1]) == _image_rows(stores[2])


def test_applying_a_record_marks_exactly_its_rows_and_their_tasks():
    """Image.apply notes, for a record with rows of every table, the keys record_keys gives (dirty, and moved in
    changed_at) and the task key ("T", id) of every task a row belongs to; nothing else."""
    from mock_server.store import Image, SubtaskRow, record_keys

    doc = b'{"id":1}'
    image = Image({"seed": "1"}, {7: ("FAILED", doc), 8: ("FAILED", doc)},
                  {70: SubtaskRow(70, 7, "FAILED", None, doc), 80: SubtaskRow(80, 8, "FAILED", None, doc),
                   81: SubtaskRow(81, 8, "FAILED", None, doc)}, {})
    record = ((("clock", "{}"),), ((7, "RUNNING", doc),),
              (tuple(SubtaskRow(80, 8, "READY", "RETRY", doc, 5)),), ((81, "first", "line"),))
    dirty = set()
    image.apply(record, dirty)
    assert dirty == record_keys(record) == {("m", "clock"), ("t", 7), ("s", 80), ("l", 81)}
    moved = {key for key, at in image.changed_at.items() if at == image.applied}
    assert moved == dirty | {("T", 7), ("T", 8)}
    assert image.subs[80].status == "READY" and image.due == {80: 5} and image.logs == {81: "first\nline"}
    assert image.tasks[7] == ("RUNNING", doc) and image.meta["clock"] == "{}" and image.seq % 2 == 0


def test_a_long_log_keeps_its_latest_lines_within_the_bound():
    text = "first"
    for i in range(5000):
        text = _append_log(text, None, f"2026-12-01 10:00:00.000 INFO [t] line {i}")
    assert len(text) <= MAX_LOG_CHARS
    kept = [int(line.rsplit(" ", 1)[1]) for line in text.split("\n")]  # whole lines only, the latest, in order
    assert kept == list(range(5000 - len(kept), 5000)) and len(kept) > 100
    assert _append_log(None, None, "x") is None, "no log is started without its first part"
    assert _append_log(None, "seeded", None) == "seeded"
    assert _append_log("", None, "a") == "a"


def test_a_journal_record_is_plain_data_and_nothing_else_reads_back():
    """Records are written in marshal's format: plain data round-trips; an object of a class cannot be written at
    all, and a pickle (which can name a class for Python to call) left in the journal does not read back."""
    import marshal

    class Rigged:
        def __reduce__(self):
            return (os.system, ("echo no",))

    plain = ((("k", "v"),), ((1, "RUNNING", b"{}"),), ((2, 1, "READY", None, b"{}", None, None, 0, None),),
             ((2, None, "line"),))
    assert marshal.loads(marshal.dumps(plain)) == plain
    with pytest.raises(ValueError):
        marshal.dumps(((), (), (), ((1, None, Rigged()),)))
    with pytest.raises((ValueError, EOFError, TypeError)):
        marshal.loads(pickle.dumps(((), (), (), ((1, None, Rigged()),)), protocol=5))


def test_a_record_a_store_writes_reads_back_as_it_was_staged(world):
    """What a change appends to the journal is exactly its record (and the other process applies that)."""
    import marshal

    a, b = Store(world), Store(world)
    b.subtask(ARMED)
    staged = []
    stage = Store._stage
    a._stage = lambda txn: staged.append(stage(txn)) or staged[-1]
    _bump(a, ARMED, by=7, optimistic=True)
    (record, payload), = staged
    end = a._u64(store_module._END)
    (size,) = store_module._LEN.unpack_from(a._journal, end - 4 - len(payload))
    assert size == len(payload) and marshal.loads(a._journal[end - len(payload):end]) == record
    assert b.subtask(ARMED).runs == a.subtask(ARMED).runs
    for s in (a, b):
        s.close()


def test_a_file_that_is_not_a_state_file_is_refused_untouched(tmp_path):
    path = tmp_path / "other.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE notes (x)")
    before = path.read_bytes()
    with pytest.raises(StoreError):
        Store(str(path)).ensure_seeded(1, lambda seed: None)
    assert path.read_bytes() == before


def test_a_store_opened_before_the_world_was_seeded_follows_it(tmp_path):
    path = str(tmp_path / "late.sqlite3")
    early = Store(path)
    assert early.subtask(ARMED) is None and early.counts() == {"tasks": 0, "subtasks": 0}
    create_app(Config(db_path=path, clock_speed=0))  # another process seeds the world meanwhile
    assert early.subtask(ARMED).status == "FAILED"
    runs = _bump(early, ARMED)
    assert Store(path).subtask(ARMED).runs == runs, "a process that starts now sees the change, unflushed"
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT value FROM meta WHERE key = 'journal'").fetchone(), "the file knows its journal"


def test_a_read_never_takes_an_image_another_thread_just_replaced(world, monkeypatch):
    """Thread T1 takes the image, T2 reloads it meanwhile (after more than a wrap by another process): T1 must not
    answer from the old one."""
    monkeypatch.setattr(store_module, "JOURNAL_BYTES", store_module.START + 16 * 1024)

    class Hooked(Store):
        hook = None

        @property
        def _seen(self):
            value = self.__dict__.get("_seen_v")
            hook, self.hook = self.hook, None
            if hook is not None:
                t = threading.Thread(target=hook)
                t.start()
                t.join()
            return value

        @_seen.setter
        def _seen(self, value):
            self.__dict__["_seen_v"] = value

    a, b = Hooked(world), Store(world)
    runs = a.subtask(ARMED).runs
    for _ in range(60):  # past more than one wrap: a's next look reloads from SQLite
        runs = _bump(b, ARMED)
    a.hook = a._view
    assert a.subtask(ARMED).runs == runs


def test_inside_a_wrap_no_process_takes_its_image_as_current(world):
    a = Store(world)
    a.subtask(ARMED)
    b = Store(world)
    b.subtask(ARMED)
    seen = []
    put = a._put

    def spy(offset, value):
        put(offset, value)
        if not seen and offset == store_module._END and value == store_module.START:  # halfway through a wrap
            image, version = b._seen
            seen.append(b._version[:8] == version)

    a._put = spy
    while not seen:
        _bump(a, ARMED)
    assert seen == [False], "b's copy lags the changes a acknowledged: its next read must catch up"


def test_two_first_uses_of_the_lock_take_one_descriptor(world, monkeypatch):
    """Two threads use the lock for the first time at once: one descriptor is opened, locked and unlocked (two
    would leave one locked for good, and every writer of every process waiting)."""
    store = Store(world)
    real_open = os.open
    opened = []

    def slow_open(path, *args, **kwargs):
        if str(path).endswith(".lock"):
            opened.append(path)
            time.sleep(0.2)  # the other thread would pass `_turn_fd is None` meanwhile
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(store_module.os, "open", slow_open)
    done = []

    def use():
        with store._writer_turn():
            done.append(1)

    threads = [threading.Thread(target=use, daemon=True) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    monkeypatch.setattr(store_module.os, "open", real_open)
    assert done == [1, 1] and len(opened) == 1
    assert Store(world).subtask(ARMED) is not None, "nothing is left holding the lock"


def _log_and_die(path: str, durable: bool) -> None:
    """Appends a log line, then dies at the worst moment: durable, right after the record is in the journal; written
    behind, right after a flush committed SQLite and before the journal's header says so."""
    store = Store(path, durable=durable)
    store.subtask(ARMED)
    real = store._put

    def put(offset, value):
        if offset == (store_module._END if durable else store_module._FLUSHED) and value > store_module.START:
            if durable:
                real(offset, value)
            os._exit(0)
        real(offset, value)

    store.transaction(lambda conn: Store.append_log(conn, ARMED, "first", ["X"]))
    store._put = put
    if not durable:
        store.close()  # the flush: killed after its SQLite commit
    else:
        store.transaction(lambda conn: Store.append_log(conn, ARMED, None, ["Y"]))
    os._exit(1)


@pytest.mark.parametrize("durable", [True, False])
def test_a_run_killed_between_sqlite_and_the_journal_header_is_not_replayed_twice(world, durable):
    ctx = multiprocessing.get_context("spawn")
    proc = ctx.Process(target=_log_and_die, args=(world, durable))
    proc.start()
    proc.join(60)
    assert proc.exitcode == 0, "killed where meant"
    expected = "first\nX\nY" if durable else "first\nX"
    assert Store(world)._view().logs[ARMED] == expected
    with sqlite3.connect(world) as conn:
        assert conn.execute("SELECT text FROM subtask_log WHERE subtask_id = ?", (ARMED,)).fetchone()[0] == expected


@pytest.mark.parametrize("libc", [True, False], ids=["libc-flock", "fcntl-flock"])
def test_the_write_lock_holds_the_file_lock_while_held_and_only_then(world, monkeypatch, libc):
    """The file lock is taken through libc (keeping the interpreter lock) or, without it, through fcntl: either
    way another open file description cannot take it while a change is stored, and can right after."""
    if not libc:
        monkeypatch.setattr(store_module, "_FLOCK", None)
    elif store_module._FLOCK is None:
        pytest.skip("no flock in this platform's libc")
    store = Store(world)
    other = os.open(world + ".lock", os.O_RDWR)
    seen = []

    def work(conn):
        with pytest.raises(BlockingIOError):
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        seen.append("held")

    try:
        store.transaction(work)
        _bump(store, ARMED)
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free again
        seen.append("free")
        fcntl.flock(other, fcntl.LOCK_UN)
    finally:
        os.close(other)
    assert seen == ["held", "free"]


def test_a_writer_waits_for_a_turn_held_longer_than_its_tries(world):
    """A thread that finds the turn taken tries again, then blocks: it gets the turn once the holder lets it go,
    however long that takes, and never before."""
    store = Store(world)
    holding, release, order = threading.Event(), threading.Event(), []

    def holder():
        with store._writer_turn():
            holding.set()
            release.wait(5)
            order.append("holder done")

    def writer():
        holding.wait(5)
        with store._writer_turn():
            order.append("writer in")

    threads = [threading.Thread(target=holder), threading.Thread(target=writer)]
    for t in threads:
        t.start()
    holding.wait(5)
    time.sleep(0.05)  # well past the writer's tries (TURN_TRIES yields): it is blocked by now
    assert order == []
    release.set()
    for t in threads:
        t.join(5)
    assert order == ["holder done", "writer in"]


@pytest.mark.parametrize("away", [False, True])
def test_a_writer_yields_to_a_holder_that_runs_and_queues_behind_one_that_waits_for_another_process(monkeypatch, away):
    """While the holder runs (it may only be waiting for the interpreter lock), a writer that finds the turn taken
    yields and tries again before it blocks; while the holder waits for another process's file lock, it blocks at
    once. Either way it gets the turn once the holder lets it go."""
    turn = store_module._Turn()
    yields = []
    real_sleep = time.sleep
    monkeypatch.setattr(store_module.time, "sleep", lambda s: (yields.append(s), real_sleep(s)))
    turn.take()
    turn.away = away
    got = threading.Event()

    def writer():
        turn.take()
        got.set()
        turn.release()

    t = threading.Thread(target=writer)
    t.start()
    assert not got.wait(0.1)
    turn.away = False
    turn.release()
    t.join(5)
    assert got.is_set()
    assert yields == ([] if away else [0] * store_module.TURN_TRIES)


def test_an_answer_reuses_the_wire_form_a_change_stored(tmp_path):
    """A changed subtask is answered with the bytes its change stored (no second serialisation), and a value the
    store does not hold as a row's current form is serialised afresh."""
    from mock_server.envelope import dump_data

    app = create_app(Config(db_path=str(tmp_path / "w.sqlite3"), clock_speed=0))
    mock = app.extensions["ocp_mock"]
    doc = mock.runtime.subtask_action(ARMED, "retry")
    stored = mock.store.subtask(ARMED).doc
    assert mock.store.dumped(("s", ARMED), doc) is stored
    assert stored == dump_data(doc)
    edited = {**doc, "status": "FAILED"}  # equal content is not enough: only the very value the row parses to
    assert mock.store.dumped(("s", ARMED), edited) == dump_data(edited) != stored
    answer = app.test_client().put(f"/__mock/subtasks/{ARMED}", json={"status": "FAILED"}).get_json()["data"]
    assert orjson.loads(mock.store.subtask(ARMED).doc) == answer


def test_an_optimistic_change_is_applied_here_after_the_file_lock_is_let_go(world, monkeypatch):
    """The file lock is held to check and append a change only; this process applies it to its copy afterwards,
    under its thread turn, and no thread of it reads the world in between."""
    store = Store(world)
    store.subtask(ARMED)
    other = os.open(world + ".lock", os.O_RDWR)
    real_apply = store_module.Image.apply
    seen = []

    def apply(self, record, dirty=None):
        try:
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(other, fcntl.LOCK_UN)
            seen.append(("file lock free", "turn held" if store._turn.lock.locked() else "turn free"))
        except BlockingIOError:
            seen.append(("file lock held",))
        return real_apply(self, record, dirty)

    monkeypatch.setattr(store_module.Image, "apply", apply)
    try:
        runs = _bump(store, ARMED, optimistic=True)
    finally:
        os.close(other)
    assert seen == [("file lock free", "turn held")]
    assert store.subtask(ARMED).runs == runs
    assert Store(world).subtask(ARMED).runs == runs, "and every other process sees it"


@pytest.mark.parametrize("busy_tries", [store_module.FLOCK_TRIES - 1, store_module.FLOCK_TRIES])
def test_a_writer_tries_the_file_lock_again_before_it_waits_in_the_kernel(monkeypatch, busy_tries):
    """Another process's writer holds the file lock only a few microseconds: a writer that finds it taken tries
    again at once, keeping the interpreter lock, and waits in the kernel (fcntl.flock, away meanwhile) only when
    it is still taken after FLOCK_TRIES tries."""
    calls, waits = [], []

    def libc_flock(fd, op):
        calls.append(op)
        return -1 if len(calls) <= busy_tries else 0

    def kernel_wait(fd, op):
        waits.append((op, turn.away))

    monkeypatch.setattr(store_module, "_FLOCK", libc_flock)
    monkeypatch.setattr(store_module.fcntl, "flock", kernel_wait)
    turn = store_module._Turn()
    turn.lock_file(7)
    tries = min(busy_tries + 1, store_module.FLOCK_TRIES)
    assert calls == [fcntl.LOCK_EX | fcntl.LOCK_NB] * tries
    assert waits == ([] if busy_tries < store_module.FLOCK_TRIES else [(fcntl.LOCK_EX, True)])
    assert not turn.away


def test_a_records_keys_name_every_row_it_changes_and_only_those():
    doc = b'{"id": 10001}'
    record = ((("clock", "{}"), ("seed", "7")), ((1000, "RUNNING", b"{}"),),
              ((10001, 1000, "FAILED", "EXECUTE", doc, None, None, 0, None),
               (10002, 1000, "RUNNING", "EXECUTE", doc, 5, None, 1, 3)),
              ((10001, None, "a line"), (10003, "first", None)))
    assert store_module.record_keys(record) == {("m", "clock"), ("m", "seed"), ("t", 1000), ("s", 10001),
                                                ("s", 10002), ("l", 10001), ("l", 10003)}
    assert store_module.record_keys(((), (), ((10001, 1000, "FAILED", None, doc, None, None, 0, None),), ())) \
        == {("s", 10001)}
    assert store_module.record_keys(((), (), (), ())) == set()


def test_a_journal_row_of_the_wrong_length_is_refused():
    image = store_module.Image({}, {}, {}, {})
    with pytest.raises(TypeError):
        image.apply(((), (), ((10001, 1000, "FAILED"),), ()))


@pytest.mark.parametrize("optimistic", [False, True], ids=["under-the-lock", "optimistic"])
def test_a_change_whose_apply_here_fails_is_still_seen_here_once_it_is_stored(world, monkeypatch, optimistic):
    """The record is in the journal when applying it to this process's copy raises: the copy is not marked as having
    it, so the next read catches up and finds it, as every other process does."""
    store, other = Store(world), Store(world)
    runs = store.subtask(ARMED).runs
    real_apply = store_module.Image.apply
    calls = []

    def apply_once_failing(self, record, dirty=None):
        if not calls and self is store._image:  # this process's own change (nothing else is new), the first time
            calls.append(record)
            raise MemoryError("applying it here failed")
        return real_apply(self, record, dirty)

    monkeypatch.setattr(store_module.Image, "apply", apply_once_failing)
    with pytest.raises(MemoryError):
        _bump(store, ARMED, optimistic=optimistic)
    assert calls, "the failing apply ran"
    assert other.subtask(ARMED).runs == runs + 1, "stored"
    assert store.subtask(ARMED).runs == runs + 1, "and seen here too"


class _Killed(BaseException):
    """A process dying at that instant: nothing of it runs after (its file lock goes with it, as a kill's does)."""


class _DyingConnection:
    """A connection whose COMMIT is a step the process may die before (a kill's rollback: the connection closes)."""

    def __init__(self, conn, step):
        self.conn, self.step = conn, step

    def execute(self, sql, *args):
        if sql == "COMMIT":
            self.step("commit")
        return self.conn.execute(sql, *args)

    def __getattr__(self, name):
        return getattr(self.conn, name)


def _dies_before(store: Store, kill: int, first: int = store_module._NEXT_WRAP_END) -> list:
    """From its first write of header field FIRST on (by default, a new generation's intent), STORE's process dies
    before its KILL-th step (a header field written, the world's version moved, SQLite's commit). Returns the steps
    it took, the fatal one last."""
    steps, put, moved, conn = [], store._put, store._moved, store._conn()

    def step(name):
        if steps or name == f"put {first}":
            steps.append(name)
            if len(steps) == kill + 1:
                conn.close()  # an open SQLite transaction rolls back, as at a kill
                raise _Killed(name)

    def dying_put(offset, value):
        step(f"put {offset}")
        put(offset, value)

    def dying_moved():
        step("moved")
        moved()

    store._put, store._moved = dying_put, dying_moved
    store._conn = lambda: _DyingConnection(conn, step)
    return steps


def _vanish(store: Store) -> None:
    """STORE's process ends without a word: nothing written behind, its locks and descriptors gone."""
    store._journal_file.close()
    os.close(store._turn_fd)
    store._local.conn.close()


WRAP_STEPS = 10  # the intent (2 fields), the generation's start (4 fields, the version, the intent cleared), the record
RESET_STEPS = 9  # the intent, SQLite's commit, the generation's start


@pytest.mark.parametrize("then", ["others-run-on", "a-fresh-start"])
@pytest.mark.parametrize("how,kill", [("wrap", k) for k in range(WRAP_STEPS)] +
                         [("reset", k) for k in range(RESET_STEPS)])
def test_a_writer_killed_at_any_step_of_starting_a_generation_loses_nothing_and_misleads_no_one(
        world, monkeypatch, read_on, how, kill, then):
    """B dies at each step of a wrap (or of a reset through SQLite) in turn. A's copy lags at some point of the
    generation B was writing, C's is at its end. Whoever runs on (A and C writing and reading on past both points)
    or starts afresh after everyone is gone finds every change acknowledged, and the reset whole or not at all."""
    monkeypatch.setattr(store_module, "JOURNAL_BYTES", store_module.START + 16 * 1024)
    a, b, c = Store(world), Store(world), Store(world)
    acked = _bump(b, ARMED)
    size = b._u64(store_module._END) - store_module.START
    while b._u64(store_module._END) + 4 * size < store_module.JOURNAL_BYTES:
        acked = _bump(b, ARMED)
    a.subtask(ARMED)  # A lags from here on
    acked = _bump(b, ARMED)
    c.subtask(ARMED)
    assert store_module._HEAD_FIELDS.unpack(a._at) < store_module._HEAD_FIELDS.unpack(c._at)
    steps = _dies_before(b, kill)
    with pytest.raises(_Killed):
        if how == "wrap":
            for _ in range(8):
                acked = _bump(b, ARMED)
                c.subtask(ARMED)
        else:
            b._sql(lambda conn: conn.execute("UPDATE subtask SET runs = 1000 WHERE id = ?", (ARMED,)))
    assert len(steps) == kill + 1, steps
    done = steps[:-1]
    if how == "reset":
        expected = 1000 if "commit" in done else acked
    else:  # stored, if not answered, once END has moved past its record (the second END of these steps)
        expected = acked + 1 if done.count(f"put {store_module._END}") == 2 else acked
    if then == "others-run-on":
        for i in range(40):  # past A's and C's points, through a wrap or two
            writer = (a, c)[i % 2]
            expected = _bump(writer, ARMED)
            assert a.subtask(ARMED).runs == c.subtask(ARMED).runs == expected
        assert _image_rows(a) == _image_rows(c) == _image_rows(Store(world))
        a.close()
        c.close()
        assert _sqlite_rows(world) == _image_rows(a)
    else:
        for s in (a, b, c):
            _vanish(s)
        d = Store(world)
        assert d.subtask(ARMED).runs == expected
        d.close()
        assert _sqlite_rows(world)["subtask"] == _image_rows(d)["subtask"]


@pytest.mark.parametrize("durable,kill", [(False, k) for k in range(4)] + [(True, k) for k in range(6)])
def test_a_writer_killed_at_any_step_of_storing_a_record_leaves_one_world(world, read_on, durable, kill):
    """B dies at each step of storing a change in turn: the record announced, (with --state-file) SQLite's commit
    and its position, END, the world's version, the announcement cleared. The change is then in every process's
    copy (and SQLite) or in none: A, which had read before, sees what a process that starts afterwards and loads
    SQLite sees, and both follow A's next change."""
    a, b = Store(world, durable=durable), Store(world, durable=durable)
    acked = _bump(b, ARMED)
    a.subtask(ARMED)
    steps = _dies_before(b, kill, first=store_module._PENDING_END)
    with pytest.raises(_Killed):
        _bump(b, ARMED)
    assert len(steps) == kill + 1, steps
    stored = "commit" if durable else f"put {store_module._END}"
    expected = acked + 1 if stored in steps[:-1] else acked
    fresh = Store(world, durable=durable)  # a process that starts now loads SQLite's world, then reads the journal
    assert fresh.subtask(ARMED).runs == expected
    assert a.subtask(ARMED).runs == expected, "A's copy differs from what a process that loads SQLite sees"
    assert _bump(a, ARMED) == expected + 1
    assert fresh.subtask(ARMED).runs == expected + 1
    assert _image_rows(a) == _image_rows(fresh)
    a.close()
    fresh.close()
    assert _sqlite_rows(world)["subtask"] == _image_rows(a)["subtask"]


class _FailingOnce:
    """A connection whose first read of meta `journal_at` fails, as SQLite busy past its timeout would."""

    def __init__(self, conn):
        self.conn, self.failed = conn, False

    def execute(self, sql, *args):
        if not self.failed and sql.startswith("SELECT value FROM meta") and store_module.META_AT in args[0]:
            self.failed = True
            raise sqlite3.OperationalError("database is locked")
        return self.conn.execute(sql, *args)

    def __getattr__(self, name):
        return getattr(self.conn, name)


def test_a_killed_durable_writers_change_is_not_let_go_when_sqlite_cannot_say_whether_it_has_it(world):
    """B dies after SQLite committed its change and before END: the next process to take the file lock asks SQLite.
    When the question fails, that process's call fails, and the change stays announced: the next call asks again
    and finds it, as a process that starts afterwards does."""
    a, b = Store(world, durable=True), Store(world, durable=True)
    acked = _bump(b, ARMED)
    a.subtask(ARMED)
    steps = _dies_before(b, 2, first=store_module._PENDING_END)  # after the commit
    with pytest.raises(_Killed):
        _bump(b, ARMED)
    assert "commit" in steps[:-1]
    real = a._conn
    flaky = _FailingOnce(real())
    a._conn = lambda: flaky
    with pytest.raises(sqlite3.OperationalError):
        _bump(a, ARMED)
    assert flaky.failed and a._u64(store_module._PENDING_END) != 0, "still announced"
    assert _bump(a, ARMED) == acked + 2
    a._conn = real
    fresh = Store(world, durable=True)
    assert fresh.subtask(ARMED).runs == a.subtask(ARMED).runs == acked + 2
    a.close()
    fresh.close()


def test_a_journal_made_anew_never_restarts_at_a_generation_sqlite_still_names(world):
    """SQLite notes its journal position as generation:offset. When the journal file is gone (deleted, or the
    state file copied alone) and made anew, its generations must not start over at one that note names: a
    process that loads SQLite would take the old offset as a point of the new journal and replay from the middle
    of a record."""
    a = Store(world)
    for _ in range(20):
        _bump(a, ARMED)
    a.close()
    with sqlite3.connect(world) as conn:
        noted = int(conn.execute("SELECT value FROM meta WHERE key = ?", (store_module.META_AT,))
                    .fetchone()[0].partition(":")[0])
    os.remove(world + ".journal")
    a = Store(world)
    a.subtask(ARMED)
    assert a._u64(store_module._GEN) > noted
    other = next(r.id for r in a.subtasks() if r.id != ARMED)
    for _ in range(12):
        _bump(a, other)
    for _ in range(13):
        _bump(a, ARMED)
    b = Store(world)  # a second worker starts: SQLite, then the journal after SQLite's position
    assert _image_rows(b) == _image_rows(a)
    a.close()
    b.close()
