"""The scheduler when the depth deployment is missing: it claims nothing, says why, and carries on
by itself once the deployment is there (Immich's most common queue complaint, fixed); and when
media is deleted while its item runs."""

from __future__ import annotations

import time

import numpy as np
import pytest
import ray
from ray import serve

from cluster.model.contract import DepthResult
from cluster.ingest import ingest_file
from cluster.media.probe import MediaLimits
from cluster.work.scheduler import SchedulerActor
from cluster.config.settings import Settings
from cluster.storage import storage_from_settings
from db import media, queue
from db.connection import Database
from cluster.config.names import DEPTH_DEPLOYMENT, NAMESPACE
from serve_app.depth_deployment import build_depth_app
from devkit import media_files

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


@serve.deployment(name=DEPTH_DEPLOYMENT, ray_actor_options={"num_cpus": 0})
class SlowDepth:
    """Stands in for the model: takes long enough for the media to be deleted meanwhile."""

    def __init__(self, seconds: float = 3) -> None:
        self.calls = 0
        self.seconds = seconds

    async def __call__(self, image, size) -> DepthResult:
        import asyncio

        self.calls += 1
        await asyncio.sleep(self.seconds)
        h, w = size or image.shape[:2]
        return DepthResult(np.ones((h, w), np.float32), 1.0, 1.0)

    def info(self) -> dict:
        return {"calls": self.calls}


def test_outputs_written_for_media_deleted_while_it_ran_are_removed(
    ray_cluster, serve_port, database_url, tmp_path
):
    app_name = "depth-slow"
    # A long lease: the heartbeat does not find the item gone (and cancel it) before it finishes.
    settings = Settings(home=tmp_path, database_url=database_url, model="tiny", lease_seconds=60,
                        scheduler_poll_s=0.5, serve_num_cpus=0.25)
    storage = storage_from_settings(settings)
    photo = media_files.write(tmp_path, "p.jpg", media_files.jpeg_bytes(media_files.photo("cat")))
    serve.run(SlowDepth.bind(), name=app_name, route_prefix=None)
    with Database(database_url, max_size=2) as db:
        result = ingest_file(photo, db=db, storage=storage, settings=settings,
                             limits=MediaLimits.from_settings(settings))
        media_id = result.media.id
        scheduler = SchedulerActor.options(name="scheduler-deletes", namespace=NAMESPACE).remote(
            settings, app_name)
        try:
            ray.get(scheduler.start.remote())
            deadline = time.monotonic() + 60
            depth = serve.get_deployment_handle(DEPTH_DEPLOYMENT, app_name=app_name)
            while depth.info.remote().result()["calls"] == 0:  # the original has been read
                assert time.monotonic() < deadline
                time.sleep(0.1)
            db.run(media.delete, media_id)  # what DELETE /api/media/{id} does first
            storage.delete(result.media.storage_key)
            while (status := ray.get(scheduler.status.remote()))["in_flight"]:
                assert time.monotonic() < deadline, status  # its outcome is recorded
                time.sleep(0.2)
        finally:
            ray.kill(scheduler)
            serve.delete(app_name)
    assert [o.key for o in storage.list() if str(media_id) in o.key] == []
    assert status["counts"]["discarded"] == 1


def test_the_next_item_is_claimed_in_the_transaction_that_completes_the_last(
    ray_cluster, serve_port, database_url, tmp_path
):
    """One commit per cycle: the scheduler records what finished and claims for the slots that
    frees together. now() is a transaction's start time, so the item claimed with a completion
    started at the very instant the completed item completed."""
    app_name = "depth-one-commit"
    settings = Settings(home=tmp_path, database_url=database_url, model="tiny", lease_seconds=30,
                        scheduler_poll_s=0.5, scheduler_max_in_flight=1, serve_num_cpus=0.25)
    storage = storage_from_settings(settings)
    serve.run(SlowDepth.bind(0.2), name=app_name, route_prefix=None)
    with Database(database_url, max_size=2) as db:
        item_ids = []
        for subject in ("astronaut", "chelsea", "rocket"):
            photo = media_files.write(
                tmp_path, f"{subject}.jpg", media_files.jpeg_bytes(media_files.photo(subject)))
            result = ingest_file(photo, db=db, storage=storage, settings=settings,
                                 limits=MediaLimits.from_settings(settings))
            item_ids.append(result.queue_item.id)
        scheduler = SchedulerActor.options(name="scheduler-one-commit", namespace=NAMESPACE).remote(
            settings, app_name)
        try:
            ray.get(scheduler.start.remote())
            deadline = time.monotonic() + 60
            while any(db.run(queue.get_item, i).status != "completed" for i in item_ids):
                assert time.monotonic() < deadline, ray.get(scheduler.status.remote())
                time.sleep(0.2)
        finally:
            ray.kill(scheduler)
            serve.delete(app_name)
        items = sorted((db.run(queue.get_item, i) for i in item_ids), key=lambda i: i.started_at)
    assert [i.attempts for i in items] == [1, 1, 1]
    for finished, claimed in zip(items, items[1:]):
        assert claimed.started_at == finished.completed_at
