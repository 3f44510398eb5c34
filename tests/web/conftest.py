"""The demo page in a real headless Chromium, against the real service.

One ``python -m api.cli serve`` per module (embedded SQLite store, broker and worker) in the
demo auth mode, so the page acts for each browser context's anonymous scope (a cookie).
Every test gets a fresh context: its own scope, quotas and rate limits.  The browser is
Debian's Chromium, driven by Playwright's Python package; without them the tests are skipped
(under CI=true they fail, so CI cannot pass by skipping).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.integration.conftest import (
    ROOT,
    Service,
    _clean_env,
    _free_port,
    _start,
    _stop,
    _wait_ready,
)
from tests.services import require

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = ROOT / "out" / "web"
READY_TIMEOUT_MS = 60_000
NEEDS = ("the web tests need Playwright's Python package (pip install playwright; no "
         "`playwright install`) and Debian's Chromium at /usr/bin/chromium "
         "(apt-get install chromium)")


def _missing() -> str | None:
    """What the browser tests lack, or None."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as error:
        return f"Playwright is not importable: {error}"
    if not CHROMIUM.is_file() or not os.access(CHROMIUM, os.X_OK):
        return f"no executable {CHROMIUM}"
    return None


def _require_browser() -> None:
    require(NEEDS, _missing())


@pytest.fixture(scope="module")
def web_service(tmp_path_factory, built_examples):
    """The real app with its embedded worker on loopback, demo auth, with the real example
    models built."""
    _require_browser()
    data_dir = tmp_path_factory.mktemp("web-service")
    port = _free_port()
    env = _clean_env(data_dir, SNNCONV_AUTH="demo", SNNCONV_EXAMPLES_DIR=str(built_examples))
    logs = [data_dir / "serve.log"]
    processes = [_start(["serve", "--host", "127.0.0.1", "--port", str(port),
                         "--log-level", "warning"], env, logs[0])]
    service = Service("web-demo", f"http://127.0.0.1:{port}", data_dir, processes, logs)
    try:
        _wait_ready(service)
        yield service
    finally:
        for process in processes:
            _stop(process)


@pytest.fixture(scope="module")
def browser():
    _require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM),
                                              args=["--no-sandbox"])
        try:
            yield chromium
        finally:
            chromium.close()


@dataclass
class Web:
    """A page on the service in a fresh browser context, and what the page reported."""

    page: object
    service: Service
    dialogs: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)

    def open(self) -> None:
        """Load the page and wait until it has read the API (its body says data-ready)."""
        from playwright.sync_api import expect

        self.page.goto("/")
        expect(self.page.locator("body")).to_have_attribute("data-ready", "true",
                                                            timeout=READY_TIMEOUT_MS)

    def screenshot(self, name: str) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / name
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def assert_clean(self) -> None:
        """No script error, no Content-Security-Policy violation, no dialog."""
        csp = [text for text in self.console_errors if "Content Security Policy" in text]
        assert not self.page_errors, self.page_errors
        assert not csp, csp
        assert not self.dialogs, self.dialogs


@pytest.fixture
def web(browser, web_service, request):
    viewport = getattr(request, "param", None) or {"width": 1280, "height": 900}
    context = browser.new_context(base_url=web_service.url, viewport=viewport)
    context.set_default_timeout(30_000)
    page = context.new_page()
    watched = Web(page, web_service)

    def on_dialog(dialog) -> None:
        watched.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    page.on("dialog", on_dialog)
    page.on("pageerror", lambda error: watched.page_errors.append(str(error)))
    page.on("console", lambda message: message.type == "error"
            and watched.console_errors.append(message.text))
    try:
        yield watched
    finally:
        context.close()
