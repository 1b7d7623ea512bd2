"""The export job's SQL: which media to export, with the keys of the outputs it copies."""

from __future__ import annotations

from datetime import datetime

import psycopg
from psycopg import sql
from psycopg.rows import tuple_row

from db.reprocess import selection_filters


def build_selection(
    *, model_id: str, kind: str | None = None, status: str | None = None,
    since: datetime | None = None,
) -> tuple[sql.Composed, dict]:
    """Media with the model's outputs to export (a depth map for a photo, a depth video for a
    video, with its 16-bit one for stereo renders), their names, the keys of those outputs and a ``shard`` column for Ray Data."""
    where, params = selection_filters(model_id=model_id, kind=kind, status=status, since=since)
    query = sql.SQL(
        """
        SELECT m.id::text AS media_id, m.kind, m.original_name, m.storage_key, m.created_at,
               png.storage_key AS png16_key, pv.storage_key AS preview_key,
               vid.storage_key AS video_key, v16.storage_key AS video16_key,
               abs(hashtext(m.id::text)::bigint) AS shard
        FROM media_items m
        LEFT JOIN depth_maps png
               ON png.media_id = m.id AND png.model_id = %(model_id)s AND png.format = 'png16'
        LEFT JOIN depth_maps pv
               ON pv.media_id = m.id AND pv.model_id = %(model_id)s AND pv.format = 'preview'
        LEFT JOIN depth_maps vid
               ON vid.media_id = m.id AND vid.model_id = %(model_id)s AND vid.format = 'video'
        LEFT JOIN depth_maps v16
               ON v16.media_id = m.id AND v16.model_id = %(model_id)s AND v16.format = 'video16'
        WHERE {where}
          AND CASE WHEN m.kind = 'video' THEN vid.id IS NOT NULL ELSE png.id IS NOT NULL END
        """
    ).format(where=sql.SQL(" AND ").join(where))
    return query, params


def names_in_order(conn: psycopg.Connection, query: sql.Composed, params: dict):
    """``(media_id, original_name)`` of the selection, oldest upload first: the order in which
    the first of a name keeps it. Streamed (a server-side cursor), a few dozen bytes a row."""
    ordered = sql.SQL(
        "SELECT media_id, original_name FROM ({}) s ORDER BY created_at, media_id").format(query)
    with conn.cursor(name="export_names", row_factory=tuple_row) as cur:
        cur.itersize = 10_000
        yield from cur.execute(ordered, params)
