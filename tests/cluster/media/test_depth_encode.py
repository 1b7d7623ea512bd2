from __future__ import annotations

import io

import av
import numpy as np
import pytest
from PIL import Image

from cluster.media.depth_encode import (
    Depth16VideoWriter,
    DepthVideoWriter,
    decode_depth_png16,
    encode_depth_png16,
    encode_depth_preview,
    read_depth16_video,
)


def ramp(h=48, w=64) -> np.ndarray:
    return np.linspace(0.5, 7.5, h * w, dtype=np.float32).reshape(h, w)


def test_png16_round_trips_raw_values_and_keeps_near_white():
    depth = ramp()
    out = encode_depth_png16(depth)
    img = Image.open(io.BytesIO(out.png16))
    assert img.mode in ("I;16", "I") and img.size == (64, 48)
    assert (out.raw_min, out.raw_max) == pytest.approx((0.5, 7.5))
    restored = decode_depth_png16(out.png16, out.raw_min, out.raw_max)
    assert np.abs(restored - depth).max() < 7.0 / 65535 * 1.01
    # Inverse depth: the largest value (nearest) is white.
    assert np.asarray(img)[-1, -1] == 65535 and np.asarray(img)[0, 0] == 0


def test_png16_resizes_to_the_requested_output_size():
    out = encode_depth_png16(ramp(), size=(128, 96))
    assert (out.width, out.height) == (128, 96)
    assert Image.open(io.BytesIO(out.png16)).size == (128, 96)


def test_constant_and_non_finite_maps_do_not_break_encoding():
    out = encode_depth_png16(np.full((8, 8), 3.0, np.float32))
    assert out.raw_min == out.raw_max == 3.0
    bad = ramp(8, 8)
    bad[0, 0] = np.nan
    bad[1, 1] = np.inf
    assert np.isfinite(decode_depth_png16(encode_depth_png16(bad).png16)).all()
    with pytest.raises(ValueError, match="2-D"):
        encode_depth_png16(np.zeros((2, 2, 2)))


def test_preview_is_a_colour_webp():
    img = Image.open(io.BytesIO(encode_depth_preview(ramp())))
    assert img.format == "WEBP" and img.mode == "RGB"
    near, far = np.asarray(img)[-1, -1], np.asarray(img)[0, 0]
    assert near[0] > near[2] and far[2] > far[0]  # turbo: near red, far blue


def test_depth_video_keeps_the_sampled_timestamps(tmp_path):
    path = tmp_path / "depth.mp4"
    stamps = [0.0, 0.5, 1.0, 1.5]
    with DepthVideoWriter(path, 65, 49) as writer:
        for i, t in enumerate(stamps):
            writer.write(ramp() * (i + 1), t)
    assert [f["timestamp"] for f in writer.frames] == stamps
    with av.open(str(path)) as container:
        frames = list(container.decode(video=0))
    assert [round(f.time, 3) for f in frames] == stamps
    assert (frames[0].width, frames[0].height) == (64, 48)
    gray = frames[0].to_ndarray(format="gray")
    assert gray[-1, -1] > 200 and gray[0, 0] < 50


def test_depth_video_longer_than_the_encoder_delay_keeps_its_timestamps(tmp_path):
    # Frames' pts were read in the stream's time base, which MP4 changes once the header is
    # written: any video past x264's delay failed to mux.
    path = tmp_path / "long.mp4"
    stamps = [round(i / 30, 6) for i in range(90)]
    with DepthVideoWriter(path, 64, 48) as writer:
        for i, t in enumerate(stamps):
            writer.write_unit(np.full((48, 64), i / 90, np.float32), t)
    assert writer.count == 90 and writer.frames == []  # write_unit keeps nothing per frame
    with av.open(str(path)) as container:
        times = [round(f.time, 3) for f in container.decode(video=0)]
    assert times == [round(t, 3) for t in stamps]


def test_the_16_bit_depth_video_round_trips_exactly(tmp_path):
    path = tmp_path / "depth16.mkv"
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 65536, (37, 51), dtype=np.uint16) for _ in range(3)]
    frames += [np.round(np.linspace(0, 1, 37 * 51).reshape(37, 51) ** (1 + i / 10) * 65535)
               .astype(np.uint16) for i in range(40)]
    stamps = [round(i / 25, 6) for i in range(len(frames))]
    with Depth16VideoWriter(path, 51, 37) as writer:  # odd sizes are fine: no chroma
        for frame, t in zip(frames, stamps):
            writer.write(frame, t)
    assert writer.count == len(frames)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert container.format.name.startswith("matroska")
        assert (stream.codec_context.name, stream.codec_context.pix_fmt) == ("ffv1", "gray16le")
    back = list(read_depth16_video(path))
    assert [round(t, 3) for t, _ in back] == [round(t, 3) for t in stamps]
    for (_, got), want in zip(back, frames, strict=True):
        assert got.dtype == np.uint16 and np.array_equal(got, want)
    with pytest.raises(ValueError, match="frame is"):
        with Depth16VideoWriter(tmp_path / "x.mkv", 8, 8) as w:
            w.write(np.zeros((4, 4), np.uint16), 0.0)
