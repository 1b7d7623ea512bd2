-- Events: what happened to media and queue items, for webhooks and the live stream.
--
-- The outbox is written by the change it reports, in the same transaction: triggers on
-- media_items and processing_queue (statement-level, reading transition tables, so a batch of
-- changes writes its events in one INSERT), and the queue's completing statements (their
-- item.completed carries the outputs the completer recorded, which no trigger can see). A
-- committed change always has its event; a rolled-back one never does.
--
-- Order. Ids are taken when a row is inserted but become visible when its transaction commits,
-- so a reader walking ids could pass an id whose transaction commits later. Readers therefore
-- walk (xid, id), the writing transaction's id first, and take only events of transactions that
-- have finished (xid below the oldest one still running in this database): that set never
-- grows behind a reader, so a reader that resumes after an event misses nothing (db/events.py).
CREATE TABLE events (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    xid        xid8 NOT NULL DEFAULT pg_current_xact_id(),
    type       text NOT NULL CHECK (type ~ '^[a-z]+\.[a-z_]+$'),
    data       jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX events_in_commit_order ON events (xid, id);

-- Measuring what events cost (bench/queue_bench.py) needs the same queue without them:
-- `SET depthmill.events = 'off'` in a session writes none. Nothing in depthmill sets it.
CREATE FUNCTION depthmill_events_on() RETURNS boolean LANGUAGE sql STABLE AS $$
    SELECT current_setting('depthmill.events', true) IS DISTINCT FROM 'off'
$$;

-- What an event says of a queue item; item.* events add their own fields to it.
CREATE FUNCTION depthmill_item_event(q processing_queue) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'item_id', q.id, 'media_id', q.media_id, 'model', q.model_id, 'kind', q.kind,
        'status', q.status, 'priority', q.priority, 'attempt', q.attempts,
        'max_attempts', q.max_attempts)
$$;

CREATE FUNCTION depthmill_media_created_events() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF depthmill_events_on() THEN
        INSERT INTO events (type, data)
        SELECT 'media.created', jsonb_build_object(
                   'media_id', m.id, 'kind', m.kind, 'mime', m.mime, 'bytes', m.bytes,
                   'sha256', m.sha256, 'original_name', m.original_name, 'width', m.width,
                   'height', m.height, 'duration', m.duration, 'taken_at', m.taken_at)
        FROM new_rows m ORDER BY m.created_at, m.id;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER media_items_created_events
    AFTER INSERT ON media_items REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION depthmill_media_created_events();

CREATE FUNCTION depthmill_media_deleted_events() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF depthmill_events_on() THEN
        INSERT INTO events (type, data)
        SELECT 'media.deleted', jsonb_build_object('media_id', m.id, 'kind', m.kind)
        FROM old_rows m ORDER BY m.id;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER media_items_deleted_events
    AFTER DELETE ON media_items REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION depthmill_media_deleted_events();

-- An item enqueued straight into 'queued' (one enqueued 'pending' says so when it is released).
CREATE FUNCTION depthmill_queue_inserted_events() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF depthmill_events_on() THEN
        INSERT INTO events (type, data)
        SELECT 'item.queued', depthmill_item_event(n)
        FROM new_rows n WHERE n.status = 'queued' ORDER BY n.priority, n.queued_at, n.id;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER processing_queue_inserted_events
    AFTER INSERT ON processing_queue REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION depthmill_queue_inserted_events();

