"""Stereo video: every frame of a video rendered in a stereo layout from its 16-bit depth video,
as an MP4 with the source's audio.

One pass over the source, packets in file order: video packets are decoded, rendered
(:func:`cluster.media.stereo.render`) and encoded as they come, audio packets are copied across
(or re-encoded to AAC where MP4 cannot hold the source's codec). Memory holds a frame or two,
whatever the length. Output frames carry the source frames' timestamps, so frame count and
timing equal the source's.

The depth video (``Depth16VideoWriter``) has a frame per source frame, or fewer when its depth
was capped below the source's rate: each source frame takes the latest depth frame at or before
its timestamp. Its values are the stabilised inverse depth (0-65535, near = 65535) whose range
is a slow average over the shot, so the zero-disparity plane is placed once on that range rather
than per frame (which would make the screen plane wobble with each frame's extremes).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from functools import cache
from pathlib import Path
from typing import Literal

import av
import numpy as np

from cluster.media import stereo
from cluster.media.depth_encode import read_depth16_video

# What an MP4 holds as it is; anything else (PCM, Vorbis...) is re-encoded to AAC.
MP4_AUDIO_CODECS = frozenset({"aac", "mp3", "ac3", "eac3", "alac", "flac", "opus"})
_MS = Fraction(1, 1000)

Codec = Literal["h264", "hevc"]
_ENCODERS = {"h264": "libx264", "hevc": "libx265"}
# Headset and phone decoders take H.264 up to 4096 pixels wide; a full side-by-side of a 4K
# video is 7680. HEVC goes to 8192.
H264_MAX_WIDTH = 4096


class CodecUnavailable(ValueError):
    """The encoder for a codec asked for is not in this PyAV's FFmpeg."""


@cache
def encoder_present(codec: Codec) -> bool:
    try:
        av.codec.Codec(_ENCODERS[codec], "w")
    except ValueError:  # UnknownCodecError
        return False
    return True


def choose_codec(requested: Codec | None, width: int) -> Codec:
    """``requested``, or H.264 (which every player decodes) unless the frame is too wide for
    it and HEVC can be encoded here."""
    if requested is not None:
        if not encoder_present(requested):
            raise CodecUnavailable(f"this depthmill cannot encode {requested} "
                                   f"({_ENCODERS[requested]} is not in its FFmpeg); use h264")
        return requested
    return "hevc" if width > H264_MAX_WIDTH and encoder_present("hevc") else "h264"


@dataclass(frozen=True)
class StereoVideo:
    frames: int
    width: int
    height: int
    codec: Codec
    audio: str | None  # "copied", "aac" (re-encoded) or None (the source has none)


class _DepthAt:
    """The latest depth frame at or before a timestamp, reading the depth video forwards."""

    def __init__(self, frames: Iterator[tuple[float, np.ndarray]]) -> None:
        self._frames = frames
        self._current = next(frames, None)
        if self._current is None:
            raise ValueError("the depth video has no frames")
        self._next = next(frames, None)

    def __call__(self, timestamp: float) -> np.ndarray:
        while self._next is not None and self._next[0] <= timestamp + 1e-6:
            self._current, self._next = self._next, next(self._frames, None)
        return self._current[1]


