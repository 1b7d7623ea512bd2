"""What the delivery actor runs: claim due deliveries (a lease each, at most one per endpoint),
heartbeat, record an attempt's outcome with the endpoint's health, hand an endpoint's slot to its
next delivery, sleep until the next is due, and prune old events."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

import psycopg
from psycopg.rows import class_row

from db.webhooks.execute import fetch_all, fetch_one
from db.webhooks.types import RESPONSE_BODY_CHARS, ClaimedDelivery, Outcome

_CLAIM = """
    WITH busy AS (
        -- Endpoints with a delivery in flight whose lease still holds: nothing more for them.
        SELECT DISTINCT webhook_id FROM webhook_deliveries
        WHERE status = 'delivering' AND lease_expires_at >= now()
    ),
    oldest AS (
        -- Each enabled, free endpoint's oldest due delivery (pending, or delivering with an
        -- expired lease: its holder died).
        SELECT DISTINCT ON (d.webhook_id) d.id
        FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id AND w.enabled
        WHERE d.status IN ('pending', 'delivering') AND d.next_attempt_at <= now()
          AND (d.status = 'pending' OR d.lease_expires_at < now())
          AND d.webhook_id NOT IN (SELECT webhook_id FROM busy)
          AND (%(webhook)s::uuid IS NULL OR d.webhook_id = %(webhook)s::uuid)
        ORDER BY d.webhook_id, d.id
    ),
    picked AS (
        SELECT d.id FROM webhook_deliveries d
        WHERE d.id IN (SELECT id FROM oldest)
          -- Read again under the lock: another claimer may have taken it meanwhile.
          AND (d.status = 'pending' OR (d.status = 'delivering' AND d.lease_expires_at < now()))
        ORDER BY d.id
        LIMIT %(n)s
        FOR UPDATE SKIP LOCKED
    )
    UPDATE webhook_deliveries d
    SET status = 'delivering', attempts = d.attempts + 1, lease_owner = %(owner)s,
        lease_expires_at = now() + make_interval(secs => %(lease_s)s)
    FROM picked, webhooks w, event_batches b
    WHERE d.id = picked.id AND w.id = d.webhook_id AND b.id = d.batch_id
    RETURNING d.id, d.webhook_id, w.url, w.secret, d.event_id,
              b.types[d.event_id - b.id + 1] AS event_type,
              depthmill_event_data(b, (d.event_id - b.id + 1)::int) AS event_data,
              b.created_at AS event_created_at, d.attempts AS attempt, d.lease_owner
