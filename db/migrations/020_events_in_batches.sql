-- Events in batches: one outbox row per writing statement, not one per event.
--
-- A row per event cost the queue's cycle two rows per item (item.completed, then item.started),
-- each with its JSON built and its index entries, and that was most of what events cost the
-- queue (bench/queue_bench.py --cycle-batches). A batch row holds a statement's events as
-- aligned arrays, one element per event: for item events the item's fields in typed columns
-- (cheap to gather, no JSON built on the way in), for other events their whole data in
-- ``detail``. Readers build each event's JSON (depthmill_event_data).
--
-- Ids. An event keeps an id of its own (SSE id, Last-Event-ID, webhook-id, the delivery rows):
-- a batch's id is its first event's, and event i (from 1) of the batch has id + i - 1. Batch
-- ids step by 1024, so a batch holds at most 1024 events (writers slice bigger statements) and
-- no two events share an id. The batch of an event is the one with the greatest id at or below
-- it. Order and the reading horizon are as migration 013 says, on (xid, id) of the batches.
CREATE TABLE event_batches (
    id           bigint GENERATED ALWAYS AS IDENTITY (INCREMENT BY 1024) PRIMARY KEY,
    xid          xid8 NOT NULL DEFAULT pg_current_xact_id(),
    created_at   timestamptz NOT NULL DEFAULT now(),
    types        text[] NOT NULL
                 CHECK (cardinality(types) BETWEEN 1 AND 1024 AND array_ndims(types) = 1),
    -- Item events: the item as it was (status follows from the type).
    item_id      uuid[],
    media_id     uuid[],
    model        text[],
    kind         text[],
    priority     integer[],
    attempt      integer[],
    max_attempts integer[],
    -- Each event's own fields (an item event's additions, any other event's whole data).
    detail       jsonb[],
    -- Aligned: an element of each array per event, or no array.
    CHECK (coalesce(cardinality(item_id), cardinality(types)) = cardinality(types)
       AND coalesce(cardinality(media_id), cardinality(types)) = cardinality(types)
       AND coalesce(cardinality(model), cardinality(types)) = cardinality(types)
       AND coalesce(cardinality(kind), cardinality(types)) = cardinality(types)
       AND coalesce(cardinality(priority), cardinality(types)) = cardinality(types)
       AND coalesce(cardinality(attempt), cardinality(types)) = cardinality(types)
       AND coalesce(cardinality(max_attempts), cardinality(types)) = cardinality(types)
       AND coalesce(cardinality(detail), cardinality(types)) = cardinality(types))
);

CREATE INDEX event_batches_in_commit_order ON event_batches (xid, id);

-- An event's data as readers see it, the body webhooks and the stream send, from its elements.
CREATE FUNCTION depthmill_event_data(
    type text, item_id uuid, media_id uuid, model text, kind text, priority integer,
    attempt integer, max_attempts integer, detail jsonb) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN item_id IS NULL THEN coalesce(detail, '{}') ELSE
        jsonb_build_object(
            'item_id', item_id, 'media_id', media_id, 'model', model, 'kind', kind,
            'status', CASE type
                WHEN 'item.started' THEN 'processing' WHEN 'item.completed' THEN 'completed'
                WHEN 'item.failed' THEN 'failed' WHEN 'item.cancelled' THEN 'cancelled'
                ELSE 'queued' END,
            'priority', priority, 'attempt', attempt,
            'max_attempts', max_attempts) || coalesce(detail, '{}')
    END
$$;

-- Event i (from 1) of a batch, for one event's lookup (a delivery's).
CREATE FUNCTION depthmill_event_data(b event_batches, i integer) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT depthmill_event_data(b.types[i], b.item_id[i], b.media_id[i], b.model[i], b.kind[i],
                                b.priority[i], b.attempt[i], b.max_attempts[i], b.detail[i])
$$;

