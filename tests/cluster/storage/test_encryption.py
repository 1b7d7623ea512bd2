"""Server-side encryption at rest (``DEPTHMILL_S3_SSE``): every object depthmill writes to S3
asks for it, and moto's HTTP server reports it back on each object, as S3 does."""

from __future__ import annotations

import io
import os
import uuid
from datetime import UTC, datetime

import pydantic
import pytest

from cluster.config.settings import Settings
from cluster.ingest import ingest_file
from cluster.media.probe import MediaLimits
from cluster.storage import S3Storage, storage_from_settings
from cluster.work.processing import process_item
from db.queue import ClaimedItem
from tests.cluster.work.test_processing import FakeDepth
from devkit import media_files

KMS_KEY = "arn:aws:kms:us-east-1:123456789012:key/depthmill-test"


def encryption_of(storage: S3Storage, key: str) -> tuple[str | None, str | None]:
    head = storage.client.head_object(Bucket=storage.bucket, Key=key)
    return head.get("ServerSideEncryption"), head.get("SSEKMSKeyId")


@pytest.mark.parametrize("sse, kms_key", [("AES256", None), ("aws:kms", KMS_KEY)])
def test_every_write_path_asks_for_the_encryption(s3_endpoint, sse, kms_key):
    storage = S3Storage(f"sse-{uuid.uuid4().hex[:12]}", endpoint_url=s3_endpoint,
                        multipart_threshold=5 * 2**20, sse=sse, sse_kms_key_id=kms_key)
    storage.put("stream", io.BytesIO(b"small"), "application/octet-stream")
    storage.put("multipart", io.BytesIO(os.urandom(6 * 2**20)), "video/mp4")  # over the threshold
    storage.put_bytes("bytes", b"bytes", "image/png")
    for key in ("stream", "multipart", "bytes"):
        assert encryption_of(storage, key) == (sse, kms_key), key


def test_off_asks_for_nothing(s3_endpoint):
    storage = S3Storage(f"plain-{uuid.uuid4().hex[:12]}", endpoint_url=s3_endpoint)
    storage.put_bytes("bytes", b"bytes", "image/png")
    assert encryption_of(storage, "bytes") == (None, None)


def test_a_kms_key_without_kms_is_refused(tmp_path):
    with pytest.raises(pydantic.ValidationError, match="S3_SSE_KMS_KEY_ID"):
        Settings(home=tmp_path, s3_sse="AES256", s3_sse_kms_key_id=KMS_KEY)


@pytest.mark.parametrize("kind", ["photo", "video"])
def test_originals_depth_outputs_and_renditions_are_encrypted(
        s3_endpoint, db, database_url, tmp_path, kind):
    settings = Settings(home=tmp_path / "home", database_url=database_url, model="tiny",
                        storage="s3", s3_endpoint=s3_endpoint, s3_bucket=f"sse-{kind}",
                        s3_sse="AES256", video_sample_fps=4, video_max_frames=8)
    storage = storage_from_settings(settings)
    path = tmp_path / ("photo.jpg" if kind == "photo" else "clip.mp4")
    path.write_bytes(media_files.jpeg_bytes(media_files.photo()) if kind == "photo"
                     else media_files.video_bytes(seconds=1, fps=8, size=(96, 64)))

    ingested = ingest_file(path, db=db, storage=storage, settings=settings,
                           limits=MediaLimits.from_settings(settings))
    assert ingested.status == "created", ingested.error
    found, now = ingested.media, datetime.now(UTC)
    item = ClaimedItem(
        id=ingested.queue_item.id, media_id=found.id, model_id="tiny", kind=kind,
        bytes=found.bytes, mime=found.mime, storage_key=found.storage_key, priority=0,
        attempts=1, max_attempts=3, lease_owner="test", lease_expires_at=now, queued_at=now)
    outcome = process_item(item, settings, storage, FakeDepth(), model_revision=None)
    assert outcome.status == "completed", outcome.error

    written = [o.key for o in storage.list()]
    prefixes = {key.split("/", 1)[0] for key in written}
    assert {"originals", "depth"} <= prefixes
    if kind == "photo":
        assert {"thumbnails", "previews"} <= prefixes
    for key in written:
        assert encryption_of(storage, key) == ("AES256", None), key
