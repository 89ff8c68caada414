"""ocp-contract: checks any server against the OCP task API contract (openapi.yaml).

- spec.py       the contract as data: operations, schemas, enums, parameter validity
- checks.py     OCP's rules as small checks on one exchange; no I/O, registers nothing
- st_checks.py  the same checks registered with schemathesis (on import)
- runner.py     the six phases of a run (fixtures found or given), returning a Result
- result.py     Result, CheckResult, Finding; redaction and curl lines
- report.py     JSON, JUnit XML and Markdown writers, the terminal summary
- cli.py        `ocp-contract run`
- pytest_plugin.py, test_conformance.py   `pytest --pyargs contracts --base-url URL`
"""
