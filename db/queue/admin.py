"""What people and the API do with the queue: enqueue, release, cancel, retry, read, count."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

import psycopg
from psycopg import sql
from psycopg.rows import class_row

from db import cursor as cursor_key
from db.errors import IllegalTransition, NotFound
from db.queue.execute import fetch_items, fetch_tuples, notify_if
from db.queue.statements import (
    REPORT_DRAINED,
    CANCEL,
    CLOSE_FAILED,
    ENQUEUE,
    GET,
    ITEM_COLUMNS,
    RELEASE,
    RETRY,
    RETRY_ALL_FAILED,
    STATS,
)
from db.queue.types import Page, QueueItem, QueueStats, SummaryRow
from db.vocabulary import (
    DEFAULT_PAGE_SIZE,
    KINDS,
    MAX_PAGE_SIZE,
    MAX_PRIORITY,
    MIN_PRIORITY,
    STATUSES,
    Kind,
    Status,
    check_kind,
    check_status,
)


def enqueue_many(
    conn: psycopg.Connection,
    media_ids: Sequence[uuid.UUID],
    model_id: str,
    *,
    priority: int | None = None,
    max_attempts: int = 3,
    hold: bool = False,
) -> list[QueueItem]:
    """Queue each media item for ``model_id``; an existing active item is returned instead.

    ``priority`` overrides the default band (0 runs first). ``hold`` leaves new items ``pending``
    (registered, not claimable) until ``release`` queues them.
    """
    _check_priority(priority)
    params = {
        "media_ids": list(media_ids),
        "model_id": model_id,
        "priority": priority,
        "max_attempts": max_attempts,
        "status": "pending" if hold else "queued",
    }
    return fetch_items(conn, ENQUEUE, params)


def enqueue(
    conn: psycopg.Connection,
    media_id: uuid.UUID,
    model_id: str,
    *,
    priority: int | None = None,
    max_attempts: int = 3,
    hold: bool = False,
) -> QueueItem:
    rows = enqueue_many(
        conn, [media_id], model_id, priority=priority, max_attempts=max_attempts, hold=hold
    )
    if not rows:
        raise NotFound(f"media item {media_id} not found")
    return rows[0]


def _check_priority(priority: int | None) -> None:
    if priority is not None and not MIN_PRIORITY <= priority <= MAX_PRIORITY:
        raise ValueError(f"priority must be between {MIN_PRIORITY} and {MAX_PRIORITY}, got {priority}")


def release(conn: psycopg.Connection, item_ids: Sequence[uuid.UUID]) -> int:
    """Move held (pending) items into the queue; returns how many moved."""
    return notify_if(conn, len(fetch_tuples(conn, RELEASE, {"ids": list(item_ids)})))


def cancel(conn: psycopg.Connection, item_id: uuid.UUID) -> QueueItem:
    """Cancel a waiting item now, or ask the holder of a running one to stop."""
    if fetch_tuples(conn, CANCEL, {"id": item_id}):
        return get_item(conn, item_id)
    raise IllegalTransition(item_id, get_item(conn, item_id).status, "cancel")


def retry(conn: psycopg.Connection, item_id: uuid.UUID) -> QueueItem:
    """Queue a failed or cancelled item again with fresh attempts (last_error is kept)."""
    try:
        with conn.transaction():  # a savepoint: a conflict must not abort the caller's work
            changed = fetch_tuples(conn, RETRY, {"id": item_id})
    except psycopg.errors.UniqueViolation:
        raise IllegalTransition(
            item_id, get_item(conn, item_id).status, "retry",
            "another active item exists for the same media and model",
        ) from None
    if not changed:
        raise IllegalTransition(item_id, get_item(conn, item_id).status, "retry")
    notify_if(conn, len(changed))
    return get_item(conn, item_id)


def retry_all_failed(
    conn: psycopg.Connection, *, kind: Kind | None = None, model_id: str | None = None
) -> int:
    """Queue every failed item again; returns how many."""
    return notify_if(
        conn, len(fetch_tuples(conn, RETRY_ALL_FAILED, {"kind": kind, "model_id": model_id}))
    )


def close_failed_items(conn: psycopg.Connection, media_ids: Sequence[uuid.UUID], model_id: str) -> int:
    """Another path (the bulk job) produced these media's outputs: their failed or cancelled
    items are done. Items some scheduler holds (processing) are left to it."""
    if not media_ids:
        return 0
    return len(fetch_tuples(conn, CLOSE_FAILED, {"media_ids": list(media_ids), "model_id": model_id}))


def report_if_drained(conn: psycopg.Connection, model_id: str) -> bool:
    """Write queue.drained when nothing of ``model_id`` is left to run (the scheduler asks when
    its last item in flight finished and it claimed nothing). True when it was written."""
    return bool(fetch_tuples(conn, REPORT_DRAINED, {"model_id": model_id}))


def get_item(conn: psycopg.Connection, item_id: uuid.UUID) -> QueueItem:
    rows = fetch_items(conn, GET, {"id": item_id})
    if not rows:
        raise NotFound(f"queue item {item_id} not found")
    return rows[0]


def items_for_media(conn: psycopg.Connection, media_id: uuid.UUID) -> list[QueueItem]:
    query = sql.SQL(
        "SELECT {columns} FROM queue_items q "
        "WHERE q.media_id = %(id)s ORDER BY q.queued_at DESC, q.id DESC"
    ).format(columns=ITEM_COLUMNS)
    return fetch_items(conn, query, {"id": media_id})


def encode_cursor(item: QueueItem) -> str:
    """A list_items page's cursor: its last item's claim-order key."""
    return cursor_key.encode(item.priority, item.queued_at, item.id)


def decode_cursor(cursor: str) -> tuple[int, datetime, uuid.UUID]:
    return cursor_key.decode(cursor, int, datetime, uuid.UUID)


def list_items(
    conn: psycopg.Connection,
    *,
    statuses: Sequence[Status] | None = None,
    kind: Kind | None = None,
    model_id: str | None = None,
    limit: int = DEFAULT_PAGE_SIZE,
    cursor: str | None = None,
) -> Page:
    """Queue items in claim order (priority, then age), filtered, a keyset page at a time."""
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise ValueError(f"limit must be between 1 and {MAX_PAGE_SIZE}, got {limit}")
    for status in statuses or ():
        check_status(status)
    check_kind(kind)
    # Filters are fixed SQL fragments; only values travel, as parameters.
    where = [sql.SQL("true")]
    params: dict[str, object] = {"limit": limit + 1}
    if statuses:
        where.append(sql.SQL("q.status = ANY(%(statuses)s)"))
        params["statuses"] = list(statuses)
    if kind:
        where.append(sql.SQL("q.kind = %(kind)s"))
        params["kind"] = kind
    if model_id:
        where.append(sql.SQL("q.model_id = %(model_id)s"))
        params["model_id"] = model_id
    if cursor:
        where.append(sql.SQL("(q.priority, q.queued_at, q.id) > (%(c_pri)s, %(c_at)s, %(c_id)s)"))
        params["c_pri"], params["c_at"], params["c_id"] = decode_cursor(cursor)
    query = sql.SQL(
        "SELECT {columns} FROM queue_items q "
        "WHERE {where} ORDER BY q.priority, q.queued_at, q.id LIMIT %(limit)s"
    ).format(columns=ITEM_COLUMNS, where=sql.SQL(" AND ").join(where))
    rows = fetch_items(conn, query, params)
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(items=rows, next_cursor=encode_cursor(rows[-1]) if more else None)


def stats(conn: psycopg.Connection) -> QueueStats:
    counts: dict[Status, dict[Kind, int]] = {s: {k: 0 for k in KINDS} for s in STATUSES}
    last_minute = last_hour = 0
    weighted = 0.0
    done = 0
    for status, kind, n, minute, hour, avg_seconds in fetch_tuples(conn, STATS):
        counts[status][kind] = n
        if status == "completed":
            last_minute += minute
            last_hour += hour
            if avg_seconds is not None:
                weighted += avg_seconds * n
                done += n
    return QueueStats(
        counts=counts,
        completed_last_minute=last_minute,
        completed_last_hour=last_hour,
        avg_processing_seconds=weighted / done if done else None,
    )


def summary(conn: psycopg.Connection) -> list[SummaryRow]:
    """The queue summary ImmichVR's queue manager serves: one row per status and kind."""
    with conn.cursor(row_factory=class_row(SummaryRow)) as cur:
        return cur.execute(
            "SELECT status, kind, items, avg_processing_seconds, oldest_queued_at, "
            "last_completed_at, errors FROM processing_queue_summary ORDER BY status, kind"
        ).fetchall()
