"""Remove stored objects that no row points to any more.

Objects outlive their rows when a process dies between the two: the gateway between deleting a
media's rows and its objects, the scheduler between learning that an item's media was deleted
while it ran and removing what the item wrote, an upload between storing the original and
recording it. ``depthmill sweep`` finds them by their keys (:mod:`cluster.storage.keys`):
originals that no media row names, renditions and depth outputs of media that no longer exist.
Keys of any other shape are not depthmill's and are left alone.

Only objects older than a grace period are candidates, so an upload that has stored its original
but not yet committed its row is never swept, and each candidate is checked again just before it
is deleted (a re-upload of the same content writes the same key).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import islice

from cluster.storage import keys as storage_keys
from cluster.storage.originals import delete_original_if_unused
from cluster.storage import Storage, StoredObject
from db import media
from db.connection import Database

log = logging.getLogger(__name__)

BATCH = 1_000


@dataclass
class SweepReport:
    scanned: int = 0
    orphans: list[str] = field(default_factory=list)
    removed: int = 0


def sweep(db: Database, storage: Storage, *, older_than_s: float, dry_run: bool = False) -> SweepReport:
    """Find (and unless ``dry_run``, delete) the orphans among objects last written more than
    ``older_than_s`` ago, checking them against the database a thousand keys at a time."""
    report = SweepReport()
    cutoff = time.time() - older_than_s
    candidates = _candidates(storage, cutoff, report)
    while objects := list(islice(candidates, BATCH)):
        for key in _orphans(db, [o.key for o in objects]):
            report.orphans.append(key)
            if not dry_run and _still_orphaned(db, storage, key, cutoff) and _remove(db, storage, key):
                report.removed += 1
                log.info("removed %s: no row points to it", key)
    return report


def _candidates(storage: Storage, cutoff: float, report: SweepReport) -> Iterator[StoredObject]:
    for obj in storage.list():
        report.scanned += 1
        if obj.modified < cutoff and _is_ours(obj.key):
            yield obj


def _is_ours(key: str) -> bool:
    return key.startswith(storage_keys.ORIGINALS) or storage_keys.media_of(key) is not None


def _orphans(db: Database, keys: list[str]) -> list[str]:
    originals = [k for k in keys if k.startswith(storage_keys.ORIGINALS)]
    owners = {k: m for k in keys if (m := storage_keys.media_of(k)) is not None}
    unreferenced = db.run(media.unreferenced, originals) if originals else set()
    gone = db.run(media.missing, set(owners.values())) if owners else set()
    return [k for k in keys if k in unreferenced or owners.get(k) in gone]


def _remove(db: Database, storage: Storage, key: str) -> bool:
    if key.startswith(storage_keys.ORIGINALS):
        return delete_original_if_unused(db, storage, key)  # under the upload's lock
    storage.delete(key)
    return True


def _still_orphaned(db: Database, storage: Storage, key: str, cutoff: float) -> bool:
    """Just before deleting: not rewritten since it was listed, and still no row for it."""
    if not any(o.key == key and o.modified < cutoff for o in storage.list(key)):
        return False
    return bool(_orphans(db, [key]))
