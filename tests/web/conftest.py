"""Browser tests: Playwright for Python driving Debian's chromium (one browser per session)
against the real running system (gateway, tiny depth model, scheduler on the session's Ray)."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator

import pytest

from devkit.system import running_system, system_settings

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
    """Every console error and uncaught exception of a page, but those a test expects (chromium
    logs each 4xx answer as an error, so a test that sends a bad file says which it expects)."""

    def __init__(self) -> None:
        super().__init__()
        self.expected: list[str] = []

    def watch(self, page) -> None:
        def on_console(message) -> None:
            if message.type == "error" and not any(e in message.text for e in self.expected):
                self.append(f"console: {message.text} @ {message.location}")

        page.on("console", on_console)
        page.on("pageerror", lambda e: self.append(f"uncaught: {e}"))


class PageOpener:
    def __init__(self, browser) -> None:
        self.browser, self.contexts, self.errors = browser, [], ConsoleErrors()

    def __call__(self, **context_options):
        context = self.browser.new_context(**context_options)
        self.contexts.append(context)
        page = context.new_page()
        self.errors.watch(page)
        return page

    def expect_error(self, text: str) -> None:
        self.errors.expected.append(text)


@pytest.fixture
def new_page(browser) -> Iterator[PageOpener]:
    """Opens pages in fresh contexts; fails the test if any of them logged an unexpected error."""
    opener = PageOpener(browser)
    yield opener
    for context in opener.contexts:
        context.close()
    assert not opener.errors, "\n".join(opener.errors)


@pytest.fixture(scope="module")
def web_system(serve_port, database_factory, tmp_path_factory):
    """The whole system; one attempt per item, so a broken item fails at once. Two served
    models, so that the page offers the choice."""
    with database_factory.database() as url:
        settings = system_settings(tmp_path_factory.mktemp("home"), url, serve_port, max_attempts=1,
                                   models=["tiny", "tiny:2"])
        with running_system(settings) as client:
            yield client, settings, f"http://127.0.0.1:{serve_port}"


def wait_until(predicate, timeout: float = 120, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")
