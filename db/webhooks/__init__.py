"""Webhook endpoints and their deliveries (migration 013): every statement on ``webhooks`` and
``webhook_deliveries`` lives here.

Deliveries are claimed like queue items: claim and mark in one statement, ``FOR UPDATE SKIP
LOCKED``, a lease identified by (delivery id, owner, attempt). ``attempts`` grows at every claim,
so it fences: a holder whose lease expired and whose delivery was claimed again records nothing.
An expired 'delivering' lease is claimable again, which is how a killed deliverer's work is sent
once more (at least once; receivers deduplicate on webhook-id, the event's id).

Order: at most one delivery per endpoint is in flight, and each claim takes an endpoint's oldest
*due* delivery, so an endpoint gets its events in order while it answers. A delivery waiting for
its retry does not hold the later ones back (they are sent meanwhile): an endpoint that is down
for a while gets what it missed in order once it is back, but one that refuses a single event
gets the next ones before that event's retry. In order where practical, never stuck.

Secrets are read only by ``create``, ``rotate_secret`` (which return them once) and ``claim``
(the deliverer signs with them); ``Webhook`` has no secret field, so no listing can leak one.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg.rows import class_row, tuple_row
from psycopg.types.json import Jsonb

from db import cursor as cursor_key
from db.errors import IllegalTransition, InvalidCursor, NotFound
from db.events import NOTIFY_CHANNEL, check_patterns
from db.vocabulary import MAX_PAGE_SIZE

DELIVERY_STATUSES = ("pending", "delivering", "delivered", "failed")
# What is kept of a receiver's answer.
RESPONSE_BODY_CHARS = 4096


class DeliveryInFlight(IllegalTransition):
    """A retry of a delivery being sent right now (the API answers 409)."""

    def __init__(self, delivery_id: int) -> None:
        self.item_id, self.status, self.action = delivery_id, "delivering", "retry"
        ValueError.__init__(self, f"cannot retry delivery {delivery_id}: it is being delivered "
                                  "right now; look again once it is done")


@dataclass(frozen=True)
class Webhook:
    id: uuid.UUID
    url: str
    events: list[str]
    description: str | None
    enabled: bool
    disabled_reason: str | None
    failing_since: datetime | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class Delivery:
    id: int
    webhook_id: uuid.UUID
    event_id: int
    event_type: str
    status: str
    attempts: int
    next_attempt_at: datetime
    response_status: int | None
    response_body: str | None
    last_error: str | None
    latency_ms: float | None
    created_at: datetime
    delivered_at: datetime | None


@dataclass(frozen=True)
class ClaimedDelivery:
    """What the deliverer needs to send one delivery, and its lease."""

    id: int
    webhook_id: uuid.UUID
    url: str
    secret: str
    event_id: int
    event_type: str
    event_data: dict
    event_created_at: datetime
    attempt: int
    lease_owner: str


@dataclass(frozen=True)
class DeliveryPage:
    items: list[Delivery]
    next_cursor: str | None


@dataclass(frozen=True)
class Outcome:
    """How one attempt went. ``kind``: delivered; retry (at ``retry_in_s``); failed for good.
    ``disable``: a reason to disable the endpoint now (it answered 410 Gone)."""

    kind: str
    response_status: int | None = None
    response_body: str | None = None
    error: str | None = None
    latency_ms: float | None = None
    retry_in_s: float = 0.0
    disable: str | None = None


def _one(conn: psycopg.Connection, query: str, params: object) -> tuple | None:
    # Read positionally, whatever row factory the connection has (the pool's is dict_row).
    with conn.cursor(row_factory=tuple_row) as cur:
        return cur.execute(query, params).fetchone()


def _all(conn: psycopg.Connection, query: str, params: object = None) -> list[tuple]:
    with conn.cursor(row_factory=tuple_row) as cur:
        return cur.execute(query, params).fetchall()


_WEBHOOK_COLUMNS = ("w.id, w.url, w.events, w.description, w.enabled, w.disabled_reason, "
                    "w.failing_since, w.created_at, w.updated_at")


# ------------------------------------------------------------------------------------ endpoints

def create(
    conn: psycopg.Connection, url: str, events: Sequence[str], secret: str,
    description: str | None = None,
) -> Webhook:
    """A new enabled endpoint. ``url`` must have passed the caller's address policy already
    (that needs DNS and settings, which are not the database's)."""
    patterns = check_patterns(events)
    if not patterns:
        raise ValueError("subscribe to at least one event type")
    with conn.cursor(row_factory=class_row(Webhook)) as cur:
        return cur.execute(
            f"""INSERT INTO webhooks AS w (url, events, description, secret)
                VALUES (%s, %s, %s, %s) RETURNING {_WEBHOOK_COLUMNS}""",
            [url, patterns, description, secret],
        ).fetchone()


def list_webhooks(conn: psycopg.Connection) -> list[Webhook]:
    with conn.cursor(row_factory=class_row(Webhook)) as cur:
        return cur.execute(
            f"SELECT {_WEBHOOK_COLUMNS} FROM webhooks w ORDER BY w.created_at, w.id").fetchall()


def get(conn: psycopg.Connection, webhook_id: uuid.UUID) -> Webhook:
    with conn.cursor(row_factory=class_row(Webhook)) as cur:
        row = cur.execute(f"SELECT {_WEBHOOK_COLUMNS} FROM webhooks w WHERE w.id = %s",
                          [webhook_id]).fetchone()
    if row is None:
        raise NotFound(f"no webhook {webhook_id}")
    return row


_UNSET = object()


def update(
    conn: psycopg.Connection,
    webhook_id: uuid.UUID,
    *,
    url: str | None = None,
    events: Sequence[str] | None = None,
    description: object = _UNSET,
    enabled: bool | None = None,
) -> Webhook:
    """Change what is given. Enabling clears the disabled reason and the failing clock (the
    operator says the receiver is fixed); disabling by hand says so in the reason."""
    sets, params = ["updated_at = now()"], []
    if url is not None:
        sets.append("url = %s")
        params.append(url)
    if events is not None:
        patterns = check_patterns(events)
        if not patterns:
            raise ValueError("subscribe to at least one event type")
        sets.append("events = %s")
        params.append(patterns)
    if description is not _UNSET:
        sets.append("description = %s")
        params.append(description)
    if enabled is True:
        sets.append("enabled = true, disabled_reason = NULL, failing_since = NULL")
    elif enabled is False:
        sets.append("enabled = false, disabled_reason = 'disabled by hand'")
    with conn.cursor(row_factory=class_row(Webhook)) as cur:
        row = cur.execute(
            f"UPDATE webhooks w SET {', '.join(sets)} WHERE w.id = %s RETURNING {_WEBHOOK_COLUMNS}",
            [*params, webhook_id],
        ).fetchone()
    if row is None:
        raise NotFound(f"no webhook {webhook_id}")
    return row


def rotate_secret(conn: psycopg.Connection, webhook_id: uuid.UUID, secret: str) -> None:
    """Sign with ``secret`` from now on. Deliveries already claimed were signed with the old one."""
    row = _one(conn, "UPDATE webhooks SET secret = %s, updated_at = now() WHERE id = %s "
               "RETURNING id", [secret, webhook_id])
    if row is None:
        raise NotFound(f"no webhook {webhook_id}")


def delete(conn: psycopg.Connection, webhook_id: uuid.UUID) -> None:
    """The endpoint and its deliveries (ON DELETE CASCADE)."""
    if _one(conn, "DELETE FROM webhooks WHERE id = %s RETURNING id", [webhook_id]) is None:
        raise NotFound(f"no webhook {webhook_id}")


def send_test(conn: psycopg.Connection, webhook_id: uuid.UUID) -> Delivery:
    """A webhook.test event and its one delivery, to this endpoint only (the fan-out trigger
    leaves webhook.test out on purpose), in one transaction; a disabled endpoint gets it once it
    is enabled again."""
    hook = get(conn, webhook_id)
    row = _one(
        conn,
        """WITH event AS (INSERT INTO events (type, data) VALUES ('webhook.test', %s) RETURNING id)
           INSERT INTO webhook_deliveries (webhook_id, event_id)
           SELECT %s, id FROM event RETURNING id""",
        [Jsonb({"webhook_id": str(hook.id), "url": hook.url}), webhook_id])
    conn.execute("SELECT pg_notify(%s, '')", [NOTIFY_CHANNEL])  # wake the deliverer
    return get_delivery(conn, webhook_id, row[0])


# ----------------------------------------------------------------------------------- deliveries

_DELIVERY_COLUMNS = """d.id, d.webhook_id, d.event_id, e.type AS event_type, d.status, d.attempts,
    d.next_attempt_at, d.response_status, d.response_body, d.last_error, d.latency_ms,
    d.created_at, d.delivered_at"""


def get_delivery(conn: psycopg.Connection, webhook_id: uuid.UUID, delivery_id: int) -> Delivery:
    with conn.cursor(row_factory=class_row(Delivery)) as cur:
        row = cur.execute(
            f"""SELECT {_DELIVERY_COLUMNS} FROM webhook_deliveries d JOIN events e ON e.id = d.event_id
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
            f"""SELECT {_DELIVERY_COLUMNS} FROM webhook_deliveries d JOIN events e ON e.id = d.event_id
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
    row = _one(
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
    FROM picked, webhooks w, events e
    WHERE d.id = picked.id AND w.id = d.webhook_id AND e.id = d.event_id
    RETURNING d.id, d.webhook_id, w.url, w.secret, d.event_id, e.type AS event_type,
              e.data AS event_data, e.created_at AS event_created_at, d.attempts AS attempt,
              d.lease_owner
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
    rows = _all(
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
    row = _one(
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
    """Delete up to ``batch`` events older than ``older_than_s`` that no delivery still waits on
    (their finished deliveries go with them); the caller repeats while a full batch went."""
    rows = _all(
        conn,
        """DELETE FROM events WHERE id IN (
               SELECT e.id FROM events e
               WHERE e.created_at < now() - make_interval(secs => %s)
                 AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d
                                 WHERE d.event_id = e.id AND d.status IN ('pending', 'delivering'))
               ORDER BY e.id LIMIT %s)
           RETURNING id""", [older_than_s, batch])
    return len(rows)


def due_at(conn: psycopg.Connection) -> datetime | None:
    """When the next delivery of an enabled endpoint can be claimed (or a lease runs out), for
    a deliverer that sleeps until then rather than polling blindly. Deliveries behind one in
    flight do not count: they wait for it, and its end wakes the deliverer."""
    row = _one(
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
