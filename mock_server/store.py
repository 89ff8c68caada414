"""Where the world's state lives: one SQLite file in WAL mode, shared by every thread and worker process.

Reads take no lock (WAL readers never block); a change takes SQLite's write lock (`BEGIN IMMEDIATE`),
re-reads the row and applies the lifecycle rule inside that transaction, so N concurrent retries of one
FAILED subtask, in any number of processes, give exactly one success. Each subtask row keeps its wire
form already serialised, so a request never re-serialises it.

Next to the wire form, a subtask row keeps the engine's bookkeeping (runtime.py, engine.py): `due_at`, the mock
time of its next automatic transition (indexed, so "is anything due?" is one cheap read), its scenario override,
its run count and the start of its current run; `subtask_log` holds the logs of subtasks that changed since the
world was loaded, and meta the mock's clock.

Answers that depend on the stored world alone (a task with its subtasks, a page of the task list) are kept per
process by `memo`, under the world's version: an 8-byte counter in the lock file, mapped into every process, that
each writer moves after its COMMIT and before it lets go of the lock. A process whose copy is of another version
computes it again, so an answer never lags a change that any process has acknowledged.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import sqlite3
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable

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
_CLOCK_AND_DUE = ("SELECT (SELECT value FROM meta WHERE key = 'clock'), "
                  "(SELECT min(due_at) FROM subtask WHERE due_at IS NOT NULL)")
VERSION_BYTES = 8
# What a process keeps at most; past either bound the memo starts afresh (ids and filters from a fuzzer are endless,
# and a list page of a big world is large).
MEMO_LIMIT = 256  # answers
MEMO_BUDGET = 16 * 2**20  # bytes of the answers' bytes and text (a list page of the 40 seeded tasks: ~60 kB)
_RUN_COLUMNS = ("id, task_id, doc, due_at, scenario, runs, run_start, "
                "EXISTS (SELECT 1 FROM subtask_log l WHERE l.subtask_id = subtask.id)")


def _size(value) -> int:
    """About how many bytes a memoised answer holds: its bytes and text, one level into tuples and rows."""
    if isinstance(value, (bytes, str)):
        return len(value)
    if isinstance(value, tuple):
        return 64 + sum(_size(v) for v in value)
    doc = getattr(value, "doc", None)  # a row
    return 256 + (len(doc) if isinstance(doc, (bytes, str)) else 0)


class StoreError(ValueError):
    """The state file cannot be used; the message says why. Nothing in it was changed."""


@dataclass(frozen=True)
class SubtaskRow:
    id: int
    task_id: int
    status: str
    operation: str | None
    doc: bytes  # the SubtaskInstance in wire form

    def load(self) -> dict:
        return orjson.loads(self.doc)


@dataclass(frozen=True)
class SubtaskRunRow:
    """A subtask with the engine's bookkeeping (see the module doc)."""

    id: int
    task_id: int
    doc: bytes
    due_at: int | None
    scenario: str | None  # JSON of the admin's override; None: the seed's default
    runs: int
    run_start: int | None
    logged: bool  # subtask_log has a row for it


