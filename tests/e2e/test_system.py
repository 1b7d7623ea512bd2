"""The whole system on a real local Ray cluster: HTTP upload → queue → scheduler → Ray tasks →
Serve depth deployment (tiny) → storage + Postgres → signed URLs."""

from __future__ import annotations

import io
import os
import sys
import time

import av
import httpx
import numpy as np
import psutil
import pytest
from PIL import Image

from cluster.config.worker_env import BACKGROUND_NICENESS
from cluster.config.worker_env import ARRAYS_MALLOC_ENV
from cluster.config.names import APP_NAME, DEPTH_DEPLOYMENT, GATEWAY_DEPLOYMENT
from db import queue
from devkit import media_files
from devkit.system import pids_of, running_system, system_settings

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def system(serve_port, database_factory, tmp_path_factory):
    with database_factory.database() as url:
        # Two served models, tiny the default: test_items_of_each_model_are_processed_by_it.
        settings = system_settings(tmp_path_factory.mktemp("home"), url, serve_port,
                                   max_files_per_request=6, models=["tiny", "tiny:2"])
        with running_system(settings) as client:
            yield client, settings


def wait_for(client, predicate, timeout=180):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = client.get("/api/queue/status").json()
        if predicate(status):
            return status
        time.sleep(0.5)
    raise AssertionError(f"timed out; last queue status {status}")


def upload(client, files: dict[str, bytes], **params):
    return client.post("/api/media/upload", params=params,
                       files=[("files", (name, content)) for name, content in files.items()])


def test_upload_to_depth_maps_end_to_end(system):
    client, _ = system
    variants = media_files.photo_variants()
    files = {
        "a.jpg": variants["rgb.jpg"],
        "b.heic": variants["photo.heic"],
        "c.jpg": variants["rotated.jpg"],
        "clip.mp4": media_files.video_bytes(seconds=2),
        "fake.jpg": b"%PDF-1.7 not a photo",
    }
    response = upload(client, files)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["accepted"] == 4 and body["rejected"] == 1
    by_name = {r["filename"]: r for r in body["results"]}
    assert by_name["fake.jpg"]["error"]["code"] == "unsupported_media_type"
    status = wait_for(client, lambda s: s["completed"] >= 4)
    assert status["failed"] == 0 and status["total"] == 4

    detail = client.get(f"/api/media/{by_name['c.jpg']['media_id']}").json()
    assert detail["status"] == "completed" and (detail["width"], detail["height"]) == (300, 451)
    assert {"original", "thumbnail", "preview", "depth", "depth_preview"} <= {
        k for k, v in detail["urls"].items() if v}
    png = client.get(detail["urls"]["depth"])
    assert png.status_code == 200
    depth = np.asarray(Image.open(io.BytesIO(png.content)))
    # Upright 300×451 → the model works at 350×518 (W×H) and the PNG keeps that size.
    assert depth.dtype == np.uint16 and depth.shape == (518, 350)
    assert client.get(detail["urls"]["depth"].replace("signature=", "signature=0")).status_code == 403

    video = client.get(f"/api/media/{by_name['clip.mp4']['media_id']}").json()
    formats = {d["format"]: d for d in video["depth"]}
    assert {"png16", "preview", "video", "video16"} <= set(formats)
    # Every frame of the 2 s, 10 fps clip, at its own timestamps, in both depth videos.
    for fmt in ("video", "video16"):
        meta = formats[fmt]["metadata"]
        assert (meta["frame_count"], meta["fps"], meta["last_timestamp"]) == (20, 10.0, 1.9)
    mkv = client.get(video["urls"]["depth_video16"])
    assert mkv.status_code == 200
    with av.open(io.BytesIO(mkv.content)) as container:
        stamps = [round(float(f.time), 3) for f in container.decode(video=0)]
    assert stamps == [round(i / 10, 3) for i in range(20)]
    # Its side-by-side video, rendered by a Ray task the gateway starts: 202s, then the MP4.
    stereo_url = f"/api/media/{video['id']}/stereo"
    first = client.get(stereo_url, params={"layout": "sbs"}, follow_redirects=False)
    assert first.status_code == 202, first.text
    deadline = time.monotonic() + 120
    while (r := client.get(stereo_url, follow_redirects=False)).status_code == 202:
        assert time.monotonic() < deadline, r.text
        time.sleep(0.5)
    assert r.status_code == 307, r.text
    assert r.headers["location"].split("?")[0].endswith("_clip_SBS.mp4")
    with av.open(io.BytesIO(client.get(r.headers["location"]).content)) as container:
        stereo_stamps = [round(float(f.time), 3) for f in container.decode(video=0)]
        assert container.streams.video[0].width == 2 * 160
    assert stereo_stamps == stamps
    redirect = client.get(f"/api/media/{by_name['a.jpg']['media_id']}/depth", follow_redirects=False)
    assert redirect.status_code == 307

    # The same bytes again: the existing item, no second result.
    again = upload(client, {"copy.jpg": variants["rgb.jpg"]}).json()["results"][0]
    assert again["status"] == "duplicate" and again["media_id"] == by_name["a.jpg"]["media_id"]
    assert client.get("/api/queue/status").json()["total"] == 4


