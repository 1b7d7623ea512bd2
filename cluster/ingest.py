"""Ingest one file: hash, validate, store the original, record it, queue it. Shared by the HTTP
upload, ``depthmill process`` and the bulk import, so a file gets the same answer everywhere.
And its reverse, deleting media with everything made from it."""

from __future__ import annotations

import hashlib
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import IO, BinaryIO, Literal

from cluster.storage import keys as storage_keys
from cluster.media.malware import signature_in
from cluster.media.probe import MediaLimits, MediaRejected, probe
from cluster.config.settings import Settings
from cluster.storage.originals import delete_original_if_unused
from cluster.storage import Storage
from db import depth as depth_maps
from db import media, queue
from db.connection import Database
from db.media import MediaItem, NewMedia
from db.queue import QueueItem

CHUNK = 1024 * 1024
SPILL_BYTES = 4 * 2**20


@dataclass(frozen=True)
class IngestResult:
    name: str | None
    status: Literal["created", "duplicate", "rejected"]
    media: MediaItem | None = None
    queue_item: QueueItem | None = None
    error_code: str | None = None
    error: str | None = None


class HashedSpool:
    """One file arriving in chunks: kept in a temp file and hashed on the way, at most
    ``max_bytes`` of it. Chunks wait in memory until ``SPILL_BYTES`` have gathered and then go
    out in one write, so a caller on an event loop can do that write from a thread once per few
    MB rather than once per chunk, and a long video never sits in memory."""

    def __init__(self, max_bytes: int, name: str | None = None) -> None:
        self.name, self.max_bytes = name, max_bytes
        self.size = 0
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._file: IO[bytes] | None = None
        self._digest = hashlib.sha256()

    @property
    def too_large(self) -> bool:
        return self.size > self.max_bytes

    def add(self, data: bytes) -> bool:
        """Take the next chunk; True when enough is pending to be written out."""
        self.size += len(data)
        if self.too_large:  # it will be refused: nothing more of it is kept
            self._pending.clear()
            self._pending_bytes = 0
            return False
        self._pending.append(data)
        self._pending_bytes += len(data)
        return self._pending_bytes >= SPILL_BYTES

    def spill(self) -> None:
        """Write what is pending to the temp file, hashing it. Blocking."""
        if self._file is None:
            self._file = tempfile.NamedTemporaryFile(prefix="depthmill-ingest-")
        for chunk in self._pending:
            self._digest.update(chunk)
            self._file.write(chunk)
        self._pending.clear()
        self._pending_bytes = 0

    def finish(self) -> tuple[Path, str]:
        """The whole file on disk and its sha256. Blocking."""
        self.spill()
        assert self._file is not None
        self._file.flush()
        return Path(self._file.name), self._digest.hexdigest()

    def close(self) -> None:
        self._pending.clear()
        if self._file is not None:
            self._file.close()  # a NamedTemporaryFile: closing deletes it


def ingest_path(
    path: Path, sha256: str, name: str | None, *, db: Database, storage: Storage,
    settings: Settings, limits: MediaLimits, priority: int | None = None,
) -> IngestResult:
    # Before anything else reads it (the probe's decoders included), and before anything is
    # stored or recorded. Raises ScannerUnavailable when clamd is down and uploads are refused.
    if signature := signature_in(path, name, settings):
        return IngestResult(name, "rejected", error_code="infected",
                            error=f"the file contains malware ({signature}); nothing was stored")
    try:
        probed = probe(path, limits)
    except MediaRejected as e:
        return IngestResult(name, "rejected", error_code=e.code, error=e.message)
    recorded = None
    while recorded is None:  # twice at most: a duplicate deleted meanwhile is stored anew
        new = None
        if db.run(media.find_by_sha256, sha256) is None:
            key = storage_keys.original(sha256, probed.extension)
            with path.open("rb") as f:
                storage.put(key, f, probed.mime)
            new = NewMedia(
                kind=probed.kind, storage_key=key, sha256=sha256, mime=probed.mime,
                bytes=probed.bytes, original_name=(name or "")[:255] or None,
                width=probed.width, height=probed.height, duration=probed.duration,
                fps=probed.fps, frame_count=probed.frame_count, codec=probed.codec,
                taken_at=probed.taken_at, camera=probed.camera,
            )
        recorded = db.run(_record, new, sha256, settings, priority, stored=(storage, path))
    found, item = recorded
    return IngestResult(name, "created" if found.created else "duplicate", found, item)


