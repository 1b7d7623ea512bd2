"""Exports under real names (cluster.media.exports, cluster.work.exports) with local storage and
no Ray."""

from __future__ import annotations

import uuid

import av
import numpy as np
import pytest
from PIL import Image

from cluster.media import exports
from cluster.media.depth_encode import (
    Depth16VideoWriter,
    encode_depth_png16,
    encode_depth_preview,
)
from cluster.storage import LocalStorage
from cluster.storage import keys as storage_keys
from cluster.storage.signing import UrlSigner
from cluster.work.exports import export_stored
from devkit import media_files


def _depth(w: int = 64, h: int = 48) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return (xx / w + yy / h).astype(np.float32)


def _stored_photo(storage, size=(320, 240)):
    """A photo as processing leaves it: original, preview, 16-bit depth and colour preview."""
    media_id = uuid.uuid4()
    img = media_files.photo("coffee").resize(size)
    original = f"originals/{media_id.hex[:2]}/{media_id.hex}.jpg"
    storage.put_bytes(original, media_files.jpeg_bytes(img), "image/jpeg")
    storage.put_bytes(storage_keys.preview(media_id),
                      media_files.jpeg_bytes(img.resize((size[0] // 2, size[1] // 2))), "image/jpeg")
    png = storage_keys.depth(media_id, "tiny", "png16")
    preview = storage_keys.depth(media_id, "tiny", "preview")
    storage.put_bytes(png, encode_depth_png16(_depth()).png16, "image/png")
    storage.put_bytes(preview, encode_depth_preview(_depth()), "image/webp")
    return media_id, original, {"png16": png, "preview": preview}


@pytest.fixture
def local(tmp_path):
    return LocalStorage(tmp_path / "objects", UrlSigner(b"k" * 32), base_url="http://api")


def test_layouts_are_parsed_and_bad_ones_are_one_sentence():
    assert exports.parse_layouts("sbs, Anaglyph,sbs") == ("sbs", "anaglyph")
    assert exports.parse_layouts(["tb", "sbs-half,rgbd"]) == ("tb", "sbs-half", "rgbd")
    assert exports.parse_layouts(None) == ()
    with pytest.raises(ValueError) as e:
        exports.parse_layouts("sbs,3d")
    message = str(e.value)
    assert "'3d'" in message and "sbs, sbs-half, tb, tb-half, crosseye, anaglyph, rgbd" in message
    assert message.count(".") <= 1


def test_names_are_clean_and_collisions_get_the_media_id():
    a, b, c, d = (uuid.UUID(int=i) for i in (1, 2, 3, 4))
    assert exports.clean_stem("IMG 0001.HEIC") == "IMG 0001"
    assert exports.clean_stem("../../etc/passwd") == "passwd"
    assert exports.clean_stem("no-extension") == "no-extension"
    assert exports.clean_stem('we:ird*"name".jpg') == "we_ird_name_"
    stems = exports.plan_stems([
        ("trip", "a.jpg", a), ("trip", "A.png", b), ("", "a.jpg", c), ("trip", None, d),
        ("trip", "a.jpg", a),  # the same media twice: the same name
    ])
    assert stems == ["trip/a", f"trip/A_{b.hex[:8]}", "a", f"trip/untitled_{d.hex[:8]}", "trip/a"]
    # Deterministic: the same inputs, the same names.
    assert stems == exports.plan_stems([
        ("trip", "a.jpg", a), ("trip", "A.png", b), ("", "a.jpg", c), ("trip", None, d),
        ("trip", "a.jpg", a)])


def test_a_photo_exports_depth_preview_and_layouts_and_resumes(local, tmp_path):
    media_id, original, keys = _stored_photo(local)
    target = exports.LocalTarget(tmp_path / "out")
    layouts = ("sbs", "sbs-half", "tb", "tb-half", "crosseye", "anaglyph", "rgbd")
    done = export_stored(local, target, stem="trip/coffee", kind="photo", media_id=media_id,
                         original_key=original, keys=keys, layouts=layouts)
    out = tmp_path / "out" / "trip"
    assert sorted(p.name for p in out.iterdir()) == sorted([
        "coffee.depth.png", "coffee.depth.webp", "coffee_SBS.jpg", "coffee_HSBS.jpg",
        "coffee_TB.jpg", "coffee_HTB.jpg", "coffee_CROSS.jpg", "coffee_ANAGLYPH.jpg",
        "coffee_RGBD.jpg"])
    assert all(d.written for d in done)
    # The 16-bit depth is the stored one, byte for byte.
    assert (out / "coffee.depth.png").read_bytes() == local.get_bytes(keys["png16"])
    with Image.open(out / "coffee.depth.png") as img:
        assert img.mode in ("I;16", "I;16B", "I")
    # Rendered from the original (320x240), not the 160x120 preview.
    sizes = {}
    for name in ("SBS", "HSBS", "TB", "HTB", "CROSS", "ANAGLYPH", "RGBD"):
        with Image.open(out / f"coffee_{name}.jpg") as img:
            sizes[name] = img.size
    assert sizes == {"SBS": (640, 240), "HSBS": (320, 240), "TB": (320, 480), "HTB": (320, 240),
                     "CROSS": (640, 240), "ANAGLYPH": (320, 240), "RGBD": (640, 240)}

    # Again: nothing written, and the photo is not even read.
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    local.delete(original)
    again = export_stored(local, target, stem="trip/coffee", kind="photo", media_id=media_id,
                          original_key=original, keys=keys, layouts=layouts)
    assert not any(d.written for d in again)
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == mtimes

    # The depth made again (another size): the copy is rewritten, the renders stay.
    local.put_bytes(keys["png16"], encode_depth_png16(_depth(80, 60)).png16, "image/png")
    third = export_stored(local, target, stem="trip/coffee", kind="photo", media_id=media_id,
                          original_key=original, keys=keys, layouts=("sbs",))
    assert [d.output for d in third if d.written] == ["png16"]


def test_without_a_decodable_original_the_preview_is_rendered(local, tmp_path):
    media_id, original, keys = _stored_photo(local)
    local.put_bytes(original, b"\xff\xd8\xff rotten", "image/jpeg")
    target = exports.LocalTarget(tmp_path / "out")
    export_stored(local, target, stem="x", kind="photo", media_id=media_id,
                  original_key=original, keys=keys, layouts=("sbs",))
    with Image.open(tmp_path / "out" / "x_SBS.jpg") as img:
        assert img.size == (320, 120)


def test_a_video_exports_its_depth_video_and_its_stereo_video(local, tmp_path):
    media_id = uuid.uuid4()
    key = storage_keys.depth(media_id, "tiny", "video")
    local.put_bytes(key, b"\0\0\0\x18ftypmp42 fake video", "video/mp4")
    target = exports.LocalTarget(tmp_path / "out")
    done = export_stored(local, target, stem="clip", kind="video", media_id=media_id,
                         original_key=None, keys={"video": key}, layouts=())
    assert [(d.path, d.written) for d in done] == [("clip.depth.mp4", True)]
    assert (tmp_path / "out" / "clip.depth.mp4").read_bytes() == local.get_bytes(key)
    # A stereo layout needs the 16-bit depth video (and the original) to render from.
    with pytest.raises(LookupError, match="16-bit depth video"):
        export_stored(local, target, stem="clip", kind="video", media_id=media_id,
                      original_key=None, keys={"video": key}, layouts=("sbs",))
    original = "originals/clip.mp4"
    local.put_bytes(original, media_files.video_bytes(seconds=0.5, fps=10), "video/mp4")
    key16 = storage_keys.depth(media_id, "tiny", "video16")
    depth16 = tmp_path / "depth16.mkv"
    with Depth16VideoWriter(depth16, 40, 30) as writer:
        for i in range(5):
            writer.write(np.full((30, 40), 40000, np.uint16), i / 10)
    local.put_bytes(key16, depth16.read_bytes(), "video/x-matroska")
    done = export_stored(local, target, stem="clip", kind="video", media_id=media_id,
                         original_key=original, keys={"video": key, "video16": key16},
                         layouts=("sbs", "tb-half"))
    assert [(d.path, d.written) for d in done] == [
        ("clip.depth.mp4", False), ("clip_SBS.mp4", True), ("clip_HTB.mp4", True)]
    with av.open(str(tmp_path / "out" / "clip_HTB.mp4")) as clip:
        assert clip.streams.video[0].frames == 5
        assert (clip.streams.video[0].width, clip.streams.video[0].height) == (160, 120)
    with pytest.raises(LookupError):
        export_stored(local, target, stem="clip", kind="video", media_id=media_id,
                      original_key=None, keys={}, layouts=())


def test_paths_are_shortened_in_the_middle():
    path = "holidays/2024/summer/very-long-folder-name/IMG_20240801_123456_SBS.jpg"
    short = exports.shorten_middle(path, 30)
    assert len(short) == 30 and short.startswith("holidays") and short.endswith("_SBS.jpg")
    assert "…" in short
    assert exports.shorten_middle("a.jpg", 30) == "a.jpg"


def test_a_local_target_stays_in_its_directory(tmp_path):
    target = exports.LocalTarget(tmp_path)
    with pytest.raises(ValueError):
        target.write("../x.png", b"x")
    target.write("a/b.png", b"abc")
    assert target.size("a/b.png") == 3 and target.size("a/c.png") is None
    assert not list((tmp_path / "a").glob(".export-*"))