def thread_niceness(pid: int) -> set[int]:
    return {os.getpriority(os.PRIO_PROCESS, int(t)) for t in os.listdir(f"/proc/{pid}/task")}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread niceness is Linux's")
def test_api_runs_in_the_foreground_and_depth_work_in_the_background(system):
    """Ray would start the gateway, its proxy and the scheduler at nice 15, where depth work at 19
    takes a third of the CPU they need for uploads (docs/RELIABILITY.md, load)."""
    client, _ = system
    assert client.get("/api/health").status_code == 200  # the proxy and a gateway are up
    expected = {
        f"ray::ServeReplica:{APP_NAME}:{GATEWAY_DEPLOYMENT}": {0},
        "ray::ProxyActor": {0},
        "ray::Scheduler": {0},
        # The tiny model runs on the CPU here, so its replica is background work.
        f"ray::ServeReplica:{APP_NAME}:{DEPTH_DEPLOYMENT}": {BACKGROUND_NICENESS},
    }
    for title, niceness in expected.items():
        pids = pids_of(title)
        assert pids, f"no process titled {title!r}"
        assert all(thread_niceness(pid) == niceness for pid in pids), title


def process_env(pid: int) -> dict[str, str]:
    raw = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
    return dict(entry.decode(errors="replace").split("=", 1) for entry in raw if b"=" in entry)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc is Linux's")
def test_depth_replicas_start_with_the_allocator_settings_for_large_arrays(system):
    # Without them the replica's memory grew with every batch of mixed sizes (cluster/config/worker_env.py).
    pids = pids_of(f"ray::ServeReplica:{APP_NAME}:{DEPTH_DEPLOYMENT}")
    assert pids
    for pid in pids:
        assert ARRAYS_MALLOC_ENV.items() <= process_env(pid).items()


def test_health_and_model_info(system):
    client, _ = system
    health = client.get("/api/health")
    body = health.json()
    assert health.status_code == 200 and body["status"] in ("healthy", "degraded")
    for service in ("database", "storage", "ray", "depth", "scheduler", "queue", "webhooks"):
        assert service in body["services"]
    assert body["services"]["database"]["status"] == "healthy"
    webhooks = body["services"]["webhooks"]
    assert webhooks["status"] == "healthy" and webhooks["running"] is True, webhooks
    info = client.get("/api/ai/info").json()
    assert info["model_id"] == "tiny" and info["real_estimate"] is False
    assert "not a real depth estimate" in info["note"]


