-- Completed items move out of processing_queue, in the statement that completes them (DELETE ...
-- RETURNING feeding an INSERT), the way pgqueuer moves finished jobs into its log table.
--
-- Why: every transition in processing_queue is a non-HOT update (status is in the partial
-- indexes' predicates), so completing an item in place wrote a new row version plus a new
-- primary key and media_id index entry next to the old ones, and Postgres then spent its time in
-- bottom-up index deletion clearing those versions (perf: a third of the server's CPU in index
-- inserts at batch 100). A DELETE writes no index entries; the completed table is append-only
-- (time-ordered ids), so its index inserts land on the rightmost leaf pages. The hot table holds
-- only what is live or may come back (failed and cancelled items can be retried), so claims,
-- lease recovery and vacuum work on a small table however long the history.
--
-- Completed is terminal: nothing updates a completed row, and reprocessing makes a new item.
-- Both tables keep the same columns in the same order; a column added to one is added to the
-- other and the queue_items view is recreated.
CREATE TABLE processing_queue_completed (
    LIKE processing_queue INCLUDING DEFAULTS INCLUDING CONSTRAINTS,
    PRIMARY KEY (id),
    CHECK (status = 'completed')
);

CREATE INDEX processing_queue_completed_media ON processing_queue_completed (media_id);

-- No foreign key to media_items: its check locks the media row (FOR KEY SHARE) for every item
-- completed, a write to a second table per item (about a fifth of queue_bench's batch-100
-- throughput). Rows arrive only from processing_queue, which has that key. Deleting media locks
-- its queue rows (ON DELETE CASCADE) and completing deletes them, so the two serialise: an item
-- is either deleted with its media or completed first, and then this trigger, which runs after
-- the cascade, removes it.
CREATE FUNCTION depthmill_delete_completed_items() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM processing_queue_completed c USING deleted_media d WHERE c.media_id = d.id;
    RETURN NULL;
END
$$;

CREATE TRIGGER media_items_delete_completed_items
    AFTER DELETE ON media_items
    REFERENCING OLD TABLE AS deleted_media
    FOR EACH STATEMENT EXECUTE FUNCTION depthmill_delete_completed_items();

INSERT INTO processing_queue_completed SELECT * FROM processing_queue WHERE status = 'completed';
DELETE FROM processing_queue WHERE status = 'completed';

-- The hot table never holds a completed row: any statement that tried would fail loudly.
ALTER TABLE processing_queue ADD CONSTRAINT processing_queue_never_completed
    CHECK (status <> 'completed');

-- Every item, wherever it lives. Reads (item detail, lists, stats, the summary) go through this.
CREATE VIEW queue_items AS
SELECT * FROM processing_queue
UNION ALL
SELECT * FROM processing_queue_completed;

CREATE OR REPLACE VIEW processing_queue_summary AS
SELECT status,
       kind,
       count(*)                 AS items,
       avg(processing_duration) AS avg_processing_seconds,
       min(queued_at)           AS oldest_queued_at,
       max(completed_at)        AS last_completed_at,
       sum(error_count)         AS errors
FROM queue_items
GROUP BY status, kind;
