"""The web app with a large library, in Debian's chromium: time to the first screen of
thumbnails, to the next page while scrolling, from a click in the grid to the first 3D frame of
a 12 MP photo (the viewer loads the preview and the 16-bit depth, never the original), and the
viewer's frame time. The gateway's FastAPI app serves it on a port of its own (no Ray: the page
needs only the API and storage); the library is media rows with real thumbnails, and one 12 MP
photo processed for real with the `tiny` model.

    python -m bench.web_bench --items 10000 --json docs/results/web.json [--screenshots docs/images]
"""

from __future__ import annotations

import argparse
import io
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import psycopg
import uvicorn
from PIL import Image

from bench.queue_bench import admin_url, drop_database, fresh_database
from bench.report import write_json
from cluster.config.settings import Settings
from cluster.media.decode import thumbnail_webp
from cluster.runtime import free_port
from cluster.storage import keys as storage_keys
from cluster.work.processing import process_item
from db import depth as depth_maps
from db import queue
from db.migrate import migrate
from serve_app.api.main import create_api
from serve_app.gateway import build_context

CHROMIUM_ARGS = ["--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--ignore-gpu-blocklist"]


def scene(width: int, height: int, seed: int) -> Image.Image:
    """A photo-like picture: smooth colour fields and texture, so JPEG sizes are realistic."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([np.sin(x / (37 + 5 * c) + seed) * np.cos(y / (53 + 3 * c)) for c in range(3)], -1)
    noise = rng.normal(0, 0.15, (height // 8 + 1, width // 8 + 1, 3)).repeat(8, 0).repeat(8, 1)
    pixels = (base + noise[:height, :width]) * 80 + 128
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def fill_library(url: str, settings: Settings, items: int) -> None:
    """``items`` media, taken a few per day over the years before now, each with a thumbnail."""
    with psycopg.connect(url, autocommit=True) as conn:
        ids = [r[0] for r in conn.execute(
            """
            INSERT INTO media_items (kind, storage_key, sha256, mime, bytes, original_name, taken_at, width, height)
            SELECT CASE WHEN g %% 12 = 0 THEN 'video' ELSE 'photo' END, 'originals/' || g,
                   encode(sha256(g::text::bytea), 'hex'), 'image/jpeg', 3000000, 'IMG_' || g || '.jpg',
                   now() - (g * interval '7 hours'), 4000, 3000
            FROM generate_series(1, %(n)s) g
            RETURNING id
            """, {"n": items}).fetchall()]
    from cluster.storage import storage_from_settings

    storage = storage_from_settings(settings)
    thumbs = [thumbnail_webp(scene(400, 300, seed)) for seed in range(16)]
    for i, media_id in enumerate(ids):
        storage.put_bytes(storage_keys.thumbnail(media_id), thumbs[i % len(thumbs)], "image/webp")


def process_big_photo(client: httpx.Client, settings: Settings, ctx) -> str:
    """A 12 MP photo uploaded through the API and processed by the real pipeline (tiny model)."""
    from cluster.model.core import DepthEstimator

    buf = io.BytesIO()
    scene(4000, 3000, 99).save(buf, "JPEG", quality=90)
    r = client.post("/api/media/upload", files=[("files", ("big-12mp.jpg", buf.getvalue()))])
    r.raise_for_status()
    media_id = r.json()["results"][0]["media_id"]
    estimator = DepthEstimator("tiny", cache_dir=settings.model_cache_dir)
    (claimed,) = ctx.db.run(queue.claim_batch, 1, "web-bench", 300, model_id="tiny")
    outcome = process_item(claimed, settings, ctx.storage, estimator.predict)
    assert outcome.status == "completed", outcome.error
    ctx.db.run(queue.complete, claimed.lease)
    ctx.db.run(depth_maps.upsert_many, outcome.outputs)
    return media_id


def serve(app, port: int) -> tuple[uvicorn.Server, threading.Thread]:
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        thread.join(0.05)
    return server, thread


FIRST_SCREEN = """() => {
  const tiles = [...document.querySelectorAll('a.tile img')].filter((img) => {
    const r = img.getBoundingClientRect(); return r.top < innerHeight && r.bottom > 0; });
  return tiles.length >= 8 && tiles.every((img) => img.complete && img.naturalWidth > 0);
}"""


def measure(base: str, big_id: str, runs: int, screenshots: Path | None) -> dict:
    from playwright.sync_api import sync_playwright

    first, next_page, to_3d, frame_ms = [], [], [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=CHROMIUM_ARGS)
        for run in range(runs):
            context = browser.new_context(viewport={"width": 1280, "height": 800})
            page = context.new_page()
            start = time.perf_counter()
            page.goto(base + "/")
            page.wait_for_function(FIRST_SCREEN, polling=20)
            first.append((time.perf_counter() - start) * 1000)
            if screenshots and run == 0:
                page.screenshot(path=screenshots / "library.png")
            shown = page.locator("a.tile").count()
            start = time.perf_counter()
            page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
            page.wait_for_function(f"document.querySelectorAll('a.tile').length > {shown}", polling=20)
            next_page.append((time.perf_counter() - start) * 1000)
            page.evaluate("window.scrollTo(0, 0)")
            page.evaluate("depthmill.library.reset({ order: 'uploaded' })")
            tile = page.locator(f'a.tile[data-id="{big_id}"]')
            tile.wait_for()
            page.evaluate("performance.clearMarks(); window.__clicked = performance.now()")
            tile.click()
            page.wait_for_function("performance.getEntriesByName('depthmill:first-3d-frame').length > 0", polling=10)
            to_3d.append(page.evaluate(
                "performance.getEntriesByName('depthmill:first-3d-frame')[0].startTime - window.__clicked"))
            frame_ms.append(page.evaluate("""() => new Promise((done) => {
                const times = []; const tick = (t) => { times.push(t);
                  if (times.length < 61) requestAnimationFrame(tick);
                  else { const d = times.slice(1).map((v, i) => v - times[i]); d.sort((a, b) => a - b);
                         done(d[Math.floor(d.length / 2)]); } };
                requestAnimationFrame(tick); })"""))
            if screenshots and run == 0:
                box = page.locator("#viewer canvas").bounding_box()
                page.mouse.move(box["x"] + box["width"] * 0.8, box["y"] + box["height"] * 0.3)
                page.wait_for_timeout(800)
                page.screenshot(path=screenshots / "viewer.png")
            context.close()
        browser.close()
    return {"first_screen_ms": first, "next_page_ms": next_page, "click_to_3d_ms": to_3d,
            "viewer_frame_ms": frame_ms}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--screenshots", type=Path, help="save the library and viewer here")
    args = parser.parse_args(argv)
    if shutil.which("chromium") is None:
        parser.error("chromium is not installed: apt-get install chromium")
    admin, embedded = admin_url()
    url = fresh_database(admin, "depthmill_web_bench")
    home = Path(tempfile.mkdtemp(prefix="depthmill-web-bench-"))
    port = free_port()
    server = None
    try:
        migrate(url)
        settings = Settings(home=home, database_url=url, model="tiny", port=port)
        app = create_api(None, settings.max_upload_bytes)
        app.state.ctx = ctx = build_context(settings)
        fill_library(url, settings, args.items)
        server, thread = serve(app, port)
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=120) as client:
            big_id = process_big_photo(client, settings, ctx)
        if args.screenshots:
            args.screenshots.mkdir(parents=True, exist_ok=True)
        results = measure(base, big_id, args.runs, args.screenshots)
    finally:
        if server is not None:
            server.should_exit = True
        drop_database(admin, url)
        shutil.rmtree(home, ignore_errors=True)
        if embedded is not None:
            embedded.stop()
    rows = {k: (statistics.median(v), max(v)) for k, v in results.items()}
    print(f"web app, {args.items:,} items, {args.runs} runs (chromium headless, SwiftShader WebGL)")
    print(f"{'measure':<22}{'median ms':>12}{'worst ms':>12}")
    for name, (median, worst) in rows.items():
        print(f"{name:<22}{median:>12.0f}{worst:>12.0f}")
    write_json(args.json, {"items": args.items, "runs": args.runs, "samples_ms": results,
                           "median_ms": {k: v[0] for k, v in rows.items()},
                           "worst_ms": {k: v[1] for k, v in rows.items()}})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
