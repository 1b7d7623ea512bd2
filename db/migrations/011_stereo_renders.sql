-- Renders made on request from a photo and its depth (stereo layouts, GDepth JPEGs) are a cache:
-- bounded in bytes, least recently used evicted first. A row per stored object; the rows go with
-- their media (the objects by prefix, in delete_media; the sweep catches any left behind).
CREATE TABLE stereo_renders (
    storage_key   text PRIMARY KEY,
    media_id      uuid NOT NULL REFERENCES media_items (id) ON DELETE CASCADE,
    bytes         bigint NOT NULL CHECK (bytes >= 0),
    last_used_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE INDEX stereo_renders_lru ON stereo_renders (last_used_at, storage_key);
CREATE INDEX stereo_renders_media ON stereo_renders (media_id);
