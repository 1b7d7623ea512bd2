"""Validation, metadata, decoding and renditions on real photos and videos."""

from __future__ import annotations

import io
from datetime import datetime

import numpy as np
import pytest
from PIL import Image

from cluster.media.decode import (
    decode_for_model,
    decode_photo,
    poster_frame,
    preview_jpeg,
    sample_video_frames,
    video_frame_rate,
    thumbnail_webp,
    to_rgb,
)
from cluster.media.probe import MediaLimits, MediaRejected, jpeg_is_whole, probe, sniff
from devkit import media_files

LIMITS = MediaLimits(max_bytes=50 * 1024 * 1024, max_pixels=150_000_000, max_video_seconds=60)
VARIANTS = media_files.photo_variants()
BAD = media_files.bad_files()

EXPECTED_FORMAT = {
    "rgb.jpg": "JPEG", "rotated.jpg": "JPEG", "cmyk.jpg": "JPEG", "gray.jpg": "JPEG",
    "progressive.jpg": "JPEG", "motion.jpg": "JPEG",
    "gray16.png": "PNG", "rgba.png": "PNG", "photo.webp": "WEBP", "photo.heic": "HEIF",
    "photo.tiff": "TIFF", "anim.gif": "GIF",
}


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_every_supported_photo_is_accepted_and_decodes_to_rgb(tmp_path, name):
    # Named .bin: the type comes from the content, never the extension.
    path = media_files.write(tmp_path, "upload.bin", VARIANTS[name])
    probed = probe(path, LIMITS)
    assert probed.kind == "photo" and probed.format == EXPECTED_FORMAT[name]
    rgb = decode_for_model(path)
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
    assert (rgb.shape[1], rgb.shape[0]) == (probed.width, probed.height)
    assert rgb.std() > 5  # a real picture, not a blank


def test_exif_orientation_date_and_camera(tmp_path):
    path = media_files.write(tmp_path, "r.jpg", VARIANTS["rotated.jpg"])
    stored = Image.open(path).size  # (451, 300) as stored, landscape
    probed = probe(path, LIMITS)
    assert (probed.width, probed.height) == (stored[1], stored[0])  # displayed upright
    assert probed.taken_at == datetime(2024, 7, 14, 18, 30, 5)
    assert probed.camera == "Canon EOS R5"
    assert decode_for_model(path).shape[:2] == (stored[0], stored[1])


def test_sixteen_bit_images_keep_their_range(tmp_path):
    rgb = decode_for_model(VARIANTS["gray16.png"])
    expected = np.asarray(media_files.photo("astronaut").convert("L"))
    assert np.abs(rgb[..., 0].astype(int) - expected).max() <= 1


def test_alpha_and_cmyk_become_rgb():
    assert to_rgb(Image.new("RGBA", (4, 4), (255, 0, 0, 0))).getpixel((0, 0)) == (0, 0, 0)
    assert to_rgb(Image.new("CMYK", (4, 4), (0, 0, 0, 0))).getpixel((0, 0)) == (255, 255, 255)


def test_large_jpegs_decode_at_reduced_size_just_above_the_model_input():
    big = media_files.jpeg_bytes(media_files.large_photo(4000, 3000))
    rgb = decode_for_model(big, short_side=518)
    # 1/4 scale (1000×750) is the smallest DCT scale that keeps the short side ≥ 518.
    assert rgb.shape == (750, 1000, 3)
    small = media_files.jpeg_bytes(media_files.photo("chelsea"))
    assert decode_for_model(small).shape == (300, 451, 3)  # never upscaled here


def test_one_decode_feeds_the_model_and_the_renditions():
    big = media_files.jpeg_bytes(media_files.large_photo(4000, 3000))
    photo = decode_photo(big)
    # The model gets what its own decode would give; the gallery image is preview-sized.
    assert photo.model.shape == decode_for_model(big).shape == (750, 1000, 3)
    assert photo.gallery.size == (1440, 1080)
    assert Image.open(io.BytesIO(preview_jpeg(photo.gallery))).size == (1440, 1080)
    assert Image.open(io.BytesIO(thumbnail_webp(photo.gallery))).size == (250, 188)
    reduced = np.asarray(Image.fromarray(decode_for_model(big)), dtype=int)
    assert np.abs(photo.model.astype(int) - reduced).mean() < 3  # box reduce ≈ DCT scaling


def test_one_decode_is_upright_and_reduces_any_format():
    rotated = decode_photo(VARIANTS["rotated.jpg"])
    assert rotated.model.shape == decode_for_model(VARIANTS["rotated.jpg"]).shape
    assert rotated.gallery.size == (rotated.model.shape[1], rotated.model.shape[0])
    png = media_files.encoded(media_files.large_photo(2100, 1600), "PNG")
    photo = decode_photo(png)
    assert photo.model.shape == (534, 700, 3)  # reduced 3×, the short side still ≥ 518
    assert photo.gallery.size == (1440, 1097)


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_files_are_rejected_with_the_right_code(tmp_path, name):
    content, code = BAD[name]
    path = media_files.write(tmp_path, name, content)
    with pytest.raises(MediaRejected) as err:
        probe(path, LIMITS)
    assert err.value.code == code
    assert err.value.message  # a sentence for people


