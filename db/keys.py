"""API keys (migration 016): their format, their hash and every statement on ``api_keys``.

A key reads ``dm_<prefix>_<secret>``: ``dm_`` says whose it is (secret scanners and people can
tell it from other tokens), the prefix is 8 public hex digits that listings show, the secret 43
url-safe characters (256 bits). Only ``hash_key`` of the whole key is stored: HMAC-SHA256 under
the server secret, so neither a copy of the table nor the secret alone gives a key back. A
request's key is looked up by its hash, one unique-index probe.

Keys are revoked, never deleted: the table remembers that keys were made, which is what keeps
authentication on once the first one exists (``any_exist``).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg.rows import class_row, tuple_row

from db.errors import NotFound

PREFIX = "dm_"
SCOPES = ("read", "write", "admin")  # each implies the ones before it
_FORMAT = re.compile(r"dm_[0-9a-f]{8}_[A-Za-z0-9_-]{43}")
# last_used_at is a hint for people (is this key still in use?), not a log: written at most this
# often per key, so a busy key does not write a row per request.
TOUCH_EVERY_S = 60

_COLUMNS = "id, name, prefix, scopes, created_at, last_used_at, expires_at, revoked_at"


class NameTaken(ValueError):
    """A live key already has this name (the API answers 409)."""


@dataclass(frozen=True)
class ApiKey:
    """A key as stored: no secret, no hash."""

    id: uuid.UUID
    name: str
    prefix: str
    scopes: list[str]
    created_at: datetime
    last_used_at: datetime | None
    expires_at: datetime | None
    revoked_at: datetime | None

    def usable_at(self, now: datetime) -> bool:
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)


def new_key() -> str:
    return f"{PREFIX}{secrets.token_hex(4)}_{secrets.token_urlsafe(32)}"


def looks_like_key(value: str) -> bool:
    return _FORMAT.fullmatch(value) is not None


def hash_key(server_secret: bytes, key: str) -> bytes:
    return hmac.new(server_secret, key.encode(), hashlib.sha256).digest()


def check_scopes(scopes: list[str]) -> list[str]:
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown or not scopes:
        raise ValueError(f"unknown scope {', '.join(unknown)!s}; give one or more of "
                         f"{', '.join(SCOPES)}" if unknown else
                         f"no scope given; give one or more of {', '.join(SCOPES)}")
    return sorted(set(scopes), key=SCOPES.index)


def create(conn: psycopg.Connection, server_secret: bytes, name: str, scopes: list[str],
           expires_at: datetime | None = None) -> tuple[ApiKey, str]:
    """A new key and its plaintext, which is never seen again: show it once."""
    scopes = check_scopes(scopes)
    key = new_key()
    try:
        with conn.transaction(), conn.cursor(row_factory=class_row(ApiKey)) as cur:
            row = cur.execute(
                f"""INSERT INTO api_keys (name, prefix, key_hash, scopes, expires_at)
                    VALUES (%s, %s, %s, %s, %s) RETURNING {_COLUMNS}""",
                (name, key[3:11], hash_key(server_secret, key), scopes, expires_at),
            ).fetchone()
    except psycopg.errors.UniqueViolation as e:
        if e.diag.constraint_name == "api_keys_live_name":
            raise NameTaken(f"a live key is already named {name!r}: revoke it first, or "
                            "choose another name") from None
        raise
    return row, key


def list_keys(conn: psycopg.Connection, *, include_revoked: bool = True) -> list[ApiKey]:
    with conn.cursor(row_factory=class_row(ApiKey)) as cur:
        return cur.execute(
            f"""SELECT {_COLUMNS} FROM api_keys
                WHERE %s OR revoked_at IS NULL ORDER BY created_at, id""",
            (include_revoked,),
        ).fetchall()


def find(conn: psycopg.Connection, server_secret: bytes, key: str) -> ApiKey | None:
    """The key a request presents, revoked and expired ones included (the caller says why it
    refuses them); None for one that was never made."""
    if not looks_like_key(key):
        return None
    with conn.cursor(row_factory=class_row(ApiKey)) as cur:
        return cur.execute(f"SELECT {_COLUMNS} FROM api_keys WHERE key_hash = %s",
                           (hash_key(server_secret, key),)).fetchone()


def usable(conn: psycopg.Connection, key_id: uuid.UUID) -> bool:
    """Whether the key exists and is neither revoked nor expired."""
    return conn.execute(
        """SELECT EXISTS (SELECT FROM api_keys WHERE id = %s AND revoked_at IS NULL
                                AND (expires_at IS NULL OR expires_at > now())) AS usable""",
        (key_id,)).fetchone()["usable"]


def touch(conn: psycopg.Connection, key_id: uuid.UUID) -> None:
    """Record a use, unless one was recorded within ``TOUCH_EVERY_S`` (then nothing is written)."""
    conn.execute(
        """UPDATE api_keys SET last_used_at = now()
           WHERE id = %s AND (last_used_at IS NULL
                              OR last_used_at < now() - make_interval(secs => %s))""",
        (key_id, TOUCH_EVERY_S),
    )


def revoke(conn: psycopg.Connection, name_or_id: str) -> ApiKey:
    """Revoke the live key with this name, id or prefix (a revoked key stays revoked)."""
    try:
        key_id = uuid.UUID(name_or_id)
    except ValueError:
        key_id = None
    with conn.transaction(), conn.cursor(row_factory=class_row(ApiKey)) as cur:
        row = cur.execute(
            f"""UPDATE api_keys SET revoked_at = now()
                WHERE revoked_at IS NULL
                  AND (id = %(id)s OR name = %(name)s OR prefix = %(name)s)
                RETURNING {_COLUMNS}""",
            {"id": key_id, "name": name_or_id},
        ).fetchall()
    if not row:
        raise NotFound(f"no live key named {name_or_id!r} (nor with that id or prefix)")
    return row[0]


def any_exist(conn: psycopg.Connection) -> bool:
    """Whether a key was ever made (revoked ones count: revoking the last key must not open the
    API again)."""
    with conn.cursor(row_factory=tuple_row) as cur:
        return cur.execute("SELECT EXISTS (SELECT 1 FROM api_keys)").fetchone()[0]
