"""Subtask log lines as OCP's task executor writes them: one line per event, in the server's time zone.

    2026-11-25 16:02:11.123 INFO [task-executor-3] c.o.o.t.e.runner.SubtaskRunner: Install ocp agent on 10.65.100.225: ...

Pure functions: the lines of a run depend only on the subtask, the seed, the run and the times given, so a log
read while a subtask runs is always a prefix of the log it has when the run ends.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from datetime import timezone

from .clock import from_datetime, to_datetime
from .world import FINISHED, parse_time

LOGGER = "c.o.o.t.e.runner.SubtaskRunner"
WAIT_EVERY_MS = 30_000  # a long run writes a "still waiting" line this often
EARLY_WORK_MS = 20_000  # a long run does its visible work in its first seconds, then waits

# What each step visibly does, in order ({host} is the executor).
STEP_WORK: dict[str, tuple[str, ...]] = {
    "Check host environment": ("check ssh connectivity to {host}", "check disk space and ulimit on {host}",
                               "check clock offset of {host} against the OCP server"),
    "Register host": ("register host {host} in metadb",),
    "Install ocp agent": ("upload ocp-agent package to {host}", "install ocp-agent rpm on {host}",
                          "write ocp-agent config on {host}"),
    "Start ocp agent": ("start ocp-agent service on {host}", "wait for ocp-agent heartbeat from {host}"),
    "Check ocp agent status": ("query ocp-agent status on {host}",),
    "Clean up install package": ("remove install package from /tmp on {host}",),
    "Stop ocp agent": ("stop ocp-agent service on {host}",),
    "Uninstall ocp agent": ("uninstall ocp-agent rpm on {host}", "remove ocp-agent data directory on {host}"),
    "Pull OceanBase image": ("pull oceanbase-ce image on {host}", "verify image checksum on {host}"),
    "Initialize OBServer": ("create data and log directories on {host}", "start observer process on {host}"),
    "Bootstrap cluster": ("execute ALTER SYSTEM BOOTSTRAP via {host}", "wait for rootservice to be ready"),
    "Create proxyro user": ("create user proxyro in sys tenant",),
    "Register cluster": ("register cluster in metadb", "sync cluster topology"),
    "Check cluster status": ("query __all_server via {host}", "check every zone is ACTIVE"),
    "Upgrade OBServer": ("stop observer on {host}", "replace observer binary on {host}", "start observer on {host}"),
    "Run upgrade post script": ("run upgrade_post.py via {host}",),
    "Check cluster version": ("query cluster version via {host}",),
    "Restart OBServer": ("stop observer on {host}", "start observer on {host}", "wait for observer to be ACTIVE"),
    "Check OBServer status": ("query observer status on {host}",),
    "Check cluster resources": ("compute free CPU and memory per zone",),
    "Create resource pool": ("create unit config", "create resource pool"),
    "Create tenant": ("execute CREATE TENANT via {host}", "wait for tenant to be NORMAL"),
    "Set tenant parameters": ("set tenant parameters via {host}",),
    "Set tenant whitelist": ("set ob_tcp_invited_nodes via {host}",),
    "Check tenant status": ("query tenant status via {host}",),
    "Lock tenant": ("execute ALTER TENANT LOCKED via {host}",),
    "Drop tenant": ("execute DROP TENANT FORCE via {host}",),
    "Drop resource pool": ("execute DROP RESOURCE POOL via {host}",),
    "Clean up tenant metadata": ("delete tenant metadata from metadb",),
    "Check backup configuration": ("check backup destination is writable from {host}",),
    "Take full backup": ("execute ALTER SYSTEM BACKUP DATABASE via {host}", "wait for backup set to complete"),
    "Validate backup": ("validate backup set pieces",),
    "Clean up expired backups": ("delete obsolete backup sets",),
    "Collect host info": ("collect CPU, memory and disk info of {host}",),
    "Update host metadata": ("update host metadata in metadb",),
    "Clean up OBServer logs": ("remove observer logs older than 7 days on {host}",),
    "Report cleanup result": ("report freed disk space",),
}
GENERIC_WORK = ("execute {name} on {host}",)
ERRORS = (
    "java.net.SocketTimeoutException: connect timed out ({host}:62888)",
    "com.oceanbase.ocp.core.exception.OcpAgentException: ocp-agent on {host} is not responding",
    "com.oceanbase.ocp.core.exception.ShellException: command exited with code 1 on {host}",
    "java.sql.SQLException: ORA-00600: internal error code, arguments: -4012, Timeout",
    "com.oceanbase.ocp.core.exception.UnexpectedException: {name} failed on {host}, see the executor's log",
)


def stamp(ms: int, tz: timezone) -> str:
    return to_datetime(ms, tz).strftime("%Y-%m-%d %H:%M:%S.") + f"{ms % 1000:03d}"


def line(ms: int, tz: timezone, level: str, thread: str, message: str) -> str:
    return f"{stamp(ms, tz)} {level} [{thread}] {LOGGER}: {message}"


def _fill(text: str, doc: Mapping) -> str:
    return text.format(host=doc.get("executor", "the OCP server"), name=doc["name"])


def _doing(doc: Mapping) -> str:
    operation = doc.get("operation", "EXECUTE")
    return "rollback of " if operation == "ROLLBACK" else "skip of " if operation in ("SKIP", "ROLLBACK_SKIP") else ""


def start_lines(doc: Mapping, t: int, tz: timezone, thread: str) -> list[str]:
    return [line(t, tz, "INFO", thread,
                 f"Start {_doing(doc)}subtask {doc['id']} ({doc['name']}), operation: {doc.get('operation', 'EXECUTE')}, "
                 f"runTime: {doc.get('runTime', 1)}, executor: {doc.get('executor', '-')}")]


def progress_lines(doc: Mapping, seed: int, key: tuple, start: int, length: int, upto: int, tz: timezone,
                   thread: str) -> list[str]:
    """The work lines of a run that started at START and lasts LENGTH ms, written by UPTO (exclusive of the end)."""
    if doc.get("operation") in ("SKIP", "ROLLBACK_SKIP"):
        return []
    r = random.Random(":".join(map(str, (seed, "progress", *key))))
    work = STEP_WORK.get(doc["name"], GENERIC_WORK)
    span = min(length, EARLY_WORK_MS)
    marks = sorted(r.uniform(0.05, 0.9) for _ in work)
    prefix = f"{doc['name']} on {doc.get('executor', '-')}: " if "{host}" not in " ".join(work) else ""
    if doc.get("operation") == "ROLLBACK":
        prefix = "rollback: " + prefix
    events = [(start + int(span * m), f"{prefix}{_fill(w, doc)}") for m, w in zip(marks, work)]
    at = start + WAIT_EVERY_MS
    while at < start + length:
        events.append((at, f"waiting for {doc['name']} on {doc.get('executor', '-')} ({(at - start) // 1000}s elapsed)"))
        at += WAIT_EVERY_MS
    return [line(ms, tz, "INFO", thread, text) for ms, text in events if ms <= upto and ms < start + length]


def end_lines(doc: Mapping, outcome: str, t: int, tz: timezone, thread: str, seed: int, key: tuple) -> list[str]:
    sid = doc["id"]
    if outcome == "skip":
        first = line(t, tz, "INFO", thread, f"Subtask {sid} skipped")
    elif outcome == "succeed":
        what = "Rollback of subtask" if doc.get("operation") == "ROLLBACK" else "Subtask"
        first = line(t, tz, "INFO", thread, f"{what} {sid} finished on {doc.get('executor', '-')}")
    elif outcome == "timeout":
        first = line(t, tz, "ERROR", thread, f"Subtask {sid} timed out after {doc.get('timeout', 0)} seconds")
    elif outcome == "cancelled":
        first = line(t, tz, "WARN", thread, f"Subtask {sid} cancelled, executor {doc.get('executor', '-')} stopped")
    else:
        error = random.Random(":".join(map(str, (seed, "error", *key)))).choice(ERRORS)
        first = line(t, tz, "ERROR", thread, f"Subtask {sid} failed: {_fill(error, doc)}")
    state = line(t, tz, "INFO", thread,
                 f"Set state for subtask: {sid}, operation:{doc.get('operation', 'EXECUTE')}, state: {doc['status']}")
    return [first, state]


def seeded_log(doc: Mapping, seed: int, tz: timezone) -> str:
    """The log of a subtask as the seeded world has it (one run, ended as its status says), before the mock changed
    it: empty if it never ran."""
    if "startTime" not in doc:
        return ""
    key = ("seeded", doc["id"])
    thread = f"task-executor-{random.Random(f'{seed}:thread:{key}').randint(1, 8)}"
    start = from_datetime(parse_time(doc["startTime"]))
    lines = start_lines(doc, start, tz, thread)
    if doc["status"] in FINISHED and "finishTime" in doc:
        end = from_datetime(parse_time(doc["finishTime"]))
        lines += progress_lines(doc, seed, key, start, max(1, end - start), end, tz, thread)
        lines += end_lines(doc, "succeed" if doc["status"] == "SUCCESSFUL" else "fail", end, tz, thread, seed, key)
    return "\n".join(lines)


def join(text: str, lines: list[str]) -> str:
    """TEXT with LINES appended, one per line."""
    if not lines:
        return text
    return text + ("\n" if text else "") + "\n".join(lines)

