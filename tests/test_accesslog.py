"""The served workers' access log (mock_server/accesslog.py): lines in order, written in batches, none lost when a
worker stops."""

from __future__ import annotations

import io
import logging
import multiprocessing
import re
import sys
import threading
import time

from mock_server.accesslog import AccessFormatter, BatchingHandler


def _logger(name: str, handler: logging.Handler) -> logging.Logger:
    logger = logging.getLogger(f"test_accesslog.{name}")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger


def _wait_for(predicate, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return predicate()


def test_lines_are_written_in_order_soon_after_they_are_logged():
    stream = io.StringIO()
    logger = _logger("soon", BatchingHandler(stream, interval=0.02))
    for i in range(3):
        logger.info("line %d", i)
    assert _wait_for(lambda: stream.getvalue().count("\n") == 3), stream.getvalue()
    assert stream.getvalue() == "line 0\nline 1\nline 2\n"
    logger.info("line 3")  # a later line: the writer wakes again
    assert _wait_for(lambda: stream.getvalue().endswith("line 3\n")), stream.getvalue()


def test_a_full_batch_is_written_at_once_and_flush_writes_the_rest_once():
    stream = io.StringIO()
    handler = BatchingHandler(stream, interval=60, limit=100)  # the writer thread would wait a minute
    logger = _logger("full", handler)
    for i in range(12):
        logger.info("a line of twenty %02d", i)  # 21 bytes a line: the fifth fills the batch
    assert stream.getvalue().count("\n") == 10, stream.getvalue()
    handler.flush()
    handler.flush()
    assert stream.getvalue().splitlines() == [f"a line of twenty {i:02d}" for i in range(12)]


def test_threads_logging_at_once_lose_no_line_and_keep_their_order():
    stream = io.StringIO()
    handler = BatchingHandler(stream, interval=0.001, limit=4096)
    logger = _logger("threads", handler)

    def log(t: int):
        for i in range(500):
            logger.info("%d %d", t, i)

    threads = [threading.Thread(target=log, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    handler.flush()
    lines = [tuple(map(int, line.split())) for line in stream.getvalue().splitlines()]
    assert sorted(lines) == [(t, i) for t in range(4) for i in range(500)]
    for t in range(4):
        assert [i for u, i in lines if u == t] == list(range(500))


def _child(path: str) -> None:
    """A multiprocessing child, as a granian worker is: it logs a line and returns (exit without atexit)."""
    handler = BatchingHandler(open(path, "a"), interval=60)
    _logger("child", handler).info("logged just before the worker stopped")


def test_a_worker_that_stops_writes_what_it_logged(tmp_path):
    path = tmp_path / "access.log"
    child = multiprocessing.get_context("fork").Process(target=_child, args=(str(path),))
    child.start()
    child.join(30)
    assert child.exitcode == 0
    assert path.read_text() == "logged just before the worker stopped\n"


def test_access_formatter_writes_loggings_default_line():
    record = logging.LogRecord("ocp_mock.access", logging.INFO, __file__, 1, "%s %d", ("POST /x", 200), None)
    ours, default = AccessFormatter().format(record), logging.Formatter("%(asctime)s %(message)s").format(record)
    assert ours == default
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} POST /x 200", ours)
    later = logging.LogRecord("ocp_mock.access", logging.INFO, __file__, 1, "m", (), None)
    later.created, later.msecs = record.created + 1.5, 500.0  # another second: the date is formatted again
    assert AccessFormatter().format(later) == logging.Formatter("%(asctime)s %(message)s").format(later)


def _served(name: str, stream) -> tuple[logging.Logger, BatchingHandler]:
    """A logger set up as a served worker's access log (wsgi.py)."""
    handler = BatchingHandler(stream, interval=0.02)
    handler.setFormatter(AccessFormatter())
    return _logger(name, handler), handler


def test_a_served_access_line_skips_logging_and_reads_as_logging_writes_it(monkeypatch):
    from mock_server import accesslog
    from mock_server.accesslog import direct

    stream = io.StringIO()
    logger, handler = _served("direct", stream)
    assert direct(logger) == handler.direct_line
    records = []
    monkeypatch.setattr(logger, "makeRecord", lambda *a, **k: records.append(a) or logging.Logger.makeRecord(logger, *a, **k))
    monkeypatch.setattr(accesslog, "access_log", logger)
    accesslog.log_access("t1", "POST", "/x", 200, time.perf_counter())
    logger.info("through logging")  # the two ways share one batch, in order
    assert _wait_for(lambda: stream.getvalue().count("\n") == 2), stream.getvalue()
    first, second = stream.getvalue().splitlines()
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} t1 POST /x 200 \d+\.\dms", first), first
    assert second.endswith(" through logging")
    assert len(records) == 1, "the access line made no LogRecord"
    for created_ns in (1_764_600_000_000_000_000, 1_764_600_000_999_900_000, 1_764_600_001_000_400_000):
        record = logging.LogRecord("ocp_mock.access", logging.INFO, __file__, 1, "m %d", (7,), None)
        record.created = created_ns / 1e9
        if sys.version_info >= (3, 13):  # LogRecord's own formula, by version
            record.msecs = (created_ns % 1_000_000_000) // 1_000_000 + 0.0
        else:
            record.msecs = int((record.created - int(record.created)) * 1000) + 0.0
        assert handler.formatter.line(created_ns, "m 7") == handler.formatter.format(record)
    real = logging.LogRecord("ocp_mock.access", logging.INFO, __file__, 1, "m", (), None)  # as this Python makes it
    ns = int(real.created * 1e9)
    assert handler.formatter.line(ns, "m")[:19] == handler.formatter.format(real)[:19]


def test_an_access_line_goes_through_logging_whenever_logging_would_do_more_with_it():
    from mock_server.accesslog import direct

    def changed(how):
        logger, handler = _served(f"more-{how}", io.StringIO())
        if how == "handler":
            logger.addHandler(logging.NullHandler())
        elif how == "filter":
            logger.addFilter(lambda r: True)
        elif how == "handler-filter":
            handler.addFilter(lambda r: True)
        elif how == "level":
            logger.setLevel(logging.WARNING)
        elif how == "disabled":
            logger.disabled = True
        elif how == "formatter":
            handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
        elif how == "propagate":
            logger.propagate = True  # the root logger's handlers would see it too
        return direct(logger)

    for how in ("handler", "filter", "handler-filter", "level", "disabled", "formatter", "propagate"):
        assert changed(how) is None, how
    assert direct(logging.getLogger("test_accesslog.no-handler")) is None
