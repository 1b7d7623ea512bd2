"""The Ray Data reprocess job with `tiny` on the session's local Ray cluster."""

from __future__ import annotations

import pytest
from PIL import ImageOps

from cluster.ingest import ingest_file
from cluster.media.probe import MediaLimits
from cluster.config.settings import Settings
from cluster.storage import storage_from_settings
from db import depth, media, queue
from db.connection import Database
from pipelines.reprocess import build_parser, run
from devkit import media_files

pytestmark = pytest.mark.slow


def seed_library(tmp_path, settings, db, photos: int = 24) -> list:
    storage = storage_from_settings(settings)
    limits = MediaLimits.from_settings(settings)
    ids = []
    base = [media_files.photo(n) for n in ("astronaut", "chelsea", "coffee")]
    for i in range(photos):
        img = base[i % 3].rotate(i * 15, expand=True)
        img = ImageOps.fit(img, (200 + 7 * i, 160 + 5 * i))
        path = media_files.write(tmp_path, f"p{i}.jpg", media_files.jpeg_bytes(img))
        ids.append(ingest_file(path, db=db, storage=storage, settings=settings, limits=limits).media.id)
    video = media_files.write(tmp_path, "v.mp4", media_files.video_bytes())
    ingest_file(video, db=db, storage=storage, settings=settings, limits=limits)
    # An original that rotted in storage after upload: it must fail alone.
    broken = ids[0]
    storage.put_bytes(db.run(media.get, broken).storage_key, b"\xff\xd8\xff garbage", "image/jpeg")
    return ids


def test_reprocess_writes_outputs_is_idempotent_and_dry_runs(ray_cluster, database_url, tmp_path):
    settings = Settings(home=tmp_path / "home", database_url=database_url, model="tiny")
    with Database(database_url, max_size=2) as db:
        ids = seed_library(tmp_path, settings, db)

        dry = run(settings, build_parser().parse_args(["--dry-run"]))
        assert dry["selected"] == {"photo": 24, "video": 1}
        assert all(db.run(depth.for_media, i) == [] for i in ids)

        first = run(settings, build_parser().parse_args([]))
        assert first["photos_processed"] == 23 and first["photos_failed"] == 1
        assert first["errors"][0]["media_id"] == str(ids[0]) and first["errors"][0]["error"]
        assert first["videos_queued"] == 1
        storage = storage_from_settings(settings)
        for media_id in ids[1:]:
            maps = {m.format: m for m in db.run(depth.for_media, media_id)}
            assert set(maps) == {"png16", "preview"}
            assert storage.exists(maps["png16"].storage_key)
            assert maps["png16"].raw_max >= maps["png16"].raw_min

        # Rerun: only the broken one is still missing; nothing is written twice.
        second = run(settings, build_parser().parse_args(["--kind", "photo"]))
        assert second["selected"] == {"photo": 1}
        assert second["photos_processed"] == 0 and second["photos_failed"] == 1
        everything = run(settings, build_parser().parse_args(["--all", "--kind", "photo"]))
        assert everything["photos_processed"] == 23
        rows = db.run(lambda c: c.execute(
            "SELECT count(*) AS n FROM depth_maps WHERE model_id = 'tiny'").fetchone()["n"])
        assert rows == 23 * 2  # one row per media + model + format, however often it runs


def test_reprocess_closes_failed_queue_items(ray_cluster, database_url, tmp_path):
    settings = Settings(home=tmp_path / "home", database_url=database_url, model="tiny")
    with Database(database_url, max_size=2) as db:
        ids = seed_library(tmp_path, settings, db, photos=3)
        item = db.run(queue.items_for_media, ids[1])[0]
        (claimed,) = [c for c in db.run(queue.claim_batch, 10, "w", 60) if c.id == item.id] or [None]
        if claimed is not None:
            db.run(queue.fail, claimed.lease, "model crashed", retryable=False)
        summary = run(settings, build_parser().parse_args(["--status", "failed"]))
        assert summary["selected"] == {"photo": 1}
        assert db.run(queue.get_item, item.id).status == "completed"


@pytest.mark.parametrize(("resources", "num_gpus", "actors"), [
    ({"CPU": 2.0}, 0.0, 2),  # on CPUs: one model actor per CPU, each on its one thread
    ({"CPU": 16.0, "GPU": 1.0}, 1.0, 1),  # one per GPU
    ({"CPU": 16.0, "GPU": 2.0}, 0.5, 4),  # two on each GPU
    ({"CPU": 0.5}, 0.0, 1),
])
def test_the_job_has_a_model_actor_for_each_gpu_or_cpu(resources, num_gpus, actors):
    from pipelines.reprocess import model_actors

    assert model_actors(resources, num_gpus) == actors
