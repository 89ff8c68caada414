"""schemathesis over openapi.yaml against the mock: positive and negative cases, every built-in check, with the
mock checking its own responses (strict mode). In process through WSGI, and over HTTP against `ocp-mock serve`.

A longer run (5,000+ cases) is `make fuzz` (see docs/reliability.md)."""

from __future__ import annotations

import os
import tempfile

import pytest
import schemathesis
from hypothesis import settings
from schemathesis.generation import GenerationMode

from conftest import SPEC_PATH
from contracts.checks import RESPONSE_CHECKS, CheckFailure, Exchange, run_check
from contracts.spec import Contract
from mock_server import Config, create_app

EXAMPLES = int(os.environ.get("OCP_FUZZ_EXAMPLES", "80"))
LONG_RUN = "OCP_FUZZ_EXAMPLES" in os.environ  # `make fuzz`: every example goes over HTTP
SENT = {"in-process": 0, "http": 0}


def load(**config):
    schema = schemathesis.openapi.from_path(str(SPEC_PATH))
    schema.config.update(basic_auth=("admin", "admin"), **config)
    schema.config.generation.update(
        modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE], max_examples=EXAMPLES,
    )
    # OCP answers a schema-valid retry of a subtask that is not FAILED with 400 (error code 20003): a business
    # rule, not a validation failure. The contract checks below (ocp_business_rule_400) tell the two apart.
    acceptance = schema.config.checks.positive_data_acceptance
    acceptance.expected_statuses = [*acceptance.expected_statuses, "400"]
    return schema


APP = create_app(Config(db_path=os.path.join(tempfile.mkdtemp(prefix="ocp-fuzz-"), "w.sqlite3"), strict=True))
in_process = load(base_url="http://mock.local")
in_process.app = APP
over_http = load(base_url="http://127.0.0.1:1")  # replaced by the served mock's URL in the test


CONTRACT = Contract.load(SPEC_PATH)


def ocp_checks(case, response) -> None:
    """The contract runner's OCP checks (envelope, time order, enums, business-rule 400s...) on this response."""
    exchange = Exchange.from_schemathesis(case, response, CONTRACT)
    failures = [run_check(check, exchange, CONTRACT) for check in RESPONSE_CHECKS]
    failures = [f for f in failures if isinstance(f, CheckFailure)]
    assert not failures, "\n".join(str(f) for f in failures)


@pytest.fixture(scope="module", autouse=True)
def report_counts():
    yield
    print(f"\nschemathesis cases sent: {SENT['in-process']} in process, {SENT['http']} over HTTP")


@in_process.parametrize()
@settings(deadline=None)
def test_in_process(case):
    SENT["in-process"] += 1
    response = case.call_and_validate()
    ocp_checks(case, response)
    assert APP.extensions["ocp_mock"].violations == []


@over_http.parametrize()
@settings(deadline=None, max_examples=EXAMPLES if LONG_RUN else max(EXAMPLES // 3, 20))
def test_over_http(case, served):
    SENT["http"] += 1
    response = case.call_and_validate(base_url=served)
    ocp_checks(case, response)

