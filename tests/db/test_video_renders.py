"""Stereo video render jobs on real Postgres: one starter per render, attempts fence the task's
updates, stale, failed and evicted renders are started again, rows go with their media."""

from __future__ import annotations

from db import media, video_renders
from devkit.factories import insert_media

KEY = "renders/x/tiny/sbs_d2.0_c0.50_clip_SBS.mp4"


def start(conn, media_id, **kw):
    kw = {"stale_s": 60, "max_attempts": 3, **kw}
    return video_renders.start(conn, KEY, media_id, "tiny", "sbs", 2.0, 0.5, **kw)


def test_only_the_first_request_starts_a_render_and_its_updates_are_fenced(conn):
    item = insert_media(conn, "video")
    first, started = start(conn, item.id)
    assert started and first.status == "rendering" and first.attempts == 1
    again, started_again = start(conn, item.id)
    assert not started_again and again.attempts == 1
    assert video_renders.report_progress(conn, KEY, 1, 0.4)
    assert video_renders.get(conn, KEY).progress == 0.4
    # A stale render (no progress for stale_s) is taken over: the old attempt records nothing.
    taken, started = start(conn, item.id, stale_s=0)
    assert started and taken.attempts == 2 and taken.progress == 0
    assert not video_renders.report_progress(conn, KEY, 1, 0.9)
    assert not video_renders.finish(conn, KEY, 1)
    assert video_renders.finish(conn, KEY, 2)
    done = video_renders.get(conn, KEY)
    assert done.status == "ready" and done.progress == 1
    # Ready stays ready, until the caller found its file evicted.
    assert start(conn, item.id, stale_s=0)[1] is False
    assert start(conn, item.id, evicted=True)[1] is True


def test_a_failed_render_is_retried_until_its_attempts_run_out(conn):
    item = insert_media(conn, "video")
    row, _ = start(conn, item.id)
    for attempt in (1, 2):
        assert video_renders.fail(conn, KEY, attempt, "ValueError: broken frame")
        row, started = start(conn, item.id)
        assert started and row.attempts == attempt + 1 and row.last_error is None
    assert video_renders.fail(conn, KEY, 3, "ValueError: broken frame")
    row, started = start(conn, item.id)
    assert not started and row.status == "failed" and row.last_error == "ValueError: broken frame"


def test_renders_are_listed_with_and_deleted_with_their_media(conn):
    item = insert_media(conn, "video")
    start(conn, item.id)
    assert [r.storage_key for r in video_renders.for_media(conn, item.id)] == [KEY]
    media.delete(conn, item.id)
    assert video_renders.get(conn, KEY) is None