def test_whole_jpegs_are_told_from_broken_ones_by_structure(tmp_path):
    # Upload skips the decode for a JPEG that passes, so nothing broken may pass.
    whole = [n for n in VARIANTS if EXPECTED_FORMAT[n] == "JPEG"]
    broken = ["truncated.jpg", "no-end-marker.jpg", "truncated-with-thumbnail.jpg",
              "broken-marker.jpg"]
    assert {"progressive.jpg", "motion.jpg", "rotated.jpg"} <= set(whole)
    for name in whole:
        assert jpeg_is_whole(media_files.write(tmp_path, name, VARIANTS[name])), name
    for name in broken:
        assert not jpeg_is_whole(media_files.write(tmp_path, name, BAD[name][0])), name


def test_size_and_pixel_limits(tmp_path):
    path = media_files.write(tmp_path, "a.jpg", VARIANTS["rgb.jpg"])
    with pytest.raises(MediaRejected, match="limit is 1000 bytes") as err:
        probe(path, MediaLimits(max_bytes=1000, max_pixels=10**9, max_video_seconds=60))
    assert err.value.code == "file_too_large"
    with pytest.raises(MediaRejected) as err:
        probe(path, MediaLimits(max_bytes=10**9, max_pixels=512 * 511, max_video_seconds=60))
    assert err.value.code == "image_too_large"


@pytest.mark.parametrize(
    "fmt,codec,mime", [("mp4", "libx264", "video/mp4"), ("mov", "libx264", "video/quicktime"),
                       ("matroska", "libx264", "video/x-matroska"), ("webm", "libvpx-vp9", "video/webm")],
)
def test_videos_are_probed(tmp_path, fmt, codec, mime):
    path = media_files.write(tmp_path, "clip.bin", media_files.video_bytes(fmt, codec, seconds=2, fps=10))
    probed = probe(path, LIMITS)
    assert probed.kind == "video" and probed.mime == mime
    assert (probed.width, probed.height) == (160, 120)
    assert probed.duration == pytest.approx(2.0, abs=0.15)
    assert probed.fps == pytest.approx(10, abs=0.5)
    assert probed.frame_count == pytest.approx(20, abs=1)
    assert probed.codec in ("h264", "vp9", "libvpx-vp9")


def test_videos_over_the_duration_limit_are_rejected(tmp_path):
    path = media_files.write(tmp_path, "long.mp4", media_files.video_bytes(seconds=3))
    with pytest.raises(MediaRejected) as err:
        probe(path, MediaLimits(max_bytes=10**9, max_pixels=10**9, max_video_seconds=1))
    assert err.value.code == "video_too_long"


def test_video_frames_are_sampled_at_the_requested_rate(tmp_path):
    path = media_files.write(tmp_path, "v.mp4", media_files.video_bytes(seconds=3, fps=10))
    frames = list(sample_video_frames(path, fps=2))
    assert [round(f.timestamp, 2) for f in frames] == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]
    assert frames[0].rgb.shape == (120, 160, 3)
    assert not np.array_equal(frames[0].rgb, frames[1].rgb)
    assert len(list(sample_video_frames(path, fps=10, max_frames=7))) == 7


def test_every_video_frame_or_a_cap_dropping_them_evenly(tmp_path):
    path = media_files.write(tmp_path, "v.mp4", media_files.video_bytes(seconds=3, fps=10))
    every = list(sample_video_frames(path, fps=None, max_frames=None))
    assert [round(f.timestamp, 2) for f in every] == [round(i / 10, 2) for i in range(30)]
    assert [f.index for f in every] == list(range(30))
    capped = list(sample_video_frames(path, fps=5, max_frames=None))
    assert [round(f.timestamp, 2) for f in capped] == [round(i / 5, 2) for i in range(15)]
    assert video_frame_rate(path) == 10


def test_large_video_frames_are_reduced_for_the_model_with_their_size_kept(tmp_path):
    path = media_files.write(tmp_path, "hd.mp4", media_files.video_bytes(
        seconds=0.5, fps=10, size=(1280, 720)))
    frame = next(sample_video_frames(path, fps=None, short_side=518))
    assert frame.rgb.shape == (518, 921, 3) and frame.source_size == (720, 1280)
    small = next(sample_video_frames(path, fps=None, short_side=1000))
    assert small.rgb.shape == (720, 1280, 3)


def test_thumbnail_and_preview_renditions(tmp_path):
    big = media_files.jpeg_bytes(media_files.large_photo(2000, 1500))
    thumb = Image.open(io.BytesIO(thumbnail_webp(big)))
    preview = Image.open(io.BytesIO(preview_jpeg(big)))
    assert thumb.format == "WEBP" and thumb.size == (250, 188)
    assert preview.format == "JPEG" and preview.size == (1440, 1080)
    video = media_files.write(tmp_path, "v.mp4", media_files.video_bytes())
    poster = poster_frame(video)
    assert Image.open(io.BytesIO(thumbnail_webp(poster))).size == (160, 120)


def test_sniff_reads_content_not_names():
    assert sniff(VARIANTS["photo.heic"][:64]) == ("photo", "HEIF")
    assert sniff(b"%PDF-1.7") is None
