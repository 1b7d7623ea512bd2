"""``depth_maps``: one stored output per media + model + format."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime

import psycopg
from psycopg import sql
from psycopg.rows import class_row
from psycopg.types.json import Jsonb


@dataclass(frozen=True)
class NewDepthMap:
    media_id: uuid.UUID
    model_id: str
    model_revision: str | None
    format: str  # png16, preview_webp, video, ...
    storage_key: str
    width: int
    height: int
    raw_min: float | None = None
    raw_max: float | None = None
    metadata: dict = field(default_factory=dict)


@dataclass(frozen=True)
class DepthMap(NewDepthMap):
    id: uuid.UUID = None  # type: ignore[assignment]
    created_at: datetime = None  # type: ignore[assignment]


_NEW_COLUMNS = [f.name for f in fields(NewDepthMap)]
_COLUMNS = sql.SQL(", ").join(sql.Identifier(c) for c in [*_NEW_COLUMNS, "id", "created_at"])

_UPSERT = sql.SQL(
    """
    INSERT INTO depth_maps ({names})
    SELECT * FROM unnest({arrays})
    -- Reprocessing replaces the output: never two results for one media + model + format.
    ON CONFLICT (media_id, model_id, format) DO UPDATE
    SET model_revision = EXCLUDED.model_revision, storage_key = EXCLUDED.storage_key,
        width = EXCLUDED.width, height = EXCLUDED.height, raw_min = EXCLUDED.raw_min,
        raw_max = EXCLUDED.raw_max, metadata = EXCLUDED.metadata, created_at = now()
    RETURNING {columns}
    """
).format(
    names=sql.SQL(", ").join(map(sql.Identifier, _NEW_COLUMNS)),
    arrays=sql.SQL(", ").join(
        sql.SQL("{}::{}[]").format(sql.Placeholder(c), sql.SQL(t))
        for c, t in zip(
            _NEW_COLUMNS,
            ["uuid", "text", "text", "text", "text", "int", "int", "float8", "float8", "jsonb"],
            strict=True,
        )
    ),
    columns=_COLUMNS,
)


def upsert_many(conn: psycopg.Connection, maps: Sequence[NewDepthMap]) -> list[DepthMap]:
    """Record outputs in one statement (batched for the bulk job)."""
    if not maps:
        return []
    params = {c: [getattr(m, c) for m in maps] for c in _NEW_COLUMNS}
    params["metadata"] = [Jsonb(m.metadata) for m in maps]
    with conn.cursor(row_factory=class_row(DepthMap)) as cur:
        return cur.execute(_UPSERT, params).fetchall()


def for_media(conn: psycopg.Connection, media_id: uuid.UUID) -> list[DepthMap]:
    query = sql.SQL(
        "SELECT {columns} FROM depth_maps WHERE media_id = %s ORDER BY model_id, format"
    ).format(columns=_COLUMNS)
    with conn.cursor(row_factory=class_row(DepthMap)) as cur:
        return cur.execute(query, [media_id]).fetchall()
