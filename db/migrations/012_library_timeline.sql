-- The web app's library is a timeline by capture date: photos and videos in the order they were
-- taken (EXIF), those without a date by when they were uploaded. Its keyset pages read this index.
CREATE INDEX media_items_timeline ON media_items ((coalesce(taken_at, created_at)) DESC, id DESC);
