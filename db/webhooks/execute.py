"""Running the webhook statements: read positionally, whatever the connection's row factory."""

from __future__ import annotations

import psycopg
from psycopg.rows import tuple_row


def fetch_one(conn: psycopg.Connection, query: str, params: object) -> tuple | None:
    # Read positionally, whatever row factory the connection has (the pool's is dict_row).
    with conn.cursor(row_factory=tuple_row) as cur:
        return cur.execute(query, params).fetchone()


def fetch_all(conn: psycopg.Connection, query: str, params: object = None) -> list[tuple]:
    with conn.cursor(row_factory=tuple_row) as cur:
        return cur.execute(query, params).fetchall()
