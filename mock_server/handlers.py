"""One function per operationId of openapi.yaml. Each gets typed parameters and returns (status, data)
with data already in wire form; refusals are raised as OcpError. Nothing here touches HTTP."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from . import lifecycle
from .envelope import not_found

if TYPE_CHECKING:
    from .app import Mock

Handler = Callable[["Mock", dict], tuple[int, bytes]]


def retry_subtask(mock: "Mock", params: dict) -> tuple[int, bytes]:
    subtask_id = params["subtaskInstanceId"]
    # OCP does not check that the subtask belongs to params["taskInstanceId"]; neither do we.
    row = mock.store.subtask(subtask_id)
    if row is None:
        raise not_found(subtask_id)
    # Refuse without taking the write lock when the state already says no (the common error path).
    rule = lifecycle.check("retry", subtask_id, row.status, row.operation)
    wire = mock.store.change_subtask(
        subtask_id, lambda doc: lifecycle.apply("retry", doc), task_status=rule.task_status
    )
    if wire is None:  # removed by a concurrent reset
        raise not_found(subtask_id)
    return 200, wire


HANDLERS: dict[str, Handler] = {
    "retrySubtask": retry_subtask,
}
