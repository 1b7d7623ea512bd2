"""An endpoint's deliveries as its owner sees them: one, a page of them, a retry by hand, and a
test event sent to it alone."""

from __future__ import annotations

import uuid

import psycopg
from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from db import cursor as cursor_key
from db.errors import InvalidCursor, NotFound
from db.events import NOTIFY_CHANNEL
from db.vocabulary import MAX_PAGE_SIZE
from db.webhooks.endpoints import get
from db.webhooks.execute import fetch_one
from db.webhooks.types import DELIVERY_STATUSES, Delivery, DeliveryInFlight, DeliveryPage

_DELIVERY_COLUMNS = """d.id, d.webhook_id, d.event_id, b.types[d.event_id - b.id + 1] AS event_type,
    d.status, d.attempts,
    d.next_attempt_at, d.response_status, d.response_body, d.last_error, d.latency_ms,
    d.created_at, d.delivered_at"""


def get_delivery(conn: psycopg.Connection, webhook_id: uuid.UUID, delivery_id: int) -> Delivery:
    with conn.cursor(row_factory=class_row(Delivery)) as cur:
        row = cur.execute(
            f"""SELECT {_DELIVERY_COLUMNS} FROM webhook_deliveries d
                JOIN event_batches b ON b.id = d.batch_id
                WHERE d.id = %s AND d.webhook_id = %s""", [delivery_id, webhook_id]).fetchone()
    if row is None:
        raise NotFound(f"no delivery {delivery_id} of webhook {webhook_id}")
    return row


def list_deliveries(
    conn: psycopg.Connection,
    webhook_id: uuid.UUID,
    *,
    status: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> DeliveryPage:
    """An endpoint's deliveries, newest first, a keyset page at a time."""
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise ValueError(f"limit must be between 1 and {MAX_PAGE_SIZE}")
    if status is not None and status not in DELIVERY_STATUSES:
        raise ValueError(f"unknown delivery status {status!r}; one of {', '.join(DELIVERY_STATUSES)}")
    get(conn, webhook_id)  # NotFound for an unknown endpoint, not an empty page
    before = cursor_key.decode(cursor, int)[0] if cursor else None
    if before is not None and not 0 < before < 2**63:
        raise InvalidCursor(f"invalid cursor {cursor[:64]!r}")
    with conn.cursor(row_factory=class_row(Delivery)) as cur:
        rows = cur.execute(
            f"""SELECT {_DELIVERY_COLUMNS} FROM webhook_deliveries d
                JOIN event_batches b ON b.id = d.batch_id
                WHERE d.webhook_id = %(webhook_id)s
                  AND (%(status)s::text IS NULL OR d.status = %(status)s)
                  AND (%(before)s::bigint IS NULL OR d.id < %(before)s)
                ORDER BY d.id DESC LIMIT %(limit)s""",
            {"webhook_id": webhook_id, "status": status, "before": before, "limit": limit + 1},
        ).fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    return DeliveryPage(rows, cursor_key.encode(rows[-1].id) if more else None)


def retry(conn: psycopg.Connection, webhook_id: uuid.UUID, delivery_id: int) -> Delivery:
    """Send a delivery again now, with the whole retry schedule ahead of it. One in flight
    cannot be retried (it is being sent); one whose lease expired can."""
    get_delivery(conn, webhook_id, delivery_id)  # NotFound first
    row = fetch_one(
        conn,
        """UPDATE webhook_deliveries SET status = 'pending', attempts = 0, next_attempt_at = now(),
               lease_owner = NULL, lease_expires_at = NULL
           WHERE id = %s AND webhook_id = %s
             -- One whose holder died (its lease ran out) is not being sent: it may go again.
             AND (status <> 'delivering' OR lease_expires_at < now())
           RETURNING id""",
        [delivery_id, webhook_id])
    if row is None:
        raise DeliveryInFlight(delivery_id)
    conn.execute("SELECT pg_notify(%s, '')", [NOTIFY_CHANNEL])  # wake the deliverer
    return get_delivery(conn, webhook_id, delivery_id)


def send_test(conn: psycopg.Connection, webhook_id: uuid.UUID) -> Delivery:
    """A webhook.test event and its one delivery, to this endpoint only (the fan-out trigger
    leaves webhook.test out on purpose), in one transaction; a disabled endpoint gets it once it
    is enabled again."""
    hook = get(conn, webhook_id)
    row = fetch_one(
        conn,
        """WITH event AS (INSERT INTO event_batches (types, detail)
                          VALUES (ARRAY['webhook.test'], ARRAY[%s::jsonb]) RETURNING id)
           INSERT INTO webhook_deliveries (webhook_id, batch_id, event_id)
           SELECT %s, id, id FROM event RETURNING id""",
        [Jsonb({"webhook_id": str(hook.id), "url": hook.url}), webhook_id])
    conn.execute("SELECT pg_notify(%s, '')", [NOTIFY_CHANNEL])  # wake the deliverer
    return get_delivery(conn, webhook_id, row[0])
