"""``media_items``: one row per original photo or video, deduplicated by content hash."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Literal

import psycopg
from psycopg import sql
from psycopg.rows import class_row, dict_row, tuple_row

from db import cursor as cursor_key
from db.errors import NotFound
from db.vocabulary import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, Kind, Status, check_kind


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
        -- No conflict target: the storage key is unique too and derives from sha256, and a
        -- target of sha256 alone lets two concurrent inserts of one content race on the key
        -- and raise. Either conflict means the content is known; the caller reads that row.
        ON CONFLICT DO NOTHING
        RETURNING *
    )
    SELECT {columns}, true AS created FROM new
    """
).format(
    names=sql.SQL(", ").join(map(sql.Identifier, _NEW_COLUMNS)),
    values=sql.SQL(", ").join(sql.Placeholder(c) for c in _NEW_COLUMNS),
    columns=_COLUMNS,
)


def insert(conn: psycopg.Connection, media: NewMedia) -> MediaItem | None:
    """Record a media item, or return the existing one with the same sha256 (``created`` False).
    None when that one was deleted between the conflict and the read: the caller tries again."""
    with conn.cursor(row_factory=class_row(MediaItem)) as cur:
        row = cur.execute(_INSERT, {c: getattr(media, c) for c in _NEW_COLUMNS}).fetchone()
    # Under READ COMMITTED this next statement sees the row that the conflict waited for.
    return row if row is not None else find_by_sha256(conn, media.sha256, lock=True)


def get(conn: psycopg.Connection, media_id: uuid.UUID) -> MediaItem:
    query = sql.SQL("SELECT {columns} FROM media_items WHERE id = %s").format(columns=_COLUMNS)
    with conn.cursor(row_factory=class_row(MediaItem)) as cur:
        row = cur.execute(query, [media_id]).fetchone()
    if row is None:
        raise NotFound(f"media item {media_id} not found")
    return row


def find_by_sha256(conn: psycopg.Connection, sha256: str, *, lock: bool = False) -> MediaItem | None:
    """The media item with this content. ``lock`` holds it against deletion until the
    transaction ends, for a caller about to queue work for it."""
    query = sql.SQL("SELECT {columns} FROM media_items WHERE sha256 = %s {lock}").format(
        columns=_COLUMNS, lock=sql.SQL("FOR KEY SHARE" if lock else ""))
    with conn.cursor(row_factory=class_row(MediaItem)) as cur:
        return cur.execute(query, [sha256]).fetchone()


def missing(conn: psycopg.Connection, media_ids: Iterable[uuid.UUID]) -> set[uuid.UUID]:
    """Those of ``media_ids`` that have no row (deleted)."""
    return _without_a_row(conn, "id", "uuid", media_ids)


def unreferenced(conn: psycopg.Connection, storage_keys: Iterable[str]) -> set[str]:
    """Those of ``storage_keys`` that no media row has as its original."""
    return _without_a_row(conn, "storage_key", "text", storage_keys)


def _without_a_row(conn: psycopg.Connection, column: str, type_: str, values: Iterable) -> set:
    query = sql.SQL(
        "SELECT v FROM unnest(%s::{type}[]) AS t(v)"
        " WHERE NOT EXISTS (SELECT 1 FROM media_items m WHERE m.{column} = t.v)"
    ).format(type=sql.SQL(type_), column=sql.Identifier(column))
    with conn.cursor(row_factory=tuple_row) as cur:
        return {row[0] for row in cur.execute(query, [list(values)])}


def delete(conn: psycopg.Connection, media_id: uuid.UUID) -> bool:
    """Delete the row; its queue items and depth maps go with it (ON DELETE CASCADE)."""
    return conn.execute("DELETE FROM media_items WHERE id = %s", [media_id]).rowcount == 1


@dataclass(frozen=True)
class MediaPage:
    items: list[MediaItem]
    statuses: dict[uuid.UUID, str | None]  # latest queue status per item
    next_cursor: str | None


Order = Literal["uploaded", "taken"]

# The sort key of each order, newest first; both have an index (``media_items_timeline`` for the
# capture date, which falls back to the upload time for media without one).
_SORT_KEY = {"uploaded": sql.SQL("m.created_at"), "taken": sql.SQL("coalesce(m.taken_at, m.created_at)")}

_LATEST_STATUS = sql.SQL(
    """LEFT JOIN LATERAL (
            SELECT q.status FROM queue_items q WHERE q.media_id = m.id
            ORDER BY q.queued_at DESC LIMIT 1
        ) latest ON true"""
)


def _sort_value(item: MediaItem, order: Order) -> datetime:
    return item.taken_at or item.created_at if order == "taken" else item.created_at


def _filters(kind: Kind | None, status: Status | None, params: dict[str, object]) -> list[sql.Composable]:
    check_kind(kind)
    where: list[sql.Composable] = [sql.SQL("true")]
    if kind:
        where.append(sql.SQL("m.kind = %(kind)s"))
        params["kind"] = kind
    if status:
        where.append(sql.SQL("latest.status = %(status)s"))
        params["status"] = status
    return where


