"""Render keys: quantised parameters, owned by their media (so the sweep knows them), listed and
deleted by prefix on both backends."""

from __future__ import annotations

import uuid

from cluster.storage import check_key
from cluster.storage import keys as storage_keys
from cluster.storage.sweep import sweep
from db import media
from devkit.factories import insert_media

MODEL = "depth-anything/Depth-Anything-V2-Small-hf"


def test_render_keys_quantise_their_parameters():
    m = uuid.uuid4()
    key = storage_keys.stereo_render(m, MODEL, "sbs-half", 2.04, 0.526, "preview", "jpg")
    assert key == (f"renders/{m}/depth-anything_Depth-Anything-V2-Small-hf/"
                   "sbs-half_d2.0_c0.55_preview.jpg")
    assert key == storage_keys.stereo_render(m, MODEL, "sbs-half", 1.96, 0.54, "preview", "jpg")
    assert key != storage_keys.stereo_render(m, MODEL, "sbs-half", 2.1, 0.54, "preview", "jpg")
    assert storage_keys.quantised_stereo(0.0, 1.0) == (0.0, 1.0)
    assert storage_keys.quantised_stereo(9.96, 0.024) == (10.0, 0.0)
    gdepth = storage_keys.gdepth_render(m, MODEL, "original")
    for k in (key, gdepth):
        assert check_key(k) == k and k.startswith(storage_keys.renders_of(m))


def test_renders_belong_to_their_media():
    m = uuid.uuid4()
    assert storage_keys.media_of(storage_keys.stereo_render(m, "tiny", "tb", 2, 0.5, "preview", "png")) == m
    assert storage_keys.media_of(storage_keys.gdepth_render(m, "tiny", "preview")) == m
    assert storage_keys.media_of(f"renders/{m}/notes.txt") is None  # not a render's shape
    assert storage_keys.media_of("renders/not-a-uuid-at-all-but-thirty-six-ch/tiny/x.jpg") is None


def test_renders_are_listed_and_deleted_by_their_media_prefix(storage):
    a, b = uuid.uuid4(), uuid.uuid4()
    keys_a = [storage_keys.stereo_render(a, "tiny", layout, 2, 0.5, "preview", "jpg")
              for layout in ("sbs", "anaglyph")] + [storage_keys.gdepth_render(a, "tiny", "preview")]
    key_b = storage_keys.stereo_render(b, "tiny", "sbs", 2, 0.5, "preview", "jpg")
    for key in [*keys_a, key_b]:
        storage.put_bytes(key, b"render", "image/jpeg")
    assert sorted(o.key for o in storage.list(storage_keys.renders_of(a))) == sorted(keys_a)
    for obj in list(storage.list(storage_keys.renders_of(a))):
        storage.delete(obj.key)
    assert [o.key for o in storage.list(storage_keys.RENDERS)] == [key_b]


def test_the_sweep_removes_renders_of_deleted_media(db, conn, storage):
    kept, gone = insert_media(conn), insert_media(conn)
    conn.commit()
    kept_key = storage_keys.stereo_render(kept.id, "tiny", "sbs", 2, 0.5, "preview", "jpg")
    gone_key = storage_keys.gdepth_render(gone.id, "tiny", "preview")
    for key in (kept_key, gone_key):
        storage.put_bytes(key, b"render", "image/jpeg")
    media.delete(conn, gone.id)
    conn.commit()
    assert sweep(db, storage, older_than_s=0).orphans == [gone_key]
    assert {o.key for o in storage.list()} == {kept_key}
