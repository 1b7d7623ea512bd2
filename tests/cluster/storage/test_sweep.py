"""`depthmill sweep`: objects whose rows are gone go; everything with a row, everything recent and
everything not depthmill's stays. On both backends, against a real Postgres."""

from __future__ import annotations

import os
import time
import uuid

import pytest

from cluster.storage import keys as storage_keys
from cluster.cli import main
from cluster.storage.signing import UrlSigner
from cluster.storage import LocalStorage
from cluster.storage.sweep import sweep
from db import media
from devkit.factories import insert_media

MODEL = "tiny"


def _store_outputs(storage, media_id: uuid.UUID) -> list[str]:
    keys = storage_keys.written_by_processing(media_id, MODEL)
    for key in keys:
        storage.put_bytes(key, b"out", "application/octet-stream")
    return keys


def _stored(storage) -> set[str]:
    return {o.key for o in storage.list()}


def test_sweep_removes_what_deleted_media_left_and_keeps_the_rest(db, conn, storage):
    kept = insert_media(conn, storage_key=storage_keys.original("a" * 64, ".jpg"))
    gone = insert_media(conn, storage_key=storage_keys.original("b" * 64, ".jpg"))
    conn.commit()
    for row in (kept, gone):
        storage.put_bytes(row.storage_key, b"original", "image/jpeg")
    kept_keys = [kept.storage_key, *_store_outputs(storage, kept.id)]
    gone_keys = [gone.storage_key, *_store_outputs(storage, gone.id)]
    never_recorded = storage_keys.original("c" * 64, ".png")  # stored, then its upload died
    storage.put_bytes(never_recorded, b"original", "image/png")
    not_ours = ["backups/notes.txt", "thumbnails/readme.webp", "depth/tiny/notes.txt"]
    for key in not_ours:
        storage.put_bytes(key, b"theirs", "text/plain")
    media.delete(conn, gone.id)
    conn.commit()

    report = sweep(db, storage, older_than_s=0)

    assert sorted(report.orphans) == sorted([*gone_keys, never_recorded])
    assert report.removed == len(gone_keys) + 1
    assert report.scanned == len(kept_keys) + len(gone_keys) + 1 + len(not_ours)
    assert _stored(storage) == {*kept_keys, *not_ours}
    assert sweep(db, storage, older_than_s=0).orphans == []


def test_sweep_spares_recent_objects_and_a_dry_run_removes_nothing(db, storage):
    orphan = storage_keys.thumbnail(uuid.uuid4())
    storage.put_bytes(orphan, b"x", "image/webp")

    recent = sweep(db, storage, older_than_s=3600)  # an upload in progress looks like this
    assert (recent.scanned, recent.orphans, recent.removed) == (1, [], 0)

    dry = sweep(db, storage, older_than_s=0, dry_run=True)
    assert (dry.orphans, dry.removed) == ([orphan], 0)
    assert _stored(storage) == {orphan}


class _ChangesBeforeTheDelete(LocalStorage):
    """Runs ``change`` when the sweep looks at ``key`` again, just before it would delete it:
    what a re-upload of the same content does between the sweep's check and its delete."""

    def __init__(self, root, key, change) -> None:
        super().__init__(root, UrlSigner(b"k" * 32))
        self.key, self.change = key, change

    def list(self, prefix: str = ""):
        if prefix == self.key:
            self.change()
        yield from super().list(prefix)


def _two_hours_old(store: LocalStorage, key: str) -> None:
    then = time.time() - 7200
    os.utime(store.path(key), (then, then))


def test_an_original_written_again_during_the_sweep_stays(db, tmp_path):
    key = storage_keys.original("d" * 64, ".jpg")
    store = _ChangesBeforeTheDelete(
        tmp_path, key, lambda: store.put_bytes(key, b"uploaded again", "image/jpeg"))
    store.put_bytes(key, b"left behind", "image/jpeg")
    _two_hours_old(store, key)

    report = sweep(db, store, older_than_s=3600)

    assert (report.orphans, report.removed) == ([key], 0)
    assert store.get_bytes(key) == b"uploaded again"


def test_an_original_recorded_during_the_sweep_stays(db, conn, tmp_path):
    key = storage_keys.original("e" * 64, ".jpg")

    def record() -> None:
        insert_media(conn, storage_key=key)
        conn.commit()

    store = _ChangesBeforeTheDelete(tmp_path, key, record)
    store.put_bytes(key, b"original", "image/jpeg")
    _two_hours_old(store, key)

    report = sweep(db, store, older_than_s=3600)

    assert (report.orphans, report.removed) == ([key], 0)
    assert store.exists(key)


def test_sweep_command(database_url, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DEPTHMILL_DATABASE_URL", database_url)
    monkeypatch.setenv("DEPTHMILL_HOME", str(tmp_path))
    monkeypatch.setenv("DEPTHMILL_STORAGE", "local")
    store = LocalStorage(tmp_path / "storage", UrlSigner(b"k" * 32))
    orphan = storage_keys.preview(uuid.uuid4())
    store.put_bytes(orphan, b"x", "image/jpeg")

    assert main(["sweep", "--older-than", "0", "--dry-run"]) == 0
    assert store.exists(orphan)
    assert main(["sweep", "--older-than", "0"]) == 0
    assert not store.exists(orphan)
    out = capsys.readouterr().out
    assert "would remove " + orphan in out and "removed 1" in out


@pytest.mark.parametrize("value", ["-1", "soon", "nan", "inf"])
def test_sweep_command_refuses_a_bad_grace_period(value, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["sweep", "--older-than", value])
    assert exit_.value.code == 2
    assert "--older-than" in capsys.readouterr().err