def list_media(
    conn: psycopg.Connection,
    *,
    kind: Kind | None = None,
    status: Status | None = None,
    order: Order = "uploaded",
    limit: int = DEFAULT_PAGE_SIZE,
    cursor: str | None = None,
) -> MediaPage:
    """Newest first (by upload, or by capture date), a keyset page at a time; ``status`` filters
    on the latest queue item. A cursor belongs to the order it was made in."""
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise ValueError(f"limit must be between 1 and {MAX_PAGE_SIZE}, got {limit}")
    params: dict[str, object] = {"limit": limit + 1}
    where = _filters(kind, status, params)
    sort_key = _SORT_KEY[order]
    if cursor:
        where.append(sql.SQL("({}, m.id) < (%(c_at)s, %(c_id)s)").format(sort_key))
        params["c_at"], params["c_id"] = cursor_key.decode(cursor, datetime, uuid.UUID)
    query = sql.SQL(
        """
        SELECT {columns}, latest.status AS queue_status
        FROM media_items m
        {latest}
        WHERE {where}
        ORDER BY {sort_key} DESC, m.id DESC
        LIMIT %(limit)s
        """
    ).format(
        columns=sql.SQL(", ").join(
            sql.SQL("m.{}").format(sql.Identifier(c)) for c in [*_NEW_COLUMNS, "id", "created_at"]
        ),
        latest=_LATEST_STATUS, where=sql.SQL(" AND ").join(where), sort_key=sort_key,
    )
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(query, params).fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    statuses = {r["id"]: r.pop("queue_status") for r in rows}
    items = [MediaItem(**r) for r in rows]
    next_cursor = cursor_key.encode(_sort_value(items[-1], order), items[-1].id) if more and items else None
    return MediaPage(items, statuses, next_cursor)


@dataclass(frozen=True)
class Neighbours:
    previous: uuid.UUID | None  # newer: before it in the list
    next: uuid.UUID | None  # older: after it


def neighbours(
    conn: psycopg.Connection, media_id: uuid.UUID, *,
    kind: Kind | None = None, status: Status | None = None, order: Order = "uploaded",
) -> Neighbours:
    """The items beside one in the list ``list_media`` pages through with the same filters."""
    item = get(conn, media_id)
    params: dict[str, object] = {"at": _sort_value(item, order), "id": item.id}
    where = _filters(kind, status, params)
    sort_key = _SORT_KEY[order]

    def beside(op: str, direction: str) -> uuid.UUID | None:
        query = sql.SQL(
            "SELECT m.id FROM media_items m {latest} WHERE {where} AND ({key}, m.id) {op} (%(at)s, %(id)s) "
            "ORDER BY {key} {dir}, m.id {dir} LIMIT 1"
        ).format(latest=_LATEST_STATUS, where=sql.SQL(" AND ").join(where), key=sort_key,
                 op=sql.SQL(op), dir=sql.SQL(direction))
        with conn.cursor(row_factory=tuple_row) as cur:
            row = cur.execute(query, params).fetchone()
        return row[0] if row else None

    return Neighbours(previous=beside(">", "ASC"), next=beside("<", "DESC"))


def count_media(conn: psycopg.Connection, *, kind: Kind | None = None, status: Status | None = None) -> int:
    """How many media ``list_media`` would page through with these filters."""
    params: dict[str, object] = {}
    where = _filters(kind, status, params)
    latest = _LATEST_STATUS if status else sql.SQL("")
    query = sql.SQL("SELECT count(*) FROM media_items m {latest} WHERE {where}").format(
        latest=latest, where=sql.SQL(" AND ").join(where))
    with conn.cursor(row_factory=tuple_row) as cur:
        return cur.execute(query, params).fetchone()[0]


def latest_statuses(conn: psycopg.Connection, media_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, str | None]:
    """The latest queue status of each of these media that exists (None: never queued)."""
    query = sql.SQL(
        "SELECT m.id, latest.status FROM media_items m {latest} WHERE m.id = ANY(%s)"
    ).format(latest=_LATEST_STATUS)
    with conn.cursor(row_factory=tuple_row) as cur:
        return dict(cur.execute(query, [list(media_ids)]).fetchall())


def lock_original(conn: psycopg.Connection, storage_key: str) -> None:
    """Until this transaction ends, be the only one recording or removing this original.

    Originals are content-addressed: an upload of the same bytes as media being deleted stores
    the very key the delete is about to remove. The upload takes this lock to record its row and
    check its object is still there; the delete, to check no row names the key and remove it.
    """
    conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", ["original:" + storage_key])


def find_by_storage_key(conn: psycopg.Connection, key: str) -> uuid.UUID | None:
    """Another media row still pointing at ``key`` (content-addressed originals can be shared
    only by identical content, which dedupe prevents; checked anyway before deleting objects)."""
    with conn.cursor(row_factory=tuple_row) as cur:
        row = cur.execute("SELECT id FROM media_items WHERE storage_key = %s", [key]).fetchone()
    return row[0] if row else None
