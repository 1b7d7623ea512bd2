-- Who did what (db/audit.py): one row per state-changing request and per refused one, written
-- by the gateway after the change commits (docs/RELIABILITY.md says what that promises).
CREATE TABLE audit_log (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at         timestamptz NOT NULL DEFAULT now(),
    key_name   text NOT NULL,  -- a key's name, 'env key', 'event token' or 'anonymous'
    key_id     uuid,           -- no foreign key: the record outlives nothing, keys are never deleted
    client     text NOT NULL,
    method     text NOT NULL,
    route      text NOT NULL,  -- the route's template, /api/media/{media_id}: never a query string
    media_id   uuid,
    target     text,           -- another id in the path: item_id=…, webhook_id=…
    status     integer NOT NULL
);

-- Pruning deletes by age; the filters most asked for read newest first within a media or key.
CREATE INDEX audit_log_at ON audit_log (at);
CREATE INDEX audit_log_media ON audit_log (media_id, id) WHERE media_id IS NOT NULL;
CREATE INDEX audit_log_key ON audit_log (key_name, id);
