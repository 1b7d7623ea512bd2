"""Ingest one file: hash, validate, store the original, record it, queue it. Shared by the HTTP
upload, ``depthmill process`` and the bulk import, so a file gets the same answer everywhere."""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

from cluster import storage_keys
from cluster.media_probe import MediaLimits, MediaRejected, probe
from cluster.settings import Settings
from cluster.storage import Storage
from db import media, queue
from db.connection import Database
from db.media import MediaItem, NewMedia
from db.queue import QueueItem

CHUNK = 1024 * 1024


@dataclass(frozen=True)
class IngestResult:
    name: str | None
    status: Literal["created", "duplicate", "rejected"]
    media: MediaItem | None = None
    queue_item: QueueItem | None = None
    error_code: str | None = None
    error: str | None = None


class TooLarge(Exception):
    pass


@contextmanager
def spooled_copy(source: BinaryIO, max_bytes: int) -> Iterator[tuple[Path, str]]:
    """Copy a stream to a temp file while hashing it; stop as soon as it exceeds ``max_bytes``."""
    digest = hashlib.sha256()
    with tempfile.NamedTemporaryFile(prefix="depthmill-ingest-") as out:
        size = 0
        while chunk := source.read(CHUNK):
            size += len(chunk)
            if size > max_bytes:
                raise TooLarge(size)
            digest.update(chunk)
            out.write(chunk)
        out.flush()
        yield Path(out.name), digest.hexdigest()


def ingest_path(
    path: Path, sha256: str, name: str | None, *, db: Database, storage: Storage,
    settings: Settings, limits: MediaLimits, priority: int | None = None,
) -> IngestResult:
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
        recorded = db.run(_record, new, sha256, settings, priority)
    found, item = recorded
    return IngestResult(name, "created" if found.created else "duplicate", found, item)


def _record(
    conn, new: NewMedia | None, sha256: str, settings: Settings, priority: int | None,
) -> tuple[MediaItem, QueueItem] | None:
    """The media row and its queue item in one transaction: one commit per upload, and no media
    row is ever left without the item that processes it. None when the known content was
    deleted since it was looked up."""
    found = media.insert(conn, new) if new else media.find_by_sha256(conn, sha256)
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


def ingest_stream(source: BinaryIO, name: str | None, **kw) -> IngestResult:
    limits: MediaLimits = kw["limits"]
    try:
        with spooled_copy(source, limits.max_bytes) as (path, sha256):
            return ingest_path(path, sha256, name, **kw)
    except TooLarge:
        return IngestResult(name, "rejected", error_code="file_too_large",
                            error=f"the file is larger than the limit of {limits.max_bytes} bytes")


def ingest_file(path: Path, **kw) -> IngestResult:
    with path.open("rb") as f:
        return ingest_stream(f, path.name, **kw)


