"""Every statement the queue runs, named, with what it locks and why.

Composed once at import, into the bytes psycopg sends (``composed``); the worker and admin
modules execute them. Each takes its values as named parameters (``%(name)s``); nothing
user-supplied is ever formatted into the SQL.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Literal

from psycopg import sql

from db.queue.types import ClaimedItem


def composed(statement: sql.Composable) -> bytes:
    """A statement's text, once: psycopg composes a ``Composed`` again on every execute, which
    for the cycle's statement is a sizeable part of a small cycle's time in the client."""
    return statement.as_bytes(None)


# Columns of a QueueItem, read from processing_queue q.
ITEM_COLUMNS = sql.SQL(
    """q.id, q.media_id, q.model_id, q.kind, q.bytes, q.mime, q.storage_key, q.status,
       q.priority, q.attempts, q.max_attempts, q.last_error, q.error_count, q.cancel_requested,
       q.lease_owner, q.lease_expires_at, q.run_after, q.queued_at, q.started_at,
       q.completed_at, q.processing_duration"""
)


ENQUEUE = composed(sql.SQL(
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
).format(columns=ITEM_COLUMNS))


RELEASE = composed(sql.SQL(
    """
    UPDATE processing_queue SET status = 'queued', queued_at = now(), updated_at = now()
    WHERE id = ANY(%(ids)s) AND status = 'pending'
    RETURNING id
    """
))


LEASE = sql.SQL(
    """
    UPDATE processing_queue q
    SET status = 'processing',
        attempts = q.attempts + 1,
        lease_owner = %(owner)s,
        lease_expires_at = now() + make_interval(secs => %(lease_seconds)s),
        started_at = now(),
        updated_at = now()
    -- As an array, not a join: a generic plan cannot tell how many rows the LIMIT lets
    -- through, guesses a tenth of the table, and would hash-join it.
    WHERE q.id = ANY(ARRAY(SELECT id FROM next))
    RETURNING q.id, q.media_id, q.model_id, q.kind, q.bytes, q.mime, q.storage_key,
              q.priority, q.attempts, q.max_attempts, q.lease_owner, q.lease_expires_at,
              q.queued_at
    """
)


# Whose items a claim takes: one model's (``model_id``), several models' (``model_ids``, a
# scheduler serving several), or any model's.
ModelScope = Literal["one", "several", "any"]
_MODEL_FILTERS: dict[str, sql.Composable] = {
    "one": sql.SQL("AND q.model_id = %(model_id)s"),
    "several": sql.SQL("AND q.model_id = ANY(%(model_ids)s::text[])"),
    "any": sql.SQL(""),
}


def claim_ctes(scope: ModelScope) -> sql.Composed:
    """The CTE that picks the most urgent claimable items: ``next``, their ids.

    Locking: FOR UPDATE SKIP LOCKED locks the rows it returns and passes over rows another
    transaction holds (a concurrent claimer taking them, a cancel or enqueue updating them)
    instead of queueing behind its lock, so each row goes to exactly one claimer and no claimer
    waits. MATERIALIZED fences the CTE: it runs once, its LIMIT applies before the UPDATE sees
    its rows, and the planner cannot fold it into the UPDATE (which could then lock and lease
    more rows than the LIMIT). For one model the planner walks processing_queue_claimable
    (model_id, priority, queued_at, id) in claim order and stops after ``n`` rows; for any
    model, or several, it reads the queued rows of those models and sorts them.
    """
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
    ).format(model_filter=_MODEL_FILTERS[scope])


# The columns both queue tables share, in table order (a test holds this to the schema).
TABLE_COLUMNS = (
    "id", "media_id", "model_id", "status", "priority", "attempts", "max_attempts", "last_error",
    "error_count", "cancel_requested", "lease_owner", "lease_expires_at", "run_after", "queued_at",
    "started_at", "completed_at", "processing_duration", "updated_at", "kind", "bytes", "mime",
    "storage_key",
)


# The fence every lease-holder statement shares: still processing, same owner, same attempt.
HELD = sql.SQL(
    """q.id = held.id AND q.attempts = held.attempt
       AND q.status = 'processing' AND q.lease_owner = %(owner)s"""
)


EXTEND = composed(sql.SQL(
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
).format(held=HELD))


def completion(done: sql.Composable, processing_duration: sql.Composable) -> sql.Composed:
    """The CTEs that complete the rows ``done`` deletes from processing_queue (RETURNING them):
    ``archived`` inserts them, completed, into processing_queue_completed (one statement, so an
    item is always in exactly one table) and returns their ids."""
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
        done AS ({done}),
        archived AS (
            INSERT INTO processing_queue_completed ({columns})
            SELECT {values} FROM done
            RETURNING id
        )
        """
    ).format(
        done=done,
        columns=sql.SQL(", ").join(map(sql.Identifier, TABLE_COLUMNS)),
        values=sql.SQL(", ").join(completed.get(c, sql.Identifier(c)) for c in TABLE_COLUMNS),
    )


