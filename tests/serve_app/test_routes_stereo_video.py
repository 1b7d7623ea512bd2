"""/api/media/{id}/stereo for videos without Ray: the render runs in a thread of the test (the
same function the Ray task runs), from a real uploaded video and a stored 16-bit depth video;
202 with progress until ready, then a redirect to the MP4 named for its layout."""

from __future__ import annotations

import threading
import time
import uuid

import av
import numpy as np
import pytest

from cluster.media.depth_encode import Depth16VideoWriter
from cluster.storage import keys as storage_keys
from cluster.work.stereo_video import run_render
from db import depth as depth_maps
from db import queue
from db.depth import NewDepthMap
from tests.serve_app.test_routes_media import MODEL, upload
from devkit.media_files import video_bytes

SIZE = (96, 64)


def processed_video(api, tmp_path, name="clip.mp4") -> tuple[uuid.UUID, list[float]]:
    """An uploaded video with the 16-bit depth video processing would store, item completed."""
    data = video_bytes("mp4", seconds=1.0, fps=10, size=SIZE, audio="aac")
    (result,) = upload(api, (name, data))["results"]
    media_id = uuid.UUID(result["media_id"])
    source = tmp_path / "source.mp4"
    source.write_bytes(data)
    with av.open(str(source)) as c:
        times = [float(f.time) for f in c.decode(video=0)]
    depth16 = tmp_path / "depth16.mkv"
    with Depth16VideoWriter(depth16, SIZE[0] // 2, SIZE[1] // 2) as w:
        for t in times:
            w.write(np.full((SIZE[1] // 2, SIZE[0] // 2), 30000, np.uint16), t)
    key = storage_keys.depth(media_id, MODEL, "video16")
    with depth16.open("rb") as f:
        api.ctx.storage.put(key, f, "video/x-matroska")
    api.ctx.db.run(depth_maps.upsert_many, [NewDepthMap(
        media_id=media_id, model_id=MODEL, model_revision=None, format="video16",
        storage_key=key, width=SIZE[0] // 2, height=SIZE[1] // 2)])
    (claimed,) = api.ctx.db.run(queue.claim_batch, 1, "test-owner", 30, model_id=MODEL)
    api.ctx.db.run(queue.complete, claimed.lease)
    return media_id, times


@pytest.fixture
def rendering_api(make_api):
    """An API whose video renders run in a thread, as the Ray task would run them."""
    threads: list[threading.Thread] = []
    holder: dict = {}

    def start(job) -> None:
        ctx = holder["api"].ctx
        threads.append(threading.Thread(target=run_render,
                                        args=(job, ctx.settings, ctx.db, ctx.storage)))
        threads[-1].start()

    holder["api"] = make_api(start_video_render=start)
    yield holder["api"]
    for t in threads:
        t.join(timeout=60)


def stereo_get(api, media_id, **params):
    return api.get(f"/api/media/{media_id}/stereo", params=params, follow_redirects=False)


def test_a_video_renders_in_the_background_then_redirects_to_its_mp4(rendering_api, tmp_path):
    api = rendering_api
    media_id, times = processed_video(api, tmp_path)
    first = stereo_get(api, media_id, layout="sbs")
    assert first.status_code == 202, first.text
    assert first.json()["status"] == "rendering" and 0 <= first.json()["progress"] <= 1
    assert first.headers["Retry-After"] == "2"
    deadline = time.monotonic() + 60
    while (r := stereo_get(api, media_id, layout="sbs")).status_code == 202:
        assert time.monotonic() < deadline, "the render did not finish"
        time.sleep(0.2)
    assert r.status_code == 307, r.text
    location = r.headers["location"]
    assert location.split("?")[0].endswith("_clip_SBS.mp4")
    got = api.get(location.removeprefix(api.ctx.storage.base_url))
    assert got.status_code == 200
    out = tmp_path / "out.mp4"
    out.write_bytes(got.content)
    with av.open(str(out)) as c:
        assert [s.type for s in c.streams] == ["video", "audio"]
        assert (c.streams.video[0].width, c.streams.video[0].height) == (2 * SIZE[0], SIZE[1])
        assert c.streams.video[0].codec_context.name == "h264"
        assert [float(f.time) for f in c.decode(video=0)] == pytest.approx(times, abs=1e-3)
    (render,) = api.get(f"/api/media/{media_id}").json()["stereo_renders"]
    assert render["status"] == "ready" and render["layout"] == "sbs" and render["progress"] == 1
    assert render["codec"] == "h264"
    # Another layout, or codec, is another render; the first is served from the cache.
    assert stereo_get(api, media_id, layout="tb").status_code == 202
    assert stereo_get(api, media_id, layout="sbs", codec="hevc").status_code == 202
    assert stereo_get(api, media_id, layout="sbs").headers["location"].split("?")[0] == \
        location.split("?")[0]
    deadline = time.monotonic() + 60
    while (r := stereo_get(api, media_id, layout="sbs", codec="hevc")).status_code == 202:
        assert time.monotonic() < deadline, "the HEVC render did not finish"
        time.sleep(0.2)
    out.write_bytes(api.get(r.headers["location"].removeprefix(api.ctx.storage.base_url)).content)
    with av.open(str(out)) as c:
        assert (c.streams.video[0].codec_context.name, c.streams.video[0].codec_tag) == \
            ("hevc", "hvc1")
    codecs = {(x["layout"], x["codec"]) for x in api.get(f"/api/media/{media_id}").json()["stereo_renders"]}
    assert codecs == {("sbs", "h264"), ("sbs", "hevc"), ("tb", "h264")}
    bad = stereo_get(api, media_id, codec="vp9")
    assert bad.status_code == 422 and "codec" in bad.json()["error"]["message"]


def test_without_a_cluster_to_render_on_the_render_fails_with_a_reason(api, tmp_path):
    media_id, _ = processed_video(api, tmp_path)
    r = stereo_get(api, media_id)
    assert r.status_code == 409 and r.json()["error"]["code"] == "render_failed"
    assert "no cluster to render videos on" in r.json()["error"]["message"]


def test_a_video_without_depth_yet_is_not_ready(api):
    (result,) = upload(api, ("v.mp4", video_bytes("mp4", seconds=0.5, size=SIZE)))["results"]
    r = stereo_get(api, result["media_id"])
    assert r.status_code == 409 and r.json()["error"]["code"] == "not_ready"


def test_a_read_key_may_watch_a_render_but_not_start_one(make_api, tmp_path):
    from db import keys

    api = make_api(api_keys="env-admin-key", api_key_cache_s=0,
                   start_video_render=lambda job: None)  # started, left rendering
    ctx = api.ctx
    reader = ctx.db.run(keys.create, ctx.key_secret, "viewer", ["read"])[1]
    api.client.headers["Authorization"] = "Bearer env-admin-key"
    media_id, _ = processed_video(api, tmp_path)
    as_reader = {"Authorization": f"Bearer {reader}"}
    url = f"/api/media/{media_id}/stereo"
    refused = api.get(url, headers=as_reader, follow_redirects=False)
    assert refused.status_code == 403 and "'write'" in refused.json()["error"]["message"]
    assert api.get(url, follow_redirects=False).status_code == 202  # the admin starts it
    watching = api.get(url, headers=as_reader, follow_redirects=False)
    assert watching.status_code == 202 and watching.json()["status"] == "rendering"
