"""Rows for tests: media items with plausible, unique values."""

from __future__ import annotations

import hashlib
import uuid

import psycopg

from db import media
from db.media import Kind, MediaItem, NewMedia


def new_media(kind: Kind = "photo", nbytes: int = 1_000_000, **overrides: object) -> NewMedia:
    token = uuid.uuid4().hex
    values: dict[str, object] = {
        "kind": kind,
        "storage_key": f"originals/{token}",
        "sha256": hashlib.sha256(token.encode()).hexdigest(),
        "mime": "image/jpeg" if kind == "photo" else "video/mp4",
        "bytes": nbytes,
    }
    values.update(overrides)
    return NewMedia(**values)  # type: ignore[arg-type]


def insert_media(conn: psycopg.Connection, kind: Kind = "photo", nbytes: int = 1_000_000, **kw: object) -> MediaItem:
    return media.insert(conn, new_media(kind, nbytes, **kw))


def bulk_media(conn: psycopg.Connection, count: int, kind: Kind = "photo", nbytes: int = 1000) -> list[uuid.UUID]:
    """Insert ``count`` media rows in one statement (for the concurrency and load tests)."""
    rows = conn.execute(
        """
        INSERT INTO media_items (kind, storage_key, sha256, mime, bytes)
        SELECT %(kind)s, 'originals/' || g.id, encode(sha256(g.id::text::bytea), 'hex'),
               'application/octet-stream', %(bytes)s
        FROM (SELECT gen_random_uuid() AS id FROM generate_series(1, %(count)s)) g
        RETURNING id
        """,
        {"kind": kind, "bytes": nbytes, "count": count},
    ).fetchall()
    return [r[0] if isinstance(r, tuple) else r["id"] for r in rows]
