"""The processing queue: every statement that touches ``processing_queue`` lives here.

Shape borrowed from pgqueuer and River: claim and mark in one statement, fenced leases, batched
completion, partial indexes on the active states. Each function takes a connection and runs inside
the caller's transaction, so a caller can, say, record a depth map and complete its item atomically.

Leases: a claim is identified by (item id, owner, attempt). ``attempts`` grows by one at every
claim, so it doubles as a fencing token: once a lease has expired and the item was claimed again,
the old holder's heartbeat, completion or failure matches no row and changes nothing.

Completed items leave ``processing_queue`` in the statement that completes them, for
``processing_queue_completed`` (migration 006): the hot table holds what is live or may come back.
Reads go through the ``queue_items`` view, which is both.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Literal

import psycopg
from psycopg import sql
from psycopg.rows import class_row, dict_row, tuple_row

from db.errors import IllegalTransition, InvalidCursor, NotFound

Status = Literal["pending", "queued", "processing", "completed", "failed", "cancelled"]
Kind = Literal["photo", "video"]
STATUSES: tuple[Status, ...] = ("pending", "queued", "processing", "completed", "failed", "cancelled")
ACTIVE_STATUSES: tuple[Status, ...] = ("pending", "queued", "processing")
KINDS: tuple[Kind, ...] = ("photo", "video")
MAX_PRIORITY = 200
MAX_PAGE_SIZE = 500


@dataclass(frozen=True)
class Lease:
    """Proof of a claim; completion, failure and heartbeats need it."""

    item_id: uuid.UUID
    owner: str
    attempt: int


@dataclass(frozen=True)
class ClaimedItem:
    """What a claimer needs to process an item, and the lease that proves the claim."""

    id: uuid.UUID
    media_id: uuid.UUID
    model_id: str
    kind: Kind
    bytes: int
    mime: str
    storage_key: str
    priority: int
    attempts: int
    max_attempts: int
    lease_owner: str
    lease_expires_at: datetime
    queued_at: datetime

    @property
    def lease(self) -> Lease:
        return Lease(self.id, self.lease_owner, self.attempts)


@dataclass(frozen=True)
class QueueItem:
    id: uuid.UUID
    media_id: uuid.UUID
    model_id: str
    kind: Kind
    bytes: int
    mime: str
    storage_key: str
    status: Status
    priority: int
    attempts: int
    max_attempts: int
    last_error: str | None
    error_count: int
    cancel_requested: bool
    lease_owner: str | None
    lease_expires_at: datetime | None
    run_after: datetime
    queued_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    processing_duration: float | None
    created: bool = False  # set by enqueue: False when an active item already existed

    @property
    def lease(self) -> Lease:
        if self.status != "processing" or self.lease_owner is None:
            raise ValueError(f"queue item {self.id} is {self.status}, not leased")
        return Lease(self.id, self.lease_owner, self.attempts)


@dataclass(frozen=True)
class FailOutcome:
    item_id: uuid.UUID
    status: Status  # queued (will be retried at run_after), failed or cancelled
    run_after: datetime


@dataclass(frozen=True)
class LeaseReport:
    """What a heartbeat found: leases extended, cancellations honoured, leases no longer held."""

    extended: list[uuid.UUID] = field(default_factory=list)
    cancelled: list[uuid.UUID] = field(default_factory=list)
    lost: list[uuid.UUID] = field(default_factory=list)


@dataclass(frozen=True)
class RecoveredLease:
    item_id: uuid.UUID
    owner: str
    status: Status  # queued again, or failed when its attempts are spent


@dataclass(frozen=True)
class QueueStats:
    counts: dict[Status, dict[Kind, int]]
    completed_last_minute: int
    completed_last_hour: int
    avg_processing_seconds: float | None

    def total(self, status: Status) -> int:
        return sum(self.counts[status].values())

    @property
    def waiting(self) -> int:
        return self.total("pending") + self.total("queued")

    @property
    def remaining(self) -> int:
        return self.waiting + self.total("processing")

    @property
    def throughput_per_minute(self) -> float:
        """Recent completions per minute: the last minute if busy, else the hour's average."""
        if self.completed_last_minute:
            return float(self.completed_last_minute)
        return self.completed_last_hour / 60.0

    @property
    def eta_seconds(self) -> float | None:
        """Seconds to drain what is left at the recent rate; None when nothing has completed."""
        if self.remaining == 0:
            return 0.0
        rate = self.throughput_per_minute
        return None if rate == 0 else self.remaining / rate * 60.0

    def status_counts(self) -> dict[str, int]:
        """Seed 002's queue status shape."""
        return {
            "waiting": self.waiting,
            "active": self.total("processing"),
            "completed": self.total("completed"),
            "failed": self.total("failed"),
            "cancelled": self.total("cancelled"),
            "total": sum(self.total(s) for s in STATUSES),
        }