"""


def claim(conn: psycopg.Connection, n: int, owner: str, lease_s: float) -> list[ClaimedDelivery]:
    """Lease up to ``n`` due deliveries to ``owner``, at most one per endpoint (see the module's
    note on order), oldest first."""
    return _claim(conn, n, owner, lease_s, None)


def _claim(conn: psycopg.Connection, n: int, owner: str, lease_s: float,
           webhook_id: uuid.UUID | None) -> list[ClaimedDelivery]:
    if n <= 0:
        return []
    with conn.cursor(row_factory=class_row(ClaimedDelivery)) as cur:
        rows = cur.execute(_CLAIM, {"n": n, "owner": owner, "lease_s": lease_s,
                                    "webhook": webhook_id}).fetchall()
    return sorted(rows, key=lambda d: d.id)


def extend_leases(
    conn: psycopg.Connection, held: Sequence[ClaimedDelivery], lease_s: float
) -> set[int]:
    """Heartbeat: the ids whose lease still held and now runs ``lease_s`` longer."""
    if not held:
        return set()
    rows = fetch_all(
        conn,
        """UPDATE webhook_deliveries d SET lease_expires_at = now() + make_interval(secs => %s)
           FROM unnest(%s::bigint[], %s::int[], %s::text[]) AS h(id, attempt, owner)
           WHERE d.id = h.id AND d.attempts = h.attempt AND d.lease_owner = h.owner
             AND d.status = 'delivering'
           RETURNING d.id""",
        [lease_s, [d.id for d in held], [d.attempt for d in held], [d.lease_owner for d in held]],
    )
    return {r[0] for r in rows}


def record(
    conn: psycopg.Connection, delivery: ClaimedDelivery, outcome: Outcome, *,
    disable_after_s: float,
) -> bool:
    """Record one attempt's outcome, fenced by the lease; False when it was no longer held.

    The endpoint's health moves with it, in the same transaction: a 2xx clears failing_since;
    anything else starts it (if not started) and disables the endpoint once it is older than
    ``disable_after_s``; ``outcome.disable`` (a 410) disables it at once.
    """
    if outcome.kind not in ("delivered", "retry", "failed"):
        raise ValueError(f"unknown outcome {outcome.kind!r}")
    status = {"delivered": "delivered", "retry": "pending", "failed": "failed"}[outcome.kind]
    body = outcome.response_body[:RESPONSE_BODY_CHARS] if outcome.response_body else None
    row = fetch_one(
        conn,
        """UPDATE webhook_deliveries
           SET status = %(status)s, response_status = %(code)s, response_body = %(body)s,
               last_error = left(%(error)s, 2000), latency_ms = %(latency)s,
               next_attempt_at = CASE WHEN %(status)s = 'pending'
                   THEN now() + make_interval(secs => %(retry_in)s) ELSE next_attempt_at END,
               delivered_at = CASE WHEN %(status)s = 'delivered' THEN now() END,
               lease_owner = NULL, lease_expires_at = NULL
           WHERE id = %(id)s AND attempts = %(attempt)s AND lease_owner = %(owner)s
             AND status = 'delivering'
           RETURNING id""",
        {"status": status, "code": outcome.response_status, "body": body,
         "error": outcome.error, "latency": outcome.latency_ms, "retry_in": outcome.retry_in_s,
         "id": delivery.id, "attempt": delivery.attempt, "owner": delivery.lease_owner},
    )
    if row is None:
        return False
    if outcome.kind == "delivered":
        conn.execute("UPDATE webhooks SET failing_since = NULL WHERE id = %s "
                     "AND failing_since IS NOT NULL", [delivery.webhook_id])
    elif outcome.disable:
        conn.execute("UPDATE webhooks SET enabled = false, disabled_reason = %s, "
                     "updated_at = now() WHERE id = %s", [outcome.disable, delivery.webhook_id])
    else:
        conn.execute(
            """UPDATE webhooks
               SET failing_since = coalesce(failing_since, now()),
                   enabled = enabled AND NOT coalesce(
                       failing_since < now() - make_interval(secs => %(after)s), false),
                   disabled_reason = CASE
                       WHEN enabled AND failing_since < now() - make_interval(secs => %(after)s)
                       THEN format('every delivery failed since %%s (for more than %%s s)',
                                   failing_since, %(after)s)
                       ELSE disabled_reason END
               WHERE id = %(id)s""",
            {"after": disable_after_s, "id": delivery.webhook_id})
    return True


def record_and_claim_next(
    conn: psycopg.Connection, delivery: ClaimedDelivery, outcome: Outcome, *,
    disable_after_s: float, lease_s: float,
) -> tuple[bool, ClaimedDelivery | None]:
    """``record``, then, in the same transaction, lease the endpoint's next due delivery to the
    same owner: the endpoint's one slot passes straight on, so a busy endpoint is not waiting on
    a claim round of the whole table per event. None when nothing is due for it, the endpoint
    was disabled, or the outcome was not recorded (the lease was lost)."""
    if not record(conn, delivery, outcome, disable_after_s=disable_after_s):
        return False, None
    following = _claim(conn, 1, delivery.lease_owner, lease_s, delivery.webhook_id)
    return True, (following[0] if following else None)


def prune_events(conn: psycopg.Connection, older_than_s: float, batch: int = 1000) -> int:
    """Delete up to ``batch`` outbox batches older than ``older_than_s`` none of whose events a
    delivery still waits on (their finished deliveries go with them); the number of events
    deleted, at least ``batch`` when a full batch went, so the caller repeats while it is. A
    batch is written by one statement: all its events are as old."""
    rows = fetch_all(
        conn,
        """DELETE FROM event_batches WHERE id IN (
               SELECT b.id FROM event_batches b
               WHERE b.created_at < now() - make_interval(secs => %s)
                 AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d
                                 WHERE d.batch_id = b.id AND d.status IN ('pending', 'delivering'))
               ORDER BY b.id LIMIT %s)
           RETURNING cardinality(types)""", [older_than_s, batch])
    return sum(r[0] for r in rows)


def due_at(conn: psycopg.Connection) -> datetime | None:
    """When the next delivery of an enabled endpoint can be claimed (or a lease runs out), for
    a deliverer that sleeps until then rather than polling blindly. Deliveries behind one in
    flight do not count: they wait for it, and its end wakes the deliverer."""
    row = fetch_one(
        conn,
        """SELECT min(CASE WHEN d.status = 'delivering'
                           THEN greatest(d.next_attempt_at, d.lease_expires_at)
                           ELSE d.next_attempt_at END)
           FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id AND w.enabled
           WHERE d.status IN ('pending', 'delivering')
             AND (d.status = 'delivering' OR d.webhook_id NOT IN (
                 SELECT webhook_id FROM webhook_deliveries
                 WHERE status = 'delivering' AND lease_expires_at >= now()))""", None)
    return row[0]
