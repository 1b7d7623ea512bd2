-- Stereo video renders are background jobs (a Ray task each, cluster/work/stereo_video.py): a
-- row per render says how far it got. The request that inserts the row, or takes over a stale
-- or failed one, starts the task; `attempts` fences the task's updates, so a task that was given
-- up on and then wakes cannot overwrite its successor's. The finished file is also a row of
-- stereo_renders, the bounded cache, and is evicted with the photos' renders.
CREATE TABLE stereo_video_renders (
    storage_key text PRIMARY KEY,
    media_id uuid NOT NULL REFERENCES media_items (id) ON DELETE CASCADE,
    model_id text NOT NULL,
    layout text NOT NULL,
    divergence real NOT NULL,
    convergence real NOT NULL,
    status text NOT NULL CHECK (status IN ('rendering', 'ready', 'failed')),
    progress real NOT NULL DEFAULT 0 CHECK (progress BETWEEN 0 AND 1),
    attempts integer NOT NULL DEFAULT 1,
    last_error text,
    started_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX stereo_video_renders_media ON stereo_video_renders (media_id);
