"""db/keys.py: keys are stored hashed, found by their hash, revoked by name, id or prefix, and
their last use is written at most once a minute."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from db import keys
from db.errors import NotFound

SECRET = b"s" * 32


def test_a_key_is_found_by_its_hash_and_never_stored(conn):
    made, key = keys.create(conn, SECRET, "ci", ["write", "read"])
    assert made.scopes == ["read", "write"] and keys.looks_like_key(key)
    assert key[3:11] == made.prefix
    stored = conn.execute("SELECT * FROM api_keys").fetchone()
    assert not any(key in str(v) or key.rsplit("_", 1)[1] in str(v) for v in stored)
    assert conn.execute("SELECT key_hash FROM api_keys").fetchone()[0] == keys.hash_key(SECRET, key)
    assert keys.find(conn, SECRET, key) == made
    assert keys.find(conn, b"t" * 32, key) is None  # another server secret: another hash
    assert keys.find(conn, SECRET, key[:-1] + ("A" if key[-1] != "A" else "B")) is None
    assert keys.find(conn, SECRET, "not-a-key") is None


def test_revoke_by_name_id_or_prefix_and_names_are_unique_among_live_keys(conn):
    a, _ = keys.create(conn, SECRET, "a", ["read"])
    b, _ = keys.create(conn, SECRET, "b", ["admin"])
    c, _ = keys.create(conn, SECRET, "c", ["admin"])
    with pytest.raises(keys.NameTaken, match="already named 'a'"):
        keys.create(conn, SECRET, "a", ["read"])
    assert keys.revoke(conn, "a").id == a.id
    assert keys.revoke(conn, str(b.id)).id == b.id
    assert keys.revoke(conn, c.prefix).id == c.id
    with pytest.raises(NotFound):
        keys.revoke(conn, "a")  # revoked already
    again, _ = keys.create(conn, SECRET, "a", ["read"])  # the name is free again
    assert [k.name for k in keys.list_keys(conn)] == ["a", "b", "c", "a"]
    assert [k.id for k in keys.list_keys(conn, include_revoked=False)] == [again.id]
    assert all(k.revoked_at for k in keys.list_keys(conn)[:3])


def test_bad_scopes_are_refused(conn):
    with pytest.raises(ValueError, match="unknown scope root"):
        keys.create(conn, SECRET, "x", ["read", "root"])
    with pytest.raises(ValueError, match="no scope given"):
        keys.create(conn, SECRET, "x", [])


def test_expiry_and_revocation_make_a_key_unusable(conn):
    now = datetime.now(UTC)
    lapsed, _ = keys.create(conn, SECRET, "lapsed", ["read"], now - timedelta(seconds=1))
    later, _ = keys.create(conn, SECRET, "later", ["read"], now + timedelta(days=1))
    assert not lapsed.usable_at(now) and later.usable_at(now)
    assert not keys.revoke(conn, "later").usable_at(now)


def test_touch_writes_at_most_once_a_minute_and_any_exist_counts_revoked_keys(conn):
    assert not keys.any_exist(conn)
    made, _ = keys.create(conn, SECRET, "k", ["read"])
    keys.touch(conn, made.id)
    first = conn.execute("SELECT last_used_at, xmin::text FROM api_keys").fetchone()
    assert first[0] is not None
    keys.touch(conn, made.id)  # within the minute: no write, so no new row version
    assert conn.execute("SELECT last_used_at, xmin::text FROM api_keys").fetchone() == first
    conn.execute("UPDATE api_keys SET last_used_at = now() - interval '2 minutes'")
    keys.touch(conn, made.id)
    assert conn.execute("SELECT last_used_at FROM api_keys").fetchone()[0] >= first[0]
    keys.revoke(conn, "k")
    assert keys.any_exist(conn)
