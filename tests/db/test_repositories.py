"""media and depth_maps repositories."""

from __future__ import annotations

import uuid

import pytest

from db import depth, media, queue
from db.errors import InvalidCursor
from devkit.factories import insert_media


def test_media_list_pages_newest_first_and_filters(conn):
    photos = [insert_media(conn, kind="photo") for _ in range(5)]
    video = insert_media(conn, kind="video")
    queue.enqueue(conn, photos[0].id, "tiny")
    page = media.list_media(conn, limit=4)
    assert len(page.items) == 4 and page.next_cursor
    rest = media.list_media(conn, limit=4, cursor=page.next_cursor)
    seen = [m.id for m in page.items + rest.items]
    assert sorted(seen) == sorted([p.id for p in photos] + [video.id]) and len(set(seen)) == 6
    assert [m.id for m in media.list_media(conn, kind="video").items] == [video.id]
    queued = media.list_media(conn, status="queued")
    assert [m.id for m in queued.items] == [photos[0].id]
    assert queued.statuses[photos[0].id] == "queued"
    with pytest.raises(InvalidCursor):
        media.list_media(conn, cursor="not-a-cursor")
    with pytest.raises(ValueError):
        media.list_media(conn, limit=0)


def test_depth_maps_upsert_keeps_one_row_per_media_model_format(conn):
    item = insert_media(conn)
    row = depth.NewDepthMap(item.id, "tiny", None, "png16", f"depth/tiny/{item.id}/png16.png",
                            10, 8, 0.0, 1.0, {"frames": [0.0, 0.5]})
    depth.upsert_many(conn, [row])
    depth.upsert_many(conn, [row])
    (stored,) = depth.for_media(conn, item.id)
    assert stored.metadata == {"frames": [0.0, 0.5]}
    assert depth.for_media(conn, uuid.uuid4()) == []


def test_missing_names_the_media_that_have_no_row(conn):
    kept, deleted = insert_media(conn, "photo"), insert_media(conn, "photo")
    media.delete(conn, deleted.id)
    never = uuid.uuid4()
    assert media.missing(conn, [kept.id, deleted.id, never]) == {deleted.id, never}
    assert media.missing(conn, []) == set()
