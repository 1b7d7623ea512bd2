"""Stereo video from a real encoded video and a 16-bit depth video: every source frame at its
timestamp, the layout's size, the audio carried over, the screen plane fixed across frames."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from cluster.media.depth_encode import Depth16VideoWriter
from cluster.media import stereo_video
from cluster.media.stereo_video import H264_MAX_WIDTH, choose_codec, render_stereo_video
from devkit.media_files import video_bytes

SIZE = (96, 64)


def timestamps(path: Path) -> list[float]:
    with av.open(str(path)) as c:
        return [float(f.time) for f in c.decode(video=0)]


def depth_video(path: Path, at: list[float]) -> Path:
    """Left half far (0), right half near (65535), at the given timestamps."""
    with Depth16VideoWriter(path, SIZE[0] // 2, SIZE[1] // 2) as w:
        for t in at:
            v = np.zeros((SIZE[1] // 2, SIZE[0] // 2), np.uint16)
            v[:, SIZE[0] // 4:] = 65535
            w.write(v, t)
    return path


@pytest.mark.parametrize("fmt, audio, expected_audio", [
    ("mp4", "aac", "copied"), ("matroska", "pcm_s16le", "aac"), ("mp4", None, None)])
def test_every_source_frame_is_rendered_at_its_timestamp_with_the_audio(
        tmp_path, fmt, audio, expected_audio):
    source = tmp_path / "source"
    source.write_bytes(video_bytes(fmt, seconds=1.0, fps=10, size=SIZE, audio=audio))
    source_times = timestamps(source)
    # Depth at half the rate (a capped video): each frame takes the latest depth before it.
    depth = depth_video(tmp_path / "depth16.mkv", source_times[::2])
    seen: list[float] = []
    result = render_stereo_video(source, depth, tmp_path / "out.mp4", "sbs",
                                 progress=seen.append)
    assert result.frames == len(source_times) == 10
    assert (result.width, result.height) == (2 * SIZE[0], SIZE[1])
    assert result.audio == expected_audio
    assert timestamps(tmp_path / "out.mp4") == pytest.approx(source_times, abs=1e-3)
    with av.open(str(tmp_path / "out.mp4")) as out:
        assert [s.type for s in out.streams] == ["video"] + (["audio"] if audio else [])
        if audio:
            duration = sum(p.duration or 0 for p in out.demux(out.streams.audio[0]))
            seconds = duration * float(out.streams.audio[0].time_base)
            assert seconds == pytest.approx(1.0, abs=0.1)
    assert seen == sorted(seen) and 0.8 <= seen[-1] <= 1.0


def test_near_and_far_halves_shift_opposite_ways_between_the_views(tmp_path):
    source = tmp_path / "source.mp4"
    source.write_bytes(video_bytes("mp4", seconds=0.5, fps=10, size=SIZE))
    depth = depth_video(tmp_path / "depth16.mkv", timestamps(source))
    render_stereo_video(source, depth, tmp_path / "out.mp4", "sbs", divergence=10.0,
                        convergence=0.5)
    with av.open(str(tmp_path / "out.mp4")) as out:
        frame = next(out.decode(video=0)).to_ndarray(format="rgb24").astype(np.float32)
    with av.open(str(source)) as src:
        original = next(src.decode(video=0)).to_ndarray(format="rgb24").astype(np.float32)
    left, right = frame[:, :SIZE[0]], frame[:, SIZE[0]:]
    row = SIZE[1] // 2

    def shift(view: np.ndarray, cols: slice) -> int:
        # The horizontal offset that best matches the original's stretch of that half.
        errors = {s: np.abs(view[row, cols.start + s:cols.stop + s] - original[row, cols]).mean()
                  for s in range(-6, 7)}
        return min(errors, key=errors.get)

    # ±divergence%/2 × width × (unit − 0.5) = ±2.4 px: near goes right in the left view and left
    # in the right view (crossed), far the other way.
    near, far = slice(60, 84), slice(12, 36)
    assert shift(left, near) > 0 > shift(right, near)
    assert shift(left, far) < 0 < shift(right, far)


def test_hevc_when_asked_and_h264_by_default_below_the_width_h264_players_take(tmp_path):
    source = tmp_path / "source.mp4"
    source.write_bytes(video_bytes("mp4", seconds=0.3, fps=10, size=SIZE))
    depth = depth_video(tmp_path / "depth16.mkv", timestamps(source))
    made = {}
    for codec in (None, "hevc"):
        out = tmp_path / f"{codec}.mp4"
        made[codec] = render_stereo_video(source, depth, out, "sbs", codec=codec)
        with av.open(str(out)) as c:
            stream = c.streams.video[0]
            made[codec, "read"] = (stream.codec_context.name, stream.codec_tag,
                                   sum(1 for _ in c.decode(video=0)))
    assert made[None].codec == "h264" and made[None, "read"] == ("h264", "avc1", 3)
    assert made["hevc"].codec == "hevc" and made["hevc", "read"] == ("hevc", "hvc1", 3)
    assert choose_codec(None, H264_MAX_WIDTH) == "h264"
    assert choose_codec(None, 2 * 3840) == "hevc"  # a full side-by-side of a 4K video


def test_without_an_hevc_encoder_asking_for_it_is_refused_and_wide_frames_stay_h264(monkeypatch):
    monkeypatch.setattr(stereo_video, "encoder_present", lambda codec: codec == "h264")
    with pytest.raises(stereo_video.CodecUnavailable, match="use h264"):
        stereo_video.choose_codec("hevc", 100)
    assert stereo_video.choose_codec(None, 2 * 3840) == "h264"