def test_worker_stop_pauses_claiming_and_start_resumes(system):
    client, _ = system
    assert client.post("/api/queue/worker/stop").json()["paused"] is True
    photo = media_files.jpeg_bytes(media_files.photo("coffee"))
    item = upload(client, {"coffee.jpg": photo}).json()["results"][0]
    time.sleep(2)
    assert client.get(f"/api/queue/items/{item['queue_item_id']}").json()["status"] == "queued"
    assert client.post("/api/queue/worker/start").json()["paused"] is False
    deadline = time.monotonic() + 60
    while client.get(f"/api/queue/items/{item['queue_item_id']}").json()["status"] != "completed":
        assert time.monotonic() < deadline
        time.sleep(0.5)


def test_delete_removes_rows_and_objects(system):
    client, settings = system
    photo = media_files.jpeg_bytes(media_files.photo("astronaut").rotate(90))
    item = upload(client, {"x.jpg": photo}, priority=0).json()["results"][0]
    deadline = time.monotonic() + 60
    while client.get(f"/api/media/{item['media_id']}").json()["status"] != "completed":
        assert time.monotonic() < deadline
        time.sleep(0.5)
    before = {p for p in (settings.home / "storage").rglob("*") if p.is_file()}
    assert client.delete(f"/api/media/{item['media_id']}").status_code == 204
    assert client.get(f"/api/media/{item['media_id']}").status_code == 404
    after = {p for p in (settings.home / "storage").rglob("*") if p.is_file()}
    removed = {p.name for p in before - after}
    assert len(before - after) == 5 and "png16.png" in removed  # original, thumb, preview, 2 depth


def test_bad_requests_get_json_errors(system):
    client, _ = system
    cases = [
        client.get("/api/media/not-a-uuid"),
        client.get("/api/queue/items", params={"limit": 0}),
        client.get("/api/queue/items", params={"status": "exploded"}),
        client.get("/api/queue/items", params={"cursor": "'; DROP TABLE media_items; --"}),
        client.post("/api/queue/items/00000000-0000-0000-0000-000000000000/retry"),
        client.post("/api/media/upload", files=[("files", ("e.jpg", b""))]),
        upload(client, {f"{i}.jpg": b"x" for i in range(7)}),
    ]
    assert [c.status_code for c in cases] == [422, 422, 422, 400, 404, 422, 413]
    for c in cases:
        error = c.json()["error"]
        assert error["code"] and error["message"]


def test_gateway_replicas_listen_on_the_port_beside_the_proxy(system):
    client, settings = system
    gateways = set(pids_of(f"ray::ServeReplica:{APP_NAME}:{GATEWAY_DEPLOYMENT}"))
    proxies = set(pids_of("ray::ProxyActor"))
    assert len(gateways) == settings.gateway_replicas and proxies

    def listeners() -> set[int]:
        return {c.pid for c in psutil.net_connections("tcp")
                if c.status == psutil.CONN_LISTEN and c.laddr.port == settings.port}

    deadline = time.monotonic() + 30  # a replica starts listening just after it is constructed
    while listeners() != gateways | proxies:
        assert time.monotonic() < deadline, (listeners(), gateways, proxies)
        time.sleep(0.5)
    # The kernel spreads new connections over all of them; each serves the whole API. With 12
    # connections, all landing on the proxy has a chance of (1/3)^12.
    fresh = [httpx.Client(base_url=str(client.base_url), headers=client.headers) for _ in range(12)]
    try:
        assert all(c.get("/api/queue/status").status_code == 200 for c in fresh)
        served_by = {c.pid for c in psutil.net_connections("tcp")
                     if c.status == psutil.CONN_ESTABLISHED and c.laddr.port == settings.port}
    finally:
        for c in fresh:
            c.close()
    assert served_by & gateways


