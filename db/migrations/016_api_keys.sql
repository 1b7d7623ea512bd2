-- API keys with scopes (db/keys.py). A key is `dm_<prefix>_<secret>`; only its HMAC-SHA256
-- under the server secret is kept, so a copy of this table opens nothing. The prefix is public
-- (listings show it, to tell keys apart); the hash is what a request is looked up by.
CREATE TABLE api_keys (
    id           uuid PRIMARY KEY DEFAULT depthmill_uuid7(),
    name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    prefix       text NOT NULL UNIQUE,
    key_hash     bytea NOT NULL UNIQUE,
    -- Each scope implies the ones below it (admin > write > read): serve_app/api/auth.py.
    scopes       text[] NOT NULL CHECK (scopes <> '{}' AND scopes <@ ARRAY['read', 'write', 'admin']),
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    expires_at   timestamptz,
    revoked_at   timestamptz
);

-- A name names one live key, so `depthmill keys revoke NAME` is unambiguous; a revoked key's
-- name may be given to its successor.
CREATE UNIQUE INDEX api_keys_live_name ON api_keys (name) WHERE revoked_at IS NULL;