@dataclass(frozen=True)
class SummaryRow:
    status: Status
    kind: Kind
    items: int
    avg_processing_seconds: float | None
    oldest_queued_at: datetime | None
    last_completed_at: datetime | None
    errors: int


@dataclass(frozen=True)
class Page:
    items: list[QueueItem]
    next_cursor: str | None


# Columns of a QueueItem, read from processing_queue q.
_ITEM_COLUMNS = sql.SQL(
    """q.id, q.media_id, q.model_id, q.kind, q.bytes, q.mime, q.storage_key, q.status,
       q.priority, q.attempts, q.max_attempts, q.last_error, q.error_count, q.cancel_requested,
       q.lease_owner, q.lease_expires_at, q.run_after, q.queued_at, q.started_at,
       q.completed_at, q.processing_duration"""
)


def _items(conn: psycopg.Connection, query: sql.Composable, params: object) -> list[QueueItem]:
    with conn.cursor(row_factory=class_row(QueueItem)) as cur:
        return cur.execute(query, params).fetchall()


def _tuples(conn: psycopg.Connection, query: sql.Composable, params: object = None) -> list[tuple]:
    # Whatever row factory the connection has, these statements are read positionally.
    with conn.cursor(row_factory=tuple_row) as cur:
        return cur.execute(query, params).fetchall()


# --------------------------------------------------------------------------------------------
# enqueue
# --------------------------------------------------------------------------------------------

_ENQUEUE = sql.SQL(
    """
    INSERT INTO processing_queue AS q (media_id, model_id, priority, max_attempts, status,
                                       kind, bytes, mime, storage_key)
    SELECT m.id, %(model_id)s,
           coalesce(%(priority)s, depthmill_default_priority(m.kind, m.bytes)),
           %(max_attempts)s, %(status)s, m.kind, m.bytes, m.mime, m.storage_key
    FROM media_items m
    WHERE m.id = ANY(%(media_ids)s)
    -- In claim order, so a big enqueue lays its rows out the way claims will take them.
    ORDER BY 3, m.id
    -- An active item for this media + model already exists: keep it, and let an explicit
    -- priority ("process this now") move it forward, never back. The row lock ON CONFLICT takes
    -- waits for a claimer holding the row; the claim's SKIP LOCKED never waits on an enqueue.
    -- (processing_queue_media: its third key is true only for an active row.)
    ON CONFLICT (media_id, model_id,
                 (CASE WHEN status IN ('pending', 'queued', 'processing') THEN true END))
    DO UPDATE SET priority = least(q.priority, coalesce(%(priority)s, q.priority)),
                  updated_at = now()
    RETURNING {columns}, (q.xmax = 0) AS created
    """
).format(columns=_ITEM_COLUMNS)


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
    return _items(conn, _ENQUEUE, params)


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
    if priority is not None and not 0 <= priority <= MAX_PRIORITY:
        raise ValueError(f"priority must be between 0 and {MAX_PRIORITY}, got {priority}")


_RELEASE = sql.SQL(
    """
    UPDATE processing_queue SET status = 'queued', queued_at = now(), updated_at = now()
    WHERE id = ANY(%(ids)s) AND status = 'pending'
    RETURNING id
    """
)


