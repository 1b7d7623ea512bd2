"""Originals are content-addressed: an upload of the same bytes as media being deleted stores the
very key the delete removes. Recording an upload and removing an original take the same advisory
lock per key (``db.media.lock_original``), so whichever way they interleave the new media keeps
its object."""

from __future__ import annotations

from cluster.storage.base import Storage
from db import media
from db.connection import Database


def delete_original_if_unused(db: Database, storage: Storage, key: str) -> bool:
    """Remove an original no media row names (its media was deleted); False if one does."""

    def remove(conn) -> bool:
        media.lock_original(conn, key)
        if media.find_by_storage_key(conn, key) is not None:
            return False
        storage.delete(key)
        return True

    return db.run(remove)