def test_process_with_out_exports_real_names_and_resumes(system, tmp_path, monkeypatch):
    """`depthmill process PATH --out DIR --layout sbs` on the running system (its `up` is the
    module's, so no second application starts)."""
    import hashlib

    from rich.console import Console

    from cluster import runtime
    from cluster.cli import process
    from cluster.storage import storage_from_settings
    from db import depth as depth_maps
    from db import media
    from db.connection import Database

    _, settings = system
    monkeypatch.setattr(runtime, "check_model_loads", lambda s: None)
    monkeypatch.setattr(runtime, "up", lambda s, **k: runtime.Running(
        settings, settings.api_url, None, started_ray=False, embedded=None))
    library = tmp_path / "library"
    (library / "trip").mkdir(parents=True)
    photo = media_files.photo("chelsea").resize((240, 180))
    (library / "trip" / "cat.jpg").write_bytes(media_files.jpeg_bytes(photo))
    (library / "trip" / "cat.png").write_bytes(media_files.encoded(photo.rotate(90, expand=True), "PNG"))
    (library / "clip.mp4").write_bytes(media_files.video_bytes(seconds=1))
    out = tmp_path / "exports"

    def run():
        console = Console(record=True, width=80)
        code = process.process_paths(settings, [library], console, timeout=240, out=out,
                                     layouts=("sbs",))
        return code, console.export_text()

    code, text = run()
    assert code == 0, text
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    with Database(settings.database_url, max_size=1) as db:
        by_sha = {name: db.run(media.find_by_sha256,
                               hashlib.sha256((library / name).read_bytes()).hexdigest())
                  for name in ("trip/cat.jpg", "trip/cat.png")}
        second = by_sha["trip/cat.png"].id.hex[:8]
        assert files == sorted(["clip.depth.mp4", "clip_SBS.mp4", "trip/cat.depth.png", "trip/cat.depth.webp",
                         "trip/cat_SBS.jpg", f"trip/cat_{second}.depth.png",
                         f"trip/cat_{second}.depth.webp", f"trip/cat_{second}_SBS.jpg"]), text
        storage = storage_from_settings(settings)
        (png,) = [m for m in db.run(depth_maps.for_media, by_sha["trip/cat.jpg"].id)
                  if m.format == "png16" and m.model_id == settings.model]
        assert (out / "trip/cat.depth.png").read_bytes() == storage.get_bytes(png.storage_key)
    assert np.asarray(Image.open(out / "trip/cat.depth.png")).dtype == np.uint16
    assert Image.open(out / "trip/cat_SBS.jpg").size == (480, 180)  # 2W×H of the original
    assert Image.open(out / f"trip/cat_{second}_SBS.jpg").size == (360, 240)  # rotated
    with av.open(str(out / "clip_SBS.mp4")) as clip:
        assert clip.streams.video[0].frames == 10 and clip.streams.video[0].width == 2 * 160
    assert all(len(line) <= 80 for line in text.splitlines()), text
    assert "trip/cat_SBS.jpg" in text and "8 files written, 0 already there" in text

    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    code, text = run()
    assert code == 0, text
    assert "0 files written, 8 already there" in text
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == mtimes


