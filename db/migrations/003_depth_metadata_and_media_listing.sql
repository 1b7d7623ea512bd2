-- Per-output metadata (a depth video's frame timestamps and per-frame raw ranges).
ALTER TABLE depth_maps ADD COLUMN metadata jsonb NOT NULL DEFAULT '{}'::jsonb;
