-- The row trigger that announced requeues cost every claim and completion a trigger check per row
-- (queue_bench, batch 100: ~16k → ~22k jobs/s without it and the leases index together; the
-- trigger is the part we can drop). Requeues now notify from db/queue.py, the only code that
-- moves items back to 'queued'. Inserts keep their statement-level trigger: one check per batch.
DROP TRIGGER processing_queue_notify_requeued ON processing_queue;
DROP FUNCTION depthmill_notify_queued();
