-- The read side (health, the queue's status, stats and summary, the scheduler's gauges, `depthmill
-- status`) must not read every item ever completed: with a long history a count over the
-- completed archive is a scan of millions of rows on every health probe.
--
-- Totals of completed items are counters, kept by statement-level triggers on the archive: the
-- statement that completes items (its INSERT into processing_queue_completed) adds to them in the
-- same transaction, and deleting media (its trigger deletes archived rows) takes away, so a
-- committed change is always counted and a rolled-back one never. Counters are spread over a few
-- rows per kind (the backend's pid picks one) so that concurrent completers do not queue on one
-- row's lock until their commits; readers add the rows up. oldest_queued_at and
-- last_completed_at are bounds over everything ever completed: a delete does not move them.
CREATE TABLE queue_completed_totals (
    kind               text NOT NULL,
    shard              integer NOT NULL,
    items              bigint NOT NULL,
    timed_items        bigint NOT NULL,  -- with a processing_duration
    processing_seconds double precision NOT NULL,
    errors             bigint NOT NULL,
    oldest_queued_at   timestamptz,
    last_completed_at  timestamptz,
    PRIMARY KEY (kind, shard)
);

CREATE FUNCTION depthmill_count_completed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO queue_completed_totals AS t
    SELECT kind, pg_backend_pid() % 8, count(*), count(processing_duration),
           coalesce(sum(processing_duration), 0), coalesce(sum(error_count), 0),
           min(queued_at), max(completed_at)
    FROM completed_rows GROUP BY kind
    ON CONFLICT (kind, shard) DO UPDATE SET
        items = t.items + excluded.items,
        timed_items = t.timed_items + excluded.timed_items,
        processing_seconds = t.processing_seconds + excluded.processing_seconds,
        errors = t.errors + excluded.errors,
        oldest_queued_at = least(t.oldest_queued_at, excluded.oldest_queued_at),
        last_completed_at = greatest(t.last_completed_at, excluded.last_completed_at);
    RETURN NULL;
END
$$;

CREATE FUNCTION depthmill_uncount_completed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO queue_completed_totals AS t
    SELECT kind, pg_backend_pid() % 8, -count(*), -count(processing_duration),
           -coalesce(sum(processing_duration), 0), -coalesce(sum(error_count), 0), NULL, NULL
    FROM removed_rows GROUP BY kind
    ON CONFLICT (kind, shard) DO UPDATE SET
        items = t.items + excluded.items,
        timed_items = t.timed_items + excluded.timed_items,
        processing_seconds = t.processing_seconds + excluded.processing_seconds,
        errors = t.errors + excluded.errors;
    RETURN NULL;
END
$$;

CREATE TRIGGER processing_queue_completed_count
    AFTER INSERT ON processing_queue_completed
    REFERENCING NEW TABLE AS completed_rows
    FOR EACH STATEMENT EXECUTE FUNCTION depthmill_count_completed();

CREATE TRIGGER processing_queue_completed_uncount
    AFTER DELETE ON processing_queue_completed
    REFERENCING OLD TABLE AS removed_rows
    FOR EACH STATEMENT EXECUTE FUNCTION depthmill_uncount_completed();

INSERT INTO queue_completed_totals
SELECT kind, 0, count(*), count(processing_duration), coalesce(sum(processing_duration), 0),
       coalesce(sum(error_count), 0), min(queued_at), max(completed_at)
FROM processing_queue_completed GROUP BY kind;

-- Recent throughput (completed in the last minute and hour) is a range of this index, read
-- without the table; the archive is append-only in completion order, so its inserts land on the
-- rightmost leaf pages.
CREATE INDEX processing_queue_completed_at
    ON processing_queue_completed (completed_at) INCLUDE (kind);

-- The summary: live rows from the hot table, completed ones from the counters.
DROP VIEW processing_queue_summary;
CREATE VIEW processing_queue_summary AS
SELECT status, kind,
       count(*)                 AS items,
       avg(processing_duration) AS avg_processing_seconds,
       min(queued_at)           AS oldest_queued_at,
       max(completed_at)        AS last_completed_at,
       sum(error_count)         AS errors
FROM processing_queue
GROUP BY status, kind
UNION ALL
SELECT 'completed', kind,
       sum(items)::bigint,
       sum(processing_seconds) / nullif(sum(timed_items), 0),
       min(oldest_queued_at),
       max(last_completed_at),
       sum(errors)::bigint
FROM queue_completed_totals
GROUP BY kind
HAVING sum(items) > 0;