# How long the attempt ``done`` completes ran.
RUN_TIME = sql.SQL("extract(epoch FROM now() - done.started_at)")


# The events of a statement's items, one source per kind of event: each selects (step, type,
# id, media_id, model_id, kind, priority, attempts, max_attempts, detail); ``step`` orders the
# sources' events within the batch.
def completed_events(seconds: sql.Composable, outputs: sql.Composable) -> sql.Composed:
    """item.completed of each ``done`` row, with how long it ran and what it stored
    (``outputs``, a jsonb array per row of ``done``)."""
    return sql.SQL(
        """SELECT 0 AS step, 'item.completed' AS type, done.id, done.media_id, done.model_id,
                  done.kind, done.priority, done.attempts, done.max_attempts,
                  jsonb_build_object('seconds', {seconds}, 'outputs', coalesce({outputs}, '[]'))
                      AS detail
           FROM done"""
    ).format(seconds=seconds, outputs=outputs)


# item.started of each row ``claimed`` leased.
STARTED = sql.SQL(
    """SELECT 1 AS step, 'item.started' AS type, c.id, c.media_id, c.model_id, c.kind,
              c.priority, c.attempts, c.max_attempts,
              jsonb_build_object('worker', c.lease_owner) AS detail
       FROM claimed c"""
)


_BATCH_COLUMNS = ("types", "item_id", "media_id", "model", "kind", "priority", "attempt",
                  "max_attempts", "detail")
_SOURCE_COLUMNS = ("type", "id", "media_id", "model_id", "kind", "priority", "attempts",
                   "max_attempts", "detail")


def item_events(*sources: sql.Composable) -> sql.Composed:
    """The CTE ``written``: the events of ``sources`` as one outbox batch (migration 020), in
    order (by step, then claim order), a slice of 1024 per row when there are more, as the
    triggers' ``depthmill_write_events`` writes them (inline here: calling that function would
    plan its insert again on every cycle). Building
    arrays of the items' columns costs a fraction of building each event's JSON, which readers
    do instead (depthmill_event_data). Events off (``depthmill.events``): nothing."""
    return sql.SQL(
        """
        written AS (
            INSERT INTO event_batches ({columns})
            SELECT {slices}
            FROM (SELECT {gathered}
                  -- array_agg keeps the order of an ordered subquery; whatever it is, every
                  -- array is built from the same rows in the same order, so they align.
                  FROM ({sources} ORDER BY step, priority, id) AS e) AS a,
                 generate_series(1, cardinality(a.types), 1024) AS s
            WHERE depthmill_events_on()
            ORDER BY s
        )
        """
    ).format(
        columns=sql.SQL(", ").join(map(sql.Identifier, _BATCH_COLUMNS)),
        slices=sql.SQL(", ").join(sql.SQL("a.{}[s:s + 1023]").format(sql.Identifier(c))
                                  for c in _BATCH_COLUMNS),
        gathered=sql.SQL(", ").join(
            sql.SQL("array_agg(e.{}) AS {}").format(sql.Identifier(src), sql.Identifier(col))
            for src, col in zip(_SOURCE_COLUMNS, _BATCH_COLUMNS)),
        sources=sql.SQL(" UNION ALL ").join(sources),
    )


def build_claim_query(scope: ModelScope) -> sql.Composed:
    """Claim the most urgent claimable items and lease them, in one statement (``claim_ctes``
    picks, ``LEASE`` leases), with their item.started events."""
    return sql.SQL("WITH {ctes}, claimed AS ({lease}), {events} SELECT * FROM claimed").format(
        ctes=claim_ctes(scope), lease=LEASE, events=item_events(STARTED))


CLAIMS = {scope: composed(build_claim_query(scope)) for scope in _MODEL_FILTERS}


# Completing holders name what they stored, per item (``outputs``: format, width, height).
DELETE_HELD = sql.SQL(
    """
    DELETE FROM processing_queue q
    USING unnest(%(ids)s::uuid[], %(attempts)s::int[], %(outputs)s::jsonb[])
          AS held(id, attempt, outputs)
    WHERE {held}
    RETURNING q.*, held.outputs
    """
).format(held=HELD)


COMPLETED_BY_HOLDER = completed_events(RUN_TIME, sql.SQL("done.outputs"))


COMPLETE = composed(sql.SQL("WITH {completion}, {events} SELECT id FROM archived").format(
    completion=completion(DELETE_HELD, RUN_TIME), events=item_events(COMPLETED_BY_HOLDER)))