def _record(
    conn, new: NewMedia | None, sha256: str, settings: Settings, priority: int | None,
    *, stored: tuple[Storage, Path],
) -> tuple[MediaItem, QueueItem] | None:
    """The media row and its queue item in one transaction: one commit per upload, and no media
    row is ever left without the item that processes it. None when the known content was
    deleted since it was looked up."""
    if new:
        found = _record_original(conn, new, *stored)
    else:
        found = media.find_by_sha256(conn, sha256, lock=True)
    if found is None:
        return None
    if not found.created:
        # Known content: report its latest item for this model instead of processing it again.
        earlier = [i for i in queue.items_for_media(conn, found.id) if i.model_id == settings.model]
        if earlier:
            return found, max(earlier, key=lambda i: i.queued_at)
    item = queue.enqueue(conn, found.id, settings.model, priority=priority,
                         max_attempts=settings.max_attempts)
    return found, item


def _record_original(conn, new: NewMedia, storage: Storage, path: Path) -> MediaItem | None:
    media.lock_original(conn, new.storage_key)
    found = media.insert(conn, new)
    if found is not None and found.created and not storage.exists(new.storage_key):
        # Media with the same content was deleted after this upload stored its original, and
        # the delete removed the object (no row named it yet): store it again. The lock holds
        # off any such delete until this row is committed.
        with path.open("rb") as f:
            storage.put(new.storage_key, f, new.mime)
    return found


def delete_media(db: Database, storage: Storage, media_id: uuid.UUID) -> None:
    """Remove media, its queue items, depth and render rows, then its objects. Rows first: once they are
    gone nothing hands out URLs to these objects. Raises NotFound for unknown media."""
    item = db.run(media.get, media_id)
    maps = db.run(depth_maps.for_media, media_id)
    db.run(media.delete, media_id)
    delete_original_if_unused(db, storage, item.storage_key)
    # Each model's depth outputs: the rows' objects, and those no row names (a video's
    # per-frame records, which its video rows point to in their metadata).
    written = {key for model_id in {m.model_id for m in maps}
               for key in storage_keys.written_by_processing(media_id, model_id)}
    for key in dict.fromkeys([storage_keys.thumbnail(media_id), storage_keys.preview(media_id),
                              *(m.storage_key for m in maps), *sorted(written)]):
        storage.delete(key)
    # Renders (stereo, GDepth) have rows that cascade with the media; their objects go by prefix.
    for obj in list(storage.list(storage_keys.renders_of(media_id))):
        storage.delete(obj.key)


def ingest_spool(spool: HashedSpool, **kw) -> IngestResult:
    if spool.too_large:
        return IngestResult(spool.name, "rejected", error_code="file_too_large",
                            error=f"the file is larger than the limit of {spool.max_bytes} bytes")
    path, sha256 = spool.finish()
    return ingest_path(path, sha256, spool.name, **kw)


def ingest_stream(source: BinaryIO, name: str | None, **kw) -> IngestResult:
    limits: MediaLimits = kw["limits"]
    spool = HashedSpool(limits.max_bytes, name)
    try:
        # Reading stops as soon as the file is over the limit.
        while not spool.too_large and (chunk := source.read(CHUNK)):
            if spool.add(chunk):
                spool.spill()
        return ingest_spool(spool, **kw)
    finally:
        spool.close()


def ingest_file(path: Path, **kw) -> IngestResult:
    with path.open("rb") as f:
        return ingest_stream(f, path.name, **kw)


