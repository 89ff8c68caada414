"""What a run found, as data: per-check status and findings. Reports and the CLI only read this.

A finding shows the request with credentials redacted and a curl line that reproduces it: the configured
users' passwords become `$OCP_PASSWORD` / `$OCP_VIEWER_PASSWORD`, any other known secret `***`.
"""

from __future__ import annotations

import base64
import binascii
import shlex
from dataclasses import dataclass, field

from .checks import CheckFailure, Exchange

PASSED, FAILED, SKIPPED = "passed", "failed", "skipped"
CONFORMANT, NOT_CONFORMANT, COULD_NOT_TEST = "conformant", "not_conformant", "could_not_test"
EXIT_CODES = {CONFORMANT: 0, NOT_CONFORMANT: 1, COULD_NOT_TEST: 2}
MAX_FINDINGS_PER_CHECK = 5
_NOISE_HEADERS = {"user-agent", "accept", "accept-encoding", "connection", "content-length", "host"}


@dataclass(frozen=True)
class Secrets:
    """The passwords a report must never show, and the env var a curl line uses for each user."""

    users: dict[str, tuple[str, str]] = field(default_factory=dict)  # user -> (password, env var)

    def curl_auth(self, user: str, password: str) -> str:
        known = self.users.get(user)
        if known and known[0] == password:
            return f'-u "{user}:${known[1]}"'
        if password in self.hidden():
            return f"-u {shlex.quote(user + ':***')}"
        return f"-u {shlex.quote(user + ':' + password)}"

    def hidden(self) -> set[str]:
        return {password for password, _ in self.users.values() if password}

    def redact(self, text: str) -> str:
        """TEXT (an Authorization value that is not Basic) with every known password masked."""
        for secret in self.hidden():
            text = text.replace(secret, "***")
        return text


@dataclass
class Finding:
    check: str
    phase: str
    expected: str
    received: str
    status: int | None
    body_excerpt: str
    request: dict  # method, url, headers (credentials redacted)
    curl: str
    occurrences: int = 1

    def as_dict(self) -> dict:
        return {
            "check": self.check,
            "phase": self.phase,
            "expected": self.expected,
            "received": {"message": self.received, "status": self.status, "body_excerpt": self.body_excerpt},
            "request": self.request,
            "curl": self.curl,
            "occurrences": self.occurrences,
        }


@dataclass
class CheckResult:
    name: str
    source: str  # "fixture", "ocp", "spec" or "schemathesis"
    description: str
    applied: int = 0  # responses (or fixture requests) the check judged
    failures: int = 0  # of those, how many broke it
    findings: list[Finding] = field(default_factory=list)  # distinct ones, at most MAX_FINDINGS_PER_CHECK
    skip_reason: str | None = None

    @property
    def status(self) -> str:
        if self.failures:
            return FAILED
        return PASSED if self.applied else SKIPPED

    def add(self, finding: Finding) -> None:
        self.failures += 1
        for known in self.findings:
            if (known.expected, known.received) == (finding.expected, finding.received):
                known.occurrences += 1
                return
        if len(self.findings) < MAX_FINDINGS_PER_CHECK:
            self.findings.append(finding)


@dataclass
class PhaseStat:
    name: str
    requests: int = 0
    seconds: float = 0.0


@dataclass
class Result:
    target: str
    spec_path: str
    spec_sha256: str
    seed: int | None
    outcome: str = CONFORMANT
    reason: str | None = None  # why the run could not test, one line
    checks: dict[str, CheckResult] = field(default_factory=dict)
    phases: list[PhaseStat] = field(default_factory=list)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    fixtures: dict | None = None  # the ids the fixture checks used, and how the runner came by them

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.outcome]

    @property
    def requests(self) -> int:
        return sum(p.requests for p in self.phases)

    @property
    def cases_per_second(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def count(self, status: str) -> int:
        return sum(1 for c in self.checks.values() if c.status == status)

    @property
    def score(self) -> float | None:
        """Checks passed / checks run (skipped ones are not run)."""
        run = self.count(PASSED) + self.count(FAILED)
        return self.count(PASSED) / run if run else None

    def finish(self) -> "Result":
        if self.outcome != COULD_NOT_TEST:
            self.outcome = NOT_CONFORMANT if self.count(FAILED) else CONFORMANT
        return self


def finding_for(failure: CheckFailure, ex: Exchange, secrets: Secrets) -> Finding:
    return Finding(
        check=failure.check,
        phase=ex.request.phase,
        expected=failure.expected,
        received=failure.received,
        status=ex.status,
        body_excerpt=ex.excerpt(),
        request=redacted_request(ex.request.method, ex.request.url, ex.request.headers, secrets),
        curl=curl_line(ex.request.method, ex.request.url, ex.request.headers, secrets),
    )


def _basic(value: str) -> tuple[str, str] | None:
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, sep, password = base64.b64decode(token.strip(), validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    return (user, password) if sep else None


def redacted_request(method: str, url: str, headers: dict, secrets: Secrets) -> dict:
    shown = {}
    for name, value in headers.items():
        if name.lower() in _NOISE_HEADERS or name.lower().startswith("x-schemathesis"):
            continue
        if name.lower() == "authorization":
            creds = _basic(value)
            value = f"Basic {creds[0]}:***" if creds else secrets.redact(value)
        shown[name] = value
    return {"method": method, "url": url, "headers": shown}


def curl_line(method: str, url: str, headers: dict, secrets: Secrets, body: bytes | None = None) -> str:
    parts = ["curl", "-sS", "-X", method]
    for name, value in headers.items():
        if name.lower() in _NOISE_HEADERS or name.lower().startswith("x-schemathesis"):
            continue
        creds = _basic(value) if name.lower() == "authorization" else None
        if creds:
            parts.append(secrets.curl_auth(*creds))
        else:
            shown = secrets.redact(value) if name.lower() == "authorization" else value
            parts += ["-H", shlex.quote(f"{name}: {shown}")]
    if body:
        parts += ["--data-binary", shlex.quote(body.decode("utf-8", "replace"))]
    parts.append(shlex.quote(url))
    return " ".join(parts)