def release(conn: psycopg.Connection, item_ids: Sequence[uuid.UUID]) -> int:
    """Move held (pending) items into the queue; returns how many moved."""
    return _notify_if(conn, len(_tuples(conn, _RELEASE, {"ids": list(item_ids)})))


NOTIFY_CHANNEL = "depthmill_queue"


def _notify_if(conn: psycopg.Connection, requeued: int) -> int:
    """Wake claimers when items became claimable. Inserts notify from their statement trigger;
    every other way back to 'queued' goes through this module and calls this. Postgres folds
    repeated notifications inside one transaction into one."""
    if requeued:
        conn.execute("SELECT pg_notify(%s, '')", [NOTIFY_CHANNEL])
    return requeued


# --------------------------------------------------------------------------------------------
# claim, heartbeat, complete, fail
# --------------------------------------------------------------------------------------------


_LEASE = sql.SQL(
    """
    UPDATE processing_queue q
    SET status = 'processing',
        attempts = q.attempts + 1,
        lease_owner = %(owner)s,
        lease_expires_at = now() + make_interval(secs => %(lease_seconds)s),
        started_at = now(),
        updated_at = now()
    -- As an array, not a join: a generic plan cannot tell how many rows LIMIT %(n)s lets
    -- through, guesses a tenth of the table, and would hash-join it.
    WHERE q.id = ANY(ARRAY(SELECT id FROM next))
    RETURNING q.id, q.media_id, q.model_id, q.kind, q.bytes, q.mime, q.storage_key,
              q.priority, q.attempts, q.max_attempts, q.lease_owner, q.lease_expires_at,
              q.queued_at
    """
)


def _claim_ctes(*, for_model: bool) -> sql.Composed:
    """The CTE that picks the most urgent claimable items: ``next``, their ids.

    Locking: FOR UPDATE SKIP LOCKED locks the rows it returns and passes over rows another
    transaction holds (a concurrent claimer taking them, a cancel or enqueue updating them)
    instead of queueing behind its lock, so each row goes to exactly one claimer and no claimer
    waits. MATERIALIZED fences the CTE: it runs once, its LIMIT applies before the UPDATE sees
    its rows, and the planner cannot fold it into the UPDATE (which could then lock and lease
    more rows than the LIMIT). For one model the planner walks processing_queue_claimable
    (model_id, priority, queued_at, id) in claim order and stops after ``n`` rows; for any
    model it reads the queued rows of every model and sorts them.
    """
    model_filter = sql.SQL("AND q.model_id = %(model_id)s") if for_model else sql.SQL("")
    return sql.SQL(
        """
        next AS MATERIALIZED (
            SELECT q.id
            FROM processing_queue q
            WHERE q.status = 'queued' AND q.run_after <= now() {model_filter}
            ORDER BY q.priority, q.queued_at, q.id
            LIMIT %(n)s
            FOR UPDATE SKIP LOCKED
        )
        """
    ).format(model_filter=model_filter)


def build_claim_query(*, for_model: bool) -> sql.Composed:
    """Claim the most urgent claimable items and lease them, in one statement (``_claim_ctes``
    picks, ``_LEASE`` leases)."""
    return sql.SQL("WITH {ctes} {lease}").format(ctes=_claim_ctes(for_model=for_model), lease=_LEASE)


_CLAIM_ANY = build_claim_query(for_model=False)
_CLAIM_MODEL = build_claim_query(for_model=True)


def claim_batch(
    conn: psycopg.Connection,
    n: int,
    owner: str,
    lease_seconds: float,
    *,
    model_id: str | None = None,
) -> list[ClaimedItem]:
    """Lease up to ``n`` claimable items to ``owner``, most urgent first."""
    if n <= 0:
        return []
    params = {"n": n, "owner": owner, "lease_seconds": lease_seconds, "model_id": model_id}
    with conn.cursor(row_factory=class_row(ClaimedItem)) as cur:
        items = cur.execute(_CLAIM_MODEL if model_id is not None else _CLAIM_ANY, params).fetchall()
    return _claim_the_rest(conn, items, params)


