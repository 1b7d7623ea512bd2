"""Stereo renders of a 1440 px preview: render time per layout, and the route's first request
(render, store, record, redirect) against a cached one (touch, redirect).

    python -m bench.stereo_bench --json docs/results/stereo.json

Direct calls time ``stereo.render`` + ``encode_image`` (JPEG) on a 1440×1080 photo with a
518×389 depth map (the model's output size for it). The route half goes through a TestClient on
the real app with a scratch Postgres database (``DEPTHMILL_TEST_ADMIN_URL``, default the local
server) and local storage in a temp directory; no Ray.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.report import write_json


def percentiles(samples: list[float]) -> dict[str, float]:
    ms = np.asarray(samples) * 1000.0
    return {"n": len(samples), "p50_ms": round(float(np.percentile(ms, 50)), 1),
            "p99_ms": round(float(np.percentile(ms, 99)), 1)}


def scene() -> tuple[np.ndarray, np.ndarray]:
    """A real photo at preview size and a smooth depth with a near blob, at the model's size."""
    from devkit import media_files

    rgb = np.asarray(media_files.photo("coffee").convert("RGB").resize((1440, 1080)))
    y, x = np.mgrid[0:389, 0:518].astype(np.float32)
    depth = y / 389 + np.exp(-(((x - 260) / 80) ** 2 + ((y - 200) / 60) ** 2)) * 2
    return rgb, (depth - depth.min()) / (depth.max() - depth.min())


def direct(rounds: int) -> dict[str, dict]:
    from cluster.media import stereo

    rgb, depth = scene()
    out = {}
    for layout in stereo.LAYOUTS:
        stereo.render(rgb, depth, layout)  # warm
        times = []
        for _ in range(rounds):
            t = time.perf_counter()
            stereo.encode_image(stereo.render(rgb, depth, layout), "jpeg")
            times.append(time.perf_counter() - t)
        out[layout] = percentiles(times)
    return out


def through_the_route(first: int, cached: int) -> dict[str, dict]:
    import io

    from fastapi.testclient import TestClient
    from PIL import Image

    from cluster.config.settings import Settings
    from cluster.media import configure_pillow
    from cluster.storage import keys as storage_keys
    from cluster.work.processing import store_depth_outputs
    from db import depth as depth_maps
    from db import media, queue
    from serve_app.api.main import create_api
    from serve_app.gateway import build_context
    from devkit.factories import new_media
    from devkit.postgres import DatabaseFactory, admin_url

    configure_pillow()
    rgb, depth = scene()
    with tempfile.TemporaryDirectory() as home:
        url, server = admin_url(Path(home))
        factory = DatabaseFactory(url)
        try:
            with factory.database() as database_url:
                settings = Settings(home=Path(home), database_url=database_url, model="tiny")
                app = create_api()
                ctx = build_context(settings)
                app.state.ctx = ctx
                client = TestClient(app)
                item = ctx.db.run(media.insert, new_media("photo"))
                ctx.db.run(queue.enqueue, item.id, "tiny")
                buf = io.BytesIO()
                Image.fromarray(rgb).save(buf, "JPEG", quality=85)
                ctx.storage.put_bytes(storage_keys.preview(item.id), buf.getvalue(), "image/jpeg")
                outputs = store_depth_outputs(ctx.storage, item.id, "tiny", "rev", depth)
                (claimed,) = ctx.db.run(queue.claim_batch, 1, "bench", 30, model_id="tiny")
                ctx.db.run(queue.complete, claimed.lease)
                ctx.db.run(depth_maps.upsert_many, outputs)

                def get(divergence: float) -> float:
                    t = time.perf_counter()
                    r = client.get(f"/api/media/{item.id}/stereo",
                                   params={"layout": "sbs", "divergence": divergence},
                                   follow_redirects=False)
                    elapsed = time.perf_counter() - t
                    assert r.status_code == 307, r.text
                    return elapsed

                grid = [round(0.5 + 0.1 * i, 1) for i in range(first)]
                rendered = [get(d) for d in grid]
                hits = [get(grid[i % len(grid)]) for i in range(cached)]
                client.close()
                ctx.ingest_pool.shutdown()
                ctx.db.close()
        finally:
            factory.drop_template()
            if server is not None:
                server.stop()
    return {"first (render)": percentiles(rendered), "cached (redirect)": percentiles(hits)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="renders per layout")
    parser.add_argument("--first", type=int, default=8, help="distinct first requests")
    parser.add_argument("--cached", type=int, default=100, help="cached requests")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    results = {"direct_render_plus_jpeg_1440": direct(args.rounds),
               "route_sbs_preview": through_the_route(args.first, args.cached)}
    for section, rows in results.items():
        print(f"\n{section}")
        print(f"  {'':20} {'n':>4} {'p50 ms':>8} {'p99 ms':>8}")
        for name, r in rows.items():
            print(f"  {name:20} {r['n']:>4} {r['p50_ms']:>8} {r['p99_ms']:>8}")
    write_json(args.json, {"bench": "stereo", **results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
