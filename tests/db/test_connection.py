"""Lost connections are retried on a fresh one; a server that stays away is reported clearly."""

from __future__ import annotations

import logging

import psycopg
import pytest

from db import queue
from db.connection import Database, DatabaseUnavailable
from devkit.factories import insert_media


def test_operation_is_retried_after_its_connection_dies(db, caplog):
    calls = []

    def claim_after_losing_connection(conn: psycopg.Connection):
        calls.append(conn.info.backend_pid)
        if len(calls) == 1:
            conn.execute("SELECT pg_terminate_backend(pg_backend_pid())")
        return queue.claim_batch(conn, 5, "w", 60)

    with db.connection() as conn:
        queue.enqueue(conn, insert_media(conn).id, "tiny")
    with caplog.at_level(logging.WARNING, logger="db.connection"):
        claimed = db.run(claim_after_losing_connection)

    assert len(claimed) == 1 and len(calls) == 2 and calls[0] != calls[1]
    assert "database connection lost during claim_after_losing_connection (attempt 1/" in caplog.text


def test_query_errors_are_not_retried(db):
    calls = []

    def bad(conn: psycopg.Connection):
        calls.append(1)
        conn.execute("SELECT * FROM no_such_table")

    with pytest.raises(psycopg.errors.UndefinedTable):
        db.run(bad)
    assert calls == [1]


def test_unreachable_server_is_reported_clearly():
    database = Database(
        "postgresql://postgres@127.0.0.1:1/none?connect_timeout=1",
        retries=1, backoff_base=0.01, timeout=1.0,
    )
    database.open(wait=False)
    try:
        with pytest.raises(DatabaseUnavailable, match=r"database unreachable after 2 attempts \(stats\)"):
            database.run(queue.stats)
    finally:
        database.close()
