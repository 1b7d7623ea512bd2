-- A plain queue again: every queued row is claimable, and one partial index serves the claim.
--
-- Migrations 007 and 008 split queued rows into a small "ready set" (the rows claims read) and a
-- backlog, moved into the ready set in claim order by a refill running beside the claims. That
-- bought claim latency at 1M queued rows, and cost an enqueue that ranked arrivals against the
-- ready set, a refill loop in every scheduler, a cancel that retried when a refill moved its row,
-- and a media delete that could meet a refill. The queue is now the shape pgqueuer and River use:
-- enqueue is one INSERT ... ON CONFLICT, a claim one SELECT ... FOR UPDATE SKIP LOCKED in
-- claim order, fenced by a MATERIALIZED CTE, feeding the UPDATE that leases.
--
-- Kept from 008: processing_queue_media (the one unique index on media + model, active rows
-- only) and model_id leading the claim index, so a scheduler's claim for its model is one index
-- range in claim order.
DROP INDEX processing_queue_backlog;
DROP INDEX processing_queue_claimable;

-- The views name their columns at creation; drop them to drop the column, then recreate them.
DROP VIEW processing_queue_summary;
DROP VIEW queue_items;

ALTER TABLE processing_queue_completed DROP CONSTRAINT processing_queue_completed_not_backlog;
ALTER TABLE processing_queue_completed DROP COLUMN backlog;
ALTER TABLE processing_queue DROP COLUMN backlog;

CREATE INDEX processing_queue_claimable
    ON processing_queue (model_id, priority, queued_at, id)
    WHERE status = 'queued';

-- Every queued insert wakes claimers again (there is no backlog insert that should not).
CREATE OR REPLACE FUNCTION depthmill_notify_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM inserted WHERE status = 'queued') THEN
        PERFORM pg_notify('depthmill_queue', '');
    END IF;
    RETURN NULL;
END
$$;

CREATE VIEW queue_items AS
SELECT * FROM processing_queue
UNION ALL
SELECT * FROM processing_queue_completed;

CREATE VIEW processing_queue_summary AS
SELECT status,
       kind,
       count(*)                 AS items,
       avg(processing_duration) AS avg_processing_seconds,
       min(queued_at)           AS oldest_queued_at,
       max(completed_at)        AS last_completed_at,
       sum(error_count)         AS errors
FROM queue_items
GROUP BY status, kind;
