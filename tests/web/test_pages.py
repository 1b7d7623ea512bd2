"""The web app against the real running system, in chromium."""

from __future__ import annotations

import io
import shutil

import pytest
from PIL import Image, ImageChops, ImageStat

from cluster.storage import storage_from_settings
from devkit import media_files
from tests.web.conftest import wait_until

pytestmark = pytest.mark.slow


def upload(client, name: str, content: bytes) -> str:
    r = client.post("/api/media/upload", files=[("files", (name, content))])
    assert r.status_code == 200, r.text
    return r.json()["results"][0]["media_id"]


def wait_done(client, media_id: str, status: str = "completed") -> dict:
    return wait_until(lambda: (d := client.get(f"/api/media/{media_id}").json())["status"] == status and d,
                      what=f"{media_id} to be {status}")


@pytest.fixture(scope="module")
def photos(web_system):
    client, _, _ = web_system
    ids = [upload(client, f"photo-{i}.jpg", media_files.jpeg_bytes(media_files.photo().rotate(i * 90)))
           for i in range(2)]
    for media_id in ids:
        wait_done(client, media_id)
    return ids


def shot(locator) -> Image.Image:
    return Image.open(io.BytesIO(locator.screenshot())).convert("RGB")


def test_library_shows_processed_items_with_their_thumbnails(web_system, photos, new_page):
    _, _, base = web_system
    page = new_page()
    page.goto(base + "/")
    for media_id in photos:
        img = page.locator(f'a.tile[data-id="{media_id}"] img')
        img.wait_for()
        page.wait_for_function("(el) => el.complete && el.naturalWidth > 0", arg=img.element_handle())
        assert page.locator(f'a.tile[data-id="{media_id}"]').get_attribute("data-status") == "completed"
    assert "items" in page.locator("#count").inner_text()
    # The day heading of the timeline is there.
    assert page.locator(".day h2").count() >= 1


def test_uploading_through_the_page_adds_an_item_that_reaches_done_without_a_reload(
        web_system, new_page, tmp_path):
    _, _, base = web_system
    path = tmp_path / "dropped.jpg"
    path.write_bytes(media_files.jpeg_bytes(media_files.photo().resize((320, 240))))
    page = new_page()
    page.goto(base + "/")
    page.locator("#count").filter(has_text="items").wait_for()
    page.set_input_files("#file-input", str(path))
    page.locator("#upload-list li[data-outcome=accepted]").wait_for()
    tile = page.locator('a.tile[aria-label^="dropped.jpg"]')
    tile.wait_for()
    page.locator('a.tile[aria-label^="dropped.jpg"][data-status=completed] img').wait_for(timeout=120_000)
    # The served models to choose from: this upload is the second one's.
    client = web_system[0]
    page.select_option("#model", "tiny:2")
    second = tmp_path / "second.jpg"
    second.write_bytes(media_files.jpeg_bytes(media_files.photo().resize((240, 320))))
    page.set_input_files("#file-input", str(second))
    page.locator('a.tile[aria-label^="second.jpg"]').wait_for()
    (item,) = client.get("/api/queue/items", params={"model_id": "tiny:2"}).json()["items"]
    assert client.get(f"/api/media/{item['media_id']}").json()["original_name"] == "second.jpg"
    page.select_option("#model", "")
    # A file the server refuses is shown with its reason.
    bad = tmp_path / "notes.txt"
    bad.write_text("not a photo")
    new_page.expect_error("status of 415")
    page.set_input_files("#file-input", str(bad))
    rejected = page.locator("#upload-list li[data-outcome=rejected] .outcome")
    rejected.wait_for()
    assert "not a supported" in rejected.inner_text() or "unsupported" in rejected.inner_text().lower()


def test_viewer_draws_the_photo_in_3d_and_follows_the_mouse(web_system, photos, new_page):
    _, _, base = web_system
    page = new_page()
    page.goto(f"{base}/view/{photos[0]}")  # a deep link, straight into a new tab
    page.wait_for_function("performance.getEntriesByName('depthmill:first-3d-frame').length > 0")
    canvas = page.locator("#viewer canvas")
    box = canvas.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.wait_for_timeout(600)
    before = shot(canvas)
    assert max(hi - lo for lo, hi in before.getextrema()) > 50, "the canvas is blank"
    page.mouse.move(box["x"] + 5, box["y"] + 5)
    page.wait_for_timeout(800)
    after = shot(canvas)
    moved = ImageStat.Stat(ImageChops.difference(before, after).convert("L")).mean[0]
    assert moved > 1.0, f"the view did not follow the mouse (mean change {moved:.2f})"
    # The flat views are a key away, and every output can be downloaded.
    page.keyboard.press("d")
    assert page.locator("#viewer img[data-part=flat]").is_visible()
    page.keyboard.press("3")
    assert canvas.is_visible()
    downloads = page.locator("[data-part=downloads] a")
    names = downloads.evaluate_all("links => links.map((a) => a.textContent)")
    assert {"Original", "Depth map (16-bit PNG)", "Depth, coloured (WebP)"} <= set(names)
    # Stereo renders are made on request and saved under the name players recognise.
    page.locator("[data-part=downloads]").evaluate("(ul) => ul.closest('details').open = true")
    with page.expect_download() as download:
        page.get_by_role("button", name="Stereo sbs", exact=True).click()
    assert download.value.suggested_filename == "photo-0_SBS.jpg"
    saved = Image.open(download.value.path())
    assert saved.format == "JPEG" and saved.size == (1024, 512)  # two 512 px views side by side
    # Without a headset the VR button says why instead of failing.
    assert page.locator("[data-part=vr]").is_disabled()
    assert page.locator("[data-part=vr-note]").inner_text()


