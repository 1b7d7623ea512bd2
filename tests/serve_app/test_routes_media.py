"""/api/media without Ray: upload results, list and its pages, detail with signed URLs, the depth
redirect, delete. (Rejections, limits and key checks are in test_api.)"""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from cluster.storage import keys as storage_keys
from cluster.work.processing import store_depth_outputs
from db import depth as depth_maps
from db import media, queue
from devkit import media_files
from devkit.factories import insert_media, new_media

MODEL = "tiny"


def distinct_photo(n: int) -> bytes:
    """A real JPEG with bytes of its own (uploads dedupe on the hash)."""
    return media_files.jpeg_bytes(media_files.photo("coffee").resize((64 + n, 48 + n)))


def upload(api, *files: tuple[str, bytes], **params) -> dict:
    r = api.post("/api/media/upload", files=[("files", f) for f in files], params=params)
    assert r.status_code == 200, r.text
    return r.json()


def test_an_upload_is_created_and_queued_then_a_duplicate_is_recognised(api):
    photo = distinct_photo(0)
    first = upload(api, ("a.jpg", photo))
    assert (first["accepted"], first["rejected"]) == (1, 0)
    (result,) = first["results"]
    assert result["filename"] == "a.jpg" and result["status"] == "created"
    assert result["queue_status"] == "queued" and result["error"] is None
    (again,) = upload(api, ("copy.jpg", photo))["results"]
    assert again["status"] == "duplicate" and again["media_id"] == result["media_id"]
    assert again["queue_item_id"] == result["queue_item_id"]


def test_one_bad_file_among_good_ones_is_reported_not_refused(api):
    body = upload(api, ("good.jpg", distinct_photo(1)), ("bad.jpg", b"not a photo at all" * 10))
    assert (body["accepted"], body["rejected"]) == (1, 1)
    bad = next(r for r in body["results"] if r["filename"] == "bad.jpg")
    assert bad["status"] == "rejected" and bad["media_id"] is None
    assert bad["error"]["code"] == "unsupported_media_type"


def test_an_upload_with_a_priority_queues_its_item_there(api):
    (result,) = upload(api, ("p.jpg", distinct_photo(2)), priority=0)["results"]
    assert api.get(f"/api/queue/items/{result['queue_item_id']}").json()["priority"] == 0
    r = api.post("/api/media/upload", files=[("files", ("q.jpg", distinct_photo(3)))],
                 params={"priority": 500})
    assert r.status_code == 422


def test_a_video_upload_is_probed(api):
    (result,) = upload(api, ("v.mp4", media_files.video_bytes(seconds=1)))["results"]
    detail = api.get(f"/api/media/{result['media_id']}").json()
    assert detail["kind"] == "video" and detail["mime"] == "video/mp4"
    assert (detail["width"], detail["height"]) == (160, 120)
    assert detail["duration"] == pytest.approx(1.0, abs=0.2)


def test_media_are_listed_newest_first_in_pages(api):
    # One transaction each: rows made in one share created_at, and the id breaks the tie.
    ids = [api.ctx.db.run(media.insert, new_media("photo" if i % 2 else "video")).id
           for i in range(5)]
    seen, cursor = [], None
    while True:
        r = api.get("/api/media", params={"limit": 2, **({"cursor": cursor} if cursor else {})})
        assert r.status_code == 200, r.text
        seen += [m["id"] for m in r.json()["items"]]
        if not (cursor := r.json()["next_cursor"]):
            break
    assert seen == [str(i) for i in reversed(ids)]


def test_media_filtered_by_kind_and_queue_status(api):
    with api.ctx.db.connection() as conn:
        photo, video, plain = insert_media(conn, "photo"), insert_media(conn, "video"), insert_media(conn)
    item = api.post(f"/api/queue/enqueue/{photo.id}").json()
    api.post(f"/api/queue/enqueue/{video.id}")
    api.post(f"/api/queue/items/{item['id']}/cancel")

    def listed(**params) -> dict[str, str | None]:
        r = api.get("/api/media", params=params)
        assert r.status_code == 200, r.text
        return {m["id"]: m["status"] for m in r.json()["items"]}

    assert listed() == {str(photo.id): "cancelled", str(video.id): "queued", str(plain.id): None}
    assert listed(kind="video") == {str(video.id): "queued"}
    assert listed(status="cancelled") == {str(photo.id): "cancelled"}
    assert listed(status="completed") == {}


@pytest.mark.parametrize("params", [{"limit": 0}, {"kind": "audio"}, {"status": "lost"}])
def test_bad_media_queries_are_422(api, params):
    assert api.get("/api/media", params=params).status_code == 422


