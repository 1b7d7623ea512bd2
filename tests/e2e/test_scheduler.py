"""The scheduler when the depth deployment is missing: it claims nothing, says why, and carries on
by itself once the deployment is there (Immich's most common queue complaint, fixed)."""

from __future__ import annotations

import time

import pytest
import ray
from ray import serve

from cluster.ingest import ingest_file
from cluster.media_probe import MediaLimits
from cluster.scheduler import NAMESPACE, SchedulerActor
from cluster.settings import Settings
from cluster.storage import storage_from_settings
from db import queue
from db.connection import Database
from serve_app.depth_deployment import build_depth_app
from tests.utils import media_files

pytestmark = pytest.mark.slow


def test_no_claims_while_the_depth_service_is_down_then_resume(ray_cluster, serve_port, database_url, tmp_path):
    app_name = "depth-comes-later"
    settings = Settings(home=tmp_path, database_url=database_url, model="tiny", lease_seconds=10,
                        scheduler_poll_s=0.5, serve_num_cpus=0.25)
    photo = media_files.write(tmp_path, "p.jpg", media_files.jpeg_bytes(media_files.photo("coffee")))
    with Database(database_url, max_size=2) as db:
        result = ingest_file(photo, db=db, storage=storage_from_settings(settings),
                             settings=settings, limits=MediaLimits.from_settings(settings))
        item_id = result.queue_item.id
        scheduler = SchedulerActor.options(name="scheduler-under-test", namespace=NAMESPACE).remote(
            settings, app_name)
        try:
            ray.get(scheduler.start.remote())
            time.sleep(4)
            status = ray.get(scheduler.status.remote())
            assert status["depth_available"] is False and "unavailable" in status["depth_error"]
            item = db.run(queue.get_item, item_id)
            assert item.status == "queued" and item.attempts == 0  # no attempt was burned

            serve.run(build_depth_app(settings), name=app_name, route_prefix=None)
            deadline = time.monotonic() + 90
            while db.run(queue.get_item, item_id).status != "completed":
                assert time.monotonic() < deadline, ray.get(scheduler.status.remote())
                time.sleep(0.5)
            assert ray.get(scheduler.status.remote())["depth_available"] is True
            assert db.run(queue.get_item, item_id).attempts == 1
        finally:
            ray.kill(scheduler)
            serve.delete(app_name)
