"""``stereo_renders``: the bounded cache of renders (stereo layouts, GDepth JPEGs), in bytes,
evicted least recently used first. The objects live in storage; callers delete the keys that
:func:`evict_over` hands back."""

from __future__ import annotations

import uuid

import psycopg
from psycopg.rows import tuple_row


def record(conn: psycopg.Connection, storage_key: str, media_id: uuid.UUID, nbytes: int) -> None:
    """A render was stored (or stored again): its size, and it was used now."""
    conn.execute(
        """
        INSERT INTO stereo_renders (storage_key, media_id, bytes, last_used_at)
        VALUES (%s, %s, %s, clock_timestamp())
        ON CONFLICT (storage_key) DO UPDATE
        SET bytes = EXCLUDED.bytes, last_used_at = EXCLUDED.last_used_at
        """,
        [storage_key, media_id, nbytes],
    )


def touch(conn: psycopg.Connection, storage_key: str) -> bool:
    """A cached render was served: it becomes the most recently used. False when it has no row
    (never made, or evicted), so the caller renders it."""
    cur = conn.execute(
        "UPDATE stereo_renders SET last_used_at = clock_timestamp() WHERE storage_key = %s",
        [storage_key],
    )
    return cur.rowcount == 1


def total_bytes(conn: psycopg.Connection) -> int:
    with conn.cursor(row_factory=tuple_row) as cur:
        (total,) = cur.execute("SELECT coalesce(sum(bytes), 0) FROM stereo_renders").fetchone()
    return int(total)


_EVICT = """
    WITH ranked AS (
        -- Bytes kept if this row and every row used after it stay (``keep`` counts first).
        SELECT storage_key, last_used_at,
               sum(bytes) OVER (ORDER BY (storage_key = %(keep)s) IS TRUE DESC,
                                last_used_at DESC, storage_key DESC) AS kept_bytes
        FROM stereo_renders
    )
    DELETE FROM stereo_renders r USING ranked
    WHERE r.storage_key = ranked.storage_key AND ranked.kept_bytes > %(limit)s
      AND r.storage_key IS DISTINCT FROM %(keep)s
    RETURNING r.storage_key, ranked.last_used_at
"""


def evict_over(conn: psycopg.Connection, limit: int, keep: str | None = None) -> list[str]:
    """Delete the rows of the least recently used renders until the rest fit in ``limit`` bytes;
    their keys, least recently used first. ``keep`` (the render just made) is never evicted, even
    alone over the limit: the caller is about to hand out its URL."""
    with conn.cursor(row_factory=tuple_row) as cur:
        rows = cur.execute(_EVICT, {"limit": limit, "keep": keep}).fetchall()
    return [key for key, _ in sorted(rows, key=lambda r: (r[1], r[0]))]


def keys_for_media(conn: psycopg.Connection, media_id: uuid.UUID) -> list[str]:
    with conn.cursor(row_factory=tuple_row) as cur:
        rows = cur.execute(
            "SELECT storage_key FROM stereo_renders WHERE media_id = %s ORDER BY storage_key",
            [media_id],
        ).fetchall()
    return [key for (key,) in rows]