def _claim_the_rest(conn: psycopg.Connection, items: list[ClaimedItem], params: dict) -> list[ClaimedItem]:
    """The items in claim order, which UPDATE ... RETURNING does not keep."""
    items.sort(key=lambda i: (i.priority, i.queued_at, i.id))
    return items


# The columns both queue tables share, in table order (a test holds this to the schema).
_TABLE_COLUMNS = (
    "id", "media_id", "model_id", "status", "priority", "attempts", "max_attempts", "last_error",
    "error_count", "cancel_requested", "lease_owner", "lease_expires_at", "run_after", "queued_at",
    "started_at", "completed_at", "processing_duration", "updated_at", "kind", "bytes", "mime",
    "storage_key",
)


def _lease_arrays(leases: Iterable[Lease]) -> dict[str, list]:
    leases = list(leases)
    owners = {lease.owner for lease in leases}
    if len(owners) > 1:
        raise ValueError("leases of one call must share an owner")
    return {
        "ids": [lease.item_id for lease in leases],
        "attempts": [lease.attempt for lease in leases],
        "owner": owners.pop() if owners else "",
    }


# The fence every lease-holder statement shares: still processing, same owner, same attempt.
_HELD = sql.SQL(
    """q.id = held.id AND q.attempts = held.attempt
       AND q.status = 'processing' AND q.lease_owner = %(owner)s"""
)

_EXTEND = sql.SQL(
    """
    UPDATE processing_queue q
    SET lease_expires_at = CASE WHEN q.cancel_requested THEN NULL
                                ELSE now() + make_interval(secs => %(lease_seconds)s) END,
        status = CASE WHEN q.cancel_requested THEN 'cancelled' ELSE 'processing' END,
        lease_owner = CASE WHEN q.cancel_requested THEN NULL ELSE q.lease_owner END,
        completed_at = CASE WHEN q.cancel_requested THEN now() END,
        processing_duration = CASE WHEN q.cancel_requested
            THEN extract(epoch FROM now() - q.started_at) END,
        updated_at = now()
    FROM unnest(%(ids)s::uuid[], %(attempts)s::int[]) AS held(id, attempt)
    WHERE {held}
    RETURNING q.id, q.status
    """
).format(held=_HELD)


def extend_leases(
    conn: psycopg.Connection, leases: Sequence[Lease], lease_seconds: float
) -> LeaseReport:
    """Heartbeat: extend held leases; honour cancel requests; report leases no longer held."""
    if not leases:
        return LeaseReport()
    rows = _tuples(conn, _EXTEND, {**_lease_arrays(leases), "lease_seconds": lease_seconds})
    outcome = dict(rows)
    return LeaseReport(
        extended=[i for i, s in outcome.items() if s == "processing"],
        cancelled=[i for i, s in outcome.items() if s == "cancelled"],
        lost=[lease.item_id for lease in leases if lease.item_id not in outcome],
    )


def _archive(processing_duration: sql.Composable) -> sql.Composed:
    """Insert the rows of the CTE ``done`` (deleted from processing_queue, RETURNING them) into
    processing_queue_completed, completed; returns their ids."""
    completed = {
        "status": sql.SQL("'completed'"),
        "lease_owner": sql.SQL("NULL"),
        "lease_expires_at": sql.SQL("NULL"),
        "completed_at": sql.SQL("now()"),
        "processing_duration": processing_duration,
        "updated_at": sql.SQL("now()"),
    }
    return sql.SQL(
        """
        INSERT INTO processing_queue_completed ({columns})
        SELECT {values} FROM done
        RETURNING id
        """
    ).format(
        columns=sql.SQL(", ").join(map(sql.Identifier, _TABLE_COLUMNS)),
        values=sql.SQL(", ").join(completed.get(c, sql.Identifier(c)) for c in _TABLE_COLUMNS),
    )


