-- A queue row carries what a worker needs to fetch and route its media (kind, size, type, storage
-- key), the way pgqueuer and River jobs carry their payload. Media rows never change these, so the
-- copies cannot drift. The claim then reads only processing_queue: with 1M rows queued, the join
-- to media_items was half the pages a claim read (queue_bench, EXPLAIN BUFFERS).
ALTER TABLE processing_queue
    ADD COLUMN kind text CHECK (kind IN ('photo', 'video')),
    ADD COLUMN bytes bigint,
    ADD COLUMN mime text,
    ADD COLUMN storage_key text;

UPDATE processing_queue q
SET kind = m.kind, bytes = m.bytes, mime = m.mime, storage_key = m.storage_key
FROM media_items m
WHERE m.id = q.media_id;

ALTER TABLE processing_queue
    ALTER COLUMN kind SET NOT NULL,
    ALTER COLUMN bytes SET NOT NULL,
    ALTER COLUMN mime SET NOT NULL,
    ALTER COLUMN storage_key SET NOT NULL;

CREATE OR REPLACE VIEW processing_queue_summary AS
SELECT status,
       kind,
       count(*)                 AS items,
       avg(processing_duration) AS avg_processing_seconds,
       min(queued_at)           AS oldest_queued_at,
       max(completed_at)        AS last_completed_at,
       sum(error_count)         AS errors
FROM processing_queue
GROUP BY status, kind;
