"""With API keys set, the page asks for one, says when it is wrong, and works with the right one."""

from __future__ import annotations

import pytest

from devkit.system import running_system, system_settings

pytestmark = pytest.mark.slow

KEY = "the-right-key-0123456789"


@pytest.fixture(scope="module")
def keyed_system(serve_port, database_factory, tmp_path_factory):
    with database_factory.database() as url:
        settings = system_settings(tmp_path_factory.mktemp("home"), url, serve_port, api_keys=[KEY])
        with running_system(settings) as client:
            yield client, f"http://127.0.0.1:{serve_port}"


def test_a_wrong_key_is_refused_with_a_message_and_the_right_one_works(keyed_system, new_page):
    client, base = keyed_system
    new_page.expect_error("status of 401")  # chromium logs each refused request
    page = new_page()
    page.goto(base + "/")
    dialog = page.locator("#key-dialog")
    dialog.wait_for()
    assert "needs an API key" in page.locator("#key-reason").inner_text()
    page.fill("#key-input", "wrong-key")
    page.click("#key-dialog button[type=submit]")
    page.locator("#key-reason", has_text="refused").wait_for()
    assert "invalid API key" in page.locator("#key-reason").inner_text()
    page.fill("#key-input", KEY)
    page.click("#key-dialog button[type=submit]")
    page.locator("#count", has_text="0 of 0 items").wait_for()
    assert not dialog.is_visible()
    # The key is kept for the session: a reload does not ask again.
    page.reload()
    page.locator("#count", has_text="items").wait_for()
    assert not dialog.is_visible()


def test_a_key_that_may_not_act_is_told_so_and_may_be_kept_or_changed(keyed_system, new_page):
    client, base = keyed_system
    admin = {"Authorization": f"Bearer {KEY}"}
    reader = client.post("/api/keys", json={"name": "viewer", "scopes": ["read"]},
                         headers=admin).json()["key"]
    new_page.expect_error("status of 401")
    new_page.expect_error("status of 403")
    page = new_page()
    page.goto(base + "/")
    page.locator("#key-dialog").wait_for()
    page.fill("#key-input", reader)
    page.click("#key-dialog button[type=submit]")
    page.locator("#count", has_text="items").wait_for()  # reading is what this key may do
    page.click("#queue-button")
    page.locator("#queue-panel [data-part=toggle]", has_text="Pause").wait_for()

    page.click("#queue-panel [data-part=toggle]")
    reason = page.locator("#key-reason", has_text="may not do this")
    reason.wait_for()
    assert "scope 'admin'" in reason.inner_text()
    page.click("#key-keep")  # keep the reader: the action is dropped and said so
    page.locator("#toast", has_text="scope 'admin'").wait_for()
    assert client.get("/api/queue/worker/status", headers=admin).json()["paused"] is False

    page.click("#queue-panel [data-part=toggle]")
    reason.wait_for()
    page.fill("#key-input", KEY)
    page.click("#key-dialog button[type=submit]:not(#key-keep)")
    page.locator("#toast", has_text="worker paused").wait_for()
    assert client.get("/api/queue/worker/status", headers=admin).json()["paused"] is True
    client.post("/api/queue/worker/start", headers=admin)
