"""The access log's handler in served workers: lines are written in batches, at most FLUSH_S after they were
logged, instead of one write (and flush) per request.

One write per line gave the interpreter lock away on every request, and handed it to another thread: measured with
`bench/run.py` (2 workers, 32 connections), the access log cost 51 µs of server CPU per request on the success path
(173 -> 224 µs) and 19 on a task read (36 -> 55), up to a fifth of the throughput. A batch is written by a thread of
the handler FLUSH_S after its first line, at once when it holds BATCH_BYTES, and when the worker stops: a granian
worker is a multiprocessing child, which exits without running atexit, so the handler also registers a
multiprocessing finalizer (and atexit, for a process that is not such a child). A line is lost only when the worker
is killed (SIGKILL) within FLUSH_S of logging it.
"""

from __future__ import annotations

import atexit
import logging
import multiprocessing.util
import os
import threading
import time
from typing import TextIO

FLUSH_S = 0.05
BATCH_BYTES = 64 * 1024


class AccessFormatter(logging.Formatter):
    """logging's default line ("2026-12-02 03:27:01,123 message"), with the date and time formatted once per second
    instead of once per line."""

    def __init__(self):
        super().__init__("%(asctime)s %(message)s")
        self._second: tuple[int, str] = (-1, "")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        second = int(record.created)
        known = self._second  # once: another thread may assign it meanwhile
        if known[0] != second:
            known = self._second = (second, time.strftime(self.default_time_format, self.converter(record.created)))
        return self.default_msec_format % (known[1], record.msecs)


def lean_records() -> None:
    """What the logging HOWTO's "Optimization" section lists for records nobody formats with: no caller lookup, no
    thread or process names. For a served worker, whose formats (the access log's, granian's) use none of them."""
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


class BatchingHandler(logging.Handler):
    """Formats each record when it is logged (so a line says when it happened) and writes the lines to STREAM in
    order, in batches (see the module doc)."""

    def __init__(self, stream: TextIO, interval: float = FLUSH_S, limit: int = BATCH_BYTES):
        super().__init__()
        self.stream, self.interval, self.limit = stream, interval, limit
        self._lines: list[str] = []
        self._size = 0
        self._pending = threading.Event()  # set when a line waits for the writer thread
        self._writer_pid: int | None = None
        atexit.register(self.flush)
        multiprocessing.util.Finalize(None, self.flush, exitpriority=100)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:  # noqa: BLE001  logging's own way: report it, never fail the request
            self.handleError(record)
            return
        with self.lock:  # (logging holds it already around emit: a re-entrant lock)
            first = not self._lines
            self._lines.append(line)
            self._size += len(line) + 1
            full = self._size >= self.limit
        if full:
            self.flush()
        elif first:
            if self._writer_pid != os.getpid():  # the first line of this process (also after a fork)
                self._start_writer()
            self._pending.set()

    def _start_writer(self) -> None:
        with self.lock:
            if self._writer_pid == os.getpid():
                return
            self._writer_pid = os.getpid()
            self._pending = threading.Event()
        threading.Thread(target=self._write_batches, name="ocp-mock-access-log", daemon=True).start()

    def _write_batches(self) -> None:
        pending = self._pending
        while True:
            pending.wait()
            time.sleep(self.interval)
            pending.clear()  # before the batch is taken: a line logged after it is taken sets it again
            self.flush()

    def flush(self) -> None:
        """Writes every line logged so far. Under the handler's lock (the one logging holds around emit), so
        batches go out whole and in order; a thread that logs meanwhile waits for one write, once a batch."""
        with self.lock:
            if not self._lines:
                return
            lines, self._lines, self._size = self._lines, [], 0
            try:
                self.stream.write("\n".join(lines) + "\n")
                self.stream.flush()
            except (OSError, ValueError):  # the stream is gone (a closed terminal or pipe): nothing to write to
                pass

    def close(self) -> None:
        self.flush()
        super().close()
