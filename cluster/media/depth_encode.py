"""Depth outputs: 16-bit PNGs of normalised inverse depth (near = white) with the raw range kept so
values can be recovered, colour-mapped previews for people, and depth videos: a lossless 16-bit
one (FFV1 in Matroska) for players and tools, an 8-bit H.264 one for browsers."""

from __future__ import annotations

import io
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

_MS = Fraction(1, 1000)  # depth videos' time base: milliseconds


@dataclass(frozen=True)
class EncodedDepth:
    png16: bytes
    width: int
    height: int
    raw_min: float
    raw_max: float


def normalise(depth: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Depth to [0, 1] with its raw range; a constant map becomes all zeros."""
    depth = np.asarray(depth, dtype=np.float32)
    if depth.ndim != 2:
        raise ValueError(f"a depth map is 2-D, got shape {depth.shape}")
    finite = np.isfinite(depth)
    if not finite.all():
        depth = np.where(finite, depth, np.nanmin(np.where(finite, depth, np.nan)))
    lo, hi = float(depth.min()), float(depth.max())
    span = hi - lo
    unit = (depth - lo) / span if span > 0 else np.zeros_like(depth)
    return unit, lo, hi


def encode_depth_png16(depth: np.ndarray, size: tuple[int, int] | None = None) -> EncodedDepth:
    """Depth Anything predicts relative inverse depth: larger is nearer, so near comes out white.
    ``size`` (width, height) resizes the float map before quantising."""
    depth = np.asarray(depth, dtype=np.float32)
    if size is not None and (depth.shape[1], depth.shape[0]) != tuple(size):
        depth = np.asarray(Image.fromarray(depth, "F").resize(size, Image.Resampling.BICUBIC))
    unit, lo, hi = normalise(depth)
    quantised = np.round(unit * 65535.0).astype(np.uint16)
    buf = io.BytesIO()
    Image.fromarray(quantised).save(buf, "PNG", compress_level=3)
    return EncodedDepth(buf.getvalue(), quantised.shape[1], quantised.shape[0], lo, hi)


def decode_depth_png16(png: bytes, raw_min: float | None = None, raw_max: float | None = None):
    """The inverse of :func:`encode_depth_png16`: [0, 1], or raw values when the range is given."""
    with Image.open(io.BytesIO(png)) as img:
        unit = np.asarray(img, dtype=np.float32) / 65535.0
    if raw_min is None or raw_max is None:
        return unit
    return raw_min + unit * (raw_max - raw_min)


# Turbo colour map (Google, Apache-2.0), as a polynomial fit: no matplotlib needed.
_TURBO_R = (0.13572138, 4.61539260, -42.66032258, 132.13108234, -152.94239396, 59.28637943)
_TURBO_G = (0.09140261, 2.19418839, 4.84296658, -14.18503333, 4.27729857, 2.82956604)
_TURBO_B = (0.10667330, 12.64194608, -60.58204836, 110.36276771, -89.90310912, 27.34824973)


def _turbo_lut() -> np.ndarray:
    x = np.linspace(0.0, 1.0, 256)
    powers = np.stack([x**i for i in range(6)])
    rgb = np.stack([np.array(c) @ powers for c in (_TURBO_R, _TURBO_G, _TURBO_B)], axis=-1)
    return np.clip(rgb * 255.0 + 0.5, 0, 255).astype(np.uint8)


_TURBO = _turbo_lut()


def encode_depth_preview(depth: np.ndarray, max_side: int = 1440) -> bytes:
    """An 8-bit colour-mapped WebP (near = red, far = blue) for people to look at."""
    unit, _, _ = normalise(depth)
    img = Image.fromarray(_TURBO[np.round(unit * 255).astype(np.uint8)], "RGB")
    img.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, "WEBP", quality=85)
    return buf.getvalue()


class DepthVideoWriter:
    """A grayscale H.264 depth video (the browser preview), one frame per depth frame, at the
    source's timestamps (milliseconds).

    :meth:`write` normalises each frame on its own and keeps its raw range in :attr:`frames`;
    :meth:`write_unit` takes frames already in [0, 1] (stabilised ones, whose ranges the caller
    records) and keeps nothing per frame, so a long video costs no memory here. Width and height
    are rounded down to even numbers (yuv420p).
    """

    def __init__(self, path: Path, width: int, height: int, *, codec: str = "libx264") -> None:
        self.path = path
        self.width, self.height = width - width % 2, height - height % 2
        self._container = av.open(str(path), mode="w")
        self._stream = self._container.add_stream(codec, rate=1000)
        self._stream.width, self._stream.height = self.width, self.height
        self._stream.pix_fmt = "yuv420p"
        self._stream.time_base = _MS
        self._stream.options = {"crf": "18", "preset": "veryfast"}
        self._last_pts = -1
        self.count = 0
        self.frames: list[dict] = []

    def write(self, depth: np.ndarray, timestamp: float) -> None:
        unit, lo, hi = normalise(depth)
        self.write_unit(unit, timestamp)
        self.frames.append({"timestamp": timestamp, "raw_min": lo, "raw_max": hi})

    def write_unit(self, unit: np.ndarray, timestamp: float) -> None:
        gray = np.round(np.asarray(unit, np.float32) * np.float32(255)).astype(np.uint8)
        frame = av.VideoFrame.from_ndarray(gray, format="gray")
        # One swscale pass: grey to yuv420p, and to the even size when the map is odd.
        frame = frame.reformat(width=self.width, height=self.height, format="yuv420p",
                               interpolation="BILINEAR")
        self._last_pts = _mux(self._container, self._stream, frame, timestamp, self._last_pts)
        self.count += 1

    def close(self) -> list[dict]:
        if self._container is not None:
            container, self._container = self._container, None
            _finish(container, self._stream)
        return self.frames

    def __enter__(self) -> DepthVideoWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Depth16VideoWriter:
    """The lossless depth video: FFV1 ``gray16le`` in Matroska, each frame the uint16 values
    given (0–65535, near = white), at the source's timestamps (milliseconds, Matroska's unit).
    Any width and height. The values come back exactly (:func:`read_depth16_video`)."""

    def __init__(self, path: Path, width: int, height: int, *, threads: int = 2) -> None:
        self.path, self.width, self.height = path, width, height
        self._container = av.open(str(path), mode="w", format="matroska")
        self._stream = self._container.add_stream("ffv1", rate=1000)
        self._stream.width, self._stream.height = width, height
        self._stream.pix_fmt = "gray16le"
        self._stream.time_base = _MS
        # Version 3 with slices: frames are coded in parallel slices, each checksummed.
        self._stream.options = {"level": "3", "slices": "4", "slicecrc": "1", "g": "1"}
        self._stream.codec_context.thread_count = threads
        self._last_pts = -1
        self.count = 0

    def write(self, values: np.ndarray, timestamp: float) -> None:
        values = np.ascontiguousarray(values, dtype=np.uint16)
        if values.shape != (self.height, self.width):
            raise ValueError(f"frame is {values.shape}, the video {(self.height, self.width)}")
        frame = av.VideoFrame.from_ndarray(values, format="gray16le")
        self._last_pts = _mux(self._container, self._stream, frame, timestamp, self._last_pts)
        self.count += 1

    def close(self) -> None:
        if self._container is not None:
            container, self._container = self._container, None
            _finish(container, self._stream)

    def __enter__(self) -> Depth16VideoWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_depth16_video(path: Path):
    """(timestamp, uint16 frame) of a :class:`Depth16VideoWriter` video, streamed."""
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            yield float(frame.time), frame.to_ndarray(format="gray16le")


def _mux(container, stream, frame: av.VideoFrame, timestamp: float, last_pts: int) -> int:
    pts = max(round(timestamp * 1000), last_pts + 1)  # strictly increasing
    # Milliseconds, always: not ``stream.time_base``, which the muxer changes when it writes the
    # header (MP4 picks its own timescale), after which pts in ms read in it came out wrong and
    # every video longer than the encoder's delay failed to mux.
    frame.pts, frame.time_base = pts, _MS
    for packet in stream.encode(frame):
        container.mux(packet)
    return pts


def _finish(container, stream) -> None:
    try:
        for packet in stream.encode():
            container.mux(packet)
    finally:
        container.close()