def render_stereo_video(
    source: Path, depth16: Path, out: Path, layout: stereo.Layout = "sbs", *,
    divergence: float = stereo.DEFAULT_DIVERGENCE, convergence: float = stereo.DEFAULT_CONVERGENCE,
    codec: Codec | None = None, progress: Callable[[float], None] | None = None,
) -> StereoVideo:
    """Render ``source`` in ``layout`` to the MP4 ``out``, in ``codec`` (None: see
    :func:`choose_codec`). ``progress`` gets the share of the source's duration done (0..1)
    after each frame, for the caller to report as it sees fit."""
    depth_at = _DepthAt(read_depth16_video(depth16))
    level = 1.0 - convergence  # on the stabilised range: 0 nearest (1.0) … 1 farthest (0.0)
    with av.open(str(source)) as src, av.open(str(out), mode="w", format="mp4") as dst:
        video_in = src.streams.video[0]
        video_in.thread_type = "AUTO"
        audio_in = src.streams.audio[0] if src.streams.audio else None
        duration = _duration_s(src, video_in)
        # Every stream before the first packet: the muxer writes its header then.
        size = stereo.frame_size(layout, video_in.codec_context.width,
                                 video_in.codec_context.height)
        codec = choose_codec(codec, size[0])
        video_out = _video_stream(dst, size, video_in, codec)
        audio_out, audio_mode = _audio_stream(dst, audio_in)
        frames = 0
        streams = [video_in] + ([audio_in] if audio_in is not None else [])
        for packet in src.demux(streams):
            if packet.stream is audio_in:
                _audio_packet(dst, audio_out, audio_mode, packet)
                continue
            for frame in packet.decode():
                if frame.time is None:
                    continue
                rgb = frame.to_ndarray(format="rgb24")
                unit = depth_at(float(frame.time)).astype(np.float32) / np.float32(65535)
                picture = stereo.render(rgb, unit, layout, divergence, convergence, level)
                _encode(dst, video_out, picture, float(frame.time))
                frames += 1
                if progress is not None and duration:
                    progress(min(float(frame.time) / duration, 1.0))
        if not frames:
            raise ValueError("the video has no frames to render")
        for packet in video_out.encode():
            dst.mux(packet)
        if audio_mode == "aac":
            for packet in audio_out.encode():
                dst.mux(packet)
        return StereoVideo(frames, video_out.width, video_out.height, codec, audio_mode)


def _duration_s(container, stream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    return container.duration / av.time_base if container.duration else None


def _video_stream(dst, size: tuple[int, int], video_in, codec: Codec):
    stream = dst.add_stream(_ENCODERS[codec], rate=video_in.average_rate or 30)
    w, h = size
    stream.width, stream.height = w - w % 2, h - h % 2  # yuv420p
    stream.pix_fmt = "yuv420p"
    stream.time_base = _MS
    # Stereo players magnify each half: a little above each encoder's usual quality.
    if codec == "hevc":
        # hvc1, not hev1: the tag Apple's and the Quest's players require in MP4.
        stream.codec_tag = "hvc1"
        stream.options = {"crf": "22", "preset": "veryfast", "x265-params": "log-level=error"}
    else:
        stream.options = {"crf": "18", "preset": "veryfast"}
    return stream


def _encode(dst, stream, picture: np.ndarray, timestamp: float) -> None:
    frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
    frame = frame.reformat(width=stream.width, height=stream.height, format="yuv420p")
    frame.pts, frame.time_base = round(timestamp * 1000), _MS
    for packet in stream.encode(frame):
        dst.mux(packet)


def _audio_stream(dst, audio_in):
    if audio_in is None:
        return None, None
    if audio_in.codec_context.name in MP4_AUDIO_CODECS:
        return dst.add_stream_from_template(audio_in), "copied"
    stream = dst.add_stream("aac", rate=audio_in.codec_context.sample_rate or 48000)
    # A source layout without a channel order ("1 channels") does not open the encoder; more
    # than two channels are mixed down to stereo on this (uncommon) path.
    stream.layout = "mono" if audio_in.codec_context.channels == 1 else "stereo"
    stream.format = "fltp"  # the AAC encoder's only sample format; PyAV resamples to it
    return stream, "aac"


def _audio_packet(dst, audio_out, mode: str | None, packet) -> None:
    if mode == "copied":
        if packet.dts is None:  # the demuxer's flush packet
            return
        packet.stream = audio_out
        dst.mux(packet)
    elif mode == "aac":
        for frame in packet.decode():
            frame.pts = None  # the encoder numbers its own samples
            for out in audio_out.encode(frame):
                dst.mux(out)
