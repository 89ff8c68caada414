"""schemathesis' stateful phase over openapi.yaml's links against the mock, in process and in strict mode: it walks
real flows (list -> task -> its actions and its first subtask's log -> back to the task) with every built-in check,
while the mock's clock runs fast so subtasks move between the calls."""

from __future__ import annotations

import os
import tempfile
from collections import Counter

import schemathesis
from hypothesis import HealthCheck, settings

from conftest import SPEC_PATH
from mock_server import Config, create_app

APP = create_app(Config(db_path=os.path.join(tempfile.mkdtemp(prefix="ocp-stateful-"), "w.sqlite3"), strict=True,
                        clock_speed=100))
SCHEMA = schemathesis.openapi.from_path(str(SPEC_PATH))
SCHEMA.config.update(basic_auth=("admin", "admin"), base_url="http://mock.local")
# A schema-valid action on a subtask in the wrong state is OCP's 400 (error code 20003), not a validation failure.
SCHEMA.config.checks.positive_data_acceptance.expected_statuses = [
    *SCHEMA.config.checks.positive_data_acceptance.expected_statuses, "400"]
SCHEMA.app = APP
CALLS: Counter = Counter()


class Walk(SCHEMA.as_state_machine()):
    def after_call(self, response, case):
        CALLS[(case.operation.definition.raw["operationId"], response.status_code)] += 1
        body = response.json()
        assert body["status"] == response.status_code and body["successful"] is (response.status_code < 300)


def test_links_drive_real_flows_through_the_whole_family():
    Walk.run(settings=settings(max_examples=40, stateful_step_count=8, deadline=None, derandomize=True,
                               suppress_health_check=list(HealthCheck)))
    assert APP.extensions["ocp_mock"].violations == []
    reached = {op for op, status in CALLS if status in (200, 400, 404)}
    assert reached == {"listTaskInstances", "getTaskInstance", "retryTask", "rollbackTask", "retrySubtask",
                       "skipSubtask", "cancelSubtask", "getSubtaskLog"}, CALLS
    assert CALLS[("getTaskInstance", 200)] and CALLS[("getSubtaskLog", 200)]
