"""Browser tests: Playwright for Python driving Debian's chromium (one browser per session)
against the real running system (gateway, tiny depth model, scheduler on the session's Ray)."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator

import pytest

from tests.utils.system import running_system, system_settings

CHROMIUM_ARGS = [
    # Headless chromium has no GPU: WebGL2 through SwiftShader, the software renderer.
    "--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--ignore-gpu-blocklist",
]


@pytest.fixture(scope="session")
def browser():
    executable = shutil.which("chromium")
    if executable is None:
        pytest.fail("chromium is not installed: `apt-get install chromium` (.ci/run installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        browser.devices = playwright.devices
        yield browser
        browser.close()


class ConsoleErrors(list):
    """Every console error and uncaught exception of a page."""

    def watch(self, page) -> None:
        page.on("console", lambda m: m.type == "error" and self.append(f"console: {m.text} @ {m.location}"))
        page.on("pageerror", lambda e: self.append(f"uncaught: {e}"))


@pytest.fixture
def new_page(browser) -> Iterator:
    """Opens pages in fresh contexts; fails the test if any of them logged an error."""
    contexts, errors = [], ConsoleErrors()

    def open_page(**context_options):
        context = browser.new_context(**context_options)
        contexts.append(context)
        page = context.new_page()
        errors.watch(page)
        return page

    yield open_page
    for context in contexts:
        context.close()
    assert not errors, "\n".join(errors)


@pytest.fixture(scope="module")
def web_system(serve_port, database_factory, tmp_path_factory):
    """The whole system; one attempt per item, so a broken item fails at once."""
    with database_factory.database() as url:
        settings = system_settings(tmp_path_factory.mktemp("home"), url, serve_port, max_attempts=1)
        with running_system(settings) as client:
            yield client, settings, f"http://127.0.0.1:{serve_port}"


def wait_until(predicate, timeout: float = 120, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")
