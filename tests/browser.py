"""Browser tests of the staff admin and customer pages (issue #12): headless Chromium, axe, PNGs.

A page test drives Debian's chromium (`/usr/bin/chromium`, which .ci/run installs) through
Playwright's sync API, scans the page with axe-core (vendored: tests/vendor/README.md) and saves
screenshots for a person to look at. The fixtures are registered for the whole suite by
`pytest_plugins` in tests/conftest.py:

    def test_sign_in_page(page, screenshot):
        with live_server(make_app()) as server:
            page.goto(server.url + "/admin/sign-in")
            page.get_by_label("Email").fill("ada@example.test")
            for width in each_width(page):  # 1280, then 360 px wide
                screenshot(page, "sign-in")  # sign-in-1280.png, sign-in-360.png
                assert_accessible(page)

- `browser` (session): one Chromium for the run; `page` (per test): a fresh context, so no
  cookies or storage leak between tests, 1280×800, with the page's CSP enforced as a user's
  browser would.
- `screenshot(page, name) -> Path` writes `<name>-<width>.png` into the run's temporary directory,
  or into `$BROWSER_SCREENSHOTS` when that is set (kept, for a person to look through).
- `axe_violations(page) -> list[dict]`: axe's violations of impact serious or critical against the
  WCAG 2.0/2.1 A and AA rules; `assert_accessible(page)` fails with them listed.
- `live_server(app)`: an aiohttp Application served on 127.0.0.1 from a thread of its own.

Why the sync API: the suite runs pytest-asyncio with a loop per test, and an async Playwright
is bound to the loop that started it, so it could not outlive one test (a Chromium launch per
test). The sync API runs its own loop, which lets one browser serve the whole session. Its cost:
while it lives it marks its loop as the thread's running loop between calls, so no asyncio code
can run on the main thread after it starts. Hence: browser tests are plain `def` tests that use no
async fixtures; the server under test runs on its own loop in a thread (`live_server`, whose
`call()` also runs a coroutine there, e.g. to seed the database) or as a process
(tests/server_process.py); and `pytest_collection_modifyitems` below moves every test that uses
the browser after all the others, so the async tests have run before Chromium starts.

Why axe is injected by `page.evaluate` and not `add_script_tag` or `bypass_csp`: the pages send a
strict CSP (`default-src 'none'` with nonces), which blocks an injected <script>. Playwright's
evaluate goes through the DevTools protocol, which the page's CSP does not govern, so axe runs on
the page exactly as served, and CSP stays enforced in every test: a style or script the CSP
blocks for users is blocked in the tests and in the screenshots too, which `bypass_csp=True`
would hide.

Chromium's background connections (updates, sync, QUIC probes) are switched off: the machine's
closed network refuses them. Pages only ever load from 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from aiohttp import web
from playwright.sync_api import Browser, Page, Route, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",  # root in CI; the pages under test are our own
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
INSTALL_HINT = (
    "install Debian's chromium: `apt-get install -y chromium` (bash .ci/run does it). "
    "Do not run `playwright install`: its browser download is not reachable here."
)

WIDE = 1280
NARROW = 360  # a small phone
HEIGHT = 800
WIDTHS = (WIDE, NARROW)

AXE_JS = Path(__file__).resolve().parent / "vendor" / "axe.min.js"
AXE_VERSION = "4.14.1"
AXE_SHA256 = "29348999450cdf2849a8e70b7912fc2da85a849da39c0d0d5394f51d4a9ed95c"
# axe's tags for the WCAG 2.0 and 2.1 success criteria of levels A and AA.
AXE_TAGS = ("wcag2a", "wcag2aa", "wcag21a", "wcag21aa")
SEVERE = ("serious", "critical")

SCREENSHOTS_ENV = "BROWSER_SCREENSHOTS"

_launch_seconds: float | None = None  # how long the session's browser took to start


def _uses_browser(item: pytest.Item) -> bool:
    return "browser" in getattr(item, "fixturenames", ())


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Browser tests run last, in their collected order: once the sync Playwright has started,
    no asyncio loop can run on the main thread (see the module docstring)."""
    items.sort(key=_uses_browser)  # stable: only moves the browser tests, as a block, to the end


def pytest_terminal_summary(terminalreporter) -> None:
    if _launch_seconds is not None:
        terminalreporter.write_line(f"browser: chromium started in {_launch_seconds:.2f} s")


def chromium_executable(path: Path = CHROMIUM) -> str:
    """`path` if it is an executable, else a failure (not a skip) that says how to install it."""
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(f"browser tests need Chromium at {path}: {INSTALL_HINT}", pytrace=False)
    return str(path)


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    """One headless Chromium for the session (Playwright's sync API)."""
    global _launch_seconds
    executable = chromium_executable()
    started = time.perf_counter()
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, args=list(CHROMIUM_ARGS))
        _launch_seconds = time.perf_counter() - started
        try:
            yield chromium
        finally:
            chromium.close()


LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def _is_loopback(url: str) -> bool:
    """True for http(s) and ws(s) URLs to this machine, and for the schemes that need no
    network (data:, blob:, about:)."""
    parts = urlsplit(url)
    if parts.scheme in ("data", "blob", "about"):
        return True
    return parts.scheme in ("http", "https", "ws", "wss") and parts.hostname in LOOPBACK_HOSTS


