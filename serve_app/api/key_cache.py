"""A gateway replica's memory of API keys, so that checking a key is not a query per request."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import psycopg
from starlette.concurrency import run_in_threadpool

from db import keys
from db.connection import Database, unhooked

# Entries a replica keeps before it forgets them all (a flood of made-up keys is cached too, so
# it costs one query each per TTL at most, not one per request).
_CACHE_ENTRIES = 10_000


class KeyCache:
    """What this replica read about keys, each answer trusted for ``ttl_s``."""

    def __init__(self, db: Database, server_secret: bytes, ttl_s: float) -> None:
        self.db, self.secret, self.ttl_s = db, server_secret, ttl_s
        self._keys: dict[bytes, tuple[keys.ApiKey | None, float]] = {}
        self._any: tuple[bool, float] = (False, float("-inf"))

    async def any_exist(self) -> bool:
        found, at = self._any
        # Once true, always true (keys are never deleted): no need to ask again.
        if not found and time.monotonic() - at >= self.ttl_s:
            found = await run_in_threadpool(self.db.run, keys.any_exist)
            self._any = (found, time.monotonic())
        return found

    async def find(self, presented: str) -> keys.ApiKey | None:
        digest = keys.hash_key(self.secret, presented)
        cached = self._keys.get(digest)
        if cached is not None and time.monotonic() - cached[1] < self.ttl_s:
            return cached[0]
        with unhooked():  # touching a key is not the request's change
            found = await run_in_threadpool(self.db.run, _find_and_touch, self.secret, presented)
        if len(self._keys) >= _CACHE_ENTRIES:
            self._keys.clear()
        self._keys[digest] = (found, time.monotonic())
        return found

    def forget(self) -> None:
        """After this replica revoked or made a key: no need to wait for the TTL here."""
        self._keys.clear()
        self._any = (False, float("-inf"))


def _find_and_touch(conn: psycopg.Connection, server_secret: bytes,
                    presented: str) -> keys.ApiKey | None:
    found = keys.find(conn, server_secret, presented)
    now = datetime.now(UTC)
    if found is not None and found.usable_at(now) and (
            found.last_used_at is None
            or now - found.last_used_at > timedelta(seconds=keys.TOUCH_EVERY_S)):
        keys.touch(conn, found.id)
    return found
