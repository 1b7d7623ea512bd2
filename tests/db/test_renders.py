"""The render cache's rows: record, touch, least-recently-used eviction, cascade with media."""

from __future__ import annotations

from db import media, renders
from devkit.factories import insert_media


def test_eviction_drops_least_recently_used_until_the_rest_fit(conn):
    m = insert_media(conn)
    for key in ("a", "b", "c", "d"):
        renders.record(conn, key, m.id, 100)
    assert renders.touch(conn, "a")  # a is now the most recent; b the least
    assert renders.total_bytes(conn) == 400
    assert renders.evict_over(conn, 250) == ["b", "c"]
    assert renders.total_bytes(conn) == 200
    assert renders.keys_for_media(conn, m.id) == ["a", "d"]
    assert renders.evict_over(conn, 250) == []


def test_the_render_just_made_is_kept_even_alone_over_the_limit(conn):
    m = insert_media(conn)
    renders.record(conn, "old", m.id, 10)
    renders.record(conn, "new", m.id, 1000)
    assert renders.touch(conn, "old")  # old is more recent, but new is the one being served
    assert renders.evict_over(conn, 500, keep="new") == ["old"]
    assert renders.keys_for_media(conn, m.id) == ["new"]


def test_touch_tells_whether_a_render_is_cached(conn):
    m = insert_media(conn)
    assert not renders.touch(conn, "missing")
    renders.record(conn, "x", m.id, 5)
    renders.record(conn, "x", m.id, 7)  # stored again: one row, the new size
    assert renders.touch(conn, "x") and renders.total_bytes(conn) == 7


def test_rows_go_with_their_media(conn):
    m = insert_media(conn)
    renders.record(conn, "r", m.id, 5)
    media.delete(conn, m.id)
    assert renders.total_bytes(conn) == 0
