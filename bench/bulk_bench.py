"""Bulk throughput: the Ray Data reprocess job against the queue path (scheduler → Ray tasks →
Serve deployment) on the same photos, same model, same machine.

    python -m bench.bulk_bench --json bench/results/bulk.json [--photos 96] [--size 1024x768] [--model tiny]

A few thousand small photos (``--photos 3000 --size 320x240``) measure the two paths where the
Ray Data job's start-up no longer dominates.

Uses the Postgres at DEPTHMILL_TEST_ADMIN_URL / 127.0.0.1:5432 (or an embedded one), local
storage in a temp directory, and a local Ray cluster.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import psycopg
import ray
from PIL import ImageOps
from ray import serve

from bench.queue_bench import admin_url, fresh_database
from bench.report import write_json
from cluster.ingest import ingest_file
from cluster.media.probe import MediaLimits
from cluster.work.scheduler import get_or_start_scheduler, get_scheduler
from cluster.config.settings import Settings
from cluster.storage import storage_from_settings
from cluster.config.names import APP_NAME
from db.connection import Database
from db.migrate import migrate
from pipelines.reprocess import build_parser, run
from serve_app.app import build_depthmill_app
from devkit import media_files


def seed(settings: Settings, root: Path, photos: int, size: tuple[int, int]) -> None:
    storage = storage_from_settings(settings)
    limits = MediaLimits.from_settings(settings)
    base = [media_files.photo(n) for n in ("astronaut", "chelsea", "coffee")]
    with Database(settings.database_url, max_size=2) as db:
        for i in range(photos):
            img = ImageOps.fit(base[i % 3].rotate(i * 0.1, expand=True), size)
            path = media_files.write(root, f"{i}.jpg", media_files.jpeg_bytes(img))
            ingest_file(path, db=db, storage=storage, settings=settings, limits=limits)


def queue_path(settings: Settings, photos: int) -> float:
    serve.run(build_depthmill_app(settings), name=APP_NAME, route_prefix="/")
    started = time.perf_counter()
    get_or_start_scheduler(settings)
    with psycopg.connect(settings.database_url) as conn:
        while conn.execute(
            "SELECT count(*) FROM processing_queue_completed"
        ).fetchone()[0] < photos:
            time.sleep(0.2)
    elapsed = time.perf_counter() - started
    ray.kill(get_scheduler())
    serve.delete(APP_NAME)
    return photos / elapsed


def data_path(settings: Settings, photos: int, batch: int, actors: int | None) -> float:
    started = time.perf_counter()
    options = ["--all", "--batch-size", str(batch)] + (["--actors", str(actors)] if actors else [])
    summary = run(settings, build_parser().parse_args(options))
    assert summary["photos_processed"] == photos, summary
    return photos / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=96)
    parser.add_argument("--size", default="1024x768", help="photo size, WIDTHxHEIGHT")
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--actors", type=int, help="the job's model actors (default: its own)")
    parser.add_argument("--only", choices=["queue", "data"], help="measure one path")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    admin, server = admin_url()
    url = fresh_database(admin, "depthmill_bulk_bench")
    migrate(url)
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(home=Path(tmp), database_url=url, model=args.model,
                            serve_num_cpus=0.5, serve_max_batch_size=args.batch_size,
                            scheduler_poll_s=0.5)
        size = tuple(int(v) for v in args.size.split("x"))
        seed(settings, Path(tmp), args.photos, size)
        ray.init(include_dashboard=False, log_to_driver=False)
        results = {"photos": args.photos, "model": args.model, "photo_size": args.size,
                   "cpus": ray.cluster_resources().get("CPU"),
                   "gpus": ray.cluster_resources().get("GPU", 0)}
        if args.only != "data":
            results["queue_items_per_s"] = queue_path(settings, args.photos)
            print(f"  queue path: {results['queue_items_per_s']:.1f} items/s", file=sys.stderr)
        if args.only != "queue":
            results["ray_data_items_per_s"] = data_path(settings, args.photos, args.batch_size,
                                                        args.actors)
            print(f"  Ray Data:   {results['ray_data_items_per_s']:.1f} items/s", file=sys.stderr)
        serve.shutdown()
        ray.shutdown()
    print(f"\n{'path':>10} {'items/s':>9}")
    for name, key in (("queue", "queue_items_per_s"), ("Ray Data", "ray_data_items_per_s")):
        if key in results:
            print(f"{name:>10} {results[key]:>9.1f}")
    write_json(args.json, results)
    if server is not None:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
