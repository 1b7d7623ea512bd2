"""Faults on the tiny model with items in flight: every item reaches a terminal state, none is
lost, none has two results."""

from __future__ import annotations

import os
import signal
import time

import pytest
import ray
from ray import serve

from cluster.ingest import ingest_file
from cluster.media_probe import MediaLimits
from cluster.scheduler import get_or_start_scheduler, get_scheduler
from cluster.settings import Settings
from cluster.storage import storage_from_settings
from cluster.tasks import APP_NAME
from db.connection import Database
from serve_app.depth_deployment import build_depth_app
from tests.utils import media_files

pytestmark = pytest.mark.slow


def seed(settings, db, tmp_path, n):
    storage = storage_from_settings(settings)
    limits = MediaLimits.from_settings(settings)
    base = [media_files.photo(name) for name in ("astronaut", "chelsea", "coffee")]
    for i in range(n):
        img = base[i % 3].rotate(i * 7, expand=True).resize((400 + i, 300 + i))
        path = media_files.write(tmp_path, f"{i}.jpg", media_files.jpeg_bytes(img))
        ingest_file(path, db=db, storage=storage, settings=settings, limits=limits)


def counts(db) -> dict:
    return db.run(lambda c: c.execute(
        """SELECT count(*) FILTER (WHERE status = 'completed') AS completed,
                  count(*) FILTER (WHERE status = 'failed') AS failed,
                  count(*) FILTER (WHERE status = 'processing') AS processing,
                  count(*) AS total,
                  (SELECT count(*) FROM depth_maps WHERE format = 'png16') AS depth_rows,
                  (SELECT count(DISTINCT media_id) FROM depth_maps WHERE format = 'png16') AS media_with_depth
           FROM processing_queue""").fetchone())


def test_killing_the_scheduler_mid_run_loses_nothing(ray_cluster, serve_port, database_url, tmp_path):
    settings = Settings(home=tmp_path / "home", database_url=database_url, model="tiny",
                        lease_seconds=4, scheduler_poll_s=0.5, scheduler_max_in_flight=8,
                        serve_num_cpus=0.25, retry_backoff_base=0.2, retry_backoff_max=1)
    items = 40
    with Database(database_url, max_size=2) as db:
        seed(settings, db, tmp_path, items)
        serve.run(build_depth_app(settings), name=APP_NAME, route_prefix=None)
        scheduler = get_or_start_scheduler(settings)
        try:
            deadline = time.monotonic() + 60
            while counts(db)["completed"] < 5:
                assert time.monotonic() < deadline
                time.sleep(0.2)
            # kill -9 the scheduler mid-run: Ray restarts it; it starts itself and recovers leases.
            pid = ray.get(scheduler.__ray_call__.remote(lambda self: os.getpid()))
            os.kill(pid, signal.SIGKILL)
            time.sleep(1)
            deadline = time.monotonic() + 150
            while (c := counts(db))["completed"] + c["failed"] < items:
                assert time.monotonic() < deadline, c
                time.sleep(0.5)
            final = counts(db)
            assert final["total"] == items and final["processing"] == 0
            assert final["completed"] == items, final
            # One result per media + model + format, however many attempts it took.
            assert final["depth_rows"] == final["media_with_depth"] == items
            assert ray.get(get_scheduler().status.remote())["running"] is True
        finally:
            s = get_scheduler()
            if s is not None:
                ray.kill(s, no_restart=True)
            serve.delete(APP_NAME)