def _archive_completed(done: sql.Composable, processing_duration: sql.Composable) -> sql.Composed:
    """``done`` deletes rows from processing_queue RETURNING them; insert them, completed, into
    processing_queue_completed. One statement, so an item is always in exactly one table."""
    return sql.SQL("WITH done AS ({done}) {archive}").format(
        done=done, archive=_archive(processing_duration))


_DELETE_HELD = sql.SQL(
    """
    DELETE FROM processing_queue q
    USING unnest(%(ids)s::uuid[], %(attempts)s::int[]) AS held(id, attempt)
    WHERE {held}
    RETURNING q.*
    """
).format(held=_HELD)
_RUN_TIME = sql.SQL("extract(epoch FROM now() - started_at)")
_COMPLETE = _archive_completed(_DELETE_HELD, _RUN_TIME)


def complete_many(conn: psycopg.Connection, leases: Sequence[Lease]) -> set[uuid.UUID]:
    """Complete items in one statement; returns the ids whose lease was still held.

    An id missing from the result belonged to a zombie: its lease expired and the item was
    recovered or claimed again, so this completion must not count.
    """
    if not leases:
        return set()
    return {row[0] for row in _tuples(conn, _COMPLETE, _lease_arrays(leases))}


def build_complete_and_claim_query(*, for_model: bool) -> sql.Composed:
    """``_COMPLETE`` and a claim in one statement. The two touch different rows (the fence
    wants 'processing', a claim 'queued'). A row is a completed id or a claimed item."""
    return sql.SQL(
        """
        WITH done AS ({delete_held}),
             archived AS ({archive}),
             {claim_ctes},
             claimed AS ({lease})
        SELECT NULL::uuid AS completed, claimed.* FROM claimed
        UNION ALL
        SELECT id, {nulls} FROM archived
        """
    ).format(delete_held=_DELETE_HELD, archive=_archive(_RUN_TIME),
             claim_ctes=_claim_ctes(for_model=for_model), lease=_LEASE,
             nulls=sql.SQL(", ").join([sql.SQL("NULL")] * len(fields(ClaimedItem))))


_COMPLETE_AND_CLAIM_ANY = build_complete_and_claim_query(for_model=False)
_COMPLETE_AND_CLAIM_MODEL = build_complete_and_claim_query(for_model=True)


def complete_and_claim(
    conn: psycopg.Connection,
    leases: Sequence[Lease],
    n: int,
    owner: str,
    lease_seconds: float,
    *,
    model_id: str | None = None,
) -> tuple[set[uuid.UUID], list[ClaimedItem]]:
    """``complete_many(leases)`` and ``claim_batch(n, owner, ...)`` in one statement, for a
    claimer that claims again for the slots its finished items free (the scheduler does).

    One statement is one round trip and, outside a transaction, one commit: a claimer that
    completes and claims separately waits for two WAL flushes a cycle, and at batch 100 the
    flushes were about 40% of the claimers' time in the server (queue_bench). ``leases`` must be
    ``owner``'s.
    """
    if any(lease.owner != owner for lease in leases):
        raise ValueError("the leases completed must be the claiming owner's")
    params = {**_lease_arrays(leases), "n": max(n, 0), "owner": owner,
              "lease_seconds": lease_seconds, "model_id": model_id}
    query = _COMPLETE_AND_CLAIM_MODEL if model_id is not None else _COMPLETE_AND_CLAIM_ANY
    done: set[uuid.UUID] = set()
    items: list[ClaimedItem] = []
    with conn.cursor(row_factory=dict_row) as cur:
        for row in cur.execute(query, params):
            if (completed := row.pop("completed")) is not None:
                done.add(completed)
            else:
                items.append(ClaimedItem(**row))
    return done, _claim_the_rest(conn, items, params)


def complete(conn: psycopg.Connection, lease: Lease) -> bool:
    return lease.item_id in complete_many(conn, [lease])


