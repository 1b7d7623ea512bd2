"""Running the queue's statements: row factories, and waking claimers."""

from __future__ import annotations

import psycopg
from psycopg.abc import Query
from psycopg.rows import class_row, tuple_row

from db.queue.types import QueueItem


def fetch_items(conn: psycopg.Connection, query: Query, params: object) -> list[QueueItem]:
    with conn.cursor(row_factory=class_row(QueueItem)) as cur:
        return cur.execute(query, params).fetchall()


def fetch_tuples(conn: psycopg.Connection, query: Query, params: object = None) -> list[tuple]:
    # Whatever row factory the connection has, these statements are read positionally.
    with conn.cursor(row_factory=tuple_row) as cur:
        return cur.execute(query, params).fetchall()


NOTIFY_CHANNEL = "depthmill_queue"


def notify_if(conn: psycopg.Connection, requeued: int) -> int:
    """Wake claimers when items became claimable. Inserts notify from their statement trigger;
    every other way back to 'queued' goes through db.queue and calls this. Postgres folds
    repeated notifications inside one transaction into one."""
    if requeued:
        conn.execute("SELECT pg_notify(%s, '')", [NOTIFY_CHANNEL])
    return requeued
