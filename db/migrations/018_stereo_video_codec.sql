-- A stereo video render names its codec: H.264 by default, HEVC when asked or when the frame is
-- wider than H.264 players take. Renders made before this were H.264.
ALTER TABLE stereo_video_renders ADD COLUMN codec text NOT NULL DEFAULT 'h264'
    CHECK (codec IN ('h264', 'hevc'));