class Store:
    def __init__(self, path: str, busy_timeout_ms: int = 30_000, durable: bool = False):
        self.path = path
        self.busy_timeout_ms = busy_timeout_ms
        # FULL: a commit is on disk before it returns (survives an OS crash, not only a killed process).
        self.synchronous = "FULL" if durable else "NORMAL"
        self._local = threading.local()
        self._pid = os.getpid()
        self._turn = threading.Lock()  # writers of this process, one at a time
        self._turn_fd: int | None = None  # the file lock that orders writers across processes
        self._version: mmap.mmap | None = None  # the world's version: the lock file's first 8 bytes, shared
        self._memo: dict = {}  # key -> (version, value), for the version in _memo_version (or a racing older one)
        self._memo_version = b""
        self._memo_bytes = 0
        # Called inside the transaction that loaded a world (or added the engine's columns to an old state
        # file), so the engine can put the world's in-flight subtasks in motion before anyone sees them.
        self.after_load: Callable[[sqlite3.Connection], None] | None = None

    # -- connections -------------------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        if self._pid != os.getpid():  # forked: never reuse a parent's connection or locks
            self._local = threading.local()
            self._pid = os.getpid()
            self._turn = threading.Lock()
            self._turn_fd = None
            self._version = None
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
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def _write(self, work: Callable[[sqlite3.Connection], object]):
        """Runs WORK under SQLite's write lock; rolls back if it raises.

        Writers queue on a lock first (a thread lock in the process, a file lock across processes), so they wait
        their turn in the kernel instead of polling in SQLite's busy-retry loop: that loop sleeps in steps, which
        made p99 of concurrent writes several hundred ms. SQLite's own lock still guarantees the exclusivity."""
        with self._writer_turn():
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
            else:
                conn.execute("COMMIT")
                if conn.total_changes != changes:  # a catch-up that found nothing keeps every process's memo
                    self._moved()
            return result

    @contextmanager
    def _writer_turn(self):
        if self._pid != os.getpid():
            self._conn()  # resets the per-process state after a fork
        self._lock_file()
        with self._turn:
            fcntl.flock(self._turn_fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self._turn_fd, fcntl.LOCK_UN)

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
        """After a COMMIT, under the lock: the world has a new version."""
        version = int.from_bytes(self._version[:VERSION_BYTES], "little")
        self._version[:VERSION_BYTES] = ((version + 1) % 2**64).to_bytes(VERSION_BYTES, "little")

    def memo(self, key, compute: Callable[[], object]):
        """COMPUTE()'s value for KEY, computed once per process and version of the world (see the module doc).
        COMPUTE must read the stored world only, outside any write transaction."""
        if self._pid != os.getpid() or self._version is None:
            self._conn()
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

    @contextmanager
    def dry_run(self):
        """Inside: this thread's changes are made, then rolled back instead of committed (nothing is stored).
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
            conn = self._conn()
            known = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if known and not {"meta", "task", "subtask"} <= known:
                raise StoreError(f"{self.path} is an SQLite database of something else (tables: {sorted(known)})")
            conn.executescript(SCHEMA)
            return self._write(work)
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
            conn.execute("DELETE FROM meta WHERE key <> 'clock'")  # the mock's time goes on
            self._load(conn, seed, world)
            self._loaded(conn)

        self._write(work)

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
        if self.after_load is not None:
            self.after_load(conn)

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

    def seed(self) -> int | None:
        row = self._conn().execute("SELECT value FROM meta WHERE key = 'seed'").fetchone()
        return int(row[0]) if row else None

    def meta_value(self, key: str) -> str | None:
        """A meta value, read without a transaction (lock-free)."""
        return self.meta(self._conn(), key)

    # -- reads -------------------------------------------------------------------------------------
    def subtask(self, subtask_id: int) -> SubtaskRow | None:
        if not -(2**63) <= subtask_id < 2**63:
            return None
        row = self._conn().execute(
            "SELECT id, task_id, status, operation, doc FROM subtask WHERE id = ?", (subtask_id,)
        ).fetchone()
        return SubtaskRow(*row) if row else None

    def subtasks(self, status: str | None = None, task_id: int | None = None) -> list[SubtaskRow]:
        sql, args = "SELECT id, task_id, status, operation, doc FROM subtask", []
        where = []
        if status is not None:
            where.append("status = ?")
            args.append(status)
        if task_id is not None:
            where.append("task_id = ?")
            args.append(task_id)
        if where:
            sql += " WHERE " + " AND ".join(where)
        return [SubtaskRow(*r) for r in self._conn().execute(sql + " ORDER BY id", args)]

    def dump(self) -> tuple[list[dict], list[dict]]:
        """Every task and subtask, read in one transaction so the two agree."""
        conn = self._conn()
        conn.execute("BEGIN")
        try:
            tasks = [orjson.loads(d) for (d,) in conn.execute("SELECT doc FROM task ORDER BY id")]
            subtasks = [orjson.loads(d) for (d,) in conn.execute("SELECT doc FROM subtask ORDER BY id")]
        finally:
            conn.execute("COMMIT")
        return tasks, subtasks

    def counts(self) -> dict:
        conn = self._conn()
        return {
            "tasks": conn.execute("SELECT count(*) FROM task").fetchone()[0],
            "subtasks": conn.execute("SELECT count(*) FROM subtask").fetchone()[0],
        }

    # -- changes -----------------------------------------------------------------------------------
    def change_subtask(
        self,
        subtask_id: int,
        change: Callable[[dict], dict],
        task_status: str | None = None,
        check_task: Callable[[list[dict]], None] | None = None,
    ) -> bytes | None:
        """Applies CHANGE to the subtask's current doc under the write lock and stores the result.
        CHANGE may raise to refuse (nothing is written). CHECK_TASK, when given, sees every subtask of the
        task after the change and may raise to refuse it. Returns the new wire form, or None if unknown."""

        def work(conn):
            row = conn.execute("SELECT task_id, doc FROM subtask WHERE id = ?", (subtask_id,)).fetchone()
            if row is None:
                return None
            task_id, doc = row
            new = change(orjson.loads(doc))
            if check_task is not None:
                siblings = [
                    new if sid == subtask_id else orjson.loads(sdoc)
                    for sid, sdoc in conn.execute("SELECT id, doc FROM subtask WHERE task_id = ?", (task_id,))
                ]
                check_task(siblings)
            wire = dump_data(new)
            conn.execute(
                "UPDATE subtask SET status = ?, operation = ?, doc = ? WHERE id = ?",
                (new["status"], new.get("operation"), wire, subtask_id),
            )
            if task_status is not None:
                self._set_task_status(conn, task_id, task_status)
            return wire

        return self._write(work)

    @staticmethod
    def _set_task_status(conn: sqlite3.Connection, task_id: int, status: str) -> None:
        row = conn.execute("SELECT doc FROM task WHERE id = ?", (task_id,)).fetchone()
        if row is None:
            return
        task = orjson.loads(row[0])
        task["status"] = status
        if status == "RUNNING":
            task.pop("finishTime", None)
        conn.execute("UPDATE task SET status = ?, doc = ? WHERE id = ?", (status, dump_data(task), task_id))

    # -- the engine's bookkeeping (used by runtime.py) ---------------------------------------------------
    def transaction(self, work: Callable[[sqlite3.Connection], object]):
        """Runs WORK(conn) under the write lock, in one transaction."""
        return self._write(work)

    def clock_and_next_due(self) -> tuple[str | None, int | None]:
        """The one read every request makes: the clock (JSON) and the earliest due transition (or None)."""
        return self._conn().execute(_CLOCK_AND_DUE).fetchone()

    @staticmethod
    def meta(conn: sqlite3.Connection, key: str) -> str | None:
        row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    @staticmethod
    def set_meta(conn: sqlite3.Connection, key: str, value: str) -> None:
        conn.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                     (key, value))

    @staticmethod
    def task_ids(conn: sqlite3.Connection, due_by: int | None = None) -> list[int]:
        """Every task's id, or only those of tasks with a transition due by DUE_BY."""
        if due_by is None:
            return [r[0] for r in conn.execute("SELECT id FROM task ORDER BY id")]
        return [r[0] for r in conn.execute(
            "SELECT DISTINCT task_id FROM subtask WHERE due_at IS NOT NULL AND due_at <= ? ORDER BY task_id", (due_by,))]

    @staticmethod
    def task_id_of(conn: sqlite3.Connection, subtask_id: int) -> int | None:
        if not -(2**63) <= subtask_id < 2**63:
            return None
        row = conn.execute("SELECT task_id FROM subtask WHERE id = ?", (subtask_id,)).fetchone()
        return row[0] if row else None

    @staticmethod
    def task_rows(conn: sqlite3.Connection, task_id: int) -> tuple[bytes | None, list[SubtaskRunRow]]:
        """The task's stored doc and its subtasks with their bookkeeping, by id."""
        if not -(2**63) <= task_id < 2**63:
            return None, []
        row = conn.execute("SELECT doc FROM task WHERE id = ?", (task_id,)).fetchone()
        if row is None:
            return None, []
        subs = [SubtaskRunRow(*r) for r in conn.execute(
            f"SELECT {_RUN_COLUMNS} FROM subtask WHERE task_id = ? ORDER BY id", (task_id,))]
        return row[0], subs

    @staticmethod
    def save_task(conn: sqlite3.Connection, task_id: int, status: str, doc: bytes) -> None:
        conn.execute("UPDATE task SET status = ?, doc = ? WHERE id = ?", (status, doc, task_id))

    @staticmethod
    def save_subtask(conn: sqlite3.Connection, subtask_id: int, status: str, operation: str | None, doc: bytes,
                     due_at: int | None, scenario: str | None, runs: int, run_start: int | None) -> None:
        conn.execute(
            "UPDATE subtask SET status = ?, operation = ?, doc = ?, due_at = ?, scenario = ?, runs = ?, run_start = ? "
            "WHERE id = ?", (status, operation, doc, due_at, scenario, runs, run_start, subtask_id))

    @staticmethod
    def append_log(conn: sqlite3.Connection, subtask_id: int, first: str | None, lines: list[str]) -> None:
        """Appends LINES to the subtask's log; FIRST starts a log the subtask does not have yet."""
        if first is not None:
            conn.execute("INSERT OR IGNORE INTO subtask_log (subtask_id, text) VALUES (?, ?)", (subtask_id, first))
        if lines:
            text = "\n".join(lines)
            conn.execute("UPDATE subtask_log SET text = CASE WHEN text = '' THEN ? ELSE text || char(10) || ? END "
                         "WHERE subtask_id = ?", (text, text, subtask_id))

    # -- reads of the task family (lock-free, each in one read transaction so its parts agree) ------------
    def _read(self, work: Callable[[sqlite3.Connection], object]):
        conn = self._conn()
        conn.execute("BEGIN")
        try:
            return work(conn)
        finally:
            conn.execute("COMMIT")

    def task(self, task_id: int) -> tuple[bytes, list[bytes]] | None:
        """The task's stored doc and its subtasks' wire forms (by id), or None."""
        if not -(2**63) <= task_id < 2**63:
            return None

        def work(conn):
            row = conn.execute("SELECT doc FROM task WHERE id = ?", (task_id,)).fetchone()
            if row is None:
                return None
            return row[0], [d for (d,) in conn.execute("SELECT doc FROM subtask WHERE task_id = ? ORDER BY id",
                                                       (task_id,))]

        return self._read(work)

    def tasks(self) -> tuple[list[bytes], dict[int, list[bytes]]]:
        """Every task's stored doc (by id) and every subtask's wire form, grouped by task (by id)."""

        def work(conn):
            tasks = [d for (d,) in conn.execute("SELECT doc FROM task ORDER BY id")]
            grouped: dict[int, list[bytes]] = {}
            for task_id, doc in conn.execute("SELECT task_id, doc FROM subtask ORDER BY id"):
                grouped.setdefault(task_id, []).append(doc)
            return tasks, grouped

        return self._read(work)

    def subtask_run(self, subtask_id: int) -> tuple[SubtaskRunRow, str | None] | None:
        """The subtask with its bookkeeping and its stored log (None: it has none yet), or None."""
        if not -(2**63) <= subtask_id < 2**63:
            return None
        row = self._conn().execute(
            f"SELECT {_RUN_COLUMNS}, (SELECT text FROM subtask_log l WHERE l.subtask_id = subtask.id) "
            "FROM subtask WHERE id = ?", (subtask_id,)).fetchone()
        return (SubtaskRunRow(*row[:-1]), row[-1]) if row else None
