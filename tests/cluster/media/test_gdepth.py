"""GDepth embedding, read back by exiftool (an independent reader of XMP and extended XMP).

exiftool names ``GDepth:Data`` ``DepthImage`` and decodes its base64 itself."""

from __future__ import annotations

import io
import json
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cluster.media import gdepth
from cluster.media.depth_encode import decode_depth_png16, encode_depth_png16

EXIFTOOL = shutil.which("exiftool")
pytestmark = pytest.mark.skipif(EXIFTOOL is None, reason="exiftool is not installed (apt-get install "
                                "libimage-exiftool-perl): it is the independent GDepth reader")


def exiftool(*args: str) -> bytes:
    return subprocess.run([EXIFTOOL, *args], check=True, capture_output=True, timeout=60).stdout


def noisy_photo(w: int, h: int) -> bytes:
    """Noise keeps both the JPEG and the depth PNG large, so the depth needs several segments."""
    rng = np.random.default_rng(3)
    return gdepth.to_jpeg(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def stored_unit_map(w: int, h: int) -> np.ndarray:
    """A depth map as depthmill stores it: through the 16-bit PNG, so values are quantised."""
    rng = np.random.default_rng(4)
    raw = rng.random((h, w)).astype(np.float32) * 3 + 0.5
    return decode_depth_png16(encode_depth_png16(raw).png16)


@pytest.fixture
def embedded(tmp_path: Path) -> tuple[Path, np.ndarray]:
    unit = stored_unit_map(640, 480)
    path = tmp_path / "depth.jpg"
    path.write_bytes(gdepth.embed(noisy_photo(640, 480), unit))
    return path, unit


def test_exiftool_reads_the_gdepth_fields(embedded):
    path, _ = embedded
    (tags,) = json.loads(exiftool("-j", "-G1", "-XMP-GDepth:all", str(path)))
    assert tags["XMP-GDepth:Format"] == "RangeInverse"
    assert tags["XMP-GDepth:Near"] == gdepth.NEAR and tags["XMP-GDepth:Far"] == gdepth.FAR
    assert tags["XMP-GDepth:Mime"] == "image/png"
    assert "XMP-GDepth:DepthImage" in tags  # the data, found in the extended XMP
    assert b"Warning" not in exiftool("-validate", "-warning", "-a", str(path))


def test_the_extracted_depth_is_the_stored_map_in_eight_bits(embedded):
    path, unit = embedded
    png = exiftool("-b", "-XMP-GDepth:DepthImage", str(path))
    with Image.open(io.BytesIO(png)) as img:
        assert img.format == "PNG" and img.mode == "L" and img.size == (640, 480)
        got = np.asarray(img).astype(int)
    want = np.round(unit * 255).astype(int)
    assert np.abs(got - want).max() <= 1
    assert (got == want).mean() > 0.999  # exact but for float rounding at the .5 boundaries


def test_the_depth_spans_several_extended_segments_of_bounded_size(embedded):
    path, _ = embedded
    data = path.read_bytes()
    segments = []
    pos = 2
    while data[pos] == 0xFF and data[pos + 1] != 0xDA:
        (length,) = struct.unpack(">H", data[pos + 2:pos + 4])
        segments.append((data[pos + 1], data[pos + 4:pos + 2 + length]))
        pos += 2 + length
    extended = [body for marker, body in segments
                if marker == 0xE1 and body.startswith(gdepth.EXTENSION_HEADER)]
    assert len(extended) >= 2
    header = len(gdepth.EXTENSION_HEADER) + 32 + 8
    assert all(len(b) - header <= gdepth.CHUNK for b in extended)
    offsets = [struct.unpack(">I", b[header - 4:header])[0] for b in extended]
    assert offsets == sorted(offsets) and offsets[0] == 0


def test_the_photo_itself_is_untouched_and_embedding_twice_keeps_one_depth(tmp_path):
    photo = noisy_photo(320, 240)
    unit = stored_unit_map(160, 120)  # smaller than the photo: resized to it
    once = gdepth.embed(photo, unit)
    twice = gdepth.embed(once, unit)
    assert once == twice
    with Image.open(io.BytesIO(photo)) as a, Image.open(io.BytesIO(once)) as b:
        assert np.array_equal(np.asarray(a), np.asarray(b))
    path = tmp_path / "small.jpg"
    path.write_bytes(once)
    with Image.open(io.BytesIO(exiftool("-b", "-XMP-GDepth:DepthImage", str(path)))) as img:
        assert img.size == (320, 240)


def test_the_stored_byte_is_range_inverse_of_the_nominal_near_and_far():
    """What a reader computes from the byte: 1/d = 1/Far + v/255 · (1/Near − 1/Far); the byte of
    the nearest point is 255 and of the farthest 0, whatever Near and Far are."""
    unit = np.array([[0.0, 0.25, 0.5, 1.0]], dtype=np.float32)
    with Image.open(io.BytesIO(gdepth.range_inverse_png(unit))) as img:
        v = np.asarray(img).astype(float)
    inv_d = 1 / gdepth.FAR + v / 255 * (1 / gdepth.NEAR - 1 / gdepth.FAR)
    back = (inv_d - 1 / gdepth.FAR) / (1 / gdepth.NEAR - 1 / gdepth.FAR)
    assert np.allclose(back * 255, np.round(unit * 255))