_GIVE_BACK = sql.SQL(
    """
    UPDATE processing_queue q
    -- The attempt was counted at claim time; it did not happen, so it does not count.
    SET status = 'queued', attempts = greatest(q.attempts - 1, 0), last_error = %(reason)s,
        lease_owner = NULL, lease_expires_at = NULL, run_after = now(), updated_at = now()
    FROM unnest(%(ids)s::uuid[], %(attempts)s::int[]) AS held(id, attempt)
    WHERE {held}
    RETURNING q.id
    """
).format(held=_HELD)


def give_back(conn: psycopg.Connection, leases: Sequence[Lease], reason: str) -> int:
    """Return leased items to the queue without spending an attempt: the work never ran
    (the depth service was down, the scheduler is stopping). Fenced like completion."""
    if not leases:
        return 0
    params = {**_lease_arrays(leases), "reason": reason[:4000]}
    return _notify_if(conn, len(_tuples(conn, _GIVE_BACK, params)))


_FAIL = sql.SQL(
    """
    UPDATE processing_queue q
    SET status = CASE
            WHEN q.cancel_requested THEN 'cancelled'
            WHEN %(retryable)s AND q.attempts < q.max_attempts THEN 'queued'
            ELSE 'failed' END,
        -- Exponential backoff with jitter: base * 2^(attempts-1), capped, times [0.5, 1).
        run_after = CASE
            WHEN NOT q.cancel_requested AND %(retryable)s AND q.attempts < q.max_attempts
            THEN now() + make_interval(secs => least(%(backoff_max)s,
                        %(backoff_base)s * power(2, q.attempts - 1)) * (0.5 + random() / 2))
            ELSE q.run_after END,
        completed_at = CASE
            WHEN NOT q.cancel_requested AND %(retryable)s AND q.attempts < q.max_attempts
            THEN NULL ELSE now() END,
        last_error = left(%(error)s, 4000),
        error_count = q.error_count + 1,
        processing_duration = extract(epoch FROM now() - q.started_at),
        lease_owner = NULL,
        lease_expires_at = NULL,
        updated_at = now()
    FROM unnest(%(ids)s::uuid[], %(attempts)s::int[]) AS held(id, attempt)
    WHERE {held}
    RETURNING q.id, q.status, q.run_after
    """
).format(held=_HELD)


def fail(
    conn: psycopg.Connection,
    lease: Lease,
    error: str,
    *,
    retryable: bool = True,
    backoff_base: float = 2.0,
    backoff_max: float = 300.0,
) -> FailOutcome | None:
    """Record a failed attempt: back to the queue after a backoff while attempts remain and the
    error is retryable, else failed for good. None when the lease was no longer held."""
    params = {
        **_lease_arrays([lease]),
        "error": error or "unknown error",
        "retryable": retryable,
        "backoff_base": backoff_base,
        "backoff_max": backoff_max,
    }
    rows = _tuples(conn, _FAIL, params)
    return FailOutcome(*rows[0]) if rows else None


_RECOVER = sql.SQL(
    """
    UPDATE processing_queue q
    SET status = CASE
            WHEN q.cancel_requested THEN 'cancelled'
            WHEN q.attempts >= q.max_attempts THEN 'failed'
            ELSE 'queued' END,
        completed_at = CASE
            WHEN q.cancel_requested OR q.attempts >= q.max_attempts THEN now() END,
        last_error = format('lease of %%s expired during attempt %%s of %%s',
                            q.lease_owner, q.attempts, q.max_attempts),
        error_count = q.error_count + 1,
        run_after = now(),
        lease_owner = NULL,
        lease_expires_at = NULL,
        updated_at = now()
    FROM (
        -- SKIP LOCKED: a holder completing right now keeps its row; it is not expired for it.
        SELECT id, lease_owner FROM processing_queue
        WHERE status = 'processing' AND lease_expires_at < now()
        ORDER BY lease_expires_at
        LIMIT %(limit)s
        FOR UPDATE SKIP LOCKED
    ) AS expired
    WHERE q.id = expired.id
    RETURNING q.id, expired.lease_owner, q.status
    """
)