-- A change of status is an event: claimed (started), back in the queue after a failed attempt
-- (retrying: the error and when it is tried next), back for any other reason (queued: released,
-- retried by hand, given back unrun), failed for good, cancelled. Heartbeats and priority
-- changes keep the status and say nothing. Completion is the completing statement's.
-- Transition tables have no statistics: the planner guesses few rows and joins old to new rows
-- in a nested loop, quadratic in the rows one statement updates (20,000 took 90 s). A hash join
-- is linear.
CREATE FUNCTION depthmill_queue_updated_events() RETURNS trigger LANGUAGE plpgsql
SET enable_nestloop = off AS $$
BEGIN
    IF depthmill_events_on() THEN
        INSERT INTO events (type, data)
        SELECT e.type, e.data
        FROM old_rows o JOIN new_rows n ON n.id = o.id
        CROSS JOIN LATERAL (
            SELECT CASE
                WHEN n.status = 'processing' THEN 'item.started'
                WHEN n.status = 'queued' AND o.status = 'processing'
                     AND n.error_count > o.error_count THEN 'item.retrying'
                WHEN n.status = 'queued' THEN 'item.queued'
                WHEN n.status = 'failed' THEN 'item.failed'
                WHEN n.status = 'cancelled' THEN 'item.cancelled'
            END AS type
        ) AS t
        CROSS JOIN LATERAL (
            SELECT t.type, depthmill_item_event(n) || CASE t.type
                WHEN 'item.started' THEN jsonb_build_object('worker', n.lease_owner)
                WHEN 'item.retrying' THEN jsonb_build_object(
                    'error', n.last_error, 'next_attempt_at', n.run_after)
                WHEN 'item.failed' THEN jsonb_build_object('last_error', n.last_error)
                WHEN 'item.queued' THEN jsonb_build_object('previous_status', o.status)
                ELSE '{}'::jsonb END AS data
        ) AS e
        WHERE n.status IS DISTINCT FROM o.status AND t.type IS NOT NULL
        ORDER BY n.priority, n.id;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER processing_queue_updated_events
    AFTER UPDATE ON processing_queue REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION depthmill_queue_updated_events();

-- Webhook endpoints (Standard Webhooks). ``events`` holds what it subscribes to: types, a
-- family ('item.*') or everything ('*').
CREATE TABLE webhooks (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    url             text NOT NULL CHECK (url ~ '^https?://' AND length(url) <= 2048),
    events          text[] NOT NULL CHECK (cardinality(events) > 0),
    description     text CHECK (length(description) <= 1024),
    -- whsec_ + base64 of the key; shown once, at creation (and at rotation).
    secret          text NOT NULL,
    enabled         boolean NOT NULL DEFAULT true,
    disabled_reason text,
    -- Since when every delivery has failed; the endpoint is disabled once that is long enough.
    failing_since   timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- One event to one endpoint, at least once. Claimed like queue items (FOR UPDATE SKIP LOCKED,
-- a lease an expired holder loses); webhook-id is the event's id, so it is the same on every try.
CREATE TABLE webhook_deliveries (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    webhook_id       uuid NOT NULL REFERENCES webhooks ON DELETE CASCADE,
    event_id         bigint NOT NULL REFERENCES events ON DELETE CASCADE,
    status           text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'delivering', 'delivered', 'failed')),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    lease_owner      text,
    lease_expires_at timestamptz,
    response_status  integer,
    response_body    text,
    last_error       text,
    latency_ms       double precision,
    created_at       timestamptz NOT NULL DEFAULT now(),
    delivered_at     timestamptz,
    UNIQUE (webhook_id, event_id)
);

CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at, id)
    WHERE status IN ('pending', 'delivering');
CREATE INDEX webhook_deliveries_of_endpoint ON webhook_deliveries (webhook_id, id DESC);
CREATE INDEX webhook_deliveries_event ON webhook_deliveries (event_id);

CREATE FUNCTION depthmill_webhook_subscribes(patterns text[], type text) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT type = ANY(patterns) OR '*' = ANY(patterns)
           OR split_part(type, '.', 1) || '.*' = ANY(patterns)
$$;

-- Fan-out, in the transaction that wrote the events: each enabled endpoint subscribed to an
-- event gets its delivery (webhook.test goes only where it is sent), and the delivery actor is
-- woken. Only then: a NOTIFY holds a server-wide lock from before its transaction's commit to
-- the end of it, so notifying every queue cycle would queue the claimers' commits one behind the
-- other. Readers of the stream poll the outbox instead (db.events.latest).
CREATE FUNCTION depthmill_events_fan_out() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    fanned integer;
BEGIN
    -- A statement trigger fires for statements that inserted nothing, too.
    IF NOT EXISTS (SELECT 1 FROM new_events) OR NOT EXISTS (SELECT 1 FROM webhooks) THEN
        RETURN NULL;
    END IF;
    INSERT INTO webhook_deliveries (webhook_id, event_id)
    SELECT w.id, e.id
    FROM new_events e JOIN webhooks w
      ON w.enabled AND e.type <> 'webhook.test' AND depthmill_webhook_subscribes(w.events, e.type)
    ORDER BY e.id, w.id;
    GET DIAGNOSTICS fanned = ROW_COUNT;
    IF fanned > 0 THEN
        PERFORM pg_notify('depthmill_webhooks', '');
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER events_fan_out
    AFTER INSERT ON events REFERENCING NEW TABLE AS new_events
    FOR EACH STATEMENT EXECUTE FUNCTION depthmill_events_fan_out();
