"""Where the world's state lives: an in-memory copy of the world in every worker process, kept in step through a
shared journal, over one SQLite file that holds the world between runs.

- **Reads** come from the process's copy (`Image`): dicts of the tables, so a read is a dictionary lookup. Before
  it answers, a process compares the journal's head (16 bytes of a shared mapping) with the point its copy is at;
  when another process has written since, it applies the new records first, so an answer never lags a change
  that any process has acknowledged. It reads them without the file lock below while they are of the journal's
  generation it is at (a wrap or a reset since: under the lock; see Store._read_on); a writer does the same before
  it takes the file lock, which it then holds only for what came meanwhile.
- **A change** runs under one lock that orders writers across threads and processes (a thread lock, then a file
  lock on `<state>.lock`, each tried first without waiting: see "the write lock without a lock convoy"): the writer
  catches up with the journal, runs the change against its copy through a `Txn` (which sees its own writes and can
  be dropped whole), appends the rows it changed to the journal as one record (`<state>.journal`, a shared
  mapping) and applies them to its copy. So N concurrent retries of one FAILED subtask, in any number of
  processes, give exactly one success.
- **SQLite** gets the changed rows: with `durable` (a `--state-file`), in the same step, before the change is
  answered (synchronous=FULL: on disk); otherwise written behind, as the final values of the rows changed since the
  last write, whenever the journal wraps, before a reset, and on close. A process that starts while others run
  loads SQLite and replays the journal's records after what SQLite has; one that starts alone first writes into
  SQLite what a killed run left in the journal.
- **A writer killed half way** (its file lock goes with it) leaves, for the two steps that change several header
  fields, an announcement in the header that the next process to take the file lock acts on before it reads
  anything: a record being stored (PENDING_END: finished if it reached END or SQLite, else let go) and a new
  generation being started (NEXT_GEN: started again from what it says). So every process, and SQLite, ends up with
  the change or without it, never some with and some without.

A record is the changed rows (tuples, strings, bytes, numbers and None) in marshal's format, which holds values of
built-in types only: unlike pickle's, reading it back never calls anything a record names. Each subtask row keeps
its wire form already serialised, so a request never re-serialises it. Next to it, a row keeps the engine's
bookkeeping (runtime.py, engine.py): `due_at`, the mock time of its next automatic transition, its scenario
override, its run count and the start of its current run; the logs of subtasks that changed since the world was
loaded (each keeps its last MAX_LOG_CHARS), and meta (the seed, the mock's clock).

Answers computed from the world (a task with its subtasks, a page of the task list) are kept per process by `memo`,
under the world's version: an 8-byte counter in the lock file, which every writer moves after its change.
"""

from __future__ import annotations

import ctypes
import fcntl
import marshal
import mmap
import os
import platform
import sqlite3
import struct
import threading
import time
from contextlib import contextmanager
from itertools import repeat
from typing import Callable, NamedTuple

import orjson

