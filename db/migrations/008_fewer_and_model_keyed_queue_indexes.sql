-- Fewer index writes per claim and per refill move, and the ready set's and the backlog's
-- indexes lead with model_id (queue_bench, issue 2).
--
-- Model first: each model has its own ready set and backlog (a scheduler claims, counts and
-- refills for its model), but migration 007 held model_id only as an INCLUDE column. The planner
-- then estimated a model filter at its default selectivity (0.5%) and, for a refill with the model
-- known, chose a sequential scan of the queue, a join of every backlog row with its media and a
-- sort: 140 ms to move 100 rows with 50k queued, against 7 ms by the index. With model_id
-- leading, "this model's most urgent rows" is one index range in claim order whatever the
-- statistics say. A claim for any model (no model filter) reads the ready sets and sorts them;
-- they are small (db.queue.READY_TARGET per model), and the scheduler claims for its model.
DROP INDEX processing_queue_claimable;
CREATE INDEX processing_queue_claimable
    ON processing_queue (model_id, priority, queued_at, id)
    WHERE status = 'queued' AND NOT backlog;

DROP INDEX processing_queue_backlog;
CREATE INDEX processing_queue_backlog
    ON processing_queue (model_id, priority, queued_at, id)
    WHERE status = 'queued' AND backlog;

-- One index where there were two, both keyed by media id: processing_queue_media (every row, for
-- the foreign key's cascade and an item's history) and processing_queue_one_active (active rows,
-- one per media + model). A claim changes status, so it writes a new entry in every index; these
-- two sat on random leaf pages (media ids are unrelated to claim order), as did a refill's moves.
-- The third key is true for an active row and NULL otherwise, and a unique index never finds two
-- NULLs equal: at most one active item per media + model, any number of finished ones. Enqueue's
-- ON CONFLICT names the same three keys.
DROP INDEX processing_queue_one_active;
DROP INDEX processing_queue_media;
CREATE UNIQUE INDEX processing_queue_media
    ON processing_queue (media_id, model_id,
                         (CASE WHEN status IN ('pending', 'queued', 'processing') THEN true END));
