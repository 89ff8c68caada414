"""The lifecycle rules, as pure functions, over every subtask of many seeded worlds."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mock_server import lifecycle
from mock_server.envelope import OcpError
from mock_server.spec import load_spec
from mock_server.config import SPEC_PATH
from mock_server.world import build_world, check_invariants, format_time

SPEC = load_spec(str(SPEC_PATH))
STATUSES = SPEC.enum("SubtaskState")
OPERATIONS = SPEC.enum("SubtaskOperation")
NOW = datetime(2026, 1, 1, 12, 0, tzinfo=timezone(timedelta(hours=8)))


def with_replaced(subtasks: list[dict], new: dict) -> list[dict]:
    return [new if s["id"] == new["id"] else s for s in subtasks]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1))
def test_retry_is_legal_exactly_for_failed_non_rollback_subtasks(seed):
    world = build_world(seed, task_count=12)
    for sub in world.subtasks:
        legal = sub["status"] == "FAILED" and sub.get("operation") != "ROLLBACK"
        if not legal:
            with pytest.raises(OcpError) as refused:
                lifecycle.apply("retry", sub)
            assert (refused.value.status, refused.value.code) == (400, 20003)
            continue
        after = lifecycle.apply("retry", sub)
        assert after["status"] == "READY" and after["operation"] == "RETRY"
        assert "finishTime" not in after
        assert {k: v for k, v in after.items() if k not in ("status", "operation")} == {
            k: v for k, v in sub.items() if k not in ("status", "operation", "finishTime")
        }
        assert list(after) == sorted(after)
        assert check_invariants(with_replaced(world.subtasks, after)) == []


def test_retry_is_not_legal_twice():
    sub = next(s for s in build_world().subtasks if s["id"] == 10001)
    after = lifecycle.apply("retry", sub)
    with pytest.raises(OcpError, match="in the READY state"):
        lifecycle.apply("retry", after)


def test_rules_only_use_states_the_spec_knows():
    for rule in lifecycle.RULES.values():
        assert set(rule.from_status) | {rule.to_status} <= set(STATUSES)
        named = set(rule.refused_operations) | {rule.to_operation, rule.rollback_operation}
        assert named - {None} <= set(OPERATIONS)  # None: the rule keeps the operation
    for rule in lifecycle.TASK_RULES.values():
        assert set(rule.from_status) <= set(SPEC.enum("TaskState"))
        assert set(rule.refused_operations) | {rule.to_operation} <= set(SPEC.enum("TaskOperation"))


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**16), pick=st.integers(0, 10_000), status=st.sampled_from(STATUSES),
       operation=st.sampled_from((None, *OPERATIONS)))
def test_set_state_keeps_each_subtask_consistent(seed, pick, status, operation):
    """Forcing any state keeps a subtask's own invariants (times in order, executor once started, ...).
    Whether its neighbours allow that state is the admin API's check, tested over HTTP."""
    world = build_world(seed, task_count=5)
    sub = world.subtasks[pick % len(world.subtasks)]
    forced = lifecycle.set_state(sub, status, operation, format_time(NOW), "10.0.0.9")
    assert forced["status"] == status
    assert forced.get("operation") == (operation or sub.get("operation"))
    own = [p for p in check_invariants([{**forced, "upstreams": [], "downstreams": []}])]
    assert own == [], own
