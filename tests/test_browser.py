"""A real browser against `ocp-mock serve`: headless Chromium (Debian's /usr/bin/chromium, installed by
scripts/install-browser.sh) driven by Playwright, which is never asked to download a browser of its own.

- /docs loads with no failed request and no console error, shows retrySubtask, and "try it out" (authorised with
  admin/admin) gets the mock's answer.
- A page from a second origin calls the mock with fetch() and Basic credentials (CORS), and reads its errors.

Without Chromium or Playwright the tests skip with the reason, except under CI=true, where they fail, so CI
cannot pass by skipping them.
"""

from __future__ import annotations

import functools
import http.server
import os
import threading

import pytest
import requests

from conftest import Served, free_port, retry_path

try:
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover - reported by the browser fixture
    sync_playwright = None
    PlaywrightError = Exception

CHROMIUM = os.environ.get("OCP_MOCK_CHROMIUM", "/usr/bin/chromium")  # Debian's; the variable is for other systems
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
IN_CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")
TIMEOUT_MS = 30_000

FRONT_END = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>front end</title><link rel="icon" href="data:,"></head>
<body><pre id="out">pending</pre>
<script>
async function callMock(path, user, password) {
  const mock = new URLSearchParams(location.search).get("mock");
  const headers = user ? {Authorization: "Basic " + btoa(user + ":" + password)} : {};
  try {
    const response = await fetch(mock + path, {method: "POST", headers});
    return {status: response.status, body: await response.json(),
            wwwAuthenticate: response.headers.get("WWW-Authenticate")};
  } catch (error) {
    return {blocked: String(error)};
  }
}
window.callMock = callMock;
callMock("/api/v2/tasks/instances/1000/subtasks/10001/retry", "admin", "admin")
  .then(result => { document.getElementById("out").textContent = JSON.stringify(result); });
</script></body></html>
"""


def _unavailable(reason: str):
    message = f"{reason}; install it with `bash scripts/install-browser.sh` and `pip install -e '.[test]'`"
    if IN_CI:
        pytest.fail(f"CI=true, so the browser tests may not be skipped: {message}", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="module")
def chromium(tmp_path_factory):
    """A fresh headless Chromium (its own user-data-dir) as a Playwright browser context."""
    if not os.access(CHROMIUM, os.X_OK):
        _unavailable(f"{CHROMIUM} is missing")
    if sync_playwright is None:
        _unavailable("the playwright package is missing")
    playwright = sync_playwright().start()
    try:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=CHROMIUM, headless=True,
            args=CHROMIUM_ARGS)
        context.set_default_timeout(TIMEOUT_MS)
        try:
            yield context
        finally:
            context.close()
    finally:
        playwright.stop()


@pytest.fixture(scope="module")
def front_end(tmp_path_factory):
    """A second origin: a tiny http.server serving the front-end page on another port."""
    folder = tmp_path_factory.mktemp("front-end")
    (folder / "index.html").write_text(FRONT_END, encoding="utf-8")
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def mock_url(front_end):
    """`ocp-mock serve` on a free port, allowing the front end's origin."""
    server = Served("--workers", "1", "--quiet", "--cors-origin", f"http://127.0.0.1:{front_end}")
    try:
        yield server.base
    finally:
        server.stop()


@pytest.fixture
def page(chromium, mock_url):
    requests.post(mock_url + "/__mock/reset", timeout=5).raise_for_status()
    page = chromium.new_page()
    problems: list[str] = []
    page.on("requestfailed", lambda r: problems.append(f"request failed: {r.method} {r.url}: {r.failure}"))
    page.on("response", lambda r: r.status >= 400 and problems.append(f"HTTP {r.status}: {r.request.method} {r.url}"))
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("console", lambda m: m.type == "error" and problems.append(f"console error: {m.text}"))
    page.problems = problems
    try:
        yield page
    finally:
        page.close()


def test_docs_page_loads_and_try_it_out_retries_the_subtask(page, mock_url):
    page.goto(mock_url + "/docs", wait_until="networkidle")
    operation = page.locator("#operations-Task-retrySubtask")
    operation.wait_for()
    assert "Retry a subtask" in operation.inner_text()
    assert page.problems == [], "the docs page must load every asset from the mock"
    assert page.locator(".servers select").input_value() == mock_url, "try it out calls the mock that served the page"

    page.click("button.authorize")
    page.fill("#auth-basic-username", "admin")
    page.fill("#auth-basic-password", "admin")
    page.click(".auth-container button.authorize")
    page.click(".auth-container button.btn-done")

    operation.locator(".opblock-summary").click()
    operation.locator("button.try-out__btn").click()
    operation.locator('input[placeholder="taskInstanceId"]').fill("1000")
    operation.locator('input[placeholder="subtaskInstanceId"]').fill("10001")
    with page.expect_response(lambda r: r.url.endswith(retry_path())) as answer:
        operation.locator("button.execute").click()
    assert answer.value.status == 200
    assert answer.value.request.headers["authorization"] == "Basic YWRtaW46YWRtaW4="

    live = operation.locator(".live-responses-table tbody")
    live.wait_for()
    assert live.locator(".response-col_status").first.inner_text().strip() == "200"
    shown = live.locator(".response-col_description").first.inner_text()
    assert '"status": "READY"' in shown and '"operation": "RETRY"' in shown
    assert page.problems == []
    state = requests.get(mock_url + "/__mock/subtasks/10001", timeout=5).json()["data"]["subtask"]
    assert state["status"] == "READY", "the call from the page changed the mock's world"


def test_a_page_on_another_origin_calls_the_mock_with_fetch_and_basic(page, mock_url, front_end):
    page.goto(f"http://127.0.0.1:{front_end}/?mock={mock_url}", wait_until="networkidle")
    page.wait_for_function("document.getElementById('out').textContent !== 'pending'")
    result = page.evaluate("JSON.parse(document.getElementById('out').textContent)")
    assert result.get("status") == 200, result
    assert result["body"]["data"]["status"] == "READY"

    # The page can read the mock's errors too: the envelope and the exposed WWW-Authenticate header.
    unauthenticated = page.evaluate("callMock('/api/v2/tasks/instances/1000/subtasks/10001/retry')")
    assert unauthenticated["status"] == 401 and unauthenticated["body"]["error"]["code"] == 0
    assert unauthenticated["wwwAuthenticate"].startswith("Basic")
    again = page.evaluate("callMock('/api/v2/tasks/instances/1000/subtasks/10001/retry', 'admin', 'admin')")
    assert again["status"] == 400 and again["body"]["error"]["code"] == 20003
    unexpected = [p for p in page.problems if not (p.startswith("HTTP 4") or "status of 4" in p)]
    assert unexpected == [], "only the two 4xx answers asked for"


def test_an_origin_that_is_not_allowed_is_blocked_by_the_browser(page, mock_url, front_end):
    page.goto(f"http://localhost:{front_end}/?mock={mock_url}", wait_until="networkidle")
    page.wait_for_function("document.getElementById('out').textContent !== 'pending'")
    result = page.evaluate("JSON.parse(document.getElementById('out').textContent)")
    assert "blocked" in result, result
    state = requests.get(mock_url + "/__mock/subtasks/10001", timeout=5).json()["data"]["subtask"]
    assert state["status"] == "FAILED", "the preflight failed, so the retry was never sent"
