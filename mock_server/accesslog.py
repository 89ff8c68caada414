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
import sys
import threading
import time
from typing import Callable, TextIO

FLUSH_S = 0.05
_MSECS_FROM_NS = sys.version_info >= (3, 13)  # how LogRecord computes a record's msecs
BATCH_BYTES = 64 * 1024
access_log = logging.getLogger("ocp_mock.access")


ACCESS_LINE = "%s %s %s %d %.1fms"  # traceId, method, path, status, milliseconds


def log_access(trace_id: str, method: str, path: str, status: int, t0: float) -> None:
    """The access log's line for one answer (t0: time.perf_counter() when the request came in)."""
    args = (trace_id, method, path, status, (time.perf_counter() - t0) * 1000)
    line = direct(access_log)  # a served worker's batch, when logging would only put the line there
    if line is None:
        access_log.info(ACCESS_LINE, *args)
    else:
        line(ACCESS_LINE % args)


class AccessFormatter(logging.Formatter):
    """logging's default line ("2026-12-02 03:27:01,123 message"), with the date and time formatted once per second
    instead of once per line."""

    def __init__(self):
        super().__init__("%(asctime)s %(message)s")
        self._second: tuple[int, str] = (-1, "")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return self._when(record.created, record.msecs)

    def _when(self, created: float, msecs: float) -> str:
        second = int(created)
        known = self._second  # once: another thread may assign it meanwhile
        if known[0] != second:
            known = self._second = (second, time.strftime(self.default_time_format, self.converter(created)))
        return self.default_msec_format % (known[1], msecs)

    def line(self, created_ns: int, message: str) -> str:
        """The line a record of MESSAGE made at CREATED_NS (time.time_ns()) formats to: its created time and msecs
        as this Python's LogRecord computes them (from nanoseconds since 3.13, from a float before)."""
        if _MSECS_FROM_NS:
            return f"{self._when(created_ns / 1e9, (created_ns % 1_000_000_000) // 1_000_000 + 0.0)} {message}"
        created = created_ns / 1e9
        return f"{self._when(created, int((created - int(created)) * 1000) + 0.0)} {message}"


def lean_records() -> None:
    """What the logging HOWTO's "Optimization" section lists for records nobody formats with: no caller lookup, no
    thread or process names. For a served worker, whose formats (the access log's, granian's) use none of them."""
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


def direct(logger: logging.Logger) -> "Callable[[str], None] | None":
    """What writes LOGGER's INFO lines straight into its batch, when logging would do nothing else with them: its only
    handler is a BatchingHandler with an AccessFormatter, it hands nothing to its parents, and no filter, level or
    disabling stands between (a served worker's access log, wsgi.py). Then a line is formatted as the formatter
    formats a record, without the record (logging's LogRecord and handler calls: log_access took 4.7 µs a line
    through logging, 1.9 so). None otherwise: log through LOGGER."""
    handlers = logger.handlers
    if (len(handlers) != 1 or logger.propagate or logger.filters or logger.disabled
            or not logger.isEnabledFor(logging.INFO)):
        return None
    handler = handlers[0]
    formatter = handler.formatter
    if (type(handler) is not BatchingHandler or type(formatter) is not AccessFormatter or handler.filters
            or handler.level > logging.INFO):
        return None
    return handler.direct_line


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
        self.add(line)

    def add(self, line: str) -> None:
        """LINE, formatted, into the batch."""
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

    def direct_line(self, message: str) -> None:
        """MESSAGE logged now at INFO, formatted as the AccessFormatter formats a record (see direct)."""
        self.add(self.formatter.line(time.time_ns(), message))

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
