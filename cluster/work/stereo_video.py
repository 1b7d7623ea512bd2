"""A stereo video render as a background Ray task: the original and its 16-bit depth video
fetched from storage, rendered frame by frame (:mod:`cluster.media.stereo_video`), stored as a
cached render, its progress recorded in ``stereo_video_renders`` as it goes.

Started by the gateway for the request that started the render (``db.video_renders.start``).
Ray runs it again when its worker dies; when its owner (the gateway replica) dies with it, the
render stops making progress and the next request after ``STALE_S`` starts it again.
"""

from __future__ import annotations

import logging
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import ray

from cluster.config.settings import Settings
from cluster.config.worker_env import ARRAYS_MALLOC_ENV, BACKGROUND_ENV, yield_cpu_to_foreground
from cluster.media.stereo_video import render_stereo_video
from cluster.storage import Storage, download, storage_from_settings
from db import renders, video_renders
from db.connection import Database

log = logging.getLogger(__name__)

# A render that has not reported progress for this long is taken to be dead.
STALE_S = 120.0
PROGRESS_EVERY_S = 2.0
MAX_ATTEMPTS = 3


@dataclass(frozen=True)
class VideoRenderJob:
    storage_key: str
    attempt: int
    media_id: uuid.UUID
    original_key: str
    depth16_key: str
    layout: str
    divergence: float
    convergence: float
    codec: str = "h264"


class RenderTakenOver(Exception):
    """This attempt no longer holds the render (it was given up on and started again)."""


def run_render(job: VideoRenderJob, settings: Settings, db: Database, storage: Storage) -> None:
    """Render, store and record ``job``; a failure is recorded on the render's row."""
    try:
        with tempfile.TemporaryDirectory(prefix="depthmill-stereo-") as tmp:
            source, depth16, out = Path(tmp) / "source", Path(tmp) / "depth16.mkv", Path(tmp) / "out.mp4"
            download(storage, job.original_key, source)
            download(storage, job.depth16_key, depth16)
            render_stereo_video(source, depth16, out, job.layout,  # type: ignore[arg-type]
                                divergence=job.divergence, convergence=job.convergence,
                                codec=job.codec,  # type: ignore[arg-type]
                                progress=_reporter(job, db))
            with out.open("rb") as f:
                nbytes = storage.put(job.storage_key, f, "video/mp4")
        db.run(renders.record, job.storage_key, job.media_id, nbytes)
        if not db.run(video_renders.finish, job.storage_key, job.attempt):
            raise RenderTakenOver()
        for old in db.run(renders.evict_over, int(settings.stereo_cache_bytes), job.storage_key):
            storage.delete(old)
    except RenderTakenOver:
        log.info("stereo render %s attempt %d was taken over", job.storage_key, job.attempt)
    except Exception as e:  # noqa: BLE001 - recorded for the item's detail and the next request
        log.exception("stereo render %s failed", job.storage_key)
        db.run(video_renders.fail, job.storage_key, job.attempt, f"{type(e).__name__}: {e}")


def _reporter(job: VideoRenderJob, db: Database):
    last = [0.0]

    def report(progress: float) -> None:
        now = time.monotonic()
        if now - last[0] < PROGRESS_EVERY_S:
            return
        last[0] = now
        if not db.run(video_renders.report_progress, job.storage_key, job.attempt, progress):
            raise RenderTakenOver()

    return report


# num_cpus=1: a render is CPU-bound for as long as the video lasts; background priority, so the
# API and photo processing come first. Ray re-runs it when its worker dies (max_retries).
@ray.remote(max_retries=2, num_cpus=1, runtime_env={"env_vars": BACKGROUND_ENV | ARRAYS_MALLOC_ENV})
def render_task(job: VideoRenderJob, settings: Settings) -> None:
    yield_cpu_to_foreground()
    db = Database(settings.database_url, max_size=1, name="stereo-render").open()
    try:
        run_render(job, settings, db, storage_from_settings(settings))
    finally:
        db.close()