-- Every event of a batch, in order. One pass over each array: subscripting a (compressed,
-- out-of-line) array reads all of it, element by element that would be once per event.
CREATE FUNCTION depthmill_batch_events(b event_batches)
RETURNS TABLE (id bigint, type text, data jsonb)
LANGUAGE sql STABLE AS $$
    SELECT b.id + e.i - 1, e.type,
           depthmill_event_data(e.type, e.item_id, e.media_id, e.model, e.kind, e.priority,
                                e.attempt, e.max_attempts, e.detail)
    FROM unnest(b.types, b.item_id, b.media_id, b.model, b.kind, b.priority, b.attempt,
                b.max_attempts, b.detail)
         WITH ORDINALITY AS e(type, item_id, media_id, model, kind, priority, attempt,
                              max_attempts, detail, i)
$$;

-- What was written so far, each event its own batch, keeping its id. New ids start after every
-- id ever taken, pruned ones too: receivers deduplicate by webhook-id, and streams resume by id.
INSERT INTO event_batches (id, xid, created_at, types, detail) OVERRIDING SYSTEM VALUE
SELECT id, xid, created_at, ARRAY[type], ARRAY[data] FROM events;
SELECT setval(pg_get_serial_sequence('event_batches', 'id'),
              greatest((SELECT max(id) FROM events),
                       pg_sequence_last_value(pg_get_serial_sequence('events', 'id')::regclass),
                       0) + 1,
              false);

-- A delivery names its event and that event's batch (which it goes with when pruned).
ALTER TABLE webhook_deliveries ADD COLUMN batch_id bigint;
UPDATE webhook_deliveries SET batch_id = event_id;
ALTER TABLE webhook_deliveries
    ALTER COLUMN batch_id SET NOT NULL,
    DROP CONSTRAINT webhook_deliveries_event_id_fkey,
    ADD FOREIGN KEY (batch_id) REFERENCES event_batches ON DELETE CASCADE;
DROP INDEX webhook_deliveries_event;
CREATE INDEX webhook_deliveries_batch ON webhook_deliveries (batch_id);

DROP TABLE events;  -- its fan-out trigger goes with it
DROP FUNCTION depthmill_events_fan_out();
-- Every event, one row each, for reading by hand. Code reads event_batches through db/events.py,
-- whose queries walk the batches' index; a filter on this view's id cannot.
CREATE VIEW events AS
SELECT e.id, b.xid, e.type, e.data, b.created_at
FROM event_batches b CROSS JOIN LATERAL depthmill_batch_events(b) AS e;

-- Fan-out, as in 013, an event at a time out of the batches a statement wrote.
CREATE FUNCTION depthmill_events_fan_out() RETURNS trigger LANGUAGE plpgsql
SET enable_nestloop = on SET jit = off AS $$
DECLARE
    fanned integer;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM webhooks) OR NOT EXISTS (SELECT 1 FROM new_batches) THEN
        RETURN NULL;
    END IF;
    INSERT INTO webhook_deliveries (webhook_id, batch_id, event_id)
    SELECT w.id, b.id, b.id + e.i - 1
    FROM new_batches b CROSS JOIN LATERAL unnest(b.types) WITH ORDINALITY AS e(type, i)
    JOIN webhooks w ON w.enabled AND e.type <> 'webhook.test'
                   AND depthmill_webhook_subscribes(w.events, e.type)
    ORDER BY b.id, e.i, w.id;
    GET DIAGNOSTICS fanned = ROW_COUNT;
    IF fanned > 0 THEN
        PERFORM pg_notify('depthmill_webhooks', '');
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER event_batches_fan_out
    AFTER INSERT ON event_batches REFERENCING NEW TABLE AS new_batches
    FOR EACH STATEMENT EXECUTE FUNCTION depthmill_events_fan_out();

-- A statement's events, as aligned arrays in order, written a batch of 1024 at a time. The
-- triggers below gather their events and call it (db/queue/statements.item_events does the same
-- inline in the queue's statements, where a function's planning on every call would cost the
-- cycle).
CREATE FUNCTION depthmill_write_events(
    types text[], item_id uuid[] DEFAULT NULL, media_id uuid[] DEFAULT NULL,
    model text[] DEFAULT NULL, kind text[] DEFAULT NULL, priority integer[] DEFAULT NULL,
    attempt integer[] DEFAULT NULL, max_attempts integer[] DEFAULT NULL,
    detail jsonb[] DEFAULT NULL) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO event_batches (types, item_id, media_id, model, kind, priority, attempt,
                               max_attempts, detail)
    SELECT types[s:s + 1023], item_id[s:s + 1023], media_id[s:s + 1023], model[s:s + 1023],
           kind[s:s + 1023], priority[s:s + 1023], attempt[s:s + 1023],
           max_attempts[s:s + 1023], detail[s:s + 1023]
    FROM generate_series(1, cardinality(types), 1024) AS s
    ORDER BY s
