"""``media_items``: one row per original photo or video, deduplicated by content hash."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Literal

import psycopg
from psycopg import sql
from psycopg.rows import class_row

from db.errors import NotFound

Kind = Literal["photo", "video"]


@dataclass(frozen=True)
class NewMedia:
    """What ingestion knows about a file once it is stored and validated."""

    kind: Kind
    storage_key: str
    sha256: str
    mime: str
    bytes: int
    original_name: str | None = None
    width: int | None = None
    height: int | None = None
    duration: float | None = None
    fps: float | None = None
    frame_count: int | None = None
    codec: str | None = None
    taken_at: datetime | None = None
    camera: str | None = None


@dataclass(frozen=True)
class MediaItem(NewMedia):
    id: uuid.UUID = None  # type: ignore[assignment]
    created_at: datetime = None  # type: ignore[assignment]
    created: bool = False  # set by insert: False when the content was already known


_NEW_COLUMNS = [f.name for f in fields(NewMedia)]
_COLUMNS = sql.SQL(", ").join(sql.Identifier(c) for c in [*_NEW_COLUMNS, "id", "created_at"])

_INSERT = sql.SQL(
    """
    WITH new AS (
        INSERT INTO media_items ({names}) VALUES ({values})
        -- Same content uploaded again: keep the first row; the caller gets it back.
        ON CONFLICT (sha256) DO UPDATE SET sha256 = EXCLUDED.sha256
        RETURNING *, (xmax = 0) AS created
    )
    SELECT {columns}, created FROM new
    """
).format(
    names=sql.SQL(", ").join(map(sql.Identifier, _NEW_COLUMNS)),
    values=sql.SQL(", ").join(sql.Placeholder(c) for c in _NEW_COLUMNS),
    columns=_COLUMNS,
)


def insert(conn: psycopg.Connection, media: NewMedia) -> MediaItem:
    """Record a media item, or return the existing one with the same sha256 (``created`` False)."""
    with conn.cursor(row_factory=class_row(MediaItem)) as cur:
        return cur.execute(_INSERT, {c: getattr(media, c) for c in _NEW_COLUMNS}).fetchone()


def get(conn: psycopg.Connection, media_id: uuid.UUID) -> MediaItem:
    query = sql.SQL("SELECT {columns} FROM media_items WHERE id = %s").format(columns=_COLUMNS)
    with conn.cursor(row_factory=class_row(MediaItem)) as cur:
        row = cur.execute(query, [media_id]).fetchone()
    if row is None:
        raise NotFound(f"media item {media_id} not found")
    return row


def find_by_sha256(conn: psycopg.Connection, sha256: str) -> MediaItem | None:
    query = sql.SQL("SELECT {columns} FROM media_items WHERE sha256 = %s").format(columns=_COLUMNS)
    with conn.cursor(row_factory=class_row(MediaItem)) as cur:
        return cur.execute(query, [sha256]).fetchone()


def delete(conn: psycopg.Connection, media_id: uuid.UUID) -> bool:
    """Delete the row; its queue items and depth maps go with it (ON DELETE CASCADE)."""
    return conn.execute("DELETE FROM media_items WHERE id = %s", [media_id]).rowcount == 1
