-- Claims read a small ready set; the rest of a big queue waits in a backlog (queue_bench, issue 2).
--
-- Why: with 1M rows queued, the items a claim takes next (priority order) were spread over the
-- whole heap, one page each, because rows land in insertion order. Each claim of 10 changed ~10
-- pages, and the first change to a page after a checkpoint writes the whole page to the WAL:
-- claim p99 4.0-5.4 ms at 1M rows against 2.3-3.0 ms at 10k. With the same rows laid out in
-- claim order, 1M claimed like 10k. Neither fillfactor, shared_buffers nor wal_compression helped.
--
-- So a queued row is either ready (claimable) or in the backlog. Enqueue puts an item in the
-- ready set while it holds fewer than a target number of items (db.queue.READY_TARGET) or the item
-- outranks the whole backlog; otherwise in the backlog. db.queue.refill_ready moves the most
-- urgent backlog rows into the ready set, in claim order: DELETE + INSERT in one statement, so
-- the moved rows fill pages one after another in the order claims will take them. The row keeps
-- its id and every column; to users both are 'queued', in the same claim order.
--
-- Invariant the refill keeps: no backlog item has a more urgent priority than a ready item.
ALTER TABLE processing_queue ADD COLUMN backlog boolean NOT NULL DEFAULT false;
ALTER TABLE processing_queue_completed ADD COLUMN backlog boolean NOT NULL DEFAULT false;
ALTER TABLE processing_queue_completed ADD CONSTRAINT processing_queue_completed_not_backlog
    CHECK (NOT backlog);

DROP INDEX processing_queue_claimable;
CREATE INDEX processing_queue_claimable
    ON processing_queue (priority, queued_at, id)
    INCLUDE (model_id)
    WHERE status = 'queued' AND NOT backlog;

CREATE INDEX processing_queue_backlog
    ON processing_queue (priority, queued_at, id)
    INCLUDE (model_id)
    WHERE status = 'queued' AND backlog;

-- Only rows a claimer can take wake claimers (a backlog insert does not; its refill does).
CREATE OR REPLACE FUNCTION depthmill_notify_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM inserted WHERE status = 'queued' AND NOT backlog) THEN
        PERFORM pg_notify('depthmill_queue', '');
    END IF;
    RETURN NULL;
END
$$;

-- The views name their columns at creation; recreate them so queue_items has the new column.
DROP VIEW processing_queue_summary;
DROP VIEW queue_items;

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