def recover_expired_leases(conn: psycopg.Connection, limit: int = 10_000) -> list[RecoveredLease]:
    """Return items whose holder stopped heartbeating to the queue (or fail them when their
    attempts are spent). The attempt was already counted at claim time."""
    recovered = [RecoveredLease(*row) for row in _tuples(conn, _RECOVER, {"limit": limit})]
    _notify_if(conn, sum(r.status == "queued" for r in recovered))
    return recovered


# --------------------------------------------------------------------------------------------
# user actions: cancel, retry
# --------------------------------------------------------------------------------------------

_CANCEL = sql.SQL(
    """
    UPDATE processing_queue
    SET status = CASE WHEN status = 'processing' THEN 'processing' ELSE 'cancelled' END,
        -- A running item keeps its lease; its holder sees the request at the next heartbeat.
        cancel_requested = (status = 'processing'),
        completed_at = CASE WHEN status = 'processing' THEN NULL ELSE now() END,
        updated_at = now()
    WHERE id = %(id)s AND status IN ('pending', 'queued', 'processing')
    RETURNING id
    """
)


def cancel(conn: psycopg.Connection, item_id: uuid.UUID) -> QueueItem:
    """Cancel a waiting item now, or ask the holder of a running one to stop."""
    if _tuples(conn, _CANCEL, {"id": item_id}):
        return get_item(conn, item_id)
    raise IllegalTransition(item_id, get_item(conn, item_id).status, "cancel")


_RETRY = sql.SQL(
    """
    UPDATE processing_queue
    SET status = 'queued', attempts = 0, cancel_requested = false, run_after = now(),
        queued_at = now(), started_at = NULL, completed_at = NULL, processing_duration = NULL,
        updated_at = now()
    WHERE id = %(id)s AND status IN ('failed', 'cancelled')
    RETURNING id
    """
)


def retry(conn: psycopg.Connection, item_id: uuid.UUID) -> QueueItem:
    """Queue a failed or cancelled item again with fresh attempts (last_error is kept)."""
    try:
        with conn.transaction():  # a savepoint: a conflict must not abort the caller's work
            changed = _tuples(conn, _RETRY, {"id": item_id})
    except psycopg.errors.UniqueViolation:
        raise IllegalTransition(
            item_id, get_item(conn, item_id).status, "retry",
            "another active item exists for the same media and model",
        ) from None
    if not changed:
        raise IllegalTransition(item_id, get_item(conn, item_id).status, "retry")
    _notify_if(conn, len(changed))
    return get_item(conn, item_id)


_RETRY_ALL_FAILED = sql.SQL(
    """
    UPDATE processing_queue q
    SET status = 'queued', attempts = 0, run_after = now(), queued_at = now(),
        started_at = NULL, completed_at = NULL, processing_duration = NULL, updated_at = now()
    WHERE q.status = 'failed'
      AND (%(kind)s::text IS NULL OR q.kind = %(kind)s)
      AND (%(model_id)s::text IS NULL OR q.model_id = %(model_id)s)
      -- Never two active items for one media + model: skip a failed item re-enqueued since.
      AND NOT EXISTS (
          SELECT 1 FROM processing_queue a
          WHERE a.media_id = q.media_id AND a.model_id = q.model_id
            AND a.status IN ('pending', 'queued', 'processing'))
      -- Of several failed items for one media + model, revive only the newest.
      AND q.id = (
          SELECT f.id FROM processing_queue f
          WHERE f.media_id = q.media_id AND f.model_id = q.model_id AND f.status = 'failed'
          ORDER BY f.queued_at DESC, f.id DESC LIMIT 1)
    RETURNING q.id
    """
)


def retry_all_failed(
    conn: psycopg.Connection, *, kind: Kind | None = None, model_id: str | None = None
) -> int:
    """Queue every failed item again; returns how many."""
    return _notify_if(
        conn, len(_tuples(conn, _RETRY_ALL_FAILED, {"kind": kind, "model_id": model_id}))
    )


