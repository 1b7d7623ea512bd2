"""Originals are content-addressed: an upload of the same bytes as media being deleted stores the
very key the delete removes. Whichever way the two interleave, the new media keeps its original."""

from __future__ import annotations

import threading
import time

import psycopg

from cluster.ingest import ingest_file
from cluster.storage.originals import delete_original_if_unused
from cluster.media.probe import MediaLimits
from cluster.config.settings import Settings
from cluster.storage.signing import UrlSigner
from cluster.storage import LocalStorage
from db import media
from devkit.factories import insert_media
from devkit.media_files import jpeg_bytes, photo


class _DeletedRightAfterThePut(LocalStorage):
    """The delete of earlier media with the same content runs between this upload storing its
    original and recording it: no row names the key yet, so the delete removes the object."""

    def __init__(self, root, db) -> None:
        super().__init__(root, UrlSigner(b"k" * 32))
        self.db, self.raced = db, False

    def put(self, key, data, content_type):
        size = super().put(key, data, content_type)
        if not self.raced:
            self.raced = True
            assert delete_original_if_unused(self.db, LocalStorage(self.root, self.signer), key)
        return size


def test_an_upload_whose_original_a_delete_removed_stores_it_again(db, database_url, tmp_path):
    settings = Settings(home=tmp_path / "home", database_url=database_url, model="tiny")
    storage = _DeletedRightAfterThePut(tmp_path / "objects", db)
    path = tmp_path / "photo.jpg"
    path.write_bytes(jpeg_bytes(photo()))

    result = ingest_file(path, db=db, storage=storage, settings=settings,
                         limits=MediaLimits.from_settings(settings))

    assert storage.raced and result.status == "created"
    assert storage.get_bytes(result.media.storage_key) == path.read_bytes()


def test_a_delete_waits_for_an_upload_recording_the_same_original(db, database_url, tmp_path):
    storage = LocalStorage(tmp_path / "objects", UrlSigner(b"k" * 32))
    key = "originals/ab/" + "ab" * 32 + ".jpg"
    storage.put_bytes(key, b"the upload's bytes", "image/jpeg")
    locked, recorded = threading.Event(), threading.Event()

    def upload_records_its_row() -> None:
        with psycopg.connect(database_url) as conn:
            media.lock_original(conn, key)
            locked.set()
            insert_media(conn, storage_key=key)
            time.sleep(0.5)  # the delete arrives while this row is not yet committed
            conn.commit()
            recorded.set()

    upload = threading.Thread(target=upload_records_its_row)
    upload.start()
    assert locked.wait(10)
    removed = delete_original_if_unused(db, storage, key)
    upload.join()

    assert recorded.is_set() and removed is False
    assert storage.get_bytes(key) == b"the upload's bytes"
