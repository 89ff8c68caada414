"""Where the world's state lives: one SQLite file in WAL mode, shared by every thread and worker process.

Reads take no lock (WAL readers never block); a change takes SQLite's write lock (`BEGIN IMMEDIATE`),
re-reads the row and applies the lifecycle rule inside that transaction, so N concurrent retries of one
FAILED subtask, in any number of processes, give exactly one success. Each subtask row keeps its wire
form already serialised, so a request never re-serialises it.
"""

from __future__ import annotations

import os
import sqlite3
import threading
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
"""


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


class Store:
    def __init__(self, path: str, busy_timeout_ms: int = 30_000, durable: bool = False):
        self.path = path
        self.busy_timeout_ms = busy_timeout_ms
        # FULL: a commit is on disk before it returns (survives an OS crash, not only a killed process).
        self.synchronous = "FULL" if durable else "NORMAL"
        self._local = threading.local()
        self._pid = os.getpid()

    # -- connections -------------------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        if self._pid != os.getpid():  # forked: never reuse a parent's connection
            self._local = threading.local()
            self._pid = os.getpid()
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
        """Runs WORK under SQLite's write lock; rolls back if it raises."""
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = work(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return result

    # -- the world ---------------------------------------------------------------------------------
    def ensure_seeded(self, seed: int, build: Callable[[int], object]) -> bool:
        """Loads the world for SEED unless the file already holds one. True when this call loaded it.
        Safe to call from every worker at start-up: the first one in loads, the others see it.
        A file that is not a state file of ours raises StoreError and is left untouched."""
        def work(conn):
            if conn.execute("SELECT 1 FROM meta WHERE key = 'seed'").fetchone():
                return False
            if conn.execute("SELECT 1 FROM subtask LIMIT 1").fetchone():
                raise StoreError(f"{self.path} holds subtasks but no seed: not a state file this mock wrote")
            self._load(conn, seed, build(seed))
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
            conn.execute("DELETE FROM task")
            conn.execute("DELETE FROM meta")
            self._load(conn, seed, world)

        self._write(work)

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
