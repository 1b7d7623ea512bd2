-- New rows get time-ordered ids (UUID version 7: 48 bits of Unix milliseconds, then random bits),
-- as River and pgqueuer get from bigserial. Inside a priority the claim takes items in queued_at
-- order, so with v7 ids the primary key and media_id index entries it touches sit side by side
-- instead of on a random leaf page each (with 1M rows queued, each of those a page read and,
-- first after a checkpoint, a full-page image in the WAL). Existing ids stay as they are; v4 and
-- v7 ids never collide. Postgres 18 has uuidv7(); this is the same layout for older servers.
CREATE FUNCTION depthmill_uuid7() RETURNS uuid LANGUAGE sql VOLATILE PARALLEL SAFE AS $$
    SELECT encode(
        set_bit(set_bit(
            overlay(uuid_send(gen_random_uuid())
                    PLACING substring(int8send((extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3)
                    FROM 1 FOR 6),
            52, 1), 53, 1),  -- version 4 -> 7
        'hex')::uuid
$$;

ALTER TABLE media_items ALTER COLUMN id SET DEFAULT depthmill_uuid7();
ALTER TABLE processing_queue ALTER COLUMN id SET DEFAULT depthmill_uuid7();
ALTER TABLE depth_maps ALTER COLUMN id SET DEFAULT depthmill_uuid7();