def test_a_bad_media_cursor_is_a_400(api):
    r = api.get("/api/media", params={"cursor": "garbage"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_cursor"


def processed(api, media_id: uuid.UUID) -> None:
    """What processing leaves: renditions, depth outputs and their rows, the item completed."""
    storage = api.ctx.storage
    storage.put_bytes(storage_keys.thumbnail(media_id), b"thumb", "image/webp")
    storage.put_bytes(storage_keys.preview(media_id), b"preview", "image/jpeg")
    depth = np.tile(np.linspace(1, 2, 32, dtype=np.float32), (24, 1))
    outputs = store_depth_outputs(storage, media_id, MODEL, "rev", depth)
    (claimed,) = api.ctx.db.run(queue.claim_batch, 1, "test-owner", 30, model_id=MODEL)
    assert claimed.media_id == media_id
    api.ctx.db.run(queue.complete, claimed.lease)
    api.ctx.db.run(depth_maps.upsert_many, outputs)


def test_detail_has_the_queue_depth_maps_and_signed_urls(api):
    (result,) = upload(api, ("d.jpg", distinct_photo(4)))["results"]
    media_id = uuid.UUID(result["media_id"])
    before = api.get(f"/api/media/{media_id}").json()
    assert before["status"] == "queued" and before["depth"] == []
    assert before["urls"]["original"] and before["urls"]["thumbnail"] is None
    assert [q["id"] for q in before["queue"]] == [result["queue_item_id"]]

    processed(api, media_id)
    detail = api.get(f"/api/media/{media_id}").json()
    assert detail["status"] == "completed" and detail["original_name"] == "d.jpg"
    assert {d["format"] for d in detail["depth"]} == {"png16", "preview"}
    assert all(d["url"] and d["model_id"] == MODEL for d in detail["depth"])
    assert set(detail["urls"]) == {"original", "thumbnail", "preview", "depth", "depth_preview"}
    for name, url in detail["urls"].items():
        path = url.removeprefix(api.ctx.storage.base_url)
        got = api.get(path)
        assert got.status_code == 200, (name, got.text)
    assert api.get(detail["urls"]["preview"].removeprefix(api.ctx.storage.base_url)).content == b"preview"


def test_the_depth_redirect_points_at_a_signed_url_of_the_format(api):
    (result,) = upload(api, ("r.jpg", distinct_photo(5)))["results"]
    media_id = uuid.UUID(result["media_id"])
    missing = api.get(f"/api/media/{media_id}/depth", follow_redirects=False)
    assert missing.status_code == 404 and "png16" in missing.json()["error"]["message"]
    processed(api, media_id)
    for fmt, key_fmt in (("png16", "png16"), ("preview", "preview")):
        r = api.get(f"/api/media/{media_id}/depth", params={"format": fmt}, follow_redirects=False)
        assert r.status_code == 307
        assert storage_keys.depth(media_id, MODEL, key_fmt) in r.headers["location"]
        assert "signature=" in r.headers["location"]
    assert api.get(f"/api/media/{media_id}/depth", params={"format": "video"},
                   follow_redirects=False).status_code == 404
    assert api.get(f"/api/media/{uuid.uuid4()}/depth", follow_redirects=False).status_code == 404


def test_delete_removes_the_rows_and_every_object(api):
    (result,) = upload(api, ("x.jpg", distinct_photo(6)))["results"]
    media_id = uuid.UUID(result["media_id"])
    processed(api, media_id)
    storage = api.ctx.storage
    assert any(storage.list())
    assert api.delete(f"/api/media/{media_id}").status_code == 204
    assert api.get(f"/api/media/{media_id}").status_code == 404
    assert api.get(f"/api/queue/items/{result['queue_item_id']}").status_code == 404
    assert list(storage.list()) == []
    again = api.delete(f"/api/media/{media_id}")
    assert again.status_code == 404 and again.json()["error"]["code"] == "not_found"


def test_a_video_lists_its_16_bit_depth_video_and_delete_takes_the_frame_records_too(api):
    (result,) = upload(api, ("v.mp4", media_files.video_bytes(seconds=1)))["results"]
    media_id = uuid.UUID(result["media_id"])
    storage = api.ctx.storage
    processed(api, media_id)
    keys = {f: storage_keys.depth(media_id, MODEL, f) for f in ("video16", "video", "frames")}
    for key in keys.values():
        storage.put_bytes(key, b"out", "application/octet-stream")
    meta = {"frame_count": 10, "fps": 10.0, "duration": 1.0, "frames_key": keys["frames"]}
    api.ctx.db.run(depth_maps.upsert_many, [
        depth_maps.NewDepthMap(media_id, MODEL, "rev", fmt, keys[fmt], 160, 120, 0.5, 4.0, meta)
        for fmt in ("video16", "video")])
    detail = api.get(f"/api/media/{media_id}").json()
    assert {"depth_video", "depth_video16"} <= set(detail["urls"])
    video16 = next(d for d in detail["depth"] if d["format"] == "video16")
    assert video16["metadata"]["frame_count"] == 10 and video16["metadata"]["fps"] == 10.0
    r = api.get(f"/api/media/{media_id}/depth", params={"format": "video16"},
                follow_redirects=False)
    assert r.status_code == 307 and keys["video16"] in r.headers["location"]
    assert api.delete(f"/api/media/{media_id}").status_code == 204
    assert list(storage.list()) == []


def test_delete_leaves_other_media_and_their_objects_alone(api):
    (gone,) = upload(api, ("gone.jpg", distinct_photo(7)))["results"]
    (kept,) = upload(api, ("kept.jpg", distinct_photo(8)))["results"]
    for r in (gone, kept):
        processed(api, uuid.UUID(r["media_id"]))
    kept_keys = {o.key for o in api.ctx.storage.list() if kept["media_id"] in o.key}
    kept_original = api.get(f"/api/media/{kept['media_id']}").json()["urls"]["original"]
    assert api.delete(f"/api/media/{gone['media_id']}").status_code == 204
    keys = {o.key for o in api.ctx.storage.list()}
    assert kept_keys <= keys and not any(gone["media_id"] in k for k in keys)
    assert len([k for k in keys if k.startswith(storage_keys.ORIGINALS)]) == 1
    assert api.get(kept_original.removeprefix(api.ctx.storage.base_url)).status_code == 200
    assert api.get(f"/api/media/{kept['media_id']}").json()["status"] == "completed"


def test_detail_and_delete_of_missing_media_are_404(api):
    for method in ("GET", "DELETE"):
        r = api.request(method, f"/api/media/{uuid.uuid4()}")
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    assert api.get("/api/media/not-a-uuid").status_code == 422
