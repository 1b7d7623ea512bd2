"""The events outbox (migrations 013, 020): writing an event, and reading them in a safe order.

The outbox holds batches: one row per writing statement, each of its events an element of the
row's arrays with an id of its own (the batch's id plus its place in it; migration 020).

Most events are written by triggers and the queue's completing statements, in the transaction of
the change they report; ``emit`` is for the few that report something no table change says
(a webhook's test, the queue running dry).

Reading: events are read in (xid, id) order and only from transactions that have finished, so a
reader resuming after an event never misses one that committed late with a smaller id. The
horizon is the oldest transaction still running *in this database* (transaction ids are the
server's, but only this database's transactions can write its events), taken before the read's
snapshot: everything below it has finished and is visible to the read. A long-running writing
transaction in this database holds the readers back until it ends; nothing is lost.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg.rows import class_row, tuple_row
from psycopg.types.json import Jsonb

# Woken when events fanned out to webhook deliveries (migration 013 says why only then); readers
# of the stream poll ``latest``.
NOTIFY_CHANNEL = "depthmill_webhooks"

# Every type an event can have; a subscription or filter names types, a family ("item.*") or "*".
EVENT_TYPES: tuple[str, ...] = (
    "media.created", "media.deleted",
    "item.queued", "item.started", "item.retrying", "item.completed", "item.failed",
    "item.cancelled",
    "queue.drained",
    "webhook.test",
)
_PATTERN = re.compile(r"^(\*|[a-z]+\.\*|[a-z]+\.[a-z_]+)$")


@dataclass(frozen=True)
class Event:
    id: int
    type: str
    data: dict
    created_at: datetime


def check_patterns(patterns: Sequence[str]) -> list[str]:
    """Subscription patterns, each a known type, a known family ('item.*') or '*'; a
    ValueError says which one is not."""
    families = {t.split(".")[0] for t in EVENT_TYPES}
    for p in patterns:
        known = p == "*" or p in EVENT_TYPES or (p.endswith(".*") and p[:-2] in families)
        if not _PATTERN.match(p) or not known:
            raise ValueError(f"unknown event type {p!r}; expected one of {', '.join(EVENT_TYPES)},"
                             " a family such as 'item.*', or '*'")
    return list(dict.fromkeys(patterns))


def matches(patterns: Sequence[str] | None, type_: str) -> bool:
    """Does ``type_`` match any pattern (no patterns: everything)? The SQL twin is
    ``depthmill_webhook_subscribes``."""
    if not patterns:
        return True
    return type_ in patterns or "*" in patterns or f"{type_.split('.')[0]}.*" in patterns


def emit(conn: psycopg.Connection, type_: str, data: dict) -> int:
    """Write one event in the caller's transaction; its id."""
    # Read positionally whatever the connection's row factory (the pool's is dict_row).
    with conn.cursor(row_factory=tuple_row) as cur:
        row = cur.execute(
            "INSERT INTO event_batches (types, detail) VALUES (ARRAY[%s], ARRAY[%s::jsonb]) "
            "RETURNING id", [type_, Jsonb(data)]).fetchone()
    return row[0]


# The running transactions of the snapshot (xid8) that belong to this database's backends
# (pg_stat_activity has their 32-bit xids), else the snapshot's xmax: below it all has finished.
# Its own statement, before the read: the read's snapshot is then newer than the horizon.
_HORIZON = """
    SELECT coalesce(
        (SELECT min(x) FROM pg_snapshot_xip(snap.s) AS x
         WHERE (x::text::bigint % 4294967296) IN (
             SELECT a.backend_xid::text::bigint FROM pg_stat_activity a
             WHERE a.datname = current_database() AND a.backend_xid IS NOT NULL)),
        pg_snapshot_xmax(snap.s))::text
    FROM (SELECT pg_current_snapshot() AS s) AS snap
"""


def _horizon(conn: psycopg.Connection) -> str:
    with conn.cursor(row_factory=tuple_row) as cur:
        return cur.execute(_HORIZON).fetchone()[0]


# The batch an event id is in: the one with the greatest id at or below it, if it reaches it.
_BATCH_OF = """
    SELECT xid::text, id FROM (
        SELECT xid, id, types FROM event_batches WHERE id <= %(id)s ORDER BY id DESC LIMIT 1
    ) AS b
    WHERE %(id)s < b.id + cardinality(b.types)
"""

# The events after a position, in (xid, id) order: the next batches through their index (one
# more than the page, as the position's own batch may hold nothing after it), each expanded into
# its events, less those up to the position.
_READ = """
    SELECT e.id, e.type, e.data, b.created_at
    FROM (SELECT * FROM event_batches
          WHERE xid < %(horizon)s::xid8
            AND (xid, id) >= (%(xid)s::xid8, %(batch)s::bigint)
            AND id + cardinality(types) - 1 > %(min_id)s
          ORDER BY xid, id
          LIMIT %(limit)s + 1) AS b
    CROSS JOIN LATERAL depthmill_batch_events(b) AS e
    WHERE (b.xid, e.id) > (%(xid)s::xid8, %(after)s::bigint)
      AND e.id > %(min_id)s
    ORDER BY b.xid, e.id
    LIMIT %(limit)s
"""


def read_after(
    conn: psycopg.Connection,
    after: int | None,
    *,
    limit: int = 500,
) -> list[Event]:
    """The next events after event ``after`` (None: from the oldest kept), in a safe order.
    Every type: a reader filters (``matches``) and still moves past what it skipped.

    ``after`` no longer in the outbox (pruned, or from another database): the events with a
    larger id, which is as near as the outbox can tell.
    """
    position = {"xid": "0", "batch": 0, "after": 0, "min_id": 0}
    if after is not None:
        with conn.cursor(row_factory=tuple_row) as cur:
            row = cur.execute(_BATCH_OF, {"id": after}).fetchone()
        position = ({"xid": row[0], "batch": row[1], "after": after, "min_id": 0} if row
                    else {"xid": "0", "batch": 0, "after": 0, "min_id": after})
    params = {**position, "horizon": _horizon(conn), "limit": limit}
    with conn.cursor(row_factory=class_row(Event)) as cur:
        return cur.execute(_READ, params).fetchall()


def latest(conn: psycopg.Connection) -> int | None:
    """The last event a reader starting now has no need to see: the newest of the finished
    transactions' events, in read order. None when there is none yet."""
    horizon = _horizon(conn)
    with conn.cursor(row_factory=tuple_row) as cur:
        row = cur.execute(
            "SELECT id + cardinality(types) - 1 FROM event_batches WHERE xid < %s::xid8 "
            "ORDER BY xid DESC, id DESC LIMIT 1", [horizon]).fetchone()
    return row[0] if row else None