@pytest.fixture
def offsite_requests() -> list[str]:
    """URLs off this machine that the test's page tried to load (`page` blocks them)."""
    return []


@pytest.fixture
def page(browser: Browser, offsite_requests: list[str]) -> Iterator[Page]:
    """A page in a fresh browser context (no cookies or storage from other tests), 1280×800.

    Requests to anything but 127.0.0.1 (a CDN font, say) are aborted, and the test fails at
    teardown naming them: the pages must work from this server alone, and tests never reach the
    internet."""
    context = browser.new_context(viewport={"width": WIDE, "height": HEIGHT})

    def guard(route: Route) -> None:
        if _is_loopback(route.request.url):
            route.fallback()
        else:
            offsite_requests.append(route.request.url)
            route.abort("blockedbyclient")

    context.route("**/*", guard)
    try:
        yield context.new_page()
    finally:
        context.close()
    assert not offsite_requests, f"the page requested URLs off this machine: {offsite_requests}"


def each_width(page: Page, widths: tuple[int, ...] = WIDTHS) -> Iterator[int]:
    """Resizes `page` to each width in turn (800 px high) and yields it, so a test's checks run
    at each; the viewport is put back afterwards."""
    before = page.viewport_size
    try:
        for width in widths:
            page.set_viewport_size({"width": width, "height": HEIGHT})
            yield width
    finally:
        if before is not None:
            page.set_viewport_size(before)


@pytest.fixture(scope="session")
def screenshot_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """$BROWSER_SCREENSHOTS (created if need be, kept), else `screenshots/` in the run's
    temporary directory (pytest keeps the last three runs' under /tmp/pytest-of-$USER)."""
    chosen = os.environ.get(SCREENSHOTS_ENV)
    if chosen:
        directory = Path(chosen)
        directory.mkdir(parents=True, exist_ok=True)
        return directory
    return tmp_path_factory.mktemp("screenshots", numbered=False)


@pytest.fixture
def screenshot(screenshot_dir: Path) -> Callable[[Page, str], Path]:
    """`screenshot(page, name)` saves the whole page as `<name>-<width>.png`; returns the path."""

    def take(page: Page, name: str) -> Path:
        size = page.viewport_size
        width = size["width"] if size else WIDE
        path = screenshot_dir / f"{name}-{width}.png"
        page.screenshot(path=path, full_page=True)
        return path

    return take


def axe_source() -> str:
    """The vendored axe.min.js, checked against the digest in tests/vendor/README.md."""
    data = AXE_JS.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != AXE_SHA256:
        raise AssertionError(f"{AXE_JS} is not axe-core {AXE_VERSION} (sha256 {digest})")
    return data.decode()


_RUN_AXE = """async ([tags, impacts]) => {
  const results = await axe.run(document, {
    runOnly: {type: "tag", values: tags},
    resultTypes: ["violations"],
  });
  return results.violations.filter((violation) => impacts.includes(violation.impact));
}"""


def axe_violations(
    page: Page,
    *,
    tags: tuple[str, ...] = AXE_TAGS,
    impacts: tuple[str, ...] = SEVERE,
) -> list[dict[str, Any]]:
    """axe's violations on the page as it is now, of the given impacts (serious or critical) and
    rules (WCAG 2.0/2.1 A and AA): each a dict with `id`, `impact`, `help`, `helpUrl` and `nodes`
    (each with `target` and `html`). Injected through the DevTools protocol, so a strict CSP on
    the page neither blocks axe nor is switched off for it."""
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.evaluate(axe_source())
    if page.evaluate("axe.version") != AXE_VERSION:
        raise AssertionError("the page defines its own `axe`; the scan would not be ours")
    return page.evaluate(_RUN_AXE, [list(tags), list(impacts)])


def format_violations(violations: list[dict[str, Any]]) -> str:
    """One line per violation and one per element it was found on, for assertion messages."""
    lines = []
    for violation in violations:
        lines.append(f"{violation['impact']}: {violation['id']}: {violation['help']}")
        lines.extend(f"    {node['target']} {node['html']}" for node in violation["nodes"])
    return "\n".join(lines)


def assert_accessible(page: Page) -> None:
    """Fails, listing them, if axe finds serious or critical WCAG 2.1 A/AA violations."""
    violations = axe_violations(page)
    assert not violations, f"axe on {page.url}:\n{format_violations(violations)}"


class LiveServer:
    """An aiohttp Application served on a free port of 127.0.0.1 by its own event loop in a
    thread: the browser tests cannot run one on the main thread (see the module docstring)."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._runner = web.AppRunner(app, access_log=None)
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def call(self, coroutine: Coroutine[Any, Any, Any], timeout: float = 30) -> Any:
        """Runs `coroutine` on the server's loop and returns its result: for work on objects
        bound to that loop (the app's database pool, say), e.g. seeding data."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def start(self) -> None:
        self._thread.start()
        self.call(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        self.call(site.start())
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"

    def stop(self) -> None:
        if self._thread.is_alive():
            try:
                self.call(self._runner.cleanup())
            finally:
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._thread.join(timeout=30)
        self._loop.close()


@contextlib.contextmanager
def live_server(app: web.Application) -> Iterator[LiveServer]:
    """Serves `app` on 127.0.0.1 for the block (`server.url` has no trailing slash)."""
    server = LiveServer(app)
    try:
        server.start()
        yield server
    finally:
        server.stop()
