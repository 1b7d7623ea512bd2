"""The bulk job's SQL: which media to reprocess."""

from __future__ import annotations

from datetime import datetime

import psycopg
from psycopg import sql
from psycopg.rows import tuple_row

from db.vocabulary import check_kind, check_status


def build_selection(
    *,
    model_id: str,
    kind: str | None = None,
    status: str | None = None,
    since: datetime | None = None,
    missing_only: bool = True,
) -> tuple[sql.Composed, dict]:
    """Media to reprocess, with a ``shard`` column Ray Data splits reads on. Values travel as
    parameters; the filters are fixed fragments."""
    where, params = selection_filters(model_id=model_id, kind=kind, status=status, since=since)
    if missing_only:
        where.append(sql.SQL(
            "NOT EXISTS (SELECT 1 FROM depth_maps d WHERE d.media_id = m.id "
            "AND d.model_id = %(model_id)s AND d.format = 'png16')"))
    query = sql.SQL(
        """
        SELECT m.id::text AS media_id, m.kind, m.storage_key, m.bytes,
               -- bigint: abs() of the smallest int4 would overflow.
               abs(hashtext(m.id::text)::bigint) AS shard
        FROM media_items m
        WHERE {where}
        """
    ).format(where=sql.SQL(" AND ").join(where))
    return query, params


def selection_filters(
    *, model_id: str, kind: str | None = None, status: str | None = None,
    since: datetime | None = None,
) -> tuple[list[sql.Composable], dict]:
    """The bulk jobs' filters on ``media_items m`` (kind, status of the model's queue item,
    uploaded since) as WHERE fragments and their parameters."""
    check_kind(kind)
    check_status(status)
    where = [sql.SQL("true")]
    params: dict = {"model_id": model_id}
    if kind:
        where.append(sql.SQL("m.kind = %(kind)s"))
        params["kind"] = kind
    if since:
        where.append(sql.SQL("m.created_at >= %(since)s"))
        params["since"] = since
    if status:
        where.append(sql.SQL(
            "EXISTS (SELECT 1 FROM queue_items q WHERE q.media_id = m.id "
            "AND q.model_id = %(model_id)s AND q.status = %(status)s)"))
        params["status"] = status
    return where, params


def count_selection(conn: psycopg.Connection, query: sql.Composed, params: dict) -> dict[str, int]:
    with conn.cursor(row_factory=tuple_row) as cur:
        rows = cur.execute(
            sql.SQL("SELECT kind, count(*) FROM ({}) s GROUP BY kind").format(query), params
        ).fetchall()
    return dict(rows)
