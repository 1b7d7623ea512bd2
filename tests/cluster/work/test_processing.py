"""process_item without Ray: the rows it returns for what the depth function answered."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

import numpy as np

from cluster.config.settings import Settings
from cluster.model.contract import DepthResult
from cluster.storage import LocalStorage
from cluster.storage.signing import UrlSigner
from cluster.work.processing import process_item
from db.queue import ClaimedItem
from tests.utils import media_files


def _photo_item(storage: LocalStorage) -> ClaimedItem:
    content = media_files.jpeg_bytes(media_files.photo("coffee"))
    media_id = uuid.uuid4()
    key = f"originals/{media_id}.jpg"
    storage.put_bytes(key, content, "image/jpeg")
    now = datetime.now(timezone.utc)
    return ClaimedItem(id=uuid.uuid4(), media_id=media_id, model_id="tiny", kind="photo",
                       bytes=len(content), mime="image/jpeg", storage_key=key, priority=0,
                       attempts=1, max_attempts=3, lease_owner="test", lease_expires_at=now,
                       queued_at=now)


def test_depth_map_rows_record_the_revision_the_model_answered_with(tmp_path):
    # The queue path passed no revision and recorded NULL, though the replica had loaded (and the
    # bulk job recorded) a pinned one; the rows take it from the results.
    storage = LocalStorage(tmp_path / "objects", UrlSigner(b"k" * 32))
    settings = Settings(home=tmp_path, model="tiny")

    def depth(images, sizes):
        return [DepthResult(np.ones(size or im.shape[:2], np.float32), 1.0, 1.0, revision="abc123")
                for im, size in zip(images, sizes)]

    outcome = process_item(_photo_item(storage), settings, storage, depth)
    assert outcome.status == "completed", outcome.error
    assert outcome.outputs and {m.model_revision for m in outcome.outputs} == {"abc123"}
