"""/api/media/{id}/stereo and /api/media/{id}/depth?format=gdepth without Ray: renders from a
stored preview and depth map, cached under quantised keys, evicted least recently used first,
deleted with their media."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import uuid

import numpy as np
import pytest
from PIL import Image

from cluster.media import stereo
from cluster.storage import keys as storage_keys
from cluster.work.processing import store_depth_outputs
from db import depth as depth_maps
from db import media, queue, renders
from tests.serve_app.test_routes_media import MODEL, distinct_photo, upload
from devkit.factories import insert_media

PREVIEW = (160, 120)


def uploaded(api, n: int) -> uuid.UUID:
    (result,) = upload(api, (f"s{n}.jpg", distinct_photo(100 + n)))["results"]
    return uuid.UUID(result["media_id"])


def processed_photo(api, media_id: uuid.UUID) -> None:
    """What processing leaves for a photo: a real preview JPEG, the depth outputs and rows, the
    item completed. The depth is half the preview's size: a near square on a far ramp."""
    rng = np.random.default_rng(1)
    rgb = rng.integers(1, 256, (PREVIEW[1], PREVIEW[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=90)
    api.ctx.storage.put_bytes(storage_keys.preview(media_id), buf.getvalue(), "image/jpeg")
    depth = np.tile(np.linspace(1, 2, PREVIEW[0] // 2, dtype=np.float32), (PREVIEW[1] // 2, 1))
    depth[20:40, 30:50] = 5.0
    outputs = store_depth_outputs(api.ctx.storage, media_id, MODEL, "rev", depth)
    (claimed,) = api.ctx.db.run(queue.claim_batch, 1, "test-owner", 30, model_id=MODEL)
    api.ctx.db.run(queue.complete, claimed.lease)
    api.ctx.db.run(depth_maps.upsert_many, outputs)


@pytest.fixture
def photo(api) -> uuid.UUID:
    media_id = uploaded(api, 0)
    processed_photo(api, media_id)
    return media_id


def stereo_get(api, media_id, **params):
    return api.get(f"/api/media/{media_id}/stereo", params=params, follow_redirects=False)


def fetched(api, response) -> bytes:
    assert response.status_code == 307, response.text
    got = api.get(response.headers["location"].removeprefix(api.ctx.storage.base_url))
    assert got.status_code == 200, got.text
    return got.content


def render_keys(api) -> set[str]:
    return {o.key for o in api.ctx.storage.list(storage_keys.RENDERS)}


W, H = PREVIEW


@pytest.mark.parametrize("layout, size", [
    ("sbs", (2 * W, H)), ("sbs-half", (W, H)), ("tb", (W, 2 * H)), ("tb-half", (W, H)),
    ("crosseye", (2 * W, H)), ("anaglyph", (W, H)), ("rgbd", (2 * W, H)),
])
def test_each_layout_renders_at_its_size(api, photo, layout, size):
    r = stereo_get(api, photo, layout=layout, format="png")
    assert "signature=" in r.headers["location"]
    with Image.open(io.BytesIO(fetched(api, r))) as img:
        assert img.format == "PNG" and img.size == size


@pytest.mark.parametrize("fmt, pil", [("jpeg", "JPEG"), ("webp", "WEBP")])
def test_the_format_is_the_one_asked_for(api, photo, fmt, pil):
    with Image.open(io.BytesIO(fetched(api, stereo_get(api, photo, format=fmt)))) as img:
        assert img.format == pil


def test_a_second_request_with_the_same_quantised_parameters_is_served_from_the_cache(
        api, photo, monkeypatch):
    made = []
    real = stereo.render
    monkeypatch.setattr(stereo, "render", lambda *a, **kw: made.append(a) or real(*a, **kw))
    first = stereo_get(api, photo, layout="sbs", divergence=2.0, convergence=0.5)
    (key,) = render_keys(api)
    assert key == storage_keys.stereo_render(photo, MODEL, "sbs", 2.0, 0.5, "preview", "jpg")
    written = {o.key: o.modified for o in api.ctx.storage.list(storage_keys.RENDERS)}
    again = stereo_get(api, photo, layout="sbs", divergence=2.04, convergence=0.51)
    assert again.status_code == 307 and key in again.headers["location"]
    assert len(made) == 1
    assert {o.key: o.modified for o in api.ctx.storage.list(storage_keys.RENDERS)} == written
    assert fetched(api, first) == fetched(api, again)
    stereo_get(api, photo, layout="sbs", divergence=2.1)  # another grid point: rendered
    assert len(made) == 2 and len(render_keys(api)) == 2


def test_a_cached_row_whose_object_is_gone_is_rendered_again(api, photo):
    fetched(api, stereo_get(api, photo))
    (key,) = render_keys(api)
    api.ctx.storage.delete(key)
    fetched(api, stereo_get(api, photo))
    assert render_keys(api) == {key}


@pytest.mark.parametrize("params, name", [
    ({"divergence": 10.5}, "divergence"), ({"divergence": -0.1}, "divergence"),
    ({"divergence": "wide"}, "divergence"), ({"convergence": 1.5}, "convergence"),
    ({"convergence": -1}, "convergence"), ({"layout": "hologram"}, "layout"),
    ({"format": "gif"}, "format"), ({"size": "huge"}, "size"),
])
def test_bad_parameters_are_422_naming_the_parameter(api, photo, params, name):
    r = stereo_get(api, photo, **params)
    assert r.status_code == 422
    error = r.json()["error"]
    assert error["code"] == "invalid_request" and error["message"].startswith(f"{name}:")


@pytest.mark.parametrize("params, want", [
    ({"divergence": 11}, "divergence: Value error, must be between 0 and 10, got 11"),
    ({"divergence": "nan"}, "divergence: Value error, must be between 0 and 10, got nan"),
    ({"convergence": -0.5}, "convergence: Value error, must be between 0 and 1, got -0.5"),
])
def test_the_whole_range_is_in_the_message(api, photo, params, want):
    assert stereo_get(api, photo, **params).json()["error"]["message"] == want


def test_unknown_media_is_404(api):
    r = stereo_get(api, uuid.uuid4())
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


def test_depth_not_ready_is_409_not_ready(api):
    media_id = uploaded(api, 1)
    for r in (stereo_get(api, media_id),
              api.get(f"/api/media/{media_id}/depth", params={"format": "gdepth"},
                      follow_redirects=False)):
        assert r.status_code == 409 and r.json()["error"]["code"] == "not_ready"
        assert "queued" in r.json()["error"]["message"]


def test_failed_and_cancelled_depth_are_409_saying_so(api):
    failed = uploaded(api, 2)
    (claimed,) = api.ctx.db.run(queue.claim_batch, 1, "test-owner", 30, model_id=MODEL)
    api.ctx.db.run(queue.fail, claimed.lease, "cannot decode the photo", retryable=False)
    r = stereo_get(api, failed)
    assert r.status_code == 409 and r.json()["error"]["code"] == "depth_failed"
    assert "failed" in r.json()["error"]["message"] and "retry" in r.json()["error"]["message"]

    cancelled = uploaded(api, 3)
    (item,) = api.ctx.db.run(queue.items_for_media, cancelled)
    assert api.post(f"/api/queue/items/{item.id}/cancel").status_code == 200
    r = stereo_get(api, cancelled)
    assert r.status_code == 409 and r.json()["error"]["code"] == "depth_cancelled"


def test_a_video_has_no_gdepth_jpeg(api):
    # (Its stereo renders are tests/serve_app/test_routes_stereo_video.py's.)
    with api.ctx.db.connection() as conn:
        video = insert_media(conn, "video")
    r = api.get(f"/api/media/{video.id}/depth", params={"format": "gdepth"},
                follow_redirects=False)
    assert r.status_code == 422 and "photos" in r.json()["error"]["message"]


def test_the_cache_keeps_its_limit_evicting_the_least_recently_used(api, photo):
    fetched(api, stereo_get(api, photo, divergence=1.0, format="png"))  # a
    size = api.ctx.db.run(renders.total_bytes)
    api.ctx.settings = api.ctx.settings.model_copy(update={"stereo_cache_bytes": int(size * 2.5)})
    fetched(api, stereo_get(api, photo, divergence=2.0, format="png"))  # b
    fetched(api, stereo_get(api, photo, divergence=1.0, format="png"))  # a again: now b is LRU
    fetched(api, stereo_get(api, photo, divergence=3.0, format="png"))  # c: over the limit
    key = lambda d: storage_keys.stereo_render(photo, MODEL, "sbs", d, 0.5, "preview", "png")  # noqa: E731
    assert render_keys(api) == {key(1.0), key(3.0)}
    assert api.ctx.db.run(renders.total_bytes) <= int(size * 2.5)
    assert api.ctx.db.run(renders.keys_for_media, photo) == sorted([key(1.0), key(3.0)])


def test_a_render_bigger_than_the_whole_cache_is_still_served(api, photo):
    api.ctx.settings = api.ctx.settings.model_copy(update={"stereo_cache_bytes": 1})
    fetched(api, stereo_get(api, photo, layout="tb"))
    fetched(api, stereo_get(api, photo, layout="sbs"))
    assert render_keys(api) == {
        storage_keys.stereo_render(photo, MODEL, "sbs", 2.0, 0.5, "preview", "jpg")}


def test_deleting_the_media_deletes_its_renders(api, photo):
    other = uploaded(api, 4)
    processed_photo(api, other)
    for media_id in (photo, other):
        fetched(api, stereo_get(api, media_id, layout="anaglyph"))
    fetched(api, stereo_get(api, photo, layout="rgbd"))
    fetched(api, api.get(f"/api/media/{photo}/depth", params={"format": "gdepth"},
                         follow_redirects=False))
    assert len(render_keys(api)) == 4
    assert api.delete(f"/api/media/{photo}").status_code == 204
    assert all(str(other) in k for k in render_keys(api)) and len(render_keys(api)) == 1
    assert api.ctx.db.run(renders.keys_for_media, photo) == []


@pytest.mark.skipif(shutil.which("exiftool") is None, reason="exiftool is not installed")
def test_the_gdepth_format_is_a_jpeg_exiftool_reads(api, photo, tmp_path):
    r = api.get(f"/api/media/{photo}/depth", params={"format": "gdepth"}, follow_redirects=False)
    assert storage_keys.gdepth_render(photo, MODEL, "preview") in r.headers["location"]
    path = tmp_path / "gdepth.jpg"
    path.write_bytes(fetched(api, r))
    (tags,) = json.loads(subprocess.run(["exiftool", "-j", "-G1", "-XMP-GDepth:all", str(path)],
                                        check=True, capture_output=True).stdout)
    assert tags["XMP-GDepth:Format"] == "RangeInverse" and tags["XMP-GDepth:Mime"] == "image/png"
    png = subprocess.run(["exiftool", "-b", "-XMP-GDepth:DepthImage", str(path)],
                         check=True, capture_output=True).stdout
    with Image.open(io.BytesIO(png)) as depth, Image.open(path) as photo_img:
        assert depth.size == photo_img.size == PREVIEW
        near = np.asarray(depth)[45, 80]  # inside the near square
        assert near == 255
    # The preview's own image data is kept, not re-encoded.
    with Image.open(path) as a, Image.open(io.BytesIO(
            api.ctx.storage.get_bytes(storage_keys.preview(photo)))) as b:
        assert np.array_equal(np.asarray(a), np.asarray(b))


def test_stereo_routes_are_documented_in_openapi(api):
    spec = api.get("/openapi.json").json()
    op = spec["paths"]["/api/v1/media/{media_id}/stereo"]["get"]
    assert {"307", "404", "409", "422"} <= set(op["responses"])
    params = {p["name"]: p["schema"] for p in op["parameters"]}
    assert params["divergence"].get("maximum") == stereo.MAX_DIVERGENCE
    assert params["convergence"].get("maximum") == 1
    assert "gdepth" in json.dumps(spec["paths"]["/api/v1/media/{media_id}/depth"]["get"]["parameters"])



def test_media_deleted_while_rendering_is_404_and_leaves_no_render(api, photo, monkeypatch):
    real = stereo.render

    def deleted_meanwhile(*a, **kw):
        api.ctx.db.run(media.delete, photo)
        return real(*a, **kw)

    monkeypatch.setattr(stereo, "render", deleted_meanwhile)
    r = stereo_get(api, photo)
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    assert render_keys(api) == set()


def test_a_model_without_depth_for_the_photo_is_not_ready(api, photo):
    r = stereo_get(api, photo, model="someone/else")
    assert r.status_code == 409 and r.json()["error"]["code"] == "not_ready"
    assert "someone/else" in r.json()["error"]["message"]
    assert stereo_get(api, photo, model=MODEL).status_code == 307
