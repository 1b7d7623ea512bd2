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
    with tempfile.TemporaryDirectory(prefix="depthmill-ingest-") as tmp:
        path = Path(tmp) / "upload"
        size = 0
        with path.open("wb") as out:
            while chunk := source.read(CHUNK):
                size += len(chunk)
                if size > max_bytes:
                    raise TooLarge(size)
                digest.update(chunk)
                out.write(chunk)
        yield path, digest.hexdigest()


def ingest_path(
    path: Path, sha256: str, name: str | None, *, db: Database, storage: Storage,
    settings: Settings, limits: MediaLimits, priority: int | None = None,
) -> IngestResult:
    try:
        probed = probe(path, limits)
    except MediaRejected as e:
        return IngestResult(name, "rejected", error_code=e.code, error=e.message)
    existing = db.run(media.find_by_sha256, sha256)
    if existing is None:
        key = storage_keys.original(sha256, probed.extension)
        with path.open("rb") as f:
            storage.put(key, f, probed.mime)
        row = NewMedia(
            kind=probed.kind, storage_key=key, sha256=sha256, mime=probed.mime, bytes=probed.bytes,
            original_name=(name or "")[:255] or None, width=probed.width, height=probed.height,
            duration=probed.duration, fps=probed.fps, frame_count=probed.frame_count,
            codec=probed.codec, taken_at=probed.taken_at, camera=probed.camera,
        )
        existing = db.run(media.insert, row)
    status = "created" if existing.created else "duplicate"
    if status == "duplicate":
        # Known content: report its latest item for this model instead of processing it again.
        earlier = [i for i in db.run(queue.items_for_media, existing.id)
                   if i.model_id == settings.model]
        if earlier:
            return IngestResult(name, status, existing, max(earlier, key=lambda i: i.queued_at))
    item = db.run(
        queue.enqueue, existing.id, settings.model, priority=priority,
        max_attempts=settings.max_attempts,
    )
    return IngestResult(name, status, existing, item)


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