def build_complete_and_claim_query(scope: ModelScope) -> sql.Composed:
    """``COMPLETE`` and a claim in one statement. The two touch different rows (the fence
    wants 'processing', a claim 'queued'). A row is a completed id or a claimed item."""
    return sql.SQL(
        """
        WITH {completion},
             {claim_ctes},
             claimed AS ({lease}),
             {events}
        SELECT NULL::uuid AS completed, claimed.* FROM claimed
        UNION ALL
        SELECT id, {nulls} FROM archived
        """
    ).format(completion=completion(DELETE_HELD, RUN_TIME),
             claim_ctes=claim_ctes(scope), lease=LEASE,
             events=item_events(COMPLETED_BY_HOLDER, STARTED),
             nulls=sql.SQL(", ").join([sql.SQL("NULL")] * len(fields(ClaimedItem))))


COMPLETE_AND_CLAIMS = {scope: composed(build_complete_and_claim_query(scope))
                       for scope in _MODEL_FILTERS}


GIVE_BACK = composed(sql.SQL(
    """
    UPDATE processing_queue q
    -- The attempt was counted at claim time; it did not happen, so it does not count.
    SET status = 'queued', attempts = greatest(q.attempts - 1, 0), last_error = %(reason)s,
        lease_owner = NULL, lease_expires_at = NULL, run_after = now(), updated_at = now()
    FROM unnest(%(ids)s::uuid[], %(attempts)s::int[]) AS held(id, attempt)
    WHERE {held}
    RETURNING q.id
    """
).format(held=HELD))


FAIL = composed(sql.SQL(
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
).format(held=HELD))


RECOVER = composed(sql.SQL(
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
))


CANCEL = composed(sql.SQL(
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
))


RETRY = composed(sql.SQL(
    """
    UPDATE processing_queue
    SET status = 'queued', attempts = 0, cancel_requested = false, run_after = now(),
        queued_at = now(), started_at = NULL, completed_at = NULL, processing_duration = NULL,
        updated_at = now()
    WHERE id = %(id)s AND status IN ('failed', 'cancelled')
    RETURNING id
    """
))


RETRY_ALL_FAILED = composed(sql.SQL(
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
))


# Reprocessing wrote the outputs of these items' media already: the events name what is stored.
CLOSE_FAILED = composed(sql.SQL("WITH {completion}, {events} SELECT id FROM archived").format(
    completion=completion(
        sql.SQL(
            """
            DELETE FROM processing_queue
            WHERE media_id = ANY(%(media_ids)s) AND model_id = %(model_id)s
              AND status IN ('failed', 'cancelled')
            RETURNING *
            """
        ),
        sql.SQL("done.processing_duration"),
    ),
    events=item_events(completed_events(
        sql.SQL("done.processing_duration"),
        sql.SQL(
            """(SELECT jsonb_agg(jsonb_build_object('format', d.format, 'width', d.width,
                                                   'height', d.height) ORDER BY d.format)
                FROM depth_maps d
                WHERE d.media_id = done.media_id AND d.model_id = done.model_id)"""
        ),
    )),
))


# The queue ran dry for a model: nothing of it is waiting, backing off or running any more.
REPORT_DRAINED = composed(sql.SQL(
    """
    INSERT INTO event_batches (types, detail)
    SELECT ARRAY['queue.drained'], ARRAY[jsonb_build_object(
               'model', %(model_id)s::text,
               'failed', (SELECT count(*) FROM processing_queue
                          WHERE model_id = %(model_id)s AND status = 'failed'))]
    WHERE depthmill_events_on() AND NOT EXISTS (
        SELECT 1 FROM processing_queue
        WHERE model_id = %(model_id)s AND status IN ('pending', 'queued', 'processing'))
    RETURNING id
    """
))


GET = composed(sql.SQL(
    "SELECT {columns} FROM queue_items q "
    "WHERE q.id = %(id)s"
).format(columns=ITEM_COLUMNS))


# Live items from the hot table; completed ones from the counters the archive's triggers keep and
# from its completion-time index (migration 010): nothing here reads the whole history.
STATS = composed(sql.SQL(
    """
    SELECT q.status, q.kind, count(*) AS n, 0 AS last_minute, 0 AS last_hour,
           avg(q.processing_duration) AS avg_seconds
    FROM processing_queue q
    GROUP BY q.status, q.kind
    UNION ALL
    SELECT 'completed', t.kind, sum(t.items)::bigint,
           (SELECT count(*) FROM processing_queue_completed c
            WHERE c.completed_at > now() - interval '1 minute' AND c.kind = t.kind),
           (SELECT count(*) FROM processing_queue_completed c
            WHERE c.completed_at > now() - interval '1 hour' AND c.kind = t.kind),
           sum(t.processing_seconds) / nullif(sum(t.timed_items), 0)
    FROM queue_completed_totals t
    GROUP BY t.kind
    """
))
