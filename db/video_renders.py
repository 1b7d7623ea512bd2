"""``stereo_video_renders`` (migration 015): the state of each stereo video render job.

A render is started by whoever inserts its row or takes over one that is stale (no progress for
``stale_s``: its task died), failed (fewer than ``max_attempts`` attempts so far) or ready but
evicted from the cache. That caller, and only it, starts the task; every update of the task names the attempt
it was started as, so a task that was taken over records nothing.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg.rows import class_row

RENDER_STATUSES = ("rendering", "ready", "failed")


@dataclass(frozen=True)
class VideoRender:
    storage_key: str
    media_id: uuid.UUID
    model_id: str
    layout: str
    divergence: float
    convergence: float
    codec: str
    status: str
    progress: float
    attempts: int
    last_error: str | None
    started_at: datetime
    updated_at: datetime


_COLUMNS = ("storage_key, media_id, model_id, layout, divergence, convergence, codec, status, "
            "progress, attempts, last_error, started_at, updated_at")


def get(conn: psycopg.Connection, storage_key: str) -> VideoRender | None:
    with conn.cursor(row_factory=class_row(VideoRender)) as cur:
        return cur.execute(f"SELECT {_COLUMNS} FROM stereo_video_renders WHERE storage_key = %s",
                           [storage_key]).fetchone()


def start(
    conn: psycopg.Connection, storage_key: str, media_id: uuid.UUID, model_id: str, layout: str,
    divergence: float, convergence: float, codec: str = "h264", *, stale_s: float,
    max_attempts: int, evicted: bool = False,
) -> tuple[VideoRender, bool]:
    """The render's row and whether this call started it (the caller then starts its task).
    ``evicted``: the caller found the row ready but its file gone from the cache."""
    with conn.cursor(row_factory=class_row(VideoRender)) as cur:
        started = cur.execute(
            f"""
            INSERT INTO stereo_video_renders AS r
                (storage_key, media_id, model_id, layout, divergence, convergence, codec, status)
            VALUES (%(key)s, %(media)s, %(model)s, %(layout)s, %(div)s, %(conv)s, %(codec)s,
                    'rendering')
            ON CONFLICT (storage_key) DO UPDATE
            SET status = 'rendering', progress = 0, last_error = NULL,
                attempts = r.attempts + 1,
                started_at = now(), updated_at = now()
            WHERE (r.status = 'rendering'
                   AND r.updated_at < now() - make_interval(secs => %(stale)s))
               OR (r.status = 'failed' AND r.attempts < %(max)s)
               OR (r.status = 'ready' AND %(evicted)s)
            RETURNING {_COLUMNS}
            """,
            {"key": storage_key, "media": media_id, "model": model_id, "layout": layout,
             "div": divergence, "conv": convergence, "codec": codec, "stale": stale_s, "max": max_attempts,
             "evicted": evicted},
        ).fetchone()
    if started is not None:
        return started, True
    current = get(conn, storage_key)
    assert current is not None  # the conflict was with it; rows go only with their media
    return current, False


def report_progress(conn: psycopg.Connection, storage_key: str, attempt: int,
                    progress: float) -> bool:
    """False when this attempt no longer holds the render: the task should stop."""
    cur = conn.execute(
        """UPDATE stereo_video_renders SET progress = %s, updated_at = now()
           WHERE storage_key = %s AND attempts = %s AND status = 'rendering'""",
        [min(max(progress, 0.0), 1.0), storage_key, attempt])
    return cur.rowcount == 1


def finish(conn: psycopg.Connection, storage_key: str, attempt: int) -> bool:
    cur = conn.execute(
        """UPDATE stereo_video_renders SET status = 'ready', progress = 1, updated_at = now()
           WHERE storage_key = %s AND attempts = %s AND status = 'rendering'""",
        [storage_key, attempt])
    return cur.rowcount == 1


def fail(conn: psycopg.Connection, storage_key: str, attempt: int, error: str) -> bool:
    cur = conn.execute(
        """UPDATE stereo_video_renders SET status = 'failed', last_error = left(%s, 2000),
               updated_at = now()
           WHERE storage_key = %s AND attempts = %s AND status = 'rendering'""",
        [error, storage_key, attempt])
    return cur.rowcount == 1


def for_media(conn: psycopg.Connection, media_id: uuid.UUID) -> list[VideoRender]:
    with conn.cursor(row_factory=class_row(VideoRender)) as cur:
        return cur.execute(
            f"SELECT {_COLUMNS} FROM stereo_video_renders WHERE media_id = %s "
            "ORDER BY started_at DESC, storage_key", [media_id]).fetchall()