def test_viewer_steps_through_the_library_with_the_keyboard(web_system, photos, new_page):
    _, _, base = web_system
    page = new_page()
    page.goto(base + "/")
    first = page.locator("a.tile").first
    first.wait_for()
    first_id = first.get_attribute("data-id")
    second_id = page.locator("a.tile").nth(1).get_attribute("data-id")
    first.click()
    page.wait_for_url(f"**/view/{first_id}")
    page.keyboard.press("ArrowRight")
    page.wait_for_url(f"**/view/{second_id}")
    page.keyboard.press("ArrowLeft")
    page.wait_for_url(f"**/view/{first_id}")
    page.keyboard.press("Escape")
    page.wait_for_url(base + "/")
    assert page.locator("#library").is_visible()


def test_a_video_plays_as_moving_3d(web_system, new_page):
    client, _, base = web_system
    media_id = upload(client, "clip.mp4", media_files.video_bytes(seconds=2.0, fps=10))
    wait_done(client, media_id)
    page = new_page()
    page.goto(f"{base}/view/{media_id}")
    page.wait_for_function("performance.getEntriesByName('depthmill:first-3d-frame').length > 0")
    canvas = page.locator("#viewer canvas")
    first = shot(canvas)
    assert max(hi - lo for lo, hi in first.getextrema()) > 30

    def changed() -> bool:
        return ImageStat.Stat(ImageChops.difference(first, shot(canvas)).convert("L")).mean[0] > 0.5

    # The picture moves with the video; on a busy machine the browser's software video decode
    # and WebGL may take a while between frames, so the change is waited for, not timed.
    state = "({t: document.querySelector('#viewer video')?.currentTime, " \
            "paused: document.querySelector('#viewer video')?.paused})"
    try:
        wait_until(changed, timeout=15, what="the 3D view to move with the video")
    except AssertionError as e:
        raise AssertionError(f"{e}; the video: {page.evaluate(state)}") from None


def test_queue_panel_retry_brings_a_failed_item_back(web_system, new_page):
    client, settings, base = web_system
    storage = storage_from_settings(settings)
    client.post("/api/queue/worker/stop")
    media_id = upload(client, "broken.jpg", media_files.jpeg_bytes(media_files.photo().rotate(45)))
    original = storage.path(client.get(f"/api/media/{media_id}").json()["queue"][0] and
                            _storage_key(client, media_id))
    aside = original.with_suffix(".aside")
    shutil.move(original, aside)  # its original is gone: processing fails
    client.post("/api/queue/worker/start")
    wait_done(client, media_id, "failed")
    shutil.move(aside, original)

    page = new_page()
    page.goto(base + "/")
    page.click("#queue-button")
    row = page.locator("#queue-panel [data-part=failed] li", has_text=media_id[:8])
    row.wait_for()
    assert row.locator(".info").inner_text()  # its last_error
    row.get_by_role("button", name="Retry").click()
    wait_done(client, media_id)
    page.locator(f'a.tile[data-id="{media_id}"][data-status=completed]').wait_for(timeout=60_000)


def _storage_key(client, media_id: str) -> str:
    return client.get(f"/api/media/{media_id}").json()["urls"]["original"].split("/api/files/")[1].split("?")[0]


def test_pause_and_resume_from_the_queue_panel(web_system, new_page):
    client, _, base = web_system
    page = new_page()
    page.goto(base + "/")
    page.click("#queue-button")
    toggle = page.locator("#queue-panel [data-part=toggle]")
    toggle.filter(has_text="Pause").wait_for()
    toggle.click()
    wait_until(lambda: client.get("/api/queue/worker/status").json()["paused"], what="pause")
    toggle.filter(has_text="Resume").wait_for()
    toggle.click()
    wait_until(lambda: not client.get("/api/queue/worker/status").json()["paused"], what="resume")


def test_phone_sized_screen_reads_without_sideways_scrolling(web_system, photos, browser, new_page):
    _, _, base = web_system
    page = new_page(**{**browser.devices["Pixel 7"], "viewport": {"width": 360, "height": 740}})
    page.goto(base + "/")
    page.locator("a.tile img").first.wait_for()
    assert page.evaluate("document.documentElement.scrollWidth") <= 360
    page.goto(f"{base}/view/{photos[1]}")
    page.wait_for_function("performance.getEntriesByName('depthmill:first-3d-frame').length > 0")
    box = page.locator("#viewer canvas").bounding_box()
    assert box["width"] <= 360 and box["height"] > 200


def test_tiles_follow_the_queue_live_through_the_event_stream(web_system, new_page):
    """Added, queued, done with its thumbnail, deleted: each shown with no polling at all (the
    page polls only while its stream is down), so the stream did it."""
    client, _, base = web_system
    page = new_page()
    polled = []
    page.on("request", lambda r: "/api/media/status" in r.url and polled.append(r.url))
    page.goto(base + "/")
    page.locator("#count").filter(has_text="items").wait_for()
    page.wait_for_function("window.depthmill.live.up")
    page.wait_for_timeout(500)  # the one refresh a stream's opening makes
    polled.clear()
    client.post("/api/queue/worker/stop")
    try:
        media_id = upload(client, "live.jpg", media_files.jpeg_bytes(media_files.photo().rotate(30)))
        page.locator(f'a.tile[data-id="{media_id}"][data-status=queued]').wait_for(timeout=10_000)
    finally:
        client.post("/api/queue/worker/start")
    page.locator(f'a.tile[data-id="{media_id}"][data-status=completed] img').wait_for(timeout=60_000)
    assert client.delete(f"/api/media/{media_id}").status_code in (200, 204)
    page.locator(f'a.tile[data-id="{media_id}"]').wait_for(state="detached", timeout=10_000)
    assert polled == []