_CLOSE_FAILED = _archive_completed(
    sql.SQL(
        """
        DELETE FROM processing_queue
        WHERE media_id = ANY(%(media_ids)s) AND model_id = %(model_id)s
          AND status IN ('failed', 'cancelled')
        RETURNING *
        """
    ),
    sql.Identifier("processing_duration"),
)


def close_failed_items(conn: psycopg.Connection, media_ids: Sequence[uuid.UUID], model_id: str) -> int:
    """Another path (the bulk job) produced these media's outputs: their failed or cancelled
    items are done. Items some scheduler holds (processing) are left to it."""
    if not media_ids:
        return 0
    return len(_tuples(conn, _CLOSE_FAILED, {"media_ids": list(media_ids), "model_id": model_id}))


# --------------------------------------------------------------------------------------------
# reading: item, list, stats, summary
# --------------------------------------------------------------------------------------------

_GET = sql.SQL(
    "SELECT {columns} FROM queue_items q "
    "WHERE q.id = %(id)s"
).format(columns=_ITEM_COLUMNS)


def get_item(conn: psycopg.Connection, item_id: uuid.UUID) -> QueueItem:
    rows = _items(conn, _GET, {"id": item_id})
    if not rows:
        raise NotFound(f"queue item {item_id} not found")
    return rows[0]


def items_for_media(conn: psycopg.Connection, media_id: uuid.UUID) -> list[QueueItem]:
    query = sql.SQL(
        "SELECT {columns} FROM queue_items q "
        "WHERE q.media_id = %(id)s ORDER BY q.queued_at DESC, q.id DESC"
    ).format(columns=_ITEM_COLUMNS)
    return _items(conn, query, {"id": media_id})


def encode_cursor(item: QueueItem) -> str:
    raw = json.dumps([item.priority, item.queued_at.isoformat(), str(item.id)])
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, datetime, uuid.UUID]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        priority, queued_at, item_id = json.loads(base64.urlsafe_b64decode(padded.encode()))
        return int(priority), datetime.fromisoformat(queued_at), uuid.UUID(item_id)
    except (ValueError, TypeError, UnicodeDecodeError) as exc:
        raise InvalidCursor(f"invalid cursor {cursor[:64]!r}") from exc


def list_items(
    conn: psycopg.Connection,
    *,
    statuses: Sequence[Status] | None = None,
    kind: Kind | None = None,
    model_id: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> Page:
    """Queue items in claim order (priority, then age), filtered, a keyset page at a time."""
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise ValueError(f"limit must be between 1 and {MAX_PAGE_SIZE}, got {limit}")
    for status in statuses or ():
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}; expected one of {', '.join(STATUSES)}")
    if kind is not None and kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; expected photo or video")
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
    ).format(columns=_ITEM_COLUMNS, where=sql.SQL(" AND ").join(where))
    rows = _items(conn, query, params)
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(items=rows, next_cursor=encode_cursor(rows[-1]) if more else None)


_STATS = sql.SQL(
    """
    SELECT q.status, q.kind, count(*) AS n,
           count(*) FILTER (WHERE q.completed_at > now() - interval '1 minute') AS last_minute,
           count(*) FILTER (WHERE q.completed_at > now() - interval '1 hour') AS last_hour,
           avg(q.processing_duration) AS avg_seconds
    FROM queue_items q
    GROUP BY q.status, q.kind
    """
)


def stats(conn: psycopg.Connection) -> QueueStats:
    counts: dict[Status, dict[Kind, int]] = {s: {k: 0 for k in KINDS} for s in STATUSES}
    last_minute = last_hour = 0
    weighted = 0.0
    done = 0
    for status, kind, n, minute, hour, avg_seconds in _tuples(conn, _STATS):
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
    """Seed 002's queue summary view: one row per status and kind."""
    with conn.cursor(row_factory=class_row(SummaryRow)) as cur:
        return cur.execute(
            "SELECT status, kind, items, avg_processing_seconds, oldest_queued_at, "
            "last_completed_at, errors FROM processing_queue_summary ORDER BY status, kind"
        ).fetchall()