$$;

-- The triggers of 013, writing batches. Each gathers its events in order into aligned arrays.
-- (array_agg keeps its input's order: the rows come from an ordered subquery. Whatever the
-- order, every array is built from the same rows in the same order, so they stay aligned.)
CREATE OR REPLACE FUNCTION depthmill_media_created_events() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF depthmill_events_on() THEN
        PERFORM depthmill_write_events(array_agg('media.created'::text), detail => array_agg(
                    jsonb_build_object(
                        'media_id', m.id, 'kind', m.kind, 'mime', m.mime, 'bytes', m.bytes,
                        'sha256', m.sha256, 'original_name', m.original_name,
                        'width', m.width, 'height', m.height, 'duration', m.duration,
                        'taken_at', m.taken_at)))
        FROM (SELECT * FROM new_rows ORDER BY created_at, id) AS m;
    END IF;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION depthmill_media_deleted_events() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF depthmill_events_on() THEN
        PERFORM depthmill_write_events(
                    array_agg('media.deleted'::text),
                    detail => array_agg(jsonb_build_object('media_id', m.id, 'kind', m.kind)))
        FROM (SELECT * FROM old_rows ORDER BY id) AS m;
    END IF;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION depthmill_queue_inserted_events() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF depthmill_events_on() THEN
        PERFORM depthmill_write_events(
                    array_agg('item.queued'::text), array_agg(n.id), array_agg(n.media_id),
                    array_agg(n.model_id), array_agg(n.kind), array_agg(n.priority),
                    array_agg(n.attempts), array_agg(n.max_attempts))
        FROM (SELECT * FROM new_rows WHERE status = 'queued'
              ORDER BY priority, queued_at, id) AS n;
    END IF;
    RETURN NULL;
END
$$;

-- A change of status, as in 013, but for claims: item.started is the claiming statement's
-- (db/queue/statements.py writes it in the same batch as the cycle's completions), so this
-- trigger looks no further when every row it sees is processing (claims and heartbeats).
CREATE OR REPLACE FUNCTION depthmill_queue_updated_events() RETURNS trigger LANGUAGE plpgsql
SET enable_nestloop = off SET jit = off AS $$
BEGIN
    IF NOT depthmill_events_on()
       OR NOT EXISTS (SELECT 1 FROM new_rows WHERE status <> 'processing') THEN
        RETURN NULL;
    END IF;
    PERFORM depthmill_write_events(
                array_agg(e.type), array_agg(e.id), array_agg(e.media_id),
                array_agg(e.model_id), array_agg(e.kind), array_agg(e.priority),
                array_agg(e.attempts), array_agg(e.max_attempts), array_agg(e.detail))
    FROM (SELECT n.*, t.type, CASE t.type
              WHEN 'item.retrying' THEN jsonb_build_object(
                  'error', n.last_error, 'next_attempt_at', n.run_after)
              WHEN 'item.failed' THEN jsonb_build_object('last_error', n.last_error)
              WHEN 'item.queued' THEN jsonb_build_object('previous_status', o.status)
              END AS detail
          FROM old_rows o JOIN new_rows n ON n.id = o.id
          CROSS JOIN LATERAL (
              SELECT CASE
                  WHEN n.status = 'queued' AND o.status = 'processing'
                       AND n.error_count > o.error_count THEN 'item.retrying'
                  WHEN n.status = 'queued' THEN 'item.queued'
                  WHEN n.status = 'failed' THEN 'item.failed'
                  WHEN n.status = 'cancelled' THEN 'item.cancelled'
              END AS type
          ) AS t
          WHERE n.status IS DISTINCT FROM o.status AND t.type IS NOT NULL
          ORDER BY n.priority, n.id) AS e;
    RETURN NULL;
END
$$;

DROP FUNCTION depthmill_item_event(processing_queue);
