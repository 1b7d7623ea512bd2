"""The Ray Data export job on the session's local Ray cluster: depth outputs made without a model
(stored as processing stores them), exported to a directory and to S3 (moto's server)."""

from __future__ import annotations

import io

import av
import numpy as np
import pytest
from PIL import Image

from cluster.config.settings import Settings
from cluster.ingest import ingest_stream
from cluster.media.depth_encode import Depth16VideoWriter
from cluster.media.probe import MediaLimits
from cluster.storage import S3Storage, storage_from_settings
from cluster.storage import keys as storage_keys
from cluster.work.processing import store_depth_outputs
from db import depth, media
from db.connection import Database
from db.depth import NewDepthMap
from pipelines.export import build_parser, run
from devkit import media_files
from devkit.s3 import moto_s3_server

pytestmark = pytest.mark.slow


def seed(settings, db) -> dict[str, object]:
    """a.jpg twice (different photos), b.png, a nameless photo and a video, each with outputs."""
    storage = storage_from_settings(settings)
    limits = MediaLimits.from_settings(settings)
    base = media_files.photo("coffee")
    found = {}
    for label, name, img in [("a1", "a.jpg", base.resize((120, 90))),
                             ("a2", "a.jpg", base.resize((100, 80))),
                             ("b", "b.png", base.resize((90, 60))),
                             ("nameless", "", base.resize((80, 60)))]:
        content = media_files.encoded(img, "PNG" if name.endswith(".png") else "JPEG")
        found[label] = ingest_stream(io.BytesIO(content), name, db=db, storage=storage,
                                     settings=settings, limits=limits).media
        yy, xx = np.mgrid[0:24, 0:32]
        maps = store_depth_outputs(storage, found[label].id, "tiny", None,
                                   (xx + yy).astype(np.float32))
        db.run(depth.upsert_many, maps)
    video = ingest_stream(io.BytesIO(media_files.video_bytes(seconds=1)), "clip.mp4", db=db,
                          storage=storage, settings=settings, limits=limits).media
    key = storage_keys.depth(video.id, "tiny", "video")
    storage.put_bytes(key, b"a depth video", "video/mp4")
    key16 = storage_keys.depth(video.id, "tiny", "video16")
    depth16 = settings.home / "depth16.mkv"
    with Depth16VideoWriter(depth16, 32, 24) as writer:  # the clip's 10 fps, near on the right
        for i in range(10):
            writer.write(np.tile(np.linspace(0, 65535, 32).astype(np.uint16), (24, 1)), i / 10)
    storage.put_bytes(key16, depth16.read_bytes(), "video/x-matroska")
    db.run(depth.upsert_many, [NewDepthMap(video.id, "tiny", None, "video", key, 32, 24),
                               NewDepthMap(video.id, "tiny", None, "video16", key16, 32, 24)])
    found["video"] = video
    # Not exported: a photo without depth yet.
    ingest_stream(io.BytesIO(media_files.jpeg_bytes(base.resize((50, 50)))), "pending.jpg",
                  db=db, storage=storage, settings=settings, limits=limits)
    return found


def test_export_to_a_directory_keeps_names_and_resumes(ray_cluster, database_url, tmp_path):
    settings = Settings(home=tmp_path / "home", database_url=database_url, model="tiny")
    out = tmp_path / "out"
    with Database(database_url, max_size=2) as db:
        found = seed(settings, db)
        args = ["--to", str(out), "--layout", "sbs,anaglyph"]
        first = run(settings, build_parser().parse_args(args))
        assert first["items"] == 5 and first["failed"] == 0, first
        second_a = found["a2"].id.hex[:8]
        nameless = found["nameless"].id.hex[:8]
        stems = ["a", f"a_{second_a}", "b", f"untitled_{nameless}"]
        expected = {f"{s}{suffix}" for s in stems
                    for suffix in (".depth.png", ".depth.webp", "_SBS.jpg", "_ANAGLYPH.jpg")}
        videos = {"clip.depth.mp4", "clip_SBS.mp4", "clip_ANAGLYPH.mp4"}
        assert {p.name for p in out.iterdir()} == expected | videos
        assert first["files_written"] == len(expected) + len(videos)
        with av.open(str(out / "clip_SBS.mp4")) as clip:
            assert clip.streams.video[0].frames == 10
            assert clip.streams.video[0].width == 2 * 160
        storage = storage_from_settings(settings)
        png = next(m for m in db.run(depth.for_media, found["a1"].id) if m.format == "png16")
        assert (out / "a.depth.png").read_bytes() == storage.get_bytes(png.storage_key)
        assert Image.open(out / "a_SBS.jpg").size == (240, 90)  # the older a.jpg, 2W×H
        assert Image.open(out / f"a_{second_a}_SBS.jpg").size == (200, 80)

        again = run(settings, build_parser().parse_args(args))
        assert again["files_written"] == 0 and again["files_present"] == first["files_written"]
        only_photos = run(settings, build_parser().parse_args(
            ["--to", str(out), "--kind", "photo", "--layout", "tb"]))
        assert only_photos["items"] == 4 and only_photos["files_written"] == 4
        assert (out / "b_TB.jpg").exists()
        assert db.run(media.get, found["b"].id).original_name == "b.png"


def test_export_to_s3(ray_cluster, database_url, tmp_path):
    # Exports are objects depthmill writes: encrypted as the setting says, like its own.
    settings = Settings(home=tmp_path / "home", database_url=database_url, model="tiny",
                        s3_sse="AES256")
    with moto_s3_server() as endpoint, Database(database_url, max_size=2) as db:
        seed(settings, db)
        args = ["--to", "s3://exports/library/2024", "--s3-endpoint", endpoint, "--kind", "photo",
                "--layout", "sbs"]
        first = run(settings, build_parser().parse_args(args))
        assert first["items"] == 4 and first["failed"] == 0 and first["files_written"] == 12
        client = S3Storage("exports", endpoint_url=endpoint).client
        keys = {o["Key"] for o in client.list_objects_v2(Bucket="exports")["Contents"]}
        assert "library/2024/a.depth.png" in keys and "library/2024/b_SBS.jpg" in keys
        assert len(keys) == 12
        assert {client.head_object(Bucket="exports", Key=k).get("ServerSideEncryption")
                for k in keys} == {"AES256"}
        again = run(settings, build_parser().parse_args(args))
        assert again["files_written"] == 0 and again["files_present"] == 12
        videos = run(settings, build_parser().parse_args(
            ["--to", "s3://exports/library/2024", "--s3-endpoint", endpoint, "--kind", "video",
             "--layout", "sbs"]))
        assert videos["items"] == 1 and videos["files_written"] == 2, videos
        stereo = client.head_object(Bucket="exports", Key="library/2024/clip_SBS.mp4")
        assert stereo["ContentType"] == "video/mp4" and stereo["ContentLength"] > 1000
