"""One function per operationId of openapi.yaml. Each gets typed parameters and returns (status, data)
with data already in wire form (None: OCP's NoDataResponse); refusals are raised as OcpError. Nothing here touches
HTTP. Every handler first lets the engine apply what is due (runtime.tick), so it answers from the world as it is now.
"""

from __future__ import annotations

import functools
import math
import re
from typing import TYPE_CHECKING, Callable

import orjson

from . import lifecycle
from .envelope import dump_data, invalid_parameters, not_found
from .runtime import wire_task
from .spec import SubError
from .world import parse_time

if TYPE_CHECKING:
    from .app import Mock
    from .spec import Spec

Handler = Callable[["Mock", dict], tuple[int, "bytes | None"]]
# The shape of `sort`; which properties it may name is the spec's pattern (checked before the handler runs).
_SORT = re.compile(r"(\w+)(?:,(asc|desc))?\Z", re.IGNORECASE)


def ticking(handler: Handler) -> Handler:
    @functools.wraps(handler)
    def run(mock: "Mock", params: dict):
        mock.runtime.tick()
        return handler(mock, params)

    return run


# ------------------------------------------------------------------------------------------- subtasks

def _subtask_action(action: str, answers_subtask: bool) -> Handler:
    def handle(mock: "Mock", params: dict):
        subtask_id = params["subtaskInstanceId"]
        # OCP does not check that the subtask belongs to params["taskInstanceId"]; neither do we.
        row = mock.store.subtask(subtask_id)
        if row is None:
            raise not_found(subtask_id)
        # Refuse without taking the write lock when the state already says no (the common error path).
        lifecycle.check(action, subtask_id, row.status, row.operation)
        doc = mock.runtime.subtask_action(subtask_id, action, row.task_id)
        return 200, mock.store.dumped(("s", subtask_id), doc) if answers_subtask else None

    handle.__name__ = f"{action}_subtask"
    return handle


retry_subtask = _subtask_action("retry", answers_subtask=True)
skip_subtask = _subtask_action("skip", answers_subtask=False)
cancel_subtask = _subtask_action("cancel", answers_subtask=False)


def get_subtask_log(mock: "Mock", params: dict):
    subtask_id = params["subtaskInstanceId"]
    log = mock.runtime.subtask_log(subtask_id)
    if log is None:
        raise not_found(subtask_id)
    return 200, dump_data({"log": log})


# ---------------------------------------------------------------------------------------------- tasks

def get_task_instance(mock: "Mock", params: dict):
    task_id = params["taskInstanceId"]

    def wire() -> bytes | None:
        task = mock.runtime.task_instance(task_id)
        return None if task is None else dump_data(task)

    data = mock.store.memo(("task", task_id), wire)
    if data is None:
        raise not_found(task_id)
    return 200, data


def _task_action(action: str) -> Handler:
    def handle(mock: "Mock", params: dict):
        task_id = params["taskInstanceId"]
        task = mock.runtime.task_instance(task_id)
        if task is None:
            raise not_found(task_id)
        lifecycle.check_task(action, task, task["subtasks"])  # refuse without the write lock
        after = mock.runtime.task_action(task_id, action)
        return 200, dump_data(wire_task(after.task, [s.doc for s in after.subs.values()]))

    handle.__name__ = f"{action}_task"
    return handle


retry_task = _task_action("retry")
rollback_task = _task_action("rollback")


_SHAPES: dict[int, tuple] = {}


def _list_shape(spec: "Spec") -> tuple[tuple[str, ...], tuple[str, ...], frozenset]:
    """From the spec: the properties of a list row, of a row's subtask, and the task properties that are times."""
    shape = _SHAPES.get(id(spec))
    if shape is None:
        times = frozenset(name for name, schema in spec.schema("TaskInstance")["properties"].items()
                          if schema.get("$ref") == "#/components/schemas/DateTime")
        shape = _SHAPES[id(spec)] = (tuple(spec.schema("BasicTaskInstance")["properties"]),
                                     tuple(spec.schema("BasicSubtaskInstance")["properties"]), times)
    return shape


def list_task_instances(mock: "Mock", params: dict):
    key = ("list", *sorted(params.items()))
    return mock.store.memo(key, lambda: _list_task_instances(mock, params))


def _list_task_instances(mock: "Mock", params: dict):
    row_fields, sub_fields, time_fields = _list_shape(mock.spec)
    shape = _SORT.match(params["sort"])
    if shape is None:
        raise invalid_parameters([SubError("listTaskInstances", "sort", params["sort"],
                                           "must be a task property, optionally followed by ,asc or ,desc")])
    key, direction = shape.group(1), (shape.group(2) or "asc").lower()

    stored, subtasks = mock.store.tasks()
    tasks = [orjson.loads(doc) for doc in stored]
    if "name" in params:
        needle = params["name"].casefold()
        tasks = [t for t in tasks if needle in t["name"].casefold()]
    for name in ("status", "type"):
        if name in params:
            tasks = [t for t in tasks if t[name] == params[name]]

    def order(task: dict):
        if key not in task:
            return (0, 0)
        value = task[key]
        return (1, parse_time(value) if key in time_fields else value)

    tasks.sort(key=lambda t: t["id"])  # ties: ascending id (the sort below is stable, also when reversed)
    tasks.sort(key=order, reverse=direction == "desc")

    page, size = params["page"], params["size"]
    chosen = tasks[(page - 1) * size: page * size]
    rows = []
    for task in chosen:
        row = {k: task[k] for k in row_fields if k in task and k != "subtasks"}
        row["subtasks"] = [{k: s[k] for k in sub_fields if k in s}
                           for s in (orjson.loads(d) for d in subtasks.get(task["id"], []))]
        rows.append(row)
    data = {
        "contents": rows,
        "page": {"number": page, "size": size, "totalElements": len(tasks),
                 "totalPages": math.ceil(len(tasks) / size)},
    }
    return 200, dump_data(data)


HANDLERS: dict[str, Handler] = {
    operation_id: ticking(handler)
    for operation_id, handler in {
        "listTaskInstances": list_task_instances,
        "getTaskInstance": get_task_instance,
        "retryTask": retry_task,
        "rollbackTask": rollback_task,
        "retrySubtask": retry_subtask,
        "skipSubtask": skip_subtask,
        "cancelSubtask": cancel_subtask,
        "getSubtaskLog": get_subtask_log,
    }.items()
}
