"""Report writers. Each reads a Result and writes one format; none decides anything.

- JSON: the stable shape documented in docs/contract-runner.md (REPORT_FORMAT names its version).
- JUnit XML: one test case per check, a <failure> per failed check, <skipped> per skipped one.
- Markdown: a page a person reads: the conformance score, the checks, the findings grouped by check.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

from .result import FAILED, PASSED, SKIPPED, CheckResult, Result

REPORT_FORMAT = "ocp-contract-report/1"
_SOURCES = {"fixture": "fixture semantics", "ocp": "OCP rules", "spec": "spec validation", "schemathesis": "schemathesis"}


def _checks(result: Result) -> list[CheckResult]:
    return sorted(result.checks.values(), key=lambda c: (list(_SOURCES).index(c.source) if c.source in _SOURCES else 9, c.name))


def as_dict(result: Result) -> dict:
    return {
        "format": REPORT_FORMAT,
        "target": result.target,
        "spec": {"path": result.spec_path, "sha256": result.spec_sha256},
        "seed": result.seed,
        "outcome": result.outcome,
        "exit_code": result.exit_code,
        "reason": result.reason,
        "score": None if result.score is None else round(result.score, 4),
        "totals": {
            "checks": len(result.checks),
            "passed": result.count(PASSED),
            "failed": result.count(FAILED),
            "skipped": result.count(SKIPPED),
            "findings": sum(c.failures for c in result.checks.values()),
            "requests": result.requests,
            "seconds": round(result.seconds, 3),
            "cases_per_second": round(result.cases_per_second, 1),
        },
        "phases": [{"name": p.name, "requests": p.requests, "seconds": round(p.seconds, 3)} for p in result.phases],
        "fixtures": result.fixtures,
        "notes": list(result.notes),
        "checks": [
            {
                "name": c.name,
                "source": c.source,
                "description": c.description,
                "status": c.status,
                "applied": c.applied,
                "failures": c.failures,
                "skip_reason": c.skip_reason,
                "findings": [f.as_dict() for f in c.findings],
            }
            for c in _checks(result)
        ],
    }


def write_json(result: Result, path: str | Path) -> None:
    Path(path).write_text(json.dumps(as_dict(result), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def finding_text(f) -> str:
    times = f" (x{f.occurrences})" if f.occurrences > 1 else ""
    return (
        f"[{f.phase}]{times}\nExpected: {f.expected}\nReceived: {f.received}\n"
        f"Response: HTTP {f.status} {f.body_excerpt}\nRequest:  {f.request['method']} {f.request['url']}\n"
        f"Reproduce: {f.curl}\n"
    )


def write_junit(result: Result, path: str | Path) -> None:
    suite = ET.Element(
        "testsuite",
        name="ocp-contract",
        tests=str(len(result.checks) + (1 if result.reason else 0)),
        failures=str(result.count(FAILED)),
        errors="1" if result.reason else "0",
        skipped=str(result.count(SKIPPED)),
        time=f"{result.seconds:.3f}",
    )
    props = ET.SubElement(suite, "properties")
    for name, value in (("target", result.target), ("spec_sha256", result.spec_sha256), ("seed", result.seed)):
        ET.SubElement(props, "property", name=name, value=str(value))
    if result.reason:
        case = ET.SubElement(suite, "testcase", classname="ocp-contract", name="could_not_test")
        ET.SubElement(case, "error", message=result.reason).text = result.reason
    for check in _checks(result):
        case = ET.SubElement(suite, "testcase", classname=f"ocp-contract.{check.source}", name=check.name)
        if check.status == FAILED:
            message = f"{check.failures} response(s) broke it: {check.findings[0].expected}" if check.findings else ""
            ET.SubElement(case, "failure", message=message).text = "\n".join(map(finding_text, check.findings))
        elif check.status == SKIPPED:
            ET.SubElement(case, "skipped", message=check.skip_reason or "did not apply to any response")
    ET.ElementTree(suite).write(path, encoding="utf-8", xml_declaration=True)


def _score_line(result: Result) -> str:
    if result.score is None:
        return "Conformance score: n/a (no check ran)"
    run = result.count(PASSED) + result.count(FAILED)
    return f"Conformance score: {result.score:.1%} ({result.count(PASSED)} of {run} checks passed)"


def markdown(result: Result) -> str:
    verdict = {"conformant": "conformant", "not_conformant": "NOT conformant", "could_not_test": "could not test"}
    lines = [
        f"# OCP contract report: {result.target}",
        "",
        f"**{verdict[result.outcome]}** (exit {result.exit_code})" + (f": {result.reason}" if result.reason else ""),
        "",
        f"**{_score_line(result)}**",
        "",
        f"- spec: `{result.spec_path}` (sha256 `{result.spec_sha256}`)",
        f"- seed: `{result.seed}` (pass `--seed {result.seed}` to replay the generated requests)",
        f"- {result.requests} requests in {result.seconds:.1f} s ({result.cases_per_second:.0f} cases/s)",
        *[f"- note: {note}" for note in result.notes],
        "",
        "| check | source | status | responses judged | failures |",
        "|---|---|---|---|---|",
        *[
            f"| `{c.name}` | {_SOURCES.get(c.source, c.source)} | {c.status} | {c.applied} | {c.failures} |"
            for c in _checks(result)
        ],
    ]
    failed = [c for c in _checks(result) if c.status == FAILED]
    if failed:
        lines += ["", "## Findings", "", "Curl lines read passwords from `$OCP_PASSWORD` / `$OCP_VIEWER_PASSWORD`."]
    for check in failed:
        lines += ["", f"### `{check.name}` ({check.failures} failing response(s))", "", check.description]
        for f in check.findings:
            times = f" ({f.occurrences} times)" if f.occurrences > 1 else ""
            lines += [
                "",
                f"- **Expected:** {f.expected}",
                f"- **Received:** {f.received}{times}",
                f"- **Response:** HTTP {f.status}: `{_inline(f.body_excerpt)}`",
                f"- **Request** ({f.phase}): `{f.request['method']} {f.request['url']}`",
                "",
                "  ```sh",
                f"  {f.curl}",
                "  ```",
            ]
    return "\n".join(lines) + "\n"


def _inline(text: str) -> str:
    return text.replace("`", "'").replace("\n", " ")


def write_markdown(result: Result, path: str | Path) -> None:
    Path(path).write_text(markdown(result), encoding="utf-8")


def summary(result: Result) -> str:
    """The end-of-run text for a terminal."""
    lines = []
    for check in _checks(result):
        if check.status == FAILED:
            lines.append(f"FAILED  {check.name}: {check.failures} failing response(s)")
            for f in check.findings[:2]:
                lines += [f"        Expected: {f.expected}", f"        Received: {f.received}", f"        {f.curl}"]
    lines += [f"note: {note}" for note in result.notes]
    if result.reason:
        lines.append(f"ocp-contract: could not test: {result.reason}")
    else:
        lines.append(
            f"ocp-contract: {result.outcome.replace('_', ' ')}: {_score_line(result).lower()}; "
            f"{result.count(SKIPPED)} skipped; {result.requests} requests in {result.seconds:.1f} s "
            f"({result.cases_per_second:.0f} cases/s), seed {result.seed}"
        )
    return "\n".join(lines)
