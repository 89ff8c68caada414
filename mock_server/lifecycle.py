"""Which operation is legal in which state, and what it changes. Pure functions over SubtaskInstance and task dicts.

The rules are data: RULES for the subtask actions (retry, skip, cancel), TASK_RULES for the task actions (retry,
rollback), as OCP's SubtaskInstanceManagerImpl and TaskInstanceManagerImpl apply them. `apply` and `apply_task`
are the one place an API action changes state; `set_state` the one place the admin API forces a state while
keeping the world's invariants. What happens next (runs, the task's status) is engine.py's.
"""

from __future__ import annotations

from dataclasses import dataclass

from .envelope import prohibit_rollback, state_invalid
from .world import FINISHED, STARTED, parse_time, task_prohibits_rollback


@dataclass(frozen=True)
class Rule:
    action: str
    from_status: frozenset
    refused_operations: frozenset
    to_status: str
    to_operation: str | None  # None: the operation is kept
    clears: tuple = ()
    rollback_operation: str | None = None  # the operation instead, while the subtask's task rolls back


RULES = {
    "retry": Rule(
        action="retry",
        from_status=frozenset({"FAILED"}),
        refused_operations=frozenset({"ROLLBACK"}),
        to_status="READY",
        to_operation="RETRY",
        clears=("finishTime",),
    ),
    "skip": Rule(
        action="skip",
        from_status=frozenset({"FAILED"}),
        refused_operations=frozenset(),
        to_status="READY",
        to_operation="SKIP",
        clears=("finishTime",),
        rollback_operation="ROLLBACK_SKIP",
    ),
    "cancel": Rule(
        action="cancel",
        from_status=frozenset({"RUNNING"}),
        refused_operations=frozenset(),
        to_status="CANCELING",
        to_operation=None,
    ),
}


@dataclass(frozen=True)
class TaskRule:
    action: str
    from_status: frozenset  # the task's status
    refused_operations: frozenset  # the task's operation
    to_operation: str  # the task's new operation
    checks_prohibit_rollback: bool = False


TASK_RULES = {
    # the task's FAILED subtasks run again: READY + RETRY
    "retry": TaskRule("retry", frozenset({"FAILED"}), frozenset({"ROLLBACK"}), "RETRY"),
    # every subtask that ran gets operation ROLLBACK; those whose downstreams never ran become READY now
    "rollback": TaskRule("rollback", frozenset({"FAILED"}), frozenset(), "ROLLBACK", checks_prohibit_rollback=True),
}


def check(action: str, subtask_id, status: str, operation: str | None) -> Rule:
    """Returns the rule when ACTION is legal from (status, operation); raises OCP's 400/20003 otherwise."""
    rule = RULES[action]
    if status not in rule.from_status:
        raise state_invalid(subtask_id, status)
    if operation in rule.refused_operations:  # OCP names the operation in the message's state slot
        raise state_invalid(subtask_id, operation)
    return rule


def apply(action: str, subtask: dict, task_operation: str | None = None) -> dict:
    """The subtask after ACTION, as a new dict; raises OCP's 400/20003 when the action is not legal.
    TASK_OPERATION is the operation of the subtask's task (a skip during a rollback is a ROLLBACK_SKIP)."""
    rule = check(action, subtask["id"], subtask["status"], subtask.get("operation"))
    changed = {k: v for k, v in subtask.items() if k not in rule.clears}
    changed["status"] = rule.to_status
    operation = rule.rollback_operation if task_operation == "ROLLBACK" and rule.rollback_operation else rule.to_operation
    if operation is not None:
        changed["operation"] = operation
    return dict(sorted(changed.items()))


def check_task(action: str, task: dict, subtasks: list[dict]) -> TaskRule:
    """Returns the rule when ACTION is legal for TASK; raises OCP's 400/20003 (or 20004 for a prohibited
    rollback) otherwise. The status is checked first, then the operation, then prohibitRollback."""
    rule = TASK_RULES[action]
    if task["status"] not in rule.from_status:
        raise state_invalid(task["id"], task["status"])
    if task.get("operation") in rule.refused_operations:
        raise state_invalid(task["id"], task["operation"])
    if rule.checks_prohibit_rollback and task_prohibits_rollback(subtasks):
        raise prohibit_rollback(task["id"])
    return rule


def apply_task(action: str, task: dict, subtasks: list[dict]) -> tuple[dict, list[dict]]:
    """(task, subtasks) after ACTION, as new dicts; raises like check_task when it is not legal."""
    rule = check_task(action, task, subtasks)
    new_task = dict(sorted({**task, "operation": rule.to_operation}.items()))
    if action == "retry":
        changed = [apply("retry", s) if s["status"] == "FAILED" and s.get("operation") != "ROLLBACK" else s
                   for s in subtasks]
        return new_task, changed
    pending = {s["id"] for s in subtasks if s["status"] == "PENDING"}
    changed = []
    for s in subtasks:
        if s["status"] == "PENDING":
            changed.append(s)
            continue
        doc = {**s, "operation": "ROLLBACK"}
        if all(d in pending for d in s["downstreams"]):
            doc["status"] = "READY"
            doc.pop("finishTime", None)
        changed.append(dict(sorted(doc.items())))
    return new_task, changed


def set_state(subtask: dict, status: str, operation: str | None, stamp: str, executor: str) -> dict:
    """Forces STATUS (and OPERATION) on a subtask at STAMP (a wire time), adjusting times and executor so the
    invariants still hold: a started status gets a startTime and executor, a finished one a finishTime, others lose
    finishTime; PENDING is a subtask that never ran."""
    doc = dict(subtask)
    if status == "PENDING":
        for key in ("startTime", "finishTime", "executor"):
            doc.pop(key, None)
    if status in STARTED and "startTime" not in doc:
        doc["startTime"] = max(stamp, doc.get("createTime", stamp), key=parse_time)
        doc.setdefault("executor", executor)
    if status in FINISHED:
        if "finishTime" not in doc:
            doc["finishTime"] = max(stamp, doc["startTime"], key=parse_time)
    else:
        doc.pop("finishTime", None)
    doc["status"] = status
    if operation is not None:
        doc["operation"] = operation
    return dict(sorted(doc.items()))
