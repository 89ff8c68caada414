"""Which operation is legal in which state, and what it changes. Pure functions over SubtaskInstance dicts.

The rules are data (RULES); `apply` is the one place a subtask's state changes for an API action, and
`set_state` the one place the admin API forces a state while keeping the world's invariants.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from .envelope import state_invalid
from .world import FINISHED, STARTED, format_time


@dataclass(frozen=True)
class Rule:
    action: str
    from_status: frozenset
    refused_operations: frozenset
    to_status: str
    to_operation: str
    clears: tuple = ()
    task_status: str | None = None  # what the owning task becomes


RULES = {
    "retry": Rule(
        action="retry",
        from_status=frozenset({"FAILED"}),
        refused_operations=frozenset({"ROLLBACK"}),
        to_status="READY",
        to_operation="RETRY",
        clears=("finishTime",),
        task_status="RUNNING",
    ),
}


def check(action: str, subtask_id, status: str, operation: str | None) -> Rule:
    """Returns the rule when ACTION is legal from (status, operation); raises OCP's 400/20003 otherwise."""
    rule = RULES[action]
    if status not in rule.from_status:
        raise state_invalid(subtask_id, status)
    if operation in rule.refused_operations:  # OCP names the operation in the message's state slot
        raise state_invalid(subtask_id, operation)
    return rule


def apply(action: str, subtask: dict) -> dict:
    """The subtask after ACTION, as a new dict; raises OCP's 400/20003 when the action is not legal."""
    rule = check(action, subtask["id"], subtask["status"], subtask.get("operation"))
    changed = {k: v for k, v in subtask.items() if k not in rule.clears}
    changed["status"] = rule.to_status
    changed["operation"] = rule.to_operation
    return dict(sorted(changed.items()))


def set_state(subtask: dict, status: str, operation: str | None, now: datetime, executor: str) -> dict:
    """Forces STATUS (and OPERATION) on a subtask, adjusting times and executor so the invariants still hold:
    a started status gets a startTime and executor, a finished one a finishTime, others lose finishTime;
    PENDING is a subtask that never ran."""
    doc = dict(subtask)
    stamp = format_time(now)
    if status == "PENDING":
        for key in ("startTime", "finishTime", "executor"):
            doc.pop(key, None)
    if status in STARTED and "startTime" not in doc:
        doc["startTime"] = max(stamp, doc.get("createTime", stamp), key=_instant)
        doc.setdefault("executor", executor)
    if status in FINISHED:
        if "finishTime" not in doc:
            doc["finishTime"] = max(stamp, doc["startTime"], key=_instant)
    else:
        doc.pop("finishTime", None)
    doc["status"] = status
    if operation is not None:
        doc["operation"] = operation
    return dict(sorted(doc.items()))


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text)