from .envelope import dump_data

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS task (id INTEGER PRIMARY KEY, status TEXT NOT NULL, doc BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS subtask (
    id INTEGER PRIMARY KEY,
    task_id INTEGER NOT NULL,
    status TEXT NOT NULL,
    operation TEXT,
    doc BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS subtask_task ON subtask (task_id);
CREATE INDEX IF NOT EXISTS subtask_status ON subtask (status);
CREATE TABLE IF NOT EXISTS subtask_log (subtask_id INTEGER PRIMARY KEY, text TEXT NOT NULL);
"""
# The engine's columns, added to state files written before the engine existed (ALTER TABLE ... ADD COLUMN).
ENGINE_COLUMNS = {"due_at": "INTEGER", "scenario": "TEXT", "runs": "INTEGER NOT NULL DEFAULT 0",
                  "run_start": "INTEGER"}
ENGINE_INDEX = "CREATE INDEX IF NOT EXISTS subtask_due ON subtask (due_at) WHERE due_at IS NOT NULL"
_SUBTASK_COLUMNS = "id, task_id, status, operation, doc, due_at, scenario, runs, run_start"
VERSION_BYTES = 8
# What a process keeps at most; past either bound the memo starts afresh (ids and filters from a fuzzer are endless,
# and a list page of a big world is large).
MEMO_LIMIT = 256  # answers
MEMO_BUDGET = 16 * 2**20  # bytes of the answers' bytes and text (a list page of the 40 seeded tasks: ~60 kB)
# A subtask's stored log keeps at most this many characters: past it, its oldest lines go (down to 3/4 of it, so
# the cut is rare). A subtask retried thousands of times would otherwise grow without end, in every process.
MAX_LOG_CHARS = 32 * 1024
# The journal: a header, then records ([4-byte length][marshal]) from START; when the next record does not fit, the
# writer brings SQLite up to date and starts again at START (a "wrap"). Each process maps it whole.
JOURNAL_BYTES = 2 * 2**20
START = 4096
MAGIC = b"OCPJRN02"  # 02: records in marshal's format (01: pickled)
# Header fields' offsets. HEAD = gen and end, the 16 bytes a reader compares. WRAP_END: where the generation before
# ended, when the current one began with a wrap (0: with a reset). NEXT_GEN and NEXT_WRAP_END: a new generation
# being started (0: none), written before the fields that start it and cleared after (Store._begin_generation).
# PENDING_END: the end of the record a writer is storing (0: none), set from before END commits it until the
# world's version has moved after it (Store._append).
_ID, _GEN, _END, _FLUSHED, _WRAP_END, _NEXT_GEN, _NEXT_WRAP_END, _PENDING_END = 8, 24, 32, 40, 48, 56, 64, 72
_NONE = bytes(8)
_HEAD = slice(_GEN, _END + 8)
_U64 = struct.Struct("<Q")
_HEAD_FIELDS = struct.Struct("<QQ")  # HEAD's two fields (gen, end), as a reader compares them
# Whether a process may read the journal's new records without the file lock (Store._read_on). That relies on a
# reader seeing another process's stores in the order they were made (x86's total store order: a record's bytes
# before the END that commits it, END before the version that announces it, GEN before a wrap's new bytes). Python
# has no memory fences, so on other machines (ARM's weaker order) readers take the file lock, as writers do.
_READ_ON = platform.machine().lower() in {"x86_64", "amd64", "i386", "i486", "i586", "i686", "x86"}
_LEN = struct.Struct("<I")
META_JOURNAL = "journal"  # meta key: the id of the journal this state file goes with
META_AT = "journal_at"  # meta key: "gen:end", the journal position SQLite's rows are at


def _size(value) -> int:
    """About how many bytes a memoised answer holds: its bytes and text, one level into tuples and rows."""
    if isinstance(value, (bytes, str)):
        return len(value)
    doc = getattr(value, "doc", None)  # a row
    if doc is not None:
        return 256 + (len(doc) if isinstance(doc, (bytes, str)) else 0)
    if isinstance(value, tuple):
        return 64 + sum(_size(v) for v in value)
    return 256


class StoreError(ValueError):
    """The state file cannot be used; the message says why. Nothing in it was changed."""


class SubtaskRow(NamedTuple):
    """A subtask as stored: its wire form and the engine's bookkeeping (see the module doc)."""

    id: int
    task_id: int
    status: str
    operation: str | None
    doc: bytes  # the SubtaskInstance in wire form
    due_at: int | None = None
    scenario: str | None = None  # JSON of the admin's override; None: the seed's default
    runs: int = 0
    run_start: int | None = None

    def load(self) -> dict:
        return orjson.loads(self.doc)


class SubtaskRunRow(NamedTuple):
    """A subtask with the engine's bookkeeping, and whether it has a stored log."""

    id: int
    task_id: int
    doc: bytes
    due_at: int | None
    scenario: str | None
    runs: int
    run_start: int | None
    logged: bool  # a log is stored for it


def _in_range(value: int) -> bool:
    return -(2**63) <= value < 2**63


def _append_log(text: str | None, first: str | None, lines: str | None) -> str | None:
    """A stored log after an append: FIRST starts one the subtask does not have yet, LINES (joined) are added."""
    if text is None:
        text = first
    if lines and text is not None:
        text = lines if text == "" else text + "\n" + lines
        if len(text) > MAX_LOG_CHARS:
            cut = text.find("\n", len(text) - MAX_LOG_CHARS * 3 // 4)
            text = text[cut + 1:] if cut >= 0 else text[-MAX_LOG_CHARS * 3 // 4:]
    return text


# -- the write lock without a lock convoy ---------------------------------------------------------------------
# A thread that blocks on a threading.Lock takes it, in C, the moment it is released, and only then waits for the
# interpreter lock; the thread that released it runs on, computes its next change, and blocks on the lock the
# waiting thread now holds. Once started, this goes on: every write hands both locks from one thread to the other.
# Measured with 4 threads writing in one process (bench/write_threads.py): 86 % of the acquisitions waited, 2
# context switches and 236 µs of CPU per request against 107 with one thread. So a writer that finds the turn taken
# gives up the interpreter lock (sleep(0)) and tries again, which lets the holder finish, and blocks only after
# TURN_TRIES, or at once when the holder waits for another process's file lock (`_Turn.away`: trying again would
# only let other threads run whole requests first): 0.5 % waited, 119-133 µs per request with 4 or 8 threads.
# (3 tries were enough for 4 threads, not for 8: 331 µs. 20 tries with naps between them measured the same in
# process, and a p99 3-5 ms worse served.) For the same reason the file lock is first tried through libc without
# giving up the interpreter lock (fcntl.flock gives it up for every call, which handed it to another thread twice
# per write). Served (bench/variants.py, same rounds against the code before): 1 worker x 4 threads 3.6k -> 5.0k
# req/s; 2 workers x 4 threads +3 to +16 % req/s, p99 +1 to +3 ms.
TURN_TRIES = 5
# Another process holds the file lock for a few microseconds a change (catch up, check, append), so a writer that
# finds it taken tries again at once, FLOCK_TRIES non-blocking calls (~10 µs), before it waits in the kernel: a
# wait there puts the process to sleep and needs a wake-up, which on a busy machine comes late, while the writer
# holds its process's turn and every other writer of both processes queues behind. Served (retry-200, 2 workers x
# 4 threads, 8 s runs alternating with one try; bench/RESULTS.md): +9 % req/s; 10 tries were not enough, 100 no
# better.
FLOCK_TRIES = 30


# This process's id. os.getpid() is a system call (glibc keeps no copy), and the store asks several times a request
# whether it runs in the process that opened its descriptors; a fork through Python (os.fork, multiprocessing:
# how granian and gunicorn start their workers) sets it again in the child before any code of the child runs.
_PID = os.getpid()


def _set_pid() -> None:
    global _PID
    _PID = os.getpid()


os.register_at_fork(after_in_child=_set_pid)


class _Turn:
    """This process's writers one at a time (see above). `away`: the holder waits for another process's file lock,
    so trying again would only let other threads run whole requests first: a writer then waits in the kernel."""

    def __init__(self):
        self.lock = threading.Lock()
        self.away = False

    def take(self) -> None:
        lock = self.lock
        if lock.acquire(blocking=False):
            return
        for _ in range(TURN_TRIES):
            if self.away:
                break
            time.sleep(0)  # gives up the interpreter lock: a holder waiting for it finishes its change
            if lock.acquire(blocking=False):
                return
        lock.acquire()

    def release(self) -> None:
        self.lock.release()

    def __enter__(self) -> "_Turn":
        self.take()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def lock_file(self, fd: int) -> None:
        """flock(LOCK_EX), by the holder: without giving up the interpreter lock while the lock comes free within
        FLOCK_TRIES tries, else waiting for it in the kernel (away meanwhile)."""
        if _FLOCK is not None:
            for _ in range(FLOCK_TRIES):
                if _FLOCK(fd, fcntl.LOCK_EX | fcntl.LOCK_NB) == 0:
                    return
        self.away = True  # taken by another process (or interrupted): wait, letting threads run
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        finally:
            self.away = False

    @staticmethod
    def unlock_file(fd: int) -> None:
        if _FLOCK is None or _FLOCK(fd, fcntl.LOCK_UN) != 0:
            fcntl.flock(fd, fcntl.LOCK_UN)  # raises what went wrong


class _WriterTurn:
    """Store._writer_turn's context: the thread turn, then the file lock under it (one descriptor: the one unlocked
    is the one locked); on the way out the file lock, then the turn, whatever raised. A class, not a generator
    (contextlib's costs ~1.5 µs a change)."""

    __slots__ = ("store", "turn", "fd")

    def __init__(self, store: "Store"):
        self.store = store

    def __enter__(self) -> "_WriterTurn":
        store = self.store
        if store._pid != _PID:
            store._forked()
        turn = self.turn = store._turn
        turn.take()
        try:
            store._read_on()  # what came since, before the file lock: it is then held only for what comes meanwhile
            fd = store._lock_file()
            turn.lock_file(fd)
        except BaseException:
            turn.release()
            raise
        self.fd = fd
        return self

    def let_file_go(self) -> None:
        """The file lock now, the thread turn still held (at the way out only the turn is let go then)."""
        fd, self.fd = self.fd, None
        if fd is not None:
            self.turn.unlock_file(fd)

    def __exit__(self, *exc) -> None:
        try:
            self.let_file_go()
        finally:
            self.turn.release()


def _libc_flock():
    try:
        flock = ctypes.PyDLL(None).flock  # PyDLL: called with the interpreter lock held
    except (OSError, AttributeError):  # no libc to load, or no flock in it
        return None
    # No argtypes: ctypes passes a Python int as a C int by itself, and checking declared types costs 0.7 µs a
    # call (1.8 against 3.2 µs a lock and unlock here). Both arguments are small ints (a descriptor, LOCK_*).
    # No use_errno: a failed call is only tried again or done over through fcntl.flock, which raises with the
    # errno; saving and restoring errno around each call cost ~1 µs a call on cold caches (13.2 against 11.0 µs a
    # lock and unlock, each after 1.6 MB of other reads).
    flock.restype = ctypes.c_int
    return flock


_FLOCK = _libc_flock()


def record_keys(record: tuple) -> set:
    """The rows a record (Txn.record) changes, as (table, key): "m" meta, "t" task, "s" subtask, "l" log."""
    metas, tasks, subs, log_ops = record
    keys = {("s", r[0]) for r in subs}  # (a set per table, added only when it has rows: 0.3 against 0.8 µs)
    if tasks:
        keys.update([("t", t[0]) for t in tasks])
    if log_ops:
        keys.update([("l", op[0]) for op in log_ops])
    if metas:
        keys.update([("m", k) for k, _ in metas])
    return keys


class Image:
    """One process's copy of the world (see the module doc). Changed in place, under the write lock, between two
    moves of `seq`; a reader that needs several rows to agree reads them between two equal even values."""

    def __init__(self, meta: dict, tasks: dict, subs: dict, logs: dict):
        self.meta: dict[str, str] = meta
        self.tasks: dict[int, tuple[str, bytes]] = tasks  # id -> (status, doc)
        self.subs: dict[int, SubtaskRow] = subs
        self.logs: dict[int, str] = logs
        self.due: dict[int, int] = {sid: r.due_at for sid, r in subs.items() if r.due_at is not None}
        by_task: dict[int, list[int]] = {}
        for sid in sorted(subs):
            by_task.setdefault(subs[sid].task_id, []).append(sid)
        self.by_task: dict[int, tuple[int, ...]] = {tid: tuple(ids) for tid, ids in by_task.items()}
        self.seq = 0
        self.applied = 0  # records applied to this image
        self.changed_at: dict[tuple, int] = {}  # (table, key) -> `applied` after the last record that changed it

    @classmethod
    def load(cls, conn: sqlite3.Connection) -> "Image":
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not {"meta", "task", "subtask"} <= tables:
            return cls({}, {}, {}, {})
        have = {row[1] for row in conn.execute("PRAGMA table_info(subtask)")}
        columns = ", ".join(c if c in have or c not in ENGINE_COLUMNS else ("0" if c == "runs" else "NULL")
                            for c in _SUBTASK_COLUMNS.split(", "))
        return cls(dict(conn.execute("SELECT key, value FROM meta")),
                   {i: (s, bytes(d)) for i, s, d in conn.execute("SELECT id, status, doc FROM task")},
                   {r[0]: SubtaskRow(r[0], r[1], r[2], r[3], bytes(r[4]), *r[5:])
                    for r in conn.execute(f"SELECT {columns} FROM subtask")},
                   dict(conn.execute("SELECT subtask_id, text FROM subtask_log"))
                   if "subtask_log" in tables else {})

    def read(self, work: Callable[[], object]):
        """WORK() over rows that must agree with each other (no change applied halfway through)."""
        while True:
            seq = self.seq
            if not seq & 1:
                result = work()
                if self.seq == seq:
                    return result
            time.sleep(0)

    def apply(self, record: tuple, dirty: set | None = None) -> None:
        """Applies a record (Txn.record) in place; DIRTY collects the rows it touched, as (table, key): the keys
        record_keys gives. One pass: each row's key is made once, for `changed_at` and DIRTY (a set of the keys
        first, then a dict of them, cost a third of a replay)."""
        metas, tasks, subs, log_ops = record
        self.seq += 1
        self.applied += 1
        changed_at, applied = self.changed_at, self.applied
        # A task's key ("T", id) moves with any of its rows (the task, its subtasks, their logs): what
        # Store.task_rows reads, in one key instead of two per subtask.
        try:
            for name, value in metas:
                self.meta[name] = value
                key = ("m", name)
                changed_at[key] = applied
                if dirty is not None:
                    dirty.add(key)
            for tid, status, doc in tasks:
                self.tasks[tid] = (status, doc)
                key = ("t", tid)
                changed_at[key] = changed_at[("T", tid)] = applied
                if dirty is not None:
                    dirty.add(key)
            for values in subs:
                row = SubtaskRow._make(values)  # (0.19 against 0.26 µs for SubtaskRow(*values); checks the arity too)
                sid = row.id
                self.subs[sid] = row
                key = ("s", sid)
                changed_at[key] = changed_at[("T", row.task_id)] = applied
                if dirty is not None:
                    dirty.add(key)
                if row.due_at is None:
                    self.due.pop(sid, None)
                else:
                    self.due[sid] = row.due_at
            for sid, first, lines in log_ops:
                text = _append_log(self.logs.get(sid), first, lines)
                if text is not None:
                    self.logs[sid] = text
                key = ("l", sid)
                changed_at[key] = applied
                if dirty is not None:
                    dirty.add(key)
                row = self.subs.get(sid)
                if row is not None:
                    changed_at[("T", row.task_id)] = applied
        finally:
            self.seq += 1

    def staged(self, record: tuple) -> "Image":
        """A copy of this image with RECORD applied (what SQLite gets before a change is applied here)."""
        image = Image(dict(self.meta), dict(self.tasks), dict(self.subs), dict(self.logs))
        image.apply(record)
        return image

    def write_rows(self, conn: sqlite3.Connection, keys) -> None:
        """Writes the rows KEYS name ((table, key) pairs), as this image has them, into SQLite (inside a
        transaction)."""
        metas, tasks, subs, logs = [], [], [], []
        for table, key in keys:
            if table == "s":
                r = self.subs.get(key)
                if r is not None:
                    subs.append((r.status, r.operation, r.doc, r.due_at, r.scenario, r.runs, r.run_start, r.id))
            elif table == "t":
                t = self.tasks.get(key)
                if t is not None:
                    tasks.append((t[0], t[1], key))
            elif table == "l":
                if key in self.logs:
                    logs.append((key, self.logs[key]))
            elif key in self.meta:
                metas.append((key, self.meta[key]))
        if metas:
            conn.executemany("INSERT INTO meta (key, value) VALUES (?, ?) "
                             "ON CONFLICT (key) DO UPDATE SET value = excluded.value", metas)
        if tasks:
            conn.executemany("UPDATE task SET status = ?, doc = ? WHERE id = ?", tasks)
        if subs:
            conn.executemany("UPDATE subtask SET status = ?, operation = ?, doc = ?, due_at = ?, scenario = ?, "
                             "runs = ?, run_start = ? WHERE id = ?", subs)
        if logs:
            conn.executemany("INSERT OR REPLACE INTO subtask_log (subtask_id, text) VALUES (?, ?)", logs)


class Txn:
    """A change in the making, over an image: reads see its own writes; nothing reaches the image (or anyone else)
    until the store commits it. What `Store.transaction`'s WORK gets as its `conn`."""

    def __init__(self, image: Image, reads: set | None = None):
        self.image = image
        # What it read of the image, as (table, key), when it runs outside the write lock (Store.transaction's
        # `optimistic`); "*": something no key names (an index), so any change in between counts.
        self.reads = reads
        self.metas: dict[str, str] = {}
        self.tasks: dict[int, tuple[str, bytes]] = {}
        self.subs: dict[int, SubtaskRow] = {}
        self.log_ops: list[tuple[int, str | None, str | None]] = []
        self.logged: set[int] = set()

    @property
    def changed(self) -> bool:
        return bool(self.metas or self.tasks or self.subs or self.log_ops)

    def record(self) -> tuple:
        return (tuple(self.metas.items()), tuple((tid, s, d) for tid, (s, d) in self.tasks.items()),
                tuple(map(tuple, self.subs.values())), tuple(self.log_ops))

    def sub(self, sid: int) -> SubtaskRow | None:
        row = self.subs.get(sid)
        if row is not None:
            return row
        if self.reads is not None:
            self.reads.add(("s", sid))
        return self.image.subs.get(sid)

    def read(self, key: tuple) -> None:
        if self.reads is not None:
            self.reads.add(key)

    def still_holds(self, start: int) -> bool:
        """Whether nothing it read was changed after the image had applied START records."""
        image = self.image
        if "*" in self.reads:
            return image.applied == start
        return not self.reads or max(map(image.changed_at.get, self.reads, repeat(0))) <= start


class Store:
    def __init__(self, path: str, busy_timeout_ms: int = 30_000, durable: bool = False):
        self.path = path
        self.busy_timeout_ms = busy_timeout_ms
        self.durable = durable
        # FULL: a commit is on disk before it returns (survives an OS crash, not only a killed process).
        self.synchronous = "FULL" if durable else "NORMAL"
        self._local = threading.local()
        self._memo: dict = {}  # key -> (version, value), for the version in _memo_version (or a racing older one)
        self._memo_version = b""
        self._memo_bytes = 0
        self._parsed: dict[tuple, tuple[bytes, dict]] = {}  # row -> (wire form, the dict it parses to)
        self._forked()
        # Called inside the transaction that loaded a world (or added the engine's columns to an old state
        # file), so the engine can put the world's in-flight subtasks in motion before anyone sees them.
        self.after_load: Callable[[Txn], None] | None = None

    def _forked(self) -> None:
        """This process's own locks, descriptors and copy (also after a fork: never a parent's)."""
        self._pid = _PID
        self._local = threading.local()
        self._turn = _Turn()  # writers of this process, one at a time
        self._turn_fd: int | None = None  # the file lock that orders writers across processes
        self._version: mmap.mmap | None = None  # the world's version: the lock file's first 8 bytes, shared
        self._journal: mmap.mmap | None = None
        self._journal_file = None  # the journal's file object (its descriptor holds a shared lock)
        self._image: Image | None = None
        self._at = b""  # the journal's head (gen, end) the image is at
        # (image, the world's version it is at), assigned in one step: a lock-free reader takes the image only when
        # the version has not moved since (every change moves it, last, under the lock).
        self._seen: tuple[Image, bytes] | None = None
        self._dirty: set = set()  # rows changed since this process last wrote SQLite up to date

    # -- connections -------------------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        if self._pid != _PID:  # forked: never reuse a parent's connection or locks
            self._forked()
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, timeout=self.busy_timeout_ms / 1000,
                                   check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout={self.busy_timeout_ms}")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self.synchronous}")
            self._local.conn = conn
        return conn

    def close(self) -> None:
        """Writes SQLite up to date (this process's part of it), lets go of the journal (a later use maps it again)
        and closes this thread's connection."""
        if self._pid == _PID and self._journal is not None and self._dirty:
            try:
                with self._writer_turn():
                    self._catch_up()
                    self._flush()
            except (sqlite3.Error, OSError, ValueError):  # closing: the next start replays the journal instead
                pass
        if self._pid == _PID and self._journal is not None:
            with self._turn:
                journal, self._seen = self._journal, None  # readers leave the fast path before the mapping goes
                self._journal = self._image = None
                self._at = b""
                journal.close()
                self._journal_file.close()
                self._journal_file = None
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def _writer_turn(self) -> "_WriterTurn":
        """The write lock: this process's threads one at a time, then the processes (a file lock). Writers wait in
        the kernel instead of polling in SQLite's busy-retry loop, which made p99 several hundred ms."""
        return _WriterTurn(self)

    def _lock_file(self) -> int:
        """This process's descriptor of the lock file (made when missing), with its version counter mapped."""
        if self._turn_fd is None:
            fd = os.open(self.path + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
            if os.fstat(fd).st_size < VERSION_BYTES:
                os.ftruncate(fd, VERSION_BYTES)
            self._version = mmap.mmap(fd, VERSION_BYTES)
            self._turn_fd = fd
        return self._turn_fd

    def _moved(self) -> None:
        """After a change, under the lock: the world has a new version."""
        version = int.from_bytes(self._version[:VERSION_BYTES], "little")
        self._version[:VERSION_BYTES] = ((version + 1) % 2**64).to_bytes(VERSION_BYTES, "little")

    # -- the journal (every step below runs under the write lock) --------------------------------------
    def _u64(self, offset: int) -> int:
        return _U64.unpack_from(self._journal, offset)[0]

    def _put(self, offset: int, value: int) -> None:
        _U64.pack_into(self._journal, offset, value)

    def _open_journal(self) -> None:
        """Maps the journal, and brings it in line with the state file: a process that starts alone first writes
        into SQLite what a killed run left there (when it goes with this file), then starts it afresh."""
        # A file object: its descriptor, and with it the shared lock below, goes with the Store (close, or the
        # garbage collector), so a Store that is done with the file never makes a later start think it is not alone.
        file = open(os.open(self.path + ".journal", os.O_RDWR | os.O_CREAT, 0o600), "r+b", buffering=0)
        try:
            fd = file.fileno()
            if os.fstat(fd).st_size < JOURNAL_BYTES:
                os.ftruncate(fd, JOURNAL_BYTES)
            journal = mmap.mmap(fd, JOURNAL_BYTES)
        except BaseException:
            file.close()
            raise
        self._journal, self._journal_file = journal, file
        conn = self._conn()
        try:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            row = conn.execute("SELECT value FROM meta WHERE key = ?", (META_JOURNAL,)).fetchone() \
                if "meta" in tables else None
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path} is not a usable state file: {exc}") from None
        ours = bytes.fromhex(row[0]) if row else None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            alone = True
        except BlockingIOError:
            alone = False
        if ours is None and not alone and journal[:8] == MAGIC and "meta" in tables:
            # Running processes share this journal with a file that has no id yet (they opened it before the
            # world was seeded): the file takes the journal's id, so their records are kept.
            ours = journal[_ID:_ID + 16] if journal[_ID:_ID + 16] != bytes(16) else os.urandom(16)
            journal[_ID:_ID + 16] = ours
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (META_JOURNAL, ours.hex()))
        valid = journal[:8] == MAGIC and ours is not None and journal[_ID:_ID + 16] == ours
        # A run that was killed: replay what SQLite lacks. Not when it was killed starting a new generation: that
        # begins once SQLite has the whole world.
        if alone and valid and self._u64(_NEXT_GEN) == 0 and self._u64(_END) > self._replay_from(conn):
            self._recover(conn)
        if alone or not valid:
            if ours is None and "meta" in tables:
                ours = os.urandom(16)
                conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (META_JOURNAL, ours.hex()))
            # Past the generation SQLite notes its position in too (meta journal_at): a journal file made anew
            # (deleted, or the state file copied without it) must not restart at a generation that note names.
            gen = max(self._u64(_GEN) if journal[:8] == MAGIC else 0, self._noted_gen(conn)) + 1
            journal[_ID:_ID + 16] = ours or bytes(16)
            for offset, value in ((_END, START), (_FLUSHED, START), (_WRAP_END, 0), (_NEXT_GEN, 0),
                                  (_PENDING_END, 0), (_GEN, gen)):
                self._put(offset, value)
            journal[:8] = MAGIC
        fcntl.flock(fd, fcntl.LOCK_SH)  # held while this process runs: a later start is not alone
        self._image, self._at, self._dirty, self._seen = None, b"", set(), None
        if not alone and not valid:  # others were reading another journal: they look again
            self._moved()

    def _recover(self, conn: sqlite3.Connection) -> None:
        """Writes into SQLite the records a killed run left in the journal after what SQLite has. A journal that
        cannot be read is left out (SQLite keeps the world as it last wrote it)."""
        image = Image.load(conn)
        try:
            self._replay(image, self._replay_from(conn), self._u64(_END))
        except (struct.error, EOFError, ValueError, TypeError, IndexError):
            self._dirty = set()
            return
        self._sql_rows(image, self._dirty)

    def _replay(self, image: Image, start: int, end: int) -> None:
        """Applies the records in START..END to IMAGE (marking their rows dirty)."""
        if start < end:
            self._apply_records(image, self._journal[start:end])

    def _apply_records(self, image: Image, chunk: bytes) -> None:
        """Applies the records CHUNK holds (whole ones, as the journal has them) to IMAGE (marking rows dirty)."""
        offset, dirty = 0, self._dirty
        while offset < len(chunk):
            (size,) = _LEN.unpack_from(chunk, offset)
            image.apply(marshal.loads(chunk[offset + 4:offset + 4 + size]), dirty)
            offset += 4 + size

    def _catch_up(self) -> Image:
        """Brings this process's image up to the journal's head (under the write lock)."""
        if self._journal is None:
            self._open_journal()
        if self._journal[_NEXT_GEN:_NEXT_GEN + 8] != _NONE:  # a writer was killed starting a new generation
            self._start_generation()
        if self._journal[_PENDING_END:_PENDING_END + 8] != _NONE:  # a writer was killed storing a record
            self._settle_pending()
        head = self._journal[_HEAD]
        if head == self._at and self._image is not None:
            self._seen = (self._image, self._version[:VERSION_BYTES])
            return self._image
        gen, end = _HEAD_FIELDS.unpack(head)
        at_gen, at_end = _HEAD_FIELDS.unpack(self._at) if self._at else (0, 0)
        image = self._image
        if image is not None and gen == at_gen:
            self._replay(image, at_end, end)
        elif image is not None and gen == at_gen + 1 and at_end == self._u64(_WRAP_END):  # a wrap, fully seen
            self._replay(image, START, end)
        else:  # first use, a reset, or a wrap past records this process had not read: SQLite, then the rest
            self._dirty = set()
            conn = self._conn()
            image = Image.load(conn)
            self._replay(image, self._replay_from(conn), end)
            self._image = image
        self._at = head
        self._seen = (image, self._version[:VERSION_BYTES])
        return image

    def _read_on(self) -> Image | None:
        """Brings this process's image up to the journal's head without the file lock, under the thread turn, when
        only records of the generation it is at came since (see _READ_ON); None when that cannot be done so (first
        use, a wrap or a reset since, or no _READ_ON): the caller catches up under the file lock.

        A record is never changed once END has passed it, until a wrap starts the next generation over it; a wrap
        moves GEN before it writes a byte of the new one. So bytes copied out between reading the head and finding
        GEN unchanged after the copy are records as their writers committed them."""
        image, journal, at = self._image, self._journal, self._at
        if not _READ_ON or image is None or journal is None or not at:
            return None
        version = self._version[:VERSION_BYTES]  # first: every change it counts has its record before END by then
        head = journal[_HEAD]
        if head == at:
            seen = self._seen
            if seen is not None and seen[0] is image and seen[1] == version:
                return image
            # The version moved and the head is where this copy is: records came since, and the head was read
            # half way through a new generation's start (GEN read before it moved, END after it went back; a copy
            # at START of the generation sees no difference). Only the file lock tells.
            return None
        gen, end = _HEAD_FIELDS.unpack(head)
        at_gen, at_end = _HEAD_FIELDS.unpack(at)
        if gen != at_gen or not at_end < end <= JOURNAL_BYTES:
            return None
        chunk = journal[at_end:end]
        if journal[_GEN:_GEN + 8] != head[:8]:  # a wrap began meanwhile: some bytes may be the next generation's
            return None
        self._apply_records(image, chunk)
        self._at = head
        self._seen = (image, version)
        return image

    def _sql_rows(self, image: Image, keys, at: int | None = None) -> None:
        """Writes KEYS' rows from IMAGE into SQLite in one transaction; SQLite is then at the journal's end (or at
        AT, the end a record about to be appended will give). The same transaction notes that position (meta
        `journal_at`), so a run killed before FLUSHED moves is not replayed twice (log lines are appended)."""
        at = self._u64(_END) if at is None else at
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            image.write_rows(conn, keys)
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                         (META_AT, f"{self._u64(_GEN)}:{at}"))
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        self._dirty = set()
        self._put(_FLUSHED, at)

    def _replay_from(self, conn: sqlite3.Connection) -> int:
        """Where the records SQLite does not have begin: FLUSHED, or past it when SQLite notes it is further on in
        this generation of the journal (a writer killed between its commit and moving FLUSHED)."""
        flushed = self._u64(_FLUSHED)
        try:
            noted = self._noted_at(conn)
        except sqlite3.DatabaseError:
            return flushed
        if noted is not None and noted[0] == self._u64(_GEN) and flushed < noted[1] <= self._u64(_END):
            return noted[1]
        return flushed

    @staticmethod
    def _noted_at(conn: sqlite3.Connection) -> tuple[int, int] | None:
        """SQLite's noted journal position (meta journal_at, written by _sql_rows) as (generation, end); None when
        there is none or it is not of that form. Raises what SQLite raises."""
        row = conn.execute("SELECT value FROM meta WHERE key = ?", (META_AT,)).fetchone()
        if row is None:
            return None
        gen, _, at = row[0].partition(":")
        try:
            return int(gen), int(at)
        except ValueError:
            return None

    def _noted_gen(self, conn: sqlite3.Connection) -> int:
        """The journal generation of SQLite's noted position, 0 when none or unreadable."""
        try:
            noted = self._noted_at(conn)
        except sqlite3.DatabaseError:
            return 0
        return noted[0] if noted is not None else 0

    def _flush(self) -> None:
        """Brings SQLite up to the journal's end (caught up, under the write lock)."""
        if self._u64(_FLUSHED) < self._u64(_END) or self._dirty:
            self._sql_rows(self._image, self._dirty)

    def _room(self, size: int) -> int | None:
        """Where a record of SIZE bytes goes; wraps first when it does not fit. None when it cannot fit at all."""
        if START + size > JOURNAL_BYTES:
            return None
        end = self._u64(_END)
        if end + size > JOURNAL_BYTES:
            self._flush()  # first: the next generation begins once SQLite has every record of this one
            self._begin_generation(end)
            self._start_generation()
            self._at = self._journal[_HEAD]
            end = START
        return end

    def _begin_generation(self, wrap_end: int) -> None:
        """The intent to start the journal's next generation (a wrap: WRAP_END is where this one ends; a reset: 0),
        once SQLite has every record of this one. A writer killed before the new generation has fully started
        leaves it there, and whoever takes the file lock next starts it (_catch_up): every process then reloads
        from SQLite or, having seen all of the generation before, reads on from START. Without it a writer killed
        half way could leave END back at START in the same generation, which the next writer would write on from,
        under processes whose copy was further on."""
        self._put(_NEXT_WRAP_END, wrap_end)
        self._put(_NEXT_GEN, self._u64(_GEN) + 1)  # last: the intent is whole once this is set

    def _start_generation(self) -> None:
        """Starts the generation _begin_generation announced (again, if its writer was killed half way: every step
        writes what the intent says). GEN first: a process reading on finds it moved before END goes back. The
        world's version moves before the intent is cleared: readers that go by it look again, whoever finishes."""
        self._put(_GEN, self._u64(_NEXT_GEN))
        self._put(_END, START)
        self._put(_FLUSHED, START)
        self._put(_WRAP_END, self._u64(_NEXT_WRAP_END))
        self._moved()
        self._put(_NEXT_GEN, 0)

    def _place(self, end: int, payload: bytes) -> int:
        """Writes a record at END (past the journal's END: no one reads it yet); returns where it ends."""
        journal = self._journal
        _LEN.pack_into(journal, end, len(payload))
        journal[end + 4:end + 4 + len(payload)] = payload
        return end + 4 + len(payload)

    def _settle_pending(self) -> None:
        """A writer was killed storing a record (Store._append): after placing it (PENDING_END: its end) and
        before the version moved after it. Once END has passed it, it is stored. Before that, it is stored when a
        durable writer's SQLite transaction committed it (that transaction noted the record's end as SQLite's
        position, meta journal_at): END is moved past it now. Else it is let go (its writer never answered). The
        version moves either way, so processes that go by it look again. SQLite's answer is needed: if it cannot
        be read (busy past its timeout, an I/O error), that raises and the announcement stays for the next try."""
        pending, end = self._u64(_PENDING_END), self._u64(_END)
        if end < pending <= JOURNAL_BYTES:
            if self._noted_at(self._conn()) == (self._u64(_GEN), pending):
                self._put(_END, pending)
        self._moved()
        self._put(_PENDING_END, 0)

    def _restart_journal(self) -> None:
        """SQLite holds the whole world (just written, after _begin_generation(0)): every process reloads it."""
        self._start_generation()
        self._image, self._at, self._dirty, self._seen = None, b"", set(), None

    # -- changes -----------------------------------------------------------------------------------
    def transaction(self, work: Callable[[Txn], object], optimistic: bool = False):
        """Runs WORK(txn) as one change: all of it is stored, or nothing if WORK raises.

        OPTIMISTIC: WORK runs first outside the write lock, on this process's image, and the change is stored if
        nothing it read has changed by the time the lock is taken; otherwise (or if it raised) it runs again under
        the lock. So processes compute changes at the same time and hold the lock only to store them; WORK must
        have no effect but through the Txn (it may run twice)."""
        if optimistic and not getattr(self._local, "dry_run", False):
            image = self._view()
            start = image.read(lambda: image.applied)  # between records, never halfway through one
            txn = Txn(image, reads=set())
            try:
                result = work(txn)
            except Exception:  # noqa: BLE001  decided again under the lock, on the world as it is then
                pass
            else:
                staged = self._stage(txn)  # before the lock: it is held only to store the change
                if staged is not None and self._publish_optimistic(image, start, txn, staged):
                    return result
                if staged is None:
                    with self._writer_turn():
                        if self._catch_up() is image and txn.still_holds(start):
                            return result
        with self._writer_turn():
            image = self._catch_up()
            txn = Txn(image)
            result = work(txn)
            if getattr(self._local, "dry_run", False):
                return result
            return self._commit(image, txn, result)

    def _publish_optimistic(self, image: Image, start: int, txn: Txn, staged: tuple) -> bool:
        """Stores an optimistic change (STAGED, made on IMAGE after START records) if nothing it read has moved;
        False if something has (the caller runs it again under the write lock).

        The file lock, which every process's writers queue for, is held only to catch up, check and append: the
        change is applied to this process's image after the file lock is let go, with the thread turn still held,
        so no thread of this process sees the world between the two (a reader that finds the world's version
        moved catches up under the turn)."""
        with self._writer_turn() as held:
            if self._catch_up() is not image or not txn.still_holds(start):
                return False
            published = self._append(image, staged)
            held.let_file_go()
            self._take_in(image, published)
            return True

    def _append(self, image: Image, staged: tuple) -> tuple | None:
        """Under the write lock: STAGED (a change made on IMAGE, the caught-up image) into the journal (and, when
        durable, SQLite first), and the world's version moved. Returns what applies it to IMAGE: (record, the
        journal's head and the version after it); None when it went through SQLite instead (the image was let go:
        every process reloads)."""
        record, payload = staged
        end = self._room(4 + len(payload))
        if end is None:  # larger than the journal: through SQLite, and everyone reloads
            self._flush()
            self._begin_generation(0)
            self._sql_rows(image.staged(record), self._dirty | record_keys(record))
            self._restart_journal()
            return None
        # The record is placed past END and announced (PENDING_END) before anything else: a writer killed from
        # here until the version has moved leaves the announcement, and the next one to take the file lock
        # finishes the change or lets it go (_settle_pending). Else a change could be in SQLite (durable) or past
        # END with the version unmoved: a process that reloads, or reads on, would see it and the others not.
        at = self._place(end, payload)
        self._put(_PENDING_END, at)
        if self.durable:  # on disk before anyone sees it: SQLite first, at the record's end
            self._sql_rows(image.staged(record), self._dirty | record_keys(record), at=at)
        self._put(_END, at)  # the commit point for every other process
        head = self._journal[_HEAD]
        self._moved()
        self._put(_PENDING_END, 0)
        return record, head, self._version[:VERSION_BYTES]

    @staticmethod
    def _stage(txn: Txn) -> tuple[tuple, bytes] | None:
        """TXN's record and its journal form (None: it changed nothing)."""
        if not txn.changed:
            return None
        record = txn.record()
        # marshal: 0.8 against 1.5 µs to read a ~900-byte record back (pickle through a class-refusing
        # Unpickler); writing it costs the same (0.7 µs).
        return record, marshal.dumps(record)

    def _commit(self, image: Image, txn: Txn, result, staged: tuple | None = None):
        """Stores TXN (made on IMAGE, the caught-up image) and returns RESULT; under the write lock. STAGED: what
        _stage(TXN) gave, when the caller made it before taking the lock."""
        if staged is None:
            staged = self._stage(txn)
            if staged is None:
                return result  # a catch-up that found nothing keeps every process's memo
        self._take_in(image, self._append(image, staged))
        return result

    def _take_in(self, image: Image, published: tuple | None) -> None:
        """What _append stored (None: nothing to apply), applied to this process's IMAGE, under the thread turn;
        only then is the image marked as at the change's head and version (if the apply raises, the next catch-up
        replays it)."""
        if published is not None:
            record, head, version = published
            image.apply(record, None if self.durable else self._dirty)
            self._at, self._seen = head, (image, version)

    def _sql(self, work: Callable[[sqlite3.Connection], object]):
        """Runs WORK(conn) in one SQLite write transaction, under the write lock, with SQLite first brought up to
        date; if it changed anything, every process reloads the world from SQLite afterwards."""
        with self._writer_turn():
            self._catch_up()
            self._flush()
            conn = self._conn()
            conn.execute("BEGIN IMMEDIATE")
            changes = conn.total_changes
            try:
                result = work(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            if getattr(self._local, "dry_run", False):
                conn.execute("ROLLBACK")
                return result
            changed = conn.total_changes != changes
            if changed:  # before the commit: if it is killed after, the next writer still makes everyone reload
                self._begin_generation(0)
            conn.execute("COMMIT")
            if changed:
                self._restart_journal()
            return result

    def memo(self, key, compute: Callable[[], object]):
        """COMPUTE()'s value for KEY, computed once per process and version of the world (see the module doc).
        COMPUTE must read the stored world only, outside any transaction."""
        if self._pid != _PID:
            self._forked()
        if self._version is None:
            self._lock_file()
        version = self._version[:VERSION_BYTES]  # read before COMPUTE: a change made meanwhile recomputes next time
        if version != self._memo_version:  # the world changed: everything kept is stale, let it go at once
            self._memo, self._memo_version, self._memo_bytes = {}, version, 0
        memo = self._memo
        entry = memo.get(key)
        if entry is not None and entry[0] == version:  # the tag: a thread that raced a change may file an older one
            return entry[1]
        value = compute()
        size = _size(value)
        if len(memo) >= MEMO_LIMIT or self._memo_bytes + size > MEMO_BUDGET:
            memo = self._memo = {}
            self._memo_bytes = 0
        memo[key] = (version, value)
        self._memo_bytes += size
        return value

    def parsed(self, key: tuple, doc: bytes) -> dict:
        """DOC, the stored wire form of row KEY (("s", id) or ("t", id)), parsed once per process and form: the
        engine's slices hold their docs as values (a change makes a new dict, never edits one), so they can share
        one dict. Callers must not edit it. One entry per row: the current form's."""
        entry = self._parsed.get(key)
        if entry is not None and entry[0] is doc:
            return entry[1]
        return self.remember(key, doc, orjson.loads(doc))

    def remember(self, key: tuple, doc: bytes, value: dict) -> dict:
        """Files VALUE as what DOC, row KEY's new wire form, parses to (a writer that just serialised it)."""
        self._parsed[key] = (doc, value)
        return value

    def dumped(self, key: tuple, value: dict) -> bytes:
        """VALUE in wire form: the stored form when VALUE is what row KEY's stored form parses to (a change just
        made it, or read it), else serialised now. Saves serialising a changed subtask twice to answer with it."""
        entry = self._parsed.get(key)
        return entry[0] if entry is not None and entry[1] is value else dump_data(value)

    @contextmanager
    def dry_run(self):
        """Inside: this thread's changes are computed, then dropped instead of stored.
        For answers computed as if (faults.py's forced 2xx)."""
        self._conn()  # after a fork, _local is replaced here: set the flag on the one that stays
        self._local.dry_run = True
        try:
            yield
        finally:
            self._local.dry_run = False

    # -- the world ---------------------------------------------------------------------------------
    def ensure_seeded(self, seed: int, build: Callable[[int], object]) -> bool:
        """Loads the world for SEED unless the file already holds one. True when this call loaded it.
        Safe to call from every worker at start-up: the first one in loads, the others see it.
        A file that is not a state file of ours raises StoreError and is left untouched."""
        def work(conn):
            migrated = self._migrate(conn)
            if conn.execute("SELECT 1 FROM meta WHERE key = 'seed'").fetchone():
                if migrated:
                    self._loaded(conn)
                return False
            if conn.execute("SELECT 1 FROM subtask LIMIT 1").fetchone():
                raise StoreError(f"{self.path} holds subtasks but no seed: not a state file this mock wrote")
            self._load(conn, seed, build(seed))
            self._loaded(conn)
            return True

        try:
            probe = sqlite3.connect(self.path)  # no pragma yet: a database of something else is left as it was
            try:
                known = {r[0] for r in probe.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            finally:
                probe.close()
            if known and not {"meta", "task", "subtask"} <= known:
                raise StoreError(f"{self.path} is an SQLite database of something else (tables: {sorted(known)})")
            conn = self._conn()
            conn.executescript(SCHEMA)
            return self._sql(work)
        except sqlite3.DatabaseError as exc:
            self.close()
            raise StoreError(f"{self.path} is not a usable state file: {exc}") from None

    def reset(self, seed: int, build: Callable[[int], object]) -> None:
        """Replaces the whole world with the one SEED builds, in one transaction."""
        world = build(seed)

        def work(conn):
            conn.execute("DELETE FROM subtask")
            conn.execute("DELETE FROM subtask_log")
            conn.execute("DELETE FROM task")
            conn.execute("DELETE FROM meta WHERE key NOT IN ('clock', ?)", (META_JOURNAL,))  # the mock's time goes on
            self._load(conn, seed, world)
            self._loaded(conn)

        self._sql(work)

    @staticmethod
    def _migrate(conn: sqlite3.Connection) -> bool:
        """Adds the engine's columns to a state file that lacks them. True when it did."""
        have = {row[1] for row in conn.execute("PRAGMA table_info(subtask)")}
        missing = [name for name in ENGINE_COLUMNS if name not in have]
        for name in missing:
            conn.execute(f"ALTER TABLE subtask ADD COLUMN {name} {ENGINE_COLUMNS[name]}")
        conn.execute(ENGINE_INDEX)
        return bool(missing)

    def _loaded(self, conn: sqlite3.Connection) -> None:
        """Inside the SQLite transaction that loaded a world: lets after_load change it, through a Txn, and writes
        what it changed into the same transaction."""
        if self.after_load is None:
            return
        image = Image.load(conn)
        txn = Txn(image)
        self.after_load(txn)
        record = txn.record()
        image.apply(record)
        image.write_rows(conn, record_keys(record))

    @staticmethod
    def _load(conn: sqlite3.Connection, seed: int, world) -> None:
        conn.executemany(
            "INSERT INTO task (id, status, doc) VALUES (?, ?, ?)",
            [(t["id"], t["status"], dump_data(t)) for t in world.tasks],
        )
        conn.executemany(
            "INSERT INTO subtask (id, task_id, status, operation, doc) VALUES (?, ?, ?, ?, ?)",
            [
                (s["id"], world.subtask_task[s["id"]], s["status"], s.get("operation"), dump_data(s))
                for s in world.subtasks
            ],
        )
        conn.execute("INSERT INTO meta (key, value) VALUES ('seed', ?)", (str(seed),))

    # -- reads (from this process's image, brought up to date first) -----------------------------------
    def _view(self) -> Image:
        seen, version = self._seen, self._version
        if seen is not None and version is not None and self._pid == _PID and version[:VERSION_BYTES] == seen[1]:
            return seen[0]
        if self._pid != _PID:
            self._forked()
        with self._turn:
            image = self._read_on()
        if image is not None:
            return image
        with self._writer_turn():
            return self._catch_up()

    def seed(self) -> int | None:
        value = self._view().meta.get("seed")
        return int(value) if value is not None else None

    def meta_value(self, key: str) -> str | None:
        return self._view().meta.get(key)

    def subtask(self, subtask_id: int) -> SubtaskRow | None:
        return self._view().subs.get(subtask_id) if _in_range(subtask_id) else None

    def subtasks(self, status: str | None = None, task_id: int | None = None) -> list[SubtaskRow]:
        image = self._view()
        rows = image.read(lambda: list(image.subs.values()))
        return sorted((r for r in rows if (status is None or r.status == status)
                       and (task_id is None or r.task_id == task_id)), key=lambda r: r.id)

    def dump(self) -> tuple[list[dict], list[dict]]:
        """Every task and subtask, read so that the two agree."""
        image = self._view()
        tasks, subs = image.read(lambda: ([d for _, (_, d) in sorted(image.tasks.items())],
                                          [r.doc for _, r in sorted(image.subs.items())]))
        return [orjson.loads(d) for d in tasks], [orjson.loads(d) for d in subs]

    def counts(self) -> dict:
        image = self._view()
        return image.read(lambda: {"tasks": len(image.tasks), "subtasks": len(image.subs)})

    def clock_and_next_due(self) -> tuple[str | None, int | None]:
        """The one read every request makes: the clock (JSON) and the earliest due transition (or None)."""
        image = self._view()
        return image.read(lambda: (image.meta.get("clock"), min(image.due.values()) if image.due else None))

    def task(self, task_id: int) -> tuple[bytes, list[bytes]] | None:
        """The task's stored doc and its subtasks' wire forms (by id), or None."""
        image = self._view()

        def read():
            found = image.tasks.get(task_id)
            if found is None:
                return None
            subs = image.subs
            return found[1], [subs[sid].doc for sid in image.by_task.get(task_id, ())]

        return image.read(read)

    def tasks(self) -> tuple[list[bytes], dict[int, list[bytes]]]:
        """Every task's stored doc (by id) and every subtask's wire form, grouped by task (by id)."""
        image = self._view()

        def read():
            subs = image.subs
            return ([d for _, (_, d) in sorted(image.tasks.items())],
                    {tid: [subs[sid].doc for sid in ids] for tid, ids in image.by_task.items()})

        return image.read(read)

    def subtask_run(self, subtask_id: int) -> tuple[SubtaskRunRow, str | None] | None:
        """The subtask with its bookkeeping and its stored log (None: it has none yet), or None."""
        if not _in_range(subtask_id):
            return None
        image = self._view()

        def read():
            r = image.subs.get(subtask_id)
            if r is None:
                return None
            text = image.logs.get(subtask_id)
            return SubtaskRunRow(r.id, r.task_id, r.doc, r.due_at, r.scenario, r.runs, r.run_start,
                                 text is not None), text

        return image.read(read)

    # -- inside a transaction (CONN is the Txn that Store.transaction gives WORK) ---------------------------
    @staticmethod
    def meta(conn: Txn, key: str) -> str | None:
        if key in conn.metas:
            return conn.metas[key]
        conn.read(("m", key))
        return conn.image.meta.get(key)

    @staticmethod
    def set_meta(conn: Txn, key: str, value: str) -> None:
        conn.metas[key] = value

    @staticmethod
    def task_ids(conn: Txn, due_by: int | None = None) -> list[int]:
        """Every task's id, or only those of tasks with a transition due by DUE_BY."""
        image = conn.image
        conn.read("*")
        if due_by is None:
            return sorted({*image.tasks, *conn.tasks})
        due = {sid for sid, at in image.due.items() if at <= due_by and sid not in conn.subs}
        due.update(sid for sid, r in conn.subs.items() if r.due_at is not None and r.due_at <= due_by)
        return sorted({conn.sub(sid).task_id for sid in due})

    @staticmethod
    def active_task_ids(conn: Txn, statuses) -> list[int]:
        """The ids of the tasks with a subtask in one of STATUSES."""
        conn.read("*")
        return sorted({conn.sub(sid).task_id for sid in {*conn.image.subs, *conn.subs}
                       if conn.sub(sid).status in statuses})

    @staticmethod
    def task_id_of(conn: Txn, subtask_id: int) -> int | None:
        row = conn.sub(subtask_id) if _in_range(subtask_id) else None
        return row.task_id if row is not None else None

    @staticmethod
    def task_rows(conn: Txn, task_id: int) -> tuple[bytes | None, list[SubtaskRow], set[int]]:
        """The task's stored doc, its subtasks' rows (by id) and the ids of those with a stored log."""
        task = conn.tasks.get(task_id)
        if task is None:
            conn.read(("t", task_id))
            task = conn.image.tasks.get(task_id)
        if task is None:
            return None, [], set()
        image = conn.image
        own, subs = conn.subs, image.subs
        conn.read(("T", task_id))  # the task's rows, its subtasks' and their logs (Image.apply moves it with any)
        ids = image.by_task.get(task_id, ())
        rows = [own.get(sid) or subs[sid] for sid in ids] if own else [subs[sid] for sid in ids]
        logs = image.logs
        logged = {sid for sid in ids if sid in logs}
        if conn.logged:
            logged.update(sid for sid in ids if sid in conn.logged)
        return task[1], rows, logged

    @staticmethod
    def wire_of(conn: Txn, subtask_id: int) -> bytes:
        """The subtask's wire form as the transaction sees it (a change that left the doc as it was reuses it)."""
        return conn.sub(subtask_id).doc

    @staticmethod
    def save_task(conn: Txn, task_id: int, status: str, doc: bytes) -> None:
        conn.tasks[task_id] = (status, doc)

    @staticmethod
    def save_subtask(conn: Txn, subtask_id: int, status: str, operation: str | None, doc: bytes,
                     due_at: int | None, scenario: str | None, runs: int, run_start: int | None) -> None:
        old = conn.sub(subtask_id)
        if old is None:
            return
        conn.subs[subtask_id] = SubtaskRow(subtask_id, old.task_id, status, operation, doc, due_at, scenario, runs,
                                           run_start)

    @staticmethod
    def append_log(conn: Txn, subtask_id: int, first: str | None, lines: list[str]) -> None:
        """Appends LINES to the subtask's log; FIRST starts a log the subtask does not have yet."""
        if conn.sub(subtask_id) is None:
            return
        conn.log_ops.append((subtask_id, first, "\n".join(lines) if lines else None))
        if first is not None:
            conn.logged.add(subtask_id)