def test_items_of_each_model_are_processed_by_it(system, tmp_path, monkeypatch):
    """Two served models, one scheduler: an item names its model (upload, enqueue, `depthmill
    process --model`), the depth replica loads the second one when asked, and each depth map
    is that model's, recorded as its."""
    import hashlib

    from rich.console import Console

    from cluster import runtime
    from cluster.cli import process
    from db import depth as depth_maps
    from db import media
    from db.connection import Database

    client, settings = system
    photos = [media_files.jpeg_bytes(media_files.photo("coffee").resize((160 + 8 * i, 120)))
              for i in range(3)]
    second = upload(client, {"second.jpg": photos[0]}, model="tiny:2").json()["results"][0]
    default = upload(client, {"default.jpg": photos[1]}).json()["results"][0]
    both = client.post(f"/api/queue/enqueue/{second['media_id']}", params={"model": "tiny"})
    assert both.status_code == 200 and both.json()["model_id"] == "tiny"
    path = tmp_path / "by-cli.jpg"
    path.write_bytes(photos[2])
    monkeypatch.setattr(runtime, "check_model_loads", lambda s: None)
    monkeypatch.setattr(runtime, "up", lambda s, **k: runtime.Running(
        s, settings.api_url, None, started_ray=False, embedded=None))
    console = Console(record=True, width=80)
    assert process.process_paths(settings.with_model("tiny:2"), [path], console,
                                 timeout=180) == 0, console.export_text()

    deadline = time.monotonic() + 180
    wanted = {second["media_id"]: {"tiny", "tiny:2"}, default["media_id"]: {"tiny"}}
    with Database(settings.database_url, max_size=1) as db:
        while True:
            made = {m: {d.model_id for d in db.run(depth_maps.for_media, m) if d.format == "png16"}
                    for m in wanted}
            if made == wanted:
                break
            assert time.monotonic() < deadline, made
            time.sleep(0.5)
        by_cli = db.run(media.find_by_sha256, hashlib.sha256(photos[2]).hexdigest())
        assert {d.model_id for d in db.run(depth_maps.for_media, by_cli.id)} == {"tiny:2"}
        assert [i.model_id for i in db.run(queue.items_for_media, by_cli.id)] == ["tiny:2"]
    maps = [np.asarray(Image.open(io.BytesIO(client.get(
        f"/api/media/{second['media_id']}/depth", params={"model": m},
        follow_redirects=True).content)))
        for m in ("tiny", "tiny:2")]
    assert maps[0].shape == maps[1].shape and not np.array_equal(maps[0], maps[1])

    listed = {m["id"]: m for m in client.get("/api/ai/models").json()["models"]}
    assert set(listed) == {"tiny", "tiny:2"}
    for model in listed.values():
        assert model["loaded"] and model["replicas"] == 1, model
        (place,) = model["where"]
        assert place["replica"] and place["node"] and place["device"] == "cpu"
        assert place["photo_decoder"] == "pillow"  # no GPU here


def test_a_task_sends_a_photo_to_the_replica_to_decode_when_asked(system):
    """PHOTO_DECODE=replica (what auto picks where the replicas have a GPU): the real processing
    task sends the photo's bytes through the Serve handle, the replica decodes it (Pillow here,
    nvJPEG on a GPU) and answers with the depth and renditions the task stores."""
    import uuid
    from datetime import UTC, datetime

    import ray

    from cluster.storage import keys as storage_keys
    from cluster.storage import storage_from_settings
    from cluster.work.tasks import process_item_task
    from db.queue import ClaimedItem

    _, settings = system
    settings = settings.model_copy(update={"photo_decode": "replica"})
    storage = storage_from_settings(settings)
    content = media_files.exif_jpeg(media_files.photo("chelsea"), 6)  # upright 300×451
    key = f"{storage_keys.ORIGINALS}{uuid.uuid4().hex}"
    storage.put_bytes(key, content, "image/jpeg")
    now = datetime.now(UTC)
    item = ClaimedItem(
        id=uuid.uuid4(), media_id=uuid.uuid4(), model_id="tiny:2", kind="photo",
        bytes=len(content), mime="image/jpeg", storage_key=key, priority=0, attempts=1,
        max_attempts=3, lease_owner="test", lease_expires_at=now, queued_at=now)
    outcome = ray.get(process_item_task.remote(item, settings), timeout=120)
    assert outcome.status == "completed", outcome.error
    png = next(m for m in outcome.outputs if m.format == "png16")
    assert (png.height, png.width) == (518, 350) and png.model_id == "tiny:2"
    thumbnail = Image.open(io.BytesIO(storage.get_bytes(storage_keys.thumbnail(item.media_id))))
    preview = Image.open(io.BytesIO(storage.get_bytes(storage_keys.preview(item.media_id))))
    assert (thumbnail.format, thumbnail.size) == ("WEBP", (166, 250))
    assert (preview.format, preview.size) == ("JPEG", (300, 451))
    for output in outcome.outputs:
        storage.delete(output.storage_key)
