"""What the fault tests share: a queue seeded with photos, its counts, and the invariants every
fault must leave (each item completed once, one depth map per media, nothing `processing`)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from cluster.config.settings import Settings
from cluster.ingest import ingest_file
from cluster.media.probe import MediaLimits
from cluster.storage import storage_from_settings
from db.connection import Database
from devkit import media_files


def seed(settings: Settings, db: Database, tmp_path: Path, n: int, start: int = 0) -> None:
    """``n`` distinct photos ingested and queued; a later batch passes ``start`` past the earlier
    ones, so its content is new (ingest deduplicates by content)."""
    storage = storage_from_settings(settings)
    limits = MediaLimits.from_settings(settings)
    base = [media_files.photo(name) for name in ("astronaut", "chelsea", "coffee")]
    for i in range(start, start + n):
        img = base[i % 3].rotate(i * 7, expand=True).resize((160 + i, 120 + i))
        path = media_files.write(tmp_path, f"{i}.jpg", media_files.jpeg_bytes(img))
        ingest_file(path, db=db, storage=storage, settings=settings, limits=limits)


def counts(db: Database) -> dict:
    return db.run(lambda c: c.execute(
        """SELECT count(*) FILTER (WHERE status = 'completed') AS completed,
                  count(*) FILTER (WHERE status IN ('failed', 'cancelled')) AS failed,
                  count(*) FILTER (WHERE status = 'processing') AS processing,
                  count(*) AS total,
                  (SELECT count(*) FROM depth_maps WHERE format = 'png16') AS depth_rows,
                  (SELECT count(DISTINCT media_id) FROM depth_maps WHERE format = 'png16') AS media_with_depth
           FROM queue_items""").fetchone())


def wait_until(db: Database, predicate, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while not predicate(c := counts(db)):
        assert time.monotonic() < deadline, c
        time.sleep(0.5)
    return c


def assert_each_item_once(db: Database, items: int) -> None:
    final = wait_until(db, lambda c: c["completed"] + c["failed"] == items, timeout=600)
    assert final["total"] == items and final["processing"] == 0
    assert final["completed"] == items, final
    # One result per media + model + format, however many attempts it took.
    assert final["depth_rows"] == final["media_with_depth"] == items


class HealthWatch:
    """Polls /api/health in the background: every poll must be answered (JSON, 200 or 503)."""

    def __init__(self, client) -> None:
        self.client, self.seen, self.errors = client, [], []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                r = self.client.get("/api/health", timeout=15)
                assert r.status_code in (200, 503), r.text
                self.seen.append(r.json()["status"])
            except Exception as e:  # recorded, asserted on by the test
                self.errors.append(repr(e))
            self._stop.wait(1.0)

    def __enter__(self) -> HealthWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
