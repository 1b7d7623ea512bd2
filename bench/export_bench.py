"""Export throughput: the pure export function in one process per core against the Ray Data
export job, on the same photos (their depth made without a model), same layouts, same machine.

    python -m bench.export_bench --json bench/results/export.json [--photos 48] [--layout sbs]

Uses the Postgres at DEPTHMILL_TEST_ADMIN_URL / 127.0.0.1:5432 (or an embedded one), local
storage and export directories in a temp directory, and a local Ray cluster of --cores CPUs.
Each figure is wall clock from start to the last file, so the job's includes starting its actors
and reading the selection.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import ray
from PIL import ImageOps

from bench.queue_bench import admin_url, drop_database, fresh_database
from bench.report import write_json
from cluster.config.settings import Settings
from cluster.ingest import ingest_file
from cluster.runtime import use_node_env
from cluster.media import configure_pillow, exports
from cluster.media.probe import MediaLimits
from cluster.storage import storage_from_settings
from cluster.work.exports import export_stored
from cluster.work.processing import store_depth_outputs
from db import depth
from db.connection import Database
from db.migrate import migrate
from pipelines.export import build_parser, run
from devkit import media_files


def seed(settings: Settings, root: Path, photos: int) -> list[dict]:
    """Photos of 1024x768 with a depth map of the model's working size (518x392), stored as
    processing stores them; what the process-pool path needs to export each."""
    storage = storage_from_settings(settings)
    limits = MediaLimits.from_settings(settings)
    base = [media_files.photo(n) for n in ("astronaut", "chelsea", "coffee")]
    yy, xx = np.mgrid[0:392, 0:518]
    items = []
    with Database(settings.database_url, max_size=2) as db:
        for i in range(photos):
            img = ImageOps.fit(base[i % 3].rotate(i, expand=True), (1024, 768))
            # Rotations repeat after 360 photos; a corner pixel keeps each one its own content
            # (ingest keeps one item per content).
            img.putpixel((0, 0), (i % 256, i // 256 % 256, 0))
            path = media_files.write(root, f"photo_{i:04d}.jpg", media_files.jpeg_bytes(img))
            item = ingest_file(path, db=db, storage=storage, settings=settings, limits=limits).media
            d = (np.sin(xx / (20 + i)) + yy / 392).astype(np.float32)
            maps = store_depth_outputs(storage, item.id, settings.model, None, d)
            db.run(depth.upsert_many, maps)
            items.append({"media_id": str(item.id), "name": item.original_name,
                          "original_key": item.storage_key,
                          "keys": {m.format: m.storage_key for m in maps}})
    return items


_worker: dict = {}


def _init(settings: Settings, out: str, layouts: tuple[str, ...]) -> None:
    configure_pillow()
    _worker.update(storage=storage_from_settings(settings),
                   target=exports.LocalTarget(Path(out)), layouts=layouts)


def _export_one(item: dict) -> int:
    done = export_stored(_worker["storage"], _worker["target"],
                         stem=exports.stem_for(item["name"], item["media_id"], disambiguate=False),
                         kind="photo", media_id=item["media_id"],
                         original_key=item["original_key"], keys=item["keys"],
                         layouts=_worker["layouts"])
    return sum(d.written for d in done)


def process_pool(settings: Settings, items: list[dict], out: Path, layouts, cores: int) -> float:
    started = time.perf_counter()
    with ProcessPoolExecutor(cores, initializer=_init, initargs=(settings, str(out), layouts)) as pool:
        written = sum(pool.map(_export_one, items, chunksize=2))
    elapsed = time.perf_counter() - started
    assert written == len(items) * (2 + len(layouts)), written
    return len(items) / elapsed


def ray_data(settings: Settings, photos: int, out: Path, layouts, workers: int) -> float:
    started = time.perf_counter()
    summary = run(settings, build_parser().parse_args(
        ["--to", str(out), "--layout", ",".join(layouts), "--workers", str(workers),
         "--batch-size", "4"]))
    elapsed = time.perf_counter() - started
    assert summary["items"] == photos and summary["failed"] == 0, summary
    return photos / elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=48)
    parser.add_argument("--layout", default="sbs", help="layouts to export (comma-separated)")
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    layouts = exports.parse_layouts(args.layout)
    configure_pillow()
    admin, server = admin_url()
    url = fresh_database(admin, "depthmill_export_bench")
    migrate(url)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            settings = Settings(home=Path(tmp), database_url=url, model="tiny")
            items = seed(settings, Path(tmp), args.photos)
            results = {"photos": args.photos, "photo_size": "1024x768", "depth_size": "518x392",
                       "layouts": list(layouts), "cores": args.cores}
            results["process_pool_photos_per_s"] = process_pool(
                settings, items, Path(tmp) / "pool", layouts, args.cores)
            print(f"  process pool: {results['process_pool_photos_per_s']:.2f} photos/s",
                  file=sys.stderr)
            use_node_env()  # token authentication off, as `depthmill up` starts a node
            ray.init(address="local", num_cpus=args.cores, include_dashboard=False,
                     log_to_driver=False)
            results["ray_data_photos_per_s"] = ray_data(settings, args.photos,
                                                        Path(tmp) / "ray", layouts, args.cores)
            print(f"  Ray Data:     {results['ray_data_photos_per_s']:.2f} photos/s",
                  file=sys.stderr)
            ray.shutdown()
    finally:
        drop_database(admin, url)
        if server is not None:
            server.stop()
    print(f"\n{'path':>14} {'photos/s':>9}\n"
          f"{'process pool':>14} {results['process_pool_photos_per_s']:>9.2f}\n"
          f"{'Ray Data':>14} {results['ray_data_photos_per_s']:>9.2f}")
    write_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
